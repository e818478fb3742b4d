//! A typed async client for the controller's API, used by the agent and the CLI.
//!
//! Every request but a watch is bounded in time ([`ClientBuilder::timeout`]). A watch is
//! bounded in what it may cost: silence beyond a few of the controller's announced heartbeat
//! intervals ends it, and so do a line or a snapshot beyond [`WatchOptions`]' bounds; what a
//! newer controller adds (kinds, event types, fields) is skipped with a warning.
//! [`ResumingWatch`] turns every such end into a logged, counted reconnect with jittered
//! backoff that resumes from the last revision delivered.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use ipnet::Ipv4Net;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{
    AcquireLease, App, AppList, ClaimSet, ErrorBody, Event, Health, HostRef, Lease, LeaseList,
    Policy, PolicyList, PolicyWriteResult, Snapshot, WatchLine, WatchMessage,
};

/// Default bound of a request (other than a watch), from connecting to the last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of a TCP (and TLS) connection set-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("cannot reach the controller at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The controller refused the request; `body` names the problem (and the fields).
    #[error("controller answered {status}: {}", body.error)]
    Api { status: u16, body: ErrorBody },
    #[error("unexpected reply from the controller: {0}")]
    Decode(String),
    /// A watch stream heard nothing (not even a heartbeat) for too long.
    #[error("the controller at {url} sent nothing for {after:?} (heartbeats were due every {heartbeat:?})")]
    Silent {
        url: String,
        after: Duration,
        heartbeat: Duration,
    },
    /// A watch line (or snapshot) beyond the configured bound.
    #[error("{what} from the controller at {url} is longer than {limit} bytes")]
    TooLong {
        url: String,
        what: &'static str,
        limit: usize,
    },
    /// The controller did not answer a watch request in time.
    #[error("the controller at {url} did not answer the watch request within {after:?}")]
    NoAnswer { url: String, after: Duration },
}

impl ClientError {
    /// The HTTP status, for errors the controller answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: transport failures and timeouts, and answers
    /// that say "not now" (5xx, 408, 429). Refusals (401, 403, 400, ...) and configuration
    /// errors will not change by retrying.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ClientError::Config(_) => false,
            _ => true,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Builds a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    url: String,
    ca: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    token: Option<String>,
    timeout: Option<Duration>,
}

impl ClientBuilder {
    /// How long a request (other than a watch) may take in all, connecting included
    /// (default [`REQUEST_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The CA that signed the controller's certificate (needed for `https://`).
    pub fn ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// A client certificate and key (agents).
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// The bearer token (people and scripts; needed for policy writes).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn build(self) -> Result<Client> {
        crate::tls::install_default_provider();
        let base = self.url.trim_end_matches('/').to_string();
        let timeout = self.timeout.unwrap_or(REQUEST_TIMEOUT);
        let http = self.http_client(&base, timeout, true)?;
        let watch_http = self.http_client(&base, timeout, false)?;
        Ok(Client {
            http: Arc::new(RwLock::new(http)),
            watch_http,
            base,
            token: self.token.clone(),
            timeout,
            builder: Arc::new(self),
        })
    }

    /// A reqwest client for `base`. `pooled` keeps idle connections for the next request;
    /// watches use one that does not, so that a new watch always takes a fresh connection,
    /// never one a vanished controller left behind.
    fn http_client(&self, base: &str, timeout: Duration, pooled: bool) -> Result<reqwest::Client> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .tcp_nodelay(true)
            // Below the controller's header timeout (10 s by default), which also closes idle
            // connections: an idle connection is dropped here before the controller closes it
            // under a request.
            .pool_idle_timeout(Duration::from_secs(5));
        if !pooled {
            http = http.pool_max_idle_per_host(0);
        }
        if base.starts_with("https://") {
            let ca = self.ca.as_deref().ok_or_else(|| {
                ClientError::Config(format!(
                    "{base} uses TLS: give the CA certificate (--ca or WEFT_CA; `weft certs` writes ca.pem)"
                ))
            })?;
            let identity = self
                .identity
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path()));
            let tls = crate::tls::client_config(ca, identity)
                .map_err(|e| ClientError::Config(format!("{e:#}")))?;
            http = http.use_preconfigured_tls(tls);
        } else if !base.starts_with("http://") {
            return Err(ClientError::Config(format!(
                "controller URL {base:?} must start with https:// or http://"
            )));
        }
        http.build().map_err(|e| ClientError::Config(e.to_string()))
    }
}

