//! Issue 5's tests: network policy in the simulated data centre (see `common/dc.rs`), with
//! enforcement on (`WEFT_POLICY=on`). Seed 000 steps 3 and 10: AppB's packets are marked with
//! app-b's tag on cell 1 (the VXLAN group-policy field carries it), and cell 2 delivers them
//! to AppA only if a policy allows app-b -> app-a on that protocol and port. Default deny,
//! one-way policies, replies through conntrack, no spoofing (container source addresses and
//! VXLAN from unleased underlay addresses), live add/remove, agent restarts, metrics and
//! `weft policy check`.
//!
//! Each scenario is its own `#[test]` with its own data centre, so they run in parallel.
//! "Denied" means the packets get no answer (default deny drops them) while a server is
//! listening on the destination port, so a refusal by the destination cannot pass for a
//! denial. Waits are bounded liveness waits, never speed assertions.
mod common;
#[path = "common/dc.rs"]
mod dc;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{ping_ok, Ns};
use dc::{
    metric, Container, Dc, DcOptions, Proc, INTERNET_IP, LIVE, METRICS, UNDERLAY, VXLAN_PORT,
};
use serde_json::Value;

/// The port the policies under test allow.
const PORT: u16 = 8080;
/// Another port AppA listens on (no policy names it).
const OTHER: u16 = 9090;
const UDP_PORT: u16 = 5353;
/// How long a probe that must be denied waits for an answer (seconds).
const DENY_WAIT: f64 = 1.5;

/// Socket helpers for policy checks (python3, run inside namespaces):
/// - `tcp HOST PORT TIMEOUT MSG`: one exchange with an echo server; prints `ok <answer>` or
///   the kind of failure (`timeout`: no answer to the SYN; `connected-timeout`; `refused`;
///   `error<errno>`); exit 0 only for ok;
/// - `probe HOST PORT TIMEOUT INTERVAL`: `tcp` exchanges until killed, one line each:
///   `<unix time> <kind> <seconds>`;
/// - `udp HOST PORT TIMEOUT MSG`: one datagram, then waits for the answer (`ok <answer>`);
/// - `udpecho PORT [quiet]`: prints `<peer> <data>` per datagram and answers it (not with
///   `quiet`);
/// - `udpflood HOST PORT SECS INTERVAL TAG`: datagrams `TAG <seq>`, each from a new socket
///   (a new flow that the policy checks), then prints `sent <n>`.
const POL_PY: &str = r#"
import socket, sys, time
mode = sys.argv[1]

def tcp_try(host, port, timeout, msg):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(timeout)
    stage = ""
    try:
        c.connect((host, port))
        stage = "connected-"
        c.sendall(msg.encode())
        c.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            out += b
        return "ok", out.decode(errors="replace")
    except (socket.timeout, TimeoutError):
        return stage + "timeout", ""
    except ConnectionRefusedError:
        return stage + "refused", ""
    except OSError as e:
        return "%serror%d" % (stage, e.errno or 0), ""
    finally:
        c.close()

if mode == "tcp":
    kind, out = tcp_try(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    print(kind, out, flush=True)
    sys.exit(0 if kind == "ok" else 1)
elif mode == "probe":
    host, port, timeout, interval = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    while True:
        t0, m0 = time.time(), time.monotonic()
        kind, _ = tcp_try(host, port, timeout, "probe")
        print("%.3f %s %.3f" % (t0, kind, time.monotonic() - m0), flush=True)
        time.sleep(interval)
elif mode == "udp":
    host, port, timeout, msg = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(msg.encode(), (host, port))
        data, _ = s.recvfrom(65536)
        print("ok " + data.decode(errors="replace"), flush=True)
        sys.exit(0)
    except (socket.timeout, TimeoutError):
        print("timeout", flush=True)
    except OSError as e:
        print("error%d" % (e.errno or 0), flush=True)
    sys.exit(1)
elif mode == "udpecho":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[2])))
    answer = len(sys.argv) < 4
    while True:
        data, a = s.recvfrom(65536)
        line = "%s %s" % (a[0], data.decode(errors="replace"))
        print(line, flush=True)
        if answer:
            s.sendto(line.encode(), a)
elif mode == "udpflood":
    host, port, secs, interval, tag = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
    n, start = 0, time.monotonic()
    while time.monotonic() - start < secs:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(("%s %d" % (tag, n)).encode(), (host, port))
        except OSError as e:
            print("send error", n, e, flush=True)
        s.close()
        n += 1
        time.sleep(interval)
    print("sent %d" % n, flush=True)
"#;

/// Crafted packets with scapy (Debian's python3-scapy), sent 3 times on IFACE with
/// `sendp` (link layer: nothing in the sender's kernel checks or rewrites them):
/// - `udp IFACE DST_MAC SRC DST SPORT DPORT PAYLOAD`;
/// - `vxlan IFACE DST_MAC OUTER_SRC OUTER_DST GPID INNER_DST_MAC INNER_SRC_MAC INNER_SRC
///   INNER_DST SPORT DPORT PAYLOAD`: VXLAN (VNI 1) with the group-policy extension (flags
///   G and I, group policy id GPID) around an Ethernet/IPv4/UDP packet.
const FORGE_PY: &str = r#"
import sys
from scapy.all import Ether, IP, UDP, Raw, sendp, conf
from scapy.layers.vxlan import VXLAN
conf.verb = 0
a = sys.argv[1:]
if a[0] == "udp":
    iface, dmac, src, dst, sport, dport, payload = a[1:8]
    pkt = (Ether(dst=dmac) / IP(src=src, dst=dst)
           / UDP(sport=int(sport), dport=int(dport)) / Raw(payload.encode()))
elif a[0] == "vxlan":
    iface, dmac, osrc, odst, gpid, idmac, ismac, isrc, idst, sport, dport, payload = a[1:13]
    pkt = (Ether(dst=dmac) / IP(src=osrc, dst=odst) / UDP(sport=int(sport), dport=VXLAN_PORT)
           / VXLAN(flags=0x88, gpid=int(gpid), vni=1)
           / Ether(dst=idmac, src=ismac) / IP(src=isrc, dst=idst)
           / UDP(sport=int(sport), dport=int(dport)) / Raw(payload.encode()))
