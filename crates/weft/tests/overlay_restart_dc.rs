//! Issue 4's restart and outage tests in the simulated data centre (see `common/dc/mod.rs` and
//! `overlay_dc.rs`): agents restarted under traffic keep streams, container starts and every
//! packet; a controller outage keeps traffic flowing.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;
#[path = "common/overlay.rs"]
mod overlay;

use std::time::{Duration, Instant};

use common::{ping_ok, wait_until};
use dc::{parse_ping, Dc, Proc, LIVE, VTEP};
use overlay::*;

/// What [`agent_restarts`] saw.
struct RestartOutcome {
    ping_sent: u32,
    ping_got: u32,
    ping_summary: String,
    vtep_kept: bool,
    logs: String,
}

/// (d) Restarts agents (SIGTERM and SIGKILL, both cells, several times) during a running TCP
/// stream (2 MB/s, ~14 s) and a 100 pps ping between cells. Asserts what must hold in any
/// case: the stream completes with every byte; a container started while its cell's agent
/// is down works (the lease file is enough); the mesh is whole afterwards.
fn agent_restarts() -> RestartOutcome {
    let mut dc = Dc::new(2);
    let a = dc.add_container(1, "rs-a", "app-a");
    let b = dc.add_container(2, "rs-b", "app-b");
    assert!(ping_ok(&a.ns, &b.ip), "warm-up ping");
    let vtep_index = |dc: &Dc, n: usize| {
        ip_json(&dc.cell(n).ns, &format!("ip -j link show {VTEP}"))[0]["ifindex"].clone()
    };
    let idx = (vtep_index(&dc, 1), vtep_index(&dc, 2));

    let sink = dc.sink(&b.ns, 9000);
    const SECS: u32 = 14;
    let stream = dc.stream(&a.ns, &b.ip, 9000, SECS.into(), 2000000);
    let count = SECS * 100;
    let ping_path = dc.dir.path.join("ping.log");
    let ping = Proc::spawn(
        &a.ns,
        &[
            "ping",
            "-n",
            "-D",
            "-O",
            "-i",
            "0.01",
            "-c",
            &count.to_string(),
            "-W",
            "2",
            &b.ip,
        ],
        &[],
        &ping_path,
    );

    std::thread::sleep(Duration::from_secs(2));
    let st = dc.stop_agent(1);
    assert!(
        st.is_some_and(|s| s.success()),
        "agent 1 exits cleanly on SIGTERM: {st:?}"
    );
    dc.start_agent(1);
    std::thread::sleep(Duration::from_secs(1));
    dc.kill_agent(2);
    // Containers start while the agent is down.
    let c = dc.add_container(2, "rs-c", "app-c");
    std::thread::sleep(Duration::from_millis(500));
    dc.start_agent(2);
    std::thread::sleep(Duration::from_secs(1));
    dc.stop_agent(2);
    dc.kill_agent(1);
    std::thread::sleep(Duration::from_millis(500));
    dc.start_agent(1);
    dc.start_agent(2);
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..2 {
        dc.stop_agent(1);
        dc.start_agent(1);
        std::thread::sleep(Duration::from_millis(700));
    }

    let stream_st = stream.wait(Duration::from_secs(60));
    ping.wait(Duration::from_secs(60));
    let ping_log = std::fs::read_to_string(&ping_path).unwrap_or_default();
    let stream_log = std::fs::read_to_string(dc.dir.path.join("stream.log")).unwrap_or_default();
    let sink_log = sink.output();
    let ping_summary: String = ping_log
        .lines()
        .filter(|l| !l.contains("bytes from"))
        .map(|l| format!("{l}\n"))
        .collect();
    eprintln!("stream: {stream_log}sink: {sink_log}ping: {ping_summary}");
    assert!(
        stream_st.is_some_and(|s| s.success()),
        "the TCP stream across the restarts completes with every byte ({stream_st:?}): {stream_log} / {sink_log}"
    );
    dc.wait_mesh();
    assert!(
        ping_ok(&a.ns, &c.ip),
        "container started while the agent was down is reachable"
    );
    assert!(ping_ok(&c.ns, &b.ip), "and reaches its neighbour");
    let (ping_sent, ping_got) = parse_ping(&ping_log);
    assert_eq!(ping_sent, count, "ping ran: {ping_summary}");
    RestartOutcome {
        ping_sent,
        ping_got,
        ping_summary,
        vtep_kept: (vtep_index(&dc, 1), vtep_index(&dc, 2)) == idx,
        logs: format!(
            "--- cell 1 agent:\n{}\n--- cell 2 agent:\n{}",
            dc.cell(1).agent_log(),
            dc.cell(2).agent_log()
        ),
    }
}

