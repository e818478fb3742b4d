//! The controller's error type and how each error maps to an HTTP status and an [`ErrorBody`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use weft_api::model::{ErrorBody, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more request fields are invalid; each names its field.
    #[error("invalid request: {}", join_fields(.0))]
    Validation(Vec<FieldError>),
    #[error("malformed request body: {0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PoolExhausted(String),
    #[error("{0}")]
    TagsExhausted(String),
    /// A host asked for more app claims than it may hold.
    #[error("{0}")]
    ClaimLimit(String),
    /// The request body is larger than `--max-body-bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("store: {0}")]
    Store(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join_fields(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A validation error for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn store(e: impl std::fmt::Display) -> Error {
        Error::Store(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Validation(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PoolExhausted(_) | Error::TagsExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::ClaimLimit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation(_) => "validation_failed",
            Error::BadRequest(_) => "bad_request",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::PoolExhausted(_) => "pool_exhausted",
            Error::TagsExhausted(_) => "tags_exhausted",
            Error::ClaimLimit(_) => "claim_limit_exceeded",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::RequestTimeout(_) => "request_timeout",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Store(_) => "store_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            error: self.to_string(),
            fields: match self {
                Error::Validation(f) => f.clone(),
                _ => Vec::new(),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Store(msg) = &self {
            tracing::error!(error = %msg, "store error");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

/// Collects field errors while validating a request, so that one reply names every bad field.
#[derive(Debug, Default)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}
