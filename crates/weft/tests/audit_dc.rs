//! Issue 18 item 3: the audit log, in the simulated data centre (see `common/dc/mod.rs`) with
//! enforcement on. Agents run with `--audit-log -` (the records go to standard output, which
//! the test harness keeps in the agent's log next to its tracing lines: `weft audit` reads
//! the records among them and says how many lines it skipped).
//!
//! - a denied attempt appears on the destination's cell with both apps, both container ids
//!   (the remote one from the controller's placement), the protocol, the port and the rule; an accepted new connection (with
//!   `--audit-accepted`) names the policy that allowed it;
//! - under a port scan the log holds its rate (the kernel's limit and the reader's bucket),
//!   the rest is counted in `weft_audit_dropped_total`, and every scanned packet is still
//!   dropped: logging never decides.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;

use std::time::{Duration, Instant};

use dc::{metric, Container, Dc, DcOptions, LIVE, METRICS};
use serde_json::Value;

fn lab(agent_args: &[&str]) -> Dc {
    let mut args: Vec<String> = agent_args.iter().map(|s| s.to_string()).collect();
    args.extend(["--metrics-listen".to_string(), METRICS.to_string()]);
    Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        agent_args: args,
        ..Default::default()
    })
}

/// Waits (bounded) until the container's cell has it in its policy table.
fn wait_known(dc: &Dc, c: &Container) {
    let start = Instant::now();
    while !String::from_utf8_lossy(
        &dc.cell_ns(c.cell)
            .sh("nft list set inet weft-policy containers")
            .stdout,
    )
    .contains(&format!("{} . \"", c.ip))
    {
        assert!(
            start.elapsed() < LIVE,
            "cell {} never took {}: {}",
            c.cell,
            c.id,
            dc.cell(c.cell).agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `weft ARGS` (no controller flags: `weft audit` reads files).
fn weft(args: &str) -> std::process::Output {
    std::process::Command::new(common::weft_bin())
        .args(args.split_whitespace())
        .output()
        .expect("run weft")
}

/// The audit records in cell `n`'s agent log, through `weft audit --file ... --json`.
fn records(dc: &Dc, n: usize) -> Vec<Value> {
    let log = dc.cell(n).dir.join("agent.1.log");
    let out = weft(&format!("audit --file {} --json", log.display()));
    assert!(
        out.status.success(),
        "weft audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("weft audit --json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (bounded) for a record that `pred` accepts in cell `n`'s log.
fn wait_record(dc: &Dc, n: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        if let Some(r) = records(dc, n).into_iter().find(&pred) {
            return r;
        }
        assert!(
            start.elapsed() < LIVE,
            "no audit record for {what} in cell {n}; records: {:#?}\n--- agent log:\n{}",
            records(dc, n),
            dc.cell(n).agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_denied_attempt_is_logged_with_apps_instance_port_and_rule() {
    let dc = lab(&["--audit-log", "-", "--audit-accepted"]);
    let b = dc.add_container(1, "audit-b", "app-b");
    let a = dc.add_container(2, "audit-a", "app-a");
    wait_known(&dc, &b);
    wait_known(&dc, &a);
    let _srv = dc.echo_server(&a.ns, 8080);
    let _srv2 = dc.echo_server(&a.ns, 9090);

    // Denied: no policy. The record is on the destination's cell (where policy decides);
    // the source's container id comes from the controller's placement once cell 1's report
    // has reached cell 2 (attempts are made until a record has it).
    let start = Instant::now();
    let r = loop {
        assert!(dc.tcp_exchange(&b.ns, &a.ip, 9090, "x").is_none());
        let found = records(&dc, 2).into_iter().find(|r| {
            r["verdict"] == "deny" && r["port"] == 9090 && r["src"]["instance"] == "audit-b"
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            start.elapsed() < LIVE,
            "no denied record naming audit-b: {:#?}",
            records(&dc, 2)
        );
    };
    assert_eq!(r["src"]["app"], "app-b", "{r}");
    assert_eq!(r["src"]["ip"], b.ip.as_str(), "{r}");
    assert_eq!(r["dst"]["app"], "app-a", "{r}");
    assert_eq!(r["dst"]["instance"], "audit-a", "{r}");
    assert_eq!(r["dst"]["ip"], a.ip.as_str(), "{r}");
    assert_eq!(r["proto"], "tcp", "{r}");
    assert_eq!(r["rule"], "default deny", "{r}");
    assert_eq!(r["host"], "-", "{r}");
    assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
    // Nothing on the source's cell: it does not decide.
    assert!(records(&dc, 1).iter().all(|r| r["verdict"] != "deny"));

    // Allowed: the accepted new connection names the policy.
    let out = dc.weft("policy add app-b app-a --port 8080");
    assert!(out.status.success(), "{out:?}");
    let start = Instant::now();
    while dc.tcp_exchange(&b.ns, &a.ip, 8080, "y").is_none() {
        assert!(start.elapsed() < LIVE, "the policy never opened 8080");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = wait_record(&dc, 2, "the accepted connection", |r| {
        r["verdict"] == "accept" && r["port"] == 8080
    });
    assert_eq!(r["rule"], "app-b -> app-a tcp 8080", "{r}");
    assert_eq!(r["src"]["app"], "app-b", "{r}");
    // Still denied on the other port, and logged again.
    let before = records(&dc, 2)
        .iter()
        .filter(|r| r["verdict"] == "deny")
        .count();
    assert!(dc.tcp_exchange(&b.ns, &a.ip, 9090, "x").is_none());
    let start = Instant::now();
    while records(&dc, 2)
        .iter()
        .filter(|r| r["verdict"] == "deny")
        .count()
        <= before
    {
        assert!(
            start.elapsed() < LIVE,
            "the second denied attempt was not logged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The table form names both ends.
    let log = dc.cell(2).dir.join("agent.1.log");
    let out = weft(&format!("audit --file {} --verdict deny", log.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("app-b/audit-b ")
            && text.contains("app-a/audit-a ")
            && text.contains("default deny"),
        "{text}"
    );
}

#[test]
fn the_rate_limit_holds_under_a_port_scan_and_the_scan_stays_denied() {
    const RATE: u64 = 50;
    const SECS: f64 = 3.0;
    let dc = lab(&["--audit-log", "-", "--audit-rate", &RATE.to_string()]);
    let b = dc.add_container(1, "scan-b", "app-b");
    let a = dc.add_container(2, "scan-a", "app-a");
    wait_known(&dc, &b);
    wait_known(&dc, &a);
    // A listener on a scanned port: it must see nothing.
    let sink_log = dc.dir.path.join("sink.log");
    let sink = dc::Proc::spawn(
        &a.ns,
        &["python3", "-c", "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',7))\nwhile True:\n print(s.recv(9), flush=True)"],
        &[],
        &sink_log,
    );
    std::thread::sleep(Duration::from_millis(300));
    let script = dc.dir.path.join("scan.py");
    std::fs::write(&script, common::SCAN_PY).expect("scan.py");
    let started = Instant::now();
    let out =
        b.ns.ok(&format!("python3 {} {} {SECS}", script.display(), a.ip));
    let took = started.elapsed().as_secs_f64();
    let sent: u64 = out
        .trim()
        .strip_prefix("sent ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("scan: {out}"));
    // Let the last batches arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let logged = records(&dc, 2)
        .iter()
        .filter(|r| r["verdict"] == "deny" && r["src"]["app"] == "app-b")
        .count() as u64;
    // The kernel's limit: a burst of 2*RATE, then RATE a second (+1 s of slack for batches).
    let bound = 2 * RATE + RATE * (took.ceil() as u64 + 1);
    assert!(
        sent > 10 * bound,
        "the scan was too slow to test the limit: {sent}"
    );
    assert!(logged > 0, "nothing logged");
    assert!(
        logged <= bound,
        "{logged} records for a {took:.1} s scan of {sent} packets at --audit-rate {RATE}"
    );
    let m = dc.agent_metrics(2);
    let kernel = metric(&m, "weft_audit_dropped_total", &[("stage", "kernel")]).unwrap_or(0.0);
    assert!(
        kernel as u64 + logged >= sent / 2,
        "the drops are counted: kernel {kernel}, logged {logged}, sent {sent}\n{m}"
    );
    // Every scanned packet was dropped: the sink on port 7 saw none.
    drop(sink);
    assert!(
        std::fs::read_to_string(&sink_log)
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "a scanned packet got through"
    );
    let dropped = metric(
        &m,
        "weft_dropped_packets_total",
        &[("reason", "default deny")],
    )
    .unwrap_or(0.0) as u64;
    assert!(
        dropped >= logged && dropped >= sent / 2,
        "default deny dropped {dropped} of {sent}"
    );
}
