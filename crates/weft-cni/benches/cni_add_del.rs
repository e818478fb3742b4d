//! ADD/DEL latency of `weft-cni` (bridge mode, ipMasq) against the reference CNI `bridge`
//! plugin with `host-local` IPAM, both exec'd exactly as a runtime does (issue 2, "Speed").
//!
//! ```text
//! sudo cargo bench -p weft-cni --bench cni_add_del [-- --n 100,1000 --parallel 8]
//! ```
//!
//! Options (after `--`): `--n LIST` sequential sizes (default 100,1000); `--parallel K`
//! callers for the parallel run (default 8, 0 skips it); `--parallel-n N` (default: largest
//! `--n`); `--ports-n N` containers with one port mapping each (default 100, 0 skips it);
//! `--ref-n LIST` sizes for the reference plugin (default: `--n`); `--no-ref`.
//!
//! Everything happens in network namespaces the bench makes (one "host" namespace per run,
//! one namespace per container) and removes on exit, panic or Ctrl-C; the machine's own
//! network namespace is never touched. Each call is timed from spawn to exit.

// The shared test support trips `too_many_arguments` (exec_plugin) under clippy's
// `--benches`; that file is not this bench's to change.
#[allow(clippy::too_many_arguments)]
#[path = "../../weft/tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{exec_plugin, result_ip, weft_cni_bin, Net, Ns, Reply, TempDir};
use serde_json::{json, Value};
use weft_testbed::bench::{check_interrupted, install_signal_handlers, interrupted};

const REF_BRIDGE: &str = "/usr/lib/cni/bridge";
const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// Set when a call failed in some worker: the others stop too.
static ABORT: AtomicBool = AtomicBool::new(false);

fn stopping() -> bool {
    interrupted() || ABORT.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------
// Options

struct Opts {
    n: Vec<usize>,
    parallel: usize,
    parallel_n: usize,
    ports_n: usize,
    ref_n: Vec<usize>,
    no_ref: bool,
}

fn parse_list(s: &str) -> Vec<usize> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {x:?}"))
        })
        .collect()
}

fn parse_opts() -> Opts {
    let mut n = vec![100, 1000];
    let mut parallel = 8;
    let mut parallel_n = None;
    let mut ports_n = 100;
    let mut ref_n = None;
    let mut no_ref = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |key: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| panic!("{key} needs a value"))
        };
        match key.as_str() {
            "--n" => n = parse_list(&value("--n")),
            "--parallel" => parallel = value("--parallel").parse().expect("--parallel K"),
            "--parallel-n" => {
                parallel_n = Some(value("--parallel-n").parse().expect("--parallel-n N"))
            }
            "--ports-n" => ports_n = value("--ports-n").parse().expect("--ports-n N"),
            "--ref-n" => ref_n = Some(parse_list(&value("--ref-n"))),
            "--no-ref" => no_ref = true,
            // cargo bench passes `--bench`; libtest-style filters are ignored as well.
            _ => {}
        }
    }
    let parallel_n = parallel_n.unwrap_or_else(|| n.iter().copied().max().unwrap_or(0));
    let ref_n = ref_n.unwrap_or_else(|| n.clone());
    Opts {
        n,
        parallel,
        parallel_n,
        ports_n,
        ref_n,
        no_ref,
    }
}

// ---------------------------------------------------------------------------------------
// Runs

#[derive(Clone, Copy, PartialEq, Eq)]
enum Plugin {
    Weft,
    Reference,
}

struct RunSpec {
    plugin: Plugin,
    n: usize,
    callers: usize,
    ports: bool,
}

impl RunSpec {
    fn label(&self) -> &'static str {
        match (self.plugin, self.ports) {
            (Plugin::Weft, false) => "weft-cni",
            (Plugin::Weft, true) => "weft-cni +portmap",
            (Plugin::Reference, false) => "bridge+host-local",
            (Plugin::Reference, true) => "bridge+host-local +portmap",
        }
    }
}

struct RunResult {
    label: &'static str,
    plugin: Plugin,
    ports: bool,
    n: usize,
    callers: usize,
    add: Vec<Duration>,
    del: Vec<Duration>,
    /// Wall time of the ADD phase plus the DEL phase.
    total: Duration,
}

/// The test bed of one run: its own host namespace, data dir and base configuration.
fn make_bed(spec: &RunSpec, run: usize) -> Net {
    let host = Ns::new("h");
    let data = TempDir::new("d");
    let name = format!("bench{}r{run}", std::process::id());
    let data_dir = data.path.display().to_string();
    let conf = match spec.plugin {
        Plugin::Weft => json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "weft-cni",
            "bridge": "weft0",
            "isGateway": true,
            "ipMasq": true,
            "dataDir": data_dir,
            "ipam": { "subnet": format!("10.{}.0.0/16", 100 + run) },
        }),
        Plugin::Reference => json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": "cni-bench0",
            "isGateway": true,
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "subnet": format!("10.{}.0.0/16", 100 + run),
                "dataDir": data_dir,
            },
        }),
    };
    Net { host, data, conf }
}

