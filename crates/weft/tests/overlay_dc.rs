//! Issue 4's tests: a simulated data centre on one machine (see `common/dc/mod.rs`): an underlay
//! bridge in its own namespace, cells (namespaces, each running its own `weft agent`), one
//! `weft controller` and containers attached with weft-cni in overlay mode. Seed 000's
//! dataflow: a container on cell 1 talks to a container's overlay IP on cell 2; the packet
//! leaves through the container's veth, goes to the cell's VTEP, is encapsulated to the other
//! cell's underlay address, crosses the underlay, is decapsulated and delivered.
//!
//! Each scenario is its own `#[test]` with its own data centre, so they run in parallel. All
//! addresses (198.18.0.0/24 underlay, 10.255.0.0/16 overlay, 203.0.113.0/24 "internet")
//! exist only inside namespaces the tests make; waits are bounded liveness waits, never speed
//! assertions (timings are printed).
mod common;
#[path = "common/dc/mod.rs"]
mod dc;
#[path = "common/overlay.rs"]
mod overlay;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{ping_ok, wait_until, Ns};
use dc::{Container, Dc, DcOptions, Proc, INTERNET_IP, LIVE, VTEP};
use nix::sys::signal::Signal;
use overlay::*;
use serde_json::Value;

/// (a) Three cells, two containers each: every container reaches every other, by ping and
/// TCP, on the same cell and across cells. Also checks the kernel state the issue specifies:
/// the VTEP (VXLAN, VNI 1, port 4789, GBP on, learning off, MTU = underlay - 50, overlay
/// address), the routed point-to-point container link (a /32, default via 169.254.0.1, ARP
/// off with permanent neighbours on both ends, host route to the /32), and the NAT table.
#[test]
fn three_cells_every_container_reaches_every_other() {
    let dc = Dc::new(3);
    let mut cts = Vec::new();
    for cell in 1..=3 {
        for k in 1..=2 {
            cts.push(dc.add_container(cell, &format!("c{cell}k{k}"), &format!("app-{cell}-{k}")));
        }
    }
    let _servers: Vec<Proc> = cts
        .iter()
        .map(|c| dc.echo_server(&c.ns, ECHO_PORT))
        .collect();

    // Addresses come from each cell's lease; cells have distinct subnets.
    let subnets: BTreeSet<String> = (1..=3)
        .map(|n| dc.cell(n).subnet().expect("lease"))
        .collect();
    assert_eq!(subnets.len(), 3, "distinct subnets per cell: {subnets:?}");
    for c in &cts {
        let subnet = dc.cell(c.cell).subnet().expect("lease");
        let prefix = subnet.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
        assert!(
            c.ip.starts_with(&format!("{prefix}.")),
            "{} has {} outside its cell's subnet {subnet}",
            c.id,
            c.ip
        );
    }

    let refs: Vec<&Container> = cts.iter().collect();
    assert_full_reachability(&dc, &refs);

    // The VTEP, as the issue specifies it.
    let cell = dc.cell(1);
    let link = ip_json(&cell.ns, &format!("ip -d -j link show {VTEP}"));
    let info = &link[0]["linkinfo"];
    assert_eq!(info["info_kind"], "vxlan", "{link}");
    let data = &info["info_data"];
    assert_eq!(data["id"], 1, "VNI: {data}");
    assert_eq!(data["port"], 4789, "VXLAN port: {data}");
    assert_eq!(data["local"], "198.18.0.1", "local: {data}");
    assert_eq!(data["learning"], false, "learning off: {data}");
    assert!(
        data.get("gbp").is_some_and(|g| g != &Value::Bool(false)),
        "gbp on: {data}"
    );
    assert_eq!(link[0]["mtu"], 1450, "MTU underlay 1500 - 50: {link}");
    let subnet = cell.subnet().expect("lease");
    let vtep_ip = subnet.split('/').next().unwrap_or_default();
    let addrs = ip_json(&cell.ns, &format!("ip -j addr show dev {VTEP}"));
    assert!(
        addrs[0]["addr_info"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["local"] == vtep_ip && x["prefixlen"] == 16)),
        "VTEP address {vtep_ip}/16: {addrs}"
    );
    // Route / neighbour / FDB per remote cell.
    let view = cell.vtep();
    for other in [2, 3] {
        let r = dc.cell(other).remote().expect("remote");
        assert!(
            view.knows(&r),
            "cell 1 knows cell {other} ({r:?}): {view:?}"
        );
    }
    assert_eq!(view.routes.len(), 2, "{view:?}");
    assert_eq!(view.fdb.len(), 2, "{view:?}");

    // The container side of a routed point-to-point link.
    let c = &cts[0];
    let caddr = ip_json(&c.ns, "ip -j addr show dev eth0");
    assert!(
        caddr[0]["addr_info"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["local"] == c.ip.as_str() && x["prefixlen"] == 32)),
        "container has {}/32: {caddr}",
        c.ip
    );
    assert!(
        caddr[0]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "NOARP")),
        "ARP off in the container: {caddr}"
    );
    assert_eq!(caddr[0]["mtu"], 1450, "container MTU = VTEP MTU: {caddr}");
    let routes = ip_json(&c.ns, "ip -j route show default");
    assert_eq!(routes[0]["gateway"], "169.254.0.1", "{routes}");
    let neigh = ip_json(&c.ns, "ip -j neigh show dev eth0");
    assert!(
        neigh.as_array().is_some_and(|n| n
            .iter()
            .any(|x| x["dst"] == "169.254.0.1" && x["state"].to_string().contains("PERMANENT"))),
        "permanent neighbour for the gateway: {neigh}"
    );
    // The host side: 169.254.0.1/32, ARP off, a permanent neighbour and a route for the /32.
    let hroute = ip_json(&cell.ns, &format!("ip -j route show {}/32", c.ip));
    let hdev = hroute[0]["dev"].as_str().unwrap_or_default().to_string();
    assert!(!hdev.is_empty(), "host route to {}/32: {hroute}", c.ip);
    let haddr = ip_json(&cell.ns, &format!("ip -j addr show dev {hdev}"));
    assert!(
        haddr[0]["addr_info"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["local"] == "169.254.0.1" && x["prefixlen"] == 32)),
        "host end has 169.254.0.1/32: {haddr}"
    );
    assert!(
        haddr[0]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "NOARP")),
        "ARP off on the host end: {haddr}"
    );
    let hneigh = ip_json(&cell.ns, &format!("ip -j neigh show dev {hdev}"));
    assert!(
        hneigh.as_array().is_some_and(|n| n
            .iter()
            .any(|x| x["dst"] == c.ip.as_str() && x["state"].to_string().contains("PERMANENT"))),
        "permanent neighbour for the container on the host end: {hneigh}"
    );
    // No bridge in a cell.
    let bridges = ip_json(&cell.ns, "ip -j link show type bridge");
    assert_eq!(bridges.as_array().map(Vec::len), Some(0), "{bridges}");
    // NAT: masquerade with fully random ports, for what leaves the overlay.
    let nft = cell.ns.ok("nft list table ip weft-agent");
    assert!(nft.contains("masquerade fully-random"), "{nft}");
    assert!(nft.contains("10.255.0.0/16"), "{nft}");
}

