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

mod table;
mod watchers;

use table::print_table;
use watchers::*;

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
    let nofile = weft_controller::limits::raise_nofile();
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