fn binary(plugin: Plugin) -> &'static str {
    match plugin {
        Plugin::Weft => weft_cni_bin(),
        Plugin::Reference => REF_BRIDGE,
    }
}

/// One timed exec; a failed call aborts the bench with the plugin's error.
fn timed_call(
    spec: &RunSpec,
    bed: &Net,
    command: &str,
    cid: &str,
    ns: &Ns,
    conf: &Value,
) -> (Duration, Reply) {
    let host = bed.host.path();
    let netns = ns.path();
    let start = Instant::now();
    let reply = exec_plugin(
        binary(spec.plugin),
        &host,
        command,
        cid,
        &netns,
        "eth0",
        conf,
        &[],
    );
    let took = start.elapsed();
    if !reply.ok {
        ABORT.store(true, Ordering::SeqCst);
        // Ctrl-C reaches the plugin too (same process group): not the plugin's fault.
        check_interrupted();
        panic!(
            "{} {command} {cid} failed after {:.1} ms: {}\nstderr: {}",
            spec.label(),
            ms(took),
            reply.json,
            reply.stderr
        );
    }
    (took, reply)
}

/// Runs `f(i)` for i in 0..n, on `callers` threads (one caller: on this thread).
fn for_each_call(n: usize, callers: usize, f: impl Fn(usize) -> Duration + Sync) -> Vec<Duration> {
    if callers <= 1 {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            check_interrupted();
            out.push(f(i));
        }
        return out;
    }
    parallel(n, callers, f)
}

/// `f(i)` for i in 0..n on `threads` threads, results in no particular order; the threads
/// stop taking work after Ctrl-C or a failed call.
fn parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut mine = Vec::new();
                while !stopping() {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    mine.push(f(i));
                }
                out.lock().unwrap().extend(mine);
            });
        }
    });
    check_interrupted();
    out.into_inner().unwrap()
}

fn run(spec: &RunSpec, run_no: usize, pool: &[Ns]) -> RunResult {
    check_interrupted();
    assert!(pool.len() >= spec.n, "container pool too small");
    let bed = make_bed(spec, run_no);
    let tag = format!("b{}r{run_no}", std::process::id());
    let cids: Vec<String> = (0..spec.n).map(|i| format!("{tag}c{i:05}")).collect();
    let confs: Vec<Value> = (0..spec.n)
        .map(|i| {
            let mut c = bed.conf.clone();
            if spec.ports {
                c["runtimeConfig"] = json!({ "portMappings": [
                    { "hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp" }
                ]});
            }
            c
        })
        .collect();
    eprintln!(
        "-- {}: N={} callers={} (host netns {})",
        spec.label(),
        spec.n,
        spec.callers,
        bed.host.name
    );

    let ips = Mutex::new(Vec::with_capacity(spec.n));
    let t0 = Instant::now();
    let add = for_each_call(spec.n, spec.callers, |i| {
        let (d, r) = timed_call(spec, &bed, "ADD", &cids[i], &pool[i], &confs[i]);
        ips.lock().unwrap().push(result_ip(&r.json));
        d
    });
    let add_wall = t0.elapsed();

    // Every container got an address, and no two the same one.
    let ips = ips.into_inner().unwrap();
    let distinct: HashSet<&String> = ips.iter().filter(|ip| !ip.is_empty()).collect();
    assert_eq!(
        distinct.len(),
        spec.n,
        "{}: {} distinct addresses for {} containers",
        spec.label(),
        distinct.len(),
        spec.n
    );

    let t1 = Instant::now();
    let del = for_each_call(spec.n, spec.callers, |i| {
        timed_call(spec, &bed, "DEL", &cids[i], &pool[i], &confs[i]).0
    });
    let del_wall = t1.elapsed();

    verify_clean(spec, &bed, &pool[..spec.n]);
    let result = RunResult {
        label: spec.label(),
        plugin: spec.plugin,
        ports: spec.ports,
        n: spec.n,
        callers: spec.callers,
        add,
        del,
        total: add_wall + del_wall,
    };
    eprintln!(
        "   ADD p50 {:.2} ms p99 {:.2} ms max {:.2} ms | DEL p50 {:.2} ms p99 {:.2} ms max {:.2} ms | total {:.2} s",
        ms(pct(&result.add, 50.0)),
        ms(pct(&result.add, 99.0)),
        ms(pct(&result.add, 100.0)),
        ms(pct(&result.del, 50.0)),
        ms(pct(&result.del, 99.0)),
        ms(pct(&result.del, 100.0)),
        result.total.as_secs_f64()
    );
    result
    // `bed` drops here: the host namespace (bridge, firewall state) and data dir go.
}

