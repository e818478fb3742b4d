//! Issue 4's throughput work: the agent's BPF fast path (`crates/weft-agent/bpf/fastpath.c`),
//! in the simulated data centre (see `common/dc/mod.rs`), with `WEFT_FASTPATH=on` so that a fast
//! path that cannot load fails the test instead of passing on the kernel path.
//!
//! - an established TCP connection across cells is carried by the programs (`weft_tx` on the
//!   container's host veth, `weft_rx` on the cell's underlay device): the VXLAN device sees
//!   only its first and last packets, the fast path's counters see the rest, and on the
//!   underlay its packets are the VXLAN device's own (UDP 4789, flags G+I, the app's tag as
//!   group policy id, VNI 1, inner addresses of the containers);
//! - policy still decides: without a policy nothing connects, with one the connection's data
//!   takes the fast path, the reverse direction stays denied, and after the policy goes new
//!   connections are denied again;
//! - stopping an agent detaches its programs and its connections carry on through the kernel
//!   path (conntrack with `nf_conntrack_tcp_be_liberal`), and starting it attaches them again;
//!   a stream across both loses no byte;
//! - a packet forged with another container's address is not carried;
//! - with the cells on a cable of their own (`DcOptions::cable`, what the overlay bench uses
//!   to tell the overlay's cost from the simulated switch's), the VTEP and the fast path use
//!   the cable and the switch carries none of the stream.
//!
//! Each scenario has its own data centre, so they run in parallel. Waits are bounded liveness
//! waits, never speed assertions.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ping_ok, wait_until, Ns};
use dc::{Container, Dc, DcOptions, Proc, LIVE, VTEP};
use serde_json::Value;

/// The agents' metrics endpoint, inside each cell's namespace.
const METRICS: &str = "127.0.0.1:9109";
const PORT: u16 = 5201;

fn dc(cells: usize, policy: bool) -> Dc {
    Dc::with(DcOptions {
        cells,
        agent_env: vec![
            (
                "WEFT_POLICY".into(),
                if policy { "on" } else { "off" }.into(),
            ),
            ("WEFT_FASTPATH".into(), "on".into()),
        ],
        agent_args: vec!["--metrics-listen".into(), METRICS.into()],
        ..Default::default()
    })
}

/// The host end of a container's veth, as `weft containers` on its cell shows it.
fn host_veth(dc: &Dc, c: &Container) -> String {
    let rows = dc.containers_json(c.cell);
    rows.as_array()
        .and_then(|rs| {
            rs.iter().find(|r| {
                r["ips"].as_array().is_some_and(|ips| {
                    ips.iter().any(|ip| {
                        ip.as_str()
                            .is_some_and(|ip| ip.split('/').next() == Some(c.ip.as_str()))
                    })
                })
            })
        })
        .and_then(|r| r["host_ifname"].as_str())
        .unwrap_or_else(|| panic!("no host veth for {} in {rows}", c.ip))
        .to_string()
}

/// The fast path program on `dev`'s tc ingress in `ns` ("weft_tx"/"weft_rx"), if any.
fn filter_on(ns: &Ns, dev: &str) -> Option<String> {
    let out = ns.ok(&format!("tc filter show dev {dev} ingress"));
    out.lines()
        .find(|l| l.contains("handle 0x7766"))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("weft_"))
                .map(|w| w.split(':').next().unwrap_or(w).to_string())
        })
}

/// One counter of the agent's metrics in cell `n`.
fn metric(dc: &Dc, n: usize, line_prefix: &str) -> u64 {
    let out = dc
        .cell_ns(n)
        .ok(&format!("curl -s --max-time 5 http://{METRICS}/metrics"));
    out.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in cell {n}'s metrics:\n{out}"))
}

fn fast_packets(dc: &Dc, n: usize, dir: &str) -> u64 {
    metric(
        dc,
        n,
        &format!("weft_fastpath_packets_total{{direction=\"{dir}\"}}"),
    )
}

