//! `ctr run --cni` start and removal with weft-cni against the reference CNI `bridge`
//! plugin (`host-local` IPAM, ipMasq), same containerd, same run, printed as a table.
//!
//! ```text
//! sudo cargo bench -p weft-cni --bench ctr_run [-- --n 20]
//! ```
//!
//! - start: `ctr run -d --cni --rootfs` from spawn to exit (container, CNI ADD, task start);
//! - removal: a foreground `ctr run --rm --cni` from `ctr task kill -s SIGKILL` until that
//!   ctr exits (CNI DEL with an empty CNI_NETNS, task and container deleted).
//!
//! The containerd, its host namespace and everything else are the test's
//! (`tests/containerd_support`), removed on exit.

#[allow(clippy::too_many_arguments)]
#[path = "../../weft/tests/common/mod.rs"]
mod common;
#[path = "../tests/containerd_support/mod.rs"]
mod containerd_support;

use std::time::{Duration, Instant};

use common::{exec_plugin, weft_cni_bin, TempDir};
use containerd_support::Containerd;
use serde_json::{json, Value};

const REF_DIR: &str = "/usr/lib/cni";

#[derive(Clone, Copy, PartialEq)]
enum Plugin {
    Weft,
    Bridge,
}

impl Plugin {
    fn name(self) -> &'static str {
        match self {
            Plugin::Weft => "weft-cni",
            Plugin::Bridge => "bridge + host-local (reference)",
        }
    }
    fn conf(self, data: &TempDir) -> Value {
        let plugin = match self {
            Plugin::Weft => json!({
                "type": "weft-cni", "bridge": "wbench0", "ipMasq": true,
                "dataDir": data.path.display().to_string(),
                "ipam": { "subnet": "10.97.0.0/24" }
            }),
            Plugin::Bridge => json!({
                "type": "bridge", "bridge": "rbench0", "isGateway": true, "ipMasq": true,
                "ipam": { "type": "host-local", "subnet": "10.98.0.0/24",
                          "dataDir": data.path.display().to_string() }
            }),
        };
        json!({ "cniVersion": "1.0.0", "name": "wbench", "plugins": [plugin] })
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

struct Row {
    plugin: Plugin,
    start: Vec<Duration>,
    removal: Vec<Duration>,
}

fn measure(plugin: Plugin, n: usize) -> Row {
    let data = TempDir::new("ctrbd");
    let plugins: Vec<(&str, String)> = match plugin {
        Plugin::Weft => vec![("weft-cni", weft_cni_bin().to_string())],
        Plugin::Bridge => ["bridge", "host-local"]
            .iter()
            .map(|p| (*p, format!("{REF_DIR}/{p}")))
            .collect(),
    };
    let plugins: Vec<(&str, &str)> = plugins.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let mut c = Containerd::start("ctrb", &plugin.conf(&data), &plugins, &[]);
    // Start: detached runs; then removed without timing (task, container, and the CNI DEL
    // ctr does not do for a detached container).
    let mut start = Vec::new();
    for i in 0..n {
        let id = format!("s{i}");
        let t = Instant::now();
        let out = c.run_detached(&id, &["sleep", "300"]);
        start.push(t.elapsed());
        assert!(
            out.status.success(),
            "ctr run -d {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let conf = {
        let v = plugin.conf(&data);
        let mut p = v["plugins"][0].clone();
        p["cniVersion"] = v["cniVersion"].clone();
        p["name"] = v["name"].clone();
        p
    };
    let bin = match plugin {
        Plugin::Weft => weft_cni_bin().to_string(),
        Plugin::Bridge => format!("{REF_DIR}/bridge"),
    };
    for i in 0..n {
        let id = format!("s{i}");
        c.force_remove(&id);
        let r = exec_plugin(
            &bin,
            &c.host.path(),
            "DEL",
            &format!("{}-{id}", c.ns),
            "",
            "eth0",
            &conf,
            &[],
        );
        assert!(r.ok, "DEL {id}: {:?} {}", r.json, r.stderr);
    }
    // Removal: foreground runs, killed one after the other.
    let mut removal = Vec::new();
    for i in 0..n {
        let id = format!("r{i}");
        c.run(&id, &["sleep", "300"]);
        let t = Instant::now();
        c.kill(&id);
        removal.push(t.elapsed());
    }
    Row {
        plugin,
        start,
        removal,
    }
}

fn main() {
    let n = weft_testbed::bench::arg_or("--n", 20usize);
    let have_ref = std::path::Path::new(&format!("{REF_DIR}/bridge")).exists();
    let mut rows = vec![measure(Plugin::Weft, n)];
    if have_ref {
        rows.push(measure(Plugin::Bridge, n));
    } else {
        println!("(no reference plugin in {REF_DIR}: apt-get install containernetworking-plugins)");
    }
    let ctr = std::process::Command::new("ctr")
        .arg("--version")
        .output()
        .ok();
    println!(
        "\nctr run --cni, {n} containers each ({}):\n",
        ctr.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    println!("| plugin | start p50 | start p90 | removal p50 | removal p90 |");
    println!("|---|---:|---:|---:|---:|");
    for r in &mut rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            r.plugin.name(),
            pct(&mut r.start, 0.5),
            pct(&mut r.start, 0.9),
            pct(&mut r.removal, 0.5),
            pct(&mut r.removal, 0.9),
        );
    }
}