/// (b) Encapsulation is real: on the underlay bridge, cross-cell traffic is UDP to port 4789
/// between the cells' underlay addresses, carrying the containers' packets, and no packet has
/// a container address as its outer address. The VTEPs' counters rise with the traffic.
#[test]
fn encapsulation_is_real() {
    let dc = Dc::new(2);
    let a = dc.add_container(1, "enc-a", "app-a");
    let b = dc.add_container(2, "enc-b", "app-b");
    let _srv = dc.echo_server(&b.ns, ECHO_PORT);
    assert!(ping_ok(&a.ns, &b.ip), "warm-up ping");

    let pcap = dc.dir.path.join("underlay.pcap");
    let pcap_s = pcap.display().to_string();
    let cap_log = dc.dir.path.join("tcpdump.log");
    let cap = Proc::tcpdump(
        dc.underlay_ns(),
        &["-i", "br0", "-U", "-Z", "root", "-s", "256", "-w", &pcap_s],
        &cap_log,
    );
    let (tx1, rx1) = vtep_counters(&dc.cell(1).ns);
    let (tx2, rx2) = vtep_counters(&dc.cell(2).ns);

    let (sent, got) = Dc::ping_count(&a.ns, &b.ip, 20, 0.02);
    assert_eq!((sent, got), (20, 20), "ping across cells");
    let reply = dc.tcp_exchange(&a.ns, &b.ip, ECHO_PORT, "through-the-tunnel");
    assert_eq!(
        reply.as_deref().map(str::trim),
        Some(format!("{} through-the-tunnel", a.ip).as_str())
    );
    std::thread::sleep(Duration::from_millis(300));
    cap.stop(Signal::SIGINT, Duration::from_secs(5));

    let (tx1b, rx1b) = vtep_counters(&dc.cell(1).ns);
    let (tx2b, rx2b) = vtep_counters(&dc.cell(2).ns);
    assert!(
        tx1b >= tx1 + 20 && rx1b >= rx1 + 20,
        "cell 1 VTEP tx {tx1}->{tx1b} rx {rx1}->{rx1b}"
    );
    assert!(
        tx2b >= tx2 + 20 && rx2b >= rx2 + 20,
        "cell 2 VTEP tx {tx2}->{tx2b} rx {rx2}->{rx2b}"
    );

    let read = |filter: &str| -> Vec<String> {
        let out = dc
            .underlay_ns()
            .ok(&format!("tcpdump -r {pcap_s} -n -v '{filter}' 2>/dev/null"));
        // -v prints the inner packet on its own lines; join records that start with a time.
        let mut recs: Vec<String> = Vec::new();
        for l in out.lines() {
            if l.starts_with(char::is_numeric) || recs.is_empty() {
                recs.push(l.to_string());
            } else if let Some(last) = recs.last_mut() {
                last.push(' ');
                last.push_str(l.trim());
            }
        }
        recs
    };
    let forward = read("udp dst port 4789 and src host 198.18.0.1 and dst host 198.18.0.2");
    let back = read("udp dst port 4789 and src host 198.18.0.2 and dst host 198.18.0.1");
    assert!(forward.len() >= 20, "VXLAN 1->2: {forward:#?}");
    assert!(back.len() >= 20, "VXLAN 2->1: {back:#?}");
    let inner_fwd = format!("{} > {}", a.ip, b.ip);
    assert!(
        forward.iter().any(|r| r.contains("VXLAN")
            && r.contains(&inner_fwd)
            && r.contains("ICMP echo request")),
        "encapsulated ICMP {inner_fwd}: {forward:#?}"
    );
    assert!(
        forward
            .iter()
            .any(|r| r.contains(&format!("{}.", a.ip))
                && r.contains(&format!("{}.{ECHO_PORT}", b.ip))),
        "encapsulated TCP to {}:{ECHO_PORT}: {forward:#?}",
        b.ip
    );
    assert!(
        back.iter()
            .any(|r| r.contains(&format!("{} > {}", b.ip, a.ip))),
        "encapsulated replies: {back:#?}"
    );
    // Outer addresses only: BPF `host`/`net` look at the outer IP header.
    for filter in [
        format!("ip host {}", a.ip),
        format!("ip host {}", b.ip),
        "ip net 10.255.0.0/16".to_string(),
        // Unicast IPv4 on the underlay is VXLAN or agent <-> controller, nothing else
        // (ARP, IPv6 and the bridge's IGMP are link noise).
        "ip and not ip multicast and not (udp port 4789) and not (tcp port 7070)".to_string(),
    ] {
        let leaked = read(&filter);
        assert!(
            leaked.is_empty(),
            "unencapsulated overlay traffic on the underlay ({filter}): {leaked:#?}"
        );
    }
}