/// A connection to one controller. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    /// Shared by the clones; replaced by [`Client::reset_connections`].
    http: Arc<RwLock<reqwest::Client>>,
    /// For watches: keeps no idle connections.
    watch_http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Bound of every request but watches.
    timeout: Duration,
    /// What the client was built from, to build its connection pool again.
    builder: Arc<ClientBuilder>,
}

impl Client {
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            ..ClientBuilder::default()
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Drops the idle connections kept for the next requests (of this client and its
    /// clones): after a controller vanished without closing them, each would cost a request
    /// its whole timeout. A resuming watch calls this when its controller goes silent.
    pub fn reset_connections(&self) {
        match self.builder.http_client(&self.base, self.timeout, true) {
            Ok(fresh) => {
                if let Ok(mut http) = self.http.write() {
                    *http = fresh;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a new connection pool; keeping the old one")
            }
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let http = match self.http.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        self.request_on(&http, method, path)
    }

    fn request_on(&self, http: &reqwest::Client, method: Method, path: &str) -> RequestBuilder {
        let mut r = http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, r: RequestBuilder) -> Result<reqwest::Response> {
        let resp = r.send().await.map_err(|source| ClientError::Transport {
            url: self.base.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
            code: "http_error".into(),
            error: if text.is_empty() {
                status.to_string()
            } else {
                text
            },
            fields: Vec::new(),
        });
        Err(ClientError::Api {
            status: status.as_u16(),
            body,
        })
    }

    async fn json<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        let resp = self.send(r.timeout(self.timeout)).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn health(&self) -> Result<Health> {
        self.json(self.request(Method::GET, "/healthz")).await
    }

    /// The Prometheus metrics page as text.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .send(self.request(Method::GET, "/metrics").timeout(self.timeout))
            .await?;
        resp.text().await.map_err(|source| ClientError::Transport {
            url: self.base.clone(),
            source,
        })
    }

    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, "/openapi.json")).await
    }

    /// Acquires (or renews) the lease of `host`.
    pub async fn acquire_lease(&self, host: &str, underlay_ip: &str) -> Result<Lease> {
        self.acquire_lease_preferring(host, underlay_ip, None).await
    }

    /// [`Client::acquire_lease`] for a host that knows the subnet it held before (from its
    /// lease file): the controller gives it back when it is free.
    pub async fn acquire_lease_preferring(
        &self,
        host: &str,
        underlay_ip: &str,
        subnet: Option<Ipv4Net>,
    ) -> Result<Lease> {
        let body = AcquireLease {
            host: host.into(),
            underlay_ip: underlay_ip.into(),
            subnet,
        };
        self.post("/v1/leases/acquire", &body).await
    }

    pub async fn renew_lease(&self, host: &str) -> Result<Lease> {
        self.post("/v1/leases/renew", &HostRef { host: host.into() })
            .await
    }

    pub async fn release_lease(&self, host: &str) -> Result<()> {
        self.send(
            self.request(Method::POST, "/v1/leases/release")
                .json(&HostRef { host: host.into() })
                .timeout(self.timeout),
        )
        .await?;
        Ok(())
    }

    pub async fn leases(&self) -> Result<LeaseList> {
        self.json(self.request(Method::GET, "/v1/leases")).await
    }

    pub async fn apps(&self) -> Result<AppList> {
        self.json(self.request(Method::GET, "/v1/apps")).await
    }

    pub async fn app(&self, id: &str) -> Result<App> {
        self.json(self.request(Method::GET, &format!("/v1/apps/{}", encode(id))))
            .await
    }

    /// `host` claims an app for a running container; returns it with its tag. `host` may be
    /// `""` with an agent certificate (the host it names).
    pub async fn claim_app(&self, host: &str, id: &str) -> Result<App> {
        self.json(self.request(Method::PUT, &claim_path(host, id)))
            .await
    }

    /// Drops `host`'s claim; returns the app if another host claims it or a policy names it.
    pub async fn unclaim_app(&self, host: &str, id: &str) -> Result<Option<App>> {
        let resp = self
            .send(
                self.request(Method::DELETE, &claim_path(host, id))
                    .timeout(self.timeout),
            )
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Makes `apps` exactly the apps `host` claims (the apps of the containers it runs);
    /// returns them with their tags.
    pub async fn set_claims(&self, host: &str, apps: &[String]) -> Result<AppList> {
        let body = ClaimSet {
            apps: apps.to_vec(),
        };
        self.json(
            self.request(Method::PUT, &format!("/v1/hosts/{}/apps", encode(host)))
                .json(&body),
        )
        .await
    }

    /// The apps `host` claims.
    pub async fn claims(&self, host: &str) -> Result<AppList> {
        self.json(self.request(Method::GET, &format!("/v1/hosts/{}/apps", encode(host))))
            .await
    }

    pub async fn create_policies(&self, policies: &[Policy]) -> Result<PolicyWriteResult> {
        let body = PolicyList {
            total_policies: None,
            policies: policies.iter().map(Policy::untagged).collect(),
        };
        self.post("/networking/v1/external/policies", &body).await
    }

    pub async fn delete_policies(&self, policies: &[Policy]) -> Result<PolicyWriteResult> {
        let body = PolicyList {
            total_policies: None,
            policies: policies.iter().map(Policy::untagged).collect(),
        };
        self.post("/networking/v1/external/policies/delete", &body)
            .await
    }

    /// Policies, all or those whose source or destination is one of `ids`.
    pub async fn policies(&self, ids: Option<&[&str]>) -> Result<PolicyList> {
        let mut r = self.request(Method::GET, "/networking/v1/external/policies");
        if let Some(ids) = ids {
            r = r.query(&[("id", ids.join(","))]);
        }
        self.json(r).await
    }

    /// Opens a watch stream: a snapshot (or, with `since`, the changes after it) then every
    /// change, with [`WatchOptions::default`].
    pub async fn watch(&self, since: Option<i64>) -> Result<WatchStream> {
        self.watch_with(since, &WatchOptions::default()).await
    }

    /// [`Client::watch`] with other bounds.
    pub async fn watch_with(&self, since: Option<i64>, opts: &WatchOptions) -> Result<WatchStream> {
        self.open_watch(since, opts, Warned::default()).await
    }

    async fn open_watch(
        &self,
        since: Option<i64>,
        opts: &WatchOptions,
        warned: Warned,
    ) -> Result<WatchStream> {
        let mut r = self
            .request_on(&self.watch_http, Method::GET, "/v1/watch")
            .query(&[("snapshot", "parts")]);
        if let Some(s) = since {
            r = r.query(&[("since", s)]);
        }
        let resp = match tokio::time::timeout(opts.answer_timeout, self.send(r)).await {
            Ok(resp) => resp?,
            Err(_) => {
                return Err(ClientError::NoAnswer {
                    url: self.base.clone(),
                    after: opts.answer_timeout,
                })
            }
        };
        Ok(WatchStream {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            scanned: 0,
            url: self.base.clone(),
            opts: opts.clone(),
            heartbeat: opts.assumed_heartbeat,
            announced: None,
            heard: tokio::time::Instant::now(),
            // A stream that owes a snapshot starts at once: a new controller sends it (or
            // its first part) right away, so waiting for it is bounded like the answer. A
            // resumed one may rightly say nothing until the next change or heartbeat.
            first_bytes: since.is_none().then_some(opts.answer_timeout),
            pending: None,
            warned,
        })
    }

    /// A watch that reconnects by itself, resuming after the last revision it delivered, with
    /// [`WatchOptions::default`].
    pub fn watch_resuming(&self, since: Option<i64>) -> ResumingWatch {
        self.watch_resuming_with(since, WatchOptions::default())
    }

    /// [`Client::watch_resuming`] with other bounds and backoff.
    pub fn watch_resuming_with(&self, since: Option<i64>, opts: WatchOptions) -> ResumingWatch {
        ResumingWatch {
            client: self.clone(),
            last: since,
            stream: None,
            unclassified: false,
            backoff: opts.backoff_min,
            retry_at: None,
            heartbeat: opts.assumed_heartbeat,
            stats: Arc::new(WatchStats::default()),
            warned: Warned::default(),
            opts,
        }
    }
}

