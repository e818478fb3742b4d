//! weft-cni attacked as a hostile or careless runtime would (issue 14, items 3-6): host port
//! hijacks across addresses, networks and modes; identities that collide; a repeat ADD into
//! another namespace; the host's own namespace as the container's; names that escape the
//! data directory or that the kernel expands; flows that outlive a container's address or a
//! moved host port.
//!
//! Every test works inside namespaces it makes: a "host" namespace stands in for the machine
//! (`Net`), an "outside" namespace for the rest of the world (`outside_of`: 203.0.113.0/24 on
//! one veth). Each attack prints what it got (`attack: ...`) so a run shows it.
#[path = "../../weft/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Liveness bound for a server to come up or a fresh link to pass traffic.
const LIVE: Duration = Duration::from_secs(20);

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
const NET_PY: &str = r#"
import json, socket, sys, time
mode = sys.argv[1]
def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    return s
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
    out = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        out += b
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

struct Py {
    dir: TempDir,
}

impl Py {
    fn new() -> Py {
        let dir = TempDir::new("py");
        std::fs::write(dir.path.join("net.py"), NET_PY).expect("write net.py");
        Py { dir }
    }

    fn cmd(&self, args: &str) -> String {
        format!("python3 {} {args}", self.dir.path.join("net.py").display())
    }