/// Links of a namespace, as `(name, kind)`; `kind` is the link type of `ip -d`.
fn links(ns: &Ns) -> Vec<(String, String)> {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "-d", "link", "show"])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {} link: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
            let kind = ["veth", "bridge"]
                .iter()
                .find(|k| l.contains(&format!(" {k} ")))
                .map(|k| k.to_string())
                .unwrap_or_default();
            Some((name, kind))
        })
        .collect()
}

/// After DEL of every container: nothing of them is left in the host namespace, the
/// address store or the containers' namespaces.
fn verify_clean(spec: &RunSpec, bed: &Net, containers: &[Ns]) {
    let what = spec.label();
    let veths: Vec<String> = links(&bed.host)
        .into_iter()
        .filter(|(_, k)| k == "veth")
        .map(|(n, _)| n)
        .collect();
    assert!(
        veths.is_empty(),
        "{what}: veths left in the host netns: {veths:?}"
    );
    match spec.plugin {
        Plugin::Weft => {
            let left = bed.host_links();
            assert!(left.is_empty(), "{what}: weft links left: {left:?}");
            let held = bed.allocated();
            assert!(
                held.is_empty(),
                "{what}: addresses still allocated: {held:?}"
            );
            let rules = bed.host.ok("nft list ruleset");
            assert!(
                !rules.contains("elements"),
                "{what}: port mapping elements left:\n{rules}"
            );
        }
        Plugin::Reference => {
            let dir = bed
                .data
                .path
                .join(bed.conf["name"].as_str().unwrap_or_default());
            let held: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                        .collect()
                })
                .unwrap_or_default();
            assert!(held.is_empty(), "{what}: host-local still holds {held:?}");
            let nat = bed.host.sh("iptables -t nat -S").stdout;
            let chains = String::from_utf8_lossy(&nat)
                .lines()
                .filter(|l| l.starts_with("-N CNI-"))
                .count();
            if chains > 0 {
                eprintln!("   note: {chains} CNI-* nat chains left by the reference plugin");
            }
        }
    }
    // The containers' namespaces are back to just `lo` (checked on 8 threads).
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= containers.len() || interrupted() {
                    break;
                }
                let l = links(&containers[i]);
                assert!(
                    l.iter().all(|(n, _)| n == "lo"),
                    "{what}: container netns {} still has {l:?}",
                    containers[i].name
                );
            });
        }
    });
    check_interrupted();
}

// ---------------------------------------------------------------------------------------
// Container namespaces: made and removed on several threads (not measured).

fn make_pool(n: usize) -> Vec<Ns> {
    parallel(n, 8.min(n.max(1)), |_| Ns::new("c"))
}

fn drop_pool(pool: Vec<Ns>) {
    let chunk = pool.len().div_ceil(8).max(1);
    let mut pool = pool;
    std::thread::scope(|s| {
        while !pool.is_empty() {
            let rest = pool.split_off(chunk.min(pool.len()));
            let part = std::mem::replace(&mut pool, rest);
            s.spawn(move || drop(part));
        }
    });
}

// ---------------------------------------------------------------------------------------
// Report

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile (100 = max).
fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("({cmd}: {e})"));
    if out.is_empty() {
        "unknown".into()
    } else {
        out
    }
}

