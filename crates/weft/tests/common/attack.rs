//! Shared by the data-plane attack tests (`attack_*.rs`, issue 14) in the simulated data
//! centre: a data centre with policy enforcement on and the packet tools (python3, standard
//! library only) in its directory, receivers and echo servers, and ways to act as someone who
//! holds a lease. Builds on `common/policy.rs` (policy writes, tags, diagnostics).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{wait_until, write_py, Ns};
use crate::dc::{self, Dc, DcOptions, Proc, LIVE, VXLAN_PORT};
use crate::policy::{diag, DENY_WAIT, UDP_PORT};

pub const TCP_PORT: u16 = 8080;
/// The size of the policy table's `denied` set (see crates/weft-agent/src/policy.rs).
pub const DENIED_SIZE: usize = 65_536;

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
pub const ATTACK_PY: &str = r#"
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
    kind, out = exchange(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    if kind == "ok":
        print("ok " + out.decode(errors="replace"), flush=True)
    else:
        print(kind, flush=True)
"#;

pub fn attack_lab(cells: usize, fastpath: &str, agent_args: &[&str]) -> Dc {
    let dc = Dc::with(DcOptions {
        cells,
        agent_env: vec![
            ("WEFT_POLICY".into(), "on".into()),
            ("WEFT_FASTPATH".into(), fastpath.into()),
        ],
        agent_args: agent_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    write_py(
        &attack_py(&dc),
        &ATTACK_PY.replace("VXLAN_PORT_VALUE", &VXLAN_PORT.to_string()),
    );
    dc
}

pub fn attack_py(dc: &Dc) -> PathBuf {
    dc.dir.path.join("attack.py")
}

/// Runs the packet tool in `ns`; panics unless it succeeds.
pub fn attack(dc: &Dc, ns: &Ns, args: &str) -> String {
    ns.ok(&format!("python3 {} {args}", attack_py(dc).display()))
}

/// A UDP receiver on `port` in `ns`, listening when this returns.
pub fn udp_receiver(dc: &Dc, ns: &Ns, port: u16) -> Proc {
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
pub fn udp_arrives(dc: &Dc, from: &Ns, to: &str, payload: &str, at: &Proc) {
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
pub fn tcp_try(dc: &Dc, from: &Ns, ip: &str, port: u16, timeout: f64) -> String {
    let out = from.sh(&format!(
        "python3 {} tcp {ip} {port} {timeout}",
        attack_py(dc).display()
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One UDP datagram from `from` to `ip:port`, answered by an echo server? (`ok`/`timeout`)
pub fn udp_try(from: &Ns, ip: &str, port: u16) -> String {
    let out = from.sh(&format!(
        "timeout 5 python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.settimeout({DENY_WAIT}); s.sendto(b\"probe\", (\"{ip}\", {port}));\n\
         try:\n  s.recvfrom(100); print(\"ok\")\nexcept Exception: print(\"timeout\")'"
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A UDP echo server on `port` in `ns` (answers every datagram).
pub fn udp_echo(dc: &Dc, ns: &Ns, port: u16) -> Proc {
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

/// A lease for `host` with underlay address `underlay`, taken at the controller as an agent
/// would (no cell behind it), once every cell lists the address in its `cells` set. Returns
/// an address of its subnet.
pub fn ghost_lease(dc: &Dc, host: &str, underlay: &str) -> String {
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

pub fn signal(pid: &str, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig} {pid}");
}