    fn tcp_get(&self, ns: &Ns, host: &str, port: u16) -> Option<String> {
        let out = ns.sh(&self.cmd(&format!("tcp-get {host} {port}")));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `tcp-get` until it answers (a fresh veth or bridge port may take a moment).
    fn tcp_get_eventually(&self, ns: &Ns, host: &str, port: u16) -> String {
        let mut got = None;
        wait_until(&format!("TCP {host}:{port} from {}", ns.name), LIVE, || {
            got = self.tcp_get(ns, host, port);
            got.is_some()
        });
        got.unwrap_or_default()
    }

    fn udp_send(
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

    fn serve_tcp(&self, ns: &Ns, port: u16, tag: &str) -> Bg {
        let bg = ns.spawn(&self.cmd(&format!("tcp-serve {port} {tag}")));
        wait_until(&format!("tcp server {tag}"), LIVE, || {
            self.tcp_get(ns, "127.0.0.1", port).as_deref() == Some(tag)
        });
        bg
    }

    fn serve_udp(&self, ns: &Ns, port: u16, tag: &str) -> Bg {
        let bg = ns.spawn(&self.cmd(&format!("udp-serve {port} {tag}")));
        wait_until(&format!("udp server {tag}"), LIVE, || {
            self.udp_send(ns, "127.0.0.1", port, 39999, 1)
                .contains_key(tag)
        });
        bg
    }
}

fn bridge_conf(subnet: &str, bridge: &str) -> Value {
    json!({ "cniVersion": "1.1.0", "bridge": bridge, "ipMasq": true, "ipam": { "subnet": subnet } })
}

fn pm(proto: &str, host_port: u16, container_port: u16, host_ip: Option<&str>) -> Value {
    let mut v =
        json!({ "hostPort": host_port, "containerPort": container_port, "protocol": proto });
    if let Some(ip) = host_ip {
        v["hostIP"] = json!(ip);
    }
    v
}

fn with_ports(conf: &Value, pms: &[Value]) -> Value {
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({ "portMappings": pms });
    c
}

fn net_name(conf: &Value) -> String {
    conf["name"].as_str().unwrap_or_default().to_string()
}

/// `conntrack -L ARGS` in `ns` (the entries, one per line).
fn conntrack(ns: &Ns, args: &str) -> String {
    String::from_utf8_lossy(&ns.sh(&format!("conntrack -L {args} 2>/dev/null")).stdout).into_owned()
}

/// Makes the kernel track connections in `ns` (a namespace without NAT rules tracks none).
fn track_connections(ns: &Ns) {
    ns.ok("nft add table inet wtest && \
           nft add chain inet wtest pre '{ type filter hook prerouting priority 0; }' && \
           nft add rule inet wtest pre ct state new counter");
}

/// Element lines of weft's host port table in `ns` (empty when there is none).
fn port_elements(ns: &Ns) -> String {
    String::from_utf8_lossy(&ns.sh("nft list table inet weft-ports 2>/dev/null").stdout)
        .lines()
        .filter(|l| l.contains("elements"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_refused_naming(r: &Reply, code: u64, names: &[&str], what: &str) {
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

/// Item 3: one container holds TCP 8080 on every host address and UDP 5353 on the gateway;
/// every overlapping claim, from the same network, another bridge network or an overlay
/// network on the same host, is refused with 103 naming the holder, and the traffic stays
/// with the holder. Claims that do not overlap (another port, another specific address) are
/// fine.
#[test]
fn host_port_hijacks_are_refused_naming_the_holder() {
    let py = Py::new();
    let net = Net::new("hij", bridge_conf("10.230.0.0/24", "wbr0"));
    let net2 = net.sibling("n2", bridge_conf("10.230.1.0/24", "wbr1"));
    let lease = write_lease(&net.data.path, "10.255.30.0/24");
    let ov = net.sibling(
        "ov",
        json!({ "cniVersion": "1.1.0", "mode": "overlay", "leaseFile": lease.display().to_string() }),
    );
    let outside = outside_of(&net.host);
    // The host runs an agent too: its VTEP's port is the overlay's.
    net.host
        .ok("ip link add weft.vtep type vxlan id 42 dstport 4789 && ip link set weft.vtep up");
    let holder = Ns::new("a");
    let holder_conf = with_ports(
        &net.conf,
        &[
            pm("tcp", 8080, 80, None),
            pm("udp", 5353, 53, Some("10.230.0.1")),
        ],
    );
    let r = net.call_conf("ADD", "holder", &holder.path(), "eth0", &holder_conf);
    assert!(r.ok, "holder ADD: {}", r.json);
    let _tcp = py.serve_tcp(&holder, 80, "holder");
    let _udp = py.serve_udp(&holder, 53, "holder");
    let holder_net = net_name(&net.conf);

    let attacks: Vec<(&str, &Value, Value)> = vec![
        (
            "tcp 8080 on 127.0.0.1, same network",
            &net.conf,
            pm("tcp", 8080, 80, Some("127.0.0.1")),
        ),
        (
            "tcp 8080 on the gateway, same network",
            &net.conf,
            pm("tcp", 8080, 80, Some("10.230.0.1")),
        ),
        (
            "tcp 8080 on every address, another bridge network",
            &net2,
            pm("tcp", 8080, 80, None),
        ),
        (
            "tcp 8080 on the outside address, another bridge network",
            &net2,
            pm("tcp", 8080, 80, Some("203.0.113.1")),
        ),
        (
            "tcp 8080, an overlay network",
            &ov,
            pm("tcp", 8080, 80, None),
        ),
        (
            "udp 5353 on every address, another bridge network",
            &net2,
            pm("udp", 5353, 53, None),
        ),
        (
            "udp 5353 on the gateway, an overlay network",
            &ov,
            pm("udp", 5353, 53, Some("10.230.0.1")),
        ),
    ];
    let vxlan = pm("udp", 4789, 4789, None);
    let attacker = Ns::new("x");
    let r = net.call_conf(
        "ADD",
        "vx",
        &attacker.path(),
        "eth0",
        &with_ports(&net2, &[vxlan]),
    );
    eprintln!(
        "attack: udp 4789 (the VTEP's port), bridge network: ok={} code={} msg={}",
        r.ok,
        r.code(),
        r.msg()
    );
    assert_refused_naming(&r, 103, &["4789", "VXLAN"], "mapping the VTEP's port");
    for (i, (what, conf, mapping)) in attacks.iter().enumerate() {
        let attacker = Ns::new("x");
        let cid = format!("attacker{i}");
        let r = net.call_conf(
            "ADD",
            &cid,
            &attacker.path(),
            "eth0",
            &with_ports(conf, std::slice::from_ref(mapping)),
        );
        eprintln!(
            "attack: {what}: ok={} code={} msg={}",
            r.ok,
            r.code(),
            r.msg()
        );
        assert_refused_naming(&r, 103, &["holder", "eth0", &holder_net], what);
        // Nothing of the refused container is left.
        assert_eq!(
            attacker.ok("ip -o link show").lines().count(),
            1,
            "{what}: the refused container kept an interface"
        );
        let r = net.call_conf("DEL", &cid, &attacker.path(), "eth0", conf);
        assert!(r.ok, "{what}: DEL after refusal: {}", r.json);
    }
    // The traffic still goes to the holder, on every address.
    for (from, addr) in [
        (&outside, "203.0.113.1"),
        (&net.host, "127.0.0.1"),
        (&net.host, "10.230.0.1"),
    ] {
        assert_eq!(
            py.tcp_get_eventually(from, addr, 8080),
            "holder",
            "tcp {addr}:8080"
        );
    }
    assert_eq!(
        py.udp_send(&net.host, "10.230.0.1", 5353, 40000, 3)
            .get("holder")
            .copied()
            .unwrap_or(0),
        3,
        "udp 10.230.0.1:5353"
    );
    assert!(net.allocated().len() == 1, "{:?}", net.allocated());

    // Claims that do not overlap are not conflicts: another port, another specific address
    // of the same port (the holder has UDP 5353 on the gateway only).
    let other = Ns::new("o");
    let ok_conf = with_ports(
        &net2,
        &[
            pm("tcp", 8081, 80, None),
            pm("udp", 5353, 53, Some("127.0.0.1")),
        ],
    );
    let r = net.call_conf("ADD", "other", &other.path(), "eth0", &ok_conf);
    assert!(r.ok, "non-overlapping claims: {}", r.json);
    let _other_tcp = py.serve_tcp(&other, 80, "other");
    assert_eq!(
        py.tcp_get_eventually(&outside, "203.0.113.1", 8081),
        "other"
    );

    // Once the holder is gone, the port is free for another network.
    let r = net.call_conf("DEL", "holder", &holder.path(), "eth0", &holder_conf);
    assert!(r.ok, "holder DEL: {}", r.json);
    let next = Ns::new("n");
    let r = net.call_conf(
        "ADD",
        "next",
        &next.path(),
        "eth0",
        &with_ports(&net2, &[pm("tcp", 8080, 80, None)]),
    );
    assert!(r.ok, "8080 after the holder's DEL: {}", r.json);
    let _next_tcp = py.serve_tcp(&next, 80, "next");
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8080), "next");
    for (cid, ns) in [("other", &other), ("next", &next)] {
        let r = net.call_conf("DEL", cid, &ns.path(), "eth0", &net2);
        assert!(r.ok, "DEL {cid}: {}", r.json);
    }
    assert_eq!(port_elements(&net.host), "", "port mappings left");
}

/// Item 3: a repeat ADD with other port mappings applies them (or refuses them, changing
/// nothing), never ignores them.
#[test]
fn repeat_add_applies_or_refuses_new_port_mappings() {
    let py = Py::new();
    let net = Net::new("rep", bridge_conf("10.231.0.0/24", "wbr0"));
    let outside = outside_of(&net.host);
    let (a, b) = (Ns::new("a"), Ns::new("b"));
    let _a_srv = {
        net.add("a", &a);
        py.serve_tcp(&a, 80, "a")
    };
    // Repeat ADD asking for 8080: applied.
    let a8080 = with_ports(&net.conf, &[pm("tcp", 8080, 80, None)]);
    let r = net.call_conf("ADD", "a", &a.path(), "eth0", &a8080);
    assert!(r.ok, "repeat ADD with a port mapping: {}", r.json);
    let got = py.tcp_get(&outside, "203.0.113.1", 8080);
    eprintln!("attack: repeat ADD with a new port mapping: ADD ok, 8080 answers {got:?}");
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8080), "a");
    let mut check = a8080.clone();
    check["prevResult"] = r.json.clone();
    let c = net.call_conf("CHECK", "a", &a.path(), "eth0", &check);
    assert!(c.ok, "CHECK after the change: {}", c.json);

    // b holds 8081; a asks for 8081 in a repeat ADD: refused naming b, a keeps 8080.
    let r = net.call_conf(
        "ADD",
        "b",
        &b.path(),
        "eth0",
        &with_ports(&net.conf, &[pm("tcp", 8081, 80, None)]),
    );
    assert!(r.ok, "b: {}", r.json);
    let _b_srv = py.serve_tcp(&b, 80, "b");
    let r = net.call_conf(
        "ADD",
        "a",
        &a.path(),
        "eth0",
        &with_ports(&net.conf, &[pm("tcp", 8081, 80, None)]),
    );
    eprintln!(
        "attack: repeat ADD taking another container's port: ok={} code={} msg={}",
        r.ok,
        r.code(),
        r.msg()
    );
    assert_refused_naming(&r, 103, &["b", "eth0"], "repeat ADD taking b's port");
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8080), "a");
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8081), "b");

    // A repeat ADD without port mappings removes a's, and the flows that went through it.
    let a_ip = result_ip(&check["prevResult"]);
    let through = |ns: &Ns| {
        conntrack(ns, "-p tcp --orig-port-dst 8080")
            .lines()
            .filter(|l| l.contains(&format!("src={a_ip} ")))
            .count()
    };
    assert!(through(&net.host) > 0, "no tracked flow through 8080 to a");
    net.add("a", &a);
    assert_eq!(
        through(&net.host),
        0,
        "a flow through the removed mapping is left"
    );
    assert_eq!(py.tcp_get(&outside, "203.0.113.1", 8080), None);
    assert!(
        !port_elements(&net.host).contains("8080"),
        "{}",
        port_elements(&net.host)
    );
    net.del("a", &a);
    let r = net.call_conf("DEL", "b", &b.path(), "eth0", &net.conf);
    assert!(r.ok);
    assert_eq!(port_elements(&net.host), "");
}