fn claim_path(host: &str, id: &str) -> String {
    if host.is_empty() {
        format!("/v1/apps/{}", encode(id))
    } else {
        format!("/v1/apps/{}?host={}", encode(id), encode(host))
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// How a watch reads its stream and when it gives up on one and reconnects.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The heartbeat interval assumed on a stream until the controller announces its own
    /// (which it does right after the snapshot or replay; controllers that do not announce
    /// one send a heartbeat every 15 s).
    pub assumed_heartbeat: Duration,
    /// A stream that stays silent (no byte at all) for this many heartbeat intervals is
    /// taken for lost: a controller that froze or vanished without closing the connection.
    pub missed_heartbeats: u32,
    /// The longest line accepted, in bytes; a longer one ends the stream (the watch then
    /// reconnects). Snapshots come in parts of bounded size from controllers that can send
    /// them so; the default leaves room for a whole snapshot from one that cannot.
    pub max_line: usize,
    /// The largest snapshot accepted, in bytes over all its lines.
    pub max_snapshot: usize,
    /// How long the controller may take to answer a watch request.
    pub answer_timeout: Duration,
    /// Reconnect delays grow from `backoff_min`, doubling after each failed attempt, up to
    /// `backoff_max`; each is jittered (between half and all of it) so that many watchers do
    /// not come back in step. A stream that delivers a message resets the delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            assumed_heartbeat: Duration::from_secs(15),
            missed_heartbeats: 3,
            max_line: 64 << 20,
            max_snapshot: 1 << 30,
            answer_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl WatchOptions {
    /// How long a stream may stay silent when heartbeats come every `heartbeat`.
    pub fn deadline(&self, heartbeat: Duration) -> Duration {
        heartbeat * self.missed_heartbeats.max(1)
    }
}

/// An announced heartbeat interval, within sane bounds (10 ms ..= 1 h).
fn announced_interval(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(10, 3_600_000))
}

/// Why a watch reconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Nothing arrived for [`WatchOptions::missed_heartbeats`] heartbeat intervals.
    Silence,
    /// The controller ended the stream (e.g. it is shutting down).
    Ended,
    /// The connection could not be made, or broke.
    Transport,
    /// The controller did not answer the watch request in time.
    NoAnswer,
    /// A line or snapshot beyond the configured bounds.
    TooLong,
    /// A line that is not a message this version can read.
    Malformed,
    /// The controller answered "not now" (5xx, 408, 429).
    Refused,
}

