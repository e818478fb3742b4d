//! weft-cni under containerd 1.6's `ctr run --cni` (a containerd the test starts, see
//! `containerd_support`): containers get addresses and reach each other, a task that dies
//! is DEL'd by ctr with an empty CNI_NETNS, and nothing is left (links, records, addresses,
//! tasks, containers, snapshots). And why the examples say cniVersion 1.0.0: containerd 1.6
//! refuses a 1.1.0 result.
//!
//! `ctr run --cni` passes no port mappings (go-cni's Setup without the portMappings
//! capability, and ctr has no flag for one), so published ports are the CRI plugin's and
//! podman's business: tested in weft-cni's other tests and in weft-netavark's.

#[path = "../../weft/tests/common/mod.rs"]
mod common;
mod containerd_support;

use common::{exec_plugin, weft_cni_bin, TempDir};
use containerd_support::Containerd;
use serde_json::{json, Value};

fn conflist(version: &str, data: &TempDir) -> Value {
    json!({
        "cniVersion": version,
        "name": "wctr",
        "plugins": [{
            "type": "weft-cni", "bridge": "wctr0", "ipMasq": true,
            "dataDir": data.path.display().to_string(),
            "ipam": { "subnet": "10.95.0.0/24" },
            "capabilities": { "portMappings": true }
        }]
    })
}

fn eth0_ip(c: &Containerd, id: &str) -> String {
    let out = c.exec(id, &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(
        out.status.success(),
        "{id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string()
}

fn records(data: &TempDir) -> Vec<String> {
    std::fs::read_dir(data.path.join("wctr/attachments"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn addresses(data: &TempDir) -> Vec<String> {
    std::fs::read_dir(data.path.join("wctr/ips"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("last_reserved"))
        .collect()
}

fn weft_veths(c: &Containerd) -> Vec<String> {
    weft_testbed::weft_host_links(&c.host.ok("ip -o link show"))
}

#[test]
fn ctr_run_cni_with_weft_cni() {
    let data = TempDir::new("ctrdata");
    let mut c = Containerd::start(
        "ctrw",
        &conflist("1.0.0", &data),
        &[("weft-cni", weft_cni_bin())],
        &["weft-cni"],
    );
    let ids = ["c1", "c2", "c3", "c4"];
    for id in ids {
        c.run(id, &["sleep", "300"]);
    }
    let ips: Vec<String> = ids.iter().map(|id| eth0_ip(&c, id)).collect();
    for ip in &ips {
        assert!(ip.starts_with("10.95.0."), "{ips:?}");
    }
    let mut uniq = ips.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), ids.len(), "addresses handed out twice: {ips:?}");
    assert_eq!(records(&data).len(), ids.len());
    assert_eq!(weft_veths(&c).len(), ids.len());
    // Containers reach each other and their gateway.
    let ping = c.exec("c1", &["ping", "-c", "1", "-W", "3", &ips[1]]);
    assert!(
        ping.status.success(),
        "c1 -> c2: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping = c.exec("c3", &["ping", "-c", "1", "-W", "3", "10.95.0.1"]);
    assert!(ping.status.success(), "c3 -> gateway");

    // A task that dies: ctr DELs its network with an empty CNI_NETNS (the namespace went
    // with the task); the others stay.
    c.kill("c3");
    let log = c.cni_log();
    let del = log
        .iter()
        .find(|l| l.starts_with("DEL ") && l.contains("-c3 "))
        .unwrap_or_else(|| panic!("no DEL for c3: {log:?}"));
    assert!(del.ends_with("netns=[]"), "DEL came with a netns: {del}");
    assert_eq!(records(&data).len(), ids.len() - 1);
    assert!(
        !addresses(&data).contains(&ips[2]),
        "c3's address is still held"
    );
    assert_eq!(weft_veths(&c).len(), ids.len() - 1);
    let ping = c.exec("c1", &["ping", "-c", "1", "-W", "3", &ips[3]]);
    assert!(ping.status.success(), "c1 -> c4 after c3 died");

    for id in ["c1", "c2", "c4"] {
        c.kill(id);
    }
    assert_eq!(records(&data), Vec::<String>::new());
    assert_eq!(addresses(&data), Vec::<String>::new());
    assert_eq!(weft_veths(&c), Vec::<String>::new());
    assert_eq!(c.list(&["container"]), Vec::<String>::new());
    assert_eq!(c.list(&["task"]), Vec::<String>::new());
    assert_eq!(c.list(&["snapshot"]), Vec::<String>::new());
    let adds = log.iter().filter(|l| l.starts_with("ADD ")).count();
    assert_eq!(adds, ids.len(), "{log:?}");
}

#[test]
fn containerd_1_6_refuses_a_1_1_0_result() {
    let data = TempDir::new("ctrdata11");
    let c = Containerd::start(
        "ctr11",
        &conflist("1.1.0", &data),
        &[("weft-cni", weft_cni_bin())],
        &[],
    );
    let out = c.run_detached("c11", &["sleep", "300"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unsupported CNI result version \"1.1.0\""),
        "containerd took a 1.1.0 result (update the README if it now does): {err}"
    );
    // What containerd leaves behind, as the README says: the task and the container; weft's
    // attachment is removed by the DEL a user (or GC) runs.
    c.force_remove("c11");
    let conf = {
        let mut p = conflist("1.1.0", &data)["plugins"][0].clone();
        p["cniVersion"] = json!("1.1.0");
        p["name"] = json!("wctr");
        p
    };
    let r = exec_plugin(
        weft_cni_bin(),
        &c.host.path(),
        "DEL",
        &format!("{}-c11", c.ns),
        "",
        "eth0",
        &conf,
        &[],
    );
    assert!(r.ok, "{:?} {}", r.json, r.stderr);
    assert_eq!(records(&data), Vec::<String>::new());
}
