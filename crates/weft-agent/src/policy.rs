//! Network policy (seed 000 steps 3 and 10), in one nftables table, `inet weft-policy`:
//!
//! ```text
//! map tags        container IP -> mark          step 3: every packet a local container sends
//!                                               is marked with its app's tag; VXLAN GBP
//!                                               carries the mark to the destination host
//! set containers  container IP . host veth      no spoofing: a container sends only from its
//!                                               own address, through its own veth
//! set cells       underlay IPs holding a lease  VXLAN is accepted only from them (a forged
//!                                               tag from elsewhere on the underlay is dropped)
//! map allow_ports tag . dst IP . proto . ports  step 10: one verdict map lookup per new
//! map allow_icmp  tag . dst IP                  connection, whatever the number of policies
//! set denied      tag . dst IP                  counts what default deny dropped, per pair
//! ```
//!
//! [`elements`] computes every element from the controller's policies and tags and this
//! host's containers (pure). The table's structure is written once ([`render_table`]); after
//! that a change is one transaction that deletes and adds elements ([`render_diff`]). Replies
//! of allowed connections pass through conntrack; traffic to or from outside the overlay is
//! not affected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use weft_controller::model::{Policy, Protocol};

pub const TABLE: &str = "weft-policy";

/// A container on this host as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalContainer {
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub app: Option<String>,
    /// The container end's MAC (the fast path delivers to it).
    pub mac: Option<[u8; 6]>,
}

/// Every element of the table's sets and maps, rendered as nft element text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    pub tags: BTreeSet<String>,
    /// Host ends of the local containers' veths (the table never relies on interface names).
    pub veths: BTreeSet<String>,
    pub containers: BTreeSet<String>,
    pub cells: BTreeSet<String>,
    pub allow_ports: BTreeSet<String>,
    pub allow_icmp: BTreeSet<String>,
}

impl Elements {
    /// (kind, name, elements) of every set and map.
    fn sets(&self) -> [(&'static str, &'static str, &BTreeSet<String>); 6] {
        [
            ("map", "tags", &self.tags),
            ("set", "veths", &self.veths),
            ("set", "containers", &self.containers),
            ("set", "cells", &self.cells),
            ("map", "allow_ports", &self.allow_ports),
            ("map", "allow_icmp", &self.allow_icmp),
        ]
    }

