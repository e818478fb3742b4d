//! Serving the API: plain TCP or TLS (rustls), one hyper connection per client, graceful
//! shutdown (stop accepting, end watch streams, let requests in flight finish).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Extension;
use hyper_util::rt::TokioIo;
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

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to serve a controller.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// `None` serves plain HTTP (`--insecure-http`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bearer token for policy writes (and accepted on agent routes).
    pub token: Option<String>,
}

/// A controller serving on a socket. Dropping it does not stop it: call [`RunningServer::shutdown`].
pub struct RunningServer {
    local_addr: SocketAddr,
    tls: bool,
    controller: Arc<Controller>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
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
    let state = AppState {
        ctl: controller.clone(),
        auth: Arc::new(Auth {
            token: opts.token.clone(),
            tls: opts.tls.is_some(),
        }),
        shutdown: shutdown_rx.clone(),
    };
    let router = api::router(state);
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    tracing::info!(
        addr = %local_addr,
        tls = acceptor.is_some(),
        store = controller.store().backend(),
        "controller listening"
    );
    let task = tokio::spawn(accept_loop(listener, acceptor, router, shutdown_rx));
    Ok(RunningServer {
        local_addr,
        tls: opts.tls.is_some(),
        controller,
        shutdown,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: axum::Router,
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
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(tcp, Peer::default(), router, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let peer = Peer {
                                client_cert: tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .is_some_and(|c| !c.is_empty()),
                            };
                            serve_connection(tls, peer, router, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
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

async fn serve_connection<I>(
    io: I,
    peer: Peer,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router.layer(Extension(peer)));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
