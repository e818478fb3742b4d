//! Issue 5's tests: network policy in the simulated data centre (see `common/dc/mod.rs`), with
//! enforcement on (`WEFT_POLICY=on`). Seed 000 steps 3 and 10: AppB's packets are marked with
//! app-b's tag on cell 1 (the VXLAN group-policy field carries it), and cell 2 delivers them
//! to AppA only if a policy allows app-b -> app-a on that protocol and port. Default deny,
//! one-way policies, replies through conntrack, no spoofing (container source addresses and
//! VXLAN from unleased underlay addresses), live add/remove, agent restarts, metrics and
//! `weft policy check`.
//!
//! Each scenario is its own `#[test]` with its own data centre, so they run in parallel.
//! "Denied" means the packets get no answer (default deny drops them) while a server is
//! listening on the destination port, so a refusal by the destination cannot pass for a
//! denial. Waits are bounded liveness waits, never speed assertions.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;
#[path = "common/policy.rs"]
mod policy;

use std::time::{Duration, Instant};

use dc::{metric, INTERNET_IP, METRICS, UNDERLAY};

use policy::*;

// ----- 1. the matrix -----

/// Seed 000's matrix with one policy app-b -> app-a tcp/8080: AppB (cell 1) reaches AppA
/// (cell 2) on 8080 only; not on 9090; AppA does not reach AppB (one-way); AppC, on either
/// cell, does not reach AppA. UDP and ICMP need their own policies. Same-cell pairs follow
/// the same rules: AppC on cell 2 reaches AppA on cell 2 only after a policy app-c -> app-a.
#[test]
fn matrix_one_way_per_protocol_and_port_across_and_within_cells() {
    let dc = lab(2, &[]);
    let b = dc.add_container(1, "mx-b", "app-b");
    let c1 = dc.add_container(1, "mx-c1", "app-c");
    let a = dc.add_container(2, "mx-a", "app-a");
    let c2 = dc.add_container(2, "mx-c2", "app-c");
    wait_known(&dc, &[&b, &c1, &a, &c2]);
    let _servers = [
        dc.echo_server(&a.ns, PORT),
        dc.echo_server(&a.ns, OTHER),
        dc.echo_server(&b.ns, PORT),
        dc.echo_server(&c2.ns, PORT),
        udp_server(&dc, &a.ns, UDP_PORT, false),
    ];

    // Default deny, across cells and within a cell.
    denied(&dc, &[(&b, &a, PORT), (&c2, &a, PORT), (&a, &c2, PORT)]);

    let out = dc.policy("add app-b app-a --port 8080");
    assert!(out.contains("created"), "{out}");
    connects(&dc, &b, &a, PORT);
    denied(
        &dc,
        &[
            (&b, &a, OTHER),  // another port
            (&a, &b, PORT),   // the policy is one-way
            (&c1, &a, PORT),  // an unrelated app, across cells
            (&c2, &a, PORT),  // an unrelated app, same cell
            (&c2, &a, OTHER), // same cell, another port
        ],
    );
    // A TCP policy allows neither UDP nor ICMP.
    udp_denied(&dc, &b, &a, UDP_PORT);
    ping_denied(&dc, &b, &a);

    dc.policy(&format!("add app-b app-a --protocol udp --port {UDP_PORT}"));
    udp_connects(&dc, &b, &a, UDP_PORT);
    udp_denied(&dc, &c2, &a, UDP_PORT);
    ping_denied(&dc, &b, &a);

    dc.policy("add app-b app-a --protocol icmp");
    ping_passes(&dc, &b, &a);
    ping_denied(&dc, &a, &b);
    ping_denied(&dc, &c2, &a);

    // Same cell: a policy app-c -> app-a opens AppC (cell 2) -> AppA (cell 2) on 8080, and
    // AppC on cell 1 too (policies name apps, not cells); nothing else.
    dc.policy("add app-c app-a --port 8080");
    connects(&dc, &c2, &a, PORT);
    connects(&dc, &c1, &a, PORT);
    connects(&dc, &b, &a, PORT);
    denied(
        &dc,
        &[
            (&c2, &a, OTHER),
            (&a, &c2, PORT),
            (&a, &b, PORT),
            (&b, &c2, PORT),
        ],
    );
}