/// (c) A fourth cell joins: every other cell routes to it (bounded wait; the time is
/// printed), containers reach it both ways. It leaves with `--release-on-exit` (SIGTERM):
/// the agent exits cleanly, its lease is released, its VTEP and NAT table go, and every other
/// cell drops its route and neighbour entry. A fifth cell leaves by `weft leases release`
/// (agent stopped): the same. The remaining cells still reach each other. (The FDB entries
/// of departed cells: see `departed_cells_leave_no_fdb_entries`.)
#[test]
fn cell_joins_and_leaves() {
    let mut dc = Dc::new(3);
    let olds: Vec<Container> = (1..=3)
        .map(|n| dc.add_container(n, &format!("old{n}"), "app-old"))
        .collect();
    let _olds_srv: Vec<Proc> = olds
        .iter()
        .map(|c| dc.echo_server(&c.ns, ECHO_PORT))
        .collect();

    let t0 = Instant::now();
    let n4 = dc.spawn_cell(true);
    let leased = t0.elapsed();
    let t1 = Instant::now();
    wait_until(
        "cells 1-3 and 4 to route to each other",
        Duration::from_secs(10),
        || (1..=3).all(|o| dc.routes_to(o, n4) && dc.routes_to(n4, o)),
    );
    eprintln!(
        "cell {n4} joined: agent start -> lease file {leased:?}; lease -> every cell routes to it {:?}",
        t1.elapsed()
    );
    dc.wait_mesh();
    let new = dc.add_container(n4, "new4", "app-new");
    let new_srv = dc.echo_server(&new.ns, ECHO_PORT);
    let mut all: Vec<&Container> = olds.iter().collect();
    all.push(&new);
    assert_full_reachability(&dc, &all);
    drop(new_srv);
    dc.del_container(new);

    // Leave with --release-on-exit (SIGTERM).
    let r4 = dc.leave_cell(n4);
    let c4 = dc.cell_ns(n4);
    assert!(
        !c4.sh(&format!("ip link show {VTEP}")).status.success(),
        "the leaving cell removed its VTEP"
    );
    assert!(
        !c4.sh("nft list table ip weft-agent").status.success(),
        "the leaving cell removed its NAT table"
    );
    dc.wait_unrouted(&r4);
    let leases = dc.leases().expect("leases");
    assert!(
        !leases.to_string().contains("\"cell4\""),
        "lease of cell4 released: {leases}"
    );
    dc.drop_cell(n4);

    // Leave by releasing the lease at the controller.
    let n5 = dc.spawn_cell(false);
    dc.wait_mesh();
    let r5 = dc.remove_cell(n5);
    dc.wait_unrouted(&r5);
    for n in 1..=3 {
        let v = dc.cell(n).vtep();
        assert_eq!(
            v.routes.len(),
            2,
            "cell {n} routes only to the 2 others: {v:?}"
        );
    }
    let refs: Vec<&Container> = olds.iter().collect();
    assert_full_reachability(&dc, &refs);
}

