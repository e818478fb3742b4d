//! Network policy (seed 000 steps 3 and 10) and the overlay's anti-forgery rules, in one
//! nftables table, `inet weft-policy`:
//!
//! ```text
//! map tags         container IP -> mark          step 3: every packet a local container sends
//!                                                is marked with its app's tag; VXLAN GBP
//!                                                carries the mark to the destination host
//! set containers   container IP . host veth      no spoofing: a container sends only from its
//!                                                own address, through its own veth
//! set cells        underlay IPs holding a lease  VXLAN is accepted only from them, and
//!                                                containers never reach them
//! set cell_subnets underlay IP . inner source    a VXLAN packet's inner source must lie in
//!                                                the lease of the host that sent it
//! map allow_ports  tag . dst IP . proto . ports  step 10: one verdict map lookup per new
//! map allow_icmp   tag . dst IP                  connection, whatever the number of policies
//! set denied       tag . dst IP                  counts what default deny dropped, per pair
//!                                                (bounded and timed out: counting only)
//! ```
//!
//! The invariant is fail-closed: no verdict depends on an update, a lookup or a counter
//! succeeding. Every path to a local container ends in an unconditional `drop` (the
//! "default deny" rule); a set that is full, a key that is missing (a container the agent does
//! not know yet, a cell whose lease has not arrived) or an element that expired leads to that
//! drop or to another one, never to an accept. Only matches lead to accept: conntrack's
//! established/related, a policy element, a port mapping's DNAT from outside the overlay, and
//! traffic that neither goes to nor comes from the overlay's containers.
//!
//! What the rules stop (issue 14): containers never send to the VXLAN port of any address
//! outside the overlay nor to any cell's underlay address (their cell would masquerade a
//! forged VXLAN-GBP packet to its own leased address); VXLAN is taken only on the underlay
//! interface, only from a leased address, only with an IPv4 packet inside whose source is in
//! the sender's lease; decapsulated packets have an overlay source and are never forwarded
//! back into the VTEP; traffic from outside the overlay reaches containers only as replies or
//! through a port mapping (DNAT).
//!
//! [`elements`] computes every element from the controller's policies and tags, this host's
//! containers and the other cells (pure), as weft-kernel's typed [`Element`]s. The table's
//! structure ([`table`], on weft-kernel's typed model) is written once; after that a change
//! is one transaction that deletes and adds elements ([`render_diff`]). Its names (table,
//! sets, chains, the comments of the dropping rules) are the constants here, for every
//! reader (the metrics, `weft trace`, tests).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::Ipv4Net;
use weft_api::model::{Policy, Protocol};
use weft_kernel::nft::{
    Base, Chain, Element, Expr, Family, Meta, Rule, Set, SetFlag, SetKey, Table, Transaction,
    Value, Verdict,
};

use super::Kernel;
use crate::remote::RemoteCell;

/// The table (`inet weft-policy`).
pub const TABLE: &str = "weft-policy";
/// Its family.
pub const FAMILY: Family = Family::Inet;
/// The names of its sets and maps.
pub mod sets {
    pub const TAGS: &str = "tags";
    pub const VETHS: &str = "veths";
    pub const CONTAINERS: &str = "containers";
    pub const CELLS: &str = "cells";
    pub const CELL_SUBNETS: &str = "cell_subnets";
    pub const ALLOW_PORTS: &str = "allow_ports";
    pub const ALLOW_ICMP: &str = "allow_icmp";
    pub const DENIED: &str = "denied";
}
/// The names of its chains.
pub mod chains {
    pub const PREROUTING: &str = "prerouting";
    pub const INPUT: &str = "input";
    pub const FORWARD: &str = "forward";
    /// Accepted new connections' log rule (`--audit-accepted`, see `audit`).
    pub const AUDIT: &str = "audit";
}
/// Elements of the `denied` set: a bound on memory. When it is full, new pairs are not
/// counted per pair (the "default deny" rule still counts and drops them).
pub const DENIED_SIZE: u32 = 65_536;
/// How long a pair stays in `denied` after its last dropped packet.
pub const DENIED_TIMEOUT: Duration = Duration::from_secs(600);
/// Comments of the rules that drop; each rule's counter is a metric (see `metrics`).
pub mod drops {
    pub const SPOOFED: &str = "spoofed source";
    pub const DECAP_OUTSIDE: &str = "decapsulated from outside the overlay";
    pub const VXLAN_NOT_UNDERLAY: &str = "vxlan not from the underlay";
    pub const VXLAN_UNLEASED: &str = "vxlan from an address without a lease";
    pub const VXLAN_NOT_IPV4: &str = "vxlan: inner packet not IPv4";
    pub const VXLAN_OUTSIDE_LEASE: &str = "vxlan: inner source outside the sender's lease";
    pub const TO_VXLAN_PORT: &str = "to a VXLAN port";
    pub const TO_CELL: &str = "container to a cell's underlay address";
    pub const HAIRPIN: &str = "decapsulated back into the VTEP";
    pub const FROM_OUTSIDE: &str = "from outside the overlay";
    pub const DEFAULT_DENY: &str = "default deny";
    /// The last rule with `enforce = false` (labs): it accepts, so it is not in [`ALL`].
    pub const ENFORCEMENT_OFF: &str = "enforcement off";
    /// The accept of DNATed traffic from outside the overlay.
    pub const PORT_MAPPING: &str = "port mapping";
    pub const DNS_OTHER: &str = "to the DNS address, not port 53";
    /// Every one of them, in the order the table has them.
    pub const ALL: [&str; 12] = [
        SPOOFED,
        DECAP_OUTSIDE,
        VXLAN_NOT_UNDERLAY,
        VXLAN_UNLEASED,
        VXLAN_NOT_IPV4,
        VXLAN_OUTSIDE_LEASE,
        DNS_OTHER,
        TO_VXLAN_PORT,
        TO_CELL,
        HAIRPIN,
        FROM_OUTSIDE,
        DEFAULT_DENY,
    ];
}

