//! Controller memory with many idle watch streams (issue 15): how much RSS the controller
//! holds per agent that watches it and says nothing.
//!
//! ```sh
//! cargo bench -p weft-controller --bench watchers            # 2000 watchers, 0 and 1000 policies
//! WEFT_BENCH_WATCHERS=500 WEFT_BENCH_POLICIES=0 cargo bench -p weft-controller --bench watchers
//! ```
//!
//! The controller runs in a child process (this binary again, with `WEFT_BENCH_ROLE=controller`)
//! so that its RSS is its own: SQLite in a temp dir, plain HTTP on 127.0.0.1, default
//! heartbeat. The watchers are plain sockets in this process: each sends `GET /v1/watch`,
//! reads until its snapshot line is complete, then keeps reading (heartbeats) and stays
//! connected. The controller's RSS (VmRSS of /proc/PID/status) is read before any watcher,
//! once all are idle (2 s after the last snapshot), and after they went away; the table shows
//! it per store size with the cost per watcher, and the share of a core the controller used
//! over 10 s of idle streams (their heartbeats).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_api::model::{Policy, Ports, Protocol};
use weft_api::Client;
use weft_controller::ControllerArgs;

/// Bound of every wait (a liveness bound: the bench always stops by itself).
const WAIT_LIMIT: Duration = Duration::from_secs(120);
/// How long the controller's CPU use is sampled while every watcher is idle.
const IDLE_SAMPLE: Duration = Duration::from_secs(10);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: ControllerArgs,
}

/// The child: serve until stdin closes; print the URL first.
fn serve() -> anyhow::Result<()> {
    weft_controller::limits::raise_nofile();
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("controller.db").display());
    let state = dir.path().join("state").display().to_string();
    let serve = Serve::parse_from([
        "controller",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--state-dir",
        &state,
        "--insecure-http",
        "--overlay-cidr",
        "10.0.0.0/8",
    ]);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let server = serve.args.start().await?;
        println!("LISTENING {}", server.url());
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await?;
        server.shutdown().await;
        anyhow::Ok(())
    })
}

struct Controller {
    child: Child,
    url: String,
}

impl Controller {
    fn start() -> anyhow::Result<Controller> {
        let mut child = Command::new(std::env::current_exe()?)
            .env("WEFT_BENCH_ROLE", "controller")
            .env("WEFT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .strip_prefix("LISTENING ")
            .ok_or_else(|| anyhow::anyhow!("controller said {line:?}"))?
            .trim()
            .to_string();
        Ok(Controller { child, url })
    }

    /// CPU time (user + system) the controller has used so far.
    fn cpu(&self) -> Duration {
        // Fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second on Linux).
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<u64> = after_comm
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        Duration::from_millis(ticks * 10)
    }

    /// VmRSS of the controller process, in KiB.
    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One idle watcher: asks for a watch, reads until the first line (the snapshot) is complete,
/// signals, then keeps reading until told to stop.
async fn watcher(
    addr: String,
    ready: tokio::sync::mpsc::Sender<Result<usize, String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut sock = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("connect: {e}"))).await;
            return;
        }
    };
    let req = format!("GET /v1/watch HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if let Err(e) = sock.write_all(req.as_bytes()).await {
        let _ = ready.send(Err(format!("send: {e}"))).await;
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let mut signalled = false;
    let mut last = 0u8;
    loop {
        tokio::select! {
            r = sock.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    if !signalled {
                        let _ = ready.send(Err("closed before the snapshot".into())).await;
                    }
                    return;
                }
                Ok(n) => {
                    total += n;
                    // A JSON line ends in `}` and a newline; neither the headers nor the
                    // chunked encoding's framing have that pair (JSON escapes newlines).
                    let ends_line = !signalled
                        && (last == b'}' && buf[0] == b'\n'
                            || buf[..n].windows(2).any(|w| w == b"}\n"));
                    last = buf[n - 1];
                    if ends_line {
                        signalled = true;
                        let _ = ready.send(Ok(total)).await;
                    }
                }
            },
            _ = stop.changed() => return,
        }
    }
}

