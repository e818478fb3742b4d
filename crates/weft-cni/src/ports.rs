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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;
use weft_kernel::conntrack::{self, Flow};
use weft_kernel::netns::Netns;
use weft_kernel::nft::Nft;
use weft_kernel::Netlink;

use crate::config;
use crate::spec::{code, CniError};
use crate::store::Owner;
use weft_api::records::{HostLease, Plan, PortMapping};

pub const TABLE: &str = "weft-ports";

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
            "pm_ip"
        } else {
            "pm_any"
        }
    }

    fn key_text(&self) -> String {
        match self.key.host_ip {
            Some(ip) => format!("{ip} . {} . {}", self.key.proto, self.key.port),
            None => format!("{} . {}", self.key.proto, self.key.port),
        }
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

/// The table's structure (written once, when missing).
fn render_table() -> String {
    let dnat = [
        "fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pm_ip",
        "fib daddr type local dnat ip to meta l4proto . th dport map @pm_any",
    ];
    let mut s = format!(
        "add table inet {TABLE}\n\
         table inet {TABLE} {{\n  comment \"weft host ports v1\"\n\
         \x20 map pm_any {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n\
         \x20 map pm_ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}\n"
    );
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        s += &format!(
            "  chain {chain} {{\n    type nat hook {hook} priority -100; policy accept;\n"
        );
        for r in dnat {
            s += &format!("    {r}\n");
        }
        s += "  }\n";
    }
    s += "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n\
          \x20   ct status dnat ip saddr 127.0.0.0/8 masquerade\n  }\n\
          \x20 chain guard {\n    type filter hook prerouting priority -150; policy accept;\n\
          \x20   iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop comment \"loopback destination from outside\"\n  }\n}\n";
    s
}

/// One transaction applying `c` (deletions first: a moved key is deleted, then created).
fn render_change(c: &Change) -> String {
    let mut s = String::new();
    for e in &c.remove {
        s += &format!(
            "delete element inet {TABLE} {} {{ {} }}\n",
            e.map(),
            e.key_text()
        );
    }
    for e in &c.add {
        let comment = e
            .holder
            .as_ref()
            .map(|h| format!(" comment \"{}\"", h.comment()))
            .unwrap_or_default();
        s += &format!(
            "create element inet {TABLE} {} {{ {}{comment} : {} . {} }}\n",
            e.map(),
            e.key_text(),
            e.to.0,
            e.to.1
        );
    }
    s
}