/// What the table's rules (not its elements) depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub overlay: Ipv4Net,
    pub vxlan_port: u16,
    /// The VTEP device: decapsulated packets come in through it.
    pub vtep: String,
    /// The underlay interface: VXLAN is accepted on it only.
    pub underlay: String,
    /// Default deny between apps (false in labs: the last rule accepts instead).
    pub enforce: bool,
    /// NFLOG rules for the audit log (`--audit-log`), none without.
    pub audit: Option<crate::audit::Rules>,
}

impl Layout {
    /// The layout the unit tests render: overlay 10.255.0.0/16, VXLAN on 4789 over `eth0`.
    #[cfg(test)]
    pub(crate) fn test(enforce: bool, audit: Option<crate::audit::Rules>) -> Layout {
        Layout {
            overlay: "10.255.0.0/16".parse().unwrap(),
            vxlan_port: 4789,
            vtep: "weft.vtep".into(),
            underlay: "eth0".into(),
            enforce,
            audit,
        }
    }

    /// The table's fingerprint (its comment): a table with another one is replaced.
    pub fn fingerprint(&self) -> String {
        let audit = self
            .audit
            .as_ref()
            .map(|a| format!(" a{}", a.fingerprint()))
            .unwrap_or_default();
        format!(
            "weft policy v4 overlay={} vxlan={} vtep={} underlay={} enforce={}{audit}",
            self.overlay, self.vxlan_port, self.vtep, self.underlay, self.enforce
        )
    }
}

/// A container on this host as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalContainer {
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub app: Option<String>,
    /// The container end's MAC (the fast path delivers to it).
    pub mac: Option<weft_kernel::MacAddr>,
}

/// Every element of the table's sets and maps (all but `denied`, which the rules fill).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    pub tags: BTreeSet<Element>,
    /// Host ends of the local containers' veths (the table never relies on interface names).
    pub veths: BTreeSet<Element>,
    pub containers: BTreeSet<Element>,
    pub cells: BTreeSet<Element>,
    pub cell_subnets: BTreeSet<Element>,
    pub allow_ports: BTreeSet<Element>,
    pub allow_icmp: BTreeSet<Element>,
}

