//! The watchers' side of the benchmark: a small NDJSON line reader per stream, the watcher
//! tasks, and the propagation latencies they record.

use super::*;

// ---------------------------------------------------------------------------------------------
// Watchers

pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// NDJSON lines of one watch response; scans each byte once (no rescanning of a long line).
pub(crate) struct Lines {
    body: ByteStream,
    buf: Vec<u8>,
    scanned: usize,
}

impl Lines {
    pub(crate) async fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(p) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let end = self.scanned + p;
                let rest = self.buf.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.truncate(end);
                self.scanned = 0;
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(format!("watch stream: {e}")),
                None => return Ok(None),
            }
        }
    }
}

/// What one line of the stream is.
pub(crate) enum Line {
    Snapshot(i64),
    Change(i64),
    Heartbeat,
}

pub(crate) fn classify(line: &[u8]) -> Result<Line, String> {
    const SNAP: &[u8] = b"{\"kind\":\"snapshot\",\"revision\":";
    if line.starts_with(SNAP) {
        let digits: Vec<u8> = line[SNAP.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        return std::str::from_utf8(&digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Line::Snapshot)
            .ok_or_else(|| "snapshot without a revision".to_string());
    }
    match serde_json::from_slice::<WatchMessage>(line) {
        Ok(WatchMessage::Change(c)) => Ok(Line::Change(c.revision)),
        Ok(WatchMessage::Heartbeat { .. }) => Ok(Line::Heartbeat),
        Ok(WatchMessage::Snapshot(s)) => Ok(Line::Snapshot(s.revision)),
        Err(e) => Err(format!("undecodable watch line: {e}")),
    }
}

/// State the watchers share with the driver.
pub(crate) struct Shared {
    /// Last revision each watcher has received.
    pub(crate) last: Vec<AtomicI64>,
    /// (revision, arrival) of every change line, per watcher.
    pub(crate) arrivals: Vec<Mutex<Vec<(i64, Instant)>>>,
    /// Watchers whose initial snapshot has arrived.
    pub(crate) ready: AtomicUsize,
    /// Snapshot bytes of the first watcher's snapshot (for the table).
    pub(crate) snapshot_bytes: AtomicUsize,
    /// Watchers that have dropped their stream (phase 1 of the mass reconnect).
    pub(crate) dropped: AtomicUsize,
    /// Watchers whose reconnect was answered (phase 2).
    pub(crate) resumed: AtomicUsize,
    /// Errors: failed connects, error statuses, broken streams, undecodable lines.
    pub(crate) errors: AtomicUsize,
    /// Reconnects answered with a snapshot instead of a replay.
    pub(crate) resume_snapshots: AtomicUsize,
    /// Initial connects that had to be retried.
    pub(crate) connect_retries: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(n: usize) -> Shared {
        Shared {
            last: (0..n).map(|_| AtomicI64::new(-1)).collect(),
            arrivals: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            ready: AtomicUsize::new(0),
            snapshot_bytes: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
            resume_snapshots: AtomicUsize::new(0),
            connect_retries: AtomicUsize::new(0),
        }
    }

    pub(crate) fn error(&self, what: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("bench: watcher error: {what}");
        }
    }

    pub(crate) fn all_at(&self, revision: i64) -> bool {
        self.last
            .iter()
            .all(|l| l.load(Ordering::Acquire) >= revision)
    }

    pub(crate) fn count_at(&self, revision: i64) -> usize {
        self.last
            .iter()
            .filter(|l| l.load(Ordering::Acquire) >= revision)
            .count()
    }
}

/// Phases a watcher goes through, driven by the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Watch,
    Drop,
    Reconnect,
    Stop,
}

pub(crate) async fn open(
    http: &reqwest::Client,
    url: &str,
    since: Option<i64>,
) -> Result<Lines, String> {
    let mut r = http.get(format!("{url}/v1/watch"));
    if let Some(s) = since {
        r = r.query(&[("since", s)]);
    }
    let resp = r.send().await.map_err(|e| format!("connect: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    Ok(Lines {
        body: Box::pin(resp.bytes_stream()),
        buf: Vec::new(),
        scanned: 0,
    })
}

