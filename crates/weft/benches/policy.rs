//! Network policy speed (issue 5, "Speed"), in one run:
//! 1. the time `weft_agent::policy::apply` takes to write weft's real `inet weft-policy` table
//!    with 0, 1,000 and 10,000 policies (full: table + every element, one transaction), and one
//!    more policy on top of each size (incremental, one transaction);
//! 2. throughput (iperf3, 1 stream), TCP request/response p50 and TCP connect p50 of a flow that
//!    matches the last policy, across two cells over VXLAN with GBP (controller + real agents +
//!    weft-cni overlay containers; policies created through the API in bulk), at 0, 1,000 and
//!    10,000 policies, next to a Cloud Foundry-style layout built in the bench on the same
//!    cells: one iptables-legacy rule per policy in a chain, the flow's rule last;
//! 3. propagation: from the API's answer to a policy create (and delete) to the element being in
//!    the destination cell's kernel, with 50 agents watching (the real one of each cell and 49
//!    more watch streams opened by the bench from inside the underlay namespace).
//!
//! ```text
//! sudo cargo bench -p weft --bench policy [-- --secs 3 --runs 3 --changes 50 --watchers 49]
//! ```
//!
//! Everything happens in network namespaces the bench makes (see tests/common/dc.rs) and removes
//! on exit, panic or Ctrl-C; the machine's own namespace is never touched, and every client of
//! the controller runs on threads that entered the underlay namespace.

// The shared test support trips `too_many_arguments` (exec_plugin) under clippy's
// `--benches`; that file is not this bench's to change.
#[allow(clippy::too_many_arguments)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/dc.rs"]
mod dc;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Ns};
use dc::{Dc, DcOptions, Proc};
use serde_json::Value;
use weft_agent::policy::{self, LocalContainer};
use weft_api::model::{Policy, Ports, Protocol, WatchMessage};
use weft_kernel::netns::Netns;
use weft_kernel::nft::Nft;

const SIZES: [usize; 3] = [0, 1000, 10_000];
const OVERLAY: &str = "10.255.0.0/16";
/// The flow's policy: client → server, tcp 5201 (iperf3) – 5202 (request/response probe).
const FLOW_PORTS: (u16, u16) = (5201, 5202);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.expect("install signal handler");
    }
}

/// Panics (so every guard on the stack is dropped: processes, namespaces) after Ctrl-C.
fn check_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted: removing the bench's namespaces");
    }
}

struct Opts {
    secs: u32,
    runs: usize,
    changes: usize,
    watchers: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        secs: 3,
        runs: 3,
        changes: 50,
        watchers: 49,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let val = || -> usize {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--secs" => o.secs = val() as u32,
            "--runs" => o.runs = val(),
            "--changes" => o.changes = val(),
            "--watchers" => o.watchers = val(),
            _ => {
                i += 1; // `cargo bench` passes --bench
                continue;
            }
        }
        i += 2;
    }
    o
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Background policy `i`: source app `bg<i/100>`, destination `dst`, tcp port `10000 + 2*(i%100)`
/// (ports two apart, so no two merge into one interval: one allow_ports element each).
fn bg_policy(i: usize, dst: &str) -> Policy {
    let port = 10_000 + 2 * (i % 100) as u16;
    Policy::new(
        &format!("bg{}", i / 100),
        dst,
        Protocol::Tcp,
        Some(Ports {
            start: port,
            end: port,
        }),
    )
}

fn tcp_policy(src: &str, dst: &str, (start, end): (u16, u16)) -> Policy {
    Policy::new(src, dst, Protocol::Tcp, Some(Ports { start, end }))
}

/// Runs `f` on a new thread inside the namespace at `path`.
fn in_ns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    weft_kernel::netns::in_netns(path, f).unwrap_or_else(|e| panic!("in {path}: {e}"))
}