fn report(results: &[RunResult], started: Instant) {
    let weft_of = |r: &RunResult| {
        results
            .iter()
            .find(|w| w.plugin == Plugin::Weft && !w.ports && w.n == r.n && w.callers == r.callers)
    };
    println!();
    println!(
        "weft-cni ADD/DEL bench — {} — nproc {} — kernel {} — weft {}",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("nproc", &[]),
        sh("uname", &["-r"]),
        sh(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        ),
    );
    println!("bridge mode, ipMasq on, cniVersion 1.0.0, each call timed from spawn to exit (ms)");
    println!();
    println!(
        "| plugin | N | callers | ADD p50 | ADD p99 | ADD max | DEL p50 | DEL p99 | DEL max | total s | ref/weft ADD p50 | ref/weft DEL p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let (ra, rd) = match (r.plugin, weft_of(r)) {
            (Plugin::Reference, Some(w)) => (
                format!("{:.1}x", ms(pct(&r.add, 50.0)) / ms(pct(&w.add, 50.0))),
                format!("{:.1}x", ms(pct(&r.del, 50.0)) / ms(pct(&w.del, 50.0))),
            ),
            _ => ("".into(), "".into()),
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.label,
            r.n,
            r.callers,
            ms(pct(&r.add, 50.0)),
            ms(pct(&r.add, 99.0)),
            ms(pct(&r.add, 100.0)),
            ms(pct(&r.del, 50.0)),
            ms(pct(&r.del, 99.0)),
            ms(pct(&r.del, 100.0)),
            r.total.as_secs_f64(),
            ra,
            rd
        );
    }

    // Does a call get slower as the network fills up? (Sequential runs keep call order.)
    let growth: Vec<String> = results
        .iter()
        .filter(|r| r.callers == 1 && r.n >= 500)
        .map(|r| {
            let tenth = r.n / 10;
            let first = |v: &[Duration]| ms(pct(&v[..tenth], 50.0));
            let last = |v: &[Duration]| ms(pct(&v[v.len() - tenth..], 50.0));
            format!(
                "{} N={}: ADD p50 {:.2} ms for the first {tenth} containers, {:.2} ms for the last {tenth}; DEL {:.2} -> {:.2} ms",
                r.label,
                r.n,
                first(&r.add),
                last(&r.add),
                first(&r.del),
                last(&r.del)
            )
        })
        .collect();
    if !growth.is_empty() {
        println!();
        println!("growth with N (sequential runs):");
        for l in growth {
            println!("  {l}");
        }
    }

    // The issue's targets, where this run measured them.
    let mut lines = Vec::new();
    for r in results
        .iter()
        .filter(|r| r.plugin == Plugin::Reference && r.callers == 1)
    {
        if let Some(w) = weft_of(r) {
            for (what, rv, wv) in [("ADD", &r.add, &w.add), ("DEL", &r.del, &w.del)] {
                let (rp, wp) = (ms(pct(rv, 50.0)), ms(pct(wv, 50.0)));
                lines.push(format!(
                    "{} N={}: weft {what} p50 {wp:.2} ms <= reference/10 = {:.2} ms",
                    if wp <= rp / 10.0 { "PASS" } else { "FAIL" },
                    r.n,
                    rp / 10.0
                ));
            }
        }
    }
    for r in results
        .iter()
        .filter(|r| r.plugin == Plugin::Weft && !r.ports && r.callers > 1)
    {
        let worst = ms(pct(&r.add, 99.0)).max(ms(pct(&r.del, 99.0)));
        lines.push(format!(
            "{} N={} callers={}: p99 {worst:.2} ms < 10 ms",
            if worst < 10.0 { "PASS" } else { "FAIL" },
            r.n,
            r.callers
        ));
    }
    for r in results
        .iter()
        .filter(|r| r.plugin == Plugin::Weft && !r.ports && r.callers == 1 && r.n == 1000)
    {
        let t = r.total.as_secs_f64();
        lines.push(format!(
            "{} N=1000: ADD+DEL total {t:.2} s < 10 s",
            if t < 10.0 { "PASS" } else { "FAIL" }
        ));
    }
    if !lines.is_empty() {
        println!();
        println!("targets (issue 2):");
        for l in lines {
            println!("  {l}");
        }
    }
    println!();
    println!(
        "bench wall time {:.0} s (namespace setup and checks included)",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------

fn main() {
    let started = Instant::now();
    let opts = parse_opts();
    install_signal_handlers();

    let have_ref =
        std::path::Path::new(REF_BRIDGE).exists() && std::path::Path::new(REF_HOST_LOCAL).exists();
    let mut specs = Vec::new();
    for &n in &opts.n {
        specs.push(RunSpec {
            plugin: Plugin::Weft,
            n,
            callers: 1,
            ports: false,
        });
    }
    if opts.parallel > 1 && opts.parallel_n > 0 {
        specs.push(RunSpec {
            plugin: Plugin::Weft,
            n: opts.parallel_n,
            callers: opts.parallel,
            ports: false,
        });
    }
    if opts.ports_n > 0 {
        specs.push(RunSpec {
            plugin: Plugin::Weft,
            n: opts.ports_n,
            callers: 1,
            ports: true,
        });
    }
    if have_ref && !opts.no_ref {
        for &n in &opts.ref_n {
            specs.push(RunSpec {
                plugin: Plugin::Reference,
                n,
                callers: 1,
                ports: false,
            });
        }
    } else if !opts.no_ref {
        eprintln!("{REF_BRIDGE} or {REF_HOST_LOCAL} missing: skipping the reference plugin");
    }

    let pool_size = specs.iter().map(|s| s.n).max().unwrap_or(0);
    eprintln!("making {pool_size} container namespaces");
    let pool = make_pool(pool_size);

    let mut results = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        results.push(run(spec, i, &pool));
    }

    eprintln!("removing {} container namespaces", pool.len());
    drop_pool(pool);
    report(&results, started);
}
