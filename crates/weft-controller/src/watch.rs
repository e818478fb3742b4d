//! Watch: a snapshot and then every change, as JSON lines on one long response.
//!
//! One [`Feed`] task per controller reads the change log in revision order whenever the store
//! signals a commit (locally, or from another controller through PostgreSQL `NOTIFY`) and
//! broadcasts each change to the controller's watchers. A watcher that falls behind, or that
//! reconnects with `since=REV`, catches up from the change log itself, so nothing is missed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::changelog;
use crate::controller::Controller;
use crate::error::Result;
use crate::model::{Change, WatchMessage};
use crate::store::{Store, TxMode};

/// Changes read from the log per query.
const PAGE: i64 = 1000;
/// A watcher further behind than this gets a snapshot instead of a replay.
const MAX_REPLAY: i64 = 50_000;
/// Backstop poll of the change log, in case a wake-up was lost (e.g. a dropped LISTEN connection).
const POLL: Duration = Duration::from_secs(2);

pub(crate) struct Feed {
    sender: broadcast::Sender<Arc<Change>>,
    latest: watch::Receiver<i64>,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    pub(crate) async fn start(store: Arc<dyn Store>) -> Result<Feed> {
        let start = {
            let mut tx = store.begin(TxMode::Read).await?;
            changelog::revision(&mut *tx).await?
        };
        let (sender, _) = broadcast::channel(4096);
        let (latest_tx, latest) = watch::channel(start);
        let task = tokio::spawn(run_feed(store, sender.clone(), latest_tx, start));
        Ok(Feed {
            sender,
            latest,
            task,
        })
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }

    /// The revision of the last change this controller has broadcast.
    pub fn latest(&self) -> i64 {
        *self.latest.borrow()
    }
}

async fn run_feed(
    store: Arc<dyn Store>,
    sender: broadcast::Sender<Arc<Change>>,
    latest: watch::Sender<i64>,
    mut last: i64,
) {
    let signal = store.change_signal();
    loop {
        loop {
            let page = async {
                let mut tx = store.begin(TxMode::Read).await?;
                changelog::after(&mut *tx, last, PAGE).await
            }
            .await;
            match page {
                Ok(changes) => {
                    let full = changes.len() as i64 == PAGE;
                    for c in changes {
                        last = c.revision;
                        let _ = sender.send(Arc::new(c));
                    }
                    latest.send_replace(last);
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed cannot read the change log");
                    break;
                }
            }
        }
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn line(msg: &WatchMessage) -> Option<Bytes> {
    match serde_json::to_vec(msg) {
        Ok(mut v) => {
            v.push(b'\n');
            Some(Bytes::from(v))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode watch message");
            None
        }
    }
}

/// Sends the changes after `last` from the change log; returns the new last revision.
async fn replay(ctl: &Controller, out: &mpsc::Sender<Bytes>, mut last: i64) -> Result<Option<i64>> {
    loop {
        let changes = ctl.changes_after(last, PAGE).await?;
        let n = changes.len() as i64;
        for c in changes {
            last = c.revision;
            let Some(bytes) = line(&WatchMessage::Change(c)) else {
                continue;
            };
            if out.send(bytes).await.is_err() {
                return Ok(None);
            }
        }
        if n < PAGE {
            return Ok(Some(last));
        }
    }
}

/// Starts a watch for one client; the returned channel yields the JSON lines of the stream and
/// closes when the controller shuts down (or the client goes away).
pub(crate) fn start_watch(
    ctl: Arc<Controller>,
    since: Option<i64>,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Bytes> {
    let (out, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        ctl.metrics.watchers.fetch_add(1, Ordering::Relaxed);
        let result = serve_watch(&ctl, since, &out, &mut shutdown).await;
        ctl.metrics.watchers.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = result {
            tracing::warn!(error = %e, "watch stream ended with an error");
        }
    });
    rx
}

async fn serve_watch(
    ctl: &Controller,
    since: Option<i64>,
    out: &mpsc::Sender<Bytes>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    // Subscribe before reading the store: whatever the read misses arrives here.
    let mut changes = ctl.feed.subscribe();
    let (revision, floor) = ctl.log_bounds().await?;
    let resumable = since.filter(|s| *s >= floor && *s <= revision && revision - *s <= MAX_REPLAY);
    let mut last = match resumable {
        Some(since) => match replay(ctl, out, since).await? {
            Some(last) => last,
            None => return Ok(()),
        },
        None => {
            let snapshot = ctl.snapshot().await?;
            let rev = snapshot.revision;
            if let Some(bytes) = line(&WatchMessage::Snapshot(snapshot)) {
                if out.send(bytes).await.is_err() {
                    return Ok(());
                }
            }
            rev
        }
    };
    let heartbeat = ctl.config().heartbeat;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let msg = tokio::select! {
            r = changes.recv() => match r {
                Ok(c) if c.revision > last => {
                    last = c.revision;
                    WatchMessage::Change((*c).clone())
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match replay(ctl, out, last).await? {
                        Some(l) => { last = l; continue; }
                        None => return Ok(()),
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep(heartbeat) => WatchMessage::Heartbeat { revision: last },
            _ = shutdown.changed() => return Ok(()),
            _ = out.closed() => return Ok(()),
        };
        if let Some(bytes) = line(&msg) {
            if out.send(bytes).await.is_err() {
                return Ok(());
            }
        }
    }
}