struct Row {
    policies: usize,
    /// Share of one core the controller used while the watchers were idle.
    idle_cpu: f64,
    empty_kib: u64,
    idle_kib: u64,
    after_kib: u64,
    connected: usize,
    snapshot_bytes: usize,
    connect_secs: f64,
}

async fn measure(ctl: &Controller, watchers: usize, policies: usize) -> anyhow::Result<Row> {
    let client = Client::builder(&ctl.url).build()?;
    let batch: Vec<Policy> = (0..policies)
        .map(|i| {
            Policy::new(
                &format!("src-{i:05}"),
                &format!("dst-{i:05}"),
                Protocol::Tcp,
                Some(Ports {
                    start: 8080,
                    end: 8080,
                }),
            )
        })
        .collect();
    for chunk in batch.chunks(500) {
        client.create_policies(chunk).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let empty_kib = ctl.rss_kib();
    let addr = ctl.url.trim_start_matches("http://").to_string();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(watchers.max(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(watchers);
    // A few at a time, as agents coming up would.
    for chunk in (0..watchers).collect::<Vec<_>>().chunks(64) {
        for _ in chunk {
            tasks.push(tokio::spawn(watcher(
                addr.clone(),
                ready_tx.clone(),
                stop_rx.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut connected = 0;
    let mut snapshot_bytes = 0;
    for _ in 0..watchers {
        match tokio::time::timeout(WAIT_LIMIT, ready_rx.recv()).await {
            Ok(Some(Ok(n))) => {
                connected += 1;
                snapshot_bytes = snapshot_bytes.max(n);
            }
            Ok(Some(Err(e))) => eprintln!("bench: watcher failed: {e}"),
            _ => break,
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = ctl.rss_kib();
    // What the idle streams cost in CPU (their heartbeats), over IDLE_SAMPLE.
    let cpu0 = ctl.cpu();
    tokio::time::sleep(IDLE_SAMPLE).await;
    let idle_cpu = (ctl.cpu() - cpu0).as_secs_f64() / IDLE_SAMPLE.as_secs_f64();
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kib = ctl.rss_kib();
    Ok(Row {
        policies,
        idle_cpu,
        empty_kib,
        idle_kib,
        after_kib,
        connected,
        snapshot_bytes,
        connect_secs,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() -> anyhow::Result<()> {
    if std::env::var("WEFT_BENCH_ROLE").as_deref() == Ok("controller") {
        return serve();
    }
    // `cargo bench` passes --bench; `cargo test --benches` runs it as a test: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let nofile = weft_controller::limits::raise_nofile();
    let watchers = env_usize("WEFT_BENCH_WATCHERS", 2000);
    let sizes: Vec<usize> = match std::env::var("WEFT_BENCH_POLICIES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![0, 1000],
    };
    if nofile < watchers as u64 + 100 {
        eprintln!("bench: open-file limit {nofile} is below {watchers} watchers: some will fail");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    for &policies in &sizes {
        let ctl = Controller::start()?;
        eprintln!("bench: {watchers} watchers, {policies} policies");
        rows.push(rt.block_on(measure(&ctl, watchers, policies))?);
    }
    println!();
    println!("controller RSS with {watchers} idle watch streams (SQLite, plain HTTP, 127.0.0.1; the machine is shared)");
    println!(
        "{:>8}  {:>9}  {:>14}  {:>14}  {:>14}  {:>12}  {:>13}  {:>10}  {:>9}",
        "policies",
        "snapshot",
        "RSS, none",
        "RSS, idle",
        "per watcher",
        "connected",
        "connect all",
        "RSS after",
        "idle CPU"
    );
    for r in &rows {
        let per = (r.idle_kib.saturating_sub(r.empty_kib)) as f64 / r.connected.max(1) as f64;
        println!(
            "{:>8}  {:>9}  {:>14}  {:>14}  {:>10.1} KiB  {:>5} of {:<4}  {:>11.1} s  {:>10}  {:>8.1}%",
            r.policies,
            format!("{} KB", r.snapshot_bytes / 1000),
            mib(r.empty_kib),
            mib(r.idle_kib),
            per,
            r.connected,
            watchers,
            r.connect_secs,
            mib(r.after_kib),
            r.idle_cpu * 100.0
        );
    }
    Ok(())
}