/// Item 3: overlay mode publishes port mappings as Cloud Foundry's netin does: DNAT on the
/// host's addresses to the container's overlay address, from outside, from the host itself
/// (its address and 127.0.0.1) and from containers of the same host (hairpin). The VTEP's
/// UDP port cannot be mapped.
#[test]
fn overlay_port_mappings_reach_the_container() {
    let py = Py::new();
    let net = Net::overlay("ovpm", "10.255.31.0/24");
    let outside = outside_of(&net.host);
    let (web, peer) = (Ns::new("w"), Ns::new("p"));
    web.ok("ip link set lo up");
    let conf = with_ports(
        &net.conf,
        &[pm("tcp", 8080, 80, None), pm("udp", 5300, 53, None)],
    );
    let r = net.call_conf("ADD", "web", &web.path(), "eth0", &conf);
    assert!(r.ok, "overlay ADD with port mappings: {}", r.json);
    let _t = py.serve_tcp(&web, 80, "web");
    let _u = py.serve_udp(&web, 53, "web");
    let got = py.tcp_get(&outside, "203.0.113.1", 8080);
    eprintln!("attack: overlay port mapping from outside: {got:?}");
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8080), "web");
    assert_eq!(py.tcp_get_eventually(&net.host, "203.0.113.1", 8080), "web");
    assert_eq!(py.tcp_get_eventually(&net.host, "127.0.0.1", 8080), "web");
    assert_eq!(
        py.udp_send(&outside, "203.0.113.1", 5300, 40000, 3)
            .get("web"),
        Some(&3)
    );
    // Hairpin: a container of the same host, and the container itself.
    net.add("peer", &peer);
    assert_eq!(py.tcp_get_eventually(&peer, "203.0.113.1", 8080), "web");
    assert_eq!(py.tcp_get_eventually(&web, "203.0.113.1", 8080), "web");
    let mut check = conf.clone();
    check["prevResult"] = r.json.clone();
    let c = net.call_conf("CHECK", "web", &web.path(), "eth0", &check);
    assert!(c.ok, "CHECK: {}", c.json);

    // The VTEP's port is the overlay's own.
    let x = Ns::new("x");
    let r = net.call_conf(
        "ADD",
        "vx",
        &x.path(),
        "eth0",
        &with_ports(&net.conf, &[pm("udp", 4789, 4789, None)]),
    );
    eprintln!(
        "attack: overlay container mapping the VXLAN port: ok={} code={} msg={}",
        r.ok,
        r.code(),
        r.msg()
    );
    assert_refused_naming(&r, 103, &["4789", "VXLAN"], "mapping the VXLAN port");

    net.del("peer", &peer);
    let r = net.call_conf("DEL", "web", &web.path(), "eth0", &conf);
    assert!(r.ok, "DEL: {}", r.json);
    assert_eq!(py.tcp_get(&outside, "203.0.113.1", 8080), None);
    assert_eq!(port_elements(&net.host), "");
}

