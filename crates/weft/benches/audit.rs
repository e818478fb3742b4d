//! The audit log's cost under a port scan (issue 18 item 3): one container scans another
//! app's container on the other cell with UDP datagrams to ever new ports (every one a new
//! flow that default deny drops), for `--secs` seconds, `--runs` times, with the audit log
//! off (the baseline), on (`--audit-log FILE`, default rate 100/s) and on with accepted
//! connections too. Reported: datagrams sent per second, datagrams default deny dropped per
//! second on the destination cell, audit lines written, what the kernel's limit left out,
//! and the destination agent's CPU time during the scan.
//!
//! ```text
//! sudo cargo bench -p weft --bench audit [-- --secs 3 --runs 3]
//! ```
//!
//! Everything happens in network namespaces the bench makes (tests/common/dc/mod.rs) and removes
//! on exit.

#[allow(clippy::too_many_arguments)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/dc/mod.rs"]
mod dc;

use std::time::{Duration, Instant};

use dc::{metric, Dc, DcOptions, METRICS};

struct Row {
    mode: &'static str,
    sent_pps: Vec<f64>,
    dropped_pps: Vec<f64>,
    lines: Vec<f64>,
    kernel_limited: Vec<f64>,
    agent_cpu_ms: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// utime + stime of `pid`, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|x| x.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz.max(1.0)
}

fn counter(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(m, name, labels).unwrap_or(0.0)
}

fn run_mode(mode: &'static str, extra: &[&str], secs: f64, runs: usize) -> Row {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["--metrics-listen".into(), METRICS.into()]);
    let dc = Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        agent_args: args,
        ..Default::default()
    });
    let b = dc.add_container(1, "bench-b", "app-b");
    let a = dc.add_container(2, "bench-a", "app-a");
    let script = dc.dir.path.join("scan.py");
    std::fs::write(&script, common::SCAN_PY).expect("scan.py");
    // Until cell 2 knows both (a first denied datagram is counted).
    let start = Instant::now();
    loop {
        b.ns.sh(&format!(
            "python3 -c \"import socket; socket.socket(2,2).sendto(b'x', ('{}', 9))\"",
            a.ip
        ));
        let m = dc.agent_metrics(2);
        if counter(
            &m,
            "weft_dropped_packets_total",
            &[("reason", "default deny")],
        ) > 0.0
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "cell 2 never denied"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid: u32 = dc.agent_pid(2).parse().expect("agent pid");
    let mut row = Row {
        mode,
        sent_pps: vec![],
        dropped_pps: vec![],
        lines: vec![],
        kernel_limited: vec![],
        agent_cpu_ms: vec![],
    };
    for _ in 0..runs {
        let m0 = dc.agent_metrics(2);
        let cpu0 = cpu_ms(pid);
        let out =
            b.ns.ok(&format!("python3 {} {} {secs}", script.display(), a.ip));
        std::thread::sleep(Duration::from_millis(500));
        let cpu1 = cpu_ms(pid);
        let m1 = dc.agent_metrics(2);
        let mut it = out.split_whitespace().skip(1);
        let sent: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
        let took: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(secs);
        let d = |name: &str, labels: &[(&str, &str)]| {
            counter(&m1, name, labels) - counter(&m0, name, labels)
        };
        row.sent_pps.push(sent / took);
        row.dropped_pps
            .push(d("weft_dropped_packets_total", &[("reason", "default deny")]) / took);
        row.lines.push(d("weft_audit_records_total", &[]));
        row.kernel_limited
            .push(d("weft_audit_dropped_total", &[("stage", "kernel")]));
        row.agent_cpu_ms.push(cpu1 - cpu0);
    }
    row
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("audit bench: needs root (network namespaces); skipped");
        return;
    }
    let secs = common::bench_arg("--secs", 3.0);
    let runs = common::bench_arg("--runs", 3.0) as usize;
    let log = std::env::temp_dir().join(format!("weft-audit-bench-{}.log", std::process::id()));
    let log_s = log.display().to_string();
    let rows = [
        run_mode("audit off (baseline)", &[], secs, runs),
        run_mode("--audit-log FILE", &["--audit-log", &log_s], secs, runs),
        run_mode(
            "--audit-log FILE --audit-accepted",
            &["--audit-log", &log_s, "--audit-accepted"],
            secs,
            runs,
        ),
    ];
    let _ = std::fs::remove_file(&log);
    println!();
    println!(
        "## weft audit bench: UDP port scan across two cells, {secs} s x {runs} runs, medians"
    );
    println!();
    println!("| mode | sent pkt/s | denied pkt/s (cell 2) | vs baseline | audit lines/run | kernel-limited/run | agent CPU ms/run |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let base = median(&rows[0].dropped_pps);
    for r in &rows {
        let d = median(&r.dropped_pps);
        println!(
            "| {} | {:.0} | {:.0} | {:+.1}% | {:.0} | {:.0} | {:.0} |",
            r.mode,
            median(&r.sent_pps),
            d,
            (d / base.max(1.0) - 1.0) * 100.0,
            median(&r.lines),
            median(&r.kernel_limited),
            median(&r.agent_cpu_ms)
        );
    }
}
