//! Controller benchmark: lease acquisitions, policy writes, watch propagation to many watchers and
//! a mass reconnect, on SQLite and (when `WEFT_TEST_POSTGRES_URL` is set) PostgreSQL.
//!
//! ```sh
//! eval "$(crates/weft-controller/ci/postgres.sh)"     # optional: the PostgreSQL column
//! cargo bench -p weft-controller --bench controller
//! crates/weft-controller/ci/postgres-stop.sh "$WEFT_TEST_POSTGRES_DIR"
//! ```
//!
//! Everything runs in this process on 127.0.0.1 (plain HTTP): the controller on one tokio
//! runtime, the clients on another, so that a blocking store call on the server does not stall
//! the clients' tasks (both still share the machine's cores). Sizes can be scaled down with
//! environment variables (defaults in brackets): `WEFT_BENCH_HOSTS` [1000],
//! `WEFT_BENCH_LEASE_CONCURRENCY` [32], `WEFT_BENCH_RATE_POLICIES` [10000], `WEFT_BENCH_BATCH`
//! [500], `WEFT_BENCH_POLICIES` [60000] (apps = policies / 2), `WEFT_BENCH_WATCHERS` [1000],
//! `WEFT_BENCH_WRITES` [20], `WEFT_BENCH_CONNECT_CONCURRENCY` [16].
//!
//! The watchers read the NDJSON stream with a small line reader of their own (the first line,
//! the multi-megabyte snapshot, is only scanned for its revision; change lines are decoded into
//! `WatchMessage`), so that the client side does not spend the shared CPU on decoding 1000
//! snapshots. Every other call uses weft-api's typed `Client`.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use weft_api::model::{Policy, Ports, Protocol, WatchMessage};
use weft_api::Client;
use weft_controller::server::RunningServer;
use weft_controller::ControllerArgs;

/// Bound on every wait of the benchmark (a liveness bound, so that it always stops by itself).
const WAIT_LIMIT: Duration = Duration::from_secs(120);
/// How long a writer waits for every watcher to see one change before counting it missing.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(15);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Sizes {
    hosts: usize,
    lease_concurrency: usize,
    rate_policies: usize,
    batch: usize,
    policies: usize,
    watchers: usize,
    writes: usize,
    connect_concurrency: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        Sizes {
            hosts: env_usize("WEFT_BENCH_HOSTS", 1000),
            lease_concurrency: env_usize("WEFT_BENCH_LEASE_CONCURRENCY", 32).max(1),
            rate_policies: env_usize("WEFT_BENCH_RATE_POLICIES", 10_000),
            batch: env_usize("WEFT_BENCH_BATCH", 500).max(1),
            policies: env_usize("WEFT_BENCH_POLICIES", 60_000).max(4),
            watchers: env_usize("WEFT_BENCH_WATCHERS", 1000).max(1),
            writes: env_usize("WEFT_BENCH_WRITES", 20).max(1),
            connect_concurrency: env_usize("WEFT_BENCH_CONNECT_CONCURRENCY", 16).max(1),
        }
    }
}

/// Raises the soft open-file limit to the hard limit: 1000 watch streams are 2000 sockets here.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
        // rlim_t is u64 on Linux but not everywhere.
        #[allow(clippy::unnecessary_cast)]
        let cur = lim.rlim_cur as u64;
        cur
    }
}

