//! Egress policy, enforced on the source host in its own nftables table, `inet weft-egress`:
//! what a local overlay container may reach outside the overlay.
//!
//! ```text
//! map allow_ports  mark . dst range . proto . port range : accept   tcp and udp rules
//! map allow_icmp   mark . dst range : accept                          icmp rules
//! map allow_all    mark . dst range : accept                          rules of protocol all
//! ```
//!
//! The mark is the source app's tag, set in `inet weft-policy`'s prerouting chain for every
//! packet a local container sends. Each new connection out of the overlay costs one lookup per
//! map whatever the number of rules (interval maps over concatenations), in the forward hook,
//! so before the masquerade in postrouting. Elements never overlap (an interval map may not
//! hold overlaps): [`elements`] cuts each app's rules into disjoint boxes.
//!
//! Fail closed in deny mode: the chain ends in an unconditional `drop`, so a missing tag
//! (mark 0), a missing element or a failed element transaction (a full map: the kernel keeps
//! the old elements) leaves the packet denied. Before the controller's first snapshot an agent
//! that finds no table writes one in deny mode ([`fence`]): until it knows the mode, nothing
//! leaves. Traffic that is not from the overlay (bridge-mode cells, the host) or that stays in
//! it (c2c: `inet weft-policy`'s job), replies and IPv6 pass untouched. In allow mode the last
//! rule accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_api::egress::{EgressMode, EgressProtocol, EgressState, IpRange};

pub const TABLE: &str = "weft-egress";
/// Comment (and counter) of the last rule in deny mode.
pub const DEFAULT_DENY: &str = "egress default deny";

/// What the table's rules (not its elements) depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub overlay: Ipv4Net,
    pub mode: EgressMode,
}

impl Layout {
    /// The table's fingerprint (its comment): a table with another one is replaced.
    pub fn fingerprint(&self) -> String {
        format!(
            "weft egress v1 overlay={} mode={}",
            self.overlay,
            self.mode.as_str()
        )
    }
}

/// Every element of the three maps, as nft element text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    pub allow_ports: BTreeSet<String>,
    pub allow_icmp: BTreeSet<String>,
    pub allow_all: BTreeSet<String>,
}