impl Elements {
    /// (name, elements) of every set and map.
    fn sets(&self) -> [(&'static str, &BTreeSet<Element>); 7] {
        use sets::*;
        [
            (TAGS, &self.tags),
            (VETHS, &self.veths),
            (CONTAINERS, &self.containers),
            (CELLS, &self.cells),
            (CELL_SUBNETS, &self.cell_subnets),
            (ALLOW_PORTS, &self.allow_ports),
            (ALLOW_ICMP, &self.allow_icmp),
        ]
    }

    pub fn len(&self) -> usize {
        self.sets().iter().map(|(_, s)| s.len()).sum()
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
fn port_range((s, e): (u16, u16)) -> Value {
    Value::range(s.into(), e.into())
}

/// A lease's addresses as the raw (big-endian integer) range `cell_subnets` compares the
/// inner source with: `0x0aff0200-0x0aff02ff`.
fn subnet_range(n: Ipv4Net) -> Value {
    let hex = |a: Ipv4Addr| Value::literal(format!("0x{:08x}", u32::from(a)));
    Value::range(hex(n.network()), hex(n.broadcast()))
}

fn accept(key: Value) -> Element {
    Element::pair(key, Verdict::Accept.into())
}

/// Pure: the elements for these policies, tags, containers and other cells.
pub fn elements(
    policies: &[Policy],
    tags: &BTreeMap<String, u16>,
    containers: &[LocalContainer],
    cells: &[RemoteCell],
) -> Elements {
    let mut e = Elements::default();
    // Tag 0 is "no identity" (an unmarked packet): it is never given, and never allowed.
    let tag_of = |app: &str| tags.get(app).copied().filter(|t| *t != 0);
    for c in containers {
        let veth = Value::name(&c.host_ifname);
        e.veths.insert(Element::key(veth.clone()));
        e.containers
            .insert(Element::key(Value::concat([c.ip.into(), veth])));
        if let Some(t) = c.app.as_deref().and_then(tag_of) {
            e.tags.insert(Element::pair(c.ip.into(), t.into()));
        }
    }
    for c in cells {
        if let IpAddr::V4(v4) = c.underlay_ip {
            e.cells.insert(Element::key(v4.into()));
            e.cell_subnets.insert(Element::key(Value::concat([
                v4.into(),
                subnet_range(c.subnet),
            ])));
        }
    }
    // (tag, dst ip, proto) -> port ranges
    type Key = (u16, Ipv4Addr, &'static str);
    let mut ports: BTreeMap<Key, Vec<(u16, u16)>> = BTreeMap::new();
    for p in policies {
        let Some(src) = p
            .source
            .tag
            .or_else(|| tag_of(&p.source.id))
            .filter(|t| *t != 0)
        else {
            continue;
        };
        for c in containers
            .iter()
            .filter(|c| c.app.as_deref() == Some(p.destination.id.as_str()))
        {
            match (p.destination.protocol, p.destination.ports) {
                (Protocol::Icmp, _) => {
                    e.allow_icmp
                        .insert(accept(Value::concat([src.into(), c.ip.into()])));
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
            e.allow_ports.insert(accept(Value::concat([
                tag.into(),
                ip.into(),
                Value::literal(proto),
                port_range(r),
            ])));
        }
    }
    e
}

/// Offsets in the outer UDP packet of a VXLAN datagram (`@th,BIT,LEN`, in bits): the inner
/// Ethernet type (8 bytes UDP + 8 VXLAN + 12 MACs) and the inner IPv4 source (+14 Ethernet
/// +12 into the IPv4 header). Inner frames with VLAN tags or IPv4 options are not special:
/// their type is not IPv4 (dropped), the source sits at the same place.
const INNER_ETHERTYPE: Expr = Expr::Raw {
    base: Base::Transport,
    offset: 224,
    len: 16,
};
const INNER_SOURCE: Expr = Expr::Raw {
    base: Base::Transport,
    offset: 336,
    len: 32,
};
const SADDR: Expr = Expr::Field("ip", "saddr");
const DADDR: Expr = Expr::Field("ip", "daddr");

/// `meta mark . ip daddr`: who sends (the source app's tag) to which container.
fn mark_daddr() -> Expr {
    Expr::concat([Meta::Mark.into(), DADDR])
}

/// `ip saddr . @th,336,32`: the VXLAN sender's underlay address and the inner source.
fn sender_inner_source() -> Expr {
    Expr::concat([SADDR, INNER_SOURCE])
}

/// The table's structure (no elements): written when the table is missing or its
/// fingerprint (comment) differs. `enforce = false` (labs) keeps marking and every
/// anti-forgery rule but lets all c2c traffic pass.
pub fn table(l: &Layout) -> Table {
    use drops::*;
    use sets::*;
    let (overlay, port, vtep, underlay) = (l.overlay, l.vxlan_port, &l.vtep, &l.underlay);
    // The internal DNS address (see `dns`) is a host service on port 53 only.
    let dns = crate::dns::ADDRESS;
    let (audit_deny, audit_chain) = crate::audit::render_rules(l);
    let last = if l.enforce {
        Rule::new("").counter().drop().comment(DEFAULT_DENY)
    } else {
        Rule::new("").counter().accept().comment(ENFORCEMENT_OFF)
    };
    let mark_ip = || SetKey::types(&["mark", "ipv4_addr"]);
    let t = Table::new(Family::Inet, TABLE)
        .with_comment(l.fingerprint())
        .with_set(Set::map(TAGS, SetKey::types(&["ipv4_addr"]), "mark"))
        .with_set(Set::new(VETHS, SetKey::types(&["ifname"])))
        .with_set(Set::new(
            CONTAINERS,
            SetKey::types(&["ipv4_addr", "ifname"]),
        ))
        .with_set(Set::new(CELLS, SetKey::types(&["ipv4_addr"])))
        .with_set(
            Set::new(
                CELL_SUBNETS,
                SetKey::Typeof(sender_inner_source().to_string()),
            )
            .with_flags(&[SetFlag::Interval]),
        )
        .with_set(
            Set::map(
                ALLOW_PORTS,
                SetKey::types(&["mark", "ipv4_addr", "inet_proto", "inet_service"]),
                "verdict",
            )
            .with_flags(&[SetFlag::Interval])
            .with_counter(),
        )
        .with_set(Set::map(ALLOW_ICMP, mark_ip(), "verdict").with_counter())
        .with_set(
            Set::new(DENIED, mark_ip())
                .with_size(DENIED_SIZE)
                .with_flags(&[SetFlag::Dynamic, SetFlag::Timeout])
                .with_timeout(DENIED_TIMEOUT)
                .with_counter(),
        )
        .with_chain(
            Chain::base(
                chains::PREROUTING,
                "filter",
                "prerouting",
                -150,
                Verdict::Accept,
            )
            .with_rules([
                Rule::new(format!(
                    "iifname @{VETHS} {} != @{CONTAINERS}",
                    Expr::concat([SADDR, Meta::Iifname.into()])
                ))
                .counter()
                .drop()
                .comment(SPOOFED),
                Rule::new(format!(
                    "iifname @{VETHS} meta mark set ip saddr map @{TAGS}"
                )),
                Rule::new(format!("iifname \"{vtep}\" ip saddr != {overlay}"))
                    .counter()
                    .drop()
                    .comment(DECAP_OUTSIDE),
            ]),
        )
        .with_chain(
            Chain::base(chains::INPUT, "filter", "input", 0, Verdict::Accept).with_rules([
                Rule::new(format!("udp dport {port} iifname != \"{underlay}\""))
                    .counter()
                    .drop()
                    .comment(VXLAN_NOT_UNDERLAY),
                Rule::new(format!("udp dport {port} ip saddr != @{CELLS}"))
                    .counter()
                    .drop()
                    .comment(VXLAN_UNLEASED),
                Rule::new(format!("udp dport {port} {INNER_ETHERTYPE} != 0x0800"))
                    .counter()
                    .drop()
                    .comment(VXLAN_NOT_IPV4),
                Rule::new(format!(
                    "udp dport {port} {} != @{CELL_SUBNETS}",
                    sender_inner_source()
                ))
                .counter()
                .drop()
                .comment(VXLAN_OUTSIDE_LEASE),
                Rule::new(format!(
                    "ip daddr {dns} meta l4proto . th dport != {{ tcp . 53, udp . 53 }}"
                ))
                .counter()
                .drop()
                .comment(DNS_OTHER),
            ]),
        )
        .with_chain(
            Chain::base(chains::FORWARD, "filter", "forward", 0, Verdict::Accept)
                .with_rules([
                    Rule::new(format!(
                        "iifname != \"{underlay}\" ip daddr != {overlay} udp dport {port}"
                    ))
                    .counter()
                    .drop()
                    .comment(TO_VXLAN_PORT),
                    Rule::new("ct state established,related").accept(),
                    Rule::new(format!("ip saddr {overlay} ip daddr @{CELLS}"))
                        .counter()
                        .drop()
                        .comment(TO_CELL),
                    Rule::new(format!("iifname \"{vtep}\" oifname \"{vtep}\""))
                        .counter()
                        .drop()
                        .comment(HAIRPIN),
                    Rule::new(format!("oifname \"{vtep}\"")).accept(),
                    Rule::new(format!("meta nfproto ipv6 oifname != @{VETHS}")).accept(),
                    Rule::new(format!("ip daddr != {overlay} oifname != @{VETHS}")).accept(),
                    Rule::new(format!(
                        "ip saddr != {overlay} iifname != \"{vtep}\" ct status dnat"
                    ))
                    .accept()
                    .comment(PORT_MAPPING),
                    Rule::new(format!("ip saddr != {overlay}"))
                        .counter()
                        .drop()
                        .comment(FROM_OUTSIDE),
                    Rule::new(format!(
                        "meta l4proto {{ tcp, udp }} {}",
                        Expr::concat([
                            Meta::Mark.into(),
                            DADDR,
                            Meta::L4proto.into(),
                            Expr::Field("th", "dport"),
                        ])
                        .vmap(ALLOW_PORTS)
                    )),
                    Rule::new(format!(
                        "meta l4proto icmp {}",
                        mark_daddr().vmap(ALLOW_ICMP)
                    )),
                    Rule::new(mark_daddr().update(DENIED)),
                ])
                .with_rules(audit_deny)
                .with_rule(last),
        );
    match audit_chain {
        Some(c) => t.with_chain(c),
        None => t,
    }
}

/// One transaction that makes the kernel's elements `new`: with `old` known, only the
/// difference; without (first sync after a start), flush and refill every set atomically.
pub fn render_diff(old: Option<&Elements>, new: &Elements) -> Transaction {
    let mut tx = Transaction::new();
    fill(&mut tx, old, new);
    tx
}

fn fill(tx: &mut Transaction, old: Option<&Elements>, new: &Elements) {
    let t = skeleton();
    match old {
        None => {
            for (name, set) in new.sets() {
                tx.flush(&t, name)
                    .expect("every set of Elements is in the table");
                tx.add_elements(&t, name, &set.iter().cloned().collect::<Vec<_>>());
            }
        }
        Some(old) => {
            for ((name, o), (_, n)) in old.sets().into_iter().zip(new.sets()) {
                let (gone, came) = changes(o, n);
                tx.delete_elements(&t, name, &gone);
                tx.add_elements(&t, name, &came);
            }
        }
    }
}

/// What is in `old` and not in `new` (gone), and in `new` and not in `old` (came), from one
/// ordered walk of both sets: each element is compared once, whatever the sets' size.
fn changes(old: &BTreeSet<Element>, new: &BTreeSet<Element>) -> (Vec<Element>, Vec<Element>) {
    use std::cmp::Ordering;
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (Some(a), Some(b)) => match a.cmp(b) {
                Ordering::Less => gone.extend(o.next().cloned()),
                Ordering::Greater => came.extend(n.next().cloned()),
                Ordering::Equal => {
                    o.next();
                    n.next();
                }
            },
            (Some(_), None) => {
                gone.extend(o.cloned());
                break;
            }
            (None, Some(_)) => {
                came.extend(n.cloned());
                break;
            }
            (None, None) => break,
        }
    }
    (gone, came)
}

/// The table's name and sets as a transaction refers to them (the rules do not matter).
fn skeleton() -> Table {
    table(&Layout {
        overlay: Ipv4Net::default(),
        vxlan_port: 0,
        vtep: String::new(),
        underlay: String::new(),
        enforce: true,
        audit: None,
    })
}

/// Writes the table structure if needed, then the elements, in one transaction each.
/// `applied` is what this process last applied (None after a start or a failure: then the
/// structure is checked and every set refilled in one transaction); `verify` checks the
/// structure even so (the periodic resync: a table someone deleted or replaced is written
/// again). A failed transaction changes nothing in the kernel (nft transactions are atomic),
/// so the kernel keeps enforcing what it had. Returns whether it wrote anything.
pub fn apply(
    kernel: &mut impl Kernel,
    layout: &Layout,
    applied: Option<&Elements>,
    new: &Elements,
    verify: bool,
) -> weft_kernel::Result<bool> {
    let table = table(layout);
    let fp = layout.fingerprint();
    // A terse listing (no elements) is cheap whatever the table's size.
    if (applied.is_none() || verify) && !kernel.table_matches(FAMILY, TABLE, &fp)? {
        // New or changed structure: the table and all its elements in one transaction, so
        // no packet ever sees the table without its elements.
        let mut tx = Transaction::new();
        tx.replace_table(&table);
        fill(&mut tx, None, new);
        kernel.apply(&tx)?;
        return Ok(true);
    }
    // No equality check first: the diff is one ordered walk of each set, and an empty one
    // means nothing changed.
    let diff = render_diff(applied, new);
    kernel.apply(&diff)?;
    Ok(!diff.is_empty())
}

/// Writes the table with `elements` only if there is no table at all (an agent starting on a
/// host that never had one, before the controller has answered): until the first full sync
/// nothing reaches a container but what the rules let through without policy (replies, port
/// mappings), and no VXLAN is accepted. An existing table, even an older one, is left as it
/// is: it keeps enforcing what an earlier run applied. Returns whether it wrote.
pub fn fence(
    kernel: &mut impl Kernel,
    layout: &Layout,
    elements: &Elements,
) -> weft_kernel::Result<bool> {
    if kernel.table_exists(FAMILY, TABLE)? {
        return Ok(false);
    }
    let mut tx = Transaction::new();
    tx.replace_table(&table(layout));
    fill(&mut tx, None, elements);
    kernel.apply(&tx)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_walk_both_sets_once_and_find_each_side() {
        let e = |k: u64| Element::key(Value::Int(k));
        let old: BTreeSet<Element> = [1, 2, 4, 7].into_iter().map(e).collect();
        let new: BTreeSet<Element> = [2, 3, 4, 8, 9].into_iter().map(e).collect();
        let (gone, came) = changes(&old, &new);
        assert_eq!(gone, vec![e(1), e(7)]);
        assert_eq!(came, vec![e(3), e(8), e(9)]);
        assert_eq!(changes(&new, &new), (vec![], vec![]));
        assert_eq!(changes(&BTreeSet::new(), &new).1.len(), 5);
        assert_eq!(changes(&old, &BTreeSet::new()).0.len(), 4);
    }
    use weft_api::model::Ports;

    fn texts(s: &BTreeSet<Element>) -> Vec<String> {
        s.iter().map(Element::to_string).collect()
    }

    /// The table's fingerprint and the script that writes it.
    fn render_table(l: &Layout) -> (String, String) {
        let t = table(l);
        (
            t.comment.clone().expect("a fingerprint"),
            t.replace_script(),
        )
    }

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

    /// The typed table renders, byte for byte, the script the agent wrote before the model
    /// (a `format!` string): the kernel gets the same rules.
    #[test]
    fn renders_the_same_script_as_before() {
        assert_eq!(
            table(&layout(true)).replace_script(),
            "add table inet weft-policy\n\
             delete table inet weft-policy\n\
             table inet weft-policy {\n\
             \x20 comment \"weft policy v4 overlay=10.255.0.0/16 vxlan=4789 vtep=weft.vtep underlay=eth0 enforce=true\"\n\
             \x20 map tags { type ipv4_addr : mark; }\n\
             \x20 set veths { type ifname; }\n\
             \x20 set containers { type ipv4_addr . ifname; }\n\
             \x20 set cells { type ipv4_addr; }\n\
             \x20 set cell_subnets { typeof ip saddr . @th,336,32; flags interval; }\n\
             \x20 map allow_ports { type mark . ipv4_addr . inet_proto . inet_service : verdict; flags interval; counter; }\n\
             \x20 map allow_icmp { type mark . ipv4_addr : verdict; counter; }\n\
             \x20 set denied { type mark . ipv4_addr; size 65536; flags dynamic,timeout; timeout 10m; counter; }\n\
             \x20 chain prerouting {\n\
             \x20   type filter hook prerouting priority -150; policy accept;\n\
             \x20   iifname @veths ip saddr . iifname != @containers counter drop comment \"spoofed source\"\n\
             \x20   iifname @veths meta mark set ip saddr map @tags\n\
             \x20   iifname \"weft.vtep\" ip saddr != 10.255.0.0/16 counter drop comment \"decapsulated from outside the overlay\"\n\
             \x20 }\n\
             \x20 chain input {\n\
             \x20   type filter hook input priority 0; policy accept;\n\
             \x20   udp dport 4789 iifname != \"eth0\" counter drop comment \"vxlan not from the underlay\"\n\
             \x20   udp dport 4789 ip saddr != @cells counter drop comment \"vxlan from an address without a lease\"\n\
             \x20   udp dport 4789 @th,224,16 != 0x0800 counter drop comment \"vxlan: inner packet not IPv4\"\n\
             \x20   udp dport 4789 ip saddr . @th,336,32 != @cell_subnets counter drop comment \"vxlan: inner source outside the sender's lease\"\n\
             \x20   ip daddr 169.254.0.2 meta l4proto . th dport != { tcp . 53, udp . 53 } counter drop comment \"to the DNS address, not port 53\"\n\
             \x20 }\n\
             \x20 chain forward {\n\
             \x20   type filter hook forward priority 0; policy accept;\n\
             \x20   iifname != \"eth0\" ip daddr != 10.255.0.0/16 udp dport 4789 counter drop comment \"to a VXLAN port\"\n\
             \x20   ct state established,related accept\n\
             \x20   ip saddr 10.255.0.0/16 ip daddr @cells counter drop comment \"container to a cell's underlay address\"\n\
             \x20   iifname \"weft.vtep\" oifname \"weft.vtep\" counter drop comment \"decapsulated back into the VTEP\"\n\
             \x20   oifname \"weft.vtep\" accept\n\
             \x20   meta nfproto ipv6 oifname != @veths accept\n\
             \x20   ip daddr != 10.255.0.0/16 oifname != @veths accept\n\
             \x20   ip saddr != 10.255.0.0/16 iifname != \"weft.vtep\" ct status dnat accept comment \"port mapping\"\n\
             \x20   ip saddr != 10.255.0.0/16 counter drop comment \"from outside the overlay\"\n\
             \x20   meta l4proto { tcp, udp } meta mark . ip daddr . meta l4proto . th dport vmap @allow_ports\n\
             \x20   meta l4proto icmp meta mark . ip daddr vmap @allow_icmp\n\
             \x20   update @denied { meta mark . ip daddr }\n\
             \x20   counter drop comment \"default deny\"\n\
             \x20 }\n\
             }\n"
        );
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
            texts(&e.allow_ports),
            vec![
                "11 . 10.255.1.1 . tcp . 8080-8080 : accept",
                "11 . 10.255.1.2 . tcp . 8080-8080 : accept"
            ]
        );
        assert!(texts(&e.tags).contains(&"10.255.1.1 : 10".to_string()));
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
            texts(&e.allow_ports),
            vec![
                "11 . 10.255.1.1 . tcp . 8000-8201 : accept",
                "11 . 10.255.1.1 . udp . 53-53 : accept"
            ]
        );
        assert_eq!(texts(&e.allow_icmp), vec!["12 . 10.255.1.1 : accept"]);
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
        let cells = vec![cell("198.18.0.2", "10.255.2.0/24")];
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
        let d = d.script();
        assert_eq!(
            d,
            "delete element inet weft-policy allow_ports { 11 . 10.255.1.1 . tcp . 80-80, 11 . 10.255.1.2 . tcp . 80-80 }\n\
             add element inet weft-policy allow_ports { 11 . 10.255.1.1 . tcp . 81-81 : accept, 11 . 10.255.1.2 . tcp . 81-81 : accept }\n"
        );
        assert!(render_diff(Some(&a), &a).is_empty());
        let full = render_diff(None, &a);
        let full = full.script();
        assert!(full
            .starts_with("flush map inet weft-policy tags\nadd element inet weft-policy tags {"));
        assert!(full.contains("flush map inet weft-policy allow_icmp\n"));
        assert!(full.contains("flush set inet weft-policy cells\n"));
        assert!(full.contains("add element inet weft-policy cells { 198.18.0.2 }"));
        assert!(full.contains(
            "add element inet weft-policy cell_subnets { 198.18.0.2 . 0x0aff0200-0x0aff02ff }"
        ));
    }

    fn cell(underlay: &str, subnet: &str) -> RemoteCell {
        RemoteCell {
            subnet: subnet.parse().unwrap(),
            vtep_ip: subnet.parse::<Ipv4Net>().unwrap().network(),
            vtep_mac: weft_kernel::MacAddr::new([2, 0, 0, 0, 0, 1]),
            underlay_ip: underlay.parse().unwrap(),
        }
    }

    fn layout(enforce: bool) -> Layout {
        Layout::test(enforce, None)
    }

    /// The rules of `chain` in a rendered table, one per line.
    fn chain<'a>(script: &'a str, chain: &str) -> Vec<&'a str> {
        let start = script
            .find(&format!("chain {chain} {{"))
            .unwrap_or_else(|| panic!("no chain {chain}"));
        script[start..]
            .lines()
            .skip(2) // `chain x {` and its `type ... hook ...` line
            .map(str::trim)
            .take_while(|l| *l != "}")
            .collect()
    }

