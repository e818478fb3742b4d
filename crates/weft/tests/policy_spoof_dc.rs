//! Issue 5's anti-spoofing tests in the simulated data centre (policy enforcement on, see
//! `common/policy.rs`): forged container source addresses are dropped at the veth, and VXLAN
//! from an underlay address without a lease is dropped by the receiving cell.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;
#[path = "common/policy.rs"]
mod policy;

use std::time::{Duration, Instant};

use dc::{INTERNET_IP, UNDERLAY};

use dc::policy_counter;
use policy::*;

// ----- 4. anti-spoofing -----

/// Mallory (cell 1) sends with forged source addresses: AppB's (which would carry app-b's
/// tag, and a policy allows app-b -> app-a udp/5353), one outside the overlay (which would
/// skip c2c policy altogether), and an unassigned overlay address towards the internet.
/// None arrives, and the "spoofed source" counter of cell 1 rose. The same packets with
/// the true source, sent after them on the same paths, arrive.
#[test]
fn forged_source_addresses_are_dropped_at_the_veth() {
    let mut dc = lab(2, &[]);
    dc.add_internet();
    let b = dc.add_container(1, "sp-b", "app-b");
    let m = dc.add_container(1, "sp-m", "app-m");
    let a = dc.add_container(2, "sp-a", "app-a");
    wait_known(&dc, &[&b, &m, &a]);
    dc.policy(&format!("add app-b app-a --protocol udp --port {UDP_PORT}"));
    let at_a = udp_server(&dc, &a.ns, UDP_PORT, true);
    let at_inet = udp_server(&dc, dc.internet_ns(), UDP_PORT, true);
    // The policy is in place (bounded wait): AppB's datagrams reach AppA.
    let _answers = udp_server(&dc, &b.ns, UDP_PORT + 1, true);
    // The policy is in place (bounded wait): AppB's datagrams reach AppA.
    udp_connects_quiet(&dc, &b, &a, &at_a);

    let (gw_b, gw_m) = (gateway_mac(&b), gateway_mac(&m));
    let spare = format!("{}.200", m.ip.rsplit_once('.').map_or("", |x| x.0));
    assert_ne!(spare, m.ip);
    let before = policy_counter(dc.cell_ns(1), "prerouting", "spoofed source")
        .expect("the spoofed source rule counts");
    // Forged, from Mallory's veth.
    forge(
        &dc,
        &m.ns,
        &format!(
            "udp eth0 {gw_m} {} {} 40001 {UDP_PORT} forged-as-b",
            b.ip, a.ip
        ),
    );
    forge(
        &dc,
        &m.ns,
        &format!(
            "udp eth0 {gw_m} 192.0.2.77 {} 40002 {UDP_PORT} forged-outside",
            a.ip
        ),
    );
    forge(
        &dc,
        &m.ns,
        &format!("udp eth0 {gw_m} {spare} {INTERNET_IP} 40003 {UDP_PORT} forged-random"),
    );
    // True sources, same tool, same paths.
    forge(
        &dc,
        &b.ns,
        &format!("udp eth0 {gw_b} {} {} 40004 {UDP_PORT} true-b", b.ip, a.ip),
    );
    forge(
        &dc,
        &m.ns,
        &format!(
            "udp eth0 {gw_m} {} {INTERNET_IP} 40005 {UDP_PORT} true-m",
            m.ip
        ),
    );
    let start = Instant::now();
    while !(at_a.output().contains("true-b") && at_inet.output().contains("true-m")) {
        assert!(
            start.elapsed() < LIVE,
            "packets with the true source did not arrive: at AppA: {} / at the internet: {}{}",
            at_a.output(),
            at_inet.output(),
            diag(&dc)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (got_a, got_inet) = (at_a.output(), at_inet.output());
    assert!(
        got_a.contains(&format!("{} true-b", b.ip)),
        "AppA sees AppB's address: {got_a}"
    );
    assert!(
        !got_a.contains("forged") && !got_inet.contains("forged"),
        "forged packets arrived: at AppA: {got_a} / at the internet: {got_inet}"
    );
    let after = policy_counter(dc.cell_ns(1), "prerouting", "spoofed source")
        .expect("the spoofed source rule counts");
    assert!(
        after >= before + 9,
        "the spoofed-source counter counts the 9 forged packets: {before} -> {after}{}",
        diag(&dc)
    );
}

// ----- 5. VXLAN from an unleased underlay address -----

/// A VXLAN packet with app-b's tag and AppB's inner source, to AppA on the allowed UDP port,
/// from 198.18.0.77 (on the underlay bridge, no lease): AppA does not get it and cell 2's
/// "vxlan from an address without a lease" counter rose. Positive control: the same packet
/// from cell 1's namespace with cell 1's (leased) underlay address is delivered.
#[test]
fn vxlan_from_an_underlay_address_without_a_lease_is_dropped() {
    let dc = lab(2, &[]);
    let b = dc.add_container(1, "vx-b", "app-b");
    let a = dc.add_container(2, "vx-a", "app-a");
    wait_known(&dc, &[&b, &a]);
    dc.policy(&format!("add app-b app-a --protocol udp --port {UDP_PORT}"));
    let at_a = udp_server(&dc, &a.ns, UDP_PORT, true);
    // The policy is in place (bounded wait): AppB's datagrams reach AppA.
    udp_connects_quiet(&dc, &b, &a, &at_a);

    // An intruder on the underlay bridge with an address that holds no lease.
    let intruder = Ns::new("vxi");
    let rogue = format!("{UNDERLAY}.77");
    dc.underlay_ns().ok(&format!(
        "ip link add vxi0 type veth peer name eth0 netns {} && ip link set vxi0 master br0 up",
        intruder.name
    ));
    intruder.ok(&format!(
        "ip link set lo up && ip addr add {rogue}/24 dev eth0 && ip link set eth0 up"
    ));
    let leases = dc.leases().expect("leases").to_string();
    assert!(!leases.contains(&rogue), "{rogue} holds no lease: {leases}");

    let tag_b = app_tag(&dc, "app-b");
    let cell2_mac = mac_of(dc.cell_ns(2), "eth0");
    let vtep2 = dc.cell(2).remote().expect("cell 2 VTEP");
    let vtep1 = dc.cell(1).remote().expect("cell 1 VTEP");
    let packet = |osrc: &str, sport: u16, payload: &str| {
        format!(
            "vxlan eth0 {cell2_mac} {osrc} {} {tag_b} {} {} {} {} {sport} {UDP_PORT} {payload}",
            vtep2.underlay, vtep2.mac, vtep1.mac, b.ip, a.ip
        )
    };
    let before = policy_counter(
        dc.cell_ns(2),
        "input",
        "vxlan from an address without a lease",
    )
    .expect("the unleased-VXLAN rule counts");
    forge(&dc, &intruder, &packet(&rogue, 41001, "vx-unleased"));
    // Positive control: the same packet from a leased cell's address is delivered.
    forge(
        &dc,
        dc.cell_ns(1),
        &packet(&vtep1.underlay, 41002, "vx-leased"),
    );
    let start = Instant::now();
    while !at_a.output().contains("vx-leased") {
        assert!(
            start.elapsed() < LIVE,
            "the crafted VXLAN packet from the leased cell 1 was not delivered: {}{}",
            at_a.output(),
            diag(&dc)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let got = at_a.output();
    assert!(
        got.contains(&format!("{} vx-leased", b.ip)),
        "AppA sees AppB's address: {got}"
    );
    assert!(
        !got.contains("vx-unleased"),
        "VXLAN from {rogue} (no lease) was delivered: {got}"
    );
    let after = policy_counter(
        dc.cell_ns(2),
        "input",
        "vxlan from an address without a lease",
    )
    .expect("the unleased-VXLAN rule counts");
    assert!(
        after >= before + 3,
        "the unleased-VXLAN counter counts the 3 packets: {before} -> {after}{}",
        diag(&dc)
    );
}

// ----- 6. agent restarts -----
