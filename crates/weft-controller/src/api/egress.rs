//! The egress resources of the API: the network-wide mode, destinations and egress policies
//! (Cloud Foundry's dynamic egress shapes), each documented for the OpenAPI document.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{detached, parse_json, AppState, BoundedBody};
use crate::egress;
use crate::error::{Error, Result};
use weft_api::egress::{DestinationList, EgressPolicyList, EgressSettings};
use weft_api::model::{ErrorBody, PolicyWriteResult};

#[utoipa::path(
    get, path = "/v1/egress", tag = "egress", security(("clientCert" = []), ("bearer" = [])),
    summary = "The network-wide egress mode (allow: apps reach everything outside the overlay; deny: only what egress policies allow)",
    responses(
        (status = 200, description = "the mode", body = EgressSettings),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn get_egress_mode(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.ctl.egress_mode().await?).into_response())
}

#[utoipa::path(
    put, path = "/v1/egress", tag = "egress", security(("bearer" = [])),
    summary = "Set the network-wide egress mode",
    request_body = EgressSettings,
    responses(
        (status = 200, description = "the mode", body = EgressSettings),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad token", body = ErrorBody),
        (status = 403, description = "agent certificates cannot write egress", body = ErrorBody),
    )
)]
pub(crate) async fn set_egress_mode(
    State(s): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let json: serde_json::Value = parse_json(&body)?;
    let mode = match json.get("mode").and_then(|m| m.as_str()) {
        Some(m) => weft_api::egress::EgressMode::parse(m)
            .ok_or_else(|| Error::field("mode", format!("{m:?} is not allow or deny")))?,
        None => return Err(Error::field("mode", "is required (allow or deny)")),
    };
    let reply = detached(async move { s.ctl.set_egress_mode(mode).await }).await?;
    Ok(Json(reply).into_response())
}

#[utoipa::path(
    get, path = "/networking/v1/external/destinations", tag = "egress", security(("clientCert" = []), ("bearer" = [])),
    summary = "Egress destinations",
    responses(
        (status = 200, description = "destinations", body = DestinationList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn list_destinations(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.ctl.destinations().await?).into_response())
}

#[utoipa::path(
    post, path = "/networking/v1/external/destinations", tag = "egress", security(("bearer" = [])),
    summary = "Create egress destinations, or replace the rules of existing ones (by name; the id is the name)",
    request_body = DestinationList,
    responses(
        (status = 200, description = "the destinations with their ids", body = DestinationList),
        (status = 400, description = "bad fields (each named)", body = ErrorBody),
        (status = 401, description = "no or bad token", body = ErrorBody),
        (status = 403, description = "agent certificates cannot write egress", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
    )
)]
pub(crate) async fn put_destinations(
    State(s): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let list = egress::parse_destinations(&body)?;
    let reply = detached(async move { s.ctl.put_destinations(&list).await }).await?;
    Ok(Json(reply).into_response())
}

#[utoipa::path(
    delete, path = "/networking/v1/external/destinations/{id}", tag = "egress", security(("bearer" = [])),
    summary = "Delete an egress destination that no egress policy names",
    params(("id" = String, Path, description = "the destination")),
    responses(
        (status = 200, description = "the deleted destination", body = weft_api::egress::Destination),
        (status = 401, description = "no or bad token", body = ErrorBody),
        (status = 403, description = "agent certificates cannot write egress", body = ErrorBody),
        (status = 404, description = "no such destination", body = ErrorBody),
        (status = 409, description = "egress policies name it", body = ErrorBody),
    )
)]
pub(crate) async fn delete_destination(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let d = detached(async move { s.ctl.delete_destination(&id).await }).await?;
    Ok(Json(d).into_response())
}

#[utoipa::path(
    get, path = "/networking/v1/external/egress_policies", tag = "egress", security(("clientCert" = []), ("bearer" = [])),
    summary = "Egress policies, with their apps' tags",
    responses(
        (status = 200, description = "egress policies", body = EgressPolicyList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn list_egress_policies(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.ctl.egress_policies().await?).into_response())
}

#[utoipa::path(
    post, path = "/networking/v1/external/egress_policies", tag = "egress", security(("bearer" = [])),
    summary = "Let apps reach destinations (idempotent; apps get tags)",
    request_body = EgressPolicyList,
    responses(
        (status = 200, description = "how many were new", body = PolicyWriteResult),
        (status = 400, description = "bad fields (each named), or an unknown destination", body = ErrorBody),
        (status = 401, description = "no or bad token", body = ErrorBody),
        (status = 403, description = "agent certificates cannot write egress", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
        (status = 503, description = "no tag left", body = ErrorBody),
    )
)]
pub(crate) async fn create_egress_policies(
    State(s): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let list = egress::parse_policies(&body)?;
    let reply = detached(async move { s.ctl.create_egress_policies(&list).await }).await?;
    Ok(Json(reply).into_response())
}

#[utoipa::path(
    post, path = "/networking/v1/external/egress_policies/delete", tag = "egress", security(("bearer" = [])),
    summary = "Delete egress policies (missing ones are ignored)",
    request_body = EgressPolicyList,
    responses(
        (status = 200, description = "how many were deleted", body = PolicyWriteResult),
        (status = 400, description = "bad fields (each named)", body = ErrorBody),
        (status = 401, description = "no or bad token", body = ErrorBody),
        (status = 403, description = "agent certificates cannot write egress", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
    )
)]
pub(crate) async fn delete_egress_policies(
    State(s): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let list = egress::parse_policies(&body)?;
    let reply = detached(async move { s.ctl.delete_egress_policies(&list).await }).await?;
    Ok(Json(reply).into_response())
}
