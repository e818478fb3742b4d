//! weft-cni driven exactly as a runtime drives it: every command, the error paths, chaining,
//! idempotency, DEL after the container is gone, GC of stale state.

#[path = "../../weft/tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::{json, Value};

fn bridge_conf(subnet: &str) -> Value {
    json!({ "cniVersion": "1.1.0", "bridge": "wbr0", "ipam": { "subnet": subnet } })
}

#[test]
fn version_lists_supported_versions() {
    let host = Ns::new("ver");
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let r = exec_plugin(
            weft_cni_bin(),
            &host.path(),
            "VERSION",
            "",
            "",
            "",
            &json!({ "cniVersion": v }),
            &[],
        );
        assert!(r.ok);
        assert_eq!(r.json["cniVersion"], v);
        let sv: Vec<&str> = r.json["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            sv.contains(&"0.4.0") && sv.contains(&"1.0.0") && sv.contains(&"1.1.0"),
            "{sv:?}"
        );
    }
}

#[test]
fn add_results_in_each_version() {
    for (i, v) in ["0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let mut conf = bridge_conf(&format!("10.210.{i}.0/24"));
        conf["cniVersion"] = json!(v);
        conf["mtu"] = json!(1400);
        let net = Net::new("vers", conf);
        let c = Ns::new("c");
        let r = net.add("c1", &c);
        assert_eq!(r["cniVersion"], *v);
        let ip = &r["ips"][0];
        assert!(
            ip["address"]
                .as_str()
                .unwrap()
                .starts_with(&format!("10.210.{i}.")),
            "{r}"
        );
        assert_eq!(ip["gateway"], format!("10.210.{i}.1"));
        let ifs = r["interfaces"].as_array().unwrap();
        let idx = ip["interface"].as_u64().unwrap() as usize;
        assert_eq!(ifs[idx]["name"], "eth0");
        assert_eq!(ifs[idx]["sandbox"], c.path());
        match *v {
            "0.4.0" => assert_eq!(ip["version"], "4"),
            _ => assert!(ip.get("version").is_none()),
        }
        if *v == "1.1.0" {
            assert_eq!(ifs[idx]["mtu"], 1400);
        } else {
            assert!(ifs[idx].get("mtu").is_none());
        }
        // What the result says is what the kernel has.
        let addr = c.ok("ip -o -4 addr show dev eth0");
        assert!(addr.contains(ip["address"].as_str().unwrap()), "{addr}");
        assert!(c.ok("ip link show eth0").contains("mtu 1400"));
        assert!(c
            .ok("ip route show default")
            .contains(&format!("via 10.210.{i}.1")));
        net.del("c1", &c);
    }
}

