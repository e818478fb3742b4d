//! Shared by the policy tests in the simulated data centre (`policy_*.rs`, see `dc.rs`):
//! a data centre with enforcement on, the socket helpers (python3 in namespaces), policy
//! writes through the `weft` CLI, and "connects" / "denied" probes with bounded waits.
//!
//! Include it next to `common` and `dc`:
//!
//! ```ignore
//! mod common;
//! #[path = "common/dc/mod.rs"]
//! mod dc;
//! #[path = "common/policy.rs"]
//! mod policy;
//! use policy::*;
//! ```
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use crate::common::{ping_ok, write_py, Ns};
pub use crate::dc::{Container, Dc, DcOptions, Proc, LIVE, VXLAN_PORT};
use serde_json::Value;

/// The port the policies under test allow.
pub const PORT: u16 = 8080;
/// Another port AppA listens on (no policy names it).
pub const OTHER: u16 = 9090;
pub const UDP_PORT: u16 = 5353;
/// How long a probe that must be denied waits for an answer (seconds).
pub const DENY_WAIT: f64 = 1.5;

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
pub const POL_PY: &str = r#"

def tcp_try(host, port, timeout, msg):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(timeout)
    stage = ""
    try:
        c.connect((host, port))
        stage = "connected-"
        c.sendall(msg.encode())
        c.shutdown(socket.SHUT_WR)
        out = read_all(c)
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
pub const FORGE_PY: &str = r#"
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
pub fn lab(cells: usize, agent_args: &[&str]) -> Dc {
    lab_with(cells, "on", agent_args)
}

pub fn lab_with(cells: usize, policy: &str, agent_args: &[&str]) -> Dc {
    let dc = Dc::with(DcOptions {
        cells,
        agent_env: vec![("WEFT_POLICY".into(), policy.into())],
        agent_args: agent_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    write_py(&script(&dc, "pol.py"), POL_PY);
    std::fs::write(
        script(&dc, "forge.py"),
        FORGE_PY.replace("VXLAN_PORT", &VXLAN_PORT.to_string()),
    )
    .expect("write forge.py");
    dc
}

pub fn script(dc: &Dc, name: &str) -> PathBuf {
    dc.dir.path.join(name)
}

pub fn pol(dc: &Dc) -> String {
    format!("python3 {}", script(dc, "pol.py").display())
}

/// A python3 that has scapy: Debian's package lives in the system python, which need not be
/// the first python3 on PATH.
pub fn scapy_python() -> &'static str {
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

/// The tag the controller gave `app`.
pub fn app_tag(dc: &Dc, app: &str) -> u16 {
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
pub fn udp_server(dc: &Dc, ns: &Ns, port: u16, quiet: bool) -> Proc {
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
pub fn mac_of(ns: &Ns, dev: &str) -> String {
    let v: Value = serde_json::from_str(&ns.ok(&format!("ip -j link show {dev}"))).expect("json");
    v[0]["address"].as_str().expect("mac").to_string()
}

/// The MAC a container sends to (its permanent neighbour entry for the link-local gateway).
pub fn gateway_mac(c: &Container) -> String {
    let v: Value = serde_json::from_str(&c.ns.ok("ip -j neigh show dev eth0")).expect("neigh json");
    v.as_array()
        .and_then(|a| a.iter().find_map(|n| n["lladdr"].as_str()))
        .unwrap_or_else(|| panic!("{}: no neighbour on eth0: {v}", c.id))
        .to_string()
}

/// Runs the scapy script in `ns` with `args`.
pub fn forge(dc: &Dc, ns: &Ns, args: &str) {
    ns.ok(&format!(
        "{} {} {args}",
        scapy_python(),
        script(dc, "forge.py").display()
    ));
}

/// Agent logs (tails) and policy tables of every cell, for failure messages.
pub fn diag(dc: &Dc) -> String {
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
pub fn wait_known(dc: &Dc, cts: &[&Container]) {
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
pub fn known(dc: &Dc, c: &Container) -> bool {
    dc.cell_ns(c.cell)
        .ok("nft list set inet weft-policy containers")
        .contains(&format!("{} . \"", c.ip))
}

// ----- probes -----

/// What one probe got: `ok` with the answer, or the kind of failure.
#[derive(Debug, Clone)]
pub struct Try {
    pub kind: String,
    pub answer: String,
    /// Shown in failure messages (through `Debug`).
    #[allow(dead_code)]
    pub stderr: String,
}

impl Try {
    pub fn ok(&self) -> bool {
        self.kind == "ok"
    }
    /// No answer at all: what default deny (a drop) looks like to the client.
    pub fn dropped(&self) -> bool {
        self.kind == "timeout"
    }
}

pub fn run_try(ns: &Ns, cmd: &str) -> Try {
    let out = ns.sh(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (kind, answer) = stdout.split_once(' ').unwrap_or((stdout.as_str(), ""));
    Try {
        kind: kind.to_string(),
        answer: answer.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn tcp(pol: &str, from: &Ns, ip: &str, port: u16, timeout: f64) -> Try {
    run_try(
        from,
        &format!("{pol} tcp {ip} {port} {timeout} from-{}", from.name),
    )
}

pub fn udp(pol: &str, from: &Ns, ip: &str, port: u16, timeout: f64) -> Try {
    run_try(
        from,
        &format!("{pol} udp {ip} {port} {timeout} from-{}", from.name),
    )
}

pub fn what(from: &Container, to: &Container, port: u16) -> String {
    format!(
        "{} ({}, cell {}, {}) -> {} ({}, cell {}, {}):{port}",
        from.id, from.app, from.cell, from.ip, to.id, to.app, to.cell, to.ip
    )
}

/// Retries `f` (bounded by [`LIVE`]) until it returns true; the last try is returned.
pub fn eventually(mut f: impl FnMut() -> (bool, Try)) -> (bool, Try) {
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
pub fn connects(dc: &Dc, from: &Container, to: &Container, port: u16) {
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
pub fn denied(dc: &Dc, pairs: &[(&Container, &Container, u16)]) {
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
pub fn becomes_denied(dc: &Dc, from: &Container, to: &Container, port: u16) {
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

pub fn udp_connects(dc: &Dc, from: &Container, to: &Container, port: u16) {
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

pub fn udp_denied(dc: &Dc, from: &Container, to: &Container, port: u16) {
    let t = udp(&pol(dc), &from.ns, &to.ip, port, DENY_WAIT);
    assert!(
        t.dropped(),
        "UDP {} must be denied (no answer): {t:?}{}",
        what(from, to, port),
        diag(dc)
    );
}

pub fn ping_denied(dc: &Dc, from: &Container, to: &Container) {
    let (sent, got) = Dc::ping_count(&from.ns, &to.ip, 3, 0.2);
    assert!(
        sent == 3 && got == 0,
        "ping {} must be denied: {got}/{sent} answered{}",
        what(from, to, 0),
        diag(dc)
    );
}

pub fn ping_passes(dc: &Dc, from: &Container, to: &Container) {
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

/// `1-3,7,9-10` for [1,2,3,7,9,10].
pub fn ranges(ns: &[u64]) -> String {
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
pub fn udp_connects_quiet(dc: &Dc, from: &Container, to: &Container, at: &Proc) {
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
