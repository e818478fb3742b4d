//! Issue 14's attacks on the data plane, in the simulated data centre (see `common/dc.rs`),
//! with policy enforcement on. Each test attacks as someone who controls a container (or, where
//! it says so, a host that holds a lease) would, and checks that the attack is dropped and
//! counted by a named rule an operator can read:
//!
//! - a full deny-count set (`denied`) does not open default deny: a denied (app, destination)
//!   pair that was never tried before stays denied, an allowed one still connects;
//! - containers cannot forge VXLAN: not to another cell's underlay address (their cell used to
//!   masquerade it to its own leased address), not to their own cell's; they reach no cell's
//!   underlay address at all; a leased host can no longer claim inner sources outside its own
//!   lease (another cell's containers, the destination's own containers, the outside world);
//! - a container the agent does not know yet (started while the agent is down) is fenced: no
//!   other app reaches it, and it cannot forge VXLAN with a leased cell's source address;
//! - the fast path (BPF) does not deliver a forged packet that matches an established
//!   connection but comes from a host that does not hold the inner source's lease;
//! - a policy table someone deleted is written again at the agent's next resync;
//! - an agent killed with SIGKILL during a TCP stream: the stream keeps every byte and the
//!   restarted agent converges to the same kernel state, without duplicates.
//!
//! Forged packets are built with python3's standard library only (no scapy): VXLAN-GBP rides in
//! a plain UDP datagram (what a container's unprivileged socket can send), or in a raw IPv4
//! packet where the outer source address itself is forged. Each scenario has its own data
//! centre, so they run in parallel. Waits are bounded liveness waits, never speed assertions.
mod common;
#[path = "common/dc.rs"]
mod dc;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{wait_until, Ns};
use dc::{Container, Dc, DcOptions, Proc, LIVE, VXLAN_PORT};
use serde_json::Value;

const UDP_PORT: u16 = 5353;
const TCP_PORT: u16 = 8080;
/// How long a probe that must be denied waits for an answer (seconds).
const DENY_WAIT: f64 = 1.5;
/// The size of the policy table's `denied` set (see crates/weft-agent/src/policy.rs).
const DENIED_SIZE: usize = 65_536;

/// Packet tools (python3, standard library only), run inside namespaces:
/// - `vxlan DST GPID INNER_DST_MAC INNER_SRC_MAC INNER_SRC INNER_DST PROTO SPORT DPORT PAYLOAD
///   COUNT [OUTER_SRC]`: VXLAN with the group-policy extension (flags G and I, VNI 1, group
///   policy id GPID) around Ethernet/IPv4/PROTO (udp, or tcp with PSH+ACK) to DST port 4789:
///   from a plain UDP socket, or, with OUTER_SRC, as a raw IPv4 packet with that forged
///   source; prints `sent N`;
/// - `udp DST PORT PAYLOAD COUNT`: plain datagrams;
/// - `udprecv PORT`: prints `<peer> <payload>` per datagram;
/// - `tcp HOST PORT TIMEOUT`: one exchange with an echo server; prints `ok <answer>` or the
///   kind of failure (`timeout`, `refused`, `error<errno>`).
const ATTACK_PY: &str = r#"
import socket, struct, sys, time
VXLAN_PORT = int("VXLAN_PORT_VALUE")

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def ipv4(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload

def pseudo(src, dst, proto, n):
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, n)

def udp(src, dst, sport, dport, data):
    n = 8 + len(data)
    c = csum(pseudo(src, dst, 17, n) + struct.pack("!HHHH", sport, dport, n, 0) + data)
    return struct.pack("!HHHH", sport, dport, n, c or 0xffff) + data

def tcp(src, dst, sport, dport, data):
    h = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0)
    c = csum(pseudo(src, dst, 6, len(h) + len(data)) + h + data)
    return h[:16] + struct.pack("!H", c) + h[18:] + data

def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))

mode = sys.argv[1]
if mode == "vxlan":
    dst, gpid, idmac, ismac, isrc, idst, proto, sport, dport, payload, count = sys.argv[2:13]
    outer_src = sys.argv[13] if len(sys.argv) > 13 else None
    data = payload.encode()
    l4 = (udp(isrc, idst, int(sport), int(dport), data) if proto == "udp"
          else tcp(isrc, idst, int(sport), int(dport), data))
    inner = mac(idmac) + mac(ismac) + b"\x08\x00" + ipv4(isrc, idst, 17 if proto == "udp" else 6, l4)
    vx = struct.pack("!BBHI", 0x88, 0, int(gpid), 1 << 8) + inner
    n = int(count)
    if outer_src:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        pkt = ipv4(outer_src, dst, 17, udp(outer_src, dst, 40000, VXLAN_PORT, vx))
        for _ in range(n):
            s.sendto(pkt, (dst, 0))
            time.sleep(0.02)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(n):
            s.sendto(vx, (dst, VXLAN_PORT))
            time.sleep(0.02)
    print("sent %d" % n, flush=True)
