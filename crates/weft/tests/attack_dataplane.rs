//! Issue 14's attacks on the data plane, in the simulated data centre (see `common/dc/mod.rs`),
//! with policy enforcement on. Each test attacks as someone who controls a container (or, where
//! it says so, a host that holds a lease) would, and checks that the attack is dropped and
//! counted by a named rule an operator can read:
//!
//! - a full deny-count set (`denied`) does not open default deny: a denied (app, destination)
//!   pair that was never tried before stays denied, an allowed one still connects;
//! - containers cannot forge VXLAN: not to another cell's underlay address (their cell used to
//!   masquerade it to its own leased address), not to their own cell's; they reach no cell's
//!   underlay address at all; a leased host can no longer claim inner sources outside its own
//!   lease (another cell's containers, the destination's own containers, the outside world);
//! - a container the agent does not know yet (started while the agent is down) is fenced: no
//!   other app reaches it, and it cannot forge VXLAN with a leased cell's source address;
//! - the fast path (BPF) does not deliver a forged packet that matches an established
//!   connection but comes from a host that does not hold the inner source's lease;
//! - a policy table someone deleted is written again at the agent's next resync;
//! - an agent killed with SIGKILL during a TCP stream: the stream keeps every byte and the
//!   restarted agent converges to the same kernel state, without duplicates.
//!
//! Forged packets are built with python3's standard library only (no scapy): VXLAN-GBP rides in
//! a plain UDP datagram (what a container's unprivileged socket can send), or in a raw IPv4
//! packet where the outer source address itself is forged. Each scenario has its own data
//! centre, so they run in parallel. Waits are bounded liveness waits, never speed assertions.
#[path = "common/attack.rs"]
mod attack;
mod common;
#[path = "common/dc/mod.rs"]
mod dc;
#[path = "common/policy.rs"]
mod policy;

use std::time::{Duration, Instant};

use common::wait_until;

use attack::*;
use dc::policy_counter;
use policy::*;

// ----- 1. a full deny-count set -----

