//! Steps 2 and 3, the data centre: the flow's throughput and latency with many policies next
//! to a Cloud Foundry-style iptables layout, and how fast a policy change reaches the kernel.

use super::*;

// ---------------------------------------------------------------------------------------
// Helpers for the data centre: a tokio runtime inside the underlay namespace, and a poller
// of the destination cell's nftables.

/// A multi-thread tokio runtime whose threads all live in one namespace (they are spawned by
/// a thread that entered it). Futures given to [`NsRuntime::run`] run there, so every socket
/// they open belongs to that namespace.
pub struct NsRuntime {
    pub handle: tokio::runtime::Handle,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
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

pub enum PollCmd {
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
pub struct Poller {
    pub tx: Option<mpsc::Sender<PollCmd>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
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

pub const RR_PY: &str = r#"
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

pub struct Flow {
    pub gbps: Vec<f64>,
    pub rr_p50_us: f64,
    pub connect_p50_us: f64,
}

/// iperf3 runs, TCP request/response p50 and TCP connect p50 from `client` to `ip`.
pub fn measure(client: &Ns, ip: &str, py: &str, o: &Opts) -> Flow {
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

pub struct DatapathRow {
    pub layout: &'static str,
    pub n: usize,
    /// Install time: API answer → all elements in the destination's kernel (weft), or
    /// iptables-legacy-restore (CF).
    pub install_ms: f64,
    pub installed: usize,
    pub flow: Flow,
}

pub struct Propagation {
    pub state_policies: usize,
    pub watchers_ok: usize,
    pub create_ms: Vec<f64>,
    pub delete_ms: Vec<f64>,
    pub missed: usize,
}

pub fn cf_restore(n: usize, tag: u16, ip: &str) -> String {
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

pub fn bench_dc(o: &Opts) -> (Vec<DatapathRow>, Propagation, String) {
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
    // Once the flow passes (bounded wait), the flow's numbers for this layout and size.
    let mut record = |tag: &str, layout: &'static str, n, install_ms, installed, wait| {
        wait_until(&format!("flow allowed ({tag})"), wait, || {
            client.ns.sh(&probe).status.success()
        });
        eprintln!("[{tag}] n={n}: {installed} installed in {install_ms:.1} ms");
        let flow = measure(&client.ns, &server.ip, &py, o);
        eprintln!(
            "[{tag}] n={n}: {:?} Gbit/s, rr {} us, connect {} us",
            flow.gbps, flow.rr_p50_us, flow.connect_p50_us
        );
        rows.push(DatapathRow {
            layout,
            n,
            install_ms,
            installed,
            flow,
        });
    };
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
        record(
            "cf",
            "CF iptables-legacy chain",
            n,
            install_ms,
            installed,
            dc::LIVE,
        );
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
        record(
            "weft",
            "weft nft verdict map",
            n,
            install_ms,
            installed,
            Duration::from_secs(60),
        );
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