#[test]
fn bad_input_gets_cni_errors() {
    let net = Net::new("err", bridge_conf("10.211.0.0/24"));
    let c = Ns::new("c");
    let host = net.host.path();
    let call =
        |conf: &Value, env: &[(&str, &str)], cmd: &str, cid: &str, netns: &str, ifname: &str| {
            exec_plugin(weft_cni_bin(), &host, cmd, cid, netns, ifname, conf, env)
        };

    // Not JSON at all.
    let out = {
        use std::io::Write;
        let mut child = std::process::Command::new(weft_cni_bin())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "x")
            .env("CNI_NETNS", c.path())
            .env("CNI_IFNAME", "eth0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"{not json").unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(!out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["code"], 6, "{j}");

    // A field of the wrong type names the field.
    let mut bad = net.conf.clone();
    bad["mtu"] = json!("large");
    let r = call(&bad, &[], "ADD", "x", &c.path(), "eth0");
    assert!(!r.ok);
    assert_eq!(r.code(), 7);
    assert!(r.msg().starts_with("mtu:"), "{}", r.msg());

    // Missing ipam subnet.
    let mut bad = net.conf.clone();
    bad["ipam"] = json!({});
    let r = call(&bad, &[], "ADD", "x", &c.path(), "eth0");
    assert_eq!((r.ok, r.code()), (false, 7));
    assert!(r.msg().contains("ipam.subnet"), "{}", r.msg());

    // Overlapping ranges.
    let mut bad = net.conf.clone();
    bad["ipam"] =
        json!({ "ranges": [[{ "subnet": "10.211.0.0/16" }], [{ "subnet": "10.211.5.0/24" }]] });
    let r = call(&bad, &[], "ADD", "x", &c.path(), "eth0");
    assert_eq!((r.ok, r.code()), (false, 7));
    assert!(r.msg().contains("overlaps"), "{}", r.msg());

    // Unsupported version.
    let mut bad = net.conf.clone();
    bad["cniVersion"] = json!("9.9.9");
    let r = call(&bad, &[], "ADD", "x", &c.path(), "eth0");
    assert_eq!((r.ok, r.code()), (false, 1));

    // Missing netns.
    let r = call(
        &net.conf,
        &[],
        "ADD",
        "x",
        "/run/netns/does-not-exist-weft",
        "eth0",
    );
    assert_eq!((r.ok, r.code()), (false, 3));
    assert!(r.msg().contains("CNI_NETNS"), "{}", r.msg());

    // Invalid interface names and container ids.
    for ifname in ["", "waytoolonginterfacename", "eth/0", "a b"] {
        let r = call(&net.conf, &[], "ADD", "x", &c.path(), ifname);
        assert_eq!(
            (r.ok, r.code()),
            (false, 4),
            "ifname {ifname:?}: {:?}",
            r.json
        );
        assert!(r.msg().contains("CNI_IFNAME"));
    }
    let r = call(&net.conf, &[], "ADD", "-x", &c.path(), "eth0");
    assert_eq!((r.ok, r.code()), (false, 4));
    assert!(r.msg().contains("CNI_CONTAINERID"));

    // Unknown command.
    let r = call(&net.conf, &[], "FROB", "x", &c.path(), "eth0");
    assert_eq!((r.ok, r.code()), (false, 4));

    // None of the failures left anything behind.
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(net.host_links().is_empty());
    assert_eq!(
        c.ok("ip -o link show").lines().count(),
        1,
        "only lo in the container"
    );
}

#[test]
fn exhausted_range_fails_cleanly_and_status_says_so() {
    // /29: .1 is the gateway, .2-.6 usable.
    let net = Net::new("exh", bridge_conf("10.212.0.0/29"));
    let cs: Vec<Ns> = (0..6).map(|_| Ns::new("c")).collect();
    let st = net.call_conf("STATUS", "", "", "", &net.conf);
    assert!(st.ok, "{:?}", st.json);
    for (i, c) in cs.iter().take(5).enumerate() {
        net.add(&format!("c{i}"), c);
    }
    let r = net.call("ADD", "c5", &cs[5], "eth0");
    assert!(!r.ok);
    assert_eq!(r.code(), 101, "{:?}", r.json);
    assert!(r.msg().contains("no free address"), "{}", r.msg());
    assert_eq!(net.allocated().len(), 5);
    assert_eq!(cs[5].ok("ip -o link show").lines().count(), 1);
    let st = net.call_conf("STATUS", "", "", "", &net.conf);
    assert_eq!((st.ok, st.code()), (false, 50), "{:?}", st.json);
    net.del("c0", &cs[0]);
    let r = net.call("ADD", "c5", &cs[5], "eth0");
    assert!(r.ok, "{:?}", r.json);
}

#[test]
fn add_is_idempotent_and_del_twice_is_fine() {
    let net = Net::new("idem", bridge_conf("10.213.0.0/24"));
    let c = Ns::new("c");
    let a = net.add("c1", &c);
    let b = net.add("c1", &c);
    assert_eq!(a, b);
    assert_eq!(net.allocated().len(), 1);
    assert_eq!(net.host_links().len(), 1);
    assert_eq!(c.ok("ip -o -4 addr show dev eth0").lines().count(), 1);
    net.del("c1", &c);
    net.del("c1", &c);
    assert!(net.allocated().is_empty());
    assert!(net.host_links().is_empty());
    assert!(c.sh("ip link show eth0").status.code() != Some(0));
    // DEL of something never added.
    net.del("never", &c);
}

#[test]
fn del_after_container_namespace_is_gone() {
    let net = Net::new("gone", bridge_conf("10.214.0.0/24"));
    let c = Ns::new("c");
    let path = c.path();
    net.add("c1", &c);
    assert_eq!(net.host_links().len(), 1);
    drop(c); // the container (and its netns) is gone
    let r = net.call_conf("DEL", "c1", &path, "eth0", &net.conf);
    assert!(r.ok, "{:?}", r.json);
    let r = net.call_conf("DEL", "c1", "", "eth0", &net.conf);
    assert!(r.ok, "DEL with empty CNI_NETNS: {:?}", r.json);
    assert!(net.allocated().is_empty());
    assert!(net.host_links().is_empty());
}

#[test]
fn chained_prev_result_is_kept() {
    let net = Net::new("chain", bridge_conf("10.215.0.0/24"));
    let c = Ns::new("c");
    let mut conf = net.conf.clone();
    conf["prevResult"] = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{ "name": "net1", "sandbox": c.path() }],
        "ips": [{ "address": "192.0.2.10/24", "interface": 0 }],
        "dns": { "nameservers": ["192.0.2.53"] }
    });
    let r = net.call_conf("ADD", "c1", &c.path(), "eth0", &conf);
    assert!(r.ok, "{:?}", r.json);
    let j = &r.json;
    assert_eq!(j["interfaces"][0]["name"], "net1");
    assert_eq!(j["ips"][0]["address"], "192.0.2.10/24");
    assert_eq!(j["ips"].as_array().unwrap().len(), 2);
    let mine = j["ips"][1]["interface"].as_u64().unwrap() as usize;
    assert!(mine > 0);
    assert_eq!(j["interfaces"][mine]["name"], "eth0");
    assert_eq!(j["dns"]["nameservers"][0], "192.0.2.53");
    // An old-version prevResult is understood too.
    let mut conf040 = net.conf.clone();
    conf040["cniVersion"] = json!("0.4.0");
    conf040["prevResult"] =
        json!({ "cniVersion": "0.4.0", "ips": [{ "version": "4", "address": "192.0.2.11/24" }] });
    let r = net.call_conf("ADD", "c1", &c.path(), "eth1", &conf040);
    assert!(r.ok, "{:?}", r.json);
    assert_eq!(r.json["ips"][0]["version"], "4");
    assert_eq!(r.json["ips"][1]["version"], "4");
    let r = net.call_conf("DEL", "c1", &c.path(), "eth1", &conf040);
    assert!(r.ok);
    net.del("c1", &c);
}

