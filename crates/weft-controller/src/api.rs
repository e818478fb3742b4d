//! The HTTP API: routes, authentication classes, JSON in and out. Each handler is a thin call
//! into the [`Controller`]; store work runs on its own task so a client hanging up mid-request
//! cannot cut a transaction short.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::auth::{Auth, Caller, Peer};
use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::limits::{Limits, Slot, Tracker};
use crate::metrics::Gauges;
use crate::{instances, openapi, policies, watch as watching};
use weft_api::model::{
    AcquireLease, App, AppList, ClaimSet, ContainerSet, ErrorBody, Health, HostRef, InstanceList,
    Lease, LeaseList, PolicyList, PolicyWriteResult, TagList, WatchMessage,
};
use weft_api::paths;

mod egress;
pub(crate) use egress::*;

#[derive(Clone)]
pub(crate) struct AppState {
    pub ctl: Arc<Controller>,
    pub auth: Arc<Auth>,
    pub shutdown: watch::Receiver<bool>,
    pub limits: Arc<Limits>,
    pub connections: Arc<Tracker>,
}

pub(crate) fn router(state: AppState) -> Router {
    let public = Router::new()
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::METRICS, get(metrics))
        .route(paths::OPENAPI, get(openapi_doc));
    let agent = Router::new()
        .route(paths::LEASES, get(list_leases))
        .route(paths::LEASES_ACQUIRE, post(acquire_lease))
        .route(paths::LEASES_RENEW, post(renew_lease))
        .route(paths::LEASES_RELEASE, post(release_lease))
        .route(paths::APPS, get(list_apps))
        .route(paths::APP, put(claim_app).get(get_app).delete(unclaim_app))
        .route(paths::HOST_APPS, put(set_claims).get(get_claims))
        .route(
            paths::HOST_CONTAINERS,
            put(set_containers).get(get_containers),
        )
        .route(paths::INSTANCES, get(list_instances))
        .route(paths::WATCH, get(watch))
        .route(paths::POLICIES, get(list_policies))
        .route(paths::TAGS, get(list_tags))
        .route(paths::EGRESS, get(get_egress_mode))
        .route(paths::DESTINATIONS, get(list_destinations))
        .route(paths::EGRESS_POLICIES, get(list_egress_policies))
        .route_layer(middleware::from_fn_with_state(state.clone(), agent_auth));
    let admin = Router::new()
        .route(paths::POLICIES, post(create_policies))
        .route(paths::POLICIES_DELETE, post(delete_policies))
        .route(paths::EGRESS, put(set_egress_mode))
        .route(paths::DESTINATIONS, post(put_destinations))
        .route(paths::DESTINATION, delete(delete_destination))
        .route(paths::EGRESS_POLICIES, post(create_egress_policies))
        .route(paths::EGRESS_POLICIES_DELETE, post(delete_egress_policies))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin_auth));
    Router::new()
        .merge(public)
        .merge(agent)
        .merge(admin)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("no such endpoint; see /openapi.json".into())
}

/// Logs and counts every request.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // A connection serving a request is not evicted to make room.
    let _busy = req.extensions().get::<Arc<Slot>>().map(|s| s.busy());
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.ctl.metrics.observe(&method, &route, status, elapsed);
    tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request");
    response
}

/// The connection authenticated: it leaves the evictable pending set.
fn authenticated(req: &Request) {
    if let Some(slot) = req.extensions().get::<Arc<Slot>>() {
        slot.authenticated();
    }
}