/// Item 4: `x_y`+`z` and `x`+`y_z` are two attachments: neither moves the other.
#[test]
fn colliding_identities_stay_apart() {
    let net = Net::new("ids", bridge_conf("10.232.0.0/24", "wbr0"));
    let (n1, n2) = (Ns::new("c"), Ns::new("c"));
    let r1 = net.call("ADD", "x_y", &n1, "z");
    assert!(r1.ok, "{}", r1.json);
    let r2 = net.call("ADD", "x", &n2, "y_z");
    eprintln!(
        "attack: ADD x + y_z after x_y + z: ok={} result ip {} (first {}); first namespace has: {}",
        r2.ok,
        result_ip(&r2.json),
        result_ip(&r1.json),
        n1.ok("ip -o link show | grep -c ' z@' || true").trim()
    );
    assert!(r2.ok, "{}", r2.json);
    assert_ne!(result_ip(&r1.json), result_ip(&r2.json));
    assert!(
        n1.ok("ip -o -4 addr show").contains(&result_ip(&r1.json)),
        "x_y/z lost its address"
    );
    assert!(n1.sh("ip link show z").status.success(), "x_y/z lost z");
    assert!(n2.sh("ip link show y_z").status.success());
    assert_eq!(net.allocated().len(), 2);
    assert_eq!(net.host_links().len(), 2);
    // DEL of one leaves the other.
    let r = net.call("DEL", "x", &n2, "y_z");
    assert!(r.ok, "{}", r.json);
    assert!(
        n1.sh("ip link show z").status.success(),
        "DEL x/y_z removed x_y/z"
    );
    assert_eq!(net.allocated().len(), 1);
    let r = net.call("DEL", "x_y", &n1, "z");
    assert!(r.ok, "{}", r.json);
    assert!(net.allocated().is_empty());
    assert!(net.host_links().is_empty());
}

/// Item 4: a repeat ADD of the same (container, ifname) into another namespace is refused;
/// the first namespace keeps its interface. The same namespace under another path is the
/// same attachment; an attachment whose namespace is gone is replaced.
#[test]
fn repeat_add_into_another_netns_is_refused() {
    let net = Net::new("rens", bridge_conf("10.233.0.0/24", "wbr0"));
    let (n1, n2) = (Ns::new("c"), Ns::new("c"));
    let first = net.add("c1", &n1);
    let ip = result_ip(&first);
    let r = net.call("ADD", "c1", &n2, "eth0");
    eprintln!(
        "attack: repeat ADD into another netns: ok={} code={} msg={}; first netns eth0: {}",
        r.ok,
        r.code(),
        r.msg(),
        n1.sh("ip link show eth0").status.success()
    );
    assert_refused_naming(&r, 4, &["CNI_NETNS"], "repeat ADD into another netns");
    assert!(n1.ok("ip -o -4 addr show dev eth0").contains(&ip));
    assert_eq!(n2.ok("ip -o link show").lines().count(), 1, "only lo in n2");
    assert!(ping_ok(&n1, "10.233.0.1"));

    // The same namespace through /proc/PID/ns/net: the same attachment.
    let _sleeper = n1.spawn("sleep 600");
    let mut pid = String::new();
    wait_until("a process in n1", LIVE, || {
        pid = String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["netns", "pids", &n1.name])
                .output()
                .expect("ip netns pids")
                .stdout,
        )
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
        !pid.is_empty()
    });
    let r = net.call_conf(
        "ADD",
        "c1",
        &format!("/proc/{pid}/ns/net"),
        "eth0",
        &net.conf,
    );
    assert!(r.ok, "same netns, other path: {}", r.json);
    assert_eq!(result_ip(&r.json), ip);
    drop(_sleeper);

    // The first namespace is gone (container died without DEL): the stale attachment is
    // replaced.
    drop(n1);
    let r = net.call("ADD", "c1", &n2, "eth0");
    assert!(r.ok, "after the first netns is gone: {}", r.json);
    assert!(n2.sh("ip link show eth0").status.success());
    assert_eq!(net.allocated().len(), 1, "{:?}", net.allocated());
    net.del("c1", &n2);
    assert!(net.allocated().is_empty());
    assert!(net.host_links().is_empty());
}