/// Fills cell 2's `denied` set to capacity (as a flood of forged or denied packets would:
/// every new (tag, destination) pair takes an element), then tries (app, destination) pairs
/// that were never tried before: TCP, UDP and ICMP from AppB and AppC (cell 1) to AppA (cell
/// 2). Every one stays denied and the "default deny" rule counts them; a policy still opens
/// its pair.
#[test]
fn full_denied_set_does_not_open_default_deny() {
    let dc = attack_lab(2, "auto", &[]);
    let b = dc.add_container(1, "fs-b", "app-b");
    let c = dc.add_container(1, "fs-c", "app-c");
    let a = dc.add_container(2, "fs-a", "app-a");
    wait_known(&dc, &[&b, &c, &a]);
    let _echo = dc.echo_server(&a.ns, TCP_PORT);
    let _uecho = udp_echo(&dc, &a.ns, UDP_PORT);
    let cell2 = dc.cell_ns(2);

    // Fill the set: chunks of decreasing size, until not even one element fits.
    let started = Instant::now();
    let file = dc.dir.path.join("fill.nft");
    let mut next = 0usize;
    let mut chunk = 8192usize;
    while chunk > 0 {
        let els: Vec<String> = (next..next + chunk)
            .map(|i| {
                format!(
                    "0x{:08x} . 10.254.{}.{}",
                    0xbeef_0000u32 + (i >> 16) as u32,
                    (i >> 8) & 0xff,
                    i & 0xff
                )
            })
            .collect();
        std::fs::write(
            &file,
            format!(
                "add element inet weft-policy denied {{ {} }}\n",
                els.join(", ")
            ),
        )
        .expect("write fill.nft");
        if cell2
            .sh(&format!("nft -f {}", file.display()))
            .status
            .success()
        {
            next += chunk;
        } else {
            chunk /= 8;
        }
        assert!(next <= DENIED_SIZE, "the set takes more than its size");
    }
    let full = cell2.sh("nft add element inet weft-policy denied '{ 0x0000beef . 10.253.0.1 }'");
    assert!(!full.status.success(), "the denied set is full");
    eprintln!(
        "filled cell 2's denied set with {next} elements in {:?}",
        started.elapsed()
    );
    let deny0 = policy_counter(dc.cell_ns(2), "forward", "default deny");

    // Pairs never tried before, all at once.
    let results: Vec<(String, String)> = std::thread::scope(|s| {
        let t = [
            s.spawn(|| {
                (
                    "app-b -> app-a tcp 8080".to_string(),
                    tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, DENY_WAIT),
                )
            }),
            s.spawn(|| {
                (
                    "app-c -> app-a tcp 8080".to_string(),
                    tcp_try(&dc, &c.ns, &a.ip, TCP_PORT, DENY_WAIT),
                )
            }),
            s.spawn(|| {
                (
                    "app-b -> app-a udp 5353".to_string(),
                    udp_try(&b.ns, &a.ip, UDP_PORT),
                )
            }),
            s.spawn(|| {
                let (_, got) = Dc::ping_count(&c.ns, &a.ip, 3, 0.2);
                (
                    "app-c -> app-a icmp".to_string(),
                    if got > 0 { "ok" } else { "timeout" }.to_string(),
                )
            }),
        ];
        t.into_iter().map(|h| h.join().expect("probe")).collect()
    });
    let connected: Vec<&(String, String)> =
        results.iter().filter(|(_, r)| r != "timeout").collect();
    eprintln!(
        "with the denied set full: {} of {} never-tried denied pairs connected: {connected:?}",
        connected.len(),
        results.len()
    );
    assert!(
        connected.is_empty(),
        "with the denied set full, never-tried denied pairs connected: {connected:?}{}",
        diag(&dc)
    );
    let deny1 = policy_counter(dc.cell_ns(2), "forward", "default deny");
    assert!(
        deny1.unwrap_or(0) >= deny0.unwrap_or(0) + 4,
        "the default deny rule counts the dropped packets: {deny0:?} -> {deny1:?}{}",
        diag(&dc)
    );

    // A policy still opens its pair while the set is full.
    dc.policy(&format!("add app-b app-a --port {TCP_PORT}"));
    let mut last = String::new();
    let start = Instant::now();
    while !last.starts_with("ok") {
        assert!(
            start.elapsed() < LIVE,
            "app-b -> app-a with a policy: {last}{}",
            diag(&dc)
        );
        last = tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, 2.0);
    }
    assert_eq!(
        tcp_try(&dc, &c.ns, &a.ip, TCP_PORT, DENY_WAIT),
        "timeout",
        "app-c -> app-a stays denied"
    );
}

/// Someone deletes cell 2's policy table (an operator's `nft flush ruleset`, another tool):
/// everything is open, and the agent, whose bookkeeping says the table is in place, must
/// notice at its next resync (2 s here) and write it again: the denied pair is denied again.
#[test]
fn deleted_policy_table_is_written_again() {
    let dc = attack_lab(2, "auto", &[]);
    let b = dc.add_container(1, "dt-b", "app-b");
    let a = dc.add_container(2, "dt-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    let _echo = dc.echo_server(&a.ns, TCP_PORT);
    assert_eq!(tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, DENY_WAIT), "timeout");
    dc.cell_ns(2).ok("nft delete table inet weft-policy");
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < LIVE {
        last = tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, DENY_WAIT);
        if last == "timeout" && known(&dc, &a) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "policy table deleted: app-b -> app-a denied again after {:?} ({last})",
        start.elapsed()
    );
    assert_eq!(
        last,
        "timeout",
        "app-b -> app-a stays open after the table was deleted{}",
        diag(&dc)
    );
}

// ----- 2. forged VXLAN -----

