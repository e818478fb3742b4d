//! Host ports: the port mappings of every weft network on a host, bridge and overlay mode,
//! in one nftables table per network namespace. The kernel's table is the registry; no
//! file anywhere says who holds a port.
//!
//! ```text
//! table inet weft-ports
//!   map pm_any  proto . hostPort          -> containerIP . containerPort  (every host address)
//!   map pm_ip   hostIP . proto . hostPort -> containerIP . containerPort  (one host address)
//!               each element's comment names its holder: "<network>/<containerID>/<ifname>"
//!   chain prerouting  (nat)    DNAT of local destinations through the maps (one address first)
//!   chain output      (nat)    the same for the host's own connections (127.0.0.1 too)
//!   chain postrouting (nat)    masquerade what came from 127.0.0.0/8 (a container cannot answer it)
//!   chain guard       (filter) drop loopback destinations arriving from anywhere but lo:
//!                              route_localnet, which DNAT from 127.0.0.1 needs on the
//!                              container's side, must not let a container reach the host's
//!                              127.0.0.1 services
//! ```
//!
//! Invariants:
//! - A host port (protocol, port, address) has one holder across every network and mode;
//!   "every address" overlaps each address (127.0.0.1, the gateway, ...). A claim that
//!   overlaps another holder's is refused with code 103 naming that holder.
//! - Every change is read, decide ([`decide`], pure), write, under an exclusive lock on the
//!   network namespace itself ([`weft_kernel::netns::Netns::lock`]): two ADDs of different
//!   networks cannot both take a port, and the lock leaves no file behind.
//! - An element exists only while its holder's record does (records are written before and
//!   removed after).
//! - A change forgets the conntrack entries that would keep the old path alive
//!   ([`forget_flows`]): a datagram flow does not keep going to the port's former holder.
//!
//! Port mappings of older versions lived in each bridge network's own table, without a
//! holder: when this table is created they are moved here (holder unknown, matched by the
//! container address they lead to) and the old maps are flushed.

mod flows;

pub use flows::{forget_flows, leads_to_removed, leaves_flows, misses_added};

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use weft_kernel::netns::Netns;
use weft_kernel::nft::{self, Chain, Family, Nft, Rule, Set, SetKey, Table, Transaction, Value};
use weft_kernel::Netlink;

use crate::config;
use crate::spec::{code, CniError};
use crate::store::Owner;
use weft_api::records::{HostLease, Plan, PortMapping};

/// The table (`inet weft-ports`), its maps and chains, and the guard rule's comment.
pub const TABLE: &str = "weft-ports";
pub const FAMILY: Family = Family::Inet;
/// Host ports on every host address: `proto . port -> ip . port`.
pub const PM_ANY: &str = "pm_any";
/// Host ports on one host address: `hostIP . proto . port -> ip . port`.
pub const PM_IP: &str = "pm_ip";
pub mod chains {
    pub const PREROUTING: &str = "prerouting";
    pub const OUTPUT: &str = "output";
    pub const POSTROUTING: &str = "postrouting";
    pub const GUARD: &str = "guard";
}
/// The comment (and counter) of the guard's drop.
pub const LOOPBACK_GUARD: &str = "loopback destination from outside";

/// Who holds a mapping: one attachment of one network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Holder {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Holder {
        Holder {
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The holder of `owner`'s mappings in `network`.
    pub fn of(network: &str, owner: &Owner) -> Holder {
        Holder::new(network, &owner.container_id, &owner.ifname)
    }

    /// The element comment (none of the three parts can hold '/' or '"').
    fn comment(&self) -> String {
        format!("{}/{}/{}", self.network, self.container_id, self.ifname)
    }

    fn parse(s: &str) -> Option<Holder> {
        let mut p = s.split('/');
        let (n, c, i) = (p.next()?, p.next()?, p.next()?);
        (p.next().is_none() && ![n, c, i].contains(&"")).then(|| Holder::new(n, c, i))
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "container {} (interface {}, network {})",
            self.container_id, self.ifname, self.network
        )
    }
}

/// A host port: protocol, port, and one address or every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub proto: String,
    pub port: u16,
    pub host_ip: Option<Ipv4Addr>,
}

impl Key {
    /// Could one packet match both?
    pub fn overlaps(&self, other: &Key) -> bool {
        self.proto == other.proto
            && self.port == other.port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }

    fn proto_number(&self) -> u8 {
        match self.proto.as_str() {
            "tcp" => 6,
            "udp" => 17,
            _ => 132, // sctp: config admits nothing else
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{}/{} on {ip}", self.port, self.proto),
            None => write!(f, "{}/{} on every host address", self.port, self.proto),
        }
    }
}

/// One element of the table: a host port, where it leads, who holds it (`None`: mapped by
/// a version that did not record holders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Key,
    pub to: (Ipv4Addr, u16),
    pub holder: Option<Holder>,
}

impl Element {
    /// The element for a mapping of `holder`'s container at `to`. Port mappings are IPv4
    /// (config refuses IPv6 host addresses; ADD refuses mappings without an IPv4 address).
    pub fn of(pm: &PortMapping, to: IpAddr, holder: &Holder) -> Option<Element> {
        let IpAddr::V4(to) = to else { return None };
        let host_ip = match pm.host_ip {
            None => None,
            Some(IpAddr::V4(ip)) => Some(ip),
            Some(IpAddr::V6(_)) => return None,
        };
        Some(Element {
            key: Key {
                proto: pm.protocol.clone(),
                port: pm.host_port,
                host_ip,
            },
            to: (to, pm.container_port),
            holder: Some(holder.clone()),
        })
    }

    fn map(&self) -> &'static str {
        if self.key.host_ip.is_some() {
            PM_IP
        } else {
            PM_ANY
        }
    }

    /// The map element: `[hostIP .] proto . port [comment "holder"] : ip . port`.
    pub fn to_nft(&self) -> nft::Element {
        let mut key: Vec<Value> = self.key.host_ip.map(Value::from).into_iter().collect();
        key.push(Value::literal(&self.key.proto));
        key.push(self.key.port.into());
        let to = Value::concat([self.to.0.into(), self.to.1.into()]);
        let e = nft::Element::pair(Value::concat(key), to);
        match &self.holder {
            Some(h) => e.with_comment(h.comment()),
            None => e,
        }
    }

    /// An element of `map` ([`PM_ANY`] or [`PM_IP`]) as the kernel lists it; `None` when
    /// it is not one weft writes.
    pub fn from_nft(map: &str, e: &nft::Element) -> Option<Element> {
        let v4 = |v: &Value| match v.as_ip()? {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        };
        let port = |v: &Value| v.as_int().and_then(|n| u16::try_from(n).ok());
        let (host_ip, proto, p) = match (map, e.key.parts()) {
            (PM_ANY, [proto, p]) => (None, proto, p),
            (PM_IP, [ip, proto, p]) => (Some(v4(ip)?), proto, p),
            _ => return None,
        };
        let to = match e.value.as_ref()?.parts() {
            [ip, p] => (v4(ip)?, port(p)?),
            _ => return None,
        };
        Some(Element {
            key: Key {
                proto: proto.as_str()?.to_string(),
                port: port(p)?,
                host_ip,
            },
            to,
            holder: e.comment.as_deref().and_then(Holder::parse),
        })
    }

    fn holder_text(&self) -> String {
        match &self.holder {
            Some(h) => h.to_string(),
            None => format!(
                "the container at {}:{} (mapped by an older weft-cni)",
                self.to.0, self.to.1
            ),
        }
    }
}

/// A host port weft keeps for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub key: Key,
    /// Says what holds it ("the overlay's VXLAN port (VTEP weft.vtep)").
    pub what: String,
}

/// What to delete and create in the table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    pub remove: Vec<Element>,
    pub add: Vec<Element>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// The elements a plan's port mappings ask for.
pub fn wanted(plan: &Plan, holder: &Holder) -> Vec<Element> {
    plan.port_mappings()
        .iter()
        .filter_map(|(pm, to)| Element::of(pm, *to, holder))
        .collect()
}