/// Item 4: an interface called like the container's that is not the peer of the
/// attachment's host end is not adopted.
#[test]
fn an_interface_that_is_not_the_peer_is_not_adopted() {
    let net = Net::new("peer", bridge_conf("10.234.0.0/24", "wbr0"));
    let c = Ns::new("c");
    let ip = result_ip(&net.add("c1", &c));
    // Someone renames the real one and puts an impostor in its place.
    c.ok("ip link set eth0 down && ip link set eth0 name real0 && \
          ip link add eth0 type veth peer name imp1");
    let r = net.call("ADD", "c1", &c, "eth0");
    eprintln!(
        "attack: repeat ADD with an impostor eth0: ok={} code={} msg={}; impostor addresses: {}",
        r.ok,
        r.code(),
        r.msg(),
        c.ok("ip -o -4 addr show dev eth0").trim()
    );
    assert!(!r.ok, "the impostor was adopted: {}", r.json);
    assert!(r.msg().contains("eth0"), "{}", r.msg());
    assert!(
        !c.ok("ip -o -4 addr show dev eth0").contains(&ip),
        "the impostor got the address"
    );
    net.del("c1", &c);
    assert!(net.allocated().is_empty());
}

/// Item 6: CNI_NETNS naming the plugin's own namespace (by any path) is refused, and the
/// host keeps its default route.
#[test]
fn the_hosts_own_namespace_is_refused() {
    let net = Net::new("self", bridge_conf("10.235.0.0/24", "wbr0"));
    let _outside = outside_of(&net.host);
    net.host.ok("ip route add default via 203.0.113.2");
    for netns in [
        net.host.path(),
        "/proc/self/ns/net".to_string(),
        "/proc/thread-self/ns/net".to_string(),
    ] {
        let r = net.call_conf("ADD", "self", &netns, "eth0", &net.conf);
        let route = net.host.ok("ip route show default");
        eprintln!(
            "attack: CNI_NETNS={netns} (the host's own): ok={} code={} msg={}; host default route: {}",
            r.ok,
            r.code(),
            r.msg(),
            route.trim()
        );
        let del = net.call_conf("DEL", "self", &netns, "eth0", &net.conf);
        let after = net.host.ok("ip route show default");
        assert_refused_naming(&r, 4, &["CNI_NETNS"], &netns);
        assert!(del.ok, "DEL: {}", del.json);
        assert!(
            after.contains("via 203.0.113.2"),
            "{netns}: the host lost its default route: {after:?}"
        );
        assert!(net.host_links().is_empty());
        assert!(net.allocated().is_empty());
    }
}

/// Item 6: names that escape the data directory, names the kernel expands, names too long
/// for the kernel: refused with the error naming the field, nothing created.
#[test]
fn names_that_escape_or_expand_are_refused() {
    let net = Net::new("names", bridge_conf("10.236.0.0/24", "wbr0"));
    let c = Ns::new("c");
    let data = net.data.path.join("sub");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["..", ".", ".hidden", "-x", "a/b", "a b", &"n".repeat(200)] {
        let mut conf = net.conf.clone();
        conf["name"] = json!(name);
        conf["dataDir"] = json!(data.display().to_string());
        for cmd in ["ADD", "DEL", "GC"] {
            let r = net.call_conf(cmd, "x", &c.path(), "eth0", &conf);
            if cmd == "ADD" {
                eprintln!(
                    "attack: network name {name:?}: ok={} code={} msg={}",
                    r.ok,
                    r.code(),
                    r.msg()
                );
            }
            assert_refused_naming(&r, 7, &["name"], &format!("{cmd} with network {name:?}"));
        }
        let left: Vec<String> = std::fs::read_dir(&net.data.path)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "sub")
            .collect();
        assert!(
            left.is_empty(),
            "network {name:?} wrote {left:?} outside dataDir"
        );
    }
    for ifname in ["eth%d", "%d", "e%s", "eth0\u{7f}", "ethé"] {
        let r = net.call("ADD", "x", &c, ifname);
        eprintln!(
            "attack: CNI_IFNAME={ifname:?}: ok={} code={} msg={}; container links: {}",
            r.ok,
            r.code(),
            r.msg(),
            c.ok("ip -o link show").lines().count()
        );
        assert_refused_naming(&r, 4, &["CNI_IFNAME"], ifname);
        let _ = net.call("DEL", "x", &c, ifname);
    }
    let r = net.call("ADD", &"c".repeat(300), &c, "eth0");
    assert_refused_naming(&r, 4, &["CNI_CONTAINERID"], "a 300-character container id");
    assert_eq!(c.ok("ip -o link show").lines().count(), 1, "only lo");
    assert!(net.allocated().is_empty());
    assert!(net.host_links().is_empty());
}

