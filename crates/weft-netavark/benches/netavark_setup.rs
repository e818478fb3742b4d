//! podman 5's path: `netavark setup` and `netavark teardown` of one container, through the
//! real netavark, for the weft plugin against netavark's own bridge driver (nftables
//! firewall driver, as podman 5 runs it), same run, printed as a table with p50 and p90.
//!
//! ```text
//! sudo cargo bench -p weft-netavark --bench netavark_setup [-- --n 30]
//! ```
//!
//! Each call is timed from spawn to exit of netavark (which execs the plugin for weft).
//! Containers are set up one after the other, then torn down one after the other; with and
//! without one published port each. Everything runs in namespaces the bench makes
//! (`tests/support`), removed on exit. Prints why and exits when netavark is not installed.

#[path = "../../weft/tests/common/mod.rs"]
#[allow(clippy::too_many_arguments)]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::Ns;
use serde_json::Value;
use support::*;

struct Row {
    label: String,
    setup: Vec<Duration>,
    teardown: Vec<Duration>,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn measure(driver: &str, ports: bool, n: usize) -> Option<Row> {
    let nv = Netavark::new(&format!("nvb{}", &driver[..1]))?;
    let net = match driver {
        "bridge" => nv.bridge_network("nvbench", "nvbench0", "10.99.0.0/16"),
        _ => nv.weft_network("nvbench", "10.99.0.0/16"),
    };
    let mut containers: Vec<(Ns, Value)> = Vec::new();
    let mut setup = Vec::new();
    for i in 0..n {
        let ns = Ns::new("b");
        let ip = format!("10.99.{}.{}", 1 + i / 200, 2 + i % 200);
        let pm = if ports {
            port(20000 + i as u16, 80)
        } else {
            Value::Null
        };
        let input = container(
            &id64(&format!("{driver}{ports}{i}")),
            &[Attach {
                network: &net,
                ifname: "eth0",
                static_ip: Some(&ip),
                static_mac: None,
            }],
            pm,
        );
        let t = Instant::now();
        let r = nv.setup(&ns, &input);
        setup.push(t.elapsed());
        assert!(r.ok, "{driver} setup {i}: {} {}", r.stdout, r.stderr);
        containers.push((ns, input));
    }
    let mut teardown = Vec::new();
    for (ns, input) in &containers {
        let t = Instant::now();
        let r = nv.teardown(ns, input);
        teardown.push(t.elapsed());
        assert!(r.ok, "{driver} teardown: {} {}", r.stdout, r.stderr);
    }
    let label = match driver {
        "bridge" => "netavark bridge driver (reference)",
        _ => "weft plugin",
    };
    Some(Row {
        label: format!("{label}{}", if ports { ", 1 port" } else { "" }),
        setup,
        teardown,
    })
}

fn main() {
    let n = weft_testbed::bench::arg_or("--n", 30usize);
    let Some(bin) = netavark_bin() else {
        println!("netavark is not installed: nothing to measure (.ci/run installs it)");
        return;
    };
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for ports in [false, true] {
        for driver in ["bridge", "weft"] {
            rows.extend(measure(driver, ports, n));
        }
    }
    println!("\n{version}: setup/teardown of one container, {n} containers each, nftables firewall driver\n");
    println!("| driver | setup p50 | setup p90 | teardown p50 | teardown p90 |");
    println!("|---|---:|---:|---:|---:|");
    for r in &mut rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            r.label,
            pct(&mut r.setup, 0.5),
            pct(&mut r.setup, 0.9),
            pct(&mut r.teardown, 0.5),
            pct(&mut r.teardown, 0.9),
        );
    }
}