#[test]
fn check_passes_then_detects_drift() {
    let net = Net::new("check", bridge_conf("10.216.0.0/24"));
    let c = Ns::new("c");
    let res = net.add("c1", &c);
    let mut conf = net.conf.clone();
    conf["prevResult"] = res;
    let r = net.call_conf("CHECK", "c1", &c.path(), "eth0", &conf);
    assert!(r.ok, "{:?}", r.json);
    c.ok("ip route del default");
    let r = net.call_conf("CHECK", "c1", &c.path(), "eth0", &conf);
    assert!(!r.ok);
    assert!(r.msg().contains("route 0.0.0.0/0"), "{}", r.msg());
    // ADD again repairs it (apply is idempotent and fills in what is missing).
    net.add("c1", &c);
    assert!(net.call_conf("CHECK", "c1", &c.path(), "eth0", &conf).ok);
    // CHECK of an unknown attachment.
    let r = net.call_conf("CHECK", "nope", &c.path(), "eth0", &conf);
    assert_eq!((r.ok, r.code()), (false, 3));
    net.del("c1", &c);
}

#[test]
fn gc_removes_stale_attachments_addresses_and_links() {
    let net = Net::new("gc", bridge_conf("10.217.0.0/24"));
    let (c1, c2) = (Ns::new("c"), Ns::new("c"));
    net.add("keep", &c1);
    net.add("stale", &c2);
    // A killed ADD: an address file with no attachment record and no link.
    std::fs::write(
        net.state_dir().join("ips").join("10.217.0.200"),
        "crashed\neth0\n",
    )
    .unwrap();
    // A weft link of this network that no record knows (e.g. a record lost with its disk).
    let alias = format!("weft:{}:orphan:eth0", net.conf["name"].as_str().unwrap());
    net.host.ok(&format!("ip link add weftorphan000 type veth peer name orphanpeer && ip link set weftorphan000 alias '{alias}'"));
    assert_eq!(net.allocated().len(), 3);
    let mut conf = net.conf.clone();
    conf["cni.dev/valid-attachments"] = json!([{ "containerID": "keep", "ifname": "eth0" }]);
    let r = net.call_conf("GC", "", "", "", &conf);
    assert!(r.ok, "{:?}", r.json);
    assert_eq!(net.allocated().len(), 1, "{:?}", net.allocated());
    assert_eq!(net.host_links().len(), 1);
    assert!(net.host.sh("ip link show weftorphan000").status.code() != Some(0));
    assert!(c2.sh("ip link show eth0").status.code() != Some(0));
    assert!(c1.ok("ip link show eth0").contains("UP"));
    // GC needs cniVersion 1.1.0.
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    let r = net.call_conf("GC", "", "", "", &old);
    assert_eq!((r.ok, r.code()), (false, 1));
    net.del("keep", &c1);
}

