//! The overlay's speed (issue 4, "Speed"), in one run:
//! - iperf3 TCP throughput (one stream) and ping RTT container→container on one host via
//!   weft-cni's bridge mode, and across two cells via the overlay twice: with the agent's BPF
//!   fast path (`--fastpath on`) and on the kernel path alone (`--fastpath off`: VXLAN device,
//!   nftables), each with policy enforcement on and a policy allowing the measured port, as in
//!   production. The three are measured in interleaved rounds (this VM's throughput drifts
//!   between runs) and each overlay/bridge ratio is taken within its round (VXLAN's physical
//!   limit at MTU 1500 is (1500-50)/1500 ≈ 97%);
//! - the time from a new host's agent start (lease) to the first packet that crosses to it:
//!   a container on an existing cell pings the new cell's VTEP address every 2 ms while the
//!   new cell's agent starts; the first answer's timestamp (ping -D) minus the agent's start.
//!
//! ```text
//! sudo cargo bench -p weft --bench overlay [-- --secs 5 --rounds 5 --pings 500 --joins 5 --cc cubic]
//! ```
//!
//! iperf3 uses the machine's default TCP congestion control unless `--cc NAME` is given
//! (passed as `iperf3 -C NAME`); the table names the one used. It matters: BBR paces each
//! stream, cubic does not, and the two load the paths differently.
//!
//! Everything happens in namespaces the bench makes (see tests/common/dc.rs) and removes on
//! exit or panic; the machine's own namespace is never touched. Needs iperf3, ping, python3.

// The shared test support trips `too_many_arguments` (exec_plugin) under clippy's
// `--benches`; that file is not this bench's to change.
#[allow(clippy::too_many_arguments)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/dc.rs"]
mod dc;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ping_ok, wait_until, Net, Ns};
use dc::{Dc, DcOptions, Proc};
use serde_json::{json, Value};

struct Opts {
    secs: u32,
    rounds: u32,
    pings: u32,
    joins: u32,
    /// TCP congestion control for iperf3 (`-C`); None: the machine's default.
    cc: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        secs: 5,
        rounds: 5,
        pings: 500,
        joins: 5,
        cc: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let val = || {
            args.get(i + 1)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--secs" => {
                o.secs = val();
                i += 1;
            }
            "--rounds" => {
                o.rounds = val().max(1);
                i += 1;
            }
            "--pings" => {
                o.pings = val();
                i += 1;
            }
            "--joins" => {
                o.joins = val();
                i += 1;
            }
            "--cc" => {
                let name = args.get(i + 1).cloned().unwrap_or_default();
                assert!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                    "--cc needs a congestion control name (e.g. cubic, bbr, reno)"
                );
                o.cc = Some(name);
                i += 1;
            }
            _ => {} // `cargo bench` passes --bench
        }
        i += 1;
    }
    o
}

/// iperf3 from `client` to `server` (at `ip`), one TCP stream for `secs` with congestion
/// control `cc` (None: the default): bits/s received.
fn iperf(
    log_dir: &std::path::Path,
    server: &Ns,
    client: &Ns,
    ip: &str,
    secs: u32,
    cc: Option<&str>,
) -> f64 {
    let srv = Proc::spawn(
        server,
        &["iperf3", "-s", "-1", "-p", "5201"],
        &[],
        &log_dir.join(format!("iperf3-{}.log", server.name)),
    );
    wait_until("iperf3 server", dc::LIVE, || {
        server.ok("ss -ltnH").contains(":5201")
    });
    let cc = cc.map(|c| format!(" -C {c}")).unwrap_or_default();
    let out = client.ok(&format!("iperf3 -c {ip} -p 5201 -t {secs}{cc} -J"));
    drop(srv);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 -J: {e}: {out}"));
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 result: {out}"))
}

