//! The overlay's speed (issue 4, "Speed"), in one run:
//! - iperf3 TCP throughput (one stream) and ping RTT container→container on one host via
//!   weft-cni's bridge mode, and across two cells via the overlay: with the agent's BPF fast
//!   path (`--fastpath on`) and on the kernel path alone (`--fastpath off`: VXLAN device,
//!   nftables), each with policy enforcement on and a policy allowing the measured port, as in
//!   production. The cells' underlay is either the simulated switch (a bridge in its own
//!   namespace, as in the tests) or a cable (one veth pair between the two cells): on one
//!   machine the software switch is a second veth crossing plus a bridge, work a real switch
//!   takes off the hosts. As the ceiling of two hosts on that cable, the same containers
//!   routed without any overlay (silk-style /32 routes, no weft) are measured too. All are
//!   measured in interleaved rounds (this VM's throughput drifts between runs) and each ratio
//!   is taken within its round (VXLAN's physical limit at MTU 1500 is (1500-50)/1500 ≈ 97%);
//! - the time from a new host's agent start (lease) to the first packet that crosses to it:
//!   a container on an existing cell pings the new cell's VTEP address every 2 ms while the
//!   new cell's agent starts; the first answer's timestamp (ping -D) minus the agent's start.
//!
//! ```text
//! sudo cargo bench -p weft --bench overlay [-- --secs 5 --rounds 5 --pings 500 --joins 5 --no-pin]
//! ```
//!
//! iperf3's client runs on CPU 0 and its server on CPU 1 (`taskset`, as the policy bench
//! does), as two hosts' applications each have their own CPU; `--no-pin` leaves the placement
//! to the scheduler, which on two vCPUs moves both around and makes every path slower and
//! noisier, the overlay more than the bridge.
//!
//! Everything happens in namespaces the bench makes (see tests/common/dc/mod.rs) and removes on
//! exit or panic; the machine's own namespace is never touched. Needs iperf3, ping, python3.

// The shared test support trips `too_many_arguments` (exec_plugin) under clippy's
// `--benches`; that file is not this bench's to change.
#[allow(clippy::too_many_arguments)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/dc/mod.rs"]
mod dc;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ping_ok, wait_until, Net, Ns};
use dc::{Dc, DcOptions, Proc};
use serde_json::{json, Value};
use weft_testbed::bench::pct;

struct Opts {
    secs: u32,
    rounds: u32,
    pings: u32,
    joins: u32,
    /// Pin iperf3's client to CPU 0 and its server to CPU 1.
    pin: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        secs: 5,
        rounds: 5,
        pings: 500,
        joins: 5,
        pin: std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2),
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
            "--no-pin" => o.pin = false,
            _ => {} // `cargo bench` passes --bench
        }
        i += 1;
    }
    o
}

