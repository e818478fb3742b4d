//! A typed async client for the controller's API, used by the agent and the CLI.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{
    AcquireLease, App, AppList, ClaimSet, ErrorBody, Health, HostRef, Lease, LeaseList, Policy,
    PolicyList, PolicyWriteResult, WatchMessage,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

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
}

impl ClientError {
    /// The HTTP status, for errors the controller answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
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
}

impl ClientBuilder {
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
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            // Below the controller's header timeout (10 s by default), which also closes idle
            // connections: an idle connection is dropped here before the controller closes it
            // under a request.
            .pool_idle_timeout(Duration::from_secs(5));
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
        let http = http
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client {
            http,
            base,
            token: self.token,
        })
    }
}

/// A connection to one controller. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
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

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
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
        let resp = self.send(r.timeout(REQUEST_TIMEOUT)).await?;
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
            .send(
                self.request(Method::GET, "/metrics")
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        resp.text().await.map_err(|source| ClientError::Transport {
            url: self.base.clone(),
            source,
        })
    }

    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, "/openapi.json")).await
    }

    pub async fn acquire_lease(&self, host: &str, underlay_ip: &str) -> Result<Lease> {
        let body = AcquireLease {
            host: host.into(),
            underlay_ip: underlay_ip.into(),
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
                .timeout(REQUEST_TIMEOUT),
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
                    .timeout(REQUEST_TIMEOUT),
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

    /// Opens a watch stream: a snapshot (or, with `since`, the changes after it) then every change.
    pub async fn watch(&self, since: Option<i64>) -> Result<WatchStream> {
        let mut r = self.request(Method::GET, "/v1/watch");
        if let Some(s) = since {
            r = r.query(&[("since", s)]);
        }
        let resp = self.send(r).await?;
        Ok(WatchStream {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            scanned: 0,
            url: self.base.clone(),
        })
    }

    /// A watch that reconnects by itself, resuming after the last revision it delivered.
    pub fn watch_resuming(&self, since: Option<i64>) -> ResumingWatch {
        ResumingWatch {
            client: self.clone(),
            last: since,
            stream: None,
            fresh: false,
            backoff: Duration::from_millis(100),
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

/// One watch response, read line by line.
pub struct WatchStream {
    body: ByteStream,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline (a snapshot line can be megabytes:
    /// searching it from the start after every chunk would be quadratic).
    scanned: usize,
    url: String,
}

impl WatchStream {
    /// The next message; `Ok(None)` when the controller ended the stream (e.g. shutting down).
    pub async fn next(&mut self) -> Result<Option<WatchMessage>> {
        loop {
            if let Some(pos) = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|p| p + self.scanned)
            {
                self.scanned = 0;
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Decode(format!("watch line: {e}")));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.scanned = self.buf.len();
                    self.buf.extend_from_slice(&chunk)
                }
                Some(Err(source)) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        source,
                    })
                }
                None => return Ok(None),
            }
        }
    }
}

/// A watch that survives controller restarts and network errors: on any error it reconnects
/// with `since` set to the last revision it delivered, so the caller sees every change once
/// (or a fresh snapshot when the controller can no longer replay).
pub struct ResumingWatch {
    client: Client,
    last: Option<i64>,
    stream: Option<WatchStream>,
    /// The stream is new, owes us a snapshot, and has delivered nothing yet.
    fresh: bool,
    backoff: Duration,
}

/// How long a watch request may take to be answered, and a new watch without a revision to
/// resume from to deliver its snapshot (which the controller sends at once). A request that
/// hears nothing by then is abandoned and made again: seen in the simulated data centre, a
/// watch sent right after an agent's first requests sometimes got no answer at all, and
/// nothing else would have noticed.
const FIRST_MESSAGE: Duration = Duration::from_secs(5);

impl ResumingWatch {
    /// The last revision delivered.
    pub fn revision(&self) -> Option<i64> {
        self.last
    }

    /// The next message; waits (with backoff) through disconnects. Errors the controller answers
    /// with (e.g. 401) are returned, since retrying will not help.
    pub async fn next(&mut self) -> Result<WatchMessage> {
        loop {
            if self.stream.is_none() {
                match tokio::time::timeout(FIRST_MESSAGE, self.client.watch(self.last)).await {
                    Ok(Ok(s)) => {
                        self.stream = Some(s);
                        // A snapshot comes at once; a resumed watch with nothing to replay
                        // stays quiet until the next change or heartbeat.
                        self.fresh = self.last.is_none();
                    }
                    Err(_) => {
                        tracing::warn!(after = ?FIRST_MESSAGE, "watch: the controller did not answer; asking again");
                        self.pause().await;
                        continue;
                    }
                    Ok(Err(e @ ClientError::Api { .. })) | Ok(Err(e @ ClientError::Config(_))) => {
                        return Err(e)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, retry_in = ?self.backoff, "watch: cannot connect to the controller");
                        self.pause().await;
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let next = if self.fresh {
                match tokio::time::timeout(FIRST_MESSAGE, stream.next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(after = ?FIRST_MESSAGE, "watch: nothing from the controller; asking again");
                        self.stream = None;
                        self.pause().await;
                        continue;
                    }
                }
            } else {
                stream.next().await
            };
            match next {
                Ok(Some(msg)) => {
                    self.fresh = false;
                    self.backoff = Duration::from_millis(100);
                    if !matches!(msg, WatchMessage::Heartbeat { .. }) {
                        self.last = Some(msg.revision());
                    }
                    return Ok(msg);
                }
                Ok(None) | Err(_) => {
                    self.stream = None;
                    self.pause().await;
                }
            }
        }
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
    }
}