    #[test]
    fn every_policy_path_ends_in_an_unconditional_drop() {
        let (_, t) = render_table(&layout(true));
        let fwd = chain(&t, "forward");
        // The last word: no match, nothing that can fail before it.
        assert_eq!(fwd.last(), Some(&"counter drop comment \"default deny\""));
        // Counting cannot decide: the update is a rule of its own, without a verdict.
        let update: Vec<&&str> = fwd.iter().filter(|r| r.contains("@denied")).collect();
        assert_eq!(update, vec![&"update @denied { meta mark . ip daddr }"]);
        // Every accept is a match (conntrack, a policy element, DNAT, not-ours), and a lookup
        // in a set that may miss a key (`veths`) only ever narrows an accept.
        for r in &fwd {
            if r.contains("accept") {
                assert!(
                    r.contains("ct state established")
                        || r.contains("vmap @allow_")
                        || r.contains("ct status dnat")
                        || r.starts_with("oifname \"weft.vtep\" accept")
                        || r.contains("oifname != @veths accept"),
                    "unexpected accept: {r}"
                );
            }
        }
        // The packets of an unknown veth (not in `veths` yet) to an overlay address still
        // reach the policy rules: only non-overlay destinations skip them.
        assert!(fwd.contains(&"ip daddr != 10.255.0.0/16 oifname != @veths accept"));
        // The denied set is bounded and times out.
        assert!(t.contains("size 65536; flags dynamic,timeout; timeout 10m;"));
    }