/// The container's IPv4 addresses: elements of older versions (no holder) that lead there
/// are its.
pub fn legacy_targets(plan: &Plan) -> Vec<Ipv4Addr> {
    plan.addresses()
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// Host ports weft keeps for itself: the VTEP's UDP port (a container mapping it would
/// receive the overlay's packets, and could forge them). Overlay mode: the lease's VTEP
/// (VXLAN's port while the agent has not made it yet); bridge mode on a host that also runs
/// the agent: the VTEP of the default name, if there is one.
pub async fn reserved(
    lease: Option<&HostLease>,
    host: &Netlink,
) -> Result<Vec<Reserved>, CniError> {
    let (vtep, fallback) = match lease {
        Some(l) => (l.vtep.as_str(), Some(weft_kernel::link::VXLAN_PORT)),
        None => (config::DEFAULT_VTEP, None),
    };
    let port = host.vxlan_port(vtep).await?.or(fallback);
    Ok(port
        .map(|port| Reserved {
            key: Key {
                proto: "udp".into(),
                port,
                host_ip: None,
            },
            what: format!("the overlay's VXLAN port (VTEP {vtep})"),
        })
        .into_iter()
        .collect())
}

/// Pure: what makes `holder`'s elements exactly `want`, given the table's `elements`.
/// Elements without a holder that lead to one of `legacy_targets` (the container's
/// addresses) count as `holder`'s. Refused (code 103, naming the holder) when a wanted key
/// overlaps another holder's or a reserved one.
pub fn decide(
    elements: &[Element],
    holder: &Holder,
    legacy_targets: &[Ipv4Addr],
    want: &[Element],
    reserved: &[Reserved],
) -> Result<Change, CniError> {
    let mine = |e: &Element| match &e.holder {
        Some(h) => h == holder,
        None => legacy_targets.contains(&e.to.0),
    };
    for w in want {
        if let Some(r) = reserved.iter().find(|r| r.key.overlaps(&w.key)) {
            return Err(CniError::new(
                code::PORT_IN_USE,
                format!("host port {} is {}", w.key, r.what),
            ));
        }
        if let Some(e) = elements.iter().find(|e| !mine(e) && e.key.overlaps(&w.key)) {
            let what = if e.key == w.key {
                format!("host port {} is held by {}", w.key, e.holder_text())
            } else {
                format!(
                    "host port {} overlaps {}, held by {}",
                    w.key,
                    e.key,
                    e.holder_text()
                )
            };
            return Err(CniError::new(code::PORT_IN_USE, what));
        }
    }
    Ok(Change {
        remove: elements
            .iter()
            .filter(|e| mine(e) && !want.contains(e))
            .cloned()
            .collect(),
        add: want
            .iter()
            .filter(|w| !elements.contains(w))
            .cloned()
            .collect(),
    })
}

/// The table's structure (written once, when missing; never replaced: its maps are the
/// registry).
pub fn table() -> Table {
    let dnat = || {
        [
            Rule::new(format!(
                "fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @{PM_IP}"
            )),
            Rule::new(format!(
                "fib daddr type local dnat ip to meta l4proto . th dport map @{PM_ANY}"
            )),
        ]
    };
    let to = "ipv4_addr . inet_service";
    let accept = nft::Verdict::Accept;
    let masquerade = Chain::base(
        chains::POSTROUTING,
        "nat",
        "postrouting",
        100,
        accept.clone(),
    );
    Table::new(FAMILY, TABLE)
        .with_comment("weft host ports v1")
        .with_set(Set::map(
            PM_ANY,
            SetKey::types(&["inet_proto", "inet_service"]),
            to,
        ))
        .with_set(Set::map(
            PM_IP,
            SetKey::types(&["ipv4_addr", "inet_proto", "inet_service"]),
            to,
        ))
        .with_chain(
            Chain::base(
                chains::PREROUTING,
                "nat",
                "prerouting",
                -100,
                accept.clone(),
            )
            .with_rules(dnat()),
        )
        .with_chain(
            Chain::base(chains::OUTPUT, "nat", "output", -100, accept.clone()).with_rules(dnat()),
        )
        .with_chain(
            masquerade.with_rule(Rule::new("ct status dnat ip saddr 127.0.0.0/8 masquerade")),
        )
        .with_chain(
            Chain::base(chains::GUARD, "filter", "prerouting", -150, accept).with_rule(
                Rule::new("iifname != \"lo\" ip daddr 127.0.0.0/8")
                    .counter()
                    .drop()
                    .comment(LOOPBACK_GUARD),
            ),
        )
}

/// Adds to `tx` what applies `c` (deletions first: a moved key is deleted, then created).
fn change(tx: &mut Transaction, c: &Change) {
    let t = table();
    for e in &c.remove {
        tx.delete_elements(&t, e.map(), &[e.to_nft()]);
    }
    for e in &c.add {
        tx.create_elements(&t, e.map(), &[e.to_nft()]);
    }
}

/// The host-port elements of maps `pm_ip` and `pm_any` among `sets`.
fn elements_of(sets: &[Set]) -> Vec<Element> {
    [PM_IP, PM_ANY]
        .into_iter()
        .flat_map(|map| {
            let set = sets.iter().find(|s| s.name == map);
            set.into_iter()
                .flat_map(|s| &s.elements)
                .filter_map(move |e| Element::from_nft(map, e))
        })
        .collect()
}

/// The table's elements, `None` when there is no table.
fn read(nft: &mut Nft) -> Result<Option<Vec<Element>>, CniError> {
    Ok(nft.list_sets(FAMILY, TABLE)?.map(|sets| elements_of(&sets)))
}

/// Creates the table, moving in the mappings older versions kept in the bridge networks'
/// own tables (`inet weft-<network>`, maps `pm_any`/`pm_ip`, no holders), and flushing
/// those maps, in one transaction. Returns the table's elements.
fn create(nft: &mut Nft) -> Result<Vec<Element>, CniError> {
    let tables: Vec<String> = nft
        .list_tables(FAMILY)?
        .into_iter()
        .filter(|n| n.starts_with("weft-") && n != TABLE && n != "weft-policy")
        .collect();
    let mut moved: Vec<Element> = Vec::new();
    let mut tx = Transaction::new();
    tx.add_table(&table());
    for t in &tables {
        let Some(sets) = nft.list_sets(FAMILY, t)? else {
            continue;
        };
        let old = Table {
            sets,
            ..Table::new(FAMILY, t.as_str())
        };
        for map in [PM_IP, PM_ANY] {
            let Some(set) = old.set(map) else {
                continue;
            };
            for e in set
                .elements
                .iter()
                .filter_map(|e| Element::from_nft(map, e))
            {
                // The old code let two networks map the same port: keep the first.
                if moved.iter().any(|m| m.key == e.key) {
                    tracing::warn!(port = %e.key, to = %e.to.0, table = %t,
                        "dropping a host port mapping an older weft-cni gave twice");
                    continue;
                }
                moved.push(e);
            }
            tx.flush(&old, map)?;
        }
    }
    change(
        &mut tx,
        &Change {
            remove: Vec::new(),
            add: moved.clone(),
        },
    );
    nft.apply(&tx)?;
    if !moved.is_empty() {
        tracing::info!(
            mappings = moved.len(),
            "host port mappings of an older weft-cni moved into {TABLE}"
        );
    }
    Ok(moved)
}

/// Makes sure the table exists when an older version's tables may still hold host ports
/// (called before a network's own table is rewritten, which would drop them).
pub fn adopt_older() -> Result<(), CniError> {
    let _lock = Netns::current()?.lock()?;
    let mut nft = Nft::new()?;
    if read(&mut nft)?.is_none() {
        create(&mut nft)?;
    }
    Ok(())
}

/// Makes `holder`'s host ports exactly `want` (see [`decide`]) under the network
/// namespace's lock. Returns what changed; refused with 103 (nothing changed) on a
/// conflict. Creates the table only when something is to be added.
pub fn sync(
    holder: &Holder,
    legacy_targets: &[Ipv4Addr],
    want: &[Element],
    reserved: &[Reserved],
) -> Result<Change, CniError> {
    let _lock = Netns::current()?.lock()?;
    let mut nft = Nft::new()?;
    let elements = match read(&mut nft)? {
        Some(e) => e,
        None if want.is_empty() => return Ok(Change::default()),
        None => create(&mut nft)?,
    };
    let c = decide(&elements, holder, legacy_targets, want, reserved)?;
    let mut tx = Transaction::new();
    self::change(&mut tx, &c);
    nft.apply(&tx)?;
    Ok(c)
}

/// Removes the host ports of `network` whose holder is not in `keep` (GC).
pub fn prune(network: &str, keep: &HashSet<Holder>) -> Result<(), CniError> {
    let _lock = Netns::current()?.lock()?;
    let mut nft = Nft::new()?;
    let Some(elements) = read(&mut nft)? else {
        return Ok(());
    };
    let remove: Vec<Element> = elements
        .into_iter()
        .filter(|e| {
            e.holder
                .as_ref()
                .is_some_and(|h| h.network == network && !keep.contains(h))
        })
        .collect();
    if !remove.is_empty() {
        tracing::info!(
            mappings = remove.len(),
            "gc: removing host ports of stale attachments"
        );
        let mut tx = Transaction::new();
        change(
            &mut tx,
            &Change {
                remove,
                add: Vec::new(),
            },
        );
        nft.apply(&tx)?;
    }
    Ok(())
}

/// `holder`'s elements as the kernel has them.
fn held(holder: &Holder) -> Result<Vec<Element>, CniError> {
    let mut nft = Nft::new()?;
    Ok(read(&mut nft)?
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.holder.as_ref() == Some(holder))
        .collect())
}