async fn agent_auth(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    match state.auth.check_agent(&peer, &headers) {
        Ok(caller) => {
            authenticated(&req);
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn admin_auth(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    match state.auth.check_admin(&peer, &headers) {
        Ok(()) => {
            authenticated(&req);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// A request body read within `--max-body-bytes` and the body timeout, before any parsing:
/// a larger one is `413` as soon as its length is known (from `Content-Length`, or once that
/// many bytes arrived).
pub(crate) struct BoundedBody(pub Bytes);

impl FromRequest<AppState> for BoundedBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        use http_body_util::BodyExt;
        let limit = state.limits.max_body_bytes;
        let too_large = || {
            Error::PayloadTooLarge(format!(
                "request body larger than {limit} bytes (the controller's --max-body-bytes)"
            ))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let body = http_body_util::Limited::new(req.into_body(), limit);
        match tokio::time::timeout(state.limits.body_timeout, body.collect()).await {
            Ok(Ok(collected)) => Ok(BoundedBody(collected.to_bytes())),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(Error::BadRequest(format!("reading the body: {e}"))),
            Err(_) => Err(Error::RequestTimeout(format!(
                "the request body did not arrive within {:?}",
                state.limits.body_timeout
            ))),
        }
    }
}

/// Runs store work on its own task, so that it completes even if the client goes away.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::Store(format!("request task failed: {e}")))?
}

fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("body: {e}")))
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations", security(()),
    summary = "Liveness and store reachability",
    responses(
        (status = 200, description = "healthy", body = Health),
        (status = 503, description = "the store is unreachable"),
    )
)]
pub(crate) async fn healthz(State(s): State<AppState>) -> Response {
    match s.ctl.health().await {
        Ok(h) => Json(h).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "error": e.to_string()})),
        )
            .into_response(),
    }
}

#[utoipa::path(
    get, path = "/metrics", tag = "operations", security(()),
    summary = "Prometheus metrics (text exposition format)",
    responses((status = 200, description = "metrics", content_type = "application/openmetrics-text", body = String))
)]
pub(crate) async fn metrics(State(s): State<AppState>) -> Result<Response> {
    let (leases, apps, policies, revision) = s.ctl.counts().await?;
    let text = s.ctl.metrics.render(&Gauges {
        leases,
        pool_size: s.ctl.config().pool.size(),
        apps,
        policies,
        revision,
        connections: s.connections.counts(),
    });
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", security(()),
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_doc() -> Response {
    Json(openapi::document()).into_response()
}

#[utoipa::path(
    get, path = "/v1/leases", tag = "leases", security(("clientCert" = []), ("bearer" = [])),
    summary = "All leases and the pool",
    responses(
        (status = 200, description = "leases", body = LeaseList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn list_leases(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.ctl.leases().await?).into_response())
}

#[utoipa::path(
    post, path = "/v1/leases/acquire", tag = "leases", security(("clientCert" = []), ("bearer" = [])),
    summary = "Get a subnet for a host (its old one if it still holds it, else the one it asks for if free)",
    request_body = AcquireLease,
    responses(
        (status = 200, description = "the lease", body = Lease),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate acting for another host", body = ErrorBody),
        (status = 409, description = "the underlay IP is another host's", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
        (status = 503, description = "the pool is exhausted", body = ErrorBody),
    )
)]
pub(crate) async fn acquire_lease(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let req: AcquireLease = parse_json(&body)?;
    let host = caller.act_for(&req.host)?;
    let lease = detached(async move {
        s.ctl
            .acquire_lease(&host, &req.underlay_ip, req.subnet)
            .await
    })
    .await?;
    Ok(Json(lease).into_response())
}

#[utoipa::path(
    post, path = "/v1/leases/renew", tag = "leases", security(("clientCert" = []), ("bearer" = [])),
    summary = "Extend a host's lease",
    request_body = HostRef,
    responses(
        (status = 200, description = "the renewed lease", body = Lease),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate acting for another host", body = ErrorBody),
        (status = 404, description = "the host holds no lease", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
    )
)]
pub(crate) async fn renew_lease(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let req: HostRef = parse_json(&body)?;
    let host = caller.act_for(&req.host)?;
    let lease = detached(async move { s.ctl.renew_lease(&host).await }).await?;
    Ok(Json(lease).into_response())
}

