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
//!
//! Snapshots cost once, not once per watcher: the first watcher that needs one builds it (one
//! read transaction) and serializes its lines; every watcher that starts before the next
//! change shares both (an [`Arc`], lines as reference-counted [`Bytes`]). 1,000 agents
//! reconnecting together after a controller restart make one snapshot, not 1,000.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::changelog;
use crate::controller::Controller;
use crate::error::Result;
use crate::filter::{ByDestination, HostView, Verdict};
use crate::store::{Store, TxMode};
use weft_api::model::{Change, Event, Snapshot, SnapshotPart, WatchLine};

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

/// A stream cut for one host (see [`crate::filter`]).
pub(crate) struct Filtered {
    host: String,
    view: Option<HostView>,
    /// The revision the view was cut at. Replaying changes up to it (a resumed stream), one
    /// of this host's instances changing means the apps it ran may have changed since the
    /// revision it resumes from: it gets a fresh snapshot.
    cut_at: i64,
}

/// Sends one change (for a filtered stream: if the host needs it, after the tag of a policy
/// source it did not know, or as a fresh filtered snapshot); returns the new last revision,
/// `None` when the watcher has gone.
async fn deliver(
    ctl: &Controller,
    out: &mpsc::Sender<Bytes>,
    c: &Change,
    filter: Option<&mut Filtered>,
    in_parts: bool,
) -> Result<Option<i64>> {
    let Some(f) = filter else {
        return Ok(send(out, &WatchLine::Change(Cow::Borrowed(c)))
            .await
            .then_some(c.revision));
    };
    let own_instance = matches!(&c.event,
        Event::InstancePut { instance } | Event::InstanceDeleted { instance } if instance.host == f.host);
    let verdict = match f.view.as_mut() {
        Some(_) if own_instance && c.revision <= f.cut_at => Verdict::Resnapshot,
        Some(v) => v.on_change(c),
        None => Verdict::Resnapshot,
    };
    match verdict {
        Verdict::Skip => Ok(Some(c.revision)),
        Verdict::Send => Ok(send(out, &WatchLine::Change(Cow::Borrowed(c)))
            .await
            .then_some(c.revision)),
        Verdict::SendAfterApp(id) => {
            // The source's tag as it is now (gone since: its deletion follows on the stream).
            if let Ok(app) = ctl.app(&id).await {
                let tag = Change {
                    revision: c.revision,
                    event: Event::AppPut { app },
                };
                if !send(out, &WatchLine::Change(Cow::Owned(tag))).await {
                    return Ok(None);
                }
            }
            Ok(send(out, &WatchLine::Change(Cow::Borrowed(c)))
                .await
                .then_some(c.revision))
        }
        Verdict::Resnapshot => send_filtered(ctl, out, in_parts, c.revision, f).await,
    }
}

/// Sends the changes after `last` from the change log; returns the new last revision.
async fn replay(
    ctl: &Controller,
    out: &mpsc::Sender<Bytes>,
    mut last: i64,
    mut filter: Option<&mut Filtered>,
    in_parts: bool,
) -> Result<Option<i64>> {
    loop {
        let changes = ctl.changes_after(last, PAGE).await?;
        let n = changes.len() as i64;
        for c in &changes {
            // A fresh snapshot sent on the way covers what is before it.
            if c.revision <= last {
                continue;
            }
            match deliver(ctl, out, c, filter.as_deref_mut(), in_parts).await? {
                Some(l) => last = l.max(c.revision),
                None => return Ok(None),
            }
        }
        if n < PAGE {
            return Ok(Some(last));
        }
    }
}

/// Sends `f`'s host its snapshot at `at_least` or later, cut from the shared one, and takes
/// the view it was cut with.
async fn send_filtered(
    ctl: &Controller,
    out: &mpsc::Sender<Bytes>,
    in_parts: bool,
    at_least: i64,
    f: &mut Filtered,
) -> Result<Option<i64>> {
    let shared = ctl.snapshots.get(ctl, at_least).await?;
    let claims = shared.claims.get(&f.host).cloned().unwrap_or_default();
    let (view, snap) = HostView::new(&f.host, &shared.snap, shared.by_destination(), claims);
    f.view = Some(view);
    f.cut_at = snap.revision;
    for l in snapshot_lines(&snap, in_parts) {
        if out.send(l).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some(snap.revision))
}