    pub fn len(&self) -> usize {
        self.sets().iter().map(|(_, _, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Merges overlapping or adjacent port ranges (an interval map may not hold overlaps).
fn merge(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Always a range: nft 1.0.6 cannot delete a single-port element of a concatenated interval
/// map written as `8080`, only as `8080-8080`.
fn port_text((s, e): (u16, u16)) -> String {
    format!("{s}-{e}")
}

/// Pure: the elements for these policies, tags, containers and remote cells.
pub fn elements(
    policies: &[Policy],
    tags: &BTreeMap<String, u16>,
    containers: &[LocalContainer],
    cells: &[IpAddr],
) -> Elements {
    let mut e = Elements::default();
    let tag_of = |app: &str| tags.get(app).copied();
    for c in containers {
        e.veths.insert(format!("\"{}\"", c.host_ifname));
        e.containers
            .insert(format!("{} . \"{}\"", c.ip, c.host_ifname));
        if let Some(t) = c.app.as_deref().and_then(tag_of) {
            e.tags.insert(format!("{} : {t}", c.ip));
        }
    }
    for ip in cells {
        if let IpAddr::V4(v4) = ip {
            e.cells.insert(v4.to_string());
        }
    }
    // (tag, dst ip, proto) -> port ranges
    type Key = (u16, Ipv4Addr, &'static str);
    let mut ports: BTreeMap<Key, Vec<(u16, u16)>> = BTreeMap::new();
    for p in policies {
        let Some(src) = p.source.tag.or_else(|| tag_of(&p.source.id)) else {
            continue;
        };
        for c in containers
            .iter()
            .filter(|c| c.app.as_deref() == Some(p.destination.id.as_str()))
        {
            match (p.destination.protocol, p.destination.ports) {
                (Protocol::Icmp, _) => {
                    e.allow_icmp.insert(format!("{src} . {} : accept", c.ip));
                }
                (proto, Some(r)) => {
                    ports
                        .entry((src, c.ip, proto.as_str()))
                        .or_default()
                        .push((r.start, r.end));
                }
                (_, None) => {}
            }
        }
    }
    for ((tag, ip, proto), ranges) in ports {
        for r in merge(ranges) {
            e.allow_ports.insert(format!(
                "{tag} . {ip} . {proto} . {} : accept",
                port_text(r)
            ));
        }
    }
    e
}

/// The table's structure: `(fingerprint, script)`. The script replaces the table in one
/// transaction; it is written when the table is missing or its fingerprint differs.
/// `enforce = false` (labs) keeps marking and anti-spoofing but lets all c2c traffic pass.
pub fn render_table(overlay: Ipv4Net, vxlan_port: u16, enforce: bool) -> (String, String) {
    let fp = format!("weft policy v2 overlay={overlay} vxlan={vxlan_port} enforce={enforce}");
    let verdict = if enforce { "drop" } else { "accept" };
    let script = format!(
        r#"add table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  comment "{fp}"
  map tags {{ type ipv4_addr : mark; }}
  set veths {{ type ifname; }}
  set containers {{ type ipv4_addr . ifname; }}
  set cells {{ type ipv4_addr; }}
  map allow_ports {{ type mark . ipv4_addr . inet_proto . inet_service : verdict; flags interval; counter; }}
  map allow_icmp {{ type mark . ipv4_addr : verdict; counter; }}
  set denied {{ type mark . ipv4_addr; flags dynamic; size 65536; counter; }}
  chain prerouting {{
    type filter hook prerouting priority -150; policy accept;
    iifname @veths ip saddr . iifname != @containers counter drop comment "spoofed source"
    iifname @veths meta mark set ip saddr map @tags
  }}
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {vxlan_port} ip saddr != @cells counter drop comment "vxlan from an address without a lease"
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ip saddr != {overlay} accept
    ip daddr != {overlay} accept
    oifname != @veths accept
    ct state established,related accept
    meta l4proto {{ tcp, udp }} meta mark . ip daddr . meta l4proto . th dport vmap @allow_ports
    meta l4proto icmp meta mark . ip daddr vmap @allow_icmp
    update @denied {{ meta mark . ip daddr }} {verdict}
  }}
}}
"#
    );
    (fp, script)
}

/// One transaction that makes the kernel's elements `new`: with `old` known, only the
/// difference; without (first sync after a start), flush and refill every set atomically.
pub fn render_diff(old: Option<&Elements>, new: &Elements) -> String {
    let mut s = String::new();
    match old {
        None => {
            for (kind, name, set) in new.sets() {
                s += &format!("flush {kind} inet {TABLE} {name}\n");
                if !set.is_empty() {
                    s += &format!(
                        "add element inet {TABLE} {name} {{ {} }}\n",
                        join(set.iter())
                    );
                }
            }
        }
        Some(old) => {
            for ((_, name, o), (_, _, n)) in old.sets().into_iter().zip(new.sets()) {
                let gone: Vec<&String> = o.difference(n).collect();
                let came: Vec<&String> = n.difference(o).collect();
                if !gone.is_empty() {
                    // Deleting takes the key only (the part before " : ").
                    let keys = gone
                        .iter()
                        .map(|e| e.split(" : ").next().unwrap_or(e).to_string());
                    s += &format!("delete element inet {TABLE} {name} {{ {} }}\n", join(keys));
                }
                if !came.is_empty() {
                    s += &format!(
                        "add element inet {TABLE} {name} {{ {} }}\n",
                        join(came.into_iter())
                    );
                }
            }
        }
    }
    s
}

fn join<I: Iterator<Item = T>, T: AsRef<str>>(it: I) -> String {
    it.map(|x| x.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the table structure if needed, then the elements. `applied` is what this process
/// last applied (None after a start: then the structure is checked and every set refilled in
/// one transaction).
pub fn apply(
    nft: &mut weft_kernel::nft::Nft,
    overlay: Ipv4Net,
    vxlan_port: u16,
    enforce: bool,
    applied: Option<&Elements>,
    new: &Elements,
) -> weft_kernel::Result<()> {
    let (fp, script) = render_table(overlay, vxlan_port, enforce);
    // The structure is checked once per process (a listing of a large table is not free);
    // after that, `applied` is what the kernel holds.
    if applied.is_none() && !nft.table_matches("inet", TABLE, &fp)? {
        // New or changed structure: the table and all its elements in one transaction, so
        // no packet ever sees the table without its elements.
        nft.run(&(script + &render_diff(None, new)))?;
        return Ok(());
    }
    if applied == Some(new) {
        return Ok(());
    }
    let diff = render_diff(applied, new);
    if !diff.is_empty() {
        nft.run(&diff)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_controller::model::Ports;

    fn pol(src: &str, dst: &str, proto: Protocol, ports: Option<(u16, u16)>) -> Policy {
        Policy::new(
            src,
            dst,
            proto,
            ports.map(|(start, end)| Ports { start, end }),
        )
    }

    fn setup() -> (BTreeMap<String, u16>, Vec<LocalContainer>) {
        let tags = [
            ("app-a".to_string(), 10u16),
            ("app-b".to_string(), 11),
            ("app-c".to_string(), 12),
        ]
        .into();
        let cs = vec![
            LocalContainer {
                ip: "10.255.1.1".parse().unwrap(),
                host_ifname: "weftaaaa".into(),
                app: Some("app-a".into()),
                mac: None,
            },
            LocalContainer {
                ip: "10.255.1.2".parse().unwrap(),
                host_ifname: "weftbbbb".into(),
                app: Some("app-a".into()),
                mac: None,
            },
            LocalContainer {
                ip: "10.255.1.3".parse().unwrap(),
                host_ifname: "weftcccc".into(),
                app: None,
                mac: None,
            },
        ];
        (tags, cs)
    }

    #[test]
    fn policy_expands_to_each_local_destination_container() {
        let (tags, cs) = setup();
        let e = elements(
            &[pol("app-b", "app-a", Protocol::Tcp, Some((8080, 8080)))],
            &tags,
            &cs,
            &[],
        );
        assert_eq!(
            e.allow_ports.iter().cloned().collect::<Vec<_>>(),
            vec![
                "11 . 10.255.1.1 . tcp . 8080-8080 : accept",
                "11 . 10.255.1.2 . tcp . 8080-8080 : accept"
            ]
        );
        assert!(e.tags.contains("10.255.1.1 : 10"));
        assert_eq!(e.tags.len(), 2, "a container without app gets no mark");
        assert_eq!(e.containers.len(), 3);
        // The reverse direction is not allowed: policies are one-way.
        let e2 = elements(
            &[pol("app-a", "app-b", Protocol::Tcp, Some((8080, 8080)))],
            &tags,
            &cs,
            &[],
        );
        assert!(e2.allow_ports.is_empty(), "app-b has no container here");
    }

    #[test]
    fn overlapping_ranges_merge_and_icmp_has_its_map() {
        let (tags, cs) = setup();
        let ps = [
            pol("app-b", "app-a", Protocol::Tcp, Some((8000, 8100))),
            pol("app-b", "app-a", Protocol::Tcp, Some((8050, 8200))),
            pol("app-b", "app-a", Protocol::Tcp, Some((8201, 8201))),
            pol("app-b", "app-a", Protocol::Udp, Some((53, 53))),
            pol("app-c", "app-a", Protocol::Icmp, None),
        ];
        let e = elements(&ps, &tags, &cs[..1], &[]);
        assert_eq!(
            e.allow_ports.iter().cloned().collect::<Vec<_>>(),
            vec![
                "11 . 10.255.1.1 . tcp . 8000-8201 : accept",
                "11 . 10.255.1.1 . udp . 53-53 : accept"
            ]
        );
        assert_eq!(
            e.allow_icmp.iter().cloned().collect::<Vec<_>>(),
            vec!["12 . 10.255.1.1 : accept"]
        );
    }

    #[test]
    fn unknown_source_tag_allows_nothing() {
        let (tags, cs) = setup();
        let e = elements(
            &[pol("app-zzz", "app-a", Protocol::Tcp, Some((1, 2)))],
            &tags,
            &cs,
            &[],
        );
        assert!(e.allow_ports.is_empty());
    }

    #[test]
    fn diff_is_minimal_and_full_sync_flushes() {
        let (tags, cs) = setup();
        let cells: Vec<IpAddr> = vec!["198.18.0.2".parse().unwrap()];
        let a = elements(
            &[pol("app-b", "app-a", Protocol::Tcp, Some((80, 80)))],
            &tags,
            &cs,
            &cells,
        );
        let b = elements(
            &[pol("app-b", "app-a", Protocol::Tcp, Some((81, 81)))],
            &tags,
            &cs,
            &cells,
        );
        let d = render_diff(Some(&a), &b);
        assert_eq!(
            d,
            "delete element inet weft-policy allow_ports { 11 . 10.255.1.1 . tcp . 80-80, 11 . 10.255.1.2 . tcp . 80-80 }\n\
             add element inet weft-policy allow_ports { 11 . 10.255.1.1 . tcp . 81-81 : accept, 11 . 10.255.1.2 . tcp . 81-81 : accept }\n"
        );
        assert!(render_diff(Some(&a), &a).is_empty());
        let full = render_diff(None, &a);
        assert!(full
            .starts_with("flush map inet weft-policy tags\nadd element inet weft-policy tags {"));
        assert!(full.contains("flush map inet weft-policy allow_icmp\n"));
        assert!(full.contains("flush set inet weft-policy cells\n"));
        assert!(full.contains("add element inet weft-policy cells { 198.18.0.2 }"));
    }

    #[test]
    fn enforcement_switch_changes_the_default_verdict() {
        let (fp1, on) = render_table("10.255.0.0/16".parse().unwrap(), 4789, true);
        let (fp2, off) = render_table("10.255.0.0/16".parse().unwrap(), 4789, false);
        assert!(on.contains("update @denied { meta mark . ip daddr } drop"));
        assert!(off.contains("update @denied { meta mark . ip daddr } accept"));
        assert_ne!(fp1, fp2);
    }
}
