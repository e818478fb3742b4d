//! Internal DNS speed (issue 18 item 2): answer latency at 169.254.0.2 from a container
//! (p50/p99 of `--queries` sequential UDP queries per name kind, next to a UDP echo on the
//! same host as the baseline: the path without any DNS work), and the time from a container's
//! CNI ADD (on the other cell) to its address being in `APP.apps.internal`'s answer, and
//! from its DEL to its address being gone.
//!
//! ```text
//! sudo cargo bench -p weft --bench dns [-- --queries 2000 --adds 10]
//! ```
//!
//! Everything happens in network namespaces the bench makes (tests/common/dc/mod.rs) and removes
//! on exit.

#[allow(clippy::too_many_arguments)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/dc/mod.rs"]
mod dc;

use std::time::{Duration, Instant};

use dc::{Dc, DcOptions, Proc};

/// `q HOST PORT NAME N`: N sequential A queries for NAME (new id each), prints one RTT in
/// microseconds per line (a lost answer: "lost"); `echo PORT`: a UDP echo server;
/// `wait HOST NAME IP TIMEOUT`: queries NAME every 2 ms until IP is (or, with `-IP`, is no
/// longer) in the answer; prints the seconds it took.
const DNS_PY: &str = r#"
import socket, struct, sys, time, random
def q(name, qid):
    h = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    b = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    return h + b + struct.pack(">HH", 1, 1)
def ips(resp):
    an = struct.unpack(">H", resp[6:8])[0]
    i = 12
    while resp[i] != 0:
        i += resp[i] + 1
    i += 5
    out = []
    for _ in range(an):
        if resp[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while resp[i] != 0:
                i += resp[i] + 1
            i += 1
        t, c, ttl, l = struct.unpack(">HHIH", resp[i:i+10])
        i += 10
        if t == 1 and l == 4:
            out.append(socket.inet_ntoa(resp[i:i+4]))
        i += l
    return out
m = sys.argv[1]
if m == "q":
    host, port, name, n = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    for k in range(n):
        qid = random.randint(0, 65535)
        t0 = time.perf_counter()
        s.sendto(q(name, qid), (host, port))
        try:
            while True:
                r, _ = s.recvfrom(4096)
                if struct.unpack(">H", r[:2])[0] == qid or port != 53:
                    break
            print("%.1f" % ((time.perf_counter() - t0) * 1e6))
        except socket.timeout:
            print("lost")
elif m == "echo":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[2])))
    while True:
        d, a = s.recvfrom(4096)
        s.sendto(d, a)
elif m == "wait":
    host, name, ip, limit = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    gone = ip.startswith("-")
    ip = ip.lstrip("-")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    t0 = time.perf_counter()
    lost = 0
    while time.perf_counter() - t0 < limit:
        qid = random.randint(0, 65535)
        s.sendto(q(name, qid), (host, 53))
        try:
            r, _ = s.recvfrom(4096)
            if (ip in ips(r)) != gone:
                print("%.4f %d" % (time.perf_counter() - t0, lost))
                sys.exit(0)
        except socket.timeout:
            lost += 1
        time.sleep(0.002)
    print("timeout")
elif m == "count":
    host, name, want, limit = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    print("ready", flush=True)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        qid = random.randint(0, 65535)
        s.sendto(q(name, qid), (host, 53))
        try:
            r, _ = s.recvfrom(4096)
            if len(ips(r)) == want:
                print("at %.6f" % time.time(), flush=True)
                sys.exit(0)
        except socket.timeout:
            pass
        time.sleep(0.001)
    print("timeout", flush=True)