/// How a snapshot of `n` leases, apps, policies and instances is cut into lines of at most
/// `per_line` items: the index ranges of each line, in order (one line, maybe empty, at least).
pub(crate) fn cut_snapshot(n: [usize; 4], per_line: usize) -> Vec<[std::ops::Range<usize>; 4]> {
    let per_line = per_line.max(1);
    let mut out = Vec::new();
    let mut next = [0usize; 4];
    loop {
        let mut room = per_line;
        let mut part = [0..0, 0..0, 0..0, 0..0];
        for k in 0..4 {
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

/// A snapshot and its lines, serialized once per shape (whole, in parts) on first use.
pub(crate) struct Shared {
    snap: Snapshot,
    /// Every host's claims at the snapshot's revision.
    claims: HashMap<String, BTreeSet<String>>,
    by_destination: OnceLock<ByDestination>,
    whole: OnceLock<Arc<[Bytes]>>,
    parts: OnceLock<Arc<[Bytes]>>,
}

impl Shared {
    pub(crate) fn new(snap: Snapshot, claims: HashMap<String, BTreeSet<String>>) -> Shared {
        Shared {
            snap,
            claims,
            by_destination: OnceLock::new(),
            whole: OnceLock::new(),
            parts: OnceLock::new(),
        }
    }

    /// The snapshot's policies by destination app, indexed on first use.
    fn by_destination(&self) -> &ByDestination {
        self.by_destination
            .get_or_init(|| crate::filter::by_destination(&self.snap))
    }

    pub(crate) fn revision(&self) -> i64 {
        self.snap.revision
    }

    /// The lines of the snapshot: one, or (`in_parts`) lines of at most [`PART_ITEMS`] items.
    pub(crate) fn lines(&self, in_parts: bool) -> Arc<[Bytes]> {
        let cell = if in_parts { &self.parts } else { &self.whole };
        cell.get_or_init(|| snapshot_lines(&self.snap, in_parts).into())
            .clone()
    }
}

/// The lines of `snap`: one, or (`in_parts`) lines of at most [`PART_ITEMS`] items.
pub(crate) fn snapshot_lines(snap: &Snapshot, in_parts: bool) -> Vec<Bytes> {
    let n = [
        snap.leases.len(),
        snap.apps.len(),
        snap.policies.len(),
        snap.instances.len(),
    ];
    let cuts = if in_parts {
        cut_snapshot(n, PART_ITEMS)
    } else {
        vec![[0..n[0], 0..n[1], 0..n[2], 0..n[3]]]
    };
    let count = cuts.len();
    let mut out = Vec::with_capacity(count);
    for (i, [l, a, p, x]) in cuts.into_iter().enumerate() {
        let part = SnapshotPart {
            revision: snap.revision,
            leases: Cow::Borrowed(&snap.leases[l]),
            apps: Cow::Borrowed(&snap.apps[a]),
            policies: Cow::Borrowed(&snap.policies[p]),
            instances: Cow::Borrowed(&snap.instances[x]),
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
        out.extend(line(&msg));
    }
    out
}

/// The latest snapshot built for watchers. One is built at a time (the others wait for it and
/// take it): a watcher takes the cached one when it is at least as new as the revision the
/// watcher saw after subscribing to the feed, so that nothing between the two is lost.
#[derive(Default)]
pub(crate) struct SnapshotCache {
    latest: tokio::sync::Mutex<Option<Arc<Shared>>>,
}

impl SnapshotCache {
    /// A snapshot at `at_least` or later: the cached one, or a new one.
    pub(crate) async fn get(&self, ctl: &Controller, at_least: i64) -> Result<Arc<Shared>> {
        let mut latest = self.latest.lock().await;
        if let Some(s) = latest.as_ref().filter(|s| s.revision() >= at_least) {
            return Ok(s.clone());
        }
        let (snap, claims) = ctl.snapshot_with_claims().await?;
        let built = Arc::new(Shared::new(snap, claims));
        *latest = Some(built.clone());
        Ok(built)
    }
}

/// Sends a snapshot at `at_least` or later (shared, see [`SnapshotCache`]): one line, or
/// (`in_parts`) lines of at most [`PART_ITEMS`] items.
async fn send_snapshot(
    ctl: &Controller,
    out: &mpsc::Sender<Bytes>,
    in_parts: bool,
    at_least: i64,
) -> Result<Option<i64>> {
    let shared = ctl.snapshots.get(ctl, at_least).await?;
    let lines = shared.lines(in_parts);
    for l in lines.iter() {
        if out.send(l.clone()).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some(shared.revision()))
}

/// Starts a watch for one client; the returned channel yields the JSON lines of the stream and
/// closes when the controller shuts down (or the client goes away).
/// `host`: the stream is cut for that host (see [`crate::filter`]); none: everything.
pub(crate) fn start_watch(
    ctl: Arc<Controller>,
    since: Option<i64>,
    snapshot_in_parts: bool,
    host: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Bytes> {
    let (out, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        ctl.metrics.watchers.fetch_add(1, Ordering::Relaxed);
        let mut filter = host.map(|host| Filtered {
            host,
            view: None,
            cut_at: 0,
        });
        let result = serve_watch(
            &ctl,
            since,
            snapshot_in_parts,
            filter.as_mut(),
            &out,
            &mut shutdown,
        )
        .await;
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
    mut filter: Option<&mut Filtered>,
    out: &mpsc::Sender<Bytes>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    // Subscribe before reading the store: whatever the read misses arrives here.
    let mut changes = ctl.feed.subscribe();
    let (revision, floor) = ctl.log_bounds().await?;
    let resumable = since.filter(|s| *s >= floor && *s <= revision && revision - *s <= MAX_REPLAY);
    let started = match (resumable, filter.as_deref_mut()) {
        // What a host needed at the revision it resumes from is not known: a fresh cut.
        (Some(since), Some(f)) => {
            // Resumed: the changes since, as this host's view now (at a shared snapshot)
            // lets through; a fresh cut if its own instances changed meanwhile.
            let shared = ctl.snapshots.get(ctl, revision).await?;
            let claims = shared.claims.get(&f.host).cloned().unwrap_or_default();
            let (view, _) = HostView::new(&f.host, &shared.snap, shared.by_destination(), claims);
            f.view = Some(view);
            f.cut_at = shared.revision();
            replay(ctl, out, since, Some(f), snapshot_in_parts).await?
        }
        (None, Some(f)) => send_filtered(ctl, out, snapshot_in_parts, revision, f).await?,
        (Some(since), None) => replay(ctl, out, since, None, snapshot_in_parts).await?,
        (None, None) => send_snapshot(ctl, out, snapshot_in_parts, revision).await?,
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
                    match deliver(ctl, out, &c, filter.as_deref_mut(), snapshot_in_parts).await? {
                        Some(l) => {
                            last = l.max(c.revision);
                            true
                        }
                        None => false,
                    }
                }
                Ok(_) => true,
                Err(broadcast::error::RecvError::Lagged(_)) => match replay(ctl, out, last, filter.as_deref_mut(), snapshot_in_parts).await? {
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
    use crate::controller::ControllerConfig;
    use crate::leases::Pool;

    /// Watchers starting at the same revision share one snapshot (and its lines); a change
    /// makes the next watcher build a new one, which includes it.
    #[tokio::test]
    async fn snapshots_are_built_once_per_revision_and_shared() {
        let store = Arc::new(crate::store::sqlite::SqliteStore::open_in_memory().unwrap());
        let pool = Pool::new("10.255.0.0/16".parse().unwrap(), 24).unwrap();
        let ctl = Controller::start(store, ControllerConfig::new(pool))
            .await
            .unwrap();
        ctl.acquire_lease("h1", "192.0.2.1", None).await.unwrap();
        let (rev, _) = ctl.log_bounds().await.unwrap();
        let a = ctl.snapshots.get(&ctl, rev).await.unwrap();
        let b = ctl.snapshots.get(&ctl, rev).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one snapshot for both");
        assert!(
            Arc::ptr_eq(&a.lines(true), &b.lines(true)),
            "lines serialized once"
        );
        assert_eq!(a.revision(), rev);
        ctl.acquire_lease("h2", "192.0.2.2", None).await.unwrap();
        let (rev2, _) = ctl.log_bounds().await.unwrap();
        let c = ctl.snapshots.get(&ctl, rev2).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.revision(), rev2);
        assert_eq!(c.snap.leases.len(), 2);
        // An older watcher's bound is met by the newer snapshot.
        assert!(Arc::ptr_eq(
            &ctl.snapshots.get(&ctl, rev).await.unwrap(),
            &c
        ));
        // The shared lines are exactly what a snapshot of the store serializes to.
        let fresh = ctl.snapshot().await.unwrap();
        assert_eq!(&*c.lines(false), &snapshot_lines(&fresh, false)[..]);
    }

    #[test]
    fn snapshots_are_cut_into_lines_of_bounded_items_in_order() {
        let cuts = cut_snapshot([3, 2, 6, 2], 4);
        assert_eq!(
            cuts,
            vec![
                [0..3, 0..1, 0..0, 0..0],
                [3..3, 1..2, 0..3, 0..0],
                [3..3, 2..2, 3..6, 0..1],
                [3..3, 2..2, 6..6, 1..2]
            ]
        );
        // Every item once, in order.
        for (k, n) in [3, 2, 6, 2].into_iter().enumerate() {
            let covered: Vec<usize> = cuts.iter().flat_map(|c| c[k].clone()).collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(
            cut_snapshot([0, 0, 0, 0], 1000),
            vec![[0..0, 0..0, 0..0, 0..0]]
        );
        assert_eq!(cut_snapshot([1000, 0, 0, 0], 1000).len(), 1);
        assert_eq!(cut_snapshot([1000, 1, 0, 0], 1000).len(), 2);
        assert_eq!(cut_snapshot([0, 0, 0, 1001], 1000).len(), 2);
    }
}