elif mode == "udp":
    dst, port, payload, count = sys.argv[2:6]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(int(count)):
        s.sendto(payload.encode(), (dst, int(port)))
        time.sleep(0.02)
    print("sent", flush=True)
elif mode == "udprecv":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[2])))
    while True:
        data, a = s.recvfrom(65536)
        print("%s %s" % (a[0], data.decode(errors="replace")), flush=True)
elif mode == "tcp":
    host, port, timeout = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(timeout)
    try:
        c.connect((host, port))
        c.sendall(b"probe")
        c.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            out += b
        print("ok " + out.decode(errors="replace"), flush=True)
    except (socket.timeout, TimeoutError):
        print("timeout", flush=True)
    except ConnectionRefusedError:
        print("refused", flush=True)
    except OSError as e:
        print("error%d" % (e.errno or 0), flush=True)
"#;

// ----- set-up and helpers -----

fn lab(cells: usize, fastpath: &str, agent_args: &[&str]) -> Dc {
    let dc = Dc::with(DcOptions {
        cells,
        agent_env: vec![
            ("WEFT_POLICY".into(), "on".into()),
            ("WEFT_FASTPATH".into(), fastpath.into()),
        ],
        agent_args: agent_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    std::fs::write(
        attack_py(&dc),
        ATTACK_PY.replace("VXLAN_PORT_VALUE", &VXLAN_PORT.to_string()),
    )
    .expect("write attack.py");
    dc
}

fn attack_py(dc: &Dc) -> PathBuf {
    dc.dir.path.join("attack.py")
}

/// Runs the packet tool in `ns`; panics unless it succeeds.
fn attack(dc: &Dc, ns: &Ns, args: &str) -> String {
    ns.ok(&format!("python3 {} {args}", attack_py(dc).display()))
}

/// Runs `weft policy ARGS`; panics unless it succeeds.
fn policy(dc: &Dc, args: &str) {
    let out = dc.weft(&format!("policy {args}"));
    assert!(
        out.status.success(),
        "weft policy {args}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tag the controller gave `app`.
fn app_tag(dc: &Dc, app: &str) -> u16 {
    let out = dc.weft("apps --json");
    let v: Value = serde_json::from_slice(&out.stdout).expect("weft apps --json");
    let list = v["apps"].as_array().or(v.as_array()).cloned();
    list.unwrap_or_default()
        .iter()
        .find(|a| a["id"] == app)
        .and_then(|a| a["tag"].as_u64())
        .and_then(|t| u16::try_from(t).ok())
        .unwrap_or_else(|| panic!("no tag for {app}: {v}"))
}

/// Agent log tails and policy tables of every cell, for failure messages.
fn diag(dc: &Dc) -> String {
    let mut s = String::new();
    for n in dc.cell_numbers() {
        let log = dc.cell(n).agent_log();
        let tail: Vec<&str> = log.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let table = dc
            .cell_ns(n)
            .sh("nft -t list table inet weft-policy")
            .stdout;
        s += &format!(
            "\n--- cell {n} agent (tail):\n{}\n--- cell {n} policy table (terse):\n{}",
            tail.join("\n"),
            String::from_utf8_lossy(&table)
        );
    }
    s
}

/// The packet counter of the rule commented `comment` in `chain` of cell `n`'s policy table
/// (None when there is no such rule).
fn rule_counter(dc: &Dc, n: usize, chain: &str, comment: &str) -> Option<u64> {
    let listing = dc
        .cell_ns(n)
        .ok(&format!("nft list chain inet weft-policy {chain}"));
    listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .and_then(|l| l.split_once("counter packets "))
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Waits (bounded) until each container's address is in its cell's `containers` set.
fn wait_known(dc: &Dc, cts: &[&Container]) {
    for c in cts {
        wait_until(
            &format!("cell {} to take {} into its policy table", c.cell, c.ip),
            LIVE,
            || known(dc, c),
        );
    }
}

fn known(dc: &Dc, c: &Container) -> bool {
    dc.cell_ns(c.cell)
        .ok("nft list set inet weft-policy containers")
        .contains(&format!("{} . \"", c.ip))
}

/// A UDP receiver on `port` in `ns`, listening when this returns.
fn udp_receiver(dc: &Dc, ns: &Ns, port: u16) -> Proc {
    let py = attack_py(dc).display().to_string();
    let port_s = port.to_string();
    let log = dc.dir.path.join(format!("{}-udp{port}.log", ns.name));
    let p = Proc::spawn(ns, &["python3", &py, "udprecv", &port_s], &[], &log);
    wait_until(&format!("UDP receiver in {}", ns.name), LIVE, || {
        ns.ok("ss -lunH").contains(&format!(":{port} "))
    });
    p
}

/// Sends `payload` from `from` to `to` (UDP, allowed) until `at` logs it (bounded): the
/// policy has arrived.
fn udp_arrives(dc: &Dc, from: &Ns, to: &str, payload: &str, at: &Proc) {
    let start = Instant::now();
    while !at.output().contains(payload) {
        attack(dc, from, &format!("udp {to} {UDP_PORT} {payload} 2"));
        assert!(
            start.elapsed() < LIVE,
            "{payload} never arrived at {to}{}",
            diag(dc)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One TCP exchange from `from` to the echo server at `ip:port`: `ok`, `timeout`, ...
fn tcp_try(dc: &Dc, from: &Ns, ip: &str, port: u16, timeout: f64) -> String {
    let out = from.sh(&format!(
        "python3 {} tcp {ip} {port} {timeout}",
        attack_py(dc).display()
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One UDP datagram from `from` to `ip:port`, answered by an echo server? (`ok`/`timeout`)
fn udp_try(from: &Ns, ip: &str, port: u16) -> String {
    let out = from.sh(&format!(
        "timeout 5 python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.settimeout({DENY_WAIT}); s.sendto(b\"probe\", (\"{ip}\", {port}));\n\
         try:\n  s.recvfrom(100); print(\"ok\")\nexcept Exception: print(\"timeout\")'"
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A UDP echo server on `port` in `ns` (answers every datagram).
fn udp_echo(dc: &Dc, ns: &Ns, port: u16) -> Proc {
    let log = dc.dir.path.join(format!("{}-udpecho{port}.log", ns.name));
    let p = Proc::spawn(
        ns,
        &[
            "python3",
            "-c",
            &format!(
                "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.bind(('0.0.0.0', {port}))\nwhile True:\n  d, a = s.recvfrom(65536); s.sendto(d, a)"
            ),
        ],
        &[],
        &log,
    );
    wait_until(&format!("UDP echo in {}", ns.name), LIVE, || {
        ns.ok("ss -lunH").contains(&format!(":{port} "))
    });
    p
}

/// The agent process of cell `n` (the only `weft agent` in its namespace).
fn agent_pid(dc: &Dc, n: usize) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &dc.cell_ns(n).name])
        .output()
        .expect("ip netns pids");
    let pids = String::from_utf8_lossy(&out.stdout).into_owned();
    let agent: Vec<&str> = pids
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("agent"))
        })
        .collect();
    assert_eq!(agent.len(), 1, "one agent in cell {n}: {pids}");
    agent[0].to_string()
}

/// A lease for `host` with underlay address `underlay`, taken at the controller as an agent
/// would (no cell behind it), once every cell lists the address in its `cells` set. Returns
/// an address of its subnet.
fn ghost_lease(dc: &Dc, host: &str, underlay: &str) -> String {
    let out = dc.underlay_ns().ok(&format!(
        "curl -sf --max-time 5 --cacert {} -H 'Authorization: Bearer {}' -X POST \
         -H 'Content-Type: application/json' \
         -d '{{\"host\":\"{host}\",\"underlay_ip\":\"{underlay}\"}}' {}/v1/leases/acquire",
        dc.pki().ca().display(),
        dc::TOKEN,
        dc.controller_url()
    ));
    let lease: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let subnet = lease["subnet"].as_str().expect("subnet").to_string();
    for n in dc.cell_numbers() {
        wait_until(&format!("cell {n} to know {underlay}"), LIVE, || {
            dc.cell_ns(n)
                .ok("nft list set inet weft-policy cells")
                .contains(underlay)
        });
    }
    let base = subnet.split('/').next().unwrap_or_default();
    let (net, _) = base.rsplit_once('.').expect("IPv4 subnet");
    format!("{net}.5")
}

fn signal(pid: &str, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig} {pid}");
}

// ----- 1. a full deny-count set -----

/// Fills cell 2's `denied` set to capacity (as a flood of forged or denied packets would:
/// every new (tag, destination) pair takes an element), then tries (app, destination) pairs
/// that were never tried before: TCP, UDP and ICMP from AppB and AppC (cell 1) to AppA (cell
/// 2). Every one stays denied and the "default deny" rule counts them; a policy still opens
/// its pair.
#[test]
fn full_denied_set_does_not_open_default_deny() {
    let dc = lab(2, "auto", &[]);
    let b = dc.add_container(1, "fs-b", "app-b");
    let c = dc.add_container(1, "fs-c", "app-c");
    let a = dc.add_container(2, "fs-a", "app-a");
    wait_known(&dc, &[&b, &c, &a]);
    let _echo = dc.echo_server(&a.ns, TCP_PORT);
    let _uecho = udp_echo(&dc, &a.ns, UDP_PORT);
    let cell2 = dc.cell_ns(2);

    // Fill the set: chunks of decreasing size, until not even one element fits.
    let started = Instant::now();
    let file = dc.dir.path.join("fill.nft");
    let mut next = 0usize;
    let mut chunk = 8192usize;
    while chunk > 0 {
        let els: Vec<String> = (next..next + chunk)
            .map(|i| {
                format!(
                    "0x{:08x} . 10.254.{}.{}",
                    0xbeef_0000u32 + (i >> 16) as u32,
                    (i >> 8) & 0xff,
                    i & 0xff
                )
            })
            .collect();
        std::fs::write(
            &file,
            format!(
                "add element inet weft-policy denied {{ {} }}\n",
                els.join(", ")
            ),
        )
        .expect("write fill.nft");
        if cell2
            .sh(&format!("nft -f {}", file.display()))
            .status
            .success()
        {
            next += chunk;
        } else {
            chunk /= 8;
        }
        assert!(next <= DENIED_SIZE, "the set takes more than its size");
    }
    let full = cell2.sh("nft add element inet weft-policy denied '{ 0x0000beef . 10.253.0.1 }'");
    assert!(!full.status.success(), "the denied set is full");
    eprintln!(
        "filled cell 2's denied set with {next} elements in {:?}",
        started.elapsed()
    );
    let deny0 = rule_counter(&dc, 2, "forward", "default deny");

    // Pairs never tried before, all at once.
    let results: Vec<(String, String)> = std::thread::scope(|s| {
        let t = [
            s.spawn(|| {
                (
                    "app-b -> app-a tcp 8080".to_string(),
                    tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, DENY_WAIT),
                )
            }),
            s.spawn(|| {
                (
                    "app-c -> app-a tcp 8080".to_string(),
                    tcp_try(&dc, &c.ns, &a.ip, TCP_PORT, DENY_WAIT),
                )
            }),
            s.spawn(|| {
                (
                    "app-b -> app-a udp 5353".to_string(),
                    udp_try(&b.ns, &a.ip, UDP_PORT),
                )
            }),
            s.spawn(|| {
                let (_, got) = Dc::ping_count(&c.ns, &a.ip, 3, 0.2);
                (
                    "app-c -> app-a icmp".to_string(),
                    if got > 0 { "ok" } else { "timeout" }.to_string(),
                )
            }),
        ];
        t.into_iter().map(|h| h.join().expect("probe")).collect()
    });
    let connected: Vec<&(String, String)> =
        results.iter().filter(|(_, r)| r != "timeout").collect();
    eprintln!(
        "with the denied set full: {} of {} never-tried denied pairs connected: {connected:?}",
        connected.len(),
        results.len()
    );
    assert!(
        connected.is_empty(),
        "with the denied set full, never-tried denied pairs connected: {connected:?}{}",
        diag(&dc)
    );
    let deny1 = rule_counter(&dc, 2, "forward", "default deny");
    assert!(
        deny1.unwrap_or(0) >= deny0.unwrap_or(0) + 4,
        "the default deny rule counts the dropped packets: {deny0:?} -> {deny1:?}{}",
        diag(&dc)
    );

    // A policy still opens its pair while the set is full.
    policy(&dc, &format!("add app-b app-a --port {TCP_PORT}"));
    let mut last = String::new();
    let start = Instant::now();
    while !last.starts_with("ok") {
        assert!(
            start.elapsed() < LIVE,
            "app-b -> app-a with a policy: {last}{}",
            diag(&dc)
        );
        last = tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, 2.0);
    }
    assert_eq!(
        tcp_try(&dc, &c.ns, &a.ip, TCP_PORT, DENY_WAIT),
        "timeout",
        "app-c -> app-a stays denied"
    );
}

/// Someone deletes cell 2's policy table (an operator's `nft flush ruleset`, another tool):
/// everything is open, and the agent, whose bookkeeping says the table is in place, must
/// notice at its next resync (2 s here) and write it again: the denied pair is denied again.
#[test]
fn deleted_policy_table_is_written_again() {
    let dc = lab(2, "auto", &[]);
    let b = dc.add_container(1, "dt-b", "app-b");
    let a = dc.add_container(2, "dt-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    let _echo = dc.echo_server(&a.ns, TCP_PORT);
    assert_eq!(tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, DENY_WAIT), "timeout");
    dc.cell_ns(2).ok("nft delete table inet weft-policy");
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < LIVE {
        last = tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, DENY_WAIT);
        if last == "timeout" && known(&dc, &a) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "policy table deleted: app-b -> app-a denied again after {:?} ({last})",
        start.elapsed()
    );
    assert_eq!(
        last,
        "timeout",
        "app-b -> app-a stays open after the table was deleted{}",
        diag(&dc)
    );
}

// ----- 2. forged VXLAN -----

/// Mallory (app-m, cell 1) sends VXLAN-GBP from a plain UDP socket: with app-b's tag and
/// AppB's address to AppA through cell 2's underlay address (her cell used to masquerade it
/// to its leased address, so cell 2 decapsulated it), with an outside inner source (which
/// skipped policy), and through her own cell's underlay address; and a plain datagram to
/// cell 2's own address. Then cell 1's host itself (it holds a lease) claims inner sources
/// outside its lease: an address of another host's lease, a container of cell 2 itself, the
/// outside world. None arrives and the named counters rose; the control, cell 1 claiming a
/// source inside its own lease, arrives (that is what a leased host can still do: see the
/// README).
#[test]
fn forged_vxlan_is_dropped_and_counted() {
    let dc = lab(2, "auto", &[]);
    let m = dc.add_container(1, "fv-m", "app-m");
    let b = dc.add_container(1, "fv-b", "app-b");
    let a = dc.add_container(2, "fv-a", "app-a");
    let x2 = dc.add_container(2, "fv-x2", "app-b");
    wait_known(&dc, &[&m, &b, &a, &x2]);
    // Another host's lease (no cell behind it: only its addresses matter here).
    let other = ghost_lease(&dc, "fv-ghost", "198.18.0.98");
    policy(
        &dc,
        &format!("add app-b app-a --protocol udp --port {UDP_PORT}"),
    );
    let at_a = udp_receiver(&dc, &a.ns, UDP_PORT);
    let at_cell2 = udp_receiver(&dc, dc.cell_ns(2), 7777);
    udp_arrives(&dc, &b.ns, &a.ip, "warm-b", &at_a);

    let tag_b = app_tag(&dc, "app-b");
    let (r1, r2) = (
        dc.cell(1).remote().expect("cell 1"),
        dc.cell(2).remote().expect("cell 2"),
    );
    let vx = |dst: &str, isrc: &str, payload: &str| {
        format!(
            "vxlan {dst} {tag_b} {} {} {isrc} {} udp 41000 {UDP_PORT} {payload} 3",
            r2.mac, r1.mac, a.ip
        )
    };
    let before = |n: usize, chain: &str, comment: &str| rule_counter(&dc, n, chain, comment);
    let c_vx0 = before(1, "forward", "to a VXLAN port");
    let c_cells0 = before(1, "forward", "container to a cell's underlay address");
    let c_own0 = before(1, "input", "vxlan not from the underlay");
    let c_bind0 = before(2, "input", "vxlan: inner source outside the sender's lease");

    // From Mallory's container.
    attack(&dc, &m.ns, &vx(&r2.underlay, &b.ip, "m-gbp-cell2"));
    attack(&dc, &m.ns, &vx(&r2.underlay, "192.0.2.77", "m-outside"));
    attack(&dc, &m.ns, &vx(&r1.underlay, &b.ip, "m-gbp-own"));
    attack(&dc, &m.ns, &format!("udp {} 7777 m-host 3", r2.underlay));
    // From cell 1's host: inner sources outside its lease.
    let host1 = dc.cell_ns(1);
    attack(&dc, host1, &vx(&r2.underlay, &other, "h-other-lease"));
    attack(&dc, host1, &vx(&r2.underlay, &x2.ip, "h-local-source"));
    attack(&dc, host1, &vx(&r2.underlay, "192.0.2.78", "h-outside"));
    // Control: inside its own lease.
    attack(&dc, host1, &vx(&r2.underlay, &b.ip, "h-own-lease"));
    wait_until("the control packet", LIVE, || {
        at_a.output().contains("h-own-lease")
    });
    std::thread::sleep(Duration::from_millis(500));

    let (got_a, got_cell2) = (at_a.output(), at_cell2.output());
    let forged = [
        "m-gbp-cell2",
        "m-outside",
        "m-gbp-own",
        "h-other-lease",
        "h-local-source",
        "h-outside",
    ];
    let arrived: Vec<&str> = forged
        .iter()
        .copied()
        .filter(|f| got_a.contains(f))
        .chain(got_cell2.contains("m-host").then_some("m-host"))
        .collect();
    eprintln!(
        "forged packets that arrived: {arrived:?} (of {} kinds)",
        forged.len() + 1
    );
    assert!(
        arrived.is_empty(),
        "forged packets arrived: {arrived:?}\nat AppA: {got_a}\nat cell 2: {got_cell2}{}",
        diag(&dc)
    );
    let grew = |n: usize, chain: &str, comment: &str, from: Option<u64>, by: u64| {
        let now = rule_counter(&dc, n, chain, comment);
        assert!(
            now.unwrap_or(0) >= from.unwrap_or(0) + by,
            "cell {n} {chain} \"{comment}\": {from:?} -> {now:?}, expected +{by}{}",
            diag(&dc)
        );
    };
    grew(1, "forward", "to a VXLAN port", c_vx0, 6);
    grew(
        1,
        "forward",
        "container to a cell's underlay address",
        c_cells0,
        3,
    );
    grew(1, "input", "vxlan not from the underlay", c_own0, 3);
    grew(
        2,
        "input",
        "vxlan: inner source outside the sender's lease",
        c_bind0,
        9,
    );
}

// ----- 3. a container the agent does not know yet -----

/// Cell 1's agent is stopped (SIGSTOP) while a container N is attached there, so N's veth is
/// in none of the policy table's sets. AppB (cell 2) does not reach N (the forward chain used
/// to let everything through to an unknown veth); N, forging the outer source (cell 2's
/// underlay address) of VXLAN to its own cell with app-b's tag, does not reach AppA1 (cell 1),
/// nor does its VXLAN to cell 2's underlay address. After SIGCONT, the agent takes N in.
#[test]
fn unknown_container_is_fenced() {
    let dc = lab(2, "auto", &[]);
    let a1 = dc.add_container(1, "uc-a1", "app-a");
    let b2 = dc.add_container(2, "uc-b2", "app-b");
    wait_known(&dc, &[&a1, &b2]);
    policy(
        &dc,
        &format!("add app-b app-a --protocol udp --port {UDP_PORT}"),
    );
    let at_a1 = udp_receiver(&dc, &a1.ns, UDP_PORT);
    udp_arrives(&dc, &b2.ns, &a1.ip, "warm-b2", &at_a1);
    let tag_b = app_tag(&dc, "app-b");
    let (r1, r2) = (
        dc.cell(1).remote().expect("cell 1"),
        dc.cell(2).remote().expect("cell 2"),
    );

    let agent = agent_pid(&dc, 1);
    signal(&agent, "-STOP");
    let n = dc.add_container(1, "uc-n", "app-n");
    let _echo = dc.echo_server(&n.ns, TCP_PORT);
    assert!(!known(&dc, &n), "N is unknown while the agent is stopped");
    let c_own0 = rule_counter(&dc, 1, "input", "vxlan not from the underlay");

    let reach_n = tcp_try(&dc, &b2.ns, &n.ip, TCP_PORT, DENY_WAIT);
    // Outer source forged as cell 2's underlay address, to cell 1's own underlay address.
    attack(
        &dc,
        &n.ns,
        &format!(
            "vxlan {} {tag_b} {} {} {} {} udp 41000 {UDP_PORT} n-spoofed-own 3 {}",
            r1.underlay, r1.mac, r2.mac, b2.ip, a1.ip, r2.underlay
        ),
    );
    // Plain VXLAN to cell 2, whose decapsulated packet would come back to AppA1.
    attack(
        &dc,
        &n.ns,
        &format!(
            "vxlan {} {tag_b} {} {} {} {} udp 41001 {UDP_PORT} n-gbp-cell2 3",
            r2.underlay, r2.mac, r1.mac, n.ip, a1.ip
        ),
    );
    std::thread::sleep(Duration::from_millis(700));
    let got = at_a1.output();
    let c_own1 = rule_counter(&dc, 1, "input", "vxlan not from the underlay");
    signal(&agent, "-CONT");

    let mut wrong = Vec::new();
    if reach_n != "timeout" {
        wrong.push(format!("app-b -> unknown container N: {reach_n}"));
    }
    for f in ["n-spoofed-own", "n-gbp-cell2"] {
        if got.contains(f) {
            wrong.push(format!("{f} arrived at AppA1"));
        }
    }
    eprintln!("with the agent stopped: {wrong:?}");
    assert!(wrong.is_empty(), "{wrong:?}\nat AppA1: {got}{}", diag(&dc));
    assert!(
        c_own1.unwrap_or(0) >= c_own0.unwrap_or(0) + 3,
        "the spoofed VXLAN was counted: {c_own0:?} -> {c_own1:?}{}",
        diag(&dc)
    );
    wait_known(&dc, &[&n]);
    assert_eq!(
        tcp_try(&dc, &b2.ns, &n.ip, TCP_PORT, DENY_WAIT),
        "timeout",
        "app-b -> app-n stays denied once N is known"
    );
}

// ----- 4. the fast path -----

/// An established TCP connection AppB (cell 1) -> AppA (cell 2) runs on the fast path. A host
/// on the underlay that holds a lease, but not cell 1's, sends VXLAN packets that match the
/// connection (AppB's address and port, app-b's tag, PSH+ACK): the fast path on cell 2 used
/// to deliver them into AppA's namespace (it checked only that the outer source holds some
/// lease); now it leaves them to the kernel path, which drops and counts them.
#[test]
fn fast_path_does_not_deliver_forged_inner_sources() {
    let dc = lab(2, "on", &["--metrics-listen", "127.0.0.1:9109"]);
    let b = dc.add_container(1, "ff-b", "app-b");
    let a = dc.add_container(2, "ff-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    policy(&dc, "add app-b app-a --port 9000");
    // The other leased host: a namespace on the underlay with the address of its lease.
    let rogue = "198.18.0.97";
    ghost_lease(&dc, "ff-ghost", rogue);
    let intruder = Ns::new("ffi");
    dc.underlay_ns().ok(&format!(
        "ip link add ffi0 type veth peer name eth0 netns {} && ip link set ffi0 master br0 up",
        intruder.name
    ));
    intruder.ok(&format!(
        "ip link set lo up && ip addr add {rogue}/24 dev eth0 && ip link set eth0 up"
    ));
    let py = dc.py();
    let _sink = Proc::spawn(
        &a.ns,
        &["sh", "-c", &format!("exec {py} sink 9000")],
        &[],
        &dc.dir.path.join("sink.log"),
    );
    wait_until("sink to listen", LIVE, || {
        a.ns.ok("ss -ltnH").contains(":9000")
    });
    let _stream = Proc::spawn(
        &b.ns,
        &[
            "sh",
            "-c",
            &format!("exec {py} stream {} 9000 30 20000", a.ip),
        ],
        &[],
        &dc.dir.path.join("stream.log"),
    );
    let mut sport = None;
    wait_until("the stream's connection", LIVE, || {
        let ss = b.ns.ok(&format!("ss -tnH state established dst {}", a.ip));
        sport = ss
            .split_whitespace()
            .find(|w| w.starts_with(&format!("{}:", b.ip)))
            .and_then(|w| w.rsplit(':').next())
            .map(str::to_string);
        sport.is_some()
    });
    let sport = sport.unwrap_or_default();
    let rx = |dc: &Dc| {
        let out = dc
            .cell_ns(2)
            .sh("curl -s --max-time 5 http://127.0.0.1:9109/metrics");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("weft_fastpath_packets_total{direction=\"rx\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until("the stream to take the fast path on cell 2", LIVE, || {
        rx(&dc) > 0
    });

    let cap_log = dc.dir.path.join("a-tcpdump.log");
    let cap = Proc::spawn(
        &a.ns,
        &[
            "tcpdump",
            "-i",
            "eth0",
            "-n",
            "-l",
            "-A",
            "--immediate-mode",
            "tcp port 9000",
        ],
        &[],
        &cap_log,
    );
    wait_until("tcpdump in AppA", LIVE, || {
        std::fs::read_to_string(&cap_log).is_ok_and(|l| l.contains("listening on"))
    });
    let tag_b = app_tag(&dc, "app-b");
    let (r1, r2) = (
        dc.cell(1).remote().expect("cell 1"),
        dc.cell(2).remote().expect("cell 2"),
    );
    let c_bind0 = rule_counter(
        &dc,
        2,
        "input",
        "vxlan: inner source outside the sender's lease",
    );
    attack(
        &dc,
        &intruder,
        &format!(
            "vxlan {} {tag_b} {} {} {} {} tcp {sport} 9000 FORGED-FAST 5",
            r2.underlay, r2.mac, r1.mac, b.ip, a.ip
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    cap.stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(5));
    let seen = std::fs::read_to_string(&cap_log).unwrap_or_default();
    assert!(
        seen.contains(&format!("{}.{sport} > {}.9000", b.ip, a.ip)),
        "the real connection is seen in AppA: {seen}"
    );
    let delivered = seen.matches("FORGED-FAST").count();
    eprintln!("forged packets on an established connection delivered into AppA: {delivered}");
    assert_eq!(
        delivered,
        0,
        "forged packets reached AppA: {seen}{}",
        diag(&dc)
    );
    let c_bind1 = rule_counter(
        &dc,
        2,
        "input",
        "vxlan: inner source outside the sender's lease",
    );
    assert!(
        c_bind1.unwrap_or(0) >= c_bind0.unwrap_or(0) + 5,
        "the kernel path dropped and counted them: {c_bind0:?} -> {c_bind1:?}{}",
        diag(&dc)
    );
}

// ----- 5. kill -9 -----

/// What a cell's kernel holds for weft, normalised (counters, timers and program ids left
/// out; the `denied` set's elements are traffic, not state): one entry per line.
fn kernel_state(ns: &Ns) -> Vec<String> {
    let mut out = Vec::new();
    let strip = |s: &str| -> String {
        // `name:[id]` (a BPF program's id changes with every load) -> `name`.
        let mut w: Vec<&str> = s
            .split_whitespace()
            .map(|t| t.split(":[").next().unwrap_or(t))
            .collect();
        let mut i = 0;
        while i < w.len() {
            if w[i] == "packets" || w[i] == "bytes" || w[i] == "expires" || w[i] == "id" {
                w.drain(i..(i + 2).min(w.len()));
            } else {
                i += 1;
            }
        }
        w.join(" ")
    };
    // Each line of the terse listing, qualified by its table and chain or set.
    let (mut table, mut block) = (String::new(), String::new());
    for l in ns.ok("nft -t list ruleset").lines() {
        let t = l.trim();
        if t.is_empty() || t == "}" {
            continue;
        }
        if let Some(name) = t.strip_prefix("table ") {
            table = name.trim_end_matches(" {").to_string();
            block.clear();
        } else if t.ends_with(" {") {
            block = t.trim_end_matches(" {").to_string();
        } else {
            out.push(format!("nft {table} {block}: {}", strip(t)));
        }
    }
    for set in [
        "map tags",
        "set veths",
        "set containers",
        "set cells",
        "set cell_subnets",
        "map allow_ports",
        "map allow_icmp",
    ] {
        let listing = ns.sh(&format!("nft list {set} inet weft-policy"));
        let text = String::from_utf8_lossy(&listing.stdout);
        if let Some((_, els)) = text.split_once("elements = {") {
            let els = els.split('}').next().unwrap_or_default();
            for e in els.split(',') {
                out.push(format!("element {set} {}", strip(e)));
            }
        }
    }
    for l in ns.ok("ip route show table all").lines() {
        if !l.contains("proto kernel") && !l.starts_with("local ") && !l.contains("fe80") {
            out.push(format!("route {l}"));
        }
    }
    for l in ns.ok("ip neigh show nud permanent").lines() {
        out.push(format!("neigh {l}"));
    }
    for l in ns.ok("bridge fdb show dev weft.vtep").lines() {
        out.push(format!("fdb {l}"));
    }
    for l in ns.ok("ip -o link show").lines() {
        let name = l.split(": ").nth(1).unwrap_or_default();
        out.push(format!(
            "link {}",
            name.split('@').next().unwrap_or_default()
        ));
    }
    for l in ns.ok("tc filter show dev eth0 ingress").lines() {
        out.push(format!("tc {}", strip(l)));
    }
    out
}

/// Lines that occur more than once.
fn duplicates(lines: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut dup = BTreeSet::new();
    for l in lines {
        if !seen.insert(l) {
            dup.insert(l.clone());
        }
    }
    dup.into_iter().collect()
}

/// Agents are killed with SIGKILL (destination cell, then source cell) during a TCP stream
/// AppB (cell 1) -> AppA (cell 2): the stream keeps every byte; the restarted agents converge
/// to the kernel state they had before (nft rules and elements, routes, permanent neighbours,
/// FDB entries, links, tc filters), with no duplicate entry; policy still decides.
#[test]
fn agent_kill9_during_stream_converges_without_duplicates() {
    let mut dc = lab(2, "auto", &[]);
    let b = dc.add_container(1, "k9-b", "app-b");
    let c = dc.add_container(1, "k9-c", "app-c");
    let a = dc.add_container(2, "k9-a", "app-a");
    wait_known(&dc, &[&b, &c, &a]);
    policy(&dc, "add app-b app-a --port 9000");
    policy(&dc, &format!("add app-b app-a --port {TCP_PORT}"));
    let _echo = dc.echo_server(&a.ns, TCP_PORT);
    wait_until("the policy", LIVE, || {
        tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, 2.0).starts_with("ok")
    });
    let py = dc.py();
    let sink = Proc::spawn(
        &a.ns,
        &["sh", "-c", &format!("exec {py} sink 9000")],
        &[],
        &dc.dir.path.join("sink.log"),
    );
    wait_until("sink to listen", LIVE, || {
        a.ns.ok("ss -ltnH").contains(":9000")
    });
    let stream = Proc::spawn(
        &b.ns,
        &[
            "sh",
            "-c",
            &format!("exec {py} stream {} 9000 8 500000", a.ip),
        ],
        &[],
        &dc.dir.path.join("stream.log"),
    );
    std::thread::sleep(Duration::from_millis(700));
    let before = [kernel_state(dc.cell_ns(1)), kernel_state(dc.cell_ns(2))];
    for (i, s) in before.iter().enumerate() {
        let d = duplicates(s);
        assert!(d.is_empty(), "cell {}: duplicates before: {d:?}", i + 1);
    }

    dc.kill_agent(2);
    std::thread::sleep(Duration::from_millis(500));
    dc.start_agent(2);
    std::thread::sleep(Duration::from_millis(500));
    dc.kill_agent(1);
    std::thread::sleep(Duration::from_millis(500));
    dc.start_agent(1);

    let st = stream.wait(Duration::from_secs(60));
    let out = std::fs::read_to_string(dc.dir.path.join("stream.log")).unwrap_or_default();
    assert!(
        st.is_some_and(|s| s.success()),
        "the stream keeps every byte across kill -9 ({st:?}): {out} / {}{}",
        sink.output(),
        diag(&dc)
    );
    // Converged: the same state as before (bounded wait for the agents' first sync).
    let start = Instant::now();
    let after = loop {
        let now = [kernel_state(dc.cell_ns(1)), kernel_state(dc.cell_ns(2))];
        if now == before || start.elapsed() > LIVE {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for i in 0..2 {
        let d = duplicates(&after[i]);
        assert!(d.is_empty(), "cell {}: duplicates after: {d:?}", i + 1);
        let gone: Vec<&String> = before[i].iter().filter(|l| !after[i].contains(l)).collect();
        let new: Vec<&String> = after[i].iter().filter(|l| !before[i].contains(l)).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "cell {}: kernel state after kill -9 differs: gone {gone:#?}\nnew {new:#?}{}",
            i + 1,
            diag(&dc)
        );
    }
    assert_eq!(
        tcp_try(&dc, &c.ns, &a.ip, TCP_PORT, DENY_WAIT),
        "timeout",
        "app-c -> app-a stays denied"
    );
    assert!(tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, 2.0).starts_with("ok"));
}
