//! Issue 5's restart tests in the simulated data centre (policy enforcement on, see
//! `common/policy.rs`): the agents are killed and restarted while allowed and denied traffic
//! runs; enforcement never lapses and no allowed cross-cell datagram is lost.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;
#[path = "common/policy.rs"]
mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use policy::*;

/// Lines `<unix time> <kind> <seconds>` of a `probe`: (kind, line) of each.
fn probe_results(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let kind = l.split_whitespace().nth(1)?;
            Some((kind.to_string(), l.to_string()))
        })
        .collect()
}

/// Distinct sequence numbers received per flood tag, from a `udpecho quiet` log.
fn flood_received(log: &str) -> BTreeMap<String, BTreeSet<u64>> {
    let mut m: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for l in log.lines() {
        let mut w = l.split_whitespace().skip(1);
        if let (Some(tag), Some(seq)) = (w.next(), w.next().and_then(|s| s.parse().ok())) {
            m.entry(tag.to_string()).or_default().insert(seq);
        }
    }
    m
}

fn flood_sent(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.strip_prefix("sent "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("flood did not finish: {log}"))
}

/// What [`agent_restarts`] saw of the allowed cross-cell datagrams: sent, received.
struct RestartOutcome {
    cross_sent: u64,
    cross_got: BTreeSet<u64>,
    logs: String,
}

