//! weft-cni's host ports attacked as a hostile or careless runtime would (issue 14): hijacks
//! across addresses, networks and modes, repeat ADDs that change mappings, overlay mappings,
//! and a UDP host port that moves between containers. Every test works inside namespaces it
//! makes (see `attack_support`); each attack prints what it got (`attack: ...`).

mod attack_support;
#[path = "../../weft/tests/common/mod.rs"]
mod common;

use attack_support::*;
use common::*;
use serde_json::json;
use serde_json::Value;

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