/// (c') When a cell leaves (lease released by its agent, released at the controller, or
/// expired because nobody renews it), its FDB entry disappears from every other cell too,
/// like its route and neighbour entry.
#[test]
fn departed_cells_leave_no_fdb_entries() {
    let mut dc = Dc::with(DcOptions {
        cells: 5,
        lease_ttl: Some(6),
        ..Default::default()
    });
    // 5 leaves: its agent stops and its lease is released at the controller.
    let r5 = dc.remove_cell(5);
    // 4 expires: its agent is killed and nobody renews the lease.
    let r4 = dc.cell(4).remote().expect("cell 4");
    dc.kill_agent(4);
    dc.wait_forgotten(&r5);
    dc.wait_forgotten(&r4);
    for n in 1..=3 {
        let v = dc.cell(n).vtep();
        assert_eq!(
            v.fdb.len(),
            2,
            "cell {n}: FDB entries for the 2 others only: {v:?}"
        );
    }
}

/// A lease that expires (agent killed, nobody renews it) is dropped by the controller and
/// every other cell removes its route and neighbour entry; the others still route to each
/// other.
#[test]
fn expired_lease_is_unrouted() {
    let mut dc = Dc::with(DcOptions {
        cells: 3,
        lease_ttl: Some(4),
        ..Default::default()
    });
    let r3 = dc.cell(3).remote().expect("cell 3");
    dc.kill_agent(3);
    dc.wait_unrouted(&r3);
    assert!(dc.routes_to(1, 2) && dc.routes_to(2, 1));
    let leases = dc.leases().expect("leases");
    assert!(!leases.to_string().contains("\"cell3\""), "{leases}");
}