#[utoipa::path(
    post, path = "/v1/leases/release", tag = "leases", security(("clientCert" = []), ("bearer" = [])),
    summary = "Return a host's subnet to the pool",
    request_body = HostRef,
    responses(
        (status = 204, description = "released (or was not held); the host's app claims go with it"),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate acting for another host", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
    )
)]
pub(crate) async fn release_lease(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let req: HostRef = parse_json(&body)?;
    let host = caller.act_for(&req.host)?;
    detached(async move { s.ctl.release_lease(&host).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The host a claim is for: `?host=` (required for the token and `--insecure-http`), or the
/// certificate's.
fn claim_host(caller: &Caller, q: &HashMap<String, String>) -> Result<String> {
    let host = caller.act_for(q.get("host").map(String::as_str).unwrap_or(""))?;
    if host.is_empty() {
        return Err(Error::field(
            "host",
            "is required (?host=NAME: the host that runs the app)",
        ));
    }
    Ok(host)
}

#[utoipa::path(
    get, path = "/v1/apps", tag = "apps", security(("clientCert" = []), ("bearer" = [])),
    summary = "Apps and their tags",
    responses(
        (status = 200, description = "apps", body = AppList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn list_apps(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.ctl.apps().await?).into_response())
}

#[utoipa::path(
    get, path = "/v1/apps/{id}", tag = "apps", security(("clientCert" = []), ("bearer" = [])),
    summary = "One app",
    params(("id" = String, Path, description = "the app")),
    responses(
        (status = 200, description = "the app", body = App),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub(crate) async fn get_app(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(s.ctl.app(&id).await?).into_response())
}

#[utoipa::path(
    put, path = "/v1/apps/{id}", tag = "apps", security(("clientCert" = []), ("bearer" = [])),
    summary = "A host claims an app for a running container (gives it a tag)",
    params(
        ("id" = String, Path, description = "the app"),
        ("host" = Option<String>, Query, description = "the host that claims (required with the token or --insecure-http; with a certificate, its host)"),
    ),
    responses(
        (status = 200, description = "the app", body = App),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate acting for another host", body = ErrorBody),
        (status = 409, description = "the host holds no lease", body = ErrorBody),
        (status = 422, description = "more claims than --max-claims-per-host", body = ErrorBody),
        (status = 503, description = "no tag left", body = ErrorBody),
    )
)]
pub(crate) async fn claim_app(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let host = claim_host(&caller, &q)?;
    let app = detached(async move { s.ctl.claim_app(&host, &id).await }).await?;
    Ok(Json(app).into_response())
}

#[utoipa::path(
    delete, path = "/v1/apps/{id}", tag = "apps", security(("clientCert" = []), ("bearer" = [])),
    summary = "Drop the host's claim; the app is released unless another host claims it or a policy names it",
    params(
        ("id" = String, Path, description = "the app"),
        ("host" = Option<String>, Query, description = "the host that claims"),
    ),
    responses(
        (status = 200, description = "still claimed or named by a policy", body = App),
        (status = 204, description = "released"),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate acting for another host", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub(crate) async fn unclaim_app(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let host = claim_host(&caller, &q)?;
    match detached(async move { s.ctl.unclaim_app(&host, &id).await }).await? {
        Some(app) => Ok(Json(app).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[utoipa::path(
    put, path = "/v1/hosts/{host}/apps", tag = "apps", security(("clientCert" = []), ("bearer" = [])),
    summary = "Set the apps a host runs (its claims become exactly these; apps it dropped that no host claims and no policy names are released)",
    params(("host" = String, Path, description = "the host")),
    request_body = ClaimSet,
    responses(
        (status = 200, description = "the apps, with tags, in request order", body = AppList),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate acting for another host", body = ErrorBody),
        (status = 409, description = "the host holds no lease", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
        (status = 422, description = "more claims than --max-claims-per-host", body = ErrorBody),
        (status = 503, description = "no tag left", body = ErrorBody),
    )
)]
pub(crate) async fn set_claims(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(host): Path<String>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let host = caller.act_for(&host)?;
    let req: ClaimSet = parse_json(&body)?;
    let apps = detached(async move { s.ctl.set_claims(&host, &req.apps).await }).await?;
    Ok(Json(apps).into_response())
}

#[utoipa::path(
    put, path = "/v1/hosts/{host}/containers", tag = "instances", security(("clientCert" = []), ("bearer" = [])),
    summary = "Set the containers a host runs (its instances become exactly these; placement for DNS)",
    description = "The host must hold a lease (409) and every ip be inside it; at most 1024 containers; ids and ips unique.",
    params(("host" = String, Path, description = "the host")),
    request_body = ContainerSet,
    responses(
        (status = 200, description = "the host's instances", body = InstanceList),
        (status = 400, description = "a bad field (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate acting for another host", body = ErrorBody),
        (status = 409, description = "the host holds no lease", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
    )
)]
pub(crate) async fn set_containers(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(host): Path<String>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    // The same authorization as the host's claims: a certificate acts only for its host.
    let host = caller.act_for(&host)?;
    let reported = instances::parse_request(&body)?;
    let list = detached(async move { s.ctl.set_containers(&host, &reported).await }).await?;
    Ok(Json(list).into_response())
}

#[utoipa::path(
    get, path = "/v1/hosts/{host}/containers", tag = "instances", security(("clientCert" = []), ("bearer" = [])),
    summary = "The instances a host reported",
    params(("host" = String, Path, description = "the host")),
    responses(
        (status = 200, description = "the host's instances", body = InstanceList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn get_containers(
    State(s): State<AppState>,
    Path(host): Path<String>,
) -> Result<Response> {
    Ok(Json(s.ctl.containers(&host).await?).into_response())
}

#[utoipa::path(
    get, path = "/v1/instances", tag = "instances", security(("clientCert" = []), ("bearer" = [])),
    summary = "Every running instance (or one app's)",
    params(("app" = Option<String>, Query, description = "only this app's instances")),
    responses(
        (status = 200, description = "instances", body = InstanceList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn list_instances(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(Json(s.ctl.instances(q.get("app").map(String::as_str)).await?).into_response())
}

#[utoipa::path(
    get, path = "/v1/hosts/{host}/apps", tag = "apps", security(("clientCert" = []), ("bearer" = [])),
    summary = "The apps a host claims",
    params(("host" = String, Path, description = "the host")),
    responses(
        (status = 200, description = "the host's claims", body = AppList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn get_claims(
    State(s): State<AppState>,
    Path(host): Path<String>,
) -> Result<Response> {
    Ok(Json(s.ctl.claims(&host).await?).into_response())
}

#[utoipa::path(
    get, path = "/networking/v1/external/policies", tag = "policies", security(("clientCert" = []), ("bearer" = [])),
    summary = "List policies (Cloud Foundry's shape, with tags)",
    params(
        ("id" = Option<String>, Query, description = "comma-separated app ids: policies whose source or destination is one of them"),
        ("source_id" = Option<String>, Query, description = "comma-separated app ids: policies from one of them (ignored with id)"),
        ("dest_id" = Option<String>, Query, description = "comma-separated app ids: policies to one of them (ignored with id; with source_id, both must match)"),
    ),
    responses(
        (status = 200, description = "policies with tags", body = PolicyList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn list_policies(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let filter = policies::Filter::from_query(&q);
    Ok(Json(s.ctl.policies_where(&filter).await?).into_response())
}

#[utoipa::path(
    get, path = "/networking/v1/external/tags", tag = "policies", security(("clientCert" = []), ("bearer" = [])),
    summary = "Every app's tag (Cloud Foundry's shape: upper-case hex, two bytes)",
    responses(
        (status = 200, description = "tags", body = TagList),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
    )
)]
pub(crate) async fn list_tags(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.ctl.tags().await?).into_response())
}

#[utoipa::path(
    post, path = "/networking/v1/external/policies", tag = "policies", security(("bearer" = [])),
    summary = "Create policies (idempotent; new apps get tags)",
    request_body = PolicyList,
    responses(
        (status = 200, description = "how many were new", body = PolicyWriteResult),
        (status = 400, description = "bad fields (each named)", body = ErrorBody),
        (status = 401, description = "no or bad token", body = ErrorBody),
        (status = 403, description = "agent certificates cannot write policies", body = ErrorBody),
        (status = 408, description = "the body did not arrive in time", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
        (status = 503, description = "no tag left", body = ErrorBody),
    )
)]
pub(crate) async fn create_policies(
    State(s): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let list = policies::parse_request(&body)?;
    let result = detached(async move { s.ctl.create_policies(&list).await }).await?;
    Ok(Json(result).into_response())
}

#[utoipa::path(
    post, path = "/networking/v1/external/policies/delete", tag = "policies", security(("bearer" = [])),
    summary = "Delete policies (missing ones are ignored)",
    request_body = PolicyList,
    responses(
        (status = 200, description = "how many were deleted", body = PolicyWriteResult),
        (status = 400, description = "bad fields (each named)", body = ErrorBody),
        (status = 401, description = "no or bad token", body = ErrorBody),
        (status = 403, description = "agent certificates cannot write policies", body = ErrorBody),
        (status = 408, description = "the body did not arrive in time", body = ErrorBody),
        (status = 413, description = "body larger than --max-body-bytes", body = ErrorBody),
    )
)]
pub(crate) async fn delete_policies(
    State(s): State<AppState>,
    BoundedBody(body): BoundedBody,
) -> Result<Response> {
    let list = policies::parse_request(&body)?;
    let result = detached(async move { s.ctl.delete_policies(&list).await }).await?;
    Ok(Json(result).into_response())
}

#[utoipa::path(
    get, path = "/v1/watch", tag = "watch", security(("clientCert" = []), ("bearer" = [])),
    summary = "Snapshot then every change, as JSON lines (one WatchMessage per line)",
    description = "The snapshot (or the replayed changes), a heartbeat announcing interval_ms, then every change and a heartbeat after each idle interval. With snapshot=parts the snapshot comes as a snapshot line with more=true and snapshot_part lines, the last with more false. Clients skip kinds, event types and fields they do not know.",
    params(
        ("since" = Option<i64>, Query, minimum = 0, description = "resume after this revision: the changes after it if the change log still has them, else a snapshot"),
        ("snapshot" = Option<String>, Query, description = "parts or whole (default)"),
        ("host" = Option<String>, Query, description = "cut the stream for this host (a certificate may name only its own)"),
    ),
    responses(
        (status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = WatchMessage),
        (status = 400, description = "a bad parameter (named)", body = ErrorBody),
        (status = 401, description = "no or bad credentials", body = ErrorBody),
        (status = 403, description = "a certificate naming another host", body = ErrorBody),
    )
)]
pub(crate) async fn watch(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    // A watch that names its host (`?host=`) is cut for that host; a certificate may name
    // only its own (another: 403, as for its claims). Without `?host=`: everything.
    let host = match q.get("host").map(String::as_str) {
        None => None,
        Some(requested) => Some(caller.act_for(requested)?).filter(|h| !h.is_empty()),
    };
    if let Some(h) = &host {
        let mut errors = crate::error::FieldErrors::default();
        crate::leases::validate_host("host", h, &mut errors);
        errors.into_result()?;
    }
    let since = match q.get("since") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
            Error::field(
                "since",
                format!("{v:?} is not a revision (an integer >= 0)"),
            )
        })?),
    };
    let in_parts = match q.get("snapshot").map(String::as_str) {
        None | Some("whole") => false,
        Some("parts") => true,
        Some(other) => {
            return Err(Error::field(
                "snapshot",
                format!("{other:?} is not \"parts\" or \"whole\""),
            ))
        }
    };
    let rx = watching::start_watch(s.ctl.clone(), since, in_parts, host, s.shutdown.clone());
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
