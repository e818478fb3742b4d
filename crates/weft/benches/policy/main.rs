//! Network policy speed (issue 5, "Speed"), in one run:
//! 1. the time `weft_agent::policy::apply` takes to write weft's real `inet weft-policy` table
//!    with 0, 1,000 and 10,000 policies (full: table + every element, one transaction), and one
//!    more policy on top of each size (incremental, one transaction);
//! 2. throughput (iperf3, 1 stream), TCP request/response p50 and TCP connect p50 of a flow that
//!    matches the last policy, across two cells over VXLAN with GBP (controller + real agents +
//!    weft-cni overlay containers; policies created through the API in bulk), at 0, 1,000 and
//!    10,000 policies, next to a Cloud Foundry-style layout built in the bench on the same
//!    cells: one iptables-legacy rule per policy in a chain, the flow's rule last;
//! 3. propagation: from the API's answer to a policy create (and delete) to the element being in
//!    the destination cell's kernel, with 50 agents watching (the real one of each cell and 49
//!    more watch streams opened by the bench from inside the underlay namespace).
//!
//! ```text
//! sudo cargo bench -p weft --bench policy [-- --secs 3 --runs 3 --changes 50 --watchers 49]
//! ```
//!
//! Everything happens in network namespaces the bench makes (see tests/common/dc/mod.rs) and removes
//! on exit, panic or Ctrl-C; the machine's own namespace is never touched, and every client of
//! the controller runs on threads that entered the underlay namespace.

// The shared test support trips `too_many_arguments` (exec_plugin) under clippy's
// `--benches`; that file is not this bench's to change.
#[allow(clippy::too_many_arguments)]
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/dc/mod.rs"]
mod dc;

mod apply;
mod datapath;

use apply::bench_apply;
use datapath::bench_dc;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Ns};
use dc::{Dc, DcOptions, Proc};
use serde_json::Value;
use weft_agent::policy::{self, LocalContainer};
use weft_api::model::{Policy, Ports, Protocol, WatchMessage};
use weft_kernel::netns::Netns;
use weft_kernel::nft::Nft;
use weft_testbed::bench::{check_interrupted, install_signal_handlers, pct};

pub const SIZES: [usize; 3] = [0, 1000, 10_000];
pub const OVERLAY: &str = "10.255.0.0/16";
/// The flow's policy: client → server, tcp 5201 (iperf3) – 5202 (request/response probe).
pub const FLOW_PORTS: (u16, u16) = (5201, 5202);

pub struct Opts {
    pub secs: u32,
    pub runs: usize,
    pub changes: usize,
    pub watchers: usize,
}

pub fn opts() -> Opts {
    let mut o = Opts {
        secs: 3,
        runs: 3,
        changes: 50,
        watchers: 49,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let val = || -> usize {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--secs" => o.secs = val() as u32,
            "--runs" => o.runs = val(),
            "--changes" => o.changes = val(),
            "--watchers" => o.watchers = val(),
            _ => {
                i += 1; // `cargo bench` passes --bench
                continue;
            }
        }
        i += 2;
    }
    o
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Background policy `i`: source app `bg<i/100>`, destination `dst`, tcp port `10000 + 2*(i%100)`
/// (ports two apart, so no two merge into one interval: one allow_ports element each).
pub fn bg_policy(i: usize, dst: &str) -> Policy {
    let port = 10_000 + 2 * (i % 100) as u16;
    Policy::new(
        &format!("bg{}", i / 100),
        dst,
        Protocol::Tcp,
        Some(Ports {
            start: port,
            end: port,
        }),
    )
}

pub fn tcp_policy(src: &str, dst: &str, (start, end): (u16, u16)) -> Policy {
    Policy::new(src, dst, Protocol::Tcp, Some(Ports { start, end }))
}

/// Runs `f` on a new thread inside the namespace at `path`.
pub fn in_ns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    weft_kernel::netns::in_netns(path, f).unwrap_or_else(|e| panic!("in {path}: {e}"))
}

