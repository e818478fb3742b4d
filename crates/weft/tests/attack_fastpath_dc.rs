//! Issue 14's attacks on the data plane that involve the fast path and agent kills (see
//! `common/attack.rs` and `attack_dataplane.rs`): the fast path (BPF) does not deliver a forged
//! packet that matches an established connection but comes from a host that does not hold the
//! inner source's lease; an agent killed with SIGKILL during a TCP stream: the stream keeps
//! every byte and the restarted agent converges to the same kernel state, without duplicates.
#[path = "common/attack.rs"]
mod attack;
mod common;
#[path = "common/dc/mod.rs"]
mod dc;
#[path = "common/policy.rs"]
mod policy;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::wait_until;

use attack::*;
use dc::policy_counter;
use policy::*;

// ----- 4. the fast path -----

/// An established TCP connection AppB (cell 1) -> AppA (cell 2) runs on the fast path. A host
/// on the underlay that holds a lease, but not cell 1's, sends VXLAN packets that match the
/// connection (AppB's address and port, app-b's tag, PSH+ACK): the fast path on cell 2 used
/// to deliver them into AppA's namespace (it checked only that the outer source holds some
/// lease); now it leaves them to the kernel path, which drops and counts them.
#[test]
fn fast_path_does_not_deliver_forged_inner_sources() {
    let dc = attack_lab(2, "on", &["--metrics-listen", "127.0.0.1:9109"]);
    let b = dc.add_container(1, "ff-b", "app-b");
    let a = dc.add_container(2, "ff-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    dc.policy("add app-b app-a --port 9000");
    // The other leased host: a namespace on the underlay with the address of its lease.
    let rogue = "198.18.0.97";
    ghost_lease(&dc, "ff-ghost", rogue);
    let intruder = Ns::new("ffi");
    dc.underlay_ns().ok(&format!(
        "ip link add ffi0 type veth peer name eth0 netns {} && ip link set ffi0 master br0 up",
        intruder.name
    ));
    intruder.ok(&format!(
        "ip link set lo up && ip addr add {rogue}/24 dev eth0 && ip link set eth0 up"
    ));
    let _sink = dc.sink(&a.ns, 9000);
    let _stream = dc.stream(&b.ns, &a.ip, 9000, 30, 20000);
    let sport = Dc::established_sport(&b, &a);
    let rx = |dc: &Dc| {
        let out = dc
            .cell_ns(2)
            .sh("curl -s --max-time 5 http://127.0.0.1:9109/metrics");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("weft_fastpath_packets_total{direction=\"rx\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until("the stream to take the fast path on cell 2", LIVE, || {
        rx(&dc) > 0
    });

    let cap_log = dc.dir.path.join("a-tcpdump.log");
    let cap = Proc::tcpdump(
        &a.ns,
        &["-i", "eth0", "-l", "-A", "tcp port 9000"],
        &cap_log,
    );
    let tag_b = app_tag(&dc, "app-b");
    let (r1, r2) = (
        dc.cell(1).remote().expect("cell 1"),
        dc.cell(2).remote().expect("cell 2"),
    );
    let c_bind0 = policy_counter(
        dc.cell_ns(2),
        "input",
        "vxlan: inner source outside the sender's lease",
    );
    attack(
        &dc,
        &intruder,
        &format!(
            "vxlan {} {tag_b} {} {} {} {} tcp {sport} 9000 FORGED-FAST 5",
            r2.underlay, r2.mac, r1.mac, b.ip, a.ip
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    cap.stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(5));
    let seen = std::fs::read_to_string(&cap_log).unwrap_or_default();
    assert!(
        seen.contains(&format!("{}.{sport} > {}.9000", b.ip, a.ip)),
        "the real connection is seen in AppA: {seen}"
    );
    let delivered = seen.matches("FORGED-FAST").count();
    eprintln!("forged packets on an established connection delivered into AppA: {delivered}");
    assert_eq!(
        delivered,
        0,
        "forged packets reached AppA: {seen}{}",
        diag(&dc)
    );
    let c_bind1 = policy_counter(
        dc.cell_ns(2),
        "input",
        "vxlan: inner source outside the sender's lease",
    );
    assert!(
        c_bind1.unwrap_or(0) >= c_bind0.unwrap_or(0) + 5,
        "the kernel path dropped and counted them: {c_bind0:?} -> {c_bind1:?}{}",
        diag(&dc)
    );
}

// ----- 5. kill -9 -----

/// What a cell's kernel holds for weft, normalised (counters, timers and program ids left
/// out; the `denied` set's elements are traffic, not state): one entry per line.
fn kernel_state(ns: &Ns) -> Vec<String> {
    let mut out = Vec::new();
    let strip = |s: &str| -> String {
        // `name:[id]` (a BPF program's id changes with every load) -> `name`.
        let mut w: Vec<&str> = s
            .split_whitespace()
            .map(|t| t.split(":[").next().unwrap_or(t))
            .collect();
        let mut i = 0;
        while i < w.len() {
            if w[i] == "packets" || w[i] == "bytes" || w[i] == "expires" || w[i] == "id" {
                w.drain(i..(i + 2).min(w.len()));
            } else {
                i += 1;
            }
        }
        w.join(" ")
    };
    // Each line of the terse listing, qualified by its table and chain or set.
    let (mut table, mut block) = (String::new(), String::new());
    for l in ns.ok("nft -t list ruleset").lines() {
        let t = l.trim();
        if t.is_empty() || t == "}" {
            continue;
        }
        if let Some(name) = t.strip_prefix("table ") {
            table = name.trim_end_matches(" {").to_string();
            block.clear();
        } else if t.ends_with(" {") {
            block = t.trim_end_matches(" {").to_string();
        } else {
            out.push(format!("nft {table} {block}: {}", strip(t)));
        }
    }
    for set in [
        "map tags",
        "set veths",
        "set containers",
        "set cells",
        "set cell_subnets",
        "map allow_ports",
        "map allow_icmp",
    ] {
        let listing = ns.sh(&format!("nft list {set} inet weft-policy"));
        let text = String::from_utf8_lossy(&listing.stdout);
        if let Some((_, els)) = text.split_once("elements = {") {
            let els = els.split('}').next().unwrap_or_default();
            for e in els.split(',') {
                out.push(format!("element {set} {}", strip(e)));
            }
        }
    }
    for l in ns.ok("ip route show table all").lines() {
        if !l.contains("proto kernel") && !l.starts_with("local ") && !l.contains("fe80") {
            out.push(format!("route {l}"));
        }
    }
    for l in ns.ok("ip neigh show nud permanent").lines() {
        out.push(format!("neigh {l}"));
    }
    for l in ns.ok("bridge fdb show dev weft.vtep").lines() {
        out.push(format!("fdb {l}"));
    }
    for l in ns.ok("ip -o link show").lines() {
        let name = l.split(": ").nth(1).unwrap_or_default();
        out.push(format!(
            "link {}",
            name.split('@').next().unwrap_or_default()
        ));
    }
    for l in ns.ok("tc filter show dev eth0 ingress").lines() {
        out.push(format!("tc {}", strip(l)));
    }
    out
}

/// Lines that occur more than once.
fn duplicates(lines: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut dup = BTreeSet::new();
    for l in lines {
        if !seen.insert(l) {
            dup.insert(l.clone());
        }
    }
    dup.into_iter().collect()
}

/// Agents are killed with SIGKILL (destination cell, then source cell) during a TCP stream
/// AppB (cell 1) -> AppA (cell 2): the stream keeps every byte; the restarted agents converge
/// to the kernel state they had before (nft rules and elements, routes, permanent neighbours,
/// FDB entries, links, tc filters), with no duplicate entry; policy still decides.
#[test]
fn agent_kill9_during_stream_converges_without_duplicates() {
    let mut dc = attack_lab(2, "auto", &[]);
    let b = dc.add_container(1, "k9-b", "app-b");
    let c = dc.add_container(1, "k9-c", "app-c");
    let a = dc.add_container(2, "k9-a", "app-a");
    wait_known(&dc, &[&b, &c, &a]);
    dc.policy("add app-b app-a --port 9000");
    dc.policy(&format!("add app-b app-a --port {TCP_PORT}"));
    let _echo = dc.echo_server(&a.ns, TCP_PORT);
    wait_until("the policy", LIVE, || {
        tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, 2.0).starts_with("ok")
    });
    let sink = dc.sink(&a.ns, 9000);
    let stream = dc.stream(&b.ns, &a.ip, 9000, 8, 500000);
    std::thread::sleep(Duration::from_millis(700));
    let before = [kernel_state(dc.cell_ns(1)), kernel_state(dc.cell_ns(2))];
    for (i, s) in before.iter().enumerate() {
        let d = duplicates(s);
        assert!(d.is_empty(), "cell {}: duplicates before: {d:?}", i + 1);
    }

    dc.kill_agent(2);
    std::thread::sleep(Duration::from_millis(500));
    dc.start_agent(2);
    std::thread::sleep(Duration::from_millis(500));
    dc.kill_agent(1);
    std::thread::sleep(Duration::from_millis(500));
    dc.start_agent(1);

    let st = stream.wait(Duration::from_secs(60));
    let out = std::fs::read_to_string(dc.dir.path.join("stream.log")).unwrap_or_default();
    assert!(
        st.is_some_and(|s| s.success()),
        "the stream keeps every byte across kill -9 ({st:?}): {out} / {}{}",
        sink.output(),
        diag(&dc)
    );
    // Converged: the same state as before (bounded wait for the agents' first sync).
    let start = Instant::now();
    let after = loop {
        let now = [kernel_state(dc.cell_ns(1)), kernel_state(dc.cell_ns(2))];
        if now == before || start.elapsed() > LIVE {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for i in 0..2 {
        let d = duplicates(&after[i]);
        assert!(d.is_empty(), "cell {}: duplicates after: {d:?}", i + 1);
        let gone: Vec<&String> = before[i].iter().filter(|l| !after[i].contains(l)).collect();
        let new: Vec<&String> = after[i].iter().filter(|l| !before[i].contains(l)).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "cell {}: kernel state after kill -9 differs: gone {gone:#?}\nnew {new:#?}{}",
            i + 1,
            diag(&dc)
        );
    }
    assert_eq!(
        tcp_try(&dc, &c.ns, &a.ip, TCP_PORT, DENY_WAIT),
        "timeout",
        "app-c -> app-a stays denied"
    );
    assert!(tcp_try(&dc, &b.ns, &a.ip, TCP_PORT, 2.0).starts_with("ok"));
}
