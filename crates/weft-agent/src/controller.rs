//! The agent's calls to the controller that run off the loop: the client, lease renewals
//! (with re-acquiring a lost lease) and the watch in a task of its own. Their results come
//! back to the loop as [`Done`] and [`FromWatch`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use ipnet::Ipv4Net;
use tokio::sync::mpsc;
use weft_api::client::{ClientError, ResumingWatch};
use weft_api::model::{Lease, WatchMessage};
use weft_api::Client;

use crate::args::AgentArgs;

pub(crate) fn client(args: &AgentArgs) -> Result<Client> {
    let mut b = Client::builder(args.controller.clone());
    if let Some(ca) = &args.ca {
        b = b.ca(ca.clone());
    }
    if let (Some(c), Some(k)) = (&args.cert, &args.key) {
        b = b.identity(c.clone(), k.clone());
    }
    if let Some(t) = &args.token {
        b = b.token(t.clone());
    }
    Ok(b.timeout(Duration::from_secs_f64(args.request_timeout))
        .build()?)
}

/// What a controller call that ran off the loop came back with.
pub(crate) enum Done {
    Lease(std::result::Result<Renewal, ClientError>),
    /// The controller's answer to this host's claim set `apps` (the apps with their tags),
    /// sent while `epoch` was the claims epoch (a lost lease begins a new one).
    Claims {
        epoch: u64,
        apps: Vec<String>,
        result: std::result::Result<weft_api::model::AppList, ClientError>,
    },
}

pub(crate) enum Renewal {
    Renewed(Lease),
    /// The controller no longer had our lease; it was acquired again.
    Reacquired(Lease),
}

/// Renews our lease, or acquires it again (asking for the same subnet) if it is gone.
pub(crate) async fn renew_or_reacquire(
    client: &Client,
    host: &str,
    underlay_ip: &str,
    subnet: Ipv4Net,
) -> std::result::Result<Renewal, ClientError> {
    match client.renew_lease(host).await {
        Ok(l) => Ok(Renewal::Renewed(l)),
        Err(e) if e.status() == Some(404) => {
            tracing::warn!(%subnet, "lease lost; acquiring it again, asking for the same subnet");
            client
                .acquire_lease_preferring(host, underlay_ip, Some(subnet))
                .await
                .map(Renewal::Reacquired)
        }
        Err(e) => Err(e),
    }
}

/// What the watch task passes to the loop.
pub(crate) enum FromWatch {
    Message(WatchMessage),
    /// A new stream after the first (the controller was away, or ended the stream).
    Reconnected,
    /// The controller refused the watch for good (e.g. 401); the agent stops.
    Failed(ClientError),
}

/// Runs the watch in a task of its own: a silent or slow controller never holds up the loop.
pub(crate) fn spawn_watch(mut watch: ResumingWatch) -> mpsc::Receiver<FromWatch> {
    let (tx, rx) = mpsc::channel(1024);
    let stats = watch.stats();
    tokio::spawn(async move {
        let mut streams = 0;
        loop {
            let next = watch.next().await;
            let now = stats.streams.load(Ordering::Relaxed);
            if now > 1 && now != streams && tx.send(FromWatch::Reconnected).await.is_err() {
                return;
            }
            streams = now;
            let (item, last) = match next {
                Ok(m) => (FromWatch::Message(m), false),
                Err(e) => (FromWatch::Failed(e), true),
            };
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    rx
}