/// Item 5: a container holds an established TCP connection; after its DEL no conntrack
/// entry with its address is left, also not once a new container has the same address.
fn reused_address_inherits_no_flow(net: &Net, py: &Py, ip: &str) {
    let outside = outside_of(&net.host);
    track_connections(&net.host);
    // The outside routes the containers' subnet back through the host (no NAT needed).
    outside.ok("ip route add 10.0.0.0/8 via 203.0.113.1");
    let _park = outside.spawn(&py.cmd("tcp-park 9000"));
    let args = [("CNI_ARGS", format!("IP={ip}"))];
    let env: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let old = Ns::new("old");
    let r = exec_plugin(
        weft_cni_bin(),
        &net.host.path(),
        "ADD",
        "old",
        &old.path(),
        "eth0",
        &net.conf,
        &env,
    );
    assert!(r.ok, "ADD old: {}", r.json);
    assert_eq!(result_ip(&r.json), ip);
    let _hold = old.spawn(&py.cmd("tcp-hold 203.0.113.2 9000"));
    wait_until("the old container's established flow", LIVE, || {
        conntrack(&net.host, &format!("-p tcp -s {ip}")).contains("ESTABLISHED")
    });
    net.del("old", &old);
    let left =
        conntrack(&net.host, &format!("-s {ip}")) + &conntrack(&net.host, &format!("-d {ip}"));
    eprintln!("attack: conntrack entries of {ip} after its container's DEL: {left:?}");
    assert_eq!(left.trim(), "", "entries of the old container left");
    let new = Ns::new("new");
    let r = exec_plugin(
        weft_cni_bin(),
        &net.host.path(),
        "ADD",
        "new",
        &new.path(),
        "eth0",
        &net.conf,
        &env,
    );
    assert!(r.ok, "ADD new: {}", r.json);
    assert_eq!(result_ip(&r.json), ip);
    assert_eq!(
        conntrack(&net.host, &format!("-s {ip}")).trim(),
        "",
        "the new container inherited a flow"
    );
    net.del("new", &new);
}

#[test]
fn reused_address_inherits_no_flow_bridge() {
    let py = Py::new();
    let net = Net::new("ctb", bridge_conf("10.237.0.0/24", "wbr0"));
    reused_address_inherits_no_flow(&net, &py, "10.237.0.50");
}

#[test]
fn reused_address_inherits_no_flow_overlay() {
    let py = Py::new();
    let net = Net::overlay("cto", "10.255.37.0/24");
    reused_address_inherits_no_flow(&net, &py, "10.255.37.50");
}

/// Item 5: a UDP host port moves from one container to another (by DEL, by a repeat ADD
/// that drops the mapping); the same flow from outside reaches the new holder, and no
/// conntrack entry leads to the old one. A flow that hit the host port before anyone mapped
/// it does not keep the new holder from getting it either.
fn udp_host_port_follows_its_mapping(net: &Net, py: &Py) {
    let outside = outside_of(&net.host);
    let map = with_ports(&net.conf, &[pm("udp", 5300, 53, None)]);
    let holders: Vec<Ns> = (0..3).map(|_| Ns::new("h")).collect();
    let mut servers = Vec::new();
    let mut ips = Vec::new();
    let add = |i: usize, conf: &Value| {
        let r = net.call_conf("ADD", &format!("h{i}"), &holders[i].path(), "eth0", conf);
        assert!(r.ok, "ADD h{i}: {}", r.json);
        result_ip(&r.json)
    };
    let send = |sport: u16| py.udp_send(&outside, "203.0.113.1", 5300, sport, 20);

    ips.push(add(0, &map));
    servers.push(py.serve_udp(&holders[0], 53, "h0"));
    let got = send(40000);
    assert!(
        got.get("h0").copied().unwrap_or(0) >= 15,
        "h0 first: {got:?}"
    );

    // Move by DEL: h0 goes, h1 maps the port; the same flow must reach h1.
    let r = net.call_conf("DEL", "h0", &holders[0].path(), "eth0", &map);
    assert!(r.ok);
    ips.push(add(1, &map));
    servers.push(py.serve_udp(&holders[1], 53, "h1"));
    let got = send(40000);
    eprintln!("attack: UDP flow after the host port moved h0 -> h1 (DEL): {got:?}");
    assert!(
        got.get("h1").copied().unwrap_or(0) >= 15,
        "after DEL: {got:?}"
    );
    assert!(
        !conntrack(&net.host, "-p udp --orig-port-dst 5300").contains(&format!("src={} ", ips[0])),
        "an entry still leads to h0"
    );

    // Move by a repeat ADD without the mapping: h1 stays, h2 maps the port.
    let r = net.call_conf("ADD", "h1", &holders[1].path(), "eth0", &net.conf);
    assert!(r.ok, "repeat ADD of h1 without mappings: {}", r.json);
    ips.push(add(2, &map));
    servers.push(py.serve_udp(&holders[2], 53, "h2"));
    let got = send(40000);
    eprintln!("attack: UDP flow after the host port moved h1 -> h2 (repeat ADD): {got:?}");
    assert!(
        got.get("h2").copied().unwrap_or(0) >= 15,
        "after repeat ADD: {got:?}"
    );
    assert!(
        !conntrack(&net.host, "-p udp --orig-port-dst 5300").contains(&format!("src={} ", ips[1])),
        "an entry still leads to h1"
    );

    // A flow that hit 5301 before anyone mapped it (tracked, answered by nobody).
    let got = py.udp_send(&outside, "203.0.113.1", 5301, 40001, 5);
    assert!(got.is_empty(), "{got:?}");
    let late = Ns::new("l");
    let r = net.call_conf(
        "ADD",
        "late",
        &late.path(),
        "eth0",
        &with_ports(&net.conf, &[pm("udp", 5301, 53, None)]),
    );
    assert!(r.ok, "{}", r.json);
    let _late_srv = py.serve_udp(&late, 53, "late");
    let got = py.udp_send(&outside, "203.0.113.1", 5301, 40001, 20);
    eprintln!("attack: UDP flow tracked before the port was mapped: {got:?}");
    assert!(got.get("late").copied().unwrap_or(0) >= 15, "{got:?}");
    drop(servers);
}