    #[test]
    fn containers_cannot_reach_the_vxlan_port_or_the_cells() {
        let (_, t) = render_table(&layout(true));
        let fwd = chain(&t, "forward");
        let input = chain(&t, "input");
        let pre = chain(&t, "prerouting");
        // Before conntrack's accept: no established flow to a VXLAN port either.
        let vx = fwd
            .iter()
            .position(|r| r.contains("to a VXLAN port"))
            .unwrap();
        let ct = fwd
            .iter()
            .position(|r| r.contains("ct state established"))
            .unwrap();
        assert!(vx < ct);
        assert_eq!(
            fwd[vx],
            "iifname != \"eth0\" ip daddr != 10.255.0.0/16 udp dport 4789 counter drop comment \"to a VXLAN port\""
        );
        assert!(fwd.contains(
            &"ip saddr 10.255.0.0/16 ip daddr @cells counter drop comment \"container to a cell's underlay address\""
        ));
        // VXLAN to this host: on the underlay interface only, from a leased address, IPv4
        // inside, from the sender's lease.
        assert_eq!(
            input,
            vec![
                "udp dport 4789 iifname != \"eth0\" counter drop comment \"vxlan not from the underlay\"",
                "udp dport 4789 ip saddr != @cells counter drop comment \"vxlan from an address without a lease\"",
                "udp dport 4789 @th,224,16 != 0x0800 counter drop comment \"vxlan: inner packet not IPv4\"",
                "udp dport 4789 ip saddr . @th,336,32 != @cell_subnets counter drop comment \"vxlan: inner source outside the sender's lease\"",
                "ip daddr 169.254.0.2 meta l4proto . th dport != { tcp . 53, udp . 53 } counter drop comment \"to the DNS address, not port 53\"",
            ]
        );
        assert!(pre.contains(
            &"iifname \"weft.vtep\" ip saddr != 10.255.0.0/16 counter drop comment \"decapsulated from outside the overlay\""
        ));
        // From outside the overlay: replies and port mappings only.
        let dnat = fwd
            .iter()
            .position(|r| r.contains("ct status dnat"))
            .unwrap();
        let outside = fwd
            .iter()
            .position(|r| r.contains("from outside the overlay"))
            .unwrap();
        assert_eq!(outside, dnat + 1);
        // Every dropping rule has a counter and a comment the metrics know.
        for r in fwd.iter().chain(&input).chain(&pre) {
            if r.contains(" drop") {
                assert!(
                    drops::ALL
                        .iter()
                        .any(|d| r.ends_with(&format!("drop comment \"{d}\""))),
                    "{r}"
                );
                assert!(r.contains("counter"), "{r}");
            }
        }
    }

