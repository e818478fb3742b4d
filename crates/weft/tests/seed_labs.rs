//! The seed labs (shared/seeds 002, 003, 004) as integration tests. Where a seed does a step
//! by hand with `ip`/`iptables`, the test does it through `weft netns` / `weft-cni` and then
//! checks with `ip`, `nft`, `ping` and `curl` what a user of the seed would check.
//!
//! Every test works only inside namespaces it creates (a "host" namespace stands in for the
//! root namespace, an "internet" namespace for the outside world); the guards remove them
//! all, also when an assertion fails. Packets only ever go to addresses inside those
//! namespaces (203.0.113.0/24 and 192.0.2.0/24 are documentation ranges, used here only on
//! links the test made).
mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{ping_ok, result_ip, wait_until, weft_bin, Bg, Net, Ns, TempDir};
use serde_json::{json, Value};

/// Liveness bound for a server to come up or a fresh link to pass traffic.
const LIVE: Duration = Duration::from_secs(20);

/// A tiny HTTP server: answers every request with `<tag> peer=<client address>` (what the
/// server saw as the peer, so a test can tell masquerade from a direct connection) and
/// prints the peer on stdout.
const SERVER_PY: &str = r#"
import socket, sys
port, tag = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(64)
while True:
    c, a = s.accept()
    try:
        c.settimeout(2)
        try:
            c.recv(4096)
        except Exception:
            pass
        body = ("%s peer=%s\n" % (tag, a[0])).encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    except Exception:
        pass
    finally:
        c.close()
    print(a[0], flush=True)
"#;

/// Starts [`SERVER_PY`] on `port` inside `ns` and waits until it answers on localhost.
fn serve(ns: &Ns, dir: &TempDir, port: u16, tag: &str) -> Bg {
    let script = dir.path.join("server.py");
    if !script.exists() {
        std::fs::write(&script, SERVER_PY).expect("write server.py");
    }
    let bg = ns.spawn(&format!("python3 {} {port} {tag}", script.display()));
    wait_until(
        &format!("server {tag} on port {port} in {}", ns.name),
        LIVE,
        || {
            http(ns, &format!("http://127.0.0.1:{port}/"))
                .is_some_and(|b| b.starts_with(&format!("{tag} ")))
        },
    );
    bg
}

/// One HTTP GET from inside `ns`; `None` when it fails (refused, unreachable, timeout).
fn http(ns: &Ns, url: &str) -> Option<String> {
    let out = ns.sh(&format!("curl -sS --max-time 3 {url}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GET `url` from inside `ns` until it succeeds (bounded; a fresh veth or bridge port may
/// need a moment before it forwards) and returns the body.
fn http_eventually(ns: &Ns, url: &str) -> String {
    let mut body = None;
    wait_until(&format!("GET {url} from {}", ns.name), LIVE, || {
        body = http(ns, url);
        body.is_some()
    });
    body.unwrap_or_default()
}

/// Interface names of `ip -o link show` output (without the `@ifN` / `@peer` suffix).
fn link_names(ip_o_link: &str) -> BTreeSet<String> {
    ip_o_link
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or("").to_string())
        .collect()
}

/// `(ifindex, name, peer ifindex)` of each line of `ip -o link show` output; the peer index
/// is the `N` of `name@ifN` (a veth whose peer lives in another namespace).
fn link_entries(ip_o_link: &str) -> Vec<(u32, String, Option<u32>)> {
    ip_o_link
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(": ");
            let idx = parts.next()?.trim().parse().ok()?;
            let full = parts.next()?;
            let (name, peer) = match full.split_once('@') {
                Some((n, p)) => (n, p.strip_prefix("if").and_then(|p| p.parse().ok())),
                None => (full, None),
            };
            Some((idx, name.to_string(), peer))
        })
        .collect()
}