/// Policies app-b -> app-a (tcp/8080, tcp/9000, udp/5353); the agents of both cells are
/// killed (SIGKILL) and stopped (SIGTERM) and restarted, six times in all, while:
/// - an established TCP stream AppB (cell 1) -> AppA (cell 2) runs;
/// - new allowed TCP connections are opened all the time, AppB (cell 1) and AppB2 (cell 2)
///   to AppA;
/// - denied pairs are probed all the time, AppC (cell 1) and AppC2 (cell 2) to AppA;
/// - every 10 ms a datagram from a new socket (a new flow, checked by the policy) goes to AppA
///   from AppB2 (same cell, allowed), AppB (cell 1, allowed), AppC and AppC2 (denied).
///
/// Asserts what must hold: the stream completes with every byte; every new allowed TCP
/// connection connects; no denied TCP connection ever does; no denied datagram arrives; every
/// allowed datagram within cell 2 arrives; afterwards the same as before.
fn agent_restarts() -> RestartOutcome {
    let mut dc = lab(2, &[]);
    let b = dc.add_container(1, "rs-b", "app-b");
    let c = dc.add_container(1, "rs-c", "app-c");
    let a = dc.add_container(2, "rs-a", "app-a");
    let b2 = dc.add_container(2, "rs-b2", "app-b");
    let c2 = dc.add_container(2, "rs-c2", "app-c");
    wait_known(&dc, &[&b, &c, &a, &b2, &c2]);
    dc.policy("add app-b app-a --port 8080");
    dc.policy("add app-b app-a --port 9000");
    dc.policy(&format!("add app-b app-a --protocol udp --port {UDP_PORT}"));
    let _echo = dc.echo_server(&a.ns, PORT);
    let floods_in = udp_server(&dc, &a.ns, UDP_PORT, true);
    let sock = script(&dc, "sock.py").display().to_string();
    let sink = Proc::spawn(
        &a.ns,
        &["python3", &sock, "sink", "9000"],
        &[],
        &dc.dir.path.join("sink.log"),
    );
    let start = Instant::now();
    while !a.ns.ok("ss -ltnH").contains(":9000 ") {
        assert!(start.elapsed() < LIVE, "sink: {}", sink.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    connects(&dc, &b, &a, PORT);
    connects(&dc, &b2, &a, PORT);
    udp_connects_quiet(&dc, &b2, &a, &floods_in);
    udp_connects_quiet(&dc, &b, &a, &floods_in);
    denied(&dc, &[(&c, &a, PORT), (&c2, &a, PORT)]);
    let warm = floods_in.output().lines().count();

    const SECS: u64 = 16;
    let polp = script(&dc, "pol.py").display().to_string();
    let bg = |ns: &Ns, name: &str, args: &[&str]| {
        let mut argv = vec!["python3", polp.as_str()];
        argv.extend_from_slice(args);
        Proc::spawn(ns, &argv, &[], &dc.dir.path.join(format!("{name}.log")))
    };
    let stream = Proc::spawn(
        &b.ns,
        &[
            "python3",
            &sock,
            "stream",
            &a.ip,
            "9000",
            &SECS.to_string(),
            "100000",
        ],
        &[],
        &dc.dir.path.join("stream.log"),
    );
    let port_s = PORT.to_string();
    let udp_s = UDP_PORT.to_string();
    let secs_s = SECS.to_string();
    // Allowed probes wait 3 s (a SYN lost to something else is retransmitted after 1 s);
    // denied ones 1 s (they must never be answered at all).
    let probes = [
        (
            bg(&b.ns, "p-b", &["probe", &a.ip, &port_s, "3", "0.2"]),
            true,
        ),
        (
            bg(&b2.ns, "p-b2", &["probe", &a.ip, &port_s, "3", "0.2"]),
            true,
        ),
        (
            bg(&c.ns, "p-c", &["probe", &a.ip, &port_s, "1", "0.1"]),
            false,
        ),
        (
            bg(&c2.ns, "p-c2", &["probe", &a.ip, &port_s, "1", "0.1"]),
            false,
        ),
    ];
    let flood =
        |ns: &Ns, tag: &str| bg(ns, tag, &["udpflood", &a.ip, &udp_s, &secs_s, "0.01", tag]);
    let floods = [
        ("fb2", flood(&b2.ns, "fb2")),
        ("fb", flood(&b.ns, "fb")),
        ("fc", flood(&c.ns, "fc")),
        ("fc2", flood(&c2.ns, "fc2")),
    ];

    let t0 = Instant::now();
    let pause = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    pause(2000);
    dc.kill_agent(2); // the destination cell: a crash
    pause(1000);
    dc.start_agent(2);
    pause(1500);
    let st = dc.stop_agent(1); // the source cell (marking): a clean stop
    assert!(
        st.is_some_and(|s| s.success()),
        "agent 1 stops on SIGTERM: {st:?}"
    );
    pause(1000);
    dc.start_agent(1);
    pause(1500);
    dc.kill_agent(1);
    dc.start_agent(1);
    pause(1000);
    let st = dc.stop_agent(2);
    assert!(
        st.is_some_and(|s| s.success()),
        "agent 2 stops on SIGTERM: {st:?}"
    );
    dc.start_agent(2);
    pause(1000);
    dc.kill_agent(2);
    dc.start_agent(2);
    eprintln!("restarts done after {:?}", t0.elapsed());

    let stream_st = stream.wait(Duration::from_secs(SECS + 60));
    let mut sent = BTreeMap::new();
    for (tag, f) in floods {
        let path = f.log.clone();
        f.wait(Duration::from_secs(30));
        sent.insert(
            tag,
            flood_sent(&std::fs::read_to_string(path).unwrap_or_default()),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let probe_logs: Vec<(bool, String)> = probes
        .into_iter()
        .map(|(p, allowed)| (allowed, p.output()))
        .collect();
    let got = flood_received(
        &floods_in
            .output()
            .lines()
            .skip(warm)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let logs = diag(&dc);

    let stream_log = std::fs::read_to_string(dc.dir.path.join("stream.log")).unwrap_or_default();
    eprintln!("stream: {stream_log}sink: {}", sink.output());
    assert!(
        stream_st.is_some_and(|s| s.success()),
        "the established TCP stream completes with every byte ({stream_st:?}): {stream_log} / {}{logs}",
        sink.output()
    );
    for (allowed, log) in &probe_logs {
        let results = probe_results(log);
        assert!(results.len() >= 10, "probe ran: {log}");
        let wrong: Vec<&String> = results
            .iter()
            .filter(|(k, _)| {
                if *allowed {
                    k != "ok"
                } else {
                    k == "ok" || k.starts_with("connected")
                }
            })
            .map(|(_, l)| l)
            .collect();
        assert!(
            wrong.is_empty(),
            "{} probe: {wrong:?} (of {})\n{log}{logs}",
            if *allowed { "allowed" } else { "denied" },
            results.len()
        );
    }
    let count = |tag: &str| got.get(tag).map_or(0, |s| s.len() as u64);
    eprintln!(
        "datagrams sent {sent:?}, received fb2={} fb={} fc={} fc2={}",
        count("fb2"),
        count("fb"),
        count("fc"),
        count("fc2")
    );
    assert_eq!(count("fc"), 0, "denied datagrams from AppC arrived{logs}");
    assert_eq!(count("fc2"), 0, "denied datagrams from AppC2 arrived{logs}");
    assert_eq!(
        count("fb2"),
        sent["fb2"],
        "every allowed datagram (a new flow each) from AppB2 (same cell) arrives{logs}"
    );
    // Afterwards, as before.
    connects(&dc, &b, &a, PORT);
    connects(&dc, &b2, &a, PORT);
    denied(&dc, &[(&c, &a, PORT), (&c2, &a, PORT)]);
    RestartOutcome {
        cross_sent: sent["fb"],
        cross_got: got.get("fb").cloned().unwrap_or_default(),
        logs,
    }
}

/// Agent restarts keep enforcing: see [`agent_restarts`].
#[test]
fn agent_restarts_keep_enforcing() {
    agent_restarts();
}

/// Agent restarts drop no allowed cross-cell datagram either (each is a new flow, so each is
/// marked on cell 1 and checked on cell 2 while the agents restart).
#[test]
fn agent_restarts_drop_no_allowed_cross_cell_datagram() {
    let o = agent_restarts();
    let lost: Vec<u64> = (0..o.cross_sent)
        .filter(|n| !o.cross_got.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} allowed datagrams AppB (cell 1) -> AppA (cell 2) lost: {}{}",
        lost.len(),
        o.cross_sent,
        ranges(&lost),
        o.logs
    );
}