/// A container is under policy as soon as its cell's agent learns of it, which the agent
/// does by watching weft-cni's records (inotify), not at the next resync (here 10 minutes
/// away). The agent's watcher thread being slow (a loaded host) is made deterministic by
/// stopping the agent (SIGSTOP) while weft-cni attaches the cell's first container, then
/// letting it go on (SIGCONT): the queued inotify events are all there, so the agent must take
/// the container into its policy table within the liveness bound, and default deny must hold.
#[test]
fn a_new_container_is_enforced_without_waiting_for_a_resync() {
    let dc = Dc::with(DcOptions {
        cells: 2,
        resync: 600,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        ..Default::default()
    });
    write_py(&script(&dc, "pol.py"), POL_PY);
    let b = dc.add_container(1, "nc-b", "app-b");
    wait_known(&dc, &[&b]);
    // The agent of cell 2: the only `weft agent` process in its namespace.
    let agent = dc.agent_pid(2);
    let sig = |s: &str| {
        let st = std::process::Command::new("kill")
            .args([s, agent.as_str()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {s} {agent}");
    };
    sig("-STOP");
    let a = dc.add_container(2, "nc-a", "app-a");
    std::thread::sleep(Duration::from_millis(300));
    sig("-CONT");
    let start = Instant::now();
    while !known(&dc, &a) && start.elapsed() < LIVE {
        std::thread::sleep(Duration::from_millis(100));
    }
    let in_table = known(&dc, &a);
    let _srv = dc.echo_server(&a.ns, PORT);
    let t = tcp(&pol(&dc), &b.ns, &a.ip, PORT, DENY_WAIT);
    assert!(
        in_table && t.dropped(),
        "cell 2's first container: in the policy table after {:?}: {in_table}; \
         app-b -> app-a without a policy: {t:?} (must be dropped){}",
        start.elapsed(),
        diag(&dc)
    );
}

// ----- 2. live add and remove -----

/// Adding the policy opens the path for new connections and removing it closes it again,
/// twice over, without restarting any agent: on the destination cell (AppA, cell 2) and for a
/// destination on the source's own cell (AppA2, cell 1).
#[test]
fn adding_opens_and_removing_closes_new_connections_without_restarts() {
    let mut dc = lab(2, &[]);
    let b = dc.add_container(1, "ar-b", "app-b");
    let a = dc.add_container(2, "ar-a", "app-a");
    let a2 = dc.add_container(1, "ar-a2", "app-a");
    wait_known(&dc, &[&b, &a, &a2]);
    let _servers = [dc.echo_server(&a.ns, PORT), dc.echo_server(&a2.ns, PORT)];
    let pids = (dc.cell(1).agent_log(), dc.cell(2).agent_log());

    denied(&dc, &[(&b, &a, PORT), (&b, &a2, PORT)]);
    for round in 1..=2 {
        let t = Instant::now();
        dc.policy("add app-b app-a --port 8080");
        connects(&dc, &b, &a, PORT);
        connects(&dc, &b, &a2, PORT);
        eprintln!("round {round}: open after {:?}", t.elapsed());
        let t = Instant::now();
        let out = dc.policy("rm app-b app-a --port 8080");
        assert!(out.contains("removed"), "{out}");
        becomes_denied(&dc, &b, &a, PORT);
        becomes_denied(&dc, &b, &a2, PORT);
        eprintln!("round {round}: closed after {:?}", t.elapsed());
    }
    // Nothing was restarted: both agents are the first and only process of their cell.
    for n in [1, 2] {
        assert!(dc.agent_alive(n), "agent {n} still running");
        let log = dc.cell(n).agent_log();
        assert_eq!(
            log.matches("agent starting").count(),
            1,
            "agent {n} started once: {log}"
        );
    }
    assert!(!pids.0.is_empty() && !pids.1.is_empty());
}

// ----- 3. outside world and own host -----

/// With enforcement on and no policy at all: containers reach the "internet" (and get the
/// answers back), and each cell's own namespace (the host) reaches its containers, by TCP
/// and ping. Control: container to container is denied in the same data centre.
#[test]
fn outside_world_and_own_host_are_not_subject_to_c2c_policy() {
    let mut dc = lab(2, &[]);
    dc.add_internet();
    let b = dc.add_container(1, "ow-b", "app-b");
    let a = dc.add_container(2, "ow-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    let _servers = [
        dc.echo_server(&a.ns, PORT),
        dc.echo_server(&b.ns, PORT),
        dc.echo_server(dc.internet_ns(), PORT),
    ];
    denied(&dc, &[(&b, &a, PORT), (&a, &b, PORT)]);

    let p = pol(&dc);
    for c in [&a, &b] {
        let (ok, t) = eventually(|| {
            let t = tcp(&p, &c.ns, INTERNET_IP, PORT, 2.0);
            (t.ok(), t)
        });
        assert!(ok, "{} -> internet: {t:?}{}", c.id, diag(&dc));
        assert!(
            t.answer.starts_with(UNDERLAY),
            "{}: the internet sees the cell's underlay address: {t:?}",
            c.id
        );
        assert!(ping_ok(&c.ns, INTERNET_IP), "{} pings the internet", c.id);

        let host = dc.cell_ns(c.cell);
        let (ok, t) = eventually(|| {
            let t = tcp(&p, host, &c.ip, PORT, 2.0);
            (t.ok(), t)
        });
        assert!(ok, "cell {} (host) -> {}: {t:?}{}", c.cell, c.id, diag(&dc));
        assert!(ping_ok(host, &c.ip), "cell {} pings {}", c.cell, c.id);
    }
    // Still no c2c path: the above did not open anything.
    denied(&dc, &[(&b, &a, PORT), (&a, &b, PORT)]);
}

// ----- 7. visibility -----

/// After allowed (AppB -> AppA:8080) and denied (AppC -> AppA, AppA -> AppB) traffic, the
/// agents' `/metrics` count allowed packets for app-b -> app-a on cell 2 and denied packets
/// per app pair on the destination cells; `weft policy check` answers allowed (exit 0, naming
/// the policy) and denied (exit 1).
#[test]
fn metrics_count_allowed_and_denied_and_policy_check_answers() {
    let dc = lab(2, &["--metrics-listen", METRICS]);
    let b = dc.add_container(1, "me-b", "app-b");
    let c = dc.add_container(1, "me-c", "app-c");
    let a = dc.add_container(2, "me-a", "app-a");
    wait_known(&dc, &[&b, &c, &a]);
    let _servers = [dc.echo_server(&a.ns, PORT), dc.echo_server(&b.ns, PORT)];
    dc.policy("add app-b app-a --port 8080");
    connects(&dc, &b, &a, PORT);
    for _ in 0..3 {
        assert!(tcp(&pol(&dc), &b.ns, &a.ip, PORT, 2.0).ok());
    }
    denied(&dc, &[(&c, &a, PORT), (&a, &b, PORT)]);

    let m2 = dc.agent_metrics(2);
    let m1 = dc.agent_metrics(1);
    let allowed = metric(
        &m2,
        "weft_policy_allowed_packets_total",
        &[
            ("src_app", "app-b"),
            ("dst_app", "app-a"),
            ("dst_ip", &a.ip),
        ],
    );
    assert!(
        allowed.is_some_and(|v| v >= 4.0),
        "cell 2 counts the 4+ allowed connections app-b -> app-a: {allowed:?}\n{m2}"
    );
    let denied_ca = metric(
        &m2,
        "weft_policy_denied_packets_total",
        &[("src_app", "app-c"), ("dst_app", "app-a")],
    );
    assert!(
        denied_ca.is_some_and(|v| v > 0.0),
        "cell 2 counts denied app-c -> app-a: {denied_ca:?}\n{m2}"
    );
    let denied_ab = metric(
        &m1,
        "weft_policy_denied_packets_total",
        &[("src_app", "app-a"), ("dst_app", "app-b")],
    );
    assert!(
        denied_ab.is_some_and(|v| v > 0.0),
        "cell 1 counts denied app-a -> app-b: {denied_ab:?}\n{m1}"
    );
    assert!(
        metric(
            &m2,
            "weft_policy_denied_packets_total",
            &[("src_app", "app-b")]
        )
        .is_none(),
        "nothing of app-b was denied on cell 2\n{m2}"
    );

    let check = |args: &str| {
        let out = dc.weft(&format!("policy check {args}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check("app-b app-a 8080");
    assert_eq!(code, Some(0), "app-b -> app-a 8080 is allowed: {out}");
    assert!(out.starts_with("allowed") && out.contains("8080"), "{out}");
    for args in ["app-a app-b 8080", "app-b app-a 9090", "app-c app-a 8080"] {
        let (code, out) = check(args);
        assert_eq!(code, Some(1), "{args} is denied: {out}");
        assert!(out.starts_with("denied"), "{args}: {out}");
    }
}

// ----- 8. enforcement off -----

/// `WEFT_POLICY=off` (labs): no policy at all, and every pair connects, in both directions,
/// on any port, by TCP, UDP and ping, within and across cells.
#[test]
fn enforcement_off_lets_every_pair_connect() {
    let dc = lab_with(2, "off", &[]);
    let b = dc.add_container(1, "of-b", "app-b");
    let c1 = dc.add_container(1, "of-c1", "app-c");
    let a = dc.add_container(2, "of-a", "app-a");
    let c2 = dc.add_container(2, "of-c2", "app-c");
    let cts = [&b, &c1, &a, &c2];
    let mut servers = Vec::new();
    for c in cts {
        servers.push(dc.echo_server(&c.ns, PORT));
        servers.push(udp_server(&dc, &c.ns, UDP_PORT, false));
    }
    servers.push(dc.echo_server(&a.ns, OTHER));
    for from in cts {
        for to in cts {
            if from.id != to.id {
                connects(&dc, from, to, PORT);
                udp_connects(&dc, from, to, UDP_PORT);
                ping_passes(&dc, from, to);
            }
        }
    }
    connects(&dc, &b, &a, OTHER);
    let table = dc.cell_ns(2).ok("nft list table inet weft-policy");
    assert!(
        table.contains("enforce=false"),
        "the policy table is there, not enforcing: {table}"
    );
}