    #[test]
    fn unmarked_sources_are_never_allowed() {
        let (mut tags, cs) = setup();
        tags.insert("app-zero".into(), 0);
        let e = elements(
            &[pol("app-zero", "app-a", Protocol::Tcp, Some((80, 80)))],
            &tags,
            &cs,
            &[],
        );
        assert!(e.allow_ports.is_empty(), "tag 0 is no identity");
    }

    #[test]
    fn cell_subnets_bind_each_lease_to_its_underlay_address() {
        let (tags, cs) = setup();
        let e = elements(
            &[],
            &tags,
            &cs,
            &[
                cell("198.18.0.2", "10.255.2.0/24"),
                cell("198.18.0.3", "10.255.3.128/25"),
            ],
        );
        assert_eq!(
            texts(&e.cell_subnets),
            vec![
                "198.18.0.2 . 0x0aff0200-0x0aff02ff",
                "198.18.0.3 . 0x0aff0380-0x0aff03ff"
            ]
        );
    }

    #[test]
    fn enforcement_switch_changes_the_default_verdict() {
        let (fp1, on) = render_table(&layout(true));
        let (fp2, off) = render_table(&layout(false));
        assert_eq!(
            chain(&on, "forward").last(),
            Some(&"counter drop comment \"default deny\"")
        );
        assert_eq!(
            chain(&off, "forward").last(),
            Some(&"counter accept comment \"enforcement off\"")
        );
        // The anti-forgery rules stay.
        assert_eq!(chain(&on, "input"), chain(&off, "input"));
        assert!(off.contains("from outside the overlay"));
        assert_ne!(fp1, fp2);
    }
}