#[test]
fn udp_host_port_follows_its_mapping_bridge() {
    let py = Py::new();
    let net = Net::new("udpb", bridge_conf("10.238.0.0/24", "wbr0"));
    udp_host_port_follows_its_mapping(&net, &py);
}

#[test]
fn udp_host_port_follows_its_mapping_overlay() {
    let py = Py::new();
    let net = Net::overlay("udpo", "10.255.38.0/24");
    udp_host_port_follows_its_mapping(&net, &py);
}

/// A container crafts frames to its gateway with a loopback destination (CVE-2020-8558's
/// class): port mappings turn route_localnet on where the host's own connections to
/// 127.0.0.1 leave for the container (the bridge, the overlay veth), which would let them in
/// to the host's 127.0.0.1-only services. The ports table drops them.
fn loopback_is_not_reachable_from_a_container(net: &Net) {
    let py = Py::new();
    let c = Ns::new("c");
    let conf = with_ports(&net.conf, &[pm("tcp", 8080, 80, None)]);
    let r = net.call_conf("ADD", "c", &c.path(), "eth0", &conf);
    assert!(r.ok, "{}", r.json);
    let ip = result_ip(&r.json);
    // The MAC the container sends to: the bridge's (bridge mode) or the host end's (overlay).
    let gw_mac = r.json["interfaces"][0]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let secret = net.host.spawn(&py.cmd("udp-log 127.0.0.1 9999"));
    wait_until("the host's loopback service", LIVE, || {
        net.host.ok("ss -lunH").contains("127.0.0.1:9999")
    });
    let forge = format!(
        "/usr/bin/python3 -c 'from scapy.all import *; \
         sendp(Ether(src=get_if_hwaddr(\"eth0\"), dst=\"{gw_mac}\")/IP(src=\"{ip}\", dst=\"127.0.0.1\")/UDP(sport=1234, dport=9999)/b\"x\", \
         iface=\"eth0\", count=5, inter=0.05, verbose=False)'"
    );
    c.ok(&forge);
    std::thread::sleep(Duration::from_millis(300));
    let (got, _) = secret.finish();
    eprintln!(
        "attack: forged 127.0.0.1 destination from a container ({}): the host's loopback service got {:?}",
        net.conf["mode"].as_str().unwrap_or("bridge"),
        got.lines().filter(|l| l.starts_with("got")).count()
    );
    assert!(
        !got.contains("got"),
        "the host's 127.0.0.1 service was reached: {got}"
    );
    // The host's own connection through 127.0.0.1 still works.
    let _srv = py.serve_tcp(&c, 80, "c");
    assert_eq!(py.tcp_get_eventually(&net.host, "127.0.0.1", 8080), "c");
    let r = net.call_conf("DEL", "c", &c.path(), "eth0", &conf);
    assert!(r.ok);
}

#[test]
fn loopback_is_not_reachable_from_a_container_bridge() {
    let net = Net::new("lob", bridge_conf("10.239.0.0/24", "wbr0"));
    loopback_is_not_reachable_from_a_container(&net);
}

#[test]
fn loopback_is_not_reachable_from_a_container_overlay() {
    let net = Net::overlay("loo", "10.255.39.0/24");
    loopback_is_not_reachable_from_a_container(&net);
}