/// RTTs (ms) of `n` pings every 10 ms from `from` to `ip`.
fn rtts(from: &Ns, ip: &str, n: u32) -> Vec<f64> {
    let out = from.ok(&format!("ping -n -i 0.01 -c {n} {ip}"));
    let mut v: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.parse().ok())
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A place to measure: a client and a server namespace and the server's address (and what
/// keeps them alive).
struct Setup {
    client: Ns,
    server: Ns,
    ip: String,
    log_dir: std::path::PathBuf,
    _keep: Box<dyn std::any::Any>,
}

fn bridge_mode() -> Setup {
    let net = Net::new(
        "bb",
        json!({"bridge": "wbench0", "ipam": {"subnet": "10.99.0.0/24"}}),
    );
    let a = Ns::new("ba");
    let b = Ns::new("bb");
    for ns in [&a, &b] {
        ns.ok("ip link set lo up");
    }
    net.add(&format!("{}-c", a.name), &a);
    let rb = net.add(&format!("{}-c", b.name), &b);
    let ip = common::result_ip(&rb);
    wait_until("bridge path", dc::LIVE, || ping_ok(&a, &ip));
    Setup {
        client: a,
        server: b,
        ip,
        log_dir: net.data.path.clone(),
        _keep: Box::new(net),
    }
}