else:
    sys.exit("unknown mode " + a[0])
sendp(pkt, iface=iface, count=3, inter=0.05)
print(pkt.summary(), flush=True)
"#;

// ----- set-up -----

/// A data centre with `cells` cells, enforcement on, and the helper scripts in its directory.
fn lab(cells: usize, agent_args: &[&str]) -> Dc {
    lab_with(cells, "on", agent_args)
}

fn lab_with(cells: usize, policy: &str, agent_args: &[&str]) -> Dc {
    let dc = Dc::with(DcOptions {
        cells,
        agent_env: vec![("WEFT_POLICY".into(), policy.into())],
        agent_args: agent_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    std::fs::write(script(&dc, "pol.py"), POL_PY).expect("write pol.py");
    std::fs::write(
        script(&dc, "forge.py"),
        FORGE_PY.replace("VXLAN_PORT", &VXLAN_PORT.to_string()),
    )
    .expect("write forge.py");
    dc
}

fn script(dc: &Dc, name: &str) -> PathBuf {
    dc.dir.path.join(name)
}

fn pol(dc: &Dc) -> String {
    format!("python3 {}", script(dc, "pol.py").display())
}

/// A python3 that has scapy: Debian's package lives in the system python, which need not be
/// the first python3 on PATH.
fn scapy_python() -> &'static str {
    static PY: OnceLock<&'static str> = OnceLock::new();
    PY.get_or_init(|| {
        for py in ["/usr/bin/python3", "python3"] {
            let ok = std::process::Command::new(py)
                .args(["-c", "import scapy.layers.vxlan"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return py;
            }
        }
        panic!("no python3 with scapy (Debian: apt-get install python3-scapy)")
    })
}

/// Runs `weft policy ARGS` against the controller; panics unless it succeeds.
fn policy(dc: &Dc, args: &str) -> String {
    let out = dc.weft(&format!("policy {args}"));
    assert!(
        out.status.success(),
        "weft policy {args}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tag the controller gave `app`.
fn app_tag(dc: &Dc, app: &str) -> u16 {
    let out = dc.weft("apps --json");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "weft apps --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let list = v["apps"].as_array().or(v.as_array()).cloned();
    list.unwrap_or_default()
        .iter()
        .find(|a| a["id"] == app)
        .and_then(|a| a["tag"].as_u64())
        .and_then(|t| u16::try_from(t).ok())
        .unwrap_or_else(|| panic!("no tag for {app}: {v}"))
}

/// A UDP server on `port` in `ns` (answers unless `quiet`), listening when this returns.
fn udp_server(dc: &Dc, ns: &Ns, port: u16, quiet: bool) -> Proc {
    let py = script(dc, "pol.py").display().to_string();
    let port_s = port.to_string();
    let mut argv = vec!["python3", py.as_str(), "udpecho", port_s.as_str()];
    if quiet {
        argv.push("quiet");
    }
    let log = dc.dir.path.join(format!("{}-udp{port}.log", ns.name));
    let p = Proc::spawn(ns, &argv, &[], &log);
    let start = Instant::now();
    while !ns.ok("ss -lunH").contains(&format!(":{port} ")) {
        assert!(
            start.elapsed() < LIVE,
            "UDP server in {}: {}",
            ns.name,
            p.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// The MAC address of `dev` in `ns`.
fn mac_of(ns: &Ns, dev: &str) -> String {
    let v: Value = serde_json::from_str(&ns.ok(&format!("ip -j link show {dev}"))).expect("json");
    v[0]["address"].as_str().expect("mac").to_string()
}

/// The MAC a container sends to (its permanent neighbour entry for the link-local gateway).
fn gateway_mac(c: &Container) -> String {
    let v: Value = serde_json::from_str(&c.ns.ok("ip -j neigh show dev eth0")).expect("neigh json");
    v.as_array()
        .and_then(|a| a.iter().find_map(|n| n["lladdr"].as_str()))
        .unwrap_or_else(|| panic!("{}: no neighbour on eth0: {v}", c.id))
        .to_string()
}

/// Runs the scapy script in `ns` with `args`.
fn forge(dc: &Dc, ns: &Ns, args: &str) {
    ns.ok(&format!(
        "{} {} {args}",
        scapy_python(),
        script(dc, "forge.py").display()
    ));
}

/// The packet counter of the rule commented `comment` in `chain` of the policy table.
fn rule_counter(ns: &Ns, chain: &str, comment: &str) -> u64 {
    let listing = ns.ok(&format!("nft list chain inet weft-policy {chain}"));
    listing
        .lines()
        .find(|l| l.contains(comment))
        .and_then(|l| l.split_once("counter packets "))
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {comment:?} in {chain}: {listing}"))
}

/// Agent logs (tails) and policy tables of every cell, for failure messages.
fn diag(dc: &Dc) -> String {
    let mut s = String::new();
    for n in dc.cell_numbers() {
        let log = dc.cell(n).agent_log();
        let tail: String = log
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        let table = dc.cell_ns(n).sh("nft list table inet weft-policy").stdout;
        s += &format!(
            "\n--- cell {n} agent (tail):\n{tail}\n--- cell {n} policy table:\n{}",
            String::from_utf8_lossy(&table)
        );
    }
    s
}

/// Waits (bounded) until each container's cell knows it: its address is in the cell's
/// `containers` set. Until then its packets carry no tag (denied at every destination) and
/// nothing from other apps reaches it (see
/// [`a_new_container_is_enforced_without_waiting_for_a_resync`] and attack_dataplane.rs).
fn wait_known(dc: &Dc, cts: &[&Container]) {
    for c in cts {
        let start = Instant::now();
        while !known(dc, c) {
            assert!(
                start.elapsed() < LIVE,
                "cell {} never took {} ({}) into its policy table{}",
                c.cell,
                c.id,
                c.ip,
                diag(dc)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if start.elapsed() > Duration::from_millis(500) {
            eprintln!(
                "cell {} took {} into its policy table only after {:?}",
                c.cell,
                c.id,
                start.elapsed()
            );
        }
    }
}

/// Is the container in its cell's `containers` set?
fn known(dc: &Dc, c: &Container) -> bool {
    dc.cell_ns(c.cell)
        .ok("nft list set inet weft-policy containers")
        .contains(&format!("{} . \"", c.ip))
}

// ----- probes -----

/// What one probe got: `ok` with the answer, or the kind of failure.
#[derive(Debug, Clone)]
struct Try {
    kind: String,
    answer: String,
    /// Shown in failure messages (through `Debug`).
    #[allow(dead_code)]
    stderr: String,
}

impl Try {
    fn ok(&self) -> bool {
        self.kind == "ok"
    }
    /// No answer at all: what default deny (a drop) looks like to the client.
    fn dropped(&self) -> bool {
        self.kind == "timeout"
    }
}

fn run_try(ns: &Ns, cmd: &str) -> Try {
    let out = ns.sh(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (kind, answer) = stdout.split_once(' ').unwrap_or((stdout.as_str(), ""));
    Try {
        kind: kind.to_string(),
        answer: answer.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn tcp(pol: &str, from: &Ns, ip: &str, port: u16, timeout: f64) -> Try {
    run_try(
        from,
        &format!("{pol} tcp {ip} {port} {timeout} from-{}", from.name),
    )
}

fn udp(pol: &str, from: &Ns, ip: &str, port: u16, timeout: f64) -> Try {
    run_try(
        from,
        &format!("{pol} udp {ip} {port} {timeout} from-{}", from.name),
    )
}

fn what(from: &Container, to: &Container, port: u16) -> String {
    format!(
        "{} ({}, cell {}, {}) -> {} ({}, cell {}, {}):{port}",
        from.id, from.app, from.cell, from.ip, to.id, to.app, to.cell, to.ip
    )
}

/// Retries `f` (bounded by [`LIVE`]) until it returns true; the last try is returned.
fn eventually(mut f: impl FnMut() -> (bool, Try)) -> (bool, Try) {
    let start = Instant::now();
    loop {
        let (done, t) = f();
        if done || start.elapsed() > LIVE {
            return (done, t);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `from` reaches `to`'s TCP echo server on `port` (waiting, bounded, for a policy to arrive)
/// and the server sees `from`'s own overlay address.
fn connects(dc: &Dc, from: &Container, to: &Container, port: u16) {
    let p = pol(dc);
    let (ok, t) = eventually(|| {
        let t = tcp(&p, &from.ns, &to.ip, port, 2.0);
        (t.ok(), t)
    });
    assert!(
        ok,
        "{} must connect; last try: {t:?}{}",
        what(from, to, port),
        diag(dc)
    );
    assert_eq!(
        t.answer.split_whitespace().next(),
        Some(from.ip.as_str()),
        "{}: the server sees the sender's own address",
        what(from, to, port)
    );
}

/// Every pair is denied now (probes run in parallel): each TCP exchange gets no answer.
fn denied(dc: &Dc, pairs: &[(&Container, &Container, u16)]) {
    let p = pol(dc);
    let results: Vec<(String, Try)> = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|(from, to, port)| {
                let p = p.as_str();
                s.spawn(move || {
                    (
                        what(from, to, *port),
                        tcp(p, &from.ns, &to.ip, *port, DENY_WAIT),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    let wrong: Vec<&(String, Try)> = results.iter().filter(|(_, t)| !t.dropped()).collect();
    assert!(
        wrong.is_empty(),
        "must be denied (no answer), but: {wrong:#?}{}",
        diag(dc)
    );
}

/// Waits (bounded) until new connections `from` -> `to` are denied, then checks twice more.
fn becomes_denied(dc: &Dc, from: &Container, to: &Container, port: u16) {
    let p = pol(dc);
    let (ok, t) = eventually(|| {
        let t = tcp(&p, &from.ns, &to.ip, port, DENY_WAIT);
        (t.dropped(), t)
    });
    assert!(
        ok,
        "{} must become denied; last try: {t:?}{}",
        what(from, to, port),
        diag(dc)
    );
    denied(dc, &[(from, to, port), (from, to, port)]);
}

fn udp_connects(dc: &Dc, from: &Container, to: &Container, port: u16) {
    let p = pol(dc);
    let (ok, t) = eventually(|| {
        let t = udp(&p, &from.ns, &to.ip, port, 1.0);
        (t.ok(), t)
    });
    assert!(
        ok,
        "UDP {} must pass; last try: {t:?}{}",
        what(from, to, port),
        diag(dc)
    );
    assert_eq!(
        t.answer.split_whitespace().next(),
        Some(from.ip.as_str()),
        "UDP {}: the server sees the sender's own address",
        what(from, to, port)
    );
}

fn udp_denied(dc: &Dc, from: &Container, to: &Container, port: u16) {
    let t = udp(&pol(dc), &from.ns, &to.ip, port, DENY_WAIT);
    assert!(
        t.dropped(),
        "UDP {} must be denied (no answer): {t:?}{}",
        what(from, to, port),
        diag(dc)
    );
}

fn ping_denied(dc: &Dc, from: &Container, to: &Container) {
    let (sent, got) = Dc::ping_count(&from.ns, &to.ip, 3, 0.2);
    assert!(
        sent == 3 && got == 0,
        "ping {} must be denied: {got}/{sent} answered{}",
        what(from, to, 0),
        diag(dc)
    );
}

fn ping_passes(dc: &Dc, from: &Container, to: &Container) {
    let start = Instant::now();
    while !ping_ok(&from.ns, &to.ip) {
        assert!(
            start.elapsed() < LIVE,
            "ping {} must pass{}",
            what(from, to, 0),
            diag(dc)
        );
    }
}

// ----- 1. the matrix -----

/// Seed 000's matrix with one policy app-b -> app-a tcp/8080: AppB (cell 1) reaches AppA
/// (cell 2) on 8080 only; not on 9090; AppA does not reach AppB (one-way); AppC, on either
/// cell, does not reach AppA. UDP and ICMP need their own policies. Same-cell pairs follow
/// the same rules: AppC on cell 2 reaches AppA on cell 2 only after a policy app-c -> app-a.
#[test]
fn matrix_one_way_per_protocol_and_port_across_and_within_cells() {
    let dc = lab(2, &[]);
    let b = dc.add_container(1, "mx-b", "app-b");
    let c1 = dc.add_container(1, "mx-c1", "app-c");
    let a = dc.add_container(2, "mx-a", "app-a");
    let c2 = dc.add_container(2, "mx-c2", "app-c");
    wait_known(&dc, &[&b, &c1, &a, &c2]);
    let _servers = [
        dc.echo_server(&a.ns, PORT),
        dc.echo_server(&a.ns, OTHER),
        dc.echo_server(&b.ns, PORT),
        dc.echo_server(&c2.ns, PORT),
        udp_server(&dc, &a.ns, UDP_PORT, false),
    ];

    // Default deny, across cells and within a cell.
    denied(&dc, &[(&b, &a, PORT), (&c2, &a, PORT), (&a, &c2, PORT)]);

    let out = policy(&dc, "add app-b app-a --port 8080");
    assert!(out.contains("created"), "{out}");
    connects(&dc, &b, &a, PORT);
    denied(
        &dc,
        &[
            (&b, &a, OTHER),  // another port
            (&a, &b, PORT),   // the policy is one-way
            (&c1, &a, PORT),  // an unrelated app, across cells
            (&c2, &a, PORT),  // an unrelated app, same cell
            (&c2, &a, OTHER), // same cell, another port
        ],
    );
    // A TCP policy allows neither UDP nor ICMP.
    udp_denied(&dc, &b, &a, UDP_PORT);
    ping_denied(&dc, &b, &a);

    policy(
        &dc,
        &format!("add app-b app-a --protocol udp --port {UDP_PORT}"),
    );
    udp_connects(&dc, &b, &a, UDP_PORT);
    udp_denied(&dc, &c2, &a, UDP_PORT);
    ping_denied(&dc, &b, &a);

    policy(&dc, "add app-b app-a --protocol icmp");
    ping_passes(&dc, &b, &a);
    ping_denied(&dc, &a, &b);
    ping_denied(&dc, &c2, &a);

    // Same cell: a policy app-c -> app-a opens AppC (cell 2) -> AppA (cell 2) on 8080, and
    // AppC on cell 1 too (policies name apps, not cells); nothing else.
    policy(&dc, "add app-c app-a --port 8080");
    connects(&dc, &c2, &a, PORT);
    connects(&dc, &c1, &a, PORT);
    connects(&dc, &b, &a, PORT);
    denied(
        &dc,
        &[
            (&c2, &a, OTHER),
            (&a, &c2, PORT),
            (&a, &b, PORT),
            (&b, &c2, PORT),
        ],
    );
}

/// A container is under policy as soon as its cell's agent learns of it, which the agent
/// does by watching weft-cni's records (inotify), not at the next resync (here 10 minutes
/// away). The agent's watcher thread being slow (a loaded host) is made deterministic by
/// stopping the agent (SIGSTOP) while weft-cni attaches the cell's first container, then
/// letting it go on (SIGCONT): the queued inotify events are all there, so the agent must take
/// the container into its policy table within the liveness bound, and default deny must hold.
#[test]
fn a_new_container_is_enforced_without_waiting_for_a_resync() {
    let dc = Dc::with(DcOptions {
        cells: 2,
        resync: 600,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        ..Default::default()
    });
    std::fs::write(script(&dc, "pol.py"), POL_PY).expect("write pol.py");
    let b = dc.add_container(1, "nc-b", "app-b");
    wait_known(&dc, &[&b]);
    // The agent of cell 2: the only `weft agent` process in its namespace.
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &dc.cell_ns(2).name])
        .output()
        .expect("ip netns pids");
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    let agent: Vec<&str> = pids
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("agent"))
        })
        .collect();
    assert_eq!(agent.len(), 1, "one agent in cell 2: {pids}");
    let agent = agent[0].to_string();
    let sig = |s: &str| {
        let st = std::process::Command::new("kill")
            .args([s, agent.as_str()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {s} {agent}");
    };
    sig("-STOP");
    let a = dc.add_container(2, "nc-a", "app-a");
    std::thread::sleep(Duration::from_millis(300));
    sig("-CONT");
    let start = Instant::now();
    while !known(&dc, &a) && start.elapsed() < LIVE {
        std::thread::sleep(Duration::from_millis(100));
    }
    let in_table = known(&dc, &a);
    let _srv = dc.echo_server(&a.ns, PORT);
    let t = tcp(&pol(&dc), &b.ns, &a.ip, PORT, DENY_WAIT);
    assert!(
        in_table && t.dropped(),
        "cell 2's first container: in the policy table after {:?}: {in_table}; \
         app-b -> app-a without a policy: {t:?} (must be dropped){}",
        start.elapsed(),
        diag(&dc)
    );
}

// ----- 2. live add and remove -----

/// Adding the policy opens the path for new connections and removing it closes it again,
/// twice over, without restarting any agent: on the destination cell (AppA, cell 2) and for a
/// destination on the source's own cell (AppA2, cell 1).
#[test]
fn adding_opens_and_removing_closes_new_connections_without_restarts() {
    let mut dc = lab(2, &[]);
    let b = dc.add_container(1, "ar-b", "app-b");
    let a = dc.add_container(2, "ar-a", "app-a");
    let a2 = dc.add_container(1, "ar-a2", "app-a");
    wait_known(&dc, &[&b, &a, &a2]);
    let _servers = [dc.echo_server(&a.ns, PORT), dc.echo_server(&a2.ns, PORT)];
    let pids = (dc.cell(1).agent_log(), dc.cell(2).agent_log());

    denied(&dc, &[(&b, &a, PORT), (&b, &a2, PORT)]);
    for round in 1..=2 {
        let t = Instant::now();
        policy(&dc, "add app-b app-a --port 8080");
        connects(&dc, &b, &a, PORT);
        connects(&dc, &b, &a2, PORT);
        eprintln!("round {round}: open after {:?}", t.elapsed());
        let t = Instant::now();
        let out = policy(&dc, "rm app-b app-a --port 8080");
        assert!(out.contains("removed"), "{out}");
        becomes_denied(&dc, &b, &a, PORT);
        becomes_denied(&dc, &b, &a2, PORT);
        eprintln!("round {round}: closed after {:?}", t.elapsed());
    }
    // Nothing was restarted: both agents are the first and only process of their cell.
    for n in [1, 2] {
        assert!(dc.agent_alive(n), "agent {n} still running");
        let log = dc.cell(n).agent_log();
        assert_eq!(
            log.matches("agent starting").count(),
            1,
            "agent {n} started once: {log}"
        );
    }
    assert!(!pids.0.is_empty() && !pids.1.is_empty());
}

// ----- 3. outside world and own host -----

/// With enforcement on and no policy at all: containers reach the "internet" (and get the
/// answers back), and each cell's own namespace (the host) reaches its containers, by TCP
/// and ping. Control: container to container is denied in the same data centre.
#[test]
fn outside_world_and_own_host_are_not_subject_to_c2c_policy() {
    let mut dc = lab(2, &[]);
    dc.add_internet();
    let b = dc.add_container(1, "ow-b", "app-b");
    let a = dc.add_container(2, "ow-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    let _servers = [
        dc.echo_server(&a.ns, PORT),
        dc.echo_server(&b.ns, PORT),
        dc.echo_server(dc.internet_ns(), PORT),
    ];
    denied(&dc, &[(&b, &a, PORT), (&a, &b, PORT)]);

    let p = pol(&dc);
    for c in [&a, &b] {
        let (ok, t) = eventually(|| {
            let t = tcp(&p, &c.ns, INTERNET_IP, PORT, 2.0);
            (t.ok(), t)
        });
        assert!(ok, "{} -> internet: {t:?}{}", c.id, diag(&dc));
        assert!(
            t.answer.starts_with(UNDERLAY),
            "{}: the internet sees the cell's underlay address: {t:?}",
            c.id
        );
        assert!(ping_ok(&c.ns, INTERNET_IP), "{} pings the internet", c.id);

        let host = dc.cell_ns(c.cell);
        let (ok, t) = eventually(|| {
            let t = tcp(&p, host, &c.ip, PORT, 2.0);
            (t.ok(), t)
        });
        assert!(ok, "cell {} (host) -> {}: {t:?}{}", c.cell, c.id, diag(&dc));
        assert!(ping_ok(host, &c.ip), "cell {} pings {}", c.cell, c.id);
    }
    // Still no c2c path: the above did not open anything.
    denied(&dc, &[(&b, &a, PORT), (&a, &b, PORT)]);
}

// ----- 4. anti-spoofing -----

/// Mallory (cell 1) sends with forged source addresses: AppB's (which would carry app-b's
/// tag, and a policy allows app-b -> app-a udp/5353), one outside the overlay (which would
/// skip c2c policy altogether), and an unassigned overlay address towards the internet.
/// None arrives, and the "spoofed source" counter of cell 1 rose. The same packets with
/// the true source, sent after them on the same paths, arrive.
#[test]
fn forged_source_addresses_are_dropped_at_the_veth() {
    let mut dc = lab(2, &[]);
    dc.add_internet();
    let b = dc.add_container(1, "sp-b", "app-b");
    let m = dc.add_container(1, "sp-m", "app-m");
    let a = dc.add_container(2, "sp-a", "app-a");
    wait_known(&dc, &[&b, &m, &a]);
    policy(
        &dc,
        &format!("add app-b app-a --protocol udp --port {UDP_PORT}"),
    );
    let at_a = udp_server(&dc, &a.ns, UDP_PORT, true);
    let at_inet = udp_server(&dc, dc.internet_ns(), UDP_PORT, true);
    // The policy is in place (bounded wait): AppB's datagrams reach AppA.
    let _answers = udp_server(&dc, &b.ns, UDP_PORT + 1, true);
    let p = pol(&dc);
    let start = Instant::now();
    while !at_a.output().contains("warm") {
        b.ns.ok(&format!(
            "{p} udpflood {} {UDP_PORT} 0.1 0.05 warm >/dev/null",
            a.ip
        ));
        assert!(start.elapsed() < LIVE, "policy never arrived{}", diag(&dc));
    }

    let (gw_b, gw_m) = (gateway_mac(&b), gateway_mac(&m));
    let spare = format!("{}.200", m.ip.rsplit_once('.').map_or("", |x| x.0));
    assert_ne!(spare, m.ip);
    let before = rule_counter(dc.cell_ns(1), "prerouting", "spoofed source");
    // Forged, from Mallory's veth.
    forge(
        &dc,
        &m.ns,
        &format!(
            "udp eth0 {gw_m} {} {} 40001 {UDP_PORT} forged-as-b",
            b.ip, a.ip
        ),
    );
    forge(
        &dc,
        &m.ns,
        &format!(
            "udp eth0 {gw_m} 192.0.2.77 {} 40002 {UDP_PORT} forged-outside",
            a.ip
        ),
    );
    forge(
        &dc,
        &m.ns,
        &format!("udp eth0 {gw_m} {spare} {INTERNET_IP} 40003 {UDP_PORT} forged-random"),
    );
    // True sources, same tool, same paths.
    forge(
        &dc,
        &b.ns,
        &format!("udp eth0 {gw_b} {} {} 40004 {UDP_PORT} true-b", b.ip, a.ip),
    );
    forge(
        &dc,
        &m.ns,
        &format!(
            "udp eth0 {gw_m} {} {INTERNET_IP} 40005 {UDP_PORT} true-m",
            m.ip
        ),
    );
    let start = Instant::now();
    while !(at_a.output().contains("true-b") && at_inet.output().contains("true-m")) {
        assert!(
            start.elapsed() < LIVE,
            "packets with the true source did not arrive: at AppA: {} / at the internet: {}{}",
            at_a.output(),
            at_inet.output(),
            diag(&dc)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (got_a, got_inet) = (at_a.output(), at_inet.output());
    assert!(
        got_a.contains(&format!("{} true-b", b.ip)),
        "AppA sees AppB's address: {got_a}"
    );
    assert!(
        !got_a.contains("forged") && !got_inet.contains("forged"),
        "forged packets arrived: at AppA: {got_a} / at the internet: {got_inet}"
    );
    let after = rule_counter(dc.cell_ns(1), "prerouting", "spoofed source");
    assert!(
        after >= before + 9,
        "the spoofed-source counter counts the 9 forged packets: {before} -> {after}{}",
        diag(&dc)
    );
}

// ----- 5. VXLAN from an unleased underlay address -----

/// A VXLAN packet with app-b's tag and AppB's inner source, to AppA on the allowed UDP port,
/// from 198.18.0.77 (on the underlay bridge, no lease): AppA does not get it and cell 2's
/// "vxlan from an address without a lease" counter rose. Positive control: the same packet
/// from cell 1's namespace with cell 1's (leased) underlay address is delivered.
#[test]
fn vxlan_from_an_underlay_address_without_a_lease_is_dropped() {
    let dc = lab(2, &[]);
    let b = dc.add_container(1, "vx-b", "app-b");
    let a = dc.add_container(2, "vx-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    policy(
        &dc,
        &format!("add app-b app-a --protocol udp --port {UDP_PORT}"),
    );
    let at_a = udp_server(&dc, &a.ns, UDP_PORT, true);
    let p = pol(&dc);
    let start = Instant::now();
    while !at_a.output().contains("warm") {
        b.ns.ok(&format!(
            "{p} udpflood {} {UDP_PORT} 0.1 0.05 warm >/dev/null",
            a.ip
        ));
        assert!(start.elapsed() < LIVE, "policy never arrived{}", diag(&dc));
    }

    // An intruder on the underlay bridge with an address that holds no lease.
    let intruder = Ns::new("vxi");
    let rogue = format!("{UNDERLAY}.77");
    dc.underlay_ns().ok(&format!(
        "ip link add vxi0 type veth peer name eth0 netns {} && ip link set vxi0 master br0 up",
        intruder.name
    ));
    intruder.ok(&format!(
        "ip link set lo up && ip addr add {rogue}/24 dev eth0 && ip link set eth0 up"
    ));
    let leases = dc.leases().expect("leases").to_string();
    assert!(!leases.contains(&rogue), "{rogue} holds no lease: {leases}");

    let tag_b = app_tag(&dc, "app-b");
    let cell2_mac = mac_of(dc.cell_ns(2), "eth0");
    let vtep2 = dc.cell(2).remote().expect("cell 2 VTEP");
    let vtep1 = dc.cell(1).remote().expect("cell 1 VTEP");
    let packet = |osrc: &str, sport: u16, payload: &str| {
        format!(
            "vxlan eth0 {cell2_mac} {osrc} {} {tag_b} {} {} {} {} {sport} {UDP_PORT} {payload}",
            vtep2.underlay, vtep2.mac, vtep1.mac, b.ip, a.ip
        )
    };
    let before = rule_counter(
        dc.cell_ns(2),
        "input",
        "vxlan from an address without a lease",
    );
    forge(&dc, &intruder, &packet(&rogue, 41001, "vx-unleased"));
    // Positive control: the same packet from a leased cell's address is delivered.
    forge(
        &dc,
        dc.cell_ns(1),
        &packet(&vtep1.underlay, 41002, "vx-leased"),
    );
    let start = Instant::now();
    while !at_a.output().contains("vx-leased") {
        assert!(
            start.elapsed() < LIVE,
            "the crafted VXLAN packet from the leased cell 1 was not delivered: {}{}",
            at_a.output(),
            diag(&dc)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let got = at_a.output();
    assert!(
        got.contains(&format!("{} vx-leased", b.ip)),
        "AppA sees AppB's address: {got}"
    );
    assert!(
        !got.contains("vx-unleased"),
        "VXLAN from {rogue} (no lease) was delivered: {got}"
    );
    let after = rule_counter(
        dc.cell_ns(2),
        "input",
        "vxlan from an address without a lease",
    );
    assert!(
        after >= before + 3,
        "the unleased-VXLAN counter counts the 3 packets: {before} -> {after}{}",
        diag(&dc)
    );
}

// ----- 6. agent restarts -----

/// Lines `<unix time> <kind> <seconds>` of a `probe`: (kind, line) of each.
fn probe_results(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let kind = l.split_whitespace().nth(1)?;
            Some((kind.to_string(), l.to_string()))
        })
        .collect()
}

/// Distinct sequence numbers received per flood tag, from a `udpecho quiet` log.
fn flood_received(log: &str) -> BTreeMap<String, BTreeSet<u64>> {
    let mut m: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for l in log.lines() {
        let mut w = l.split_whitespace().skip(1);
        if let (Some(tag), Some(seq)) = (w.next(), w.next().and_then(|s| s.parse().ok())) {
            m.entry(tag.to_string()).or_default().insert(seq);
        }
    }
    m
}

fn flood_sent(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.strip_prefix("sent "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("flood did not finish: {log}"))
}

/// What [`agent_restarts`] saw of the allowed cross-cell datagrams: sent, received.
struct RestartOutcome {
    cross_sent: u64,
    cross_got: BTreeSet<u64>,
    logs: String,
}

/// Policies app-b -> app-a (tcp/8080, tcp/9000, udp/5353); the agents of both cells are
/// killed (SIGKILL) and stopped (SIGTERM) and restarted, six times in all, while:
/// - an established TCP stream AppB (cell 1) -> AppA (cell 2) runs;
/// - new allowed TCP connections are opened all the time, AppB (cell 1) and AppB2 (cell 2)
///   to AppA;
/// - denied pairs are probed all the time, AppC (cell 1) and AppC2 (cell 2) to AppA;
/// - every 10 ms a datagram from a new socket (a new flow, checked by the policy) goes to AppA
///   from AppB2 (same cell, allowed), AppB (cell 1, allowed), AppC and AppC2 (denied).
///
/// Asserts what must hold: the stream completes with every byte; every new allowed TCP
/// connection connects; no denied TCP connection ever does; no denied datagram arrives; every
/// allowed datagram within cell 2 arrives; afterwards the same as before.
fn agent_restarts() -> RestartOutcome {
    let mut dc = lab(2, &[]);
    let b = dc.add_container(1, "rs-b", "app-b");
    let c = dc.add_container(1, "rs-c", "app-c");
    let a = dc.add_container(2, "rs-a", "app-a");
    let b2 = dc.add_container(2, "rs-b2", "app-b");
    let c2 = dc.add_container(2, "rs-c2", "app-c");
    wait_known(&dc, &[&b, &c, &a, &b2, &c2]);
    policy(&dc, "add app-b app-a --port 8080");
    policy(&dc, "add app-b app-a --port 9000");
    policy(
        &dc,
        &format!("add app-b app-a --protocol udp --port {UDP_PORT}"),
    );
    let _echo = dc.echo_server(&a.ns, PORT);
    let floods_in = udp_server(&dc, &a.ns, UDP_PORT, true);
    let sock = script(&dc, "sock.py").display().to_string();
    let sink = Proc::spawn(
        &a.ns,
        &["python3", &sock, "sink", "9000"],
        &[],
        &dc.dir.path.join("sink.log"),
    );
    let start = Instant::now();
    while !a.ns.ok("ss -ltnH").contains(":9000 ") {
        assert!(start.elapsed() < LIVE, "sink: {}", sink.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    connects(&dc, &b, &a, PORT);
    connects(&dc, &b2, &a, PORT);
    udp_connects_quiet(&dc, &b2, &a, &floods_in);
    udp_connects_quiet(&dc, &b, &a, &floods_in);
    denied(&dc, &[(&c, &a, PORT), (&c2, &a, PORT)]);
    let warm = floods_in.output().lines().count();

    const SECS: u64 = 16;
    let polp = script(&dc, "pol.py").display().to_string();
    let bg = |ns: &Ns, name: &str, args: &[&str]| {
        let mut argv = vec!["python3", polp.as_str()];
        argv.extend_from_slice(args);
        Proc::spawn(ns, &argv, &[], &dc.dir.path.join(format!("{name}.log")))
    };
    let stream = Proc::spawn(
        &b.ns,
        &[
            "python3",
            &sock,
            "stream",
            &a.ip,
            "9000",
            &SECS.to_string(),
            "100000",
        ],
        &[],
        &dc.dir.path.join("stream.log"),
    );
    let port_s = PORT.to_string();
    let udp_s = UDP_PORT.to_string();
    let secs_s = SECS.to_string();
    // Allowed probes wait 3 s (a SYN lost to something else is retransmitted after 1 s);
    // denied ones 1 s (they must never be answered at all).
    let probes = [
        (
            bg(&b.ns, "p-b", &["probe", &a.ip, &port_s, "3", "0.2"]),
            true,
        ),
        (
            bg(&b2.ns, "p-b2", &["probe", &a.ip, &port_s, "3", "0.2"]),
            true,
        ),
        (
            bg(&c.ns, "p-c", &["probe", &a.ip, &port_s, "1", "0.1"]),
            false,
        ),
        (
            bg(&c2.ns, "p-c2", &["probe", &a.ip, &port_s, "1", "0.1"]),
            false,
        ),
    ];
    let flood =
        |ns: &Ns, tag: &str| bg(ns, tag, &["udpflood", &a.ip, &udp_s, &secs_s, "0.01", tag]);
    let floods = [
        ("fb2", flood(&b2.ns, "fb2")),
        ("fb", flood(&b.ns, "fb")),
        ("fc", flood(&c.ns, "fc")),
        ("fc2", flood(&c2.ns, "fc2")),
    ];

    let t0 = Instant::now();
    let pause = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    pause(2000);
    dc.kill_agent(2); // the destination cell: a crash
    pause(1000);
    dc.start_agent(2);
    pause(1500);
    let st = dc.stop_agent(1); // the source cell (marking): a clean stop
    assert!(
        st.is_some_and(|s| s.success()),
        "agent 1 stops on SIGTERM: {st:?}"
    );
    pause(1000);
    dc.start_agent(1);
    pause(1500);
    dc.kill_agent(1);
    dc.start_agent(1);
    pause(1000);
    let st = dc.stop_agent(2);
    assert!(
        st.is_some_and(|s| s.success()),
        "agent 2 stops on SIGTERM: {st:?}"
    );
    dc.start_agent(2);
    pause(1000);
    dc.kill_agent(2);
    dc.start_agent(2);
    eprintln!("restarts done after {:?}", t0.elapsed());

    let stream_st = stream.wait(Duration::from_secs(SECS + 60));
    let mut sent = BTreeMap::new();
    for (tag, f) in floods {
        let path = f.log.clone();
        f.wait(Duration::from_secs(30));
        sent.insert(
            tag,
            flood_sent(&std::fs::read_to_string(path).unwrap_or_default()),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let probe_logs: Vec<(bool, String)> = probes
        .into_iter()
        .map(|(p, allowed)| (allowed, p.output()))
        .collect();
    let got = flood_received(
        &floods_in
            .output()
            .lines()
            .skip(warm)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let logs = diag(&dc);

    let stream_log = std::fs::read_to_string(dc.dir.path.join("stream.log")).unwrap_or_default();
    eprintln!("stream: {stream_log}sink: {}", sink.output());
    assert!(
        stream_st.is_some_and(|s| s.success()),
        "the established TCP stream completes with every byte ({stream_st:?}): {stream_log} / {}{logs}",
        sink.output()
    );
    for (allowed, log) in &probe_logs {
        let results = probe_results(log);
        assert!(results.len() >= 10, "probe ran: {log}");
        let wrong: Vec<&String> = results
            .iter()
            .filter(|(k, _)| {
                if *allowed {
                    k != "ok"
                } else {
                    k == "ok" || k.starts_with("connected")
                }
            })
            .map(|(_, l)| l)
            .collect();
        assert!(
            wrong.is_empty(),
            "{} probe: {wrong:?} (of {})\n{log}{logs}",
            if *allowed { "allowed" } else { "denied" },
            results.len()
        );
    }
    let count = |tag: &str| got.get(tag).map_or(0, |s| s.len() as u64);
    eprintln!(
        "datagrams sent {sent:?}, received fb2={} fb={} fc={} fc2={}",
        count("fb2"),
        count("fb"),
        count("fc"),
        count("fc2")
    );
    assert_eq!(count("fc"), 0, "denied datagrams from AppC arrived{logs}");
    assert_eq!(count("fc2"), 0, "denied datagrams from AppC2 arrived{logs}");
    assert_eq!(
        count("fb2"),
        sent["fb2"],
        "every allowed datagram (a new flow each) from AppB2 (same cell) arrives{logs}"
    );
    // Afterwards, as before.
    connects(&dc, &b, &a, PORT);
    connects(&dc, &b2, &a, PORT);
    denied(&dc, &[(&c, &a, PORT), (&c2, &a, PORT)]);
    RestartOutcome {
        cross_sent: sent["fb"],
        cross_got: got.get("fb").cloned().unwrap_or_default(),
        logs,
    }
}

/// Agent restarts keep enforcing: see [`agent_restarts`].
#[test]
fn agent_restarts_keep_enforcing() {
    agent_restarts();
}

/// Agent restarts drop no allowed cross-cell datagram either (each is a new flow, so each is
/// marked on cell 1 and checked on cell 2 while the agents restart).
#[test]
fn agent_restarts_drop_no_allowed_cross_cell_datagram() {
    let o = agent_restarts();
    let lost: Vec<u64> = (0..o.cross_sent)
        .filter(|n| !o.cross_got.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} allowed datagrams AppB (cell 1) -> AppA (cell 2) lost: {}{}",
        lost.len(),
        o.cross_sent,
        ranges(&lost),
        o.logs
    );
}

/// `1-3,7,9-10` for [1,2,3,7,9,10].
fn ranges(ns: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ns.len() {
        let mut j = i;
        while j + 1 < ns.len() && ns[j + 1] == ns[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ns[i].to_string()
        } else {
            format!("{}-{}", ns[i], ns[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Sends datagrams `from` -> `to` (the quiet server `at`) until one arrives (bounded).
fn udp_connects_quiet(dc: &Dc, from: &Container, to: &Container, at: &Proc) {
    let p = pol(dc);
    let mark = format!("warm-{}", from.id);
    let start = Instant::now();
    while !at.output().contains(&mark) {
        from.ns.ok(&format!(
            "{p} udpflood {} {UDP_PORT} 0.1 0.05 {mark} >/dev/null",
            to.ip
        ));
        assert!(
            start.elapsed() < LIVE,
            "UDP {} never arrived{}",
            what(from, to, UDP_PORT),
            diag(dc)
        );
    }
}

// ----- 7. visibility -----

/// After allowed (AppB -> AppA:8080) and denied (AppC -> AppA, AppA -> AppB) traffic, the
/// agents' `/metrics` count allowed packets for app-b -> app-a on cell 2 and denied packets
/// per app pair on the destination cells; `weft policy check` answers allowed (exit 0, naming
/// the policy) and denied (exit 1).
#[test]
fn metrics_count_allowed_and_denied_and_policy_check_answers() {
    let dc = lab(2, &["--metrics-listen", METRICS]);
    let b = dc.add_container(1, "me-b", "app-b");
    let c = dc.add_container(1, "me-c", "app-c");
    let a = dc.add_container(2, "me-a", "app-a");
    wait_known(&dc, &[&b, &c, &a]);
    let _servers = [dc.echo_server(&a.ns, PORT), dc.echo_server(&b.ns, PORT)];
    policy(&dc, "add app-b app-a --port 8080");
    connects(&dc, &b, &a, PORT);
    for _ in 0..3 {
        assert!(tcp(&pol(&dc), &b.ns, &a.ip, PORT, 2.0).ok());
    }
    denied(&dc, &[(&c, &a, PORT), (&a, &b, PORT)]);

    let m2 = dc.agent_metrics(2);
    let m1 = dc.agent_metrics(1);
    let allowed = metric(
        &m2,
        "weft_policy_allowed_packets_total",
        &[
            ("src_app", "app-b"),
            ("dst_app", "app-a"),
            ("dst_ip", &a.ip),
        ],
    );
    assert!(
        allowed.is_some_and(|v| v >= 4.0),
        "cell 2 counts the 4+ allowed connections app-b -> app-a: {allowed:?}\n{m2}"
    );
    let denied_ca = metric(
        &m2,
        "weft_policy_denied_packets_total",
        &[("src_app", "app-c"), ("dst_app", "app-a")],
    );
    assert!(
        denied_ca.is_some_and(|v| v > 0.0),
        "cell 2 counts denied app-c -> app-a: {denied_ca:?}\n{m2}"
    );
    let denied_ab = metric(
        &m1,
        "weft_policy_denied_packets_total",
        &[("src_app", "app-a"), ("dst_app", "app-b")],
    );
    assert!(
        denied_ab.is_some_and(|v| v > 0.0),
        "cell 1 counts denied app-a -> app-b: {denied_ab:?}\n{m1}"
    );
    assert!(
        metric(
            &m2,
            "weft_policy_denied_packets_total",
            &[("src_app", "app-b")]
        )
        .is_none(),
        "nothing of app-b was denied on cell 2\n{m2}"
    );

    let check = |args: &str| {
        let out = dc.weft(&format!("policy check {args}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check("app-b app-a 8080");
    assert_eq!(code, Some(0), "app-b -> app-a 8080 is allowed: {out}");
    assert!(out.starts_with("allowed") && out.contains("8080"), "{out}");
    for args in ["app-a app-b 8080", "app-b app-a 9090", "app-c app-a 8080"] {
        let (code, out) = check(args);
        assert_eq!(code, Some(1), "{args} is denied: {out}");
        assert!(out.starts_with("denied"), "{args}: {out}");
    }
}

// ----- 8. enforcement off -----

/// `WEFT_POLICY=off` (labs): no policy at all, and every pair connects, in both directions,
/// on any port, by TCP, UDP and ping, within and across cells.
#[test]
fn enforcement_off_lets_every_pair_connect() {
    let dc = lab_with(2, "off", &[]);
    let b = dc.add_container(1, "of-b", "app-b");
    let c1 = dc.add_container(1, "of-c1", "app-c");
    let a = dc.add_container(2, "of-a", "app-a");
    let c2 = dc.add_container(2, "of-c2", "app-c");
    let cts = [&b, &c1, &a, &c2];
    let mut servers = Vec::new();
    for c in cts {
        servers.push(dc.echo_server(&c.ns, PORT));
        servers.push(udp_server(&dc, &c.ns, UDP_PORT, false));
    }
    servers.push(dc.echo_server(&a.ns, OTHER));
    for from in cts {
        for to in cts {
            if from.id != to.id {
                connects(&dc, from, to, PORT);
                udp_connects(&dc, from, to, UDP_PORT);
                ping_passes(&dc, from, to);
            }
        }
    }
    connects(&dc, &b, &a, OTHER);
    let table = dc.cell_ns(2).ok("nft list table inet weft-policy");
    assert!(
        table.contains("enforce=false"),
        "the policy table is there, not enforcing: {table}"
    );
}