/// The flags between `<` and `>` of one `ip -o link show DEV` line.
fn link_flags(line: &str) -> BTreeSet<String> {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Names listed by `ip netns list` (lines look like `NAME (id: 3)` or `NAME`).
fn ip_netns_list() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        out.status.success(),
        "ip netns list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Runs `weft ARGS...` and returns stdout; panics when it fails.
fn weft(args: &[&str]) -> String {
    let out = Command::new(weft_bin())
        .args(args)
        .output()
        .expect("run weft");
    assert!(
        out.status.success(),
        "weft {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that none of `names` is left in `ip netns list` (after their guards dropped).
fn assert_no_netns_left(names: &[String]) {
    let left = ip_netns_list();
    for n in names {
        assert!(!left.contains(n), "namespace {n} is left behind: {left:?}");
    }
}

/// Gives `host` a veth to a fresh "internet" namespace: host side 203.0.113.1/24, internet
/// side 203.0.113.2/24, and the host's default route via the internet side (inside `host`
/// only). The internet namespace has no route to any container subnet, so a container's
/// packets can only come back when they leave masqueraded as 203.0.113.1.
fn internet_for(host: &Ns) -> Ns {
    let inet = Ns::new("inet");
    host.ok(&format!(
        "ip link add wup0 type veth peer name wdown0 netns {inet} && \
         ip addr add 203.0.113.1/24 dev wup0 && ip link set wup0 up && \
         ip route add default via 203.0.113.2",
        inet = inet.name
    ));
    inet.ok("ip addr add 203.0.113.2/24 dev wdown0 && ip link set wdown0 up");
    inet
}

/// Seed 002: a namespace with `lo` up, a web server inside, then a veth to a second namespace
/// acting as the root (here: weft-cni ADD, bridge mode), addresses, a default route, and the
/// web servers reached both ways.
#[test]
fn seed002_netns_lo_veth_web_both_ways() {
    let blue = Ns::by_weft_cli("blue");

    // `ip netns list` sees what `weft netns add` made, and so does `weft netns list --json`.
    assert!(
        ip_netns_list().contains(&blue.name),
        "ip netns list lacks {}",
        blue.name
    );
    let listed: Value =
        serde_json::from_str(&weft(&["netns", "list", "--json"])).expect("list --json is JSON");
    let entry = listed
        .as_array()
        .expect("list --json is an array")
        .iter()
        .find(|e| e["name"] == blue.name.as_str())
        .unwrap_or_else(|| panic!("weft netns list --json lacks {}: {listed}", blue.name));
    assert_eq!(entry["path"], blue.path().as_str());
    assert!(
        weft(&["netns", "list"])
            .lines()
            .any(|l| l.trim() == blue.name),
        "weft netns list lacks {}",
        blue.name
    );

    // The namespace is empty but for lo, and lo is up (the seed does that by hand).
    let links = weft(&[
        "netns", "exec", &blue.name, "--", "ip", "-o", "link", "show",
    ]);
    assert_eq!(
        link_names(&links),
        BTreeSet::from(["lo".to_string()]),
        "{links}"
    );
    let lo = blue.ok("ip -o link show dev lo");
    assert!(link_flags(&lo).contains("UP"), "lo is not up: {lo}");
    blue.ok("ping -c 1 -W 1 -w 3 127.0.0.1");

    // A web server inside answers on localhost (`python3 -m http.server`, as the seed does).
    let blue_www = TempDir::new("bluewww");
    let blue_marker = format!("served from {}", blue.name);
    std::fs::write(blue_www.path.join("marker.txt"), &blue_marker).expect("write marker");
    let _blue_server = blue.spawn(&format!(
        "python3 -m http.server 8080 --bind 0.0.0.0 --directory {}",
        blue_www.path.display()
    ));
    let body = http_eventually(&blue, "http://localhost:8080/marker.txt");
    assert_eq!(body, blue_marker);

    // The "root" namespace with its own web server on the same port: namespaces isolate.
    let root = Net::new(
        "root",
        json!({"bridge": "weft-s2", "ipam": {"subnet": "10.201.0.0/24"}}),
    );
    let root_www = TempDir::new("rootwww");
    let root_marker = format!("served from {}", root.host.name);
    std::fs::write(root_www.path.join("marker.txt"), &root_marker).expect("write marker");
    let _root_server = root.host.spawn(&format!(
        "python3 -m http.server 8080 --bind 0.0.0.0 --directory {}",
        root_www.path.display()
    ));
    assert_eq!(
        http_eventually(&root.host, "http://localhost:8080/marker.txt"),
        root_marker
    );
    // Before ADD there is no veth in the root.
    assert!(root
        .host
        .ok("ip -o link show")
        .lines()
        .all(|l| !l.contains("weft")));

    // weft-cni ADD: veth, address, default route (seed 002 sections 4 and 5).
    let cid = format!("{}-c", blue.name);
    let res = root.add(&cid, &blue);
    let ip = result_ip(&res);
    assert!(
        ip.starts_with("10.201.0."),
        "ADD result address {ip} not in 10.201.0.0/24: {res}"
    );
    assert_ne!(ip, "10.201.0.1", "the container got the gateway's address");
    let links = weft(&["netns", "exec", &blue.name, "--", "ip", "-br", "link"]);
    let names: BTreeSet<String> = links
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["eth0".to_string(), "lo".to_string()]),
        "{links}"
    );
    let eth0 = blue.ok("ip -o link show dev eth0");
    assert!(link_flags(&eth0).contains("UP"), "eth0 is not up: {eth0}");
    let addr = blue.ok("ip -4 -o addr show dev eth0");
    assert!(
        addr.contains(&format!("inet {ip}/24 ")),
        "eth0 lacks {ip}/24: {addr}"
    );
    let route = blue.ok("ip -4 route show default");
    assert!(
        route.contains("default via 10.201.0.1 dev eth0"),
        "no default route via the gateway: {route}"
    );
    let gw = root.host.ok("ip -4 -o addr show dev weft-s2");
    assert!(
        gw.contains("inet 10.201.0.1/24 "),
        "the root side lacks the gateway address: {gw}"
    );
    assert_eq!(
        root.host_links().len(),
        1,
        "expected one host-side veth in the root"
    );

    // Both ways: the root reaches blue's server, blue reaches the root's server.
    assert_eq!(
        http_eventually(&root.host, &format!("http://{ip}:8080/marker.txt")),
        blue_marker
    );
    assert_eq!(
        http_eventually(&blue, "http://10.201.0.1:8080/marker.txt"),
        root_marker
    );
    // And the root's own "host address" outside the veth's subnet, which only the default
    // route leads to (seed 002 section 5).
    root.host.ok("ip addr add 192.0.2.1/32 dev lo");
    assert!(
        !blue.ok("ip -4 route show").contains("192.0.2."),
        "blue has a specific route to 192.0.2.0/24; only the default route may lead there"
    );
    assert_eq!(
        http_eventually(&blue, "http://192.0.2.1:8080/marker.txt"),
        root_marker
    );
    assert!(
        ping_ok(&blue, "192.0.2.1"),
        "blue cannot ping the root's host address"
    );
    assert!(ping_ok(&root.host, &ip), "the root cannot ping blue");

    // DEL undoes it: no eth0 in blue, no weft link in the root, blue unreachable.
    root.del(&cid, &blue);
    assert_eq!(
        link_names(&blue.ok("ip -o link show")),
        BTreeSet::from(["lo".to_string()])
    );
    assert_eq!(
        root.host_links(),
        Vec::<String>::new(),
        "DEL left a weft link in the root"
    );
    assert!(
        http(&root.host, &format!("http://{ip}:8080/marker.txt")).is_none(),
        "blue still reachable after DEL"
    );

    let names = vec![blue.name.clone(), root.host.name.clone()];
    drop(_blue_server);
    drop(_root_server);
    drop(root);
    drop(blue);
    assert_no_netns_left(&names);
}

/// Seed 003: two namespaces on a bridge, ping between them and to the bridge IP, masquerade
/// to an "internet" namespace (which must see the host's address, not the container's),
/// forwarding on, and the inbound access the seed points to (port mappings, hairpin).
#[test]
fn seed003_bridge_masquerade_port_mappings() {
    let net = Net::new(
        "host",
        json!({
            "bridge": "app-net-0",
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {"subnet": "10.202.0.0/24"}
        }),
    );
    let host = &net.host;
    let table = format!("weft-{}", net.conf["name"].as_str().expect("network name"));
    let sleep = Ns::new("sleep");
    let webapp = Ns::new("webapp");
    let dir = TempDir::new("seed3");

    // Forwarding starts off in the host namespace: the plugin must turn it on.
    host.ok("sysctl -qw net.ipv4.ip_forward=0");
    assert_eq!(host.ok("cat /proc/sys/net/ipv4/ip_forward").trim(), "0");
    let inet = internet_for(host);

    // webapp publishes port 80 as the host's 8080 (runtimeConfig portMappings).
    let mut pm_conf = net.conf.clone();
    pm_conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let cid_sleep = format!("{}-c", sleep.name);
    let cid_web = format!("{}-c", webapp.name);
    let ip_sleep = result_ip(&net.add(&cid_sleep, &sleep));
    let r = net.call_conf("ADD", &cid_web, &webapp.path(), "eth0", &pm_conf);
    assert!(
        r.ok,
        "ADD webapp with port mappings: {:?} {}",
        r.json, r.stderr
    );
    let ip_web = result_ip(&r.json);
    for ip in [&ip_sleep, &ip_web] {
        assert!(
            ip.starts_with("10.202.0.") && ip != "10.202.0.1",
            "bad container address {ip}"
        );
    }
    assert_ne!(ip_sleep, ip_web, "two containers got the same address");

    // The bridge: up, with the gateway address, and exactly the two host ends as ports.
    let br = host.ok("ip -o link show dev app-net-0");
    let br_detail = host.ok("ip -d -o link show dev app-net-0");
    assert!(
        br_detail.contains(" bridge "),
        "app-net-0 is not a bridge: {br_detail}"
    );
    assert!(link_flags(&br).contains("UP"), "bridge is not up: {br}");
    let br_addr = host.ok("ip -4 -o addr show dev app-net-0");
    assert!(
        br_addr.contains("inet 10.202.0.1/24 "),
        "bridge lacks the gateway address: {br_addr}"
    );
    let host_ends: BTreeSet<String> = net.host_links().into_iter().collect();
    assert_eq!(
        host_ends.len(),
        2,
        "expected two host-side veths, got {host_ends:?}"
    );
    let ports = link_names(&host.ok("ip -o link show master app-net-0"));
    assert_eq!(ports, host_ends, "bridge ports are not the two host ends");
    let bridge_link = host.ok("bridge link show");
    for end in &host_ends {
        assert!(
            bridge_link
                .lines()
                .any(|l| l.contains(&format!(" {end}@")) && l.contains("master app-net-0")),
            "`bridge link` does not show {end} on app-net-0: {bridge_link}"
        );
    }
    // hairpinMode: the ports reflect traffic back.
    let bridge_detail = host.ok("bridge -d link show");
    assert!(
        bridge_detail.contains("hairpin on"),
        "hairpinMode not set on the ports: {bridge_detail}"
    );

    // Ping between the two and to the bridge (gateway), and from the host into the bridge.
    assert!(ping_ok(&sleep, &ip_web), "sleep cannot ping webapp");
    assert!(ping_ok(&webapp, &ip_sleep), "webapp cannot ping sleep");
    assert!(
        ping_ok(&sleep, "10.202.0.1"),
        "sleep cannot ping the bridge"
    );
    assert!(
        ping_ok(&webapp, "10.202.0.1"),
        "webapp cannot ping the bridge"
    );
    assert!(ping_ok(host, &ip_sleep), "the host cannot ping sleep");

    // Masquerade: the internet sees the host's address, not the container's.
    let _inet_server = serve(&inet, &dir, 8000, "internet");
    assert!(
        ping_ok(&webapp, "203.0.113.2"),
        "webapp cannot ping the internet"
    );
    let body = http_eventually(&sleep, "http://203.0.113.2:8000/");
    assert_eq!(
        body.trim(),
        "internet peer=203.0.113.1",
        "the internet side did not see the host's address"
    );
    let body = http_eventually(&webapp, "http://203.0.113.2:8000/");
    assert_eq!(
        body.trim(),
        "internet peer=203.0.113.1",
        "the internet side did not see the host's address"
    );
    let rules = host.ok(&format!("nft list table inet {table}"));
    assert!(
        rules.lines().any(|l| l.contains("10.202.0.0/24")
            && l.contains("masquerade")
            && !l.contains("ct status dnat")),
        "no masquerade rule for 10.202.0.0/24 in {table}: {rules}"
    );
    assert_eq!(
        host.ok("cat /proc/sys/net/ipv4/ip_forward").trim(),
        "1",
        "ip_forward not set by the plugin"
    );

    // Port mapping: host 8080 -> webapp:80 from everywhere.
    let _web_server = serve(&webapp, &dir, 80, "webapp");
    // Host ports of every network live in the host's one table, each naming its holder.
    let map = host.ok("nft list map inet weft-ports pm_any");
    assert!(
        map.contains(&format!(
            "tcp . 8080 comment \"{}/{cid_web}/eth0\" : {ip_web} . 80",
            net.conf["name"].as_str().unwrap_or_default()
        )),
        "no mapping element for 8080: {map}"
    );
    // From the internet: DNAT only, the container sees the real client.
    let body = http_eventually(&inet, "http://203.0.113.1:8080/");
    assert_eq!(body.trim(), "webapp peer=203.0.113.2", "from the internet");
    // From the host itself through the loopback address.
    let body = http_eventually(host, "http://127.0.0.1:8080/");
    assert!(
        body.starts_with("webapp peer="),
        "from the host via 127.0.0.1: {body}"
    );
    // From the other container through the host's address.
    let body = http_eventually(&sleep, "http://203.0.113.1:8080/");
    assert!(body.starts_with("webapp peer="), "from sleep: {body}");
    // From the container itself (hairpin).
    let body = http_eventually(&webapp, "http://203.0.113.1:8080/");
    assert!(
        body.starts_with("webapp peer="),
        "hairpin from webapp: {body}"
    );

    // DEL removes the mapping: no element, and the port no longer leads anywhere.
    let r = net.call_conf("DEL", &cid_web, &webapp.path(), "eth0", &pm_conf);
    assert!(r.ok, "DEL webapp: {:?} {}", r.json, r.stderr);
    let map = host.ok("nft list map inet weft-ports pm_any");
    assert!(!map.contains("8080"), "mapping left after DEL: {map}");
    assert!(
        http(&inet, "http://203.0.113.1:8080/").is_none(),
        "8080 still answers after DEL"
    );
    assert!(
        http(host, "http://127.0.0.1:8080/").is_none(),
        "127.0.0.1:8080 still answers after DEL"
    );
    assert_eq!(
        net.host_links().len(),
        1,
        "DEL webapp must leave exactly sleep's host end"
    );
    // sleep is unaffected.
    let body = http_eventually(&sleep, "http://203.0.113.2:8000/");
    assert_eq!(body.trim(), "internet peer=203.0.113.1");

    net.del(&cid_sleep, &sleep);
    assert_eq!(
        net.host_links(),
        Vec::<String>::new(),
        "DEL left a weft link in the host"
    );
    assert!(
        link_names(&host.ok("ip -o link show master app-net-0")).is_empty(),
        "bridge still has ports"
    );
    for c in [&sleep, &webapp] {
        assert_eq!(
            link_names(&c.ok("ip -o link show")),
            BTreeSet::from(["lo".to_string()]),
            "in {}",
            c.name
        );
    }

    let names = vec![
        net.host.name.clone(),
        sleep.name.clone(),
        webapp.name.clone(),
        inet.name.clone(),
    ];
    drop(_web_server);
    drop(_inet_server);
    drop(inet);
    drop(sleep);
    drop(webapp);
    drop(net);
    assert_no_netns_left(&names);
}

/// Seed 004: veth pairs; each end is visible only in its own namespace, both containers can
/// call theirs eth0, and each host end's peer lives in another namespace.
#[test]
fn seed004_veth_ends_visible_only_in_their_namespace() {
    let net = Net::new("host", json!({"ipam": {"subnet": "10.203.0.0/24"}}));
    let ns1 = Ns::new("ns1");
    let ns2 = Ns::new("ns2");
    let cid1 = format!("{}-c", ns1.name);
    let cid2 = format!("{}-c", ns2.name);
    net.add(&cid1, &ns1);
    net.add(&cid2, &ns2);

    let host_out = net.host.ok("ip -o link show");
    let host_links = link_entries(&host_out);
    let host_ends: Vec<&(u32, String, Option<u32>)> = host_links
        .iter()
        .filter(|(_, n, _)| n.starts_with("weft") && n.len() == 14)
        .collect();
    assert_eq!(host_ends.len(), 2, "expected two host ends: {host_out}");
    assert_ne!(host_ends[0].1, host_ends[1].1);
    // The host does not see the containers' ends.
    assert!(
        !host_links.iter().any(|(_, n, _)| n == "eth0"),
        "the host sees an eth0: {host_out}"
    );
    // Each host end's peer is in another namespace (`NAME@ifN`, link-netns).
    for (_, name, peer) in &host_ends {
        assert!(peer.is_some(), "{name} shows no @ifN peer: {host_out}");
        let d = net.host.ok(&format!("ip -d -o link show dev {name}"));
        assert!(d.contains("veth"), "{name} is not a veth: {d}");
        assert!(
            d.contains("link-netns"),
            "{name}'s peer is not in another namespace: {d}"
        );
    }

    let mut matched = BTreeSet::new();
    for c in [&ns1, &ns2] {
        let out = c.ok("ip -o link show");
        let entries = link_entries(&out);
        let names: BTreeSet<String> = entries.iter().map(|(_, n, _)| n.clone()).collect();
        // Only its own end (named eth0 in both) and lo; no host end, no other container's end.
        assert_eq!(
            names,
            BTreeSet::from(["eth0".to_string(), "lo".to_string()]),
            "in {}: {out}",
            c.name
        );
        let (idx, _, peer) = entries.iter().find(|(_, n, _)| n == "eth0").expect("eth0");
        let peer = peer.unwrap_or_else(|| panic!("eth0 in {} shows no @ifN peer: {out}", c.name));
        assert!(
            c.ok("ip -d -o link show dev eth0").contains("link-netns"),
            "eth0's peer in {} is local",
            c.name
        );
        // eth0@ifN points at a host end whose @ifM points back at eth0: one pair.
        let end = host_ends
            .iter()
            .find(|(hidx, _, hpeer)| *hidx == peer && *hpeer == Some(*idx))
            .unwrap_or_else(|| {
                panic!(
                    "no host end pairs with eth0 (index {idx}, peer {peer}) of {}: {host_out}",
                    c.name
                )
            });
        assert!(
            matched.insert(end.1.clone()),
            "two containers pair with the same host end {}",
            end.1
        );
        // The host end's name is unknown inside the container.
        assert!(
            !c.sh(&format!("ip link show dev {}", end.1))
                .status
                .success(),
            "{} visible in {}",
            end.1,
            c.name
        );
    }
    assert_eq!(matched.len(), 2);
    // And the container end is unknown in the host under its name.
    assert!(
        !net.host.sh("ip link show dev eth0").status.success(),
        "eth0 visible in the host"
    );

    net.del(&cid1, &ns1);
    net.del(&cid2, &ns2);
    assert_eq!(
        net.host_links(),
        Vec::<String>::new(),
        "DEL left a weft link in the host"
    );
    for c in [&ns1, &ns2] {
        assert_eq!(
            link_names(&c.ok("ip -o link show")),
            BTreeSet::from(["lo".to_string()]),
            "in {}",
            c.name
        );
    }

    let names = vec![net.host.name.clone(), ns1.name.clone(), ns2.name.clone()];
    drop(ns1);
    drop(ns2);
    drop(net);
    assert_no_netns_left(&names);
}

/// Seed 003's "inbound access" without masquerade: a port mapping must be reachable from
/// outside the host also when `ipMasq` is off (DNAT'd packets are forwarded, so the plugin
/// has to turn forwarding on for port mappings too, as it does for ipMasq).
#[test]
fn seed003_port_mapping_without_ipmasq_reached_from_outside() {
    let net = Net::new(
        "host",
        json!({"bridge": "app-net-1", "ipam": {"subnet": "10.204.0.0/24"}}),
    );
    let host = &net.host;
    let webapp = Ns::new("webapp");
    let dir = TempDir::new("seed3pm");
    host.ok("sysctl -qw net.ipv4.ip_forward=0");
    let inet = internet_for(host);
    let mut pm_conf = net.conf.clone();
    pm_conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let cid = format!("{}-c", webapp.name);
    let r = net.call_conf("ADD", &cid, &webapp.path(), "eth0", &pm_conf);
    assert!(
        r.ok,
        "ADD webapp with port mappings: {:?} {}",
        r.json, r.stderr
    );
    let web_server = serve(&webapp, &dir, 80, "webapp");
    // From the host itself it works (no forwarding involved) ...
    let body = http_eventually(host, "http://127.0.0.1:8080/");
    assert!(
        body.starts_with("webapp peer="),
        "from the host via 127.0.0.1: {body}"
    );
    // ... and from the internet it must too.
    let body = http_eventually(&inet, "http://203.0.113.1:8080/");
    assert_eq!(body.trim(), "webapp peer=203.0.113.2", "from the internet");
    assert_eq!(host.ok("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");

    let r = net.call_conf("DEL", &cid, &webapp.path(), "eth0", &pm_conf);
    assert!(r.ok, "DEL webapp: {:?} {}", r.json, r.stderr);
    assert_eq!(
        net.host_links(),
        Vec::<String>::new(),
        "DEL left a weft link in the host"
    );

    let names = vec![
        net.host.name.clone(),
        webapp.name.clone(),
        inet.name.clone(),
    ];
    drop(web_server);
    drop(inet);
    drop(webapp);
    drop(net);
    assert_no_netns_left(&names);
}