/// iperf3 from `client` to `server` (at `ip`), one TCP stream for `secs`, the client on CPU 0
/// and the server on CPU 1 if `pin`: bits/s received.
fn iperf(
    log_dir: &std::path::Path,
    server: &Ns,
    client: &Ns,
    ip: &str,
    secs: u32,
    pin: bool,
) -> f64 {
    let mut argv = vec!["iperf3", "-s", "-1", "-p", "5201"];
    if pin {
        argv.splice(0..0, ["taskset", "-c", "1"]);
    }
    let srv = Proc::spawn(
        server,
        &argv,
        &[],
        &log_dir.join(format!("iperf3-{}.log", server.name)),
    );
    wait_until("iperf3 server", dc::LIVE, || {
        server.ok("ss -ltnH").contains(":5201")
    });
    let taskset = if pin { "taskset -c 0 " } else { "" };
    let out = client.ok(&format!("{taskset}iperf3 -c {ip} -p 5201 -t {secs} -J"));
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

/// Two hosts joined by a cable (one veth pair), a container on each, routed without any
/// overlay: /32 to the container's veth, the other host's container prefix via the cable,
/// the container's default route via 169.254.0.1 on the host side. No weft, no nftables:
/// what two hosts on that wire can do at best.
fn routed_cable() -> Setup {
    let cable = dc::CABLE;
    let hosts = [Ns::new("rh"), Ns::new("rh")];
    let ctrs = [Ns::new("rc"), Ns::new("rc")];
    hosts[0].ok(&format!(
        "ip link add cable type veth peer name cable netns {}",
        hosts[1].name
    ));
    for (i, (h, c)) in hosts.iter().zip(&ctrs).enumerate() {
        let n = i + 1;
        let other = 3 - n;
        h.ok(&format!(
            "ip link set lo up && ip addr add {cable}.{n}/30 dev cable && ip link set cable up && \
             sysctl -qw net.ipv4.ip_forward=1 && \
             ip link add veth{n} type veth peer name eth0 netns {c} && \
             ip addr add 169.254.0.1/32 dev veth{n} && ip link set veth{n} up && \
             ip route add 10.98.{n}.1/32 dev veth{n} && \
             ip route add 10.98.{other}.0/24 via {cable}.{other}",
            c = c.name
        ));
        c.ok(&format!(
            "ip link set lo up && ip addr add 10.98.{n}.1/32 dev eth0 && ip link set eth0 up && \
             ip route add 169.254.0.1/32 dev eth0 && ip route add default via 169.254.0.1"
        ));
    }
    let [a, b] = ctrs;
    let ip = "10.98.2.1".to_string();
    wait_until("routed path", dc::LIVE, || ping_ok(&a, &ip));
    let dir = common::TempDir::new("routed");
    Setup {
        client: a,
        server: b,
        ip,
        log_dir: dir.path.clone(),
        _keep: Box::new((hosts, dir)),
    }
}

/// Two cells, policy on, app-a -> app-b allowed on iperf3's port; `fastpath`: "on" or "off";
/// `cable`: the cells' underlay is a cable instead of the switch (see [`DcOptions::cable`]).
fn overlay_mode(fastpath: &str, cable: bool) -> Setup {
    let dc = Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![
            ("WEFT_POLICY".into(), "on".into()),
            ("WEFT_FASTPATH".into(), fastpath.into()),
        ],
        cable,
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
        let dev = if cable { "cable" } else { "eth0" };
        wait_until("the fast path", dc::LIVE, || {
            dc.cell_ns(2)
                .ok(&format!("tc filter show dev {dev} ingress"))
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

/// Builds one place to measure.
type MakeSetup = fn() -> Setup;

/// Positions in `setups` (main) that the ratios refer to.
const BRIDGE: usize = 0;
const ROUTED: usize = 1;
const FAST_CABLE: usize = 2;

fn main() {
    let o = opts();
    // What is measured, named, in the order of the tables.
    let plan: [(&str, MakeSetup); 5] = [
        ("bridge mode, 1 host", bridge_mode),
        (
            "routed, no overlay, 2 hosts on a cable (ceiling)",
            routed_cable,
        ),
        ("overlay, fast path, cable", || overlay_mode("on", true)),
        ("overlay, fast path, switch", || overlay_mode("on", false)),
        ("overlay, kernel path, switch", || {
            overlay_mode("off", false)
        }),
    ];
    let (names, setups): (Vec<&str>, Vec<Setup>) = plan
        .iter()
        .map(|(name, make)| {
            eprintln!("setting up: {name} ...");
            (*name, make())
        })
        .unzip();
    let mut rounds: Vec<Vec<f64>> = Vec::new();
    for r in 1..=o.rounds {
        eprintln!("round {r}/{} ...", o.rounds);
        let row = setups
            .iter()
            .map(|s| iperf(&s.log_dir, &s.server, &s.client, &s.ip, o.secs, o.pin))
            .collect();
        rounds.push(row);
    }
    let cc = setups[0]
        .client
        .ok("sysctl -n net.ipv4.tcp_congestion_control");
    eprintln!("ping RTTs ...");
    let rtt: Vec<Vec<f64>> = setups
        .iter()
        .map(|s| rtts(&s.client, &s.ip, o.pings))
        .collect();
    drop(setups);
    eprintln!("new host joins ({} rounds) ...", o.joins);
    let joins = join_times(&o);

    let gbit = |b: f64| b / 1e9;
    let col = |k: usize| median(rounds.iter().map(|r| r[k]).collect());
    let ratio = |k: usize, base: usize| median(rounds.iter().map(|r| r[k] / r[base]).collect());
    println!();
    println!(
        "iperf3, 1 TCP stream, {} s per run, {} interleaved rounds, congestion control {}, {}",
        o.secs,
        rounds.len(),
        cc.trim(),
        if o.pin {
            "client on CPU 0, server on CPU 1"
        } else {
            "not pinned"
        }
    );
    println!();
    println!(
        "| path | median | / bridge (median of rounds) | rounds, Gbit/s |\n|---|---:|---:|---|"
    );
    for (k, name) in names.iter().enumerate() {
        let per: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.2}", gbit(r[k])))
            .collect();
        let share = if k == BRIDGE {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * ratio(k, BRIDGE))
        };
        println!(
            "| {name} | {:.2} Gbit/s | {share} | {} |",
            gbit(col(k)),
            per.join(" / ")
        );
    }
    println!(
        "\noverlay with the fast path on the cable / routed on the same cable: {:.1}% (median of rounds)",
        100.0 * ratio(FAST_CABLE, ROUTED)
    );
    println!();
    println!(
        "| ping ({} pings) | RTT p50 | RTT p99 |\n|---|---:|---:|",
        o.pings
    );
    for (k, name) in names.iter().enumerate() {
        println!(
            "| {name} | {:.3} ms | {:.3} ms |",
            pct(&rtt[k], 0.5),
            pct(&rtt[k], 0.99)
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