/// Two cells, policy on, app-a -> app-b allowed on iperf3's port; `fastpath`: "on" or "off".
fn overlay_mode(fastpath: &str) -> Setup {
    let dc = Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![
            ("WEFT_POLICY".into(), "on".into()),
            ("WEFT_FASTPATH".into(), fastpath.into()),
        ],
        ..Default::default()
    });
    let a = dc.add_container(1, "bench-a", "app-a");
    let b = dc.add_container(2, "bench-b", "app-b");
    for args in [
        "policy add app-a app-b --port 5201",
        "policy add app-a app-b --protocol icmp",
    ] {
        let out = dc.weft(args);
        assert!(
            out.status.success(),
            "weft {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_until("overlay path", dc::LIVE, || ping_ok(&a.ns, &b.ip));
    if fastpath == "on" {
        wait_until("the fast path", dc::LIVE, || {
            dc.cell_ns(2)
                .ok("tc filter show dev eth0 ingress")
                .contains("weft_rx")
        });
    }
    Setup {
        client: a.ns,
        server: b.ns,
        ip: b.ip,
        log_dir: dc.dir.path.clone(),
        _keep: Box::new(dc),
    }
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// (agent start → lease file, agent start → first answer across the overlay), in ms.
fn join_times(o: &Opts) -> Vec<(f64, f64)> {
    let mut dc = Dc::with(DcOptions {
        cells: 2,
        ..Default::default()
    });
    let a = dc.add_container(1, "join-a", "app-a");
    let mut out = Vec::new();
    // The controller hands out subnets in turn (a released one is not reused at once): with
    // cells 1 and 2 holding 10.255.0.0/24 and 10.255.1.0/24, the next cell gets
    // 10.255.2.0/24, the one after 10.255.3.0/24, ... (checked below; a miss skips the round).
    let mut next = 2u32;
    for round in 0..o.joins {
        let target = format!("10.255.{next}.0");
        let log = dc.dir.path.join(format!("join-ping-{round}.log"));
        let pinger = Proc::spawn(
            &a.ns,
            &["ping", "-n", "-D", "-i", "0.002", "-w", "15", &target],
            &[],
            &log,
        );
        std::thread::sleep(Duration::from_millis(300));
        let t0 = epoch();
        let start = Instant::now();
        let n = dc.spawn_cell(true);
        let leased = start.elapsed().as_secs_f64() * 1000.0;
        let subnet = dc.cell(n).subnet().unwrap_or_default();
        if let Some(third) = subnet.split('.').nth(2).and_then(|x| x.parse::<u32>().ok()) {
            next = third + 1;
        }
        if !subnet.starts_with(&format!("{target}/")) {
            eprintln!("round {round}: the new cell got {subnet}, not {target}/24; skipped");
        } else {
            let mut first = None;
            wait_until("first answer from the new cell", dc::LIVE, || {
                first = std::fs::read_to_string(&log).ok().and_then(|l| {
                    l.lines()
                        .find(|x| x.contains("bytes from"))
                        .and_then(|x| x.strip_prefix('['))
                        .and_then(|x| x.split(']').next())
                        .and_then(|t| t.parse::<f64>().ok())
                });
                first.is_some()
            });
            out.push((leased, (first.unwrap_or(t0) - t0) * 1000.0));
        }
        drop(pinger);
        let r = dc.remove_cell(n);
        dc.wait_unrouted(&r);
    }
    out
}

/// The median (the mean of the two middle values for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let o = opts();
    eprintln!("setting up: bridge mode (one host), overlay with the fast path, overlay on the kernel path ...");
    let setups = [bridge_mode(), overlay_mode("on"), overlay_mode("off")];
    let mut rounds: Vec<[f64; 3]> = Vec::new();
    for r in 1..=o.rounds {
        eprintln!("round {r}/{} ...", o.rounds);
        let mut row = [0.0; 3];
        for (k, s) in setups.iter().enumerate() {
            row[k] = iperf(
                &s.log_dir,
                &s.server,
                &s.client,
                &s.ip,
                o.secs,
                o.cc.as_deref(),
            );
        }
        rounds.push(row);
    }
    // What iperf3 ran with: `-C`, or what the client namespace defaults to.
    let cc = o.cc.clone().unwrap_or_else(|| {
        let d = setups[0]
            .client
            .ok("sysctl -n net.ipv4.tcp_congestion_control");
        format!("{} (default)", d.trim())
    });
    eprintln!("ping RTTs ...");
    let rtt: Vec<Vec<f64>> = setups
        .iter()
        .map(|s| rtts(&s.client, &s.ip, o.pings))
        .collect();
    drop(setups);
    eprintln!("new host joins ({} rounds) ...", o.joins);
    let joins = join_times(&o);

    let gbit = |b: f64| b / 1e9;
    println!();
    println!(
        "| iperf3, 1 TCP stream, {} s, {cc} | bridge, 1 host | overlay, fast path | overlay, kernel path | fast/bridge | kernel/bridge |",
        o.secs
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| round {} | {:.2} Gbit/s | {:.2} Gbit/s | {:.2} Gbit/s | {:.1}% | {:.1}% |",
            i + 1,
            gbit(r[0]),
            gbit(r[1]),
            gbit(r[2]),
            100.0 * r[1] / r[0],
            100.0 * r[2] / r[0]
        );
    }
    let col = |k: usize| median(rounds.iter().map(|r| r[k]).collect());
    let ratio = |k: usize| median(rounds.iter().map(|r| r[k] / r[0]).collect());
    println!(
        "| **median** | {:.2} Gbit/s | {:.2} Gbit/s | {:.2} Gbit/s | **{:.1}%** | {:.1}% |",
        gbit(col(0)),
        gbit(col(1)),
        gbit(col(2)),
        100.0 * ratio(1),
        100.0 * ratio(2)
    );
    println!();
    println!("| ping ({} pings) | bridge, 1 host | overlay, fast path | overlay, kernel path |\n|---|---:|---:|---:|", o.pings);
    for (name, p) in [("RTT p50", 0.5), ("RTT p99", 0.99)] {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            pct(&rtt[0], p),
            pct(&rtt[1], p),
            pct(&rtt[2], p)
        );
    }
    println!("(ICMP always takes the kernel path: the fast path carries established TCP only)");
    println!();
    if joins.is_empty() {
        println!("| new host: no valid rounds | |");
    } else {
        let lease = median(joins.iter().map(|j| j.0).collect());
        let cross = median(joins.iter().map(|j| j.1).collect());
        let worst = joins.iter().map(|j| j.1).fold(0.0, f64::max);
        println!("| new host | time |\n|---|---:|");
        println!(
            "| agent start -> lease held, VTEP up (median of {}) | {lease:.0} ms |",
            joins.len()
        );
        println!("| agent start -> first packet crosses to it and back (median / max) | {cross:.0} / {worst:.0} ms |");
    }
    println!();
    println!(
        "(target: overlay >= 90% of bridge throughput; overlay MTU 1450 vs 1500 on the bridge)"
    );
}