/// (f) Egress: a container reaches an "internet" namespace through its cell (masqueraded),
/// and the internet side sees the cell's underlay address, never the container's. On DEL,
/// the conntrack entries of the container's address are removed.
#[test]
fn egress_is_masqueraded_to_the_cell_address() {
    let mut dc = Dc::new(2);
    let a = dc.add_container(1, "eg-a", "app-a");
    let b = dc.add_container(2, "eg-b", "app-b");
    dc.add_internet();
    let inet_ns = dc.internet_ns();
    let srv = dc.echo_server(inet_ns, 80);
    for (c, cell_ip) in [(&a, "198.18.0.1"), (&b, "198.18.0.2")] {
        assert!(ping_ok(&c.ns, INTERNET_IP), "{} pings the internet", c.id);
        let mut reply = None;
        wait_until("TCP to the internet", LIVE, || {
            reply = dc.tcp_exchange(&c.ns, INTERNET_IP, 80, "egress");
            reply.is_some()
        });
        assert_eq!(
            reply.unwrap_or_default().trim(),
            format!("{cell_ip} egress"),
            "the internet sees cell {}'s underlay address",
            c.cell
        );
    }
    let seen = srv.output();
    assert!(
        !seen.contains("10.255."),
        "container addresses leaked: {seen}"
    );
    // The internet side has no way back to the overlay except through the masquerade.
    assert!(!inet_ns.ok("ip route").contains("10.255"));

    // DEL removes the container's conntrack entries.
    let cell = dc.cell_ns(1);
    let ct = |ip: &str| cell.sh(&format!("conntrack -L -s {ip} 2>/dev/null")).stdout;
    assert!(!ct(&a.ip).is_empty(), "conntrack has a's flows before DEL");
    let a_ip = a.ip.clone();
    dc.del_container(a);
    assert!(
        ct(&a_ip).is_empty(),
        "conntrack entries of {a_ip} gone after DEL: {}",
        String::from_utf8_lossy(&ct(&a_ip))
    );
}