/// CHECK: every host port the plan maps is in the table, held by `holder`.
pub fn check(plan: &Plan, holder: &Holder) -> Result<(), CniError> {
    let want = wanted(plan, holder);
    if want.is_empty() {
        return Ok(());
    }
    let held = held(holder)?;
    match want.iter().find(|w| !held.contains(w)) {
        Some(w) => Err(CniError::mismatch(format!(
            "port mapping {} -> {}:{} is missing",
            w.key, w.to.0, w.to.1
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn key(proto: &str, port: u16, ip: Option<&str>) -> Key {
        Key {
            proto: proto.into(),
            port,
            host_ip: ip.map(|s| s.parse().unwrap()),
        }
    }

    pub(super) fn el(k: Key, to: &str, port: u16, h: Option<&Holder>) -> Element {
        Element {
            key: k,
            to: (to.parse().unwrap(), port),
            holder: h.cloned(),
        }
    }

    #[test]
    fn every_address_overlaps_each_address() {
        let any = key("tcp", 8080, None);
        for other in [
            key("tcp", 8080, None),
            key("tcp", 8080, Some("127.0.0.1")),
            key("tcp", 8080, Some("10.88.0.1")),
        ] {
            assert!(any.overlaps(&other) && other.overlaps(&any), "{other}");
        }
        let lo = key("tcp", 8080, Some("127.0.0.1"));
        assert!(!lo.overlaps(&key("tcp", 8080, Some("10.88.0.1"))));
        assert!(!any.overlaps(&key("udp", 8080, None)));
        assert!(!any.overlaps(&key("tcp", 8081, None)));
    }

    #[test]
    fn conflicts_name_the_holder_and_change_nothing() {
        let a = Holder::new("net1", "ca", "eth0");
        let b = Holder::new("net2", "cb", "eth1");
        let table = vec![el(key("tcp", 8080, None), "10.88.0.2", 80, Some(&a))];
        for k in [key("tcp", 8080, Some("127.0.0.1")), key("tcp", 8080, None)] {
            let want = vec![el(k.clone(), "10.89.0.2", 80, Some(&b))];
            let e = decide(&table, &b, &[], &want, &[]).unwrap_err();
            assert_eq!(e.code, code::PORT_IN_USE);
            for part in ["ca", "eth0", "net1", "8080/tcp"] {
                assert!(e.msg.contains(part), "{k}: {}", e.msg);
            }
        }
        // A reserved port is refused the same way.
        let r = Reserved {
            key: key("udp", 4789, None),
            what: "the overlay's VXLAN port".into(),
        };
        let want = vec![el(
            key("udp", 4789, Some("10.0.0.1")),
            "10.89.0.2",
            1,
            Some(&b),
        )];
        let e = decide(&[], &b, &[], &want, &[r]).unwrap_err();
        assert!(e.msg.contains("VXLAN"), "{}", e.msg);
        // An element without a holder is someone's too.
        let old = vec![el(key("udp", 53, None), "10.88.0.9", 53, None)];
        let want = vec![el(key("udp", 53, None), "10.89.0.2", 53, Some(&b))];
        let e = decide(&old, &b, &[], &want, &[]).unwrap_err();
        assert!(e.msg.contains("10.88.0.9:53"), "{}", e.msg);
    }

    #[test]
    fn changes_touch_only_the_holders_elements() {
        let a = Holder::new("net1", "ca", "eth0");
        let b = Holder::new("net1", "cb", "eth0");
        let table = vec![
            el(key("tcp", 8080, None), "10.88.0.2", 80, Some(&a)),
            el(key("tcp", 9090, None), "10.88.0.2", 90, Some(&a)),
            el(key("tcp", 7070, None), "10.88.0.3", 70, Some(&b)),
            // An older version's element leading to a's address.
            el(key("udp", 53, None), "10.88.0.2", 53, None),
        ];
        // a keeps 8080, moves 9090 to another container port, drops udp 53.
        let want = vec![
            el(key("tcp", 8080, None), "10.88.0.2", 80, Some(&a)),
            el(key("tcp", 9090, None), "10.88.0.2", 91, Some(&a)),
        ];
        let legacy: Vec<Ipv4Addr> = vec!["10.88.0.2".parse().unwrap()];
        let c = decide(&table, &a, &legacy, &want, &[]).unwrap();
        assert_eq!(c.remove, vec![table[1].clone(), table[3].clone()]);
        assert_eq!(c.add, vec![want[1].clone()]);
        // Nothing wanted: everything of a goes, b's stays.
        let c = decide(&table, &a, &legacy, &[], &[]).unwrap();
        assert_eq!(c.remove.len(), 3);
        assert!(c.add.is_empty());
        // The same again changes nothing.
        let c = decide(&table[..1], &a, &[], &want[..1], &[]).unwrap();
        assert!(c.is_empty());
        let mut tx = Transaction::new();
        change(&mut tx, &decide(&table, &a, &legacy, &want, &[]).unwrap());
        assert_eq!(
            tx.script(),
            "delete element inet weft-ports pm_any { tcp . 9090 }\n\
             delete element inet weft-ports pm_any { udp . 53 }\n\
             create element inet weft-ports pm_any { tcp . 9090 comment \"net1/ca/eth0\" : 10.88.0.2 . 91 }\n"
        );
    }

    /// Elements as the kernel's listing gives them back (weft_kernel's typed reader: numbers
    /// as numbers, the holder in the comment) read as what weft wrote.
    #[test]
    fn reads_the_kernels_elements() {
        let a = el(
            key("tcp", 8080, None),
            "10.0.0.1",
            80,
            Some(&Holder::new("n1", "c1", "eth0")),
        );
        let listed = nft::Element::pair(
            Value::concat([Value::literal("tcp"), Value::Int(8080)]),
            Value::concat([Value::literal("10.0.0.1"), Value::Int(80)]),
        )
        .with_comment("n1/c1/eth0");
        assert_eq!(Element::from_nft(PM_ANY, &listed), Some(a.clone()));
        assert_eq!(Element::from_nft(PM_ANY, &a.to_nft()), Some(a.clone()));
        // The wrong map's shape, or a holder weft did not write, is not taken as one.
        assert_eq!(Element::from_nft(PM_IP, &listed), None);
        let b = el(key("udp", 53, Some("127.0.0.1")), "10.0.0.3", 53, None);
        assert_eq!(
            b.to_nft().to_string(),
            "127.0.0.1 . udp . 53 : 10.0.0.3 . 53"
        );
        assert_eq!(Element::from_nft(PM_IP, &b.to_nft()), Some(b));
        let odd = listed.clone().with_comment("a/b");
        assert_eq!(Element::from_nft(PM_ANY, &odd).and_then(|e| e.holder), None);
        assert_eq!(Holder::parse("a/b"), None);
        assert_eq!(Holder::parse("a/b/c/d"), None);
        let sets = table()
            .sets
            .into_iter()
            .map(|s| match s.name.as_str() {
                PM_ANY => s.with_elements([listed.clone()]),
                _ => s,
            })
            .collect::<Vec<_>>();
        assert_eq!(elements_of(&sets), vec![a]);
    }

    #[test]
    fn table_script_has_the_guard_and_no_elements() {
        let mut tx = Transaction::new();
        tx.add_table(&table());
        let t = tx.script();
        // What the plugin wrote before the typed model, minus its `add table` line (a
        // `table` block adds the table too).
        assert_eq!(
            t,
            "table inet weft-ports {\n  comment \"weft host ports v1\"\n\
             \x20 map pm_any { type inet_proto . inet_service : ipv4_addr . inet_service; }\n\
             \x20 map pm_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }\n\
             \x20 chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n\
             \x20   fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pm_ip\n\
             \x20   fib daddr type local dnat ip to meta l4proto . th dport map @pm_any\n  }\n\
             \x20 chain output {\n    type nat hook output priority -100; policy accept;\n\
             \x20   fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pm_ip\n\
             \x20   fib daddr type local dnat ip to meta l4proto . th dport map @pm_any\n  }\n\
             \x20 chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n\
             \x20   ct status dnat ip saddr 127.0.0.0/8 masquerade\n  }\n\
             \x20 chain guard {\n    type filter hook prerouting priority -150; policy accept;\n\
             \x20   iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop comment \"loopback destination from outside\"\n  }\n}\n"
        );
        assert!(t.contains("iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop"));
        assert!(t.contains("dnat ip to ip daddr . meta l4proto . th dport map @pm_ip"));
        assert!(!t.contains("delete table"), "the table is never replaced");
    }
}