impl Reconnect {
    pub const ALL: [Reconnect; 7] = [
        Reconnect::Silence,
        Reconnect::Ended,
        Reconnect::Transport,
        Reconnect::NoAnswer,
        Reconnect::TooLong,
        Reconnect::Malformed,
        Reconnect::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reconnect::Silence => "silence",
            Reconnect::Ended => "ended",
            Reconnect::Transport => "transport",
            Reconnect::NoAnswer => "no_answer",
            Reconnect::TooLong => "too_long",
            Reconnect::Malformed => "malformed",
            Reconnect::Refused => "refused",
        }
    }

    fn of(e: &ClientError) -> Reconnect {
        match e {
            ClientError::Silent { .. } => Reconnect::Silence,
            ClientError::TooLong { .. } => Reconnect::TooLong,
            ClientError::Decode(_) => Reconnect::Malformed,
            ClientError::NoAnswer { .. } => Reconnect::NoAnswer,
            ClientError::Api { .. } => Reconnect::Refused,
            ClientError::Transport { .. } | ClientError::Config(_) => Reconnect::Transport,
        }
    }
}

/// What a [`ResumingWatch`] has been through, for logs and metrics (shared, read any time).
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Streams opened (the controller answered the watch request).
    pub streams: AtomicU64,
    /// Streams that resumed after the last revision without a snapshot.
    pub resumed: AtomicU64,
    /// Snapshots received (the first one included).
    pub snapshots: AtomicU64,
    /// Lines skipped because this version does not know their kind.
    pub skipped: AtomicU64,
    /// The silence deadline in force, in milliseconds.
    pub deadline_ms: AtomicU64,
    reconnects: [AtomicU64; Reconnect::ALL.len()],
}