impl Elements {
    fn maps(&self) -> [(&'static str, &BTreeSet<String>); 3] {
        [
            ("allow_ports", &self.allow_ports),
            ("allow_icmp", &self.allow_icmp),
            ("allow_all", &self.allow_all),
        ]
    }

    pub fn len(&self) -> usize {
        self.maps().iter().map(|(_, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Merges overlapping or adjacent inclusive ranges.
fn merge<T: Copy + Ord + Into<u64>>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort();
    let mut out: Vec<(T, T)> = Vec::new();
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s.into() <= last.1.into() + 1 => {
                if e > last.1 {
                    last.1 = e
                }
            }
            _ => out.push((s, e)),
        }
    }
    out
}

/// An inclusive port range.
type PortRange = (u16, u16);
/// One rule's box: an address range and a port range.
type Box2 = (IpRange, PortRange);

/// Disjoint boxes (address range × port ranges) covering the union of `boxes`: the address
/// axis is cut at every box edge; each piece gets the merged ports of the boxes over it, and
/// neighbouring pieces with the same ports are joined again.
fn disjoint(boxes: &[Box2]) -> Vec<(IpRange, Vec<PortRange>)> {
    // Sweep: +1 at a start, -1 after an end.
    let mut edges: BTreeMap<u64, Vec<(i32, PortRange)>> = BTreeMap::new();
    for (ips, ports) in boxes {
        edges
            .entry(u32::from(ips.start) as u64)
            .or_default()
            .push((1, *ports));
        edges
            .entry(u32::from(ips.end) as u64 + 1)
            .or_default()
            .push((-1, *ports));
    }
    let mut active: BTreeMap<PortRange, i32> = BTreeMap::new();
    // (first address, last address, ports) as integers.
    let mut pieces: Vec<(u64, u64, Vec<PortRange>)> = Vec::new();
    let points: Vec<u64> = edges.keys().copied().collect();
    for (i, at) in points.iter().enumerate() {
        for (d, ports) in &edges[at] {
            let n = active.entry(*ports).or_default();
            *n += d;
            if *n == 0 {
                active.remove(ports);
            }
        }
        let Some(next) = points.get(i + 1) else {
            break;
        };
        if active.is_empty() {
            continue;
        }
        let ports = merge(active.keys().copied().collect());
        match pieces.last_mut() {
            Some(last) if last.1 + 1 == *at && last.2 == ports => last.1 = next - 1,
            _ => pieces.push((*at, next - 1, ports)),
        }
    }
    pieces
        .into_iter()
        .map(|(s, e, p)| {
            (
                IpRange {
                    start: Ipv4Addr::from(s as u32),
                    end: Ipv4Addr::from(e as u32),
                },
                p,
            )
        })
        .collect()
}

fn ip_text(r: IpRange) -> String {
    if r.start == r.end {
        r.start.to_string()
    } else {
        format!("{}-{}", r.start, r.end)
    }
}

/// Pure: the elements for the egress state and the apps' tags. Policies of apps without a
/// tag, and rules that do not parse (the controller validates them), give no element.
pub fn elements(state: &EgressState, tags: &BTreeMap<String, u16>) -> Elements {
    let mut e = Elements::default();
    let destinations: BTreeMap<&str, _> = state
        .destinations
        .iter()
        .map(|d| (d.id.as_str(), d))
        .collect();
    // tag -> proto -> boxes; tag -> ranges for icmp and all
    let mut ports: BTreeMap<(u16, &'static str), Vec<Box2>> = BTreeMap::new();
    let mut icmp: BTreeMap<u16, Vec<(u32, u32)>> = BTreeMap::new();
    let mut all: BTreeMap<u16, Vec<(u32, u32)>> = BTreeMap::new();
    for p in &state.policies {
        let Some(tag) = p
            .source
            .tag
            .or_else(|| tags.get(&p.source.id).copied())
            .filter(|t| *t != 0)
        else {
            continue;
        };
        let Some(d) = destinations.get(p.destination.id.as_str()) else {
            continue;
        };
        for rule in d.rules.iter().filter_map(|r| r.parse().ok()) {
            let span = (u32::from(rule.ips.start), u32::from(rule.ips.end));
            match rule.protocol {
                EgressProtocol::Tcp | EgressProtocol::Udp => {
                    let r = rule.ports.map(|p| (p.start, p.end)).unwrap_or((0, 65535));
                    ports
                        .entry((tag, rule.protocol.as_str()))
                        .or_default()
                        .push((rule.ips, r));
                }
                EgressProtocol::Icmp => icmp.entry(tag).or_default().push(span),
                EgressProtocol::All => all.entry(tag).or_default().push(span),
            }
        }
    }
    for ((tag, proto), boxes) in ports {
        for (ips, port_ranges) in disjoint(&boxes) {
            for (s, end) in port_ranges {
                e.allow_ports.insert(format!(
                    "{tag} . {} . {proto} . {s}-{end} : accept",
                    ip_text(ips)
                ));
            }
        }
    }
    for (set, by_tag) in [(&mut e.allow_icmp, icmp), (&mut e.allow_all, all)] {
        for (tag, spans) in by_tag {
            for (s, end) in merge(spans) {
                let r = IpRange {
                    start: Ipv4Addr::from(s),
                    end: Ipv4Addr::from(end),
                };
                set.insert(format!("{tag} . {} : accept", ip_text(r)));
            }
        }
    }
    e
}

/// The table's structure: `(fingerprint, script)`; the script replaces the table in one
/// transaction.
pub fn render_table(l: &Layout) -> (String, String) {
    let fp = l.fingerprint();
    let overlay = l.overlay;
    let last = match l.mode {
        EgressMode::Deny => format!("counter drop comment \"{DEFAULT_DENY}\""),
        EgressMode::Allow => "accept comment \"egress allowed\"".to_string(),
    };
    let script = format!(
        r#"add table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  comment "{fp}"
  map allow_ports {{ type mark . ipv4_addr . inet_proto . inet_service : verdict; flags interval; counter; }}
  map allow_icmp {{ type mark . ipv4_addr : verdict; flags interval; counter; }}
  map allow_all {{ type mark . ipv4_addr : verdict; flags interval; counter; }}
  chain forward {{
    type filter hook forward priority -5; policy accept;
    meta nfproto ipv6 accept
    ip saddr != {overlay} accept
    ip daddr {overlay} accept
    ct state established,related accept
    meta mark . ip daddr vmap @allow_all
    meta l4proto {{ tcp, udp }} meta mark . ip daddr . meta l4proto . th dport vmap @allow_ports
    meta l4proto icmp meta mark . ip daddr vmap @allow_icmp
    {last}
  }}
}}
"#
    );
    (fp, script)
}

/// One transaction that makes the kernel's elements `new`: with `old` known, only the
/// difference; without, flush and refill every map atomically.
pub fn render_diff(old: Option<&Elements>, new: &Elements) -> String {
    let mut s = String::new();
    match old {
        None => {
            for (name, set) in new.maps() {
                s += &format!("flush map inet {TABLE} {name}\n");
                if !set.is_empty() {
                    s += &format!("add element inet {TABLE} {name} {{ {} }}\n", join(set));
                }
            }
        }
        Some(old) => {
            for ((name, o), (_, n)) in old.maps().into_iter().zip(new.maps()) {
                let gone: BTreeSet<String> = o
                    .difference(n)
                    .map(|e| e.split(" : ").next().unwrap_or(e).to_string())
                    .collect();
                let came: BTreeSet<String> = n.difference(o).cloned().collect();
                if !gone.is_empty() {
                    s += &format!("delete element inet {TABLE} {name} {{ {} }}\n", join(&gone));
                }
                if !came.is_empty() {
                    s += &format!("add element inet {TABLE} {name} {{ {} }}\n", join(&came));
                }
            }
        }
    }
    s
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the structure if needed, then the elements (one atomic transaction each); see
/// `policy::apply` for `applied` and `verify`. Returns whether it wrote anything.
pub fn apply(
    nft: &mut weft_kernel::nft::Nft,
    layout: &Layout,
    applied: Option<&Elements>,
    new: &Elements,
    verify: bool,
) -> weft_kernel::Result<bool> {
    let (fp, script) = render_table(layout);
    if (applied.is_none() || verify) && !nft.table_matches("inet", TABLE, &fp)? {
        nft.run(&(script + &render_diff(None, new)))?;
        return Ok(true);
    }
    if applied == Some(new) {
        return Ok(false);
    }
    let diff = render_diff(applied, new);
    if !diff.is_empty() {
        nft.run(&diff)?;
    }
    Ok(!diff.is_empty())
}

/// Before the first snapshot: if there is no table, write one in deny mode with no elements
/// (the mode is not known yet). An existing table keeps enforcing what an earlier run
/// applied. Returns whether it wrote.
pub fn fence(nft: &mut weft_kernel::nft::Nft, overlay: Ipv4Net) -> weft_kernel::Result<bool> {
    if nft.table_exists("inet", TABLE)? {
        return Ok(false);
    }
    let layout = Layout {
        overlay,
        mode: EgressMode::Deny,
    };
    let (_, script) = render_table(&layout);
    nft.run(&(script + &render_diff(None, &Elements::default())))?;
    Ok(true)
}

/// The egress rule that decides a packet from `app` to `ip` (`protocol`, `port`), for
/// `weft trace`: `Ok((destination, rule index))` allowed by that rule, `Err(reason)` dropped
/// (deny mode, no rule) or allowed without a rule (allow mode, or not egress).
pub fn explain(
    state: &EgressState,
    overlay: Ipv4Net,
    app: &str,
    ip: Ipv4Addr,
    protocol: &str,
    port: Option<u16>,
) -> Result<(String, usize), &'static str> {
    if overlay.contains(&ip) {
        return Err("not egress: the destination is in the overlay");
    }
    match state.allowing(app, ip, protocol, port) {
        Some((d, i)) => Ok((d.name.clone(), i)),
        None if state.mode == EgressMode::Allow => Err("egress mode allow: no rule needed"),
        None => Err(DEFAULT_DENY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::egress::{Destination, DestinationRule, EgressPolicy};

    fn rule(protocol: EgressProtocol, ips: &str, ports: Option<&str>) -> DestinationRule {
        DestinationRule {
            protocol,
            ips: ips.into(),
            ports: ports.map(String::from),
            description: String::new(),
        }
    }

    fn state(rules: Vec<DestinationRule>, apps: &[&str]) -> EgressState {
        EgressState {
            mode: EgressMode::Deny,
            destinations: vec![Destination {
                id: "d".into(),
                name: "d".into(),
                description: String::new(),
                rules,
            }],
            policies: apps.iter().map(|a| EgressPolicy::new(a, "d")).collect(),
        }
    }

    fn tags() -> BTreeMap<String, u16> {
        [("db".to_string(), 7), ("web".to_string(), 9)].into()
    }

    #[test]
    fn one_element_per_rule_and_app() {
        let s = state(
            vec![
                rule(EgressProtocol::Tcp, "203.0.113.0/24", Some("80")),
                rule(EgressProtocol::Icmp, "203.0.113.1", None),
                rule(EgressProtocol::All, "198.51.100.0-198.51.100.9", None),
                rule(EgressProtocol::Udp, "192.0.2.53", None),
            ],
            &["db", "nobody"],
        );
        let e = elements(&s, &tags());
        assert_eq!(
            e.allow_ports,
            [
                "7 . 192.0.2.53 . udp . 0-65535 : accept",
                "7 . 203.0.113.0-203.0.113.255 . tcp . 80-80 : accept"
            ]
            .map(String::from)
            .into()
        );
        assert_eq!(
            e.allow_icmp,
            ["7 . 203.0.113.1 : accept".to_string()].into()
        );
        assert_eq!(
            e.allow_all,
            ["7 . 198.51.100.0-198.51.100.9 : accept".to_string()].into()
        );
    }

    /// Overlapping rules become disjoint elements that allow exactly their union.
    #[test]
    fn overlapping_rules_become_disjoint_boxes() {
        let s = state(
            vec![
                rule(EgressProtocol::Tcp, "10.0.0.0/24", Some("80-90")),
                rule(EgressProtocol::Tcp, "10.0.0.128/25", Some("85-100")),
                rule(EgressProtocol::Tcp, "10.0.0.200", Some("443")),
            ],
            &["web"],
        );
        let e = elements(&s, &tags());
        assert_eq!(
            e.allow_ports,
            [
                "9 . 10.0.0.0-10.0.0.127 . tcp . 80-90 : accept",
                "9 . 10.0.0.128-10.0.0.199 . tcp . 80-100 : accept",
                "9 . 10.0.0.200 . tcp . 443-443 : accept",
                "9 . 10.0.0.200 . tcp . 80-100 : accept",
                "9 . 10.0.0.201-10.0.0.255 . tcp . 80-100 : accept",
            ]
            .map(String::from)
            .into()
        );
    }

    #[test]
    fn diffs_delete_keys_and_add_elements() {
        let old = elements(
            &state(
                vec![rule(EgressProtocol::Tcp, "1.1.1.1", Some("80"))],
                &["db"],
            ),
            &tags(),
        );
        let new = elements(
            &state(
                vec![rule(EgressProtocol::Tcp, "1.1.1.1", Some("81"))],
                &["db"],
            ),
            &tags(),
        );
        assert_eq!(
            render_diff(Some(&old), &new),
            "delete element inet weft-egress allow_ports { 7 . 1.1.1.1 . tcp . 80-80 }\n\
             add element inet weft-egress allow_ports { 7 . 1.1.1.1 . tcp . 81-81 : accept }\n"
        );
        assert_eq!(render_diff(Some(&new), &new), "");
        let (_, deny) = render_table(&Layout {
            overlay: "10.255.0.0/16".parse().unwrap(),
            mode: EgressMode::Deny,
        });
        assert!(deny.trim_end().ends_with(&format!(
            "counter drop comment \"{DEFAULT_DENY}\"\n  }}\n}}"
        )));
    }

    #[test]
    fn explain_names_the_rule() {
        let s = state(
            vec![rule(EgressProtocol::Tcp, "203.0.113.0/24", Some("80"))],
            &["db"],
        );
        let overlay: Ipv4Net = "10.255.0.0/16".parse().unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            explain(&s, overlay, "db", ip("203.0.113.2"), "tcp", Some(80)),
            Ok(("d".to_string(), 0))
        );
        assert_eq!(
            explain(&s, overlay, "db", ip("203.0.113.2"), "tcp", Some(81)),
            Err(DEFAULT_DENY)
        );
        assert!(explain(&s, overlay, "db", ip("10.255.1.2"), "tcp", Some(81)).is_err());
    }
}