/// Elements in `inet weft-policy allow_ports` (0 when the table is missing).
pub fn count_allow_ports(nft: &mut Nft) -> usize {
    let Ok(out) = nft.run_json(&format!("list map inet {} allow_ports", policy::TABLE)) else {
        return 0;
    };
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v["nftables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["map"]["elem"].as_array().map(Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    install_signal_handlers();
    let o = opts();
    let start = Instant::now();
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("policy bench: needs root (network namespaces); skipped");
        return;
    }
    for t in ["iperf3", "iptables-legacy", "taskset", "python3", "ping"] {
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "{t} is needed (apt-get install iperf3 iptables util-linux python3)"
        );
    }
    let apply = bench_apply();
    let (rows, prop, notes) = bench_dc(&o);

    println!();
    println!(
        "## weft policy bench (issue 5), {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("### 1. weft_agent::policy::apply in a namespace of its own (one transaction each)");
    println!();
    println!("| policies | allow_ports in kernel | elements() | full apply (table + elements) p50 [min..max] of 3 | +1 policy p50 [min..max] of 5 |");
    println!("|---:|---:|---:|---:|---:|");
    for r in &apply {
        println!(
            "| {} | {} | {:.1} ms | {:.1} ms [{:.1}..{:.1}] | {:.2} ms [{:.2}..{:.2}] |",
            r.n,
            r.in_kernel,
            r.elements_ms,
            pct(&r.full_ms, 0.5),
            pct(&r.full_ms, 0.0),
            pct(&r.full_ms, 1.0),
            pct(&r.incr_ms, 0.5),
            pct(&r.incr_ms, 0.0),
            pct(&r.incr_ms, 1.0),
        );
    }
    println!();
    println!(
        "### 2. Flow matching the last policy, cell 1 → cell 2 over VXLAN-GBP (iperf3 1 stream {} s × {}, median; TCP RR 3000 × 1 byte p50; TCP connect 500× p50)",
        o.secs, o.runs
    );
    println!();
    println!("| layout | policies | installed | install | throughput | vs 0 | TCP RR p50 | connect p50 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let base = rows
            .iter()
            .find(|b| b.layout == r.layout && b.n == 0)
            .map(|b| pct(&sorted(b.flow.gbps.clone()), 0.5))
            .unwrap_or(f64::NAN);
        let g = sorted(r.flow.gbps.clone());
        println!(
            "| {} | {} | {} | {:.0} ms | {:.2} Gbit/s ({}) | {:.1}% | {:.0} µs | {:.0} µs |",
            r.layout,
            r.n,
            r.installed,
            r.install_ms,
            pct(&g, 0.5),
            g.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join("/"),
            pct(&g, 0.5) / base * 100.0,
            r.flow.rr_p50_us,
            r.flow.connect_p50_us,
        );
    }
    println!();
    println!("install: weft = API answer to all allow_ports elements in cell 2's kernel (agents apply change by change); CF = iptables-legacy-restore of the chain (one exec)");
    println!();
    let c = sorted(prop.create_ms.clone());
    let d = sorted(prop.delete_ms.clone());
    println!(
        "### 3. Propagation, API answer → element in cell 2's kernel (polled every ~1 ms), {} changes each, {} watch streams, {} policies in place",
        c.len(),
        prop.watchers_ok,
        prop.state_policies
    );
    println!();
    println!("| change | p50 | p99 | max | missed (20 s) |");
    println!("|---|---:|---:|---:|---:|");
    for (what, v) in [("create", &c), ("delete", &d)] {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0),
            prop.missed
        );
    }
    println!();
    if !notes.is_empty() {
        println!("notes:\n{notes}");
    }
    let a10k = apply.iter().find(|r| r.n == 10_000);
    let w = |n: usize| {
        rows.iter()
            .find(|r| r.layout.starts_with("weft") && r.n == n)
            .map(|r| pct(&sorted(r.flow.gbps.clone()), 0.5))
            .unwrap_or(f64::NAN)
    };
    let verdict = |b: bool| if b { "PASS" } else { "FAIL" };
    println!("targets:");
    if let Some(a) = a10k {
        println!(
            "- 10,000 policies applied in under 1 s: {} ({:.0} ms)",
            verdict(pct(&a.full_ms, 0.5) < 1000.0),
            pct(&a.full_ms, 0.5)
        );
    }
    println!(
        "- throughput at 10,000 within 5% of 0: {} ({:.1}%)",
        verdict(w(10_000) >= 0.95 * w(0)),
        w(10_000) / w(0) * 100.0
    );
    println!(
        "- propagation p99 under 200 ms: {} (create {:.1} ms, delete {:.1} ms)",
        verdict(pct(&c, 0.99) < 200.0 && pct(&d, 0.99) < 200.0 && prop.missed == 0),
        pct(&c, 0.99),
        pct(&d, 0.99)
    );
    println!("total bench time: {:.0} s", start.elapsed().as_secs_f64());
}