impl WatchStats {
    /// Reconnects for `reason` so far.
    pub fn reconnects(&self, reason: Reconnect) -> u64 {
        self.reconnects[reason as usize].load(Ordering::Relaxed)
    }
}

/// Remembers what has been warned about, so that a newer controller's unknown kinds and
/// fields are reported once per watch, not once per line.
#[derive(Debug, Clone, Default)]
struct Warned(Arc<Mutex<HashSet<String>>>);

impl Warned {
    /// At most this many distinct warnings are remembered (and given).
    const MAX: usize = 64;

    fn once(&self, what: String, stats: Option<&WatchStats>) {
        if let Some(st) = stats {
            st.skipped.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut seen) = self.0.lock() else {
            return;
        };
        if seen.len() < Self::MAX && seen.insert(what.clone()) {
            tracing::warn!(
                skipped = %what,
                "watch: the controller sent what this version does not know; skipped (the controller is probably newer)"
            );
        }
    }
}

/// The paths of the fields in `got` that `known` (the same message, as this version reads it)
/// does not have: what a newer controller added. `null` fields count as absent.
fn unknown_fields(got: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (got, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (name, v) in g {
                if v.is_null() {
                    continue;
                }
                let p = format!("{path}.{name}");
                match k.get(name) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            let p = format!("{path}[]");
            for (v, kv) in g.iter().zip(k) {
                unknown_fields(v, kv, &p, out);
            }
        }
        _ => {}
    }
}

/// Reads one line of the stream. `Ok(None)`: a kind (or change event type) this version does
/// not know, skipped with a warning. Unknown fields are skipped with a warning too.
fn parse_line(
    line: &[u8],
    warned: &Warned,
    stats: Option<&WatchStats>,
) -> std::result::Result<Option<WatchLine<'static>>, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("watch line: {e}"))?;
    let Some(kind) = value.get("kind").and_then(Value::as_str) else {
        return Err("watch line without a \"kind\"".into());
    };
    if !WatchLine::KINDS.contains(&kind) {
        warned.once(format!("kind {kind:?}"), stats);
        return Ok(None);
    }
    if kind == "change" {
        if let Some(t) = value.pointer("/event/type").and_then(Value::as_str) {
            if !Event::TYPES.contains(&t) {
                warned.once(format!("change event type {t:?}"), stats);
                return Ok(None);
            }
        }
    }
    let msg = WatchLine::deserialize(&value).map_err(|e| format!("watch {kind} line: {e}"))?;
    let known = serde_json::to_value(&msg).map_err(|e| format!("watch {kind} line: {e}"))?;
    let mut unknown = Vec::new();
    unknown_fields(&value, &known, kind, &mut unknown);
    for field in unknown {
        warned.once(format!("field {field}"), None);
    }
    Ok(Some(msg))
}