/// (g) `weft containers --json` in a cell lists each container with its netns, interface
/// names on both sides, IP, app and (after the agent's resync) the app's tag: the same app
/// has the same tag on every cell, different apps different tags. A deleted container goes.
#[test]
fn weft_containers_shows_netns_interfaces_ip_app_tag() {
    let dc = Dc::new(2);
    let x1 = dc.add_container(1, "wc-x1", "app-web");
    let x2 = dc.add_container(1, "wc-x2", "app-db");
    let y1 = dc.add_container(2, "wc-y1", "app-web");
    let rows_of = |cell: usize| -> Vec<Value> {
        dc.containers_json(cell)
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_until("tags after the agents' resync", LIVE, || {
        [1, 2].iter().all(|&n| {
            let rows = rows_of(n);
            !rows.is_empty() && rows.iter().all(|r| r["tag"].is_u64())
        })
    });
    let mut tags: BTreeMap<(usize, String), u64> = BTreeMap::new();
    for c in [&x1, &x2, &y1] {
        let rows = rows_of(c.cell);
        let row = rows
            .iter()
            .find(|r| r["container_id"] == c.id.as_str())
            .unwrap_or_else(|| panic!("{} listed on cell {}: {rows:?}", c.id, c.cell));
        assert_eq!(row["netns"], c.ns.path().as_str(), "{row}");
        assert_eq!(row["ifname"], "eth0", "{row}");
        assert_eq!(row["mode"], "overlay", "{row}");
        assert_eq!(row["app"], c.app.as_str(), "{row}");
        let host_if = row["host_ifname"].as_str().unwrap_or_default();
        assert!(!host_if.is_empty(), "{row}");
        // The host interface exists in the cell and routes the container's /32.
        let r = ip_json(dc.cell_ns(c.cell), &format!("ip -j route show {}/32", c.ip));
        assert_eq!(
            r[0]["dev"], host_if,
            "host_ifname routes the container: {row} {r}"
        );
        let ips: Vec<String> = row["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            ips.iter()
                .any(|i| i.split('/').next() == Some(c.ip.as_str())),
            "{row}"
        );
        let tag = row["tag"].as_u64().expect("tag");
        tags.insert((c.cell, c.app.clone()), tag);
    }
    assert_eq!(
        tags[&(1, "app-web".to_string())],
        tags[&(2, "app-web".to_string())],
        "same app, same tag on every cell: {tags:?}"
    );
    assert_ne!(
        tags[&(1, "app-web".to_string())],
        tags[&(1, "app-db".to_string())],
        "different apps, different tags: {tags:?}"
    );
    // The human table too.
    let c1 = dc.cell(1);
    let table = c1.ns.ok(&format!(
        "{} containers --data-dir {} --lease-file {}",
        common::weft_bin(),
        c1.cni_dir().display(),
        c1.lease_file().display()
    ));
    assert!(
        table.contains(&x1.ip) && table.contains("app-db"),
        "{table}"
    );

    dc.del_container(x2);
    let rows = rows_of(1);
    assert_eq!(rows.len(), 1, "deleted container gone: {rows:?}");
}

/// The underlay switch keeps its MAC address when ports join. A Linux bridge whose address
/// was not set takes the lowest of its ports' addresses, so a cell joining with a lower one
/// changed the address of the cells' gateway (the controller's side). A host that had
/// resolved the gateway while it was another port's address went on sending to that address,
/// which the bridge takes in as addressed to another host and the IP layer drops, until the
/// host's ARP entry expired (30-60 s). Seen as the second cell's agent going silent after
/// start-up in 3-cell set-ups: its watch request never reached the controller.
///
/// Here a host joins with the highest possible port address (so the bridge does not take
/// it), resolves the gateway, then a port with the lowest possible address joins; the host
/// must still open a new connection to the controller at once.
#[test]
fn a_port_joining_the_underlay_keeps_the_gateway_reachable() {
    let dc = Dc::new(1);
    let ul = dc.underlay_ns();
    let br0 = || {
        ip_json(ul, "ip -j link show br0")[0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let host = Ns::new("host");
    ul.ok(&format!(
        "ip link add uhost address fe:ff:ff:ff:ff:fe type veth peer name eth0 netns {} && \
         ip link set uhost master br0 up",
        host.name
    ));
    host.ok(&format!(
        "ip link set lo up && ip addr add {}.200/24 dev eth0 && ip link set eth0 up && \
         ping -c 1 -W 2 {}",
        dc::UNDERLAY,
        dc::UNDERLAY_GW
    ));
    let before = br0();
    let neigh = host.ok(&format!("ip neigh show {}", dc::UNDERLAY_GW));
    ul.ok(
        "ip link add ulow address 02:00:00:00:00:01 type veth peer name ulow-peer && \
         ip link set ulow master br0 up && ip link set ulow-peer up",
    );
    assert_eq!(br0(), before, "the underlay bridge changed its address");
    let connect = format!(
        "python3 -c \"import socket; socket.create_connection(('{}', {}), timeout=3)\"",
        dc::UNDERLAY_GW,
        dc::CONTROLLER_PORT
    );
    let out = host.sh(&connect);
    assert!(
        out.status.success(),
        "a host on the underlay cannot reach the controller after a port joined (its entry \
         for the gateway: {}): {}",
        neigh.trim(),
        String::from_utf8_lossy(&out.stderr)
    );
}
