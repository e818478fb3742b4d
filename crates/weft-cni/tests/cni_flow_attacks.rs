//! Flows that outlive what they were for (issue 14): a container's address handed out again
//! inherits no conntrack entry, and a container cannot reach the host's loopback services
//! through its gateway. Bridge and overlay mode each. Every test works inside namespaces it
//! makes (see `attack_support`).

mod attack_support;
#[path = "../../weft/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use attack_support::*;
use common::*;

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