/// Policy `k` of a data set with `apps` apps: every app is a source, ids spread evenly, no duplicates.
fn policy(k: usize, apps: usize, prefix: &str) -> Policy {
    let src = k % apps;
    let dst = (src + 1 + k / apps) % apps;
    Policy::new(
        &format!("{prefix}-{src:06}"),
        &format!("{prefix}-{dst:06}"),
        Protocol::Tcp,
        Some(Ports {
            start: 8080,
            end: 8080,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Backends

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// A fresh store: a SQLite file in a temp dir, or a new schema in the PostgreSQL database.
struct BenchStore {
    url: String,
    dir: tempfile::TempDir,
    pg_schema: Option<(String, String)>,
}

async fn pg_exec(base: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

impl BenchStore {
    async fn new(backend: Backend, pg_base: Option<&str>, name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        match backend {
            Backend::Sqlite => Ok(BenchStore {
                url: format!("sqlite:{}", dir.path().join("controller.db").display()),
                dir,
                pg_schema: None,
            }),
            Backend::Postgres => {
                let base = pg_base.ok_or_else(|| anyhow::anyhow!("no PostgreSQL URL"))?;
                let schema = format!("bench_{}_{name}", std::process::id());
                pg_exec(base, &format!("CREATE SCHEMA {schema}")).await?;
                let sep = if base.contains('?') { '&' } else { '?' };
                Ok(BenchStore {
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    dir,
                    pg_schema: Some((base.to_string(), schema)),
                })
            }
        }
    }

    fn args(&self) -> ControllerArgs {
        let mut args = ControllerArgs::from_args(["--insecure-http"]).expect("defaults");
        args.token = None;
        args.listen = "127.0.0.1:0".parse().expect("addr");
        args.store = self.url.clone();
        args.state_dir = self.dir.path().join("state");
        // 65,536 host subnets: room for far more than 1000 hosts.
        args.overlay_cidr = "10.0.0.0/8".parse().expect("cidr");
        args.host_prefix = 24;
        args.lease_ttl = 3600;
        args
    }

    async fn drop_schema(&self) {
        if let Some((base, schema)) = &self.pg_schema {
            if let Err(e) = pg_exec(base, &format!("DROP SCHEMA {schema} CASCADE")).await {
                eprintln!("bench: cannot drop schema {schema}: {e}");
            }
        }
    }
}

/// The two runtimes: the controller's and the clients'.
struct Runtimes {
    server: tokio::runtime::Runtime,
    client: tokio::runtime::Runtime,
}

fn start_server(rt: &Runtimes, store: &BenchStore) -> anyhow::Result<(RunningServer, Client)> {
    let args = store.args();
    let server = rt.server.block_on(async move { args.start().await })?;
    let client = Client::builder(server.url()).build()?;
    Ok((server, client))
}

// ---------------------------------------------------------------------------------------------
// Leases and policy writes

struct LeaseResult {
    per_sec: f64,
    errors: usize,
    elapsed: Duration,
}

async fn acquire_leases(client: &Client, hosts: usize, concurrency: usize) -> LeaseResult {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(hosts.max(1)) {
        let (client, next, errors) = (client.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= hosts {
                    break;
                }
                let host = format!("cell-{i:05}");
                let ip = format!("100.64.{}.{}", i / 250, i % 250 + 1);
                match tokio::time::timeout(WAIT_LIMIT, client.acquire_lease(&host, &ip)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("bench: lease for {host}: {e}");
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    LeaseResult {
        per_sec: hosts as f64 / elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
    }
}

struct PolicyResult {
    created: usize,
    errors: usize,
    elapsed: Duration,
}

impl PolicyResult {
    fn per_sec(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64()
    }
}

/// Creates `count` policies over `count / 2` apps in sequential batches of `batch`.
async fn create_policies(
    client: &Client,
    count: usize,
    batch: usize,
    prefix: &str,
) -> PolicyResult {
    let apps = (count / 2).max(2);
    let all: Vec<Policy> = (0..count).map(|k| policy(k, apps, prefix)).collect();
    let mut created = 0;
    let mut errors = 0;
    let start = Instant::now();
    for chunk in all.chunks(batch) {
        match tokio::time::timeout(WAIT_LIMIT, client.create_policies(chunk)).await {
            Ok(Ok(r)) => created += r.changed,
            Ok(Err(e)) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("bench: policy batch: {e}");
                }
            }
            Err(_) => errors += 1,
        }
    }
    PolicyResult {
        created,
        errors,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------------
// Watchers

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// NDJSON lines of one watch response; scans each byte once (no rescanning of a long line).
struct Lines {
    body: ByteStream,
    buf: Vec<u8>,
    scanned: usize,
}

impl Lines {
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
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
enum Line {
    Snapshot(i64),
    Change(i64),
    Heartbeat,
}

fn classify(line: &[u8]) -> Result<Line, String> {
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
struct Shared {
    /// Last revision each watcher has received.
    last: Vec<AtomicI64>,
    /// (revision, arrival) of every change line, per watcher.
    arrivals: Vec<Mutex<Vec<(i64, Instant)>>>,
    /// Watchers whose initial snapshot has arrived.
    ready: AtomicUsize,
    /// Snapshot bytes of the first watcher's snapshot (for the table).
    snapshot_bytes: AtomicUsize,
    /// Watchers that have dropped their stream (phase 1 of the mass reconnect).
    dropped: AtomicUsize,
    /// Watchers whose reconnect was answered (phase 2).
    resumed: AtomicUsize,
    /// Errors: failed connects, error statuses, broken streams, undecodable lines.
    errors: AtomicUsize,
    /// Reconnects answered with a snapshot instead of a replay.
    resume_snapshots: AtomicUsize,
    /// Initial connects that had to be retried.
    connect_retries: AtomicUsize,
}

impl Shared {
    fn new(n: usize) -> Shared {
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

    fn error(&self, what: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("bench: watcher error: {what}");
        }
    }

    fn all_at(&self, revision: i64) -> bool {
        self.last
            .iter()
            .all(|l| l.load(Ordering::Acquire) >= revision)
    }

    fn count_at(&self, revision: i64) -> usize {
        self.last
            .iter()
            .filter(|l| l.load(Ordering::Acquire) >= revision)
            .count()
    }
}

/// Phases a watcher goes through, driven by the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Watch,
    Drop,
    Reconnect,
    Stop,
}

async fn open(http: &reqwest::Client, url: &str, since: Option<i64>) -> Result<Lines, String> {
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
async fn read_until_phase_change(
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

async fn wait_phase_change(phase: &mut tokio::sync::watch::Receiver<Phase>) -> Phase {
    match phase.changed().await {
        Ok(()) => *phase.borrow(),
        Err(_) => Phase::Stop,
    }
}

/// One watcher: connect (initial snapshot), watch, drop on command, reconnect with `since` on
/// command, watch, stop.
async fn watcher(
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
struct Latencies {
    /// One sample per (write, watcher) that arrived.
    samples: Vec<Duration>,
    /// (write, watcher) pairs that never arrived within the limit.
    missing: usize,
    /// Samples where the change reached the watcher before the create call returned (counted as 0).
    early: usize,
}

impl Latencies {
    fn pct(&self, p: f64) -> Option<Duration> {
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
fn collect(shared: &Shared, rev: i64, t0: Instant, out: &mut Latencies) {
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

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
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
fn probe_policy(k: usize, prefix: &str) -> Policy {
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

// ---------------------------------------------------------------------------------------------
// One backend

#[derive(Default)]
struct Report {
    lease_per_sec: Option<f64>,
    lease_errors: usize,
    lease_elapsed: Option<Duration>,
    rate_per_sec: Option<f64>,
    rate_errors: usize,
    store_elapsed: Option<Duration>,
    store_created: usize,
    store_errors: usize,
    snapshot_bytes: usize,
    connect_elapsed: Option<Duration>,
    watchers_ready: usize,
    prop: Latencies,
    reconnect_errors: usize,
    reconnect_answered: Option<Duration>,
    reconnect_caught_up: Option<Duration>,
    reconnect_missing: usize,
    resume_snapshots: usize,
    after: Latencies,
    watch_errors: usize,
    connect_retries: usize,
}

fn run_backend(
    rt: &Runtimes,
    backend: Backend,
    pg: Option<&str>,
    sizes: &Sizes,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let name = backend.name();

    // 1. Leases and the policy write rate, on a fresh store.
    let store_a = rt.client.block_on(BenchStore::new(backend, pg, "rate"))?;
    let (server_a, client_a) = start_server(rt, &store_a)?;
    eprintln!(
        "bench[{name}]: {} lease acquisitions, {} at a time",
        sizes.hosts, sizes.lease_concurrency
    );
    let leases = rt.client.block_on(acquire_leases(
        &client_a,
        sizes.hosts,
        sizes.lease_concurrency,
    ));
    report.lease_per_sec = Some(leases.per_sec);
    report.lease_errors = leases.errors;
    report.lease_elapsed = Some(leases.elapsed);
    eprintln!(
        "bench[{name}]: {} policies in batches of {}",
        sizes.rate_policies, sizes.batch
    );
    let rate = rt.client.block_on(create_policies(
        &client_a,
        sizes.rate_policies,
        sizes.batch,
        "rate",
    ));
    report.rate_per_sec = Some(rate.per_sec());
    report.rate_errors = rate.errors;
    rt.server.block_on(server_a.shutdown());
    rt.client.block_on(store_a.drop_schema());
    drop(store_a);

    // 2. The big controller: 1000 leases, 60k policies over 30k apps (timed).
    let store_b = rt.client.block_on(BenchStore::new(backend, pg, "watch"))?;
    let (server_b, client_b) = start_server(rt, &store_b)?;
    rt.client.block_on(acquire_leases(
        &client_b,
        sizes.hosts,
        sizes.lease_concurrency,
    ));
    eprintln!(
        "bench[{name}]: storing {} policies over {} apps",
        sizes.policies,
        sizes.policies / 2
    );
    let stored = rt.client.block_on(create_policies(
        &client_b,
        sizes.policies,
        sizes.batch,
        "app",
    ));
    report.store_elapsed = Some(stored.elapsed);
    report.store_created = stored.created;
    report.store_errors = stored.errors;

    // 3. Watchers.
    let result = rt
        .client
        .block_on(watch_phase(&client_b, server_b.url(), sizes, &mut report));
    rt.server.block_on(server_b.shutdown());
    rt.client.block_on(store_b.drop_schema());
    result?;
    Ok(report)
}

async fn watch_phase(
    client: &Client,
    url: String,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = sizes.watchers;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .build()?;
    let shared = Arc::new(Shared::new(n));
    let slots = Arc::new(tokio::sync::Semaphore::new(sizes.connect_concurrency));
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Watch);
    eprintln!(
        "bench: connecting {n} watchers ({} snapshots at a time)",
        sizes.connect_concurrency
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(watcher(
                i,
                http.clone(),
                url.clone(),
                shared.clone(),
                slots.clone(),
                phase_rx.clone(),
            ))
        })
        .collect();
    let connect_limit = WAIT_LIMIT * 5;
    let ok = wait_until(connect_limit, || {
        shared.ready.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed) >= n
    })
    .await;
    report.connect_elapsed = Some(start.elapsed());
    report.watchers_ready = shared.ready.load(Ordering::Relaxed);
    report.snapshot_bytes = shared.snapshot_bytes.load(Ordering::Relaxed);
    eprintln!(
        "bench: {} watchers ready in {:.1} s{}",
        report.watchers_ready,
        start.elapsed().as_secs_f64(),
        if ok { "" } else { " (gave up waiting)" }
    );

    // Propagation: one write at a time; wait until all watchers have it (bounded), then the next.
    eprintln!("bench: {} writes to {n} watchers", sizes.writes);
    let ready = report.watchers_ready;
    for k in 0..sizes.writes {
        let p = probe_policy(k, "app");
        let r = client.create_policies(std::slice::from_ref(&p)).await?;
        let t0 = Instant::now();
        wait_until(PROPAGATION_LIMIT, || shared.count_at(r.revision) >= ready).await;
        collect(&shared, r.revision, t0, &mut report.prop);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Mass reconnect: all drop, a change is made while they are away, all reconnect at once with
    // `since` = their last revision; resumed = every watcher has replayed the missed change.
    eprintln!("bench: mass reconnect of {n} watchers");
    let errors_before = shared.errors.load(Ordering::Relaxed);
    phase_tx.send_replace(Phase::Drop);
    wait_until(WAIT_LIMIT, || {
        shared.dropped.load(Ordering::Relaxed) >= ready
    })
    .await;
    // Let the controller notice the closed connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let missed = client
        .create_policies(&[probe_policy(sizes.writes, "app")])
        .await?;
    let go = Instant::now();
    phase_tx.send_replace(Phase::Reconnect);
    let answered = wait_until(WAIT_LIMIT, || {
        shared.resumed.load(Ordering::Relaxed)
            + (shared.errors.load(Ordering::Relaxed) - errors_before)
            >= ready
    })
    .await;
    let answered_at = go.elapsed();
    let caught = wait_until(WAIT_LIMIT, || shared.all_at(missed.revision)).await;
    let caught_at = go.elapsed();
    report.reconnect_answered = answered.then_some(answered_at);
    report.reconnect_caught_up = caught.then_some(caught_at);
    report.reconnect_missing = n - shared.count_at(missed.revision);
    report.reconnect_errors = shared.errors.load(Ordering::Relaxed) - errors_before;
    report.resume_snapshots = shared.resume_snapshots.load(Ordering::Relaxed);

    // Propagation over the resumed streams.
    let after_writes = sizes.writes.clamp(1, 5);
    for k in 0..after_writes {
        let p = probe_policy(sizes.writes + 1 + k, "app");
        let r = client.create_policies(std::slice::from_ref(&p)).await?;
        let t0 = Instant::now();
        wait_until(PROPAGATION_LIMIT, || shared.count_at(r.revision) >= ready).await;
        collect(&shared, r.revision, t0, &mut report.after);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    report.watch_errors = shared.errors.load(Ordering::Relaxed);
    report.connect_retries = shared.connect_retries.load(Ordering::Relaxed);
    phase_tx.send_replace(Phase::Stop);
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .is_err()
        {
            eprintln!("bench: a watcher did not stop");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Table

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "timed out".into(),
    }
}

fn cell(r: &Option<anyhow::Result<Report>>, f: impl Fn(&Report) -> String) -> String {
    match r {
        Some(Ok(r)) => f(r),
        Some(Err(_)) => "failed".into(),
        None => "skipped".into(),
    }
}

fn print_table(
    sizes: &Sizes,
    sqlite: &Option<anyhow::Result<Report>>,
    pg: &Option<anyhow::Result<Report>>,
) {
    let w = sizes.watchers;
    let apps = sizes.policies / 2;
    let rows: Vec<(String, String, String, &str)> = vec![
        (
            format!(
                "lease acquisitions/s ({} hosts, {} concurrent)",
                sizes.hosts, sizes.lease_concurrency
            ),
            cell(sqlite, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.lease_per_sec.unwrap_or(0.0),
                    r.lease_errors
                )
            }),
            cell(pg, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.lease_per_sec.unwrap_or(0.0),
                    r.lease_errors
                )
            }),
            "",
        ),
        (
            format!(
                "policy creations/s ({} in batches of {})",
                sizes.rate_policies, sizes.batch
            ),
            cell(sqlite, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.rate_per_sec.unwrap_or(0.0),
                    r.rate_errors
                )
            }),
            cell(pg, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.rate_per_sec.unwrap_or(0.0),
                    r.rate_errors
                )
            }),
            "",
        ),
        (
            format!(
                "store {} policies / {apps} apps (batches of {})",
                sizes.policies, sizes.batch
            ),
            cell(sqlite, |r| {
                format!(
                    "{} ({} new, {} err)",
                    secs(r.store_elapsed),
                    r.store_created,
                    r.store_errors
                )
            }),
            cell(pg, |r| {
                format!(
                    "{} ({} new, {} err)",
                    secs(r.store_elapsed),
                    r.store_created,
                    r.store_errors
                )
            }),
            "< 5 s",
        ),
        (
            format!(
                "connect {w} watchers (snapshot each, {} at a time)",
                sizes.connect_concurrency
            ),
            cell(sqlite, |r| {
                format!("{} ({} ok)", secs(r.connect_elapsed), r.watchers_ready)
            }),
            cell(pg, |r| {
                format!("{} ({} ok)", secs(r.connect_elapsed), r.watchers_ready)
            }),
            "",
        ),
        (
            "snapshot size".into(),
            cell(sqlite, |r| {
                format!("{:.1} MB", r.snapshot_bytes as f64 / 1e6)
            }),
            cell(pg, |r| format!("{:.1} MB", r.snapshot_bytes as f64 / 1e6)),
            "",
        ),
        (
            format!("propagation p50, {w} watchers x {} writes", sizes.writes),
            cell(sqlite, |r| ms(r.prop.pct(50.0))),
            cell(pg, |r| ms(r.prop.pct(50.0))),
            "",
        ),
        (
            "propagation p99".into(),
            cell(sqlite, |r| ms(r.prop.pct(99.0))),
            cell(pg, |r| ms(r.prop.pct(99.0))),
            "< 100 ms",
        ),
        (
            "propagation max".into(),
            cell(sqlite, |r| ms(r.prop.pct(100.0))),
            cell(pg, |r| ms(r.prop.pct(100.0))),
            "",
        ),
        (
            "propagation: missing / before reply".into(),
            cell(sqlite, |r| format!("{} / {}", r.prop.missing, r.prop.early)),
            cell(pg, |r| format!("{} / {}", r.prop.missing, r.prop.early)),
            "0 / -",
        ),
        (
            format!("mass reconnect of {w}: errors"),
            cell(sqlite, |r| r.reconnect_errors.to_string()),
            cell(pg, |r| r.reconnect_errors.to_string()),
            "0",
        ),
        (
            "mass reconnect: all answered".into(),
            cell(sqlite, |r| secs(r.reconnect_answered)),
            cell(pg, |r| secs(r.reconnect_answered)),
            "",
        ),
        (
            "mass reconnect: all resumed (missed change replayed)".into(),
            cell(sqlite, |r| {
                format!(
                    "{} ({} missing)",
                    secs(r.reconnect_caught_up),
                    r.reconnect_missing
                )
            }),
            cell(pg, |r| {
                format!(
                    "{} ({} missing)",
                    secs(r.reconnect_caught_up),
                    r.reconnect_missing
                )
            }),
            "",
        ),
        (
            "mass reconnect: snapshots instead of replay".into(),
            cell(sqlite, |r| r.resume_snapshots.to_string()),
            cell(pg, |r| r.resume_snapshots.to_string()),
            "0",
        ),
        (
            "propagation after reconnect p50 / p99".into(),
            cell(sqlite, |r| {
                format!("{} / {}", ms(r.after.pct(50.0)), ms(r.after.pct(99.0)))
            }),
            cell(pg, |r| {
                format!("{} / {}", ms(r.after.pct(50.0)), ms(r.after.pct(99.0)))
            }),
            "",
        ),
        (
            "watch errors in total / connect retries".into(),
            cell(sqlite, |r| {
                format!("{} / {}", r.watch_errors, r.connect_retries)
            }),
            cell(pg, |r| {
                format!("{} / {}", r.watch_errors, r.connect_retries)
            }),
            "0 / 0",
        ),
    ];
    let w0 = rows
        .iter()
        .map(|r| r.0.len())
        .max()
        .unwrap_or(0)
        .max("metric".len());
    let w1 = rows
        .iter()
        .map(|r| r.1.len())
        .max()
        .unwrap_or(0)
        .max("SQLite".len());
    let w2 = rows
        .iter()
        .map(|r| r.2.len())
        .max()
        .unwrap_or(0)
        .max("PostgreSQL".len());
    let w3 = rows
        .iter()
        .map(|r| r.3.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    println!(
        "| {:<w0$} | {:>w1$} | {:>w2$} | {:<w3$} |",
        "metric", "SQLite", "PostgreSQL", "target"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 1) + ":",
        "-".repeat(w2 + 1) + ":",
        "-".repeat(w3 + 2)
    );
    for (m, s, p, t) in &rows {
        println!("| {m:<w0$} | {s:>w1$} | {p:>w2$} | {t:<w3$} |");
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a filter argument other than this bench's name skips it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "controller".contains(a.as_str())) {
        return Ok(());
    }
    weft_api::tls::install_default_provider();
    let nofile = raise_nofile();
    let sizes = Sizes::from_env();
    let needed = (sizes.watchers * 2 + 200) as u64;
    if nofile < needed {
        eprintln!("bench: open-file limit {nofile} < {needed}: some watchers will fail to connect");
    }
    let rt = Runtimes {
        server: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("controller")
            .enable_all()
            .build()?,
        client: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("clients")
            .enable_all()
            .build()?,
    };
    let started = Instant::now();
    eprintln!("bench: sizes {sizes:?}");

    let sqlite = run_backend(&rt, Backend::Sqlite, None, &sizes);
    if let Err(e) = &sqlite {
        eprintln!("bench: SQLite run failed: {e:#}");
    }
    let pg_url = std::env::var("WEFT_TEST_POSTGRES_URL").ok();
    let pg = match &pg_url {
        Some(url) => {
            let r = run_backend(&rt, Backend::Postgres, Some(url), &sizes);
            if let Err(e) = &r {
                eprintln!("bench: PostgreSQL run failed: {e:#}");
            }
            Some(r)
        }
        None => None,
    };

    println!();
    println!(
        "weft controller benchmark ({} s in total; controller and clients in one process on 127.0.0.1, {} CPUs)",
        started.elapsed().as_secs(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    if pg_url.is_none() {
        println!("PostgreSQL: skipped (WEFT_TEST_POSTGRES_URL is unset; see crates/weft-controller/ci/postgres.sh)");
    }
    print_table(&sizes, &Some(sqlite), &pg);
    Ok(())
}