/// Reads lines until the phase changes; records change arrivals. Returns the new phase.
pub(crate) async fn read_until_phase_change(
    i: usize,
    lines: &mut Lines,
    shared: &Shared,
    phase: &mut tokio::sync::watch::Receiver<Phase>,
    resuming: bool,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Phase {
    let mut first = true;
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = phase.changed() => return *phase.borrow(),
        };
        let now = Instant::now();
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => {
                permit.take();
                shared.error("stream ended by the controller");
                return wait_phase_change(phase).await;
            }
            Err(e) => {
                permit.take();
                shared.error(&e);
                return wait_phase_change(phase).await;
            }
        };
        match classify(&line) {
            Ok(Line::Snapshot(rev)) => {
                if resuming {
                    shared.resume_snapshots.fetch_add(1, Ordering::Relaxed);
                }
                if first && !resuming {
                    let _ = shared.snapshot_bytes.compare_exchange(
                        0,
                        line.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                shared.last[i].store(rev, Ordering::Release);
            }
            Ok(Line::Change(rev)) => {
                shared.arrivals[i]
                    .lock()
                    .expect("arrivals")
                    .push((rev, now));
                shared.last[i].store(rev, Ordering::Release);
            }
            Ok(Line::Heartbeat) => {}
            Err(e) => shared.error(&e),
        }
        if first && !resuming {
            shared.ready.fetch_add(1, Ordering::Relaxed);
        }
        permit.take();
        first = false;
    }
}

pub(crate) async fn wait_phase_change(phase: &mut tokio::sync::watch::Receiver<Phase>) -> Phase {
    match phase.changed().await {
        Ok(()) => *phase.borrow(),
        Err(_) => Phase::Stop,
    }
}

/// One watcher: connect (initial snapshot), watch, drop on command, reconnect with `since` on
/// command, watch, stop.
pub(crate) async fn watcher(
    i: usize,
    http: reqwest::Client,
    url: String,
    shared: Arc<Shared>,
    connect_slots: Arc<tokio::sync::Semaphore>,
    mut phase: tokio::sync::watch::Receiver<Phase>,
) {
    // Initial connect, a bounded number at a time (each is a full snapshot); the permit is
    // released when the snapshot has arrived.
    let permit = connect_slots.acquire_owned().await.expect("semaphore");
    let mut attempt = 0;
    let mut lines = loop {
        match open(&http, &url, None).await {
            Ok(l) => break l,
            Err(e) => {
                attempt += 1;
                shared.connect_retries.fetch_add(1, Ordering::Relaxed);
                if attempt >= 5 {
                    shared.error(&format!("initial connect: {e}"));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut p =
        read_until_phase_change(i, &mut lines, &shared, &mut phase, false, Some(permit)).await;
    loop {
        match p {
            Phase::Watch => p = wait_phase_change(&mut phase).await,
            Phase::Stop => return,
            Phase::Drop => {
                drop(std::mem::replace(
                    &mut lines,
                    Lines {
                        body: Box::pin(futures_util::stream::empty()),
                        buf: Vec::new(),
                        scanned: 0,
                    },
                ));
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                p = wait_phase_change(&mut phase).await;
            }
            Phase::Reconnect => {
                let since = shared.last[i].load(Ordering::Acquire);
                match open(&http, &url, Some(since)).await {
                    Ok(l) => {
                        lines = l;
                        shared.resumed.fetch_add(1, Ordering::Relaxed);
                        p = read_until_phase_change(i, &mut lines, &shared, &mut phase, true, None)
                            .await;
                    }
                    Err(e) => {
                        shared.error(&format!("reconnect: {e}"));
                        p = wait_phase_change(&mut phase).await;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Propagation

#[derive(Default)]
pub(crate) struct Latencies {
    /// One sample per (write, watcher) that arrived.
    pub(crate) samples: Vec<Duration>,
    /// (write, watcher) pairs that never arrived within the limit.
    pub(crate) missing: usize,
    /// Samples where the change reached the watcher before the create call returned (counted as 0).
    pub(crate) early: usize,
}

impl Latencies {
    pub(crate) fn pct(&self, p: f64) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let mut s = self.samples.clone();
        s.sort();
        let idx = ((p / 100.0) * (s.len() as f64 - 1.0)).round() as usize;
        Some(s[idx.min(s.len() - 1)])
    }
}

/// After a write returned revision `rev` at `t0`: every watcher's first arrival at or past `rev`.
pub(crate) fn collect(shared: &Shared, rev: i64, t0: Instant, out: &mut Latencies) {
    for a in &shared.arrivals {
        let a = a.lock().expect("arrivals");
        match a.iter().find(|(r, _)| *r >= rev) {
            Some((_, at)) => {
                if *at < t0 {
                    out.early += 1;
                }
                out.samples.push(at.saturating_duration_since(t0));
            }
            None => out.missing += 1,
        }
    }
}

pub(crate) async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// One policy between two existing apps (no new apps: exactly one change per write).
pub(crate) fn probe_policy(k: usize, prefix: &str) -> Policy {
    Policy::new(
        &format!("{prefix}-{:06}", 0),
        &format!("{prefix}-{:06}", 1),
        Protocol::Udp,
        Some(Ports {
            start: 10_000 + k as u16,
            end: 10_000 + k as u16,
        }),
    )
}
