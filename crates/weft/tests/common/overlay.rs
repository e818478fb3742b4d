//! Shared by the overlay tests in the simulated data centre (`overlay_*.rs`): the echo port,
//! `ip -j` in a namespace, the VTEP's counters, and "every container reaches every other".
#![allow(dead_code)]

use serde_json::Value;

use crate::common::{ping_ok, wait_until, Ns};
use crate::dc::{Container, Dc, LIVE, VTEP};

pub const ECHO_PORT: u16 = 8080;

/// `ip -j ... ` in `ns`, parsed.
pub fn ip_json(ns: &Ns, cmd: &str) -> Value {
    let out = ns.ok(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`{cmd}`: {e}: {out}"))
}

/// (tx_packets, rx_packets) of the VTEP in `ns`.
pub fn vtep_counters(ns: &Ns) -> (u64, u64) {
    let v = ip_json(ns, &format!("ip -s -j link show {VTEP}"));
    let st = &v[0]["stats64"];
    (
        st["tx"]["packets"].as_u64().unwrap_or(0),
        st["rx"]["packets"].as_u64().unwrap_or(0),
    )
}

/// Checks ping and a TCP exchange from every container to every other. The echo server
/// answers with the peer address it saw: inside the overlay that is the sender's own
/// container address (no NAT between containers).
pub fn assert_full_reachability(dc: &Dc, cts: &[&Container]) {
    for from in cts {
        for to in cts {
            if from.id == to.id {
                continue;
            }
            let what = format!(
                "{} (cell {}, {}) -> {} (cell {}, {})",
                from.id, from.cell, from.ip, to.id, to.cell, to.ip
            );
            assert!(ping_ok(&from.ns, &to.ip), "ping {what}");
            let msg = format!("from-{}", from.id);
            let mut reply = None;
            // A fresh path may need a moment (first ARP-less packet on a new veth).
            wait_until(&format!("TCP {what}"), LIVE, || {
                reply = dc.tcp_exchange(&from.ns, &to.ip, ECHO_PORT, &msg);
                reply.is_some()
            });
            assert_eq!(
                reply.unwrap_or_default().trim(),
                format!("{} {msg}", from.ip),
                "TCP {what}: the server must see the sender's own overlay address"
            );
        }
    }
}
