//! nftables trace events from a real kernel. Needs root (skipped otherwise).
//!
//! Every test works in a named network namespace of its own ([`common::TestNs`]), deleted by
//! a guard when the test ends, also when it panics; the host's namespace is never changed:
//! the ruleset goes in with `ip netns exec`, and the listener and the probe sender enter the
//! namespace only through `Netns::run`.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::TestNs;
use weft_kernel::nftrace::{TraceEvent, TraceKind, TraceListener, Verdict};

/// Tracing switched on for packets to 127.0.0.7, and those to port 9999 dropped.
/// (On one line, nft wants a `;` after the comment before the closing braces.)
const RULESET: &str = r#"
table inet tt {
    chain out {
        type filter hook output priority 0; policy accept;
        ip daddr 127.0.0.7 meta nftrace set 1
        ip daddr 127.0.0.7 udp dport 9999 counter drop comment "probe drop"
    }
}
"#;

const PROBE_DST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);

/// The handle of the rule whose listing contains `needle`, per `nft -a list ruleset`.
fn rule_handle(t: &TestNs, needle: &str) -> u64 {
    let listing = t.sh("nft -a list ruleset");
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle:?} in:\n{listing}"));
    line.rsplit_once("# handle ")
        .and_then(|(_, h)| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no handle in {line:?}"))
}

/// Sends one UDP datagram from inside the namespace, on a thread of its own.
fn send_udp(t: &TestNs, dst: Ipv4Addr, port: u16) {
    t.ns.run(|| {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        // A drop in the output hook fails the send (EPERM): that is the point.
        let _ = sock.send_to(b"probe", (dst, port));
    })
    .expect("enter namespace");
}

fn show(events: &[TraceEvent]) -> String {
    events
        .iter()
        .map(|e| format!("  {:08x} {e}\n", e.id))
        .collect()
}

#[test]
fn dropped_probe_names_the_rule() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("drop");
    t.nft(RULESET);
    let handle = rule_handle(&t, "probe drop");
    let mut trace = TraceListener::open_in(&t.ns).expect("open trace listener");

    send_udp(&t, PROBE_DST, 9999);
    let events = trace.recv(Duration::from_millis(500)).expect("recv");

    let drop = events
        .iter()
        .find(|e| e.verdict == Some(Verdict::Drop))
        .unwrap_or_else(|| panic!("no drop event in:\n{}", show(&events)));
    assert_eq!(drop.table, "tt");
    assert_eq!(drop.chain, "out");
    assert_eq!(drop.family, 1); // inet
    assert_eq!(drop.kind, TraceKind::Rule);
    assert_eq!(drop.rule_handle, Some(handle), "{}", show(&events));
    let (_, dst, proto) = drop.ipv4().expect("ipv4 header");
    assert_eq!((dst, proto), (PROBE_DST, libc::IPPROTO_UDP as u8));
    assert_eq!(drop.dport(), Some(9999));
    assert_eq!(
        drop.to_string(),
        format!("inet tt out rule handle {handle}: drop")
    );

    // Before it, the rule that switched tracing on let the same packet continue; after a
    // drop, nothing more.
    let same: Vec<_> = events.iter().filter(|e| e.id == drop.id).collect();
    assert_eq!(same.len(), 2, "{}", show(&events));
    assert_eq!(same[0].kind, TraceKind::Rule);
    assert_eq!(same[0].verdict, Some(Verdict::Continue));
    assert!(same[0].rule_handle.is_some_and(|h| h != handle));
    assert_eq!(trace.overruns(), 0);
}

#[test]
fn accepted_probe_ends_in_the_policy() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("accept");
    t.nft(RULESET);
    let mut trace = TraceListener::open_in(&t.ns).expect("open trace listener");

    // Another port: the drop rule does not match, the chain's policy accepts.
    send_udp(&t, PROBE_DST, 9998);
    let events = trace.recv(Duration::from_millis(500)).expect("recv");

    assert!(
        events.iter().all(|e| e.verdict != Some(Verdict::Drop)),
        "{}",
        show(&events)
    );
    let policy = events
        .iter()
        .find(|e| e.kind == TraceKind::Policy)
        .unwrap_or_else(|| panic!("no policy event in:\n{}", show(&events)));
    assert_eq!(
        (policy.table.as_str(), policy.chain.as_str()),
        ("tt", "out")
    );
    assert_eq!(policy.verdict, Some(Verdict::Accept));
    assert_eq!(policy.rule_handle, None);
    assert_eq!(policy.ipv4().map(|(_, d, _)| d), Some(PROBE_DST));
    assert_eq!(policy.dport(), Some(9998));
    assert_eq!(policy.to_string(), "inet tt out policy accept");
}

#[test]
fn nothing_traced_means_no_events() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("quiet");
    t.nft(RULESET);
    let mut trace = TraceListener::open_in(&t.ns).expect("open trace listener");
    // Not matched by the nftrace rule.
    send_udp(&t, Ipv4Addr::new(127, 0, 0, 8), 9999);
    let started = std::time::Instant::now();
    let events = trace.recv(Duration::from_millis(100)).expect("recv");
    assert!(events.is_empty(), "{}", show(&events));
    assert!(started.elapsed() < Duration::from_secs(1));
}