fn as_u16(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn as_ip(v: &Value) -> Option<Ipv4Addr> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// The elements of `map` (`pm_any` or `pm_ip`) in one `nft -j list` answer.
fn parse_map(json: &Value, map: &str) -> Vec<Element> {
    let maps = json["nftables"].as_array().into_iter().flatten();
    let elems = maps
        .filter_map(|o| o.get("map"))
        .filter(|m| m["name"] == map)
        .filter_map(|m| m["elem"].as_array())
        .flatten();
    let mut out = Vec::new();
    for pair in elems {
        let (Some(k), Some(v)) = (pair.get(0), pair.get(1)) else {
            continue;
        };
        // A key with a comment is {"elem": {"val": KEY, "comment": "..."}}.
        let (k, comment) = match k.get("elem") {
            Some(e) => (&e["val"], e["comment"].as_str()),
            None => (k, None),
        };
        let key = k["concat"].as_array();
        let to = v["concat"].as_array();
        let (Some(key), Some(to)) = (key, to) else {
            continue;
        };
        let parsed = match (map, key.as_slice()) {
            ("pm_any", [proto, port]) => proto
                .as_str()
                .zip(as_u16(port))
                .map(|(p, port)| (p, port, None)),
            ("pm_ip", [ip, proto, port]) => as_ip(ip)
                .zip(proto.as_str())
                .zip(as_u16(port))
                .map(|((ip, p), port)| (p, port, Some(ip))),
            _ => None,
        };
        let target = match to.as_slice() {
            [ip, port] => as_ip(ip).zip(as_u16(port)),
            _ => None,
        };
        if let (Some((proto, port, host_ip)), Some(to)) = (parsed, target) {
            out.push(Element {
                key: Key {
                    proto: proto.to_string(),
                    port,
                    host_ip,
                },
                to,
                holder: comment.and_then(Holder::parse),
            });
        }
    }
    out
}

fn listing(nft: &mut Nft, what: &str) -> Result<Option<Value>, CniError> {
    match nft.run_json(&format!("list {what}")) {
        Ok(out) => serde_json::from_str(&out)
            .map(Some)
            .map_err(|e| CniError::new(code::KERNEL, format!("nftables listing of {what}: {e}"))),
        Err(weft_kernel::Error::Nft(m)) if m.contains("No such file") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The table's elements, `None` when there is no table.
fn read(nft: &mut Nft) -> Result<Option<Vec<Element>>, CniError> {
    Ok(listing(nft, &format!("table inet {TABLE}"))?.map(|j| {
        let mut v = parse_map(&j, "pm_ip");
        v.extend(parse_map(&j, "pm_any"));
        v
    }))
}

/// Creates the table, moving in the mappings older versions kept in the bridge networks'
/// own tables (`inet weft-<network>`, maps `pm_any`/`pm_ip`, no holders), and flushing
/// those maps, in one transaction. Returns the table's elements.
fn create(nft: &mut Nft) -> Result<Vec<Element>, CniError> {
    let tables: Vec<String> = listing(nft, "tables inet")?
        .iter()
        .flat_map(|j| j["nftables"].as_array().cloned().unwrap_or_default())
        .filter_map(|o| o["table"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("weft-") && n != TABLE && n != "weft-policy")
        .collect();
    let mut moved: Vec<Element> = Vec::new();
    let mut script = render_table();
    for t in &tables {
        for map in ["pm_ip", "pm_any"] {
            let Some(j) = listing(nft, &format!("map inet {t} {map}"))? else {
                continue;
            };
            for e in parse_map(&j, map) {
                // The old code let two networks map the same port: keep the first.
                if moved.iter().any(|m| m.key == e.key) {
                    tracing::warn!(port = %e.key, to = %e.to.0, table = %t,
                        "dropping a host port mapping an older weft-cni gave twice");
                    continue;
                }
                moved.push(e);
            }
            script += &format!("flush map inet {t} {map}\n");
        }
    }
    script += &render_change(&Change {
        remove: Vec::new(),
        add: moved.clone(),
    });
    nft.run(&script)?;
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
    let change = decide(&elements, holder, legacy_targets, want, reserved)?;
    if !change.is_empty() {
        nft.run(&render_change(&change))?;
    }
    Ok(change)
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
        nft.run(&render_change(&Change {
            remove,
            add: Vec::new(),
        }))?;
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

/// Does the flow hit `key` (protocol, original destination port and address)?
fn hits(f: &Flow, key: &Key) -> bool {
    f.proto == Some(key.proto_number())
        && f.orig.dport == Some(key.port)
        && key
            .host_ip
            .is_none_or(|ip| f.orig.dst == Some(IpAddr::V4(ip)))
}

/// Pure: a flow through a removed mapping that still leads to its old target.
pub fn leads_to_removed(f: &Flow, e: &Element) -> bool {
    hits(f, &e.key)
        && f.dnat()
        && (f.reply.src, f.reply.sport) == (Some(IpAddr::V4(e.to.0)), Some(e.to.1))
}

/// Pure: a flow on an added mapping's host port that does not lead to its new target
/// (DNAT'd to a former holder, or tracked before anyone mapped the port). Only flows whose
/// original destination is one of the host's own addresses count (checked by the caller):
/// a forwarded connection to some server's port of the same number is not the host's.
pub fn misses_added(f: &Flow, e: &Element) -> bool {
    hits(f, &e.key) && (f.reply.src, f.reply.sport) != (Some(IpAddr::V4(e.to.0)), Some(e.to.1))
}

/// Pure: whether `c` can have left flows behind that [`forget_flows`] must look for. A
/// removed mapping can (its flows still DNAT to the former target). An added UDP or SCTP
/// mapping can (datagrams that hit the port before keep their entry as long as they keep
/// coming); an added TCP one cannot: a former holder's flows went with its mapping, and a
/// connection attempt that found nothing was reset (its next SYN makes a new entry).
pub fn leaves_flows(c: &Change) -> bool {
    !c.remove.is_empty() || c.add.iter().any(|e| e.key.proto != "tcp")
}

/// Forgets the conntrack entries that `c` made stale (best effort: logged, not an error;
/// a kernel without conntrack has nothing to forget). One dump of the IPv4 table, when
/// [`leaves_flows`].
pub async fn forget_flows(host: &Netlink, c: &Change) {
    if !leaves_flows(c) {
        return;
    }
    let flows = match conntrack::flows(false) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "could not read conntrack entries");
            return;
        }
    };
    let mut local: HashMap<IpAddr, bool> = HashMap::new();
    let mut doomed = Vec::new();
    for f in flows {
        if c.remove.iter().any(|e| leads_to_removed(&f, e)) {
            doomed.push(f);
            continue;
        }
        if !c
            .add
            .iter()
            .any(|e| e.key.proto != "tcp" && misses_added(&f, e))
        {
            continue;
        }
        let Some(dst) = f.orig.dst else { continue };
        let is_local = match local.get(&dst) {
            Some(l) => *l,
            None => {
                let l = host.is_local(dst).await.unwrap_or(false);
                local.insert(dst, l);
                l
            }
        };
        if is_local {
            doomed.push(f);
        }
    }
    match conntrack::delete(&doomed) {
        Ok(n) if n > 0 => {
            tracing::info!(entries = n, "conntrack entries of moved host ports removed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not remove conntrack entries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(proto: &str, port: u16, ip: Option<&str>) -> Key {
        Key {
            proto: proto.into(),
            port,
            host_ip: ip.map(|s| s.parse().unwrap()),
        }
    }

    fn el(k: Key, to: &str, port: u16, h: Option<&Holder>) -> Element {
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
        let script = render_change(&decide(&table, &a, &legacy, &want, &[]).unwrap());
        assert_eq!(
            script,
            "delete element inet weft-ports pm_any { tcp . 9090 }\n\
             delete element inet weft-ports pm_any { udp . 53 }\n\
             create element inet weft-ports pm_any { tcp . 9090 comment \"net1/ca/eth0\" : 10.88.0.2 . 91 }\n"
        );
    }

    #[test]
    fn parses_the_kernels_listing() {
        let j: Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "weft-ports"}},
              {"map": {"family": "inet", "name": "pm_any", "table": "weft-ports",
                "elem": [[{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "n1/c1/eth0"}}, {"concat": ["10.0.0.1", 80]}],
                         [{"concat": ["udp", 53]}, {"concat": ["10.0.0.2", 5353]}]]}},
              {"map": {"family": "inet", "name": "pm_ip", "table": "weft-ports",
                "elem": [[{"elem": {"val": {"concat": ["127.0.0.1", "udp", 53]}, "comment": "n2/c2/net1"}}, {"concat": ["10.0.0.3", 53]}]]}}]}"#,
        )
        .unwrap();
        let any = parse_map(&j, "pm_any");
        assert_eq!(
            any,
            vec![
                el(
                    key("tcp", 8080, None),
                    "10.0.0.1",
                    80,
                    Some(&Holder::new("n1", "c1", "eth0"))
                ),
                el(key("udp", 53, None), "10.0.0.2", 5353, None),
            ]
        );
        let ip = parse_map(&j, "pm_ip");
        assert_eq!(ip[0].key, key("udp", 53, Some("127.0.0.1")));
        assert_eq!(ip[0].holder, Some(Holder::new("n2", "c2", "net1")));
        assert_eq!(Holder::parse("a/b"), None);
        assert_eq!(Holder::parse("a/b/c/d"), None);
    }

    #[test]
    fn stale_flows_of_a_moved_port() {
        let mut f = Flow::default();
        f.proto = Some(17);
        f.orig.src = Some("203.0.113.2".parse().unwrap());
        f.orig.sport = Some(40000);
        f.orig.dst = Some("203.0.113.1".parse().unwrap());
        f.orig.dport = Some(5300);
        // DNAT'd to the former holder 10.88.0.2:53.
        f.reply.src = Some("10.88.0.2".parse().unwrap());
        f.reply.sport = Some(53);
        f.reply.dst = f.orig.src;
        f.reply.dport = f.orig.sport;
        let old = el(key("udp", 5300, None), "10.88.0.2", 53, None);
        let new = el(key("udp", 5300, None), "10.88.0.3", 53, None);
        assert!(leads_to_removed(&f, &old));
        assert!(!leads_to_removed(&f, &new));
        assert!(misses_added(&f, &new));
        assert!(!misses_added(&f, &old));
        // Another protocol, port or host address is not touched.
        assert!(!misses_added(
            &f,
            &el(key("tcp", 5300, None), "10.88.0.3", 53, None)
        ));
        assert!(!misses_added(
            &f,
            &el(key("udp", 5301, None), "10.88.0.3", 53, None)
        ));
        assert!(!misses_added(
            &f,
            &el(key("udp", 5300, Some("127.0.0.1")), "10.88.0.3", 53, None)
        ));
        // Tracked before anyone mapped the port (answered by the host itself): stale for a
        // new mapping, and not a DNAT'd flow of a removed one.
        let mut g = f.clone();
        g.reply.src = f.orig.dst;
        g.reply.sport = f.orig.dport;
        assert!(!g.dnat());
        assert!(misses_added(&g, &new));
        assert!(!leads_to_removed(&g, &old));
    }

    #[test]
    fn only_changes_that_can_leave_flows_cost_a_dump() {
        let tcp = el(key("tcp", 8080, None), "10.88.0.2", 80, None);
        let udp = el(key("udp", 53, None), "10.88.0.2", 53, None);
        let add = |v: Vec<Element>| Change {
            remove: Vec::new(),
            add: v,
        };
        assert!(!leaves_flows(&Change::default()));
        assert!(!leaves_flows(&add(vec![tcp.clone()])));
        assert!(leaves_flows(&add(vec![tcp.clone(), udp])));
        assert!(leaves_flows(&Change {
            remove: vec![tcp],
            add: Vec::new()
        }));
    }

    #[test]
    fn table_script_has_the_guard_and_no_elements() {
        let t = render_table();
        assert!(t.contains("iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop"));
        assert!(t.contains("dnat ip to ip daddr . meta l4proto . th dport map @pm_ip"));
        assert!(!t.contains("delete table"), "the table is never replaced");
    }
}
