//! Watch: a snapshot and then every change, as JSON lines on one long response.
//!
//! One [`Feed`] task per controller reads the change log in revision order whenever the store
//! signals a commit (locally, or from another controller through PostgreSQL `NOTIFY`) and
//! broadcasts each change to the controller's watchers. A watcher that falls behind, or that
//! reconnects with `since=REV`, catches up from the change log itself, so nothing is missed.
//!
//! A stream is: a snapshot (or, with `since`, the changes after it), then a heartbeat that
//! announces the interval (`interval_ms`), then every change, with a heartbeat after each
//! interval without one. So a watcher always knows how long silence may last: the client
//! ends a stream that stays silent for [`weft_api::client::WatchOptions::missed_heartbeats`]
//! intervals. With `snapshot=parts` the snapshot comes as lines of at most [`PART_ITEMS`]
//! items (see [`weft_api::model::SnapshotPart`]) so that no line has to be huge; without it, one
//! line, as older clients expect.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::changelog;
use crate::controller::Controller;
use crate::error::Result;
use crate::store::{Store, TxMode};
use weft_api::model::{Change, SnapshotPart, WatchLine};

/// Changes read from the log per query.
const PAGE: i64 = 1000;
/// A watcher further behind than this gets a snapshot instead of a replay.
const MAX_REPLAY: i64 = 50_000;
/// Most leases, apps and policies in all on one line of a snapshot sent in parts.
pub const PART_ITEMS: usize = 1000;
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

fn line(msg: &WatchLine<'_>) -> Option<Bytes> {
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

/// Sends one line; false when the watcher has gone.
async fn send(out: &mpsc::Sender<Bytes>, msg: &WatchLine<'_>) -> bool {
    match line(msg) {
        Some(bytes) => out.send(bytes).await.is_ok(),
        None => true,
    }
}

/// Sends the changes after `last` from the change log; returns the new last revision.
async fn replay(ctl: &Controller, out: &mpsc::Sender<Bytes>, mut last: i64) -> Result<Option<i64>> {
    loop {
        let changes = ctl.changes_after(last, PAGE).await?;
        let n = changes.len() as i64;
        for c in &changes {
            last = c.revision;
            if !send(out, &WatchLine::Change(Cow::Borrowed(c))).await {
                return Ok(None);
            }
        }
        if n < PAGE {
            return Ok(Some(last));
        }
    }
}

/// How a snapshot of `n` leases, apps and policies is cut into lines of at most `per_line`
/// items: the index ranges of each line, in order (one line, maybe empty, at least).
pub(crate) fn cut_snapshot(n: [usize; 3], per_line: usize) -> Vec<[std::ops::Range<usize>; 3]> {
    let per_line = per_line.max(1);
    let mut out = Vec::new();
    let mut next = [0usize; 3];
    loop {
        let mut room = per_line;
        let mut part = [0..0, 0..0, 0..0];
        for k in 0..3 {
            let take = (n[k] - next[k]).min(room);
            part[k] = next[k]..next[k] + take;
            next[k] += take;
            room -= take;
        }
        out.push(part);
        if next == n {
            return out;
        }
    }
}

/// Sends a snapshot: one line, or (`in_parts`) lines of at most [`PART_ITEMS`] items.
async fn send_snapshot(
    ctl: &Controller,
    out: &mpsc::Sender<Bytes>,
    in_parts: bool,
) -> Result<Option<i64>> {
    let snap = ctl.snapshot().await?;
    let n = [snap.leases.len(), snap.apps.len(), snap.policies.len()];
    let cuts = if in_parts {
        cut_snapshot(n, PART_ITEMS)
    } else {
        vec![[0..n[0], 0..n[1], 0..n[2]]]
    };
    let count = cuts.len();
    for (i, [l, a, p]) in cuts.into_iter().enumerate() {
        let part = SnapshotPart {
            revision: snap.revision,
            leases: Cow::Borrowed(&snap.leases[l]),
            apps: Cow::Borrowed(&snap.apps[a]),
            policies: Cow::Borrowed(&snap.policies[p]),
            egress: if i == 0 {
                Cow::Borrowed(&snap.egress)
            } else {
                Cow::Owned(Default::default())
            },
            more: i + 1 < count,
        };
        let msg = if i == 0 {
            WatchLine::Snapshot(part)
        } else {
            WatchLine::SnapshotPart(part)
        };
        if !send(out, &msg).await {
            return Ok(None);
        }
    }
    Ok(Some(snap.revision))
}

/// Starts a watch for one client; the returned channel yields the JSON lines of the stream and
/// closes when the controller shuts down (or the client goes away).
pub(crate) fn start_watch(
    ctl: Arc<Controller>,
    since: Option<i64>,
    snapshot_in_parts: bool,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Bytes> {
    let (out, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        ctl.metrics.watchers.fetch_add(1, Ordering::Relaxed);
        let result = serve_watch(&ctl, since, snapshot_in_parts, &out, &mut shutdown).await;
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
    snapshot_in_parts: bool,
    out: &mpsc::Sender<Bytes>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    // Subscribe before reading the store: whatever the read misses arrives here.
    let mut changes = ctl.feed.subscribe();
    let (revision, floor) = ctl.log_bounds().await?;
    let resumable = since.filter(|s| *s >= floor && *s <= revision && revision - *s <= MAX_REPLAY);
    let started = match resumable {
        Some(since) => replay(ctl, out, since).await?,
        None => send_snapshot(ctl, out, snapshot_in_parts).await?,
    };
    let Some(mut last) = started else {
        return Ok(());
    };
    let heartbeat = ctl.config().heartbeat;
    let interval_ms = Some(u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX));
    // Caught up: a heartbeat at once tells the watcher the interval to expect (and, after a
    // replay of nothing, that the stream is live).
    let beat = |revision| WatchLine::Heartbeat {
        revision,
        interval_ms,
    };
    if !send(out, &beat(last)).await {
        return Ok(());
    }
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let sent = tokio::select! {
            r = changes.recv() => match r {
                Ok(c) if c.revision > last => {
                    last = c.revision;
                    send(out, &WatchLine::Change(Cow::Borrowed(&*c))).await
                }
                Ok(_) => true,
                Err(broadcast::error::RecvError::Lagged(_)) => match replay(ctl, out, last).await? {
                    Some(l) => {
                        last = l;
                        true
                    }
                    None => false,
                },
                Err(broadcast::error::RecvError::Closed) => false,
            },
            _ = tokio::time::sleep(heartbeat) => send(out, &beat(last)).await,
            _ = shutdown.changed() => false,
            _ = out.closed() => false,
        };
        if !sent {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_cut_into_lines_of_bounded_items_in_order() {
        let cuts = cut_snapshot([3, 2, 6], 4);
        assert_eq!(
            cuts,
            vec![[0..3, 0..1, 0..0], [3..3, 1..2, 0..3], [3..3, 2..2, 3..6]]
        );
        // Every item once, in order.
        for (k, n) in [3, 2, 6].into_iter().enumerate() {
            let covered: Vec<usize> = cuts.iter().flat_map(|c| c[k].clone()).collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(cut_snapshot([0, 0, 0], 1000), vec![[0..0, 0..0, 0..0]]);
        assert_eq!(cut_snapshot([1000, 0, 0], 1000).len(), 1);
        assert_eq!(cut_snapshot([1000, 1, 0], 1000).len(), 2);
    }
}