/// One of `dev`'s counters in `ns` (`dir`: "rx"/"tx", `what`: "packets"/"bytes").
fn link_counter(ns: &Ns, dev: &str, dir: &str, what: &str) -> u64 {
    let v: Value =
        serde_json::from_str(&ns.ok(&format!("ip -s -j link show {dev}"))).expect("ip -j link");
    v[0]["stats64"][dir][what]
        .as_u64()
        .unwrap_or_else(|| panic!("no {dir} {what} for {dev}: {v}"))
}

fn vtep_tx_packets(ns: &Ns) -> u64 {
    link_counter(ns, VTEP, "tx", "packets")
}

/// Sends as fast as it can for `secs` from `client` to a sink in `server` (at `ip:PORT`)
/// and returns the bytes sent; panics unless the sink counted every one of them.
fn bulk(dc: &Dc, server: &Ns, client: &Ns, ip: &str, secs: u32) -> u64 {
    let py = dc.py();
    let _sink = Proc::spawn(
        server,
        &["sh", "-c", &format!("exec {py} sink {PORT}")],
        &[],
        &dc.dir.path.join(format!("sink-{}.log", server.name)),
    );
    wait_until("sink to listen", LIVE, || {
        server.ok("ss -ltnH").contains(&format!(":{PORT}"))
    });
    // sock.py stream: RATE bytes/s in 100 chunks a second; 2 GB/s is more than this path
    // carries, so it sends as fast as it can. Exit 0 only if the sink got every byte.
    let out = client.sh(&format!("{py} stream {ip} {PORT} {secs} 2000000000"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bulk transfer: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("sent="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bulk transfer: {text}"))
}

/// The agents' logs, for failure messages.
fn logs(dc: &Dc) -> String {
    dc.cell_numbers()
        .iter()
        .map(|n| format!("--- cell {n} agent:\n{}\n", dc.cell(*n).agent_log()))
        .collect()
}

/// Fields of every VXLAN packet in a pcap (python3, raw bytes: Ethernet 14 + IPv4 20 + UDP 8
/// + VXLAN 8 + Ethernet 14 + IPv4), one JSON object per line.
const PCAP_PY: &str = r#"
import json, socket, struct, sys
f = open(sys.argv[1], "rb")
magic = f.read(24)
le = magic[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
e = "<" if le else ">"
while True:
    h = f.read(16)
    if len(h) < 16:
        break
    _, _, incl, orig = struct.unpack(e + "IIII", h)
    p = f.read(incl)
    if len(p) < 14 + 20 + 8 + 8 + 14 + 20 or p[12:14] != b"\x08\x00" or p[23] != 17:
        continue
    dport = struct.unpack(">H", p[36:38])[0]
    vx = p[42:50]
    inner = p[64:84]
    print(json.dumps({
        "src": socket.inet_ntoa(p[26:30]), "dst": socket.inet_ntoa(p[30:34]), "dport": dport,
        "flags": vx[0], "gpid": struct.unpack(">H", vx[2:4])[0],
        "vni": int.from_bytes(vx[4:7], "big"),
        "inner_src": socket.inet_ntoa(inner[12:16]), "inner_dst": socket.inet_ntoa(inner[16:20]),
        "inner_proto": inner[9], "len": orig,
    }))
"#;

fn vxlan_packets(dc: &Dc, pcap: &Path) -> Vec<Value> {
    let py = dc.dir.path.join("pcap.py");
    std::fs::write(&py, PCAP_PY).expect("write pcap.py");
    let out = dc
        .underlay_ns()
        .ok(&format!("python3 {} {}", py.display(), pcap.display()));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The tag the controller gave `app`.
fn app_tag(dc: &Dc, app: &str) -> u64 {
    let out = dc.weft("apps --json");
    let v: Value = serde_json::from_slice(&out.stdout).expect("weft apps --json");
    let list = v["apps"].as_array().or(v.as_array()).cloned();
    list.unwrap_or_default()
        .iter()
        .find(|a| a["id"] == app)
        .and_then(|a| a["tag"].as_u64())
        .unwrap_or_else(|| panic!("no tag for {app}: {v}"))
}

/// (a) An established connection's data takes the fast path, and its packets on the underlay
/// are what the VXLAN device sends.
#[test]
fn fast_path_carries_established_tcp() {
    let dc = dc(2, false);
    let a = dc.add_container(1, "fp-a", "app-a");
    let b = dc.add_container(2, "fp-b", "app-b");
    assert!(ping_ok(&a.ns, &b.ip), "warm-up ping");
    let (c1, c2) = (dc.cell_ns(1), dc.cell_ns(2));
    let veth = host_veth(&dc, &a);
    wait_until("weft_tx on the container's veth", LIVE, || {
        filter_on(c1, &veth).as_deref() == Some("weft_tx")
    });
    assert_eq!(filter_on(c2, "eth0").as_deref(), Some("weft_rx"));
    assert_eq!(metric(&dc, 1, "weft_fastpath_enabled"), 1);
    for n in [1, 2] {
        assert_eq!(
            dc.cell_ns(n)
                .ok("sysctl -n net.netfilter.nf_conntrack_tcp_be_liberal")
                .trim(),
            "1"
        );
    }

    let pcap = dc.dir.path.join("underlay.pcap");
    let cap_log = dc.dir.path.join("tcpdump.log");
    let cap = Proc::tcpdump(
        dc.underlay_ns(),
        &[
            "-i",
            "br0",
            "-U",
            "-Z",
            "root",
            "-s",
            "128",
            "-w",
            &pcap.display().to_string(),
            "udp dst port 4789 and src host 198.18.0.1",
        ],
        &cap_log,
    );
    let vtep_before = vtep_tx_packets(c1);
    let (tx_before, rx_before) = (fast_packets(&dc, 1, "tx"), fast_packets(&dc, 2, "rx"));

    let got = bulk(&dc, &b.ns, &a.ns, &b.ip, 2);
    std::thread::sleep(Duration::from_millis(300));
    cap.stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(5));

    assert!(got >= 100_000_000, "sent (and received) {got} bytes");
    let vtep = vtep_tx_packets(c1) - vtep_before;
    let (tx, rx) = (
        fast_packets(&dc, 1, "tx") - tx_before,
        fast_packets(&dc, 2, "rx") - rx_before,
    );
    // 100 MB and more need thousands of packets even as 64 KB GSO packets; the kernel path
    // only saw the connection's handshake and close.
    assert!(
        tx >= 1000 && rx >= 1000,
        "fast path tx {tx} rx {rx}\n{}",
        logs(&dc)
    );
    assert!(
        vtep < 200,
        "cell 1's VXLAN device sent {vtep} packets during the transfer (fast path tx {tx})"
    );

    let tag = app_tag(&dc, "app-a");
    let pkts = vxlan_packets(&dc, &pcap);
    let data: Vec<&Value> = pkts.iter().filter(|p| p["inner_proto"] == 6).collect();
    assert!(
        data.len() as u64 >= tx / 2,
        "captured {} TCP packets for {tx} fast path packets",
        data.len()
    );
    for p in &data {
        assert_eq!(p["dst"], "198.18.0.2", "{p}");
        assert_eq!(p["dport"], 4789, "{p}");
        assert_eq!(p["flags"], 0x88, "G and I flags: {p}");
        assert_eq!(p["gpid"], tag, "app-a's tag as group policy id: {p}");
        assert_eq!(p["vni"], 1, "{p}");
        assert_eq!(p["inner_src"], a.ip.as_str(), "{p}");
        assert_eq!(p["inner_dst"], b.ip.as_str(), "{p}");
    }
    // The big ones are the fast path's (GSO packets); the kernel path's SYN has the same
    // header, checked above with the rest.
    assert!(
        data.iter().any(|p| p["len"].as_u64().unwrap_or(0) > 10_000),
        "GSO packets on the underlay"
    );
}

/// One TCP exchange with the echo server at `ip:port` from `from` (1.5 s to answer).
fn exchange(dc: &Dc, from: &Ns, ip: &str, port: u16) -> bool {
    from.sh(&format!("timeout 3 {} send {ip} {port} probe", dc.py()))
        .status
        .success()
}

/// (b) Policy keeps deciding: the fast path only carries what the kernel path let through.
#[test]
fn policy_still_decides_with_the_fast_path() {
    let dc = dc(2, true);
    let a = dc.add_container(1, "pd-a", "app-a");
    let b = dc.add_container(2, "pd-b", "app-b");
    let _echo_b = dc.echo_server(&b.ns, 8080);
    let _echo_a = dc.echo_server(&a.ns, 8080);
    wait_until("weft_rx on both cells", LIVE, || {
        filter_on(dc.cell_ns(1), "eth0").is_some() && filter_on(dc.cell_ns(2), "eth0").is_some()
    });
    assert!(
        !exchange(&dc, &a.ns, &b.ip, 8080),
        "denied without a policy\n{}",
        logs(&dc)
    );

    dc.policy("add app-a app-b --port 8080");
    dc.policy(&format!("add app-a app-b --port {PORT}"));
    wait_until("the policy to allow app-a -> app-b", LIVE, || {
        exchange(&dc, &a.ns, &b.ip, 8080)
    });
    let (tx0, rx0) = (fast_packets(&dc, 1, "tx"), fast_packets(&dc, 2, "rx"));
    let got = bulk(&dc, &b.ns, &a.ns, &b.ip, 1);
    assert!(got >= 10_000_000, "sent (and received) {got} bytes");
    let (tx, rx) = (
        fast_packets(&dc, 1, "tx") - tx0,
        fast_packets(&dc, 2, "rx") - rx0,
    );
    assert!(tx > 100 && rx > 100, "fast path tx {tx} rx {rx}");

    assert!(
        !exchange(&dc, &b.ns, &a.ip, 8080),
        "the policy is one way: app-b -> app-a stays denied"
    );
    dc.policy("rm app-a app-b --port 8080");
    wait_until("app-a -> app-b denied again", LIVE, || {
        !exchange(&dc, &a.ns, &b.ip, 8080)
    });
}

/// (c) Stopping an agent detaches its programs; the connections it carried go on through
/// the kernel path without losing a byte, and starting it attaches them again. (Without
/// `nf_conntrack_tcp_be_liberal` this fails: the replies become INVALID and default deny
/// drops them.)
#[test]
fn agent_stop_hands_connections_to_the_kernel_path() {
    // Policy on: the kernel path must take the connection back as established (the reverse
    // direction has no policy of its own), which needs conntrack to accept its sequence
    // numbers after the fast path carried it.
    let mut dc = dc(2, true);
    let a = dc.add_container(1, "st-a", "app-a");
    let b = dc.add_container(2, "st-b", "app-b");
    dc.policy("add app-a app-b --port 9000");
    let _echo = dc.echo_server(&b.ns, 9001);
    dc.policy("add app-a app-b --port 9001");
    wait_until("the policy to allow app-a -> app-b", LIVE, || {
        exchange(&dc, &a.ns, &b.ip, 9001)
    });
    let veth = host_veth(&dc, &a);
    wait_until("weft_tx", LIVE, || {
        filter_on(dc.cell_ns(1), &veth).is_some()
    });
    let sink = dc.sink(&b.ns, 9000);
    let stream = dc.stream(&a.ns, &b.ip, 9000, 12, 20000000);
    std::thread::sleep(Duration::from_secs(2));
    let tx0 = fast_packets(&dc, 1, "tx");
    assert!(tx0 > 0, "the stream takes the fast path\n{}", logs(&dc));

    let st = dc.stop_agent(1);
    assert!(st.is_some_and(|s| s.success()), "agent 1 exits: {st:?}");
    assert_eq!(filter_on(dc.cell_ns(1), &veth), None, "weft_tx detached");
    assert_eq!(filter_on(dc.cell_ns(1), "eth0"), None, "weft_rx detached");
    std::thread::sleep(Duration::from_secs(2));
    dc.start_agent(1);
    wait_until("weft_tx attached again", LIVE, || {
        filter_on(dc.cell_ns(1), &veth).is_some()
    });
    let st = dc.stop_agent(2);
    assert!(st.is_some_and(|s| s.success()), "agent 2 exits: {st:?}");
    assert_eq!(filter_on(dc.cell_ns(2), "eth0"), None, "weft_rx detached");
    std::thread::sleep(Duration::from_secs(2));
    dc.start_agent(2);
    wait_until("weft_rx attached again", LIVE, || {
        filter_on(dc.cell_ns(2), "eth0").is_some()
    });
    let start = Instant::now();
    let tx1 = fast_packets(&dc, 1, "tx");
    let st = stream.wait(Duration::from_secs(60));
    let out = std::fs::read_to_string(dc.dir.path.join("stream.log")).unwrap_or_default();
    assert!(
        st.is_some_and(|s| s.success()),
        "the stream completes with every byte ({st:?}, {:?} after the restarts): {out} / {}\n{}",
        start.elapsed(),
        sink.output(),
        logs(&dc)
    );
    // The restarted agent's programs carried the stream's last seconds.
    assert!(tx1 > 0, "fast path again after the restart");
}

/// (d) A packet with another container's source address is not carried: the TX program
/// leaves it to the kernel path, whose anti-spoofing rule drops it.
#[test]
fn fast_path_does_not_carry_spoofed_packets() {
    let dc = dc(2, false);
    let a = dc.add_container(1, "sp-a", "app-a");
    let c = dc.add_container(1, "sp-c", "app-c");
    let b = dc.add_container(2, "sp-b", "app-b");
    assert!(
        ping_ok(&a.ns, &b.ip) && ping_ok(&c.ns, &b.ip),
        "warm-up pings"
    );
    let veth_c = host_veth(&dc, &c);
    wait_until("weft_tx on c's veth", LIVE, || {
        filter_on(dc.cell_ns(1), &veth_c).is_some()
    });
    // An established a -> b connection (a slow stream keeps it open).
    let _sink = dc.sink(&b.ns, 9000);
    let _stream = dc.stream(&a.ns, &b.ip, 9000, 30, 20000);
    let sport = Dc::established_sport(&a, &b);
    let gw_mac = {
        let v: Value = serde_json::from_str(&c.ns.ok("ip -j neigh show dev eth0")).expect("json");
        v.as_array()
            .and_then(|a| a.iter().find_map(|n| n["lladdr"].as_str()))
            .expect("gateway MAC")
            .to_string()
    };
    let cap_log = dc.dir.path.join("b-tcpdump.log");
    let cap = Proc::tcpdump(
        &b.ns,
        &["-i", "eth0", "-l", "-A", "tcp port 9000"],
        &cap_log,
    );
    let forge = dc.dir.path.join("forge.py");
    std::fs::write(
        &forge,
        r#"
import sys
from scapy.all import Ether, IP, TCP, Raw, sendp, conf
conf.verb = 0
mac, src, dst, sport = sys.argv[1:5]
sendp(Ether(dst=mac) / IP(src=src, dst=dst) / TCP(sport=int(sport), dport=9000, flags="PA", seq=1, ack=1) / Raw(b"SPOOFED-BY-C"), iface="eth0", count=5)
"#,
    )
    .expect("write forge.py");
    let pythons = ["/usr/bin/python3", "python3"];
    let sent = pythons.iter().any(|py| {
        c.ns.sh(&format!(
            "{py} {} {gw_mac} {} {} {sport}",
            forge.display(),
            a.ip,
            b.ip
        ))
        .status
        .success()
    });
    assert!(
        sent,
        "scapy (Debian: python3-scapy) sent the forged packets"
    );
    std::thread::sleep(Duration::from_secs(1));
    cap.stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(5));
    let seen = std::fs::read_to_string(&cap_log).unwrap_or_default();
    assert!(
        seen.contains(&format!("{}.{sport} > {}.9000", a.ip, b.ip)),
        "the real connection is seen in b: {seen}"
    );
    assert!(
        !seen.contains("SPOOFED-BY-C"),
        "a forged packet reached b: {seen}"
    );
    let dropped = dc
        .cell_ns(1)
        .ok("nft list chain inet weft-policy prerouting");
    let n: u64 = dropped
        .lines()
        .find(|l| l.contains("spoofed source"))
        .and_then(|l| l.split_once("counter packets "))
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        n >= 5,
        "the kernel path's anti-spoofing rule dropped them: {dropped}"
    );
}

fn rx_bytes(ns: &Ns, dev: &str) -> u64 {
    link_counter(ns, dev, "rx", "bytes")
}

/// (e) Cells 1 and 2 on a cable: the agents take it as their underlay (the VTEP's local
/// address, the FDB entry, `weft_rx`), and a stream crosses it on the fast path while the
/// switch, still their way to the controller, carries none of it.
#[test]
fn cable_underlay_carries_the_overlay() {
    let dc = Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![
            ("WEFT_POLICY".into(), "off".into()),
            ("WEFT_FASTPATH".into(), "on".into()),
        ],
        agent_args: vec!["--metrics-listen".into(), METRICS.into()],
        cable: true,
        ..Default::default()
    });
    let a = dc.add_container(1, "cb-a", "app-a");
    let b = dc.add_container(2, "cb-b", "app-b");
    assert!(ping_ok(&a.ns, &b.ip), "ping over the cable:\n{}", logs(&dc));
    let (c1, c2) = (dc.cell_ns(1), dc.cell_ns(2));
    let vtep: Value =
        serde_json::from_str(&c1.ok(&format!("ip -d -j link show {VTEP}"))).expect("ip -d -j link");
    let (ip1, ip2) = (dc.cell(1).underlay_ip(), dc.cell(2).underlay_ip());
    assert_eq!((ip1.as_str(), ip2.as_str()), ("198.19.0.1", "198.19.0.2"));
    assert_eq!(vtep[0]["linkinfo"]["info_data"]["local"], ip1, "{vtep}");
    let fdb = c1.ok(&format!("bridge fdb show dev {VTEP}"));
    assert!(fdb.contains(&format!("dst {ip2}")), "cell 1's FDB: {fdb}");
    wait_until("weft_rx on cell 2's cable", LIVE, || {
        filter_on(c2, "cable").as_deref() == Some("weft_rx")
    });
    assert_eq!(filter_on(c2, "eth0"), None, "nothing on the switch port");

    let (cable_before, switch_before) = (rx_bytes(c2, "cable"), rx_bytes(c2, "eth0"));
    let rx_before = fast_packets(&dc, 2, "rx");
    let got = bulk(&dc, &b.ns, &a.ns, &b.ip, 2);
    let cable = rx_bytes(c2, "cable") - cable_before;
    let switch = rx_bytes(c2, "eth0") - switch_before;
    let rx = fast_packets(&dc, 2, "rx") - rx_before;
    assert!(got >= 100_000_000, "sent (and received) {got} bytes");
    assert!(
        cable >= got,
        "the cable carried {cable} bytes of a {got}-byte stream"
    );
    assert!(
        switch < got / 100,
        "the switch carried {switch} bytes of a {got}-byte stream"
    );
    assert!(rx >= 1000, "cell 2's fast path received {rx} packets");
}
