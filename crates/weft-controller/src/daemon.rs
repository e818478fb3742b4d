//! `weft controller`: the daemon's arguments and what they start. [`ControllerArgs::start`]
//! opens the store, starts the [`Controller`] and serves it (TLS with the given certificates,
//! or a lab PKI made in `STATE_DIR/tls` on first start; `--insecure-http` for labs);
//! [`ControllerArgs::run`] adds logging and waits for SIGINT or SIGTERM. The limits are
//! derived from the file limit unless given ([`ControllerArgs::limits`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipnet::Ipv4Net;

use crate::controller::{Controller, ControllerConfig};
use crate::leases::Pool;
use crate::limits::{self, Limits};
use crate::server::{self, ServeOptions};
use crate::{store, tls};
use weft_api::logging::LogFormat;
use weft_api::pki::{self, LabPki};

/// `weft controller`: serve leases, app tags and policies. Each flag can also be set by its
/// environment variable and, with `--config FILE`, by the key of its name in that TOML file
/// (`overlay-cidr = "10.255.0.0/16"`): flags override the environment, which overrides the
/// file. The shipped `packaging/etc/weft/controller.toml` lists every key with its default.
#[derive(Debug, Clone, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ControllerArgs {
    /// TOML file with settings (keys are the flag names); the environment and flags override it.
    #[arg(long, env = "WEFT_CONTROLLER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "WEFT_CONTROLLER_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,
    /// sqlite:PATH (relative to --state-dir), sqlite::memory: or postgres://USER@HOST/DB.
    #[arg(long, env = "WEFT_STORE", default_value = "sqlite:controller.db")]
    pub store: String,
    /// Directory for the SQLite store, the lab certificates and the token.
    #[arg(
        long,
        env = "WEFT_STATE_DIR",
        default_value = "/var/lib/weft/controller"
    )]
    pub state_dir: PathBuf,
    /// The overlay network hosts' subnets are cut from.
    #[arg(
        long,
        env = "WEFT_CONTROLLER_OVERLAY_CIDR",
        default_value = "10.255.0.0/16"
    )]
    pub overlay_cidr: Ipv4Net,
    /// Prefix length of each host's subnet.
    #[arg(long, env = "WEFT_CONTROLLER_HOST_PREFIX", default_value_t = 24)]
    pub host_prefix: u8,
    /// Seconds a lease lives unless renewed.
    #[arg(long, env = "WEFT_CONTROLLER_LEASE_TTL", default_value_t = 300)]
    pub lease_ttl: u64,
    /// Seconds after the controller starts during which no lease expires (default: the lease
    /// TTL), so that hosts which could not renew while it was away keep their subnets.
    #[arg(long, env = "WEFT_CONTROLLER_LEASE_GRACE")]
    pub lease_grace: Option<u64>,
    /// Seconds between heartbeats on idle watch streams (fractions allowed). Announced in the
    /// stream: watchers take 3 intervals of silence for a lost controller.
    #[arg(long, env = "WEFT_CONTROLLER_HEARTBEAT", default_value_t = crate::controller::DEFAULT_HEARTBEAT.as_secs_f64(), value_parser = weft_api::client::parse_interval_secs)]
    pub heartbeat: f64,
    /// Server certificate (PEM). Without it, a lab PKI in STATE_DIR/tls is used (made on first start).
    #[arg(long, env = "WEFT_CONTROLLER_TLS_CERT", requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Server key (PEM).
    #[arg(long, env = "WEFT_CONTROLLER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA that signs agents' client certificates.
    #[arg(long, env = "WEFT_CONTROLLER_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Bearer token for policy writes. Default: the one in STATE_DIR/token (made on first start).
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve plain HTTP without client authentication (labs only).
    #[arg(long, env = "WEFT_CONTROLLER_INSECURE_HTTP", conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    pub insecure_http: bool,
    /// Log format: "text" or "json" (one object a line). The level is WEFT_LOG's (default info).
    #[arg(long, env = "WEFT_CONTROLLER_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Most apps one host may claim (the apps of the containers it runs).
    #[arg(long, env = "WEFT_CONTROLLER_MAX_CLAIMS_PER_HOST", default_value_t = crate::controller::DEFAULT_MAX_CLAIMS_PER_HOST)]
    pub max_claims_per_host: usize,
    /// Largest request body in bytes; larger ones get 413 before they are read.
    #[arg(long, env = "WEFT_CONTROLLER_MAX_BODY_BYTES", default_value_t = crate::limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Most client connections. Default: the file limit (RLIMIT_NOFILE, raised to its hard
    /// limit at start) less 128.
    #[arg(long, env = "WEFT_CONTROLLER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections from one client address. Default: half of --max-connections.
    #[arg(long, env = "WEFT_CONTROLLER_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Most connections not yet authenticated (the oldest is closed to make room for a new
    /// one). Default: half of --max-connections.
    #[arg(long, env = "WEFT_CONTROLLER_MAX_PENDING_CONNECTIONS")]
    pub max_pending_connections: Option<usize>,
    /// Most connections not yet authenticated from one client address. Default: a quarter
    /// of --max-connections (at least 4).
    #[arg(long, env = "WEFT_CONTROLLER_MAX_PENDING_PER_IP")]
    pub max_pending_per_ip: Option<usize>,
    /// Seconds a client has to send a request's headers (and to start its next request on an
    /// idle connection).
    #[arg(long, env = "WEFT_CONTROLLER_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(long, env = "WEFT_CONTROLLER_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "WEFT_CONTROLLER_BODY_TIMEOUT", default_value_t = 30)]
    pub body_timeout: u64,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // The embedding binary may have set a subscriber already; keep it then.
    let _ = if format == LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