/// One watch response, read line by line within the bounds of its [`WatchOptions`]: no
/// line beyond `max_line`, no silence beyond the deadline, snapshot parts joined.
pub struct WatchStream {
    body: ByteStream,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline (a snapshot line can be megabytes:
    /// searching it from the start after every chunk would be quadratic).
    scanned: usize,
    url: String,
    opts: WatchOptions,
    /// The heartbeat interval in force (announced, or assumed until announced).
    heartbeat: Duration,
    announced: Option<Duration>,
    /// When the last bytes arrived: the silence deadline runs from here. Kept here (not in a
    /// timer per call) so that a caller that drops `next()` midway does not reset it.
    heard: tokio::time::Instant,
    /// Until the first bytes arrive, the deadline is this instead (when set).
    first_bytes: Option<Duration>,
    /// A snapshot whose parts are still coming, and its size so far.
    pending: Option<(Snapshot, usize)>,
    warned: Warned,
}

impl WatchStream {
    /// The heartbeat interval the controller announced on this stream, once it has.
    pub fn announced_heartbeat(&self) -> Option<Duration> {
        self.announced
    }

    /// How long this stream may stay silent before [`WatchStream::next`] gives up on it.
    pub fn deadline(&self) -> Duration {
        self.first_bytes
            .unwrap_or_else(|| self.opts.deadline(self.heartbeat))
    }

    /// The next message; `Ok(None)` when the controller ended the stream (e.g. shutting down).
    /// Silence beyond the deadline is [`ClientError::Silent`], an oversized line
    /// [`ClientError::TooLong`], an unreadable one [`ClientError::Decode`].
    pub async fn next(&mut self) -> Result<Option<WatchMessage>> {
        self.next_counted(None).await
    }

    async fn next_counted(&mut self, stats: Option<&WatchStats>) -> Result<Option<WatchMessage>> {
        loop {
            let found = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|p| p + self.scanned);
            if let Some(pos) = found {
                self.scanned = 0;
                if pos > self.opts.max_line {
                    return Err(self.too_long("a watch line", self.opts.max_line));
                }
                let line = &self.buf[..pos];
                let parsed = if line.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    parse_line(line, &self.warned, stats).map_err(ClientError::Decode)?
                };
                self.buf.drain(..=pos);
                if let Some(msg) = self.take(parsed, pos)? {
                    return Ok(Some(msg));
                }
                continue;
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.opts.max_line {
                return Err(self.too_long("a watch line", self.opts.max_line));
            }
            let deadline = self.heard + self.deadline();
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => {
                    return Err(ClientError::Silent {
                        url: self.url.clone(),
                        after: self.deadline(),
                        heartbeat: self.heartbeat,
                    })
                }
                Ok(Some(Ok(chunk))) => {
                    self.heard = tokio::time::Instant::now();
                    self.first_bytes = None;
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(Some(Err(source))) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        source,
                    })
                }
                // A partial line at the end is dropped: the watcher resumes before it.
                Ok(None) => return Ok(None),
            }
        }
    }

    fn too_long(&self, what: &'static str, limit: usize) -> ClientError {
        ClientError::TooLong {
            url: self.url.clone(),
            what,
            limit,
        }
    }

    /// Takes one line (`None`: skipped) of `len` bytes: a message to deliver, or nothing yet
    /// (a snapshot part, a skipped line).
    fn take(
        &mut self,
        line: Option<WatchLine<'static>>,
        len: usize,
    ) -> Result<Option<WatchMessage>> {
        let malformed = |what: &str| Err(ClientError::Decode(format!("watch stream: {what}")));
        let Some(line) = line else {
            return Ok(None);
        };
        match line {
            WatchLine::Snapshot(part) => {
                if self.pending.is_some() {
                    return malformed("a snapshot began before the last one ended");
                }
                let snap = Snapshot {
                    revision: part.revision,
                    leases: part.leases.into_owned(),
                    apps: part.apps.into_owned(),
                    policies: part.policies.into_owned(),
                };
                if !part.more {
                    return Ok(Some(WatchMessage::Snapshot(snap)));
                }
                self.pending = Some((snap, 0));
                self.add_to_snapshot(len)?;
                Ok(None)
            }
            WatchLine::SnapshotPart(part) => {
                match &self.pending {
                    None => return malformed("a snapshot part without a snapshot"),
                    Some((snap, _)) if snap.revision != part.revision => {
                        return malformed("a snapshot part of another revision")
                    }
                    Some(_) => {}
                }
                self.add_to_snapshot(len)?;
                if let Some((snap, _)) = self.pending.as_mut() {
                    snap.leases.extend(part.leases.into_owned());
                    snap.apps.extend(part.apps.into_owned());
                    snap.policies.extend(part.policies.into_owned());
                }
                if part.more {
                    return Ok(None);
                }
                Ok(self
                    .pending
                    .take()
                    .map(|(snap, _)| WatchMessage::Snapshot(snap)))
            }
            WatchLine::Change(c) => {
                if self.pending.is_some() {
                    return malformed("a change inside a snapshot");
                }
                Ok(Some(WatchMessage::Change(c.into_owned())))
            }
            WatchLine::Heartbeat {
                revision,
                interval_ms,
            } => {
                if let Some(ms) = interval_ms {
                    let interval = announced_interval(ms);
                    self.heartbeat = interval;
                    self.announced = Some(interval);
                }
                if self.pending.is_some() {
                    // A beat while a long snapshot comes: proof of life, nothing to deliver.
                    return Ok(None);
                }
                Ok(Some(WatchMessage::Heartbeat {
                    revision,
                    interval_ms,
                }))
            }
        }
    }

    fn add_to_snapshot(&mut self, len: usize) -> Result<()> {
        let limit = self.opts.max_snapshot;
        let over = match self.pending.as_mut() {
            Some((_, size)) => {
                *size += len;
                *size > limit
            }
            None => false,
        };
        if over {
            return Err(self.too_long("a snapshot", limit));
        }
        Ok(())
    }
}

