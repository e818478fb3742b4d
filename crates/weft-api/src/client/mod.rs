//! A typed async client for the controller's API, used by the agent and the CLI.
//!
//! Every request but a watch is bounded in time ([`ClientBuilder::timeout`]). A watch is
//! bounded in what it may cost: silence beyond a few of the controller's announced heartbeat
//! intervals ends it, and so do a line or a snapshot beyond [`WatchOptions`]' bounds; what a
//! newer controller adds (kinds, event types, fields) is skipped with a warning.
//! [`ResumingWatch`] turns every such end into a logged, counted reconnect with jittered
//! backoff that resumes from the last revision delivered.
//!
//! - this module: building a client (CA, identity, token, timeout), errors, one method per
//!   request
//! - [`watch`](WatchStream): one watch stream read line by line within its bounds
//! - [`resume`](ResumingWatch): the watch that reconnects, with backoff, stats and reasons

mod resume;
mod watch;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::Ipv4Net;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use resume::{Reconnect, ResumingWatch, WatchStats};
pub use watch::{parse_interval_secs, WatchOptions, WatchStream, INTERVAL_MAX, INTERVAL_MIN};

use crate::egress::{
    Destination, DestinationList, EgressMode, EgressPolicy, EgressPolicyList, EgressSettings,
};
use crate::model::{
    AcquireLease, App, AppList, ClaimSet, ContainerSet, ErrorBody, Health, HostRef, InstanceList,
    Lease, LeaseList, Policy, PolicyList, PolicyWriteResult, ReportedInstance, TagList,
};
use crate::paths;

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
        self.decode(resp).await
    }

    /// The JSON body of a successful reply.
    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
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
        self.json(self.request(Method::GET, paths::HEALTHZ)).await
    }

    /// The Prometheus metrics page as text.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .send(
                self.request(Method::GET, paths::METRICS)
                    .timeout(self.timeout),
            )
            .await?;
        resp.text().await.map_err(|source| ClientError::Transport {
            url: self.base.clone(),
            source,
        })
    }

    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, paths::OPENAPI)).await
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
        self.post(paths::LEASES_ACQUIRE, &body).await
    }

    pub async fn renew_lease(&self, host: &str) -> Result<Lease> {
        self.post(paths::LEASES_RENEW, &HostRef { host: host.into() })
            .await
    }

    pub async fn release_lease(&self, host: &str) -> Result<()> {
        self.send(
            self.request(Method::POST, paths::LEASES_RELEASE)
                .json(&HostRef { host: host.into() })
                .timeout(self.timeout),
        )
        .await?;
        Ok(())
    }

    pub async fn leases(&self) -> Result<LeaseList> {
        self.json(self.request(Method::GET, paths::LEASES)).await
    }

    pub async fn apps(&self) -> Result<AppList> {
        self.json(self.request(Method::GET, paths::APPS)).await
    }

    pub async fn app(&self, id: &str) -> Result<App> {
        self.json(self.request(Method::GET, &paths::fill(paths::APP, "id", id)))
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
        self.decode(resp).await.map(Some)
    }

    /// Makes `apps` exactly the apps `host` claims (the apps of the containers it runs);
    /// returns them with their tags.
    pub async fn set_claims(&self, host: &str, apps: &[String]) -> Result<AppList> {
        let body = ClaimSet {
            apps: apps.to_vec(),
        };
        self.json(
            self.request(Method::PUT, &paths::fill(paths::HOST_APPS, "host", host))
                .json(&body),
        )
        .await
    }

    /// The apps `host` claims.
    pub async fn claims(&self, host: &str) -> Result<AppList> {
        self.json(self.request(Method::GET, &paths::fill(paths::HOST_APPS, "host", host)))
            .await
    }

    /// Makes `containers` exactly the instances `host` runs (its placement); returns them.
    /// `host` may be `""` with an agent certificate (the host it names).
    pub async fn set_containers(
        &self,
        host: &str,
        containers: &[ReportedInstance],
    ) -> Result<InstanceList> {
        let body = ContainerSet {
            containers: containers.to_vec(),
        };
        self.json(
            self.request(
                Method::PUT,
                &paths::fill(paths::HOST_CONTAINERS, "host", host),
            )
            .json(&body),
        )
        .await
    }

    /// The instances `host` reported.
    pub async fn containers(&self, host: &str) -> Result<InstanceList> {
        self.json(self.request(
            Method::GET,
            &paths::fill(paths::HOST_CONTAINERS, "host", host),
        ))
        .await
    }

    /// Every running instance, or (`app`) those of one app.
    pub async fn instances(&self, app: Option<&str>) -> Result<InstanceList> {
        let mut r = self.request(Method::GET, paths::INSTANCES);
        if let Some(app) = app {
            r = r.query(&[("app", app)]);
        }
        self.json(r).await
    }

    pub async fn create_policies(&self, policies: &[Policy]) -> Result<PolicyWriteResult> {
        let body = PolicyList {
            total_policies: None,
            policies: policies.iter().map(Policy::untagged).collect(),
        };
        self.post(paths::POLICIES, &body).await
    }

    pub async fn delete_policies(&self, policies: &[Policy]) -> Result<PolicyWriteResult> {
        let body = PolicyList {
            total_policies: None,
            policies: policies.iter().map(Policy::untagged).collect(),
        };
        self.post(paths::POLICIES_DELETE, &body).await
    }

    /// Policies, all or those whose source or destination is one of `ids`.
    pub async fn policies(&self, ids: Option<&[&str]>) -> Result<PolicyList> {
        let mut r = self.request(Method::GET, paths::POLICIES);
        if let Some(ids) = ids {
            r = r.query(&[("id", ids.join(","))]);
        }
        self.json(r).await
    }

    /// Every app's tag, as Cloud Foundry's policy server lists them.
    pub async fn tags(&self) -> Result<TagList> {
        self.json(self.request(Method::GET, paths::TAGS)).await
    }

    /// The network-wide egress mode.
    pub async fn egress_mode(&self) -> Result<EgressSettings> {
        self.json(self.request(Method::GET, paths::EGRESS)).await
    }

    pub async fn set_egress_mode(&self, mode: EgressMode) -> Result<EgressSettings> {
        self.json(
            self.request(Method::PUT, paths::EGRESS)
                .json(&EgressSettings { mode })
                .timeout(self.timeout),
        )
        .await
    }

    pub async fn destinations(&self) -> Result<DestinationList> {
        self.json(self.request(Method::GET, paths::DESTINATIONS))
            .await
    }

    /// Creates destinations or replaces their rules (by name).
    pub async fn put_destinations(&self, destinations: &[Destination]) -> Result<DestinationList> {
        let body = DestinationList {
            destinations: destinations.to_vec(),
        };
        self.post(paths::DESTINATIONS, &body).await
    }

    pub async fn delete_destination(&self, id: &str) -> Result<Destination> {
        self.json(
            self.request(Method::DELETE, &paths::fill(paths::DESTINATION, "id", id))
                .timeout(self.timeout),
        )
        .await
    }

    pub async fn egress_policies(&self) -> Result<EgressPolicyList> {
        self.json(self.request(Method::GET, paths::EGRESS_POLICIES))
            .await
    }

    pub async fn create_egress_policies(
        &self,
        policies: &[EgressPolicy],
    ) -> Result<PolicyWriteResult> {
        self.post(paths::EGRESS_POLICIES, &egress_body(policies))
            .await
    }

    pub async fn delete_egress_policies(
        &self,
        policies: &[EgressPolicy],
    ) -> Result<PolicyWriteResult> {
        self.post(paths::EGRESS_POLICIES_DELETE, &egress_body(policies))
            .await
    }
}

/// The body of an egress-policy create or delete: the policies without the ids the server tags.
fn egress_body(policies: &[EgressPolicy]) -> EgressPolicyList {
    EgressPolicyList {
        total_egress_policies: None,
        egress_policies: policies.iter().map(EgressPolicy::untagged).collect(),
    }
}

fn claim_path(host: &str, id: &str) -> String {
    let app = paths::fill(paths::APP, "id", id);
    if host.is_empty() {
        app
    } else {
        format!("{app}?host={}", paths::encode(host))
    }
}