/// Elements in `inet weft-policy allow_ports` (0 when the table is missing).
fn count_allow_ports(nft: &mut Nft) -> usize {
    let Ok(out) = nft.run_json(&format!("list map inet {} allow_ports", policy::TABLE)) else {
        return 0;
    };
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v["nftables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["map"]["elem"].as_array().map(Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// 1. apply

struct ApplyRow {
    n: usize,
    elements_ms: f64,
    full_ms: Vec<f64>,
    incr_ms: Vec<f64>,
    in_kernel: usize,
}

fn bench_apply() -> Vec<ApplyRow> {
    let ns = Ns::new("pa");
    let path = ns.path();
    in_ns(&path, || {
        let mut nft = Nft::new().expect("libnftables");
        let layout = policy::Layout {
            overlay: OVERLAY.parse().expect("overlay"),
            vxlan_port: 4789,
            vtep: "weft.vtep".into(),
            underlay: "eth0".into(),
            enforce: true,
            audit: None,
        };
        let mut tags: BTreeMap<String, u16> = BTreeMap::new();
        for a in 0..=100u16 {
            tags.insert(format!("bg{a}"), a + 1);
        }
        tags.insert("dst".into(), 1000);
        let containers = vec![LocalContainer {
            ip: Ipv4Addr::new(10, 255, 1, 2),
            host_ifname: "weftdst0000000".into(),
            app: Some("dst".into()),
            mac: None,
        }];
        let cells = vec![weft_agent::remote::RemoteCell {
            subnet: "10.255.2.0/24".parse().expect("subnet"),
            vtep_ip: Ipv4Addr::new(10, 255, 2, 0),
            vtep_mac: weft_kernel::MacAddr::new([2, 0, 0, 0, 0, 2]),
            underlay_ip: "198.18.0.2".parse().expect("ip"),
        }];
        let mut rows = Vec::new();
        for n in SIZES {
            check_interrupted();
            let mut ps: Vec<Policy> = (0..n).map(|i| bg_policy(i, "dst")).collect();
            let t = Instant::now();
            let e = policy::elements(&ps, &tags, &containers, &cells);
            let elements_ms = ms(t.elapsed());
            assert_eq!(e.allow_ports.len(), n, "one element per policy");
            let mut full = Vec::new();
            for _ in 0..3 {
                // A fresh host: no table yet, so apply writes the table and every element.
                let _ = nft.run(&format!("delete table inet {}", policy::TABLE));
                let t = Instant::now();
                policy::apply(&mut nft, &layout, None, &e, false).expect("apply full");
                full.push(ms(t.elapsed()));
            }
            let in_kernel = count_allow_ports(&mut nft);
            // One more policy on top (a new port of an existing source app), and back.
            ps.push(tcp_policy("bg100", "dst", (60_000, 60_000)));
            let e1 = policy::elements(&ps, &tags, &containers, &cells);
            assert_eq!(e1.allow_ports.len(), n + 1);
            let mut incr = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                policy::apply(&mut nft, &layout, Some(&e), &e1, false).expect("apply +1");
                incr.push(ms(t.elapsed()));
                policy::apply(&mut nft, &layout, Some(&e1), &e, false).expect("apply -1");
            }
            eprintln!(
                "[apply] n={n}: elements {elements_ms:.1} ms, full {full:?} ms, +1 {incr:?} ms"
            );
            rows.push(ApplyRow {
                n,
                elements_ms,
                full_ms: sorted(full),
                incr_ms: sorted(incr),
                in_kernel,
            });
        }
        rows
    })
}

// ---------------------------------------------------------------------------------------
// Helpers for the data centre: a tokio runtime inside the underlay namespace, and a poller
// of the destination cell's nftables.

/// A multi-thread tokio runtime whose threads all live in one namespace (they are spawned by
/// a thread that entered it). Futures given to [`NsRuntime::run`] run there, so every socket
/// they open belongs to that namespace.
struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    fn start(path: String) -> NsRuntime {
        let (htx, hrx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            Netns::open(&path)
                .and_then(|n| n.enter())
                .unwrap_or_else(|e| panic!("enter {path}: {e}"));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            htx.send(rt.handle().clone()).expect("send handle");
            let _ = rt.block_on(stop_rx);
            rt.shutdown_background();
        });
        let handle = hrx.recv().expect("runtime handle");
        NsRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn run<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("task in the namespace's runtime died")
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum PollCmd {
    Count(mpsc::Sender<usize>),
    /// Poll every ~1 ms until the element is (or is not) there; the instant it was seen.
    Wait {
        key: String,
        present: bool,
        started: mpsc::Sender<()>,
        reply: mpsc::Sender<Option<Instant>>,
    },
}

/// A thread inside the destination cell's namespace, with its own libnftables context.
struct Poller {
    tx: Option<mpsc::Sender<PollCmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(path: String) -> Poller {
        let (tx, rx) = mpsc::channel::<PollCmd>();
        let thread = std::thread::spawn(move || {
            Netns::open(&path)
                .and_then(|n| n.enter())
                .unwrap_or_else(|e| panic!("enter {path}: {e}"));
            let mut nft = Nft::new().expect("libnftables");
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    PollCmd::Count(r) => {
                        let _ = r.send(count_allow_ports(&mut nft));
                    }
                    PollCmd::Wait {
                        key,
                        present,
                        started,
                        reply,
                    } => {
                        let q =
                            format!("get element inet {} allow_ports {{ {key} }}", policy::TABLE);
                        let _ = started.send(());
                        let t = Instant::now();
                        let seen = loop {
                            if nft.run(&q).is_ok() == present {
                                break Some(Instant::now());
                            }
                            if t.elapsed() > Duration::from_secs(20) {
                                break None;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        };
                        let _ = reply.send(seen);
                    }
                }
            }
        });
        Poller {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("poller")
            .send(PollCmd::Count(tx))
            .expect("poller alive");
        rx.recv().expect("poller answer")
    }

    /// Starts waiting for `key`; returns the receiver of the instant it was seen.
    fn watch_for(&self, key: &str, present: bool) -> mpsc::Receiver<Option<Instant>> {
        let (reply, rx) = mpsc::channel();
        let (started, srx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("poller")
            .send(PollCmd::Wait {
                key: key.to_string(),
                present,
                started,
                reply,
            })
            .expect("poller alive");
        srx.recv().expect("poller started");
        rx
    }

    /// Waits (bounded) until allow_ports holds `n` elements; how long it took.
    fn wait_count(&self, n: usize, limit: Duration) -> (Duration, usize) {
        let t = Instant::now();
        loop {
            check_interrupted();
            let c = self.count();
            if c == n || t.elapsed() > limit {
                return (t.elapsed(), c);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const RR_PY: &str = r#"
import socket, sys, time
mode = sys.argv[1]
if mode == "srv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(128)
    while True:
        c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                d = c.recv(64)
                if not d: break
                c.sendall(d)
        except OSError: pass
        c.close()
elif mode == "rr":
    ip, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    c = socket.create_connection((ip, port), timeout=3)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat = []
    for i in range(n + 100):
        t = time.perf_counter(); c.sendall(b"x")
        if not c.recv(64): sys.exit(1)
        if i >= 100: lat.append(time.perf_counter() - t)
    lat.sort(); print("%.1f" % (lat[len(lat) // 2] * 1e6))
elif mode == "conn":
    ip, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    lat = []
    for i in range(n):
        t = time.perf_counter()
        c = socket.create_connection((ip, port), timeout=3)
        lat.append(time.perf_counter() - t)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    lat.sort(); print("%.1f" % (lat[len(lat) // 2] * 1e6))
"#;

struct Flow {
    gbps: Vec<f64>,
    rr_p50_us: f64,
    connect_p50_us: f64,
}

/// iperf3 runs, TCP request/response p50 and TCP connect p50 from `client` to `ip`.
fn measure(client: &Ns, ip: &str, py: &str, o: &Opts) -> Flow {
    let mut gbps = Vec::new();
    for _ in 0..o.runs {
        check_interrupted();
        let out = client.ok(&format!(
            "taskset -c 0 iperf3 -c {ip} -p {} -t {} -J",
            FLOW_PORTS.0, o.secs
        ));
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 -J: {e}: {out}"));
        gbps.push(
            v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or_else(|| panic!("iperf3 result: {out}"))
                / 1e9,
        );
    }
    let num = |cmd: String| -> f64 {
        let out = client.ok(&cmd);
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{cmd}: {e}: {out}"))
    };
    let rr_p50_us = num(format!(
        "taskset -c 0 python3 {py} rr {ip} {} 3000",
        FLOW_PORTS.1
    ));
    let connect_p50_us = num(format!(
        "taskset -c 0 python3 {py} conn {ip} {} 500",
        FLOW_PORTS.1
    ));
    Flow {
        gbps,
        rr_p50_us,
        connect_p50_us,
    }
}

struct DatapathRow {
    layout: &'static str,
    n: usize,
    /// Install time: API answer → all elements in the destination's kernel (weft), or
    /// iptables-legacy-restore (CF).
    install_ms: f64,
    installed: usize,
    flow: Flow,
}

struct Propagation {
    state_policies: usize,
    watchers_ok: usize,
    create_ms: Vec<f64>,
    delete_ms: Vec<f64>,
    missed: usize,
}

fn cf_restore(n: usize, tag: u16, ip: &str) -> String {
    let mut s = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:vpa - [0:0]\n",
    );
    s += &format!(
        "-A FORWARD -i {} -j vpa\n-A FORWARD -i {} -j DROP\n",
        dc::VTEP,
        dc::VTEP
    );
    for i in 0..n {
        // Marks no real app holds (weft's tags are small numbers).
        let mark = 0x4000 + i / 100;
        let port = 10_000 + 2 * (i % 100);
        s += &format!(
            "-A vpa -m mark --mark 0x{mark:x} -d {ip}/32 -p tcp -m tcp --dport {port} -j ACCEPT\n"
        );
    }
    s += &format!(
        "-A vpa -m mark --mark 0x{tag:x} -d {ip}/32 -p tcp -m tcp --dport {}:{} -j ACCEPT\nCOMMIT\n",
        FLOW_PORTS.0, FLOW_PORTS.1
    );
    s
}

fn bench_dc(o: &Opts) -> (Vec<DatapathRow>, Propagation, String) {
    let dc = Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        ..Default::default()
    });
    let py = dc.dir.path.join("rr.py").display().to_string();
    std::fs::write(&py, RR_PY).expect("write rr.py");
    let client = dc.add_container(1, "polbench-client", "client");
    let server = dc.add_container(2, "polbench-server", "server");
    let _iperf = Proc::spawn(
        &server.ns,
        &[
            "taskset",
            "-c",
            "1",
            "iperf3",
            "-s",
            "-p",
            &FLOW_PORTS.0.to_string(),
        ],
        &[],
        &dc.dir.path.join("iperf3.log"),
    );
    let _rr = Proc::spawn(
        &server.ns,
        &[
            "taskset",
            "-c",
            "1",
            "python3",
            &py,
            "srv",
            &FLOW_PORTS.1.to_string(),
        ],
        &[],
        &dc.dir.path.join("rr.log"),
    );
    wait_until("servers listening", dc::LIVE, || {
        let s = server.ns.ok("ss -ltnH");
        s.contains(":5201") && s.contains(":5202")
    });
    // The client's tag, as cell 1's agent claimed it.
    let tags_file = weft_agent::agent::tags_file(&dc.cell(1).lease_file());
    let mut tag = 0u16;
    wait_until("client's tag", dc::LIVE, || {
        tag = std::fs::read(&tags_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, u16>>(&b).ok())
            .and_then(|m| m.get("client").copied())
            .unwrap_or(0);
        tag != 0
    });
    let rt = NsRuntime::start(dc.underlay_ns().path());
    let poller = Poller::start(dc.cell_ns(2).path());
    let api = dc.client();
    let create = |ps: Vec<Policy>| -> Instant {
        let api = api.clone();
        rt.run(async move {
            api.create_policies(&ps).await.expect("create policies");
            Instant::now()
        })
    };
    let delete = |ps: Vec<Policy>| -> Instant {
        let api = api.clone();
        rt.run(async move {
            api.delete_policies(&ps).await.expect("delete policies");
            Instant::now()
        })
    };
    let flow = tcp_policy("client", "server", FLOW_PORTS);
    let flow_key = format!(
        "{tag} . {} . tcp . {}-{}",
        server.ip, FLOW_PORTS.0, FLOW_PORTS.1
    );
    let seen = poller.watch_for(&flow_key, true);
    create(vec![flow.clone()]);
    seen.recv()
        .expect("poller")
        .expect("the flow's policy reached cell 2");
    let probe = format!("python3 {py} rr {} {} 5", server.ip, FLOW_PORTS.1);
    wait_until("flow allowed", dc::LIVE, || {
        client.ns.sh(&probe).status.success()
    });
    // Default deny works: a port no policy allows is refused.
    let denied = client
        .ns
        .sh(&format!("python3 {py} rr {} 5203 1", server.ip))
        .status
        .success();
    assert!(!denied, "a port without policy must not connect");
    let mut notes = String::new();

    let mut rows = Vec::new();
    // Cloud Foundry layout: weft's table holds only the flow's element (one lookup per new
    // connection, whatever N); the iptables-legacy chain in FORWARD grows with N.
    for n in SIZES {
        check_interrupted();
        let file = dc.dir.path.join(format!("cf-{n}.restore"));
        std::fs::write(&file, cf_restore(n, tag, &server.ip)).expect("write rules");
        let cell = dc.cell_ns(2);
        let _ = cell.sh("iptables-legacy -w -F; iptables-legacy -w -X");
        let t = Instant::now();
        cell.ok(&format!(
            "iptables-legacy-restore -w 5 < {}",
            file.display()
        ));
        let install_ms = ms(t.elapsed());
        let installed = cell
            .ok("iptables-legacy -w -S vpa")
            .lines()
            .filter(|l| l.starts_with("-A vpa"))
            .count();
        wait_until("flow through the CF chain", dc::LIVE, || {
            client.ns.sh(&probe).status.success()
        });
        eprintln!("[cf] n={n}: restore {install_ms:.1} ms, {installed} rules");
        let flow = measure(&client.ns, &server.ip, &py, o);
        eprintln!(
            "[cf] n={n}: {:?} Gbit/s, rr {} us, connect {} us",
            flow.gbps, flow.rr_p50_us, flow.connect_p50_us
        );
        rows.push(DatapathRow {
            layout: "CF iptables-legacy chain",
            n,
            install_ms,
            installed,
            flow,
        });
    }
    dc.cell_ns(2)
        .ok("iptables-legacy -w -F && iptables-legacy -w -X");

    // weft: N background policies + the flow's, created through the API in one request, the
    // flow's policy last (it is deleted first so that it is the newest).
    let mut have = 0usize;
    for n in SIZES {
        check_interrupted();
        let (install_ms, installed) = if n == 0 {
            (0.0, poller.count())
        } else {
            let gone = poller.watch_for(&flow_key, false);
            delete(vec![flow.clone()]);
            gone.recv().expect("poller").expect("flow's policy removed");
            let mut batch: Vec<Policy> = (have..n).map(|i| bg_policy(i, "server")).collect();
            batch.push(flow.clone());
            let t0 = create(batch);
            let (took, c) = poller.wait_count(n + 1, Duration::from_secs(600));
            if c != n + 1 {
                notes += &format!(
                    "weft n={n}: only {c} of {} elements after {:.0} s\n",
                    n + 1,
                    took.as_secs_f64()
                );
            }
            (ms(t0.elapsed().min(took)), c)
        };
        have = n;
        wait_until("flow allowed (weft)", Duration::from_secs(60), || {
            client.ns.sh(&probe).status.success()
        });
        eprintln!("[weft] n={n}: {installed} elements in {install_ms:.0} ms");
        let flow = measure(&client.ns, &server.ip, &py, o);
        eprintln!(
            "[weft] n={n}: {:?} Gbit/s, rr {} us, connect {} us",
            flow.gbps, flow.rr_p50_us, flow.connect_p50_us
        );
        rows.push(DatapathRow {
            layout: "weft nft verdict map",
            n,
            install_ms,
            installed,
            flow,
        });
    }

    // Propagation, with the agents of both cells plus `watchers` more watch streams.
    let snapshots = Arc::new(AtomicUsize::new(0));
    for _ in 0..o.watchers {
        let c = dc.client();
        let snapshots = snapshots.clone();
        rt.handle.spawn(async move {
            let mut w = c.watch_resuming(None);
            while let Ok(m) = w.next().await {
                if matches!(m, WatchMessage::Snapshot(_)) {
                    snapshots.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    wait_until("watchers' snapshots", Duration::from_secs(60), || {
        snapshots.load(Ordering::SeqCst) >= o.watchers
    });
    let mut p = Propagation {
        state_policies: have + 1,
        watchers_ok: snapshots.load(Ordering::SeqCst) + 1,
        create_ms: Vec::new(),
        delete_ms: Vec::new(),
        missed: 0,
    };
    let signed_ms = |seen: Instant, t0: Instant| -> f64 {
        if seen >= t0 {
            ms(seen - t0)
        } else {
            -ms(t0 - seen)
        }
    };
    for k in 0..o.changes {
        check_interrupted();
        let port = 40_000 + 2 * k as u16;
        let pol = tcp_policy("client", "server", (port, port));
        let key = format!("{tag} . {} . tcp . {port}-{port}", server.ip);
        let rx = poller.watch_for(&key, true);
        let t0 = create(vec![pol.clone()]);
        match rx.recv().expect("poller") {
            Some(seen) => p.create_ms.push(signed_ms(seen, t0)),
            None => p.missed += 1,
        }
        let rx = poller.watch_for(&key, false);
        let t0 = delete(vec![pol]);
        match rx.recv().expect("poller") {
            Some(seen) => p.delete_ms.push(signed_ms(seen, t0)),
            None => p.missed += 1,
        }
    }
    p.watchers_ok = snapshots.load(Ordering::SeqCst) + 2;
    // What cell 2's agent said about its applies (the last ones: propagation at full size).
    let log = dc.cell(2).agent_log();
    let took: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("policy applied"))
        .filter_map(|l| l.split("took_us=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.trim_matches('"').parse().ok())
        .collect();
    let applies = took.len();
    let last = sorted(took.iter().rev().take(2 * o.changes).copied().collect());
    notes += &format!(
        "cell 2's agent logged {applies} policy applies; the last {} took p50 {:.1} ms, max {:.1} ms (its own took_us)\n",
        last.len(),
        pct(&last, 0.5) / 1000.0,
        pct(&last, 1.0) / 1000.0
    );
    drop(poller);
    drop(rt);
    (rows, p, notes)
}

fn main() {
    install_signal_handlers();
    let o = opts();
    let start = Instant::now();
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("policy bench: needs root (network namespaces); skipped");
        return;
    }
    for t in ["iperf3", "iptables-legacy", "taskset", "python3", "ping"] {
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "{t} is needed (apt-get install iperf3 iptables util-linux python3)"
        );
    }
    let apply = bench_apply();
    let (rows, prop, notes) = bench_dc(&o);

    println!();
    println!(
        "## weft policy bench (issue 5), {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("### 1. weft_agent::policy::apply in a namespace of its own (one transaction each)");
    println!();
    println!("| policies | allow_ports in kernel | elements() | full apply (table + elements) p50 [min..max] of 3 | +1 policy p50 [min..max] of 5 |");
    println!("|---:|---:|---:|---:|---:|");
    for r in &apply {
        println!(
            "| {} | {} | {:.1} ms | {:.1} ms [{:.1}..{:.1}] | {:.2} ms [{:.2}..{:.2}] |",
            r.n,
            r.in_kernel,
            r.elements_ms,
            pct(&r.full_ms, 0.5),
            pct(&r.full_ms, 0.0),
            pct(&r.full_ms, 1.0),
            pct(&r.incr_ms, 0.5),
            pct(&r.incr_ms, 0.0),
            pct(&r.incr_ms, 1.0),
        );
    }
    println!();
    println!(
        "### 2. Flow matching the last policy, cell 1 → cell 2 over VXLAN-GBP (iperf3 1 stream {} s × {}, median; TCP RR 3000 × 1 byte p50; TCP connect 500× p50)",
        o.secs, o.runs
    );
    println!();
    println!("| layout | policies | installed | install | throughput | vs 0 | TCP RR p50 | connect p50 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let base = rows
            .iter()
            .find(|b| b.layout == r.layout && b.n == 0)
            .map(|b| pct(&sorted(b.flow.gbps.clone()), 0.5))
            .unwrap_or(f64::NAN);
        let g = sorted(r.flow.gbps.clone());
        println!(
            "| {} | {} | {} | {:.0} ms | {:.2} Gbit/s ({}) | {:.1}% | {:.0} µs | {:.0} µs |",
            r.layout,
            r.n,
            r.installed,
            r.install_ms,
            pct(&g, 0.5),
            g.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join("/"),
            pct(&g, 0.5) / base * 100.0,
            r.flow.rr_p50_us,
            r.flow.connect_p50_us,
        );
    }
    println!();
    println!("install: weft = API answer to all allow_ports elements in cell 2's kernel (agents apply change by change); CF = iptables-legacy-restore of the chain (one exec)");
    println!();
    let c = sorted(prop.create_ms.clone());
    let d = sorted(prop.delete_ms.clone());
    println!(
        "### 3. Propagation, API answer → element in cell 2's kernel (polled every ~1 ms), {} changes each, {} watch streams, {} policies in place",
        c.len(),
        prop.watchers_ok,
        prop.state_policies
    );
    println!();
    println!("| change | p50 | p99 | max | missed (20 s) |");
    println!("|---|---:|---:|---:|---:|");
    for (what, v) in [("create", &c), ("delete", &d)] {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0),
            prop.missed
        );
    }
    println!();
    if !notes.is_empty() {
        println!("notes:\n{notes}");
    }
    let a10k = apply.iter().find(|r| r.n == 10_000);
    let w = |n: usize| {
        rows.iter()
            .find(|r| r.layout.starts_with("weft") && r.n == n)
            .map(|r| pct(&sorted(r.flow.gbps.clone()), 0.5))
            .unwrap_or(f64::NAN)
    };
    let verdict = |b: bool| if b { "PASS" } else { "FAIL" };
    println!("targets:");
    if let Some(a) = a10k {
        println!(
            "- 10,000 policies applied in under 1 s: {} ({:.0} ms)",
            verdict(pct(&a.full_ms, 0.5) < 1000.0),
            pct(&a.full_ms, 0.5)
        );
    }
    println!(
        "- throughput at 10,000 within 5% of 0: {} ({:.1}%)",
        verdict(w(10_000) >= 0.95 * w(0)),
        w(10_000) / w(0) * 100.0
    );
    println!(
        "- propagation p99 under 200 ms: {} (create {:.1} ms, delete {:.1} ms)",
        verdict(pct(&c, 0.99) < 200.0 && pct(&d, 0.99) < 200.0 && prop.missed == 0),
        pct(&c, 0.99),
        pct(&d, 0.99)
    );
    println!("total bench time: {:.0} s", start.elapsed().as_secs_f64());
}