/// A watch that survives controller restarts, fail-overs and network errors: it ends a
/// stream that stays silent beyond its deadline (a few heartbeat intervals), reconnects
/// with jittered, capped exponential backoff and `since` set to the last revision it
/// delivered, so the caller sees every change once (or a fresh snapshot when the controller
/// can no longer replay). Every reconnect is logged with its reason and delay, and counted in
/// [`WatchStats`].
///
/// `next` may be dropped midway (e.g. in `select!`): the silence deadline and the reconnect
/// delay are kept in the watch, not in the future.
pub struct ResumingWatch {
    client: Client,
    opts: WatchOptions,
    last: Option<i64>,
    stream: Option<WatchStream>,
    /// The current stream has not yet shown whether it resumed or starts with a snapshot.
    unclassified: bool,
    /// The delay before the next reconnect (before jitter).
    backoff: Duration,
    /// No connection attempt before this.
    retry_at: Option<tokio::time::Instant>,
    /// The interval the controller last announced.
    heartbeat: Duration,
    stats: Arc<WatchStats>,
    warned: Warned,
}

impl ResumingWatch {
    /// The last revision delivered.
    pub fn revision(&self) -> Option<i64> {
        self.last
    }

    /// What this watch has been through (reconnects by reason, resumes, snapshots).
    pub fn stats(&self) -> Arc<WatchStats> {
        self.stats.clone()
    }