/// Item 4's upgrade path: state as an older weft-cni left it (records named
/// `<cid>_<if>.json`, overlay addresses under the network, host ports in the bridge
/// network's own table without holders) keeps its containers: their addresses and ports
/// are not handed out again, DEL still removes everything.
#[test]
fn state_of_an_older_version_is_kept_and_deleted() {
    let py = Py::new();
    // Bridge mode, with a host port.
    let net = Net::new("upb", bridge_conf("10.240.0.0/24", "wbr0"));
    let outside = outside_of(&net.host);
    let old = Ns::new("old");
    let conf = with_ports(&net.conf, &[pm("tcp", 8080, 80, None)]);
    let r = net.call_conf("ADD", "old", &old.path(), "eth0", &conf);
    assert!(r.ok, "{}", r.json);
    let old_ip = result_ip(&r.json);
    let _srv = py.serve_tcp(&old, 80, "old");
    let att = net.state_dir().join("attachments");
    std::fs::rename(att.join("old:eth0.json"), att.join("old_eth0.json")).unwrap();
    // The network's table as the older version wrote it: the host ports in its own maps.
    let table = format!("weft-{}", net_name(&net.conf));
    let old_table = format!(
        "table inet {table} {{\n comment \"weft 10.240.0.0/24 masq=true\"\n\
         map pm_any {{ type inet_proto . inet_service : ipv4_addr . inet_service; elements = {{ tcp . 8080 : {old_ip} . 80 }} }}\n\
         map pm_ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}\n\
         chain prerouting {{ type nat hook prerouting priority -100; \
           fib daddr type local dnat ip to meta l4proto . th dport map @pm_any; }}\n\
         chain postrouting {{ type nat hook postrouting priority 100; \
           ip saddr 10.240.0.0/24 ip daddr != 10.240.0.0/24 masquerade fully-random; }}\n}}\n"
    );
    let script = net.data.path.join("old-table.nft");
    std::fs::write(&script, old_table).unwrap();
    net.host.ok(&format!(
        "nft delete table inet weft-ports && nft delete table inet {table} && nft -f {}",
        script.display()
    ));
    std::fs::remove_file(net.state_dir().join("firewall")).unwrap();
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8080), "old");
    // The first ADD of the new version rewrites the network's table: the port stays.
    let plain = Ns::new("plain");
    net.add("plain", &plain);
    assert!(net
        .host
        .ok(&format!("nft list table inet {table}"))
        .contains("weft v2"));
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8080), "old");
    net.del("plain", &plain);
    let new = Ns::new("new");
    let r = net.call_conf("ADD", "new", &new.path(), "eth0", &conf);
    assert_refused_naming(
        &r,
        103,
        &[&format!("{old_ip}:80"), "older"],
        "the old container's port",
    );
    assert_eq!(py.tcp_get_eventually(&outside, "203.0.113.1", 8080), "old");
    let r = net.call_conf("DEL", "old", &old.path(), "eth0", &conf);
    assert!(r.ok, "DEL of the old container: {}", r.json);
    assert_eq!(port_elements(&net.host), "");
    assert!(net.host_links().is_empty(), "{:?}", net.host_links());
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert_eq!(std::fs::read_dir(&att).unwrap().count(), 0);
    let r = net.call_conf("ADD", "new", &new.path(), "eth0", &conf);
    assert!(r.ok, "the port after the old container's DEL: {}", r.json);
    let r = net.call_conf("DEL", "new", &new.path(), "eth0", &conf);
    assert!(r.ok);

    // Overlay mode: the old container's address was held under the network.
    let ov = Net::overlay("upo", "10.255.41.0/24");
    let old = Ns::new("old");
    let r = ov.call("ADD", "old", &old, "eth0");
    assert!(r.ok, "{}", r.json);
    let old_ip = result_ip(&r.json);
    let legacy_ips = ov.state_dir().join("ips");
    std::fs::create_dir_all(&legacy_ips).unwrap();
    std::fs::remove_file(ov.ip_space().join("ips").join(&old_ip)).unwrap();
    std::fs::write(legacy_ips.join(&old_ip), "old\neth0\n").unwrap();
    let att = ov.state_dir().join("attachments");
    std::fs::rename(att.join("old:eth0.json"), att.join("old_eth0.json")).unwrap();
    // The lease space's round robin would hand out the old address next.
    std::fs::remove_file(ov.ip_space().join("ips").join("last_reserved.0")).unwrap();
    let new = Ns::new("new");
    let r = ov.call("ADD", "new", &new, "eth0");
    assert!(r.ok, "{}", r.json);
    let new_ip = result_ip(&r.json);
    eprintln!("attack: overlay ADD after an upgrade: old container {old_ip}, new one {new_ip}");
    assert_ne!(
        new_ip, old_ip,
        "the old container's address was handed out again"
    );
    assert!(!legacy_ips.exists());
    let r = ov.call("DEL", "old", &old, "eth0");
    assert!(r.ok, "{}", r.json);
    assert_eq!(ov.allocated(), vec![new_ip]);
    assert_eq!(ov.host_links().len(), 1);
    ov.del("new", &new);
    assert!(ov.allocated().is_empty());
}