#[test]
fn static_ip_and_mac_requests() {
    let net = Net::new("static", bridge_conf("10.218.0.0/24"));
    let (c1, c2) = (Ns::new("c"), Ns::new("c"));
    let mut conf = net.conf.clone();
    conf["runtimeConfig"] = json!({ "ips": ["10.218.0.50/24"], "mac": "0a:00:00:00:12:34" });
    let r = net.call_conf("ADD", "c1", &c1.path(), "eth0", &conf);
    assert!(r.ok, "{:?}", r.json);
    assert_eq!(result_ip(&r.json), "10.218.0.50");
    assert!(c1.ok("ip link show eth0").contains("0a:00:00:00:12:34"));
    // Same address for another container: refused, nothing left.
    let r = net.call_conf("ADD", "c2", &c2.path(), "eth0", &conf);
    assert_eq!((r.ok, r.code()), (false, 102), "{:?}", r.json);
    // CNI_ARGS IP= works too.
    let r = exec_plugin(
        weft_cni_bin(),
        &net.host.path(),
        "ADD",
        "c2",
        &c2.path(),
        "eth0",
        &net.conf,
        &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.218.0.60")],
    );
    assert!(r.ok, "{:?}", r.json);
    assert_eq!(result_ip(&r.json), "10.218.0.60");
    assert!(ping_ok(&c2, "10.218.0.50"));
    net.del("c1", &c1);
    net.del("c2", &c2);
}

#[test]
fn multiple_ranges_give_one_address_each() {
    let mut conf = bridge_conf("unused");
    conf["ipam"] = json!({ "ranges": [
        [{ "subnet": "10.219.0.0/24", "rangeStart": "10.219.0.100", "rangeEnd": "10.219.0.101" },
         { "subnet": "10.219.1.0/24" }],
        [{ "subnet": "fd00:219::/64" }]
    ]});
    let net = Net::new("ranges", conf);
    let cs: Vec<Ns> = (0..3).map(|_| Ns::new("c")).collect();
    let mut v4 = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        let r = net.add(&format!("c{i}"), c);
        let ips: Vec<&str> = r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["address"].as_str())
            .collect();
        assert_eq!(ips.len(), 2, "{r}");
        assert!(ips[1].starts_with("fd00:219::"), "{ips:?}");
        v4.push(ips[0].to_string());
    }
    assert_eq!(v4[0], "10.219.0.100/24");
    assert_eq!(v4[1], "10.219.0.101/24");
    assert!(v4[2].starts_with("10.219.1."), "{v4:?}");
    for (i, c) in cs.iter().enumerate() {
        net.del(&format!("c{i}"), c);
    }
    assert!(net.allocated().is_empty());
}
