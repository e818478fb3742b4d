//! `--probe`: a real packet (a TCP SYN or an ICMP echo) from the source container, traced by
//! nftables (`meta nftrace set 1` in a temporary table on every host it may cross), and
//! reported rule by rule, so that a drop is explained by the rule that dropped it. The
//! temporary table is always removed.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use weft_kernel::netns::{in_netns, Netns};
use weft_kernel::nft::{Chain, Family, Rule, Table, Transaction, Verdict};
use weft_kernel::nftrace::TraceListener;

use super::kernel;
use super::steps::Ctx;
use super::world::Host;
use crate::reach::{self, Outcome, PROBE_TIMEOUT};

#[derive(Debug, Clone, Serialize)]
pub struct ProbeEvent {
    pub host: String,
    /// The kernel's trace id: the same for every event of one packet.
    pub packet: u32,
    pub table: String,
    pub chain: String,
    pub kind: String,
    pub verdict: Option<String>,
    pub rule: Option<String>,
    pub mark: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub outcome: Outcome,
    pub events: Vec<ProbeEvent>,
    /// The rule (or chain policy) that dropped the probe, if one did.
    pub dropped_by: Option<ProbeEvent>,
}

/// The temporary table that sets `nftrace` on the probe's packets (before every other
/// chain: priority -400).
pub fn trace_table(
    name: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: &str,
    port: Option<u16>,
) -> Table {
    // Only the connection's first packet (a TCP SYN, an ICMP echo request): the path of one
    // packet, not of the whole exchange.
    let m = match (proto, port) {
        ("icmp", _) => " icmp type echo-request".to_string(),
        ("tcp", Some(port)) => format!(" tcp dport {port} tcp flags & (syn | ack) == syn"),
        (p, Some(port)) => format!(" {p} dport {port}"),
        (p, None) => format!(" meta l4proto {p}"),
    };
    let chain = Chain::base("prerouting", "filter", "prerouting", -400, Verdict::Accept).with_rule(
        Rule::new(format!(
            "ip saddr {src} ip daddr {dst}{m} meta nftrace set 1"
        )),
    );
    Table::new(Family::Inet, name).with_chain(chain)
}

/// Arms a trace table and a listener on every host, sends the probe, and collects what the
/// kernels traced.
pub fn probe(ctx: &Ctx, hosts: &[Host]) -> Result<ProbeReport> {
    let name = format!("weft-trace-{}", std::process::id());
    let table = trace_table(&name, ctx.src.ip, ctx.dst_ip, &ctx.protocol, ctx.port);
    let result = armed_probe(ctx, hosts, &table);
    for h in hosts {
        let mut tx = Transaction::new();
        tx.delete_table(Family::Inet, &name);
        let _ = kernel::apply(h, tx);
    }
    result
}

fn armed_probe(ctx: &Ctx, hosts: &[Host], table: &Table) -> Result<ProbeReport> {
    let mut armed: Vec<(&Host, TraceListener, Option<Table>)> = Vec::new();
    for h in hosts {
        let mut tx = Transaction::new();
        tx.add_table(table);
        kernel::apply(h, tx)
            .with_context(|| format!("add the probe's trace table on {}", h.name))?;
        let listener = match &h.ns {
            Some(ns) => TraceListener::open_in(&Netns::named(ns)?)?,
            None => TraceListener::open()?,
        };
        armed.push((h, listener, None));
    }
    let ns = ctx.src.netns.clone();
    let dst = ctx.dst_ip;
    let outcome = match (ctx.protocol.as_str(), ctx.port) {
        ("icmp", _) | (_, None) => in_netns(&ns, move || reach::ping_here(dst, PROBE_TIMEOUT))?,
        (_, Some(port)) => in_netns(&ns, move || reach::tcp_here(dst, port, PROBE_TIMEOUT))?,
    };
    let mut events = Vec::new();
    let mut dropped_by = None;
    for (host, listener, _) in &mut armed {
        // The tables the events name, each read once (after the packet: handles as they were).
        let mut read: Vec<Table> = Vec::new();
        for e in listener.recv(Duration::from_millis(300))? {
            if e.table == table.name {
                continue;
            }
            let family = Family::from_nfproto(e.family);
            let family_name = family.map_or("?", Family::as_str);
            let rule = match (family, e.rule_handle) {
                (Some(f), Some(handle)) => {
                    if !read.iter().any(|t| t.family == f && t.name == e.table) {
                        read.extend(kernel::table(host, f, &e.table));
                    }
                    read.iter()
                        .find(|t| t.family == f && t.name == e.table)
                        .and_then(|t| t.rule_by_handle(handle))
                        .map(|(_, r)| r.listing())
                }
                _ => None,
            };
            let pe = ProbeEvent {
                host: host.name.clone(),
                packet: e.id,
                table: format!("{family_name} {}", e.table),
                chain: e.chain.clone(),
                kind: format!("{:?}", e.kind).to_lowercase(),
                verdict: e.verdict.as_ref().map(|v| v.to_string()),
                rule,
                mark: e.mark,
            };
            if matches!(e.verdict, Some(Verdict::Drop)) && dropped_by.is_none() {
                dropped_by = Some(pe.clone());
            }
            events.push(pe);
        }
    }
    Ok(ProbeReport {
        outcome,
        events,
        dropped_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_table_matches_only_the_probe() {
        let t = trace_table(
            "weft-trace-1",
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "tcp",
            Some(80),
        );
        let mut tx = Transaction::new();
        tx.add_table(&t);
        let script = tx.script();
        assert!(script.contains(
            "ip saddr 10.0.0.1 ip daddr 10.0.0.2 tcp dport 80 tcp flags & (syn | ack) == syn meta nftrace set 1"
        ));
        assert!(script.contains("priority -400"), "{script}");
        assert!(script.contains("table inet weft-trace-1"), "{script}");
        let icmp = trace_table(
            "t",
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "icmp",
            None,
        );
        assert_eq!(
            icmp.chain("prerouting").map(|c| c.rules[0].expr.as_str()),
            Some("ip saddr 10.0.0.1 ip daddr 10.0.0.2 icmp type echo-request meta nftrace set 1")
        );
    }
}