/// (d) Agent restarts: a running TCP stream survives them and containers start while an
/// agent is down (see [`agent_restarts`]).
#[test]
fn agent_restart_keeps_streams_and_container_starts() {
    agent_restarts();
}

/// (d) Agent restarts lose not a single packet of a 100 pps ping between cells, and the VTEP
/// is adopted, not recreated.
#[test]
fn agent_restart_loses_no_packet() {
    let o = agent_restarts();
    assert!(o.vtep_kept, "VTEPs adopted, not recreated\n{}", o.logs);
    assert_eq!(
        o.ping_got, o.ping_sent,
        "zero loss at 100 pps across agent restarts: {}\n{}",
        o.ping_summary, o.logs
    );
}

/// (e) The controller is down for 30 s: cross-cell traffic keeps flowing (a 10 pps ping
/// loses nothing, TCP exchanges keep working, a container can start), the agents keep
/// running; when it is back, changes made after it (a new cell, a new container) work.
#[test]
fn controller_outage_keeps_traffic_flowing() {
    let mut dc = Dc::new(2);
    let a = dc.add_container(1, "co-a", "app-a");
    let b = dc.add_container(2, "co-b", "app-b");
    let _srv = dc.echo_server(&b.ns, ECHO_PORT);
    assert!(ping_ok(&a.ns, &b.ip), "warm-up ping");

    dc.stop_controller();
    let outage = Instant::now();
    let ping = Proc::spawn(
        &a.ns,
        &[
            "ping", "-n", "-q", "-i", "0.1", "-c", "300", "-W", "2", &b.ip,
        ],
        &[],
        &dc.dir.path.join("ping.log"),
    );
    let mut during = None;
    let mut exchanges = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        let reply = dc.tcp_exchange(&a.ns, &b.ip, ECHO_PORT, "while-the-controller-is-down");
        assert!(
            reply.is_some(),
            "TCP exchange {:?} into the outage",
            outage.elapsed()
        );
        exchanges += 1;
        if during.is_none() && outage.elapsed() > Duration::from_secs(10) {
            during = Some(dc.add_container(1, "co-during", "app-during"));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let during = during.expect("container added during the outage");
    assert!(
        ping_ok(&during.ns, &b.ip),
        "container started during the outage reaches cell 2"
    );
    ping.wait(Duration::from_secs(30));
    let log = std::fs::read_to_string(dc.dir.path.join("ping.log")).unwrap_or_default();
    let (sent, got) = parse_ping(&log);
    assert_eq!(sent, 300, "{log}");
    assert_eq!(got, sent, "no loss while the controller is down: {log}");
    assert!(exchanges >= 10, "{exchanges} TCP exchanges");
    assert!(
        dc.agent_alive(1) && dc.agent_alive(2),
        "agents survive the outage"
    );

    dc.start_controller();
    let n3 = dc.add_cell();
    let c = dc.add_container(n3, "co-c", "app-c");
    let _srv_c = dc.echo_server(&c.ns, ECHO_PORT);
    let _srv_a = dc.echo_server(&a.ns, ECHO_PORT);
    assert_full_reachability(&dc, &[&a, &b, &c]);
    // The container started during the outage gets its app's tag once the controller is back.
    wait_until("tag for the app started during the outage", LIVE, || {
        dc.containers_json(1).as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["app"] == "app-during" && r["tag"].is_u64())
        })
    });
}
