//! Serving the API: plain TCP or TLS (rustls), one hyper connection per client, graceful
//! shutdown (stop accepting, end watch streams, let requests in flight finish). Every
//! connection takes a slot in the connection table first ([`crate::limits`]) and is bounded in
//! time: the TLS handshake, each request's headers (also the wait for the next request on an
//! idle connection) and body. A response being streamed (the watch) is bounded by none of
//! these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Extension;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, AppState};
use crate::auth::{Auth, Peer};
use crate::controller::Controller;
use crate::limits::{Limits, Slot, Tracker};
use crate::tls::ServerTls;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to serve a controller.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// `None` serves plain HTTP (`--insecure-http`).
    pub tls: Option<Arc<ServerTls>>,
    /// Bearer token for policy writes (and accepted on agent routes).
    pub token: Option<String>,
    /// Connection, time and size limits.
    pub limits: Limits,
}

/// A controller serving on a socket. Dropping it does not stop it: call [`RunningServer::shutdown`].
pub struct RunningServer {
    local_addr: SocketAddr,
    tls: bool,
    controller: Arc<Controller>,
    tracker: Arc<Tracker>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The connection table (counts for tests and operators).
    pub fn connections(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Stops accepting, ends watch streams and waits (bounded) for requests in flight.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] from elsewhere, or an error).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that can trigger shutdown from another task.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Binds `opts.listen` and serves `controller` until shut down.
pub async fn serve(
    controller: Arc<Controller>,
    opts: ServeOptions,
) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let local_addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tracker = Tracker::new(opts.limits.clone());
    let state = AppState {
        ctl: controller.clone(),
        auth: Arc::new(Auth {
            token: opts.token.clone(),
            tls: opts.tls.is_some(),
        }),
        shutdown: shutdown_rx.clone(),
        limits: Arc::new(opts.limits.clone()),
        connections: tracker.clone(),
    };
    let router = api::router(state);
    let l = &opts.limits;
    tracing::info!(
        addr = %local_addr,
        tls = opts.tls.is_some(),
        store = controller.store().backend(),
        max_connections = l.max_connections,
        max_connections_per_ip = l.max_connections_per_ip,
        max_pending = l.max_pending,
        max_pending_per_ip = l.max_pending_per_ip,
        max_body_bytes = l.max_body_bytes,
        "controller listening"
    );
    let task = tokio::spawn(accept_loop(
        listener,
        opts.tls.clone(),
        router,
        tracker.clone(),
        shutdown_rx,
    ));
    Ok(RunningServer {
        local_addr,
        tls: opts.tls.is_some(),
        controller,
        tracker,
        shutdown,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    router: axum::Router,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(slot) = tracker.admit(remote.ip()) else {
            tracing::debug!(%remote, "connection refused: connection limits reached");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let limits = tracker.limits().clone();
        tokio::spawn(async move {
            let evicted = slot.clone();
            tokio::select! {
                _ = evicted.evicted() => tracing::debug!(%remote, "pending connection evicted to make room"),
                _ = connection(tcp, remote, tls, router, slot, &limits, watcher) => {}
            }
        });
    }
    drop(listener);
    tracing::info!("controller shutting down");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

/// One client connection: the TLS handshake (bounded), then HTTP/1.
async fn connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    router: axum::Router,
    slot: Arc<Slot>,
    limits: &Limits,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let Some(tls) = tls else {
        return serve_connection(tcp, Peer::default(), router, slot, limits, watcher).await;
    };
    // The configuration of the moment: certificates re-read if their files changed.
    let acceptor = TlsAcceptor::from(tls.config());
    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            let peer = Peer {
                client_cert: cert.is_some(),
                host: cert.as_deref().and_then(weft_api::tls::host_of),
            };
            if peer.client_cert {
                slot.authenticated();
            }
            serve_connection(stream, peer, router, slot, limits, watcher).await
        }
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
    }
}

async fn serve_connection<I>(
    io: I,
    peer: Peer,
    router: axum::Router,
    slot: Arc<Slot>,
    limits: &Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router.layer(Extension(peer)).layer(Extension(slot)));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