    /// The next message; waits (with backoff) through disconnects. Errors the controller answers
    /// with that retrying will not change (e.g. 401, 403) are returned.
    pub async fn next(&mut self) -> Result<WatchMessage> {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            if self.stream.is_none() {
                let opened = self
                    .client
                    .open_watch(self.last, &self.opts, self.warned.clone())
                    .await;
                match opened {
                    Ok(s) => {
                        self.stats.streams.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(since = ?self.last, "watch: connected");
                        self.stream = Some(s);
                        self.unclassified = true;
                    }
                    Err(e) if e.is_transient() => {
                        self.reconnect(Reconnect::of(&e), &e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next_counted(Some(&self.stats)).await {
                Ok(Some(msg)) => {
                    if let Some(interval) = stream.announced_heartbeat() {
                        if interval != self.heartbeat {
                            tracing::info!(heartbeat = ?interval, deadline = ?self.opts.deadline(interval), "watch: the controller announced its heartbeat");
                        }
                        self.heartbeat = interval;
                    }
                    self.stats
                        .deadline_ms
                        .store(stream.deadline().as_millis() as u64, Ordering::Relaxed);
                    self.classify(&msg);
                    self.backoff = self.opts.backoff_min;
                    if !matches!(msg, WatchMessage::Heartbeat { .. }) {
                        self.last = Some(msg.revision());
                    }
                    return Ok(msg);
                }
                Ok(None) => self.reconnect(Reconnect::Ended, &"the controller ended the stream"),
                Err(e) => self.reconnect(Reconnect::of(&e), &e),
            }
        }
    }

    /// Logs and counts, on a stream's first message, whether it resumed or begins anew.
    fn classify(&mut self, msg: &WatchMessage) {
        if let WatchMessage::Snapshot(s) = msg {
            self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
            if self.unclassified {
                match self.last {
                    Some(since) => tracing::info!(
                        since,
                        revision = s.revision,
                        "watch: snapshot at revision {} (the controller could not replay after {since})",
                        s.revision
                    ),
                    None => tracing::info!(revision = s.revision, "watch: snapshot at revision {}", s.revision),
                }
            }
            self.unclassified = false;
        } else if self.unclassified {
            // A change or heartbeat first: a stream without a snapshot (one with a snapshot
            // starts with it), so the controller replayed from our revision.
            if let Some(since) = self.last {
                self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(since, "watch: resumed from revision {since}");
                self.unclassified = false;
            }
        }
    }

    /// Drops the stream and schedules the next attempt.
    fn reconnect(&mut self, reason: Reconnect, why: &dyn std::fmt::Display) {
        self.stream = None;
        if matches!(reason, Reconnect::Silence | Reconnect::NoAnswer) {
            // The controller went quiet without closing anything: the idle connections of
            // the client's other requests are as dead as the stream.
            self.client.reset_connections();
        }
        self.stats.reconnects[reason as usize].fetch_add(1, Ordering::Relaxed);
        let delay = jitter(self.backoff);
        self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
        self.retry_at = Some(tokio::time::Instant::now() + delay);
        tracing::warn!(
            reason = reason.as_str(),
            error = %why,
            retry_in = ?delay,
            since = ?self.last,
            "watch: reconnecting"
        );
    }
}

/// Between half and all of `d`, at random.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }

    #[test]
    fn unknown_fields_are_found_at_any_depth() {
        let got = serde_json::json!({"kind": "change", "revision": 3, "origin": "x",
            "event": {"type": "lease_put", "lease": {"host": "h", "zone": "z", "tag": null}},
            "list": [{"a": 1, "b": 2}]});
        let known = serde_json::json!({"kind": "change", "revision": 3,
            "event": {"type": "lease_put", "lease": {"host": "h"}},
            "list": [{"a": 1}]});
        let mut out = Vec::new();
        unknown_fields(&got, &known, "change", &mut out);
        out.sort();
        assert_eq!(
            out,
            vec![
                "change.event.lease.zone",
                "change.list[].b",
                "change.origin"
            ]
        );
    }

    #[test]
    fn announced_intervals_are_bounded() {
        assert_eq!(announced_interval(0), Duration::from_millis(10));
        assert_eq!(announced_interval(u64::MAX), Duration::from_secs(3600));
        let opts = WatchOptions::default();
        assert_eq!(
            opts.deadline(Duration::from_secs(5)),
            Duration::from_secs(15)
        );
    }
}