"#;

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("dns bench: needs root (network namespaces); skipped");
        return;
    }
    let queries = common::bench_arg("--queries", 2000usize);
    let adds = common::bench_arg("--adds", 10usize);
    let resolv = std::env::temp_dir().join(format!("weft-dns-bench-{}", std::process::id()));
    std::fs::write(&resolv, "").expect("resolv.conf");
    let dc = Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        agent_args: vec![
            "--dns".into(),
            "--dns-resolv-conf".into(),
            resolv.display().to_string(),
        ],
        ..Default::default()
    });
    let py = dc.dir.path.join("dnsb.py");
    std::fs::write(&py, DNS_PY).expect("dnsb.py");
    let py = py.display().to_string();
    let client = dc.add_container(1, "b-client", "client");
    let web = dc.add_container(2, "b-web-0", "web");
    let wait = |name: &str, ip: &str| {
        let out = client
            .ns
            .ok(&format!("python3 {py} wait 169.254.0.2 {name} {ip} 20"));
        let mut w = out.split_whitespace();
        assert!(
            w.next().and_then(|t| t.parse::<f64>().ok()).is_some(),
            "{name} {ip}: {out}"
        );
        eprintln!("{name} {ip}: {out}");
    };
    wait("web.apps.internal", &web.ip);

    // Latency.
    let echo_log = dc.dir.path.join("echo.log");
    let _echo = Proc::spawn(
        &dc.cell(1).ns,
        &["python3", &py, "echo", "9053"],
        &[],
        &echo_log,
    );
    std::thread::sleep(Duration::from_millis(300));
    let cell_ip = dc.cell(1).underlay_ip();
    let cases = [
        (
            "UDP echo on the host (baseline)",
            cell_ip.as_str(),
            9053u16,
            "web.apps.internal",
        ),
        (
            "web.apps.internal (A, 1 instance)",
            "169.254.0.2",
            53,
            "web.apps.internal",
        ),
        (
            "0.web.apps.internal (A)",
            "169.254.0.2",
            53,
            "0.web.apps.internal",
        ),
        (
            "nope.apps.internal (NXDOMAIN)",
            "169.254.0.2",
            53,
            "nope.apps.internal",
        ),
        (
            "example.com (REFUSED, no resolver)",
            "169.254.0.2",
            53,
            "example.com",
        ),
    ];
    let mut lat = Vec::new();
    for (what, host, port, name) in cases {
        let out = client
            .ns
            .ok(&format!("python3 {py} q {host} {port} {name} {queries}"));
        let v: Vec<f64> = out.lines().filter_map(|l| l.parse().ok()).collect();
        let lost = out.lines().filter(|l| *l == "lost").count();
        lat.push((what, pct(&v, 0.5), pct(&v, 0.99), lost));
    }

    // ADD -> resolvable, DEL -> gone: a waiter in the client polls (every ms) until the
    // answer has the wanted number of addresses; it is running before the CNI call starts,
    // and the time is taken from the CNI call's return to the waiter's first such answer.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let waiter = |want: usize, tag: &str| {
        let log = dc.dir.path.join(format!("wait-{tag}.log"));
        let p = Proc::spawn(
            &client.ns,
            &[
                "python3",
                &py,
                "count",
                "169.254.0.2",
                "fresh.apps.internal",
                &want.to_string(),
                "20",
            ],
            &[],
            &log,
        );
        let started = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "waiter never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        (p, log)
    };
    let done_at = |log: &std::path::Path| -> f64 {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(t) = text
                .lines()
                .find_map(|l| l.strip_prefix("at ").and_then(|t| t.parse::<f64>().ok()))
            {
                return t;
            }
            assert!(!text.contains("timeout"), "never resolvable");
            assert!(started.elapsed() < Duration::from_secs(30), "waiter silent");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut add_s = Vec::new();
    let mut del_s = Vec::new();
    for i in 0..adds {
        let (_w, log) = waiter(1, &format!("add{i}"));
        let called = now();
        let c = dc.add_container(2, &format!("b-new-{i}"), "fresh");
        let returned = now();
        let at = done_at(&log);
        add_s.push((at - called, at - returned));
        let (_w, log) = waiter(0, &format!("del{i}"));
        let called = now();
        dc.del_container(c);
        let returned = now();
        let at = done_at(&log);
        del_s.push((at - called, at - returned));
    }
    let _ = std::fs::remove_file(&resolv);

    println!();
    println!("## weft dns bench: container on cell 1 asks its agent at 169.254.0.2");
    println!();
    println!("| query | p50 µs | p99 µs | lost of {queries} |");
    println!("|---|---:|---:|---:|");
    for (what, p50, p99, lost) in &lat {
        println!("| {what} | {p50:.0} | {p99:.0} | {lost} |");
    }
    println!();
    println!("| placement change ({adds} each, container on cell 2), ms | from the CNI call p50 | max | from its return p50 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (what, v) in [
        ("ADD -> in APP.apps.internal on cell 1", &add_s),
        ("DEL -> gone from the answer on cell 1", &del_s),
    ] {
        let call: Vec<f64> = v.iter().map(|x| x.0 * 1000.0).collect();
        let ret: Vec<f64> = v.iter().map(|x| x.1 * 1000.0).collect();
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} | {:.1} |",
            pct(&call, 0.5),
            pct(&call, 1.0),
            pct(&ret, 0.5),
            pct(&ret, 1.0)
        );
    }
    println!();
    println!("(negative from the return: the name resolved before the plugin process had exited and the bench seen it)");
}
