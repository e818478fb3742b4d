//! weft-cni's identities and names attacked (issue 14): identities that collide, a repeat ADD
//! into another namespace, an interface that is not the peer, the host's own namespace as the
//! container's, names that escape the data directory or that the kernel expands, and state an
//! older weft-cni left. Every test works inside namespaces it makes (see `attack_support`).

mod attack_support;
#[path = "../../weft/tests/common/mod.rs"]
mod common;

use attack_support::*;
use common::*;
use serde_json::json;

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
