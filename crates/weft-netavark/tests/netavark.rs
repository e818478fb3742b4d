//! weft as netavark's plugin, driven by the real netavark (as podman 5 drives it), side by
//! side with netavark's own bridge driver: create, containers talking, a published port
//! reached from outside the host, podman's static addresses and MAC, two networks on one
//! container, host port conflicts, teardown leaving nothing, twice.
//!
//! Every test skips (printing why) only when no netavark binary is installed.

#[path = "../../weft/tests/common/mod.rs"]
mod common;
mod support;

use common::{outside_of, ping_ok, Ns};
use serde_json::{json, Value};
use support::*;

#[test]
fn netavark_create_completes_and_checks_a_weft_network() {
    let Some(nv) = Netavark::new("nvc") else {
        return;
    };
    let net = nv.weft_network("wcreate", "10.91.0.0/24");
    assert_eq!(net["driver"], "weft");
    assert_eq!(net["id"], id64("wcreate"));
    assert_eq!(net["subnets"][0]["gateway"], "10.91.0.1");
    assert_eq!(net["ipam_options"]["driver"], "host-local");
    let bridge = net["network_interface"].as_str().unwrap();
    assert!(bridge.starts_with("wfb") && bridge.len() <= 15, "{bridge}");
    assert!(
        net.get("created").is_some(),
        "netavark's own fields stay: {net}"
    );

    // The plugin's errors reach podman's user through netavark, naming the field.
    let r = nv.run(
        &["create"],
        &create_input(json!({
            "name": "wbad", "id": id64("wbad"), "driver": "weft",
            "subnets": [{ "subnet": "10.91.0.0/24" }],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "options": { "colour": "blue" },
        })),
    );
    assert!(!r.ok);
    assert!(
        r.error().contains("options.colour: unknown weft option"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = nv.run(
        &["create"],
        &create_input(json!({
            "name": "wnosub", "id": id64("wnosub"), "driver": "weft",
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
        })),
    );
    assert!(
        !r.ok
            && r.error()
                .contains("subnets: weft's bridge mode needs a subnet"),
        "{}",
        r.error()
    );
}

/// Two containers on one network, one publishing a port: they reach each other, the port is
/// reached from outside the host, teardown leaves nothing. Run for netavark's bridge driver
/// and for weft, the same way.
fn two_containers_and_a_port(driver: &str) {
    let Some(nv) = Netavark::new(&format!("nv{}", &driver[..1])) else {
        return;
    };
    let outside = outside_of(&nv.host);
    let net = match driver {
        "bridge" => nv.bridge_network("nvbr", "nvbr0", "10.92.0.0/24"),
        _ => nv.weft_network("nvweft", "10.92.0.0/24"),
    };
    let name = net["name"].as_str().unwrap().to_string();
    let (c1, c2) = (Ns::new("c1"), Ns::new("c2"));
    let (id1, id2) = (id64(&format!("{driver}1")), id64(&format!("{driver}2")));
    let in1 = container(
        &id1,
        &[Attach {
            network: &net,
            ifname: "eth0",
            static_ip: Some("10.92.0.2"),
            static_mac: None,
        }],
        Value::Null,
    );
    let in2 = container(
        &id2,
        &[Attach {
            network: &net,
            ifname: "eth0",
            static_ip: Some("10.92.0.3"),
            static_mac: Some("aa:bb:cc:dd:aa:03"),
        }],
        port(18080, 8080),
    );
    let r1 = nv.setup(&c1, &in1);
    assert!(r1.ok, "{driver} setup c1: {} {}", r1.stdout, r1.stderr);
    let r2 = nv.setup(&c2, &in2);
    assert!(r2.ok, "{driver} setup c2: {} {}", r2.stdout, r2.stderr);
    // podman's IPAM choice and MAC, in the status block and in the kernel.
    assert_eq!(
        status_ip(&r1.json, &name, "eth0"),
        "10.92.0.2",
        "{}",
        r1.json
    );
    assert_eq!(status_ip(&r2.json, &name, "eth0"), "10.92.0.3");
    assert_eq!(
        r2.json[&name]["interfaces"]["eth0"]["mac_address"],
        "aa:bb:cc:dd:aa:03"
    );
    assert_eq!(
        r2.json[&name]["interfaces"]["eth0"]["subnets"][0]["gateway"],
        "10.92.0.1"
    );
    assert!(c2.ok("ip -o link show eth0").contains("aa:bb:cc:dd:aa:03"));
    assert!(c2.ok("ip -o -4 addr show eth0").contains("10.92.0.3/24"));
    assert!(c2.ok("ip route show default").contains("via 10.92.0.1"));

    assert!(ping_ok(&c1, "10.92.0.3"), "{driver}: c1 cannot reach c2");
    let _srv = serve(&c2, 8080, "hello-from-c2");
    assert_eq!(
        tcp_get(&c1, "10.92.0.3", 8080).as_deref(),
        Some("hello-from-c2"),
        "{driver}: c1 -> c2:8080"
    );
    assert_eq!(
        tcp_get(&outside, "203.0.113.1", 18080).as_deref(),
        Some("hello-from-c2"),
        "{driver}: outside -> host:18080 -> c2:8080"
    );

    if driver == "weft" {
        // The same host port for another container: refused, naming the holder, and the
        // refused container leaves nothing behind.
        let c3 = Ns::new("c3");
        let id3 = id64("weft3");
        let in3 = container(
            &id3,
            &[Attach {
                network: &net,
                ifname: "eth0",
                static_ip: Some("10.92.0.4"),
                static_mac: None,
            }],
            port(18080, 80),
        );
        let r3 = nv.setup(&c3, &in3);
        assert!(!r3.ok);
        assert!(
            r3.error().contains(&id2[..12]),
            "the error names the holder: {}",
            r3.error()
        );
        assert_eq!(
            records(&nv.data.path).len(),
            2,
            "the refused container left a record"
        );
        assert_eq!(
            tcp_get(&outside, "203.0.113.1", 18080).as_deref(),
            Some("hello-from-c2"),
            "the holder keeps its port"
        );
        // Records say what the agent and `weft containers` read.
        let recs = records(&nv.data.path);
        assert!(
            recs.iter().all(|p| p.to_string_lossy().contains(&name)),
            "{recs:?}"
        );
    }

    for (ns, input) in [(&c1, &in1), (&c2, &in2)] {
        let r = nv.teardown(ns, input);
        assert!(r.ok, "{driver} teardown: {} {}", r.stdout, r.stderr);
    }
    assert_eq!(
        tcp_get(&outside, "203.0.113.1", 18080),
        None,
        "{driver}: the port outlived teardown"
    );
    if driver == "weft" {
        let bridge = net["network_interface"].as_str().unwrap();
        assert_eq!(
            links_named(&nv.host, &["weft", bridge]),
            Vec::<String>::new()
        );
        let tables = nft_tables(&nv.host);
        assert!(
            !tables.iter().any(|t| t.contains(&format!("weft-{name}"))),
            "{tables:?}"
        );
        assert_eq!(records(&nv.data.path), Vec::<std::path::PathBuf>::new());
        let ports = nv.host.sh("nft list table inet weft-ports");
        let ports = String::from_utf8_lossy(&ports.stdout);
        assert!(!ports.contains("18080"), "port elements left: {ports}");
        // A second teardown (podman retries after a crash) is fine and changes nothing.
        let r = nv.teardown(&c2, &in2);
        assert!(r.ok, "second teardown: {} {}", r.stdout, r.stderr);
    }
}

#[test]
fn two_containers_and_a_published_port_with_netavarks_bridge_driver() {
    two_containers_and_a_port("bridge");
}

#[test]
fn two_containers_and_a_published_port_with_weft() {
    two_containers_and_a_port("weft");
}

#[test]
fn one_container_on_two_weft_networks() {
    let Some(nv) = Netavark::new("nv2") else {
        return;
    };
    let outside = outside_of(&nv.host);
    let a = nv.weft_network("wa", "10.93.0.0/24");
    let b = nv.weft_network("wb", "10.94.0.0/24");
    let (x, y) = (Ns::new("x"), Ns::new("y"));
    let (idx, idy) = (id64("multi-x"), id64("multi-y"));
    // x on both networks (podman's addresses on a, weft's own choice on b), publishing a
    // port; y on b only.
    let inx = container(
        &idx,
        &[
            Attach {
                network: &a,
                ifname: "eth0",
                static_ip: Some("10.93.0.10"),
                static_mac: None,
            },
            Attach {
                network: &b,
                ifname: "eth1",
                static_ip: None,
                static_mac: None,
            },
        ],
        port(18081, 8081),
    );
    let iny = container(
        &idy,
        &[Attach {
            network: &b,
            ifname: "eth0",
            static_ip: Some("10.94.0.20"),
            static_mac: None,
        }],
        Value::Null,
    );
    let rx = nv.setup(&x, &inx);
    assert!(rx.ok, "setup x: {} {}", rx.stdout, rx.stderr);
    let ry = nv.setup(&y, &iny);
    assert!(ry.ok, "setup y: {} {}", ry.stdout, ry.stderr);
    assert_eq!(
        status_ip(&rx.json, "wa", "eth0"),
        "10.93.0.10",
        "{}",
        rx.json
    );
    let xb = status_ip(&rx.json, "wb", "eth1");
    assert!(xb.starts_with("10.94.0."), "{}", rx.json);
    assert!(x
        .ok("ip -o -4 addr show eth1")
        .contains(&format!("{xb}/24")));
    assert!(
        ping_ok(&x, "10.94.0.20"),
        "x cannot reach y over its second network"
    );
    assert!(ping_ok(&y, &xb), "y cannot reach x");
    // The port is held once (by the first network) and reaches x.
    let _srv = serve(&x, 8081, "hello-from-x");
    assert_eq!(
        tcp_get(&outside, "203.0.113.1", 18081).as_deref(),
        Some("hello-from-x")
    );
    assert_eq!(records(&nv.data.path).len(), 3);

    for (ns, input) in [(&x, &inx), (&y, &iny), (&x, &inx)] {
        let r = nv.teardown(ns, input);
        assert!(r.ok, "teardown: {} {}", r.stdout, r.stderr);
    }
    let bridges = [
        a["network_interface"].as_str().unwrap(),
        b["network_interface"].as_str().unwrap(),
    ];
    assert_eq!(
        links_named(&nv.host, &["weft", bridges[0], bridges[1]]),
        Vec::<String>::new()
    );
    assert!(!nft_tables(&nv.host).iter().any(|t| t.contains("weft-w")));
    assert_eq!(records(&nv.data.path), Vec::<std::path::PathBuf>::new());
    assert_eq!(tcp_get(&outside, "203.0.113.1", 18081), None);
}

#[test]
fn the_plugin_answers_info_and_refuses_what_it_cannot_read() {
    // Without netavark: the plugin's own protocol (these run always).
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new(plugin_bin())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The plugin stops reading past its bound: a broken pipe here is expected.
        let _ = c.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = c.wait_with_output().unwrap();
        let j: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), j)
    };
    let (ok, j) = run(&["info"], "");
    assert!(ok);
    assert_eq!(j["api_version"], "1.0.0");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    let (ok, j) = run(&["setup"], "{}");
    assert!(!ok);
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("network namespace path"),
        "{j}"
    );
    let (ok, j) = run(&["frobnicate"], "");
    assert!(!ok && j["error"].as_str().unwrap().contains("unknown subcommand"));
    let (ok, j) = run(&["create"], "{not json");
    assert!(!ok && j["error"].is_string());
    let (ok, j) = run(
        &["setup", "/run/netns/none"],
        r#"{"container_id":"x","network":{"name":"n","id":"i","driver":"weft"},"network_options":{}}"#,
    );
    assert!(!ok);
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("network_options: missing field `interface_name`"),
        "{j}"
    );
    let big = "x".repeat((weft_netavark::MAX_INPUT + 10) as usize);
    let (ok, j) = run(&["create"], &big);
    assert!(
        !ok && j["error"].as_str().unwrap().starts_with("stdin: more than"),
        "{j}"
    );
}
