//! Shared by weft-cni's attack tests (`cni_*_attacks.rs`, issue 14 items 3-6): the socket
//! helpers (python3 in a namespace), port-mapping configurations, conntrack and the ports
//! table as the kernel holds them, and "refused, naming the holder".
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// Liveness bound for a server to come up or a fresh link to pass traffic.
pub const LIVE: Duration = Duration::from_secs(20);

/// Socket helpers (python3 in a namespace):
/// - `tcp-serve PORT TAG`: answers every connection with TAG and closes it;
/// - `tcp-park PORT`: accepts connections and keeps them open;
/// - `udp-serve PORT TAG`: answers every datagram with TAG;
/// - `udp-log ADDR PORT`: prints `got <source>` for every datagram;
/// - `tcp-get HOST PORT`: prints what the server sent;
/// - `tcp-hold HOST PORT`: connects (retrying for 10 s), prints `connected`, keeps the
///   connection open;
/// - `udp-send HOST PORT SPORT COUNT`: sends COUNT datagrams from SPORT (the same flow every
///   time), each waiting up to 0.2 s for an answer; prints `{tag: answers}` as JSON.
pub const NET_PY: &str = r#"
if mode == "tcp-serve":
    s = listener(int(sys.argv[2]))
    while True:
        c, a = s.accept()
        try:
            c.sendall(sys.argv[3].encode())
        except Exception:
            pass
        c.close()
elif mode == "tcp-park":
    s = listener(int(sys.argv[2]))
    kept = []
    while True:
        c, a = s.accept()
        kept.append(c)
elif mode == "udp-serve":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[2])))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(sys.argv[3].encode(), a)
elif mode == "udp-log":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[2], int(sys.argv[3])))
    print("listening", flush=True)
    while True:
        d, a = s.recvfrom(2048)
        print("got", a[0], flush=True)
elif mode == "tcp-get":
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=2)
    c.settimeout(2)
    out = read_all(c)
    sys.stdout.write(out.decode())
elif mode == "tcp-hold":
    for i in range(100):
        try:
            c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3)
            break
        except OSError:
            time.sleep(0.1)
    print("connected", flush=True)
    time.sleep(3600)
elif mode == "udp-send":
    host, port, sport, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", sport))
    s.settimeout(0.2)
    got = {}
    for i in range(count):
        try:
            s.sendto(b"x", (host, port))
            d, _ = s.recvfrom(2048)
            k = d.decode()
            got[k] = got.get(k, 0) + 1
        except (socket.timeout, OSError):
            pass
    print(json.dumps(got))
"#;

pub struct Py {
    pub dir: TempDir,
}

impl Py {
    pub fn new() -> Py {
        let dir = TempDir::new("py");
        write_py(&dir.path.join("net.py"), NET_PY);
        Py { dir }
    }

    pub fn cmd(&self, args: &str) -> String {
        format!("python3 {} {args}", self.dir.path.join("net.py").display())
    }

    pub fn tcp_get(&self, ns: &Ns, host: &str, port: u16) -> Option<String> {
        let out = ns.sh(&self.cmd(&format!("tcp-get {host} {port}")));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `tcp-get` until it answers (a fresh veth or bridge port may take a moment).
    pub fn tcp_get_eventually(&self, ns: &Ns, host: &str, port: u16) -> String {
        let mut got = None;
        wait_until(&format!("TCP {host}:{port} from {}", ns.name), LIVE, || {
            got = self.tcp_get(ns, host, port);
            got.is_some()
        });
        got.unwrap_or_default()
    }

    pub fn udp_send(
        &self,
        ns: &Ns,
        host: &str,
        port: u16,
        sport: u16,
        count: u32,
    ) -> BTreeMap<String, u32> {
        let out = ns.ok(&self.cmd(&format!("udp-send {host} {port} {sport} {count}")));
        serde_json::from_str(out.trim()).unwrap_or_default()
    }

    pub fn serve_tcp(&self, ns: &Ns, port: u16, tag: &str) -> Bg {
        let bg = ns.spawn(&self.cmd(&format!("tcp-serve {port} {tag}")));
        wait_until(&format!("tcp server {tag}"), LIVE, || {
            self.tcp_get(ns, "127.0.0.1", port).as_deref() == Some(tag)
        });
        bg
    }

    pub fn serve_udp(&self, ns: &Ns, port: u16, tag: &str) -> Bg {
        let bg = ns.spawn(&self.cmd(&format!("udp-serve {port} {tag}")));
        wait_until(&format!("udp server {tag}"), LIVE, || {
            self.udp_send(ns, "127.0.0.1", port, 39999, 1)
                .contains_key(tag)
        });
        bg
    }
}

pub fn bridge_conf(subnet: &str, bridge: &str) -> Value {
    json!({ "cniVersion": "1.1.0", "bridge": bridge, "ipMasq": true, "ipam": { "subnet": subnet } })
}

pub fn pm(proto: &str, host_port: u16, container_port: u16, host_ip: Option<&str>) -> Value {
    let mut v =
        json!({ "hostPort": host_port, "containerPort": container_port, "protocol": proto });
    if let Some(ip) = host_ip {
        v["hostIP"] = json!(ip);
    }
    v
}

pub fn with_ports(conf: &Value, pms: &[Value]) -> Value {
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({ "portMappings": pms });
    c
}

pub fn net_name(conf: &Value) -> String {
    conf["name"].as_str().unwrap_or_default().to_string()
}

/// `conntrack -L ARGS` in `ns` (the entries, one per line).
pub fn conntrack(ns: &Ns, args: &str) -> String {
    String::from_utf8_lossy(&ns.sh(&format!("conntrack -L {args} 2>/dev/null")).stdout).into_owned()
}

/// Makes the kernel track connections in `ns` (a namespace without NAT rules tracks none).
pub fn track_connections(ns: &Ns) {
    ns.ok("nft add table inet wtest && \
           nft add chain inet wtest pre '{ type filter hook prerouting priority 0; }' && \
           nft add rule inet wtest pre ct state new counter");
}

/// Element lines of weft's host port table in `ns` (empty when there is none).
pub fn port_elements(ns: &Ns) -> String {
    String::from_utf8_lossy(&ns.sh("nft list table inet weft-ports 2>/dev/null").stdout)
        .lines()
        .filter(|l| l.contains("elements"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn assert_refused_naming(r: &Reply, code: u64, names: &[&str], what: &str) {
    assert!(!r.ok, "{what}: accepted: {}", r.json);
    assert_eq!(r.code(), code, "{what}: {}", r.json);
    for n in names {
        assert!(
            r.msg().contains(n),
            "{what}: the message does not name {n:?}: {}",
            r.msg()
        );
    }
}