impl ControllerArgs {
    /// The arguments `weft controller ARGS...` gives, the defaults for the rest (tests and
    /// embedding: set fields after).
    pub fn from_args<I, S>(args: I) -> Result<ControllerArgs, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ControllerArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("controller"))
            .chain(args.into_iter().map(Into::into));
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.args)
    }

    /// Everything [`ControllerArgs::run`] does short of waiting for a signal: open the store,
    /// start the controller and serve. For tests and embedding.
    pub async fn start(&self) -> anyhow::Result<server::RunningServer> {
        let pool = Pool::new(self.overlay_cidr, self.host_prefix).map_err(anyhow::Error::msg)?;
        let store = store::open(&self.store, &self.state_dir).await?;
        let mut config = ControllerConfig::new(pool);
        config.lease_ttl = Duration::from_secs(self.lease_ttl.max(1));
        config.lease_grace = self
            .lease_grace
            .map(Duration::from_secs)
            .unwrap_or(config.lease_ttl);
        config.heartbeat = Duration::from_secs_f64(self.heartbeat);
        config.max_claims_per_host = self.max_claims_per_host;
        let limits = self.limits()?;
        let controller = Controller::start(store, config)
            .await
            .context("cannot start the controller")?;

        let (tls, token) = if self.insecure_http {
            tracing::warn!("serving plain HTTP without client authentication (--insecure-http)");
            if self.token.is_none() {
                tracing::warn!(
                    "no --token: anyone who can reach the controller may write policies"
                );
            }
            (None, self.token.clone())
        } else {
            let tls = match (&self.tls_cert, &self.tls_key, &self.client_ca) {
                (Some(cert), Some(key), Some(ca)) => tls::ServerTls::from_files(cert, key, ca)?,
                _ => {
                    let pki = LabPki::new(self.state_dir.join("tls"));
                    if !pki.exists() {
                        let mut names = vec![
                            "localhost".to_string(),
                            "127.0.0.1".to_string(),
                            "::1".to_string(),
                        ];
                        if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
                            if !h.trim().is_empty() {
                                names.push(h.trim().to_string());
                            }
                        }
                        if !self.listen.ip().is_unspecified() {
                            names.push(self.listen.ip().to_string());
                        }
                        names.dedup();
                        pki.generate(&names, &[], false)?;
                        tracing::info!(dir = %pki.dir.display(), "created a lab CA and certificates");
                    }
                    tls::ServerTls::from_files(&pki.server_cert(), &pki.server_key(), &pki.ca())?
                }
            };
            let token = match &self.token {
                Some(t) => t.clone(),
                None => {
                    let path = self.state_dir.join("token");
                    let t = pki::token_file(&path)?;
                    tracing::info!(path = %path.display(), "policy write token");
                    t
                }
            };
            (Some(Arc::new(tls)), Some(token))
        };
        server::serve(
            controller,
            ServeOptions {
                listen: self.listen,
                tls,
                token,
                limits,
            },
        )
        .await
    }

    /// The connection, time and size limits: the options given, the rest derived from the
    /// file limit (raised to its hard limit first).
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let nofile = limits::raise_nofile();
        let mut l = Limits::from_nofile(nofile);
        if let Some(n) = self.max_connections {
            let most = nofile.saturating_sub(limits::FD_RESERVE) as usize;
            if n > most {
                anyhow::bail!(
                    "--max-connections {n} does not fit the file limit {nofile} (RLIMIT_NOFILE) \
                     less {} for the controller itself: at most {most}",
                    limits::FD_RESERVE
                );
            }
            l = Limits::from_nofile(n as u64 + limits::FD_RESERVE);
        }
        if let Some(n) = self.max_connections_per_ip {
            l.max_connections_per_ip = n;
        }
        if let Some(n) = self.max_pending_connections {
            l.max_pending = n;
        }
        if let Some(n) = self.max_pending_per_ip {
            l.max_pending_per_ip = n;
        }
        for (name, v) in [
            ("--max-connections", l.max_connections),
            ("--max-connections-per-ip", l.max_connections_per_ip),
            ("--max-pending-connections", l.max_pending),
            ("--max-pending-per-ip", l.max_pending_per_ip),
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-claims-per-host", self.max_claims_per_host),
        ] {
            if v == 0 {
                anyhow::bail!("{name} must be at least 1");
            }
        }
        l.header_timeout = Duration::from_secs(self.header_timeout.max(1));
        l.handshake_timeout = Duration::from_secs(self.handshake_timeout.max(1));
        l.body_timeout = Duration::from_secs(self.body_timeout.max(1));
        l.max_body_bytes = self.max_body_bytes;
        Ok(l)
    }

    pub async fn run(self) -> anyhow::Result<()> {
        init_logging(self.log_format);
        let server = self.start().await?;
        let stop = server.shutdown_handle();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("signal received");
            let _ = stop.send(true);
        });
        server.wait().await;
        tracing::info!("controller stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ControllerArgs;

    #[test]
    fn arguments_parse_and_conflict() {
        let c = ControllerArgs::from_args([
            "--store",
            "postgres://u@h/db",
            "--overlay-cidr",
            "10.240.0.0/12",
            "--host-prefix",
            "26",
            "--insecure-http",
        ])
        .unwrap();
        assert_eq!(c.host_prefix, 26);
        assert!(c.insecure_http);
        assert!(ControllerArgs::from_args(["--tls-cert", "x"]).is_err());
        assert!(ControllerArgs::from_args([
            "--insecure-http",
            "--tls-cert",
            "a",
            "--tls-key",
            "b",
            "--client-ca",
            "c"
        ])
        .is_err());
    }
}
