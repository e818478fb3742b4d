//! Who may call what. Agents authenticate with a client certificate signed by the client CA
//! (mTLS); people and scripts with the bearer token. Policy writes need the token.
//!
//! | route class | TLS mode                         | `--insecure-http`        |
//! |-------------|----------------------------------|--------------------------|
//! | public      | anyone (`/healthz`, `/metrics`, `/openapi.json`) | anyone  |
//! | agent       | client certificate or token      | anyone (token if sent must match) |
//! | admin       | token                            | token if one is set, else anyone |

use axum::http::HeaderMap;

use crate::error::{Error, Result};

/// What the TLS layer learnt about the peer of one connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The peer presented a client certificate that chains to the client CA.
    pub client_cert: bool,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub token: Option<String>,
    pub tls: bool,
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthorized("Authorization header is not ASCII".into()))?;
    match value.strip_prefix("Bearer ") {
        Some(t) => Ok(Some(t.trim())),
        None => Err(Error::Unauthorized(
            "Authorization header must be `Bearer TOKEN`".into(),
        )),
    }
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// `Some(true)` for a valid token, `Some(false)` for a wrong one, `None` for none sent.
    fn token_ok(&self, headers: &HeaderMap) -> Result<Option<bool>> {
        let Some(sent) = bearer(headers)? else {
            return Ok(None);
        };
        Ok(Some(match &self.token {
            Some(t) => same(t, sent),
            None => false,
        }))
    }

    pub fn check_agent(&self, peer: &Peer, headers: &HeaderMap) -> Result<()> {
        match self.token_ok(headers)? {
            Some(true) => return Ok(()),
            Some(false) => return Err(Error::Unauthorized("invalid bearer token".into())),
            None => {}
        }
        if peer.client_cert || !self.tls {
            return Ok(());
        }
        Err(Error::Unauthorized(
            "a client certificate signed by the controller's client CA (agents) or a bearer token is required"
                .into(),
        ))
    }

    pub fn check_admin(&self, headers: &HeaderMap) -> Result<()> {
        match self.token_ok(headers)? {
            Some(true) => Ok(()),
            Some(false) => Err(Error::Unauthorized("invalid bearer token".into())),
            None if self.token.is_none() && !self.tls => Ok(()),
            None if self.token.is_none() => Err(Error::Forbidden(
                "policy writes are disabled: the controller was started without --token".into(),
            )),
            None => Err(Error::Unauthorized(
                "policy writes need the bearer token (Authorization: Bearer TOKEN)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                axum::http::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn tls_mode_needs_cert_or_token() {
        let auth = Auth {
            token: Some("s3cret".into()),
            tls: true,
        };
        let cert = Peer { client_cert: true };
        let none = Peer::default();
        assert!(auth.check_agent(&cert, &headers(None)).is_ok());
        assert!(auth.check_agent(&none, &headers(None)).is_err());
        assert!(auth.check_agent(&none, &headers(Some("s3cret"))).is_ok());
        assert!(auth.check_agent(&cert, &headers(Some("wrong"))).is_err());
        assert!(auth.check_admin(&headers(None)).is_err());
        assert!(auth.check_admin(&headers(Some("s3cret"))).is_ok());
    }

    #[test]
    fn insecure_mode_without_token_is_open() {
        let auth = Auth {
            token: None,
            tls: false,
        };
        assert!(auth.check_agent(&Peer::default(), &headers(None)).is_ok());
        assert!(auth.check_admin(&headers(None)).is_ok());
        assert!(auth.check_admin(&headers(Some("x"))).is_err());
    }
}