/// Mallory (app-m, cell 1) sends VXLAN-GBP from a plain UDP socket: with app-b's tag and
/// AppB's address to AppA through cell 2's underlay address (her cell used to masquerade it
/// to its leased address, so cell 2 decapsulated it), with an outside inner source (which
/// skipped policy), and through her own cell's underlay address; and a plain datagram to
/// cell 2's own address. Then cell 1's host itself (it holds a lease) claims inner sources
/// outside its lease: an address of another host's lease, a container of cell 2 itself, the
/// outside world. None arrives and the named counters rose; the control, cell 1 claiming a
/// source inside its own lease, arrives (that is what a leased host can still do: see the
/// README).
#[test]
fn forged_vxlan_is_dropped_and_counted() {
    let dc = attack_lab(2, "auto", &[]);
    let m = dc.add_container(1, "fv-m", "app-m");
    let b = dc.add_container(1, "fv-b", "app-b");
    let a = dc.add_container(2, "fv-a", "app-a");
    let x2 = dc.add_container(2, "fv-x2", "app-b");
    wait_known(&dc, &[&m, &b, &a, &x2]);
    // Another host's lease (no cell behind it: only its addresses matter here).
    let other = ghost_lease(&dc, "fv-ghost", "198.18.0.98");
    dc.policy(&format!("add app-b app-a --protocol udp --port {UDP_PORT}"));
    let at_a = udp_receiver(&dc, &a.ns, UDP_PORT);
    let at_cell2 = udp_receiver(&dc, dc.cell_ns(2), 7777);
    udp_arrives(&dc, &b.ns, &a.ip, "warm-b", &at_a);

    let tag_b = app_tag(&dc, "app-b");
    let (r1, r2) = (
        dc.cell(1).remote().expect("cell 1"),
        dc.cell(2).remote().expect("cell 2"),
    );
    let vx = |dst: &str, isrc: &str, payload: &str| {
        format!(
            "vxlan {dst} {tag_b} {} {} {isrc} {} udp 41000 {UDP_PORT} {payload} 3",
            r2.mac, r1.mac, a.ip
        )
    };
    let before =
        |n: usize, chain: &str, comment: &str| policy_counter(dc.cell_ns(n), chain, comment);
    let c_vx0 = before(1, "forward", "to a VXLAN port");
    let c_cells0 = before(1, "forward", "container to a cell's underlay address");
    let c_own0 = before(1, "input", "vxlan not from the underlay");
    let c_bind0 = before(2, "input", "vxlan: inner source outside the sender's lease");

    // From Mallory's container.
    attack(&dc, &m.ns, &vx(&r2.underlay, &b.ip, "m-gbp-cell2"));
    attack(&dc, &m.ns, &vx(&r2.underlay, "192.0.2.77", "m-outside"));
    attack(&dc, &m.ns, &vx(&r1.underlay, &b.ip, "m-gbp-own"));
    attack(&dc, &m.ns, &format!("udp {} 7777 m-host 3", r2.underlay));
    // From cell 1's host: inner sources outside its lease.
    let host1 = dc.cell_ns(1);
    attack(&dc, host1, &vx(&r2.underlay, &other, "h-other-lease"));
    attack(&dc, host1, &vx(&r2.underlay, &x2.ip, "h-local-source"));
    attack(&dc, host1, &vx(&r2.underlay, "192.0.2.78", "h-outside"));
    // Control: inside its own lease.
    attack(&dc, host1, &vx(&r2.underlay, &b.ip, "h-own-lease"));
    wait_until("the control packet", LIVE, || {
        at_a.output().contains("h-own-lease")
    });
    std::thread::sleep(Duration::from_millis(500));

    let (got_a, got_cell2) = (at_a.output(), at_cell2.output());
    let forged = [
        "m-gbp-cell2",
        "m-outside",
        "m-gbp-own",
        "h-other-lease",
        "h-local-source",
        "h-outside",
    ];
    let arrived: Vec<&str> = forged
        .iter()
        .copied()
        .filter(|f| got_a.contains(f))
        .chain(got_cell2.contains("m-host").then_some("m-host"))
        .collect();
    eprintln!(
        "forged packets that arrived: {arrived:?} (of {} kinds)",
        forged.len() + 1
    );
    assert!(
        arrived.is_empty(),
        "forged packets arrived: {arrived:?}\nat AppA: {got_a}\nat cell 2: {got_cell2}{}",
        diag(&dc)
    );
    let grew = |n: usize, chain: &str, comment: &str, from: Option<u64>, by: u64| {
        let now = policy_counter(dc.cell_ns(n), chain, comment);
        assert!(
            now.unwrap_or(0) >= from.unwrap_or(0) + by,
            "cell {n} {chain} \"{comment}\": {from:?} -> {now:?}, expected +{by}{}",
            diag(&dc)
        );
    };
    grew(1, "forward", "to a VXLAN port", c_vx0, 6);
    grew(
        1,
        "forward",
        "container to a cell's underlay address",
        c_cells0,
        3,
    );
    grew(1, "input", "vxlan not from the underlay", c_own0, 3);
    grew(
        2,
        "input",
        "vxlan: inner source outside the sender's lease",
        c_bind0,
        9,
    );
}

// ----- 3. a container the agent does not know yet -----

/// Cell 1's agent is stopped (SIGSTOP) while a container N is attached there, so N's veth is
/// in none of the policy table's sets. AppB (cell 2) does not reach N (the forward chain used
/// to let everything through to an unknown veth); N, forging the outer source (cell 2's
/// underlay address) of VXLAN to its own cell with app-b's tag, does not reach AppA1 (cell 1),
/// nor does its VXLAN to cell 2's underlay address. After SIGCONT, the agent takes N in.
#[test]
fn unknown_container_is_fenced() {
    let dc = attack_lab(2, "auto", &[]);
    let a1 = dc.add_container(1, "uc-a1", "app-a");
    let b2 = dc.add_container(2, "uc-b2", "app-b");
    wait_known(&dc, &[&a1, &b2]);
    dc.policy(&format!("add app-b app-a --protocol udp --port {UDP_PORT}"));
    let at_a1 = udp_receiver(&dc, &a1.ns, UDP_PORT);
    udp_arrives(&dc, &b2.ns, &a1.ip, "warm-b2", &at_a1);
    let tag_b = app_tag(&dc, "app-b");
    let (r1, r2) = (
        dc.cell(1).remote().expect("cell 1"),
        dc.cell(2).remote().expect("cell 2"),
    );

    let agent = dc.agent_pid(1);
    signal(&agent, "-STOP");
    let n = dc.add_container(1, "uc-n", "app-n");
    let _echo = dc.echo_server(&n.ns, TCP_PORT);
    assert!(!known(&dc, &n), "N is unknown while the agent is stopped");
    let c_own0 = policy_counter(dc.cell_ns(1), "input", "vxlan not from the underlay");

    let reach_n = tcp_try(&dc, &b2.ns, &n.ip, TCP_PORT, DENY_WAIT);
    // Outer source forged as cell 2's underlay address, to cell 1's own underlay address.
    attack(
        &dc,
        &n.ns,
        &format!(
            "vxlan {} {tag_b} {} {} {} {} udp 41000 {UDP_PORT} n-spoofed-own 3 {}",
            r1.underlay, r1.mac, r2.mac, b2.ip, a1.ip, r2.underlay
        ),
    );
    // Plain VXLAN to cell 2, whose decapsulated packet would come back to AppA1.
    attack(
        &dc,
        &n.ns,
        &format!(
            "vxlan {} {tag_b} {} {} {} {} udp 41001 {UDP_PORT} n-gbp-cell2 3",
            r2.underlay, r2.mac, r1.mac, n.ip, a1.ip
        ),
    );
    std::thread::sleep(Duration::from_millis(700));
    let got = at_a1.output();
    let c_own1 = policy_counter(dc.cell_ns(1), "input", "vxlan not from the underlay");
    signal(&agent, "-CONT");

    let mut wrong = Vec::new();
    if reach_n != "timeout" {
        wrong.push(format!("app-b -> unknown container N: {reach_n}"));
    }
    for f in ["n-spoofed-own", "n-gbp-cell2"] {
        if got.contains(f) {
            wrong.push(format!("{f} arrived at AppA1"));
        }
    }
    eprintln!("with the agent stopped: {wrong:?}");
    assert!(wrong.is_empty(), "{wrong:?}\nat AppA1: {got}{}", diag(&dc));
    assert!(
        c_own1.unwrap_or(0) >= c_own0.unwrap_or(0) + 3,
        "the spoofed VXLAN was counted: {c_own0:?} -> {c_own1:?}{}",
        diag(&dc)
    );
    wait_known(&dc, &[&n]);
    assert_eq!(
        tcp_try(&dc, &b2.ns, &n.ip, TCP_PORT, DENY_WAIT),
        "timeout",
        "app-b -> app-n stays denied once N is known"
    );
}
