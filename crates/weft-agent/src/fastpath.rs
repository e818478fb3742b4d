//! The overlay fast path: VXLAN-GBP encapsulation in tc BPF (`bpf/fastpath.c`) for the packets
//! of TCP connections the kernel path has already accepted.
//!
//! The kernel path stays the one that decides: a connection's handshake goes through the
//! cell's routing, `inet weft-policy` and the VXLAN device, exactly as without the fast path.
//! Once conntrack holds it as ESTABLISHED, the programs carry its data packets: `weft_tx` on
//! each local container's host veth (tc ingress) encapsulates and hands the packet to the
//! underlay device; `weft_rx` on the underlay device (tc ingress) decapsulates and delivers
//! straight into the destination container. On the wire the packets are the VXLAN device's
//! own, so a host with the fast path talks to one without it. What it wins: the second trip
//! through the IP stack and netfilter on each host and the VXLAN device's own transmit and
//! receive path (see the overlay bench).
//!
//! What it needs of the host, and why:
//! - a kernel with BTF and the conntrack kfuncs (6.0+), libbpf.so.1 at run time, clang when
//!   weft is built (`--fastpath auto` runs without the fast path if any is missing);
//! - `net.netfilter.nf_conntrack_tcp_be_liberal = 1` in the host's namespace: conntrack does
//!   not see the packets the fast path carries, so when a connection falls back to the kernel
//!   path (the agent stops, a map entry goes) its window tracking is stale, and without it the
//!   next packets would be INVALID and dropped by the policy table.
//!
//! Like the rest of the agent this is desired state → diff → apply: [`desired`] is pure, the
//! maps are compared with what the kernel holds and only differences are written ([`changes`]:
//! removals first, and a failed write does not stop the others); the programs are attached
//! with an atomic replace. When the agent exits it detaches them, so stale maps never outlive
//! it; connections carry on through the kernel path.
//!
//! Fail-closed: a map that is full, or lacks a key, sends the packet to the kernel path (the
//! programs return TC_ACT_OK), where policy decides. What must not happen is a stale entry
//! that delivers what the kernel path would not: removals are written before additions, and
//! every map is brought up to date even when another map's update failed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, Context, Result};
use ipnet::Ipv4Net;
use weft_kernel::bpf::{Map, Object, Program, TcIngress};
use weft_kernel::MacAddr;

use crate::policy::LocalContainer;
use crate::remote::RemoteCell;

#[cfg(weft_fastpath)]
static ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fastpath.o"));
#[cfg(not(weft_fastpath))]
static ELF: &[u8] = &[];

/// The filter's handle and priority on every interface (ours; other filters stay).
pub const TC_HANDLE: u32 = 0x7766;
pub const TC_PRIORITY: u32 = 1;
/// The sysctl the fast path needs (see the module documentation).
pub const BE_LIBERAL: &str = "net.netfilter.nf_conntrack_tcp_be_liberal";

/// Whether this build carries the BPF object (clang was there when it was built).
pub fn built() -> bool {
    !ELF.is_empty()
}

/// A local container as the fast path's `endpoints` map holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// Host end of its veth.
    pub ifindex: u32,
    pub tag: u16,
    pub mac: MacAddr,
    pub host_mac: MacAddr,
}

/// Where the agent meets the underlay, and the VXLAN parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub underlay_ip: Ipv4Addr,
    pub underlay_ifindex: u32,
    pub vni: u32,
    pub port: u16,
    pub vtep_mac: MacAddr,
}

/// Everything the maps should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub config: Config,
    pub endpoints: Vec<Endpoint>,
    /// Other hosts' subnets: where `weft_tx` sends, and whose underlay address `weft_rx`
    /// requires of a packet with an inner source in them.
    pub remotes: Vec<RemoteCell>,
}

/// A local container with what the kernel says about its host veth (index, MAC).
#[derive(Debug, Clone)]
pub struct Attached<'a> {
    pub container: &'a LocalContainer,
    pub ifindex: u32,
    pub host_mac: MacAddr,
}

/// Pure: the maps' content for these containers, tags and remote cells. Containers without a
/// known MAC are left to the kernel path.
pub fn desired(
    config: Config,
    containers: &[Attached<'_>],
    tags: &BTreeMap<String, u16>,
    remotes: &[RemoteCell],
) -> Desired {
    let mut endpoints: Vec<Endpoint> = containers
        .iter()
        .filter_map(|a| {
            Some(Endpoint {
                ip: a.container.ip,
                ifindex: a.ifindex,
                tag: a
                    .container
                    .app
                    .as_deref()
                    .and_then(|app| tags.get(app).copied())
                    .unwrap_or(0),
                mac: a.container.mac?,
                host_mac: a.host_mac,
            })
        })
        .collect();
    endpoints.sort();
    let remotes: Vec<RemoteCell> = remotes
        .iter()
        .filter(|r| matches!(r.underlay_ip, IpAddr::V4(_)))
        .cloned()
        .collect();
    Desired {
        config,
        endpoints,
        remotes,
    }
}

// ---- the bytes of the C structs in bpf/fastpath.c (native byte order, addresses in
// network order) ----

pub fn config_value(c: &Config) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[0..4].copy_from_slice(&c.underlay_ip.octets());
    v[4..8].copy_from_slice(&c.underlay_ifindex.to_ne_bytes());
    v[8..12].copy_from_slice(&c.vni.to_ne_bytes());
    v[12..14].copy_from_slice(&c.port.to_ne_bytes());
    v[14..20].copy_from_slice(c.vtep_mac.as_ref());
    v
}

pub fn endpoint_value(e: &Endpoint) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[0..4].copy_from_slice(&e.ifindex.to_ne_bytes());
    v[4..6].copy_from_slice(&e.tag.to_ne_bytes());
    v[6..12].copy_from_slice(e.mac.as_ref());
    v[12..18].copy_from_slice(e.host_mac.as_ref());
    v
}

pub fn remote_key(subnet: Ipv4Net) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&(subnet.prefix_len() as u32).to_ne_bytes());
    k[4..8].copy_from_slice(&subnet.network().octets());
    k
}

pub fn remote_value(r: &RemoteCell) -> [u8; 12] {
    let mut v = [0u8; 12];
    if let IpAddr::V4(u) = r.underlay_ip {
        v[0..4].copy_from_slice(&u.octets());
    }
    v[4..10].copy_from_slice(r.vtep_mac.as_ref());
    v
}

/// A map's content: key bytes -> value bytes.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// The map contents as (key, value) byte pairs, per map name.
fn encoded(d: &Desired) -> [(&'static str, Entries); 3] {
    let config = BTreeMap::from([(
        0u32.to_ne_bytes().to_vec(),
        config_value(&d.config).to_vec(),
    )]);
    let endpoints = d
        .endpoints
        .iter()
        .map(|e| (e.ip.octets().to_vec(), endpoint_value(e).to_vec()))
        .collect();
    let remotes = d
        .remotes
        .iter()
        .map(|r| (remote_key(r.subnet).to_vec(), remote_value(r).to_vec()))
        .collect();
    [
        ("config", config),
        ("endpoints", endpoints),
        ("remotes", remotes),
    ]
}

/// (key size, value size) of each map.
fn sizes(map: &str) -> (usize, usize) {
    match map {
        "config" => (4, 20),
        "endpoints" => (4, 20),
        _ => (8, 12),
    }
}

/// What makes a map hold `want` instead of `have`: keys to delete, entries to write.
/// `config` is an array: its one key is always there, only written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub delete: Vec<Vec<u8>>,
    pub write: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Pure: the changes for one map.
pub fn changes(map: &str, have: &Entries, want: &Entries) -> Changes {
    Changes {
        delete: if map == "config" {
            Vec::new()
        } else {
            have.keys()
                .filter(|k| !want.contains_key(*k))
                .cloned()
                .collect()
        },
        write: want
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Packets and bytes the fast path carried since its programs were loaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// Possible CPUs (the size of a per-CPU map value), from /sys.
fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            n = n.max(b + 1).max(a + 1);
        }
    }
    n.max(1)
}

/// Reads the per-CPU counters of a `stats` map.
pub fn read_stats(map: &Map) -> Result<Stats> {
    let cpus = possible_cpus();
    let mut sum = [0u64; 4];
    for (i, s) in sum.iter_mut().enumerate() {
        let mut buf = vec![0u8; 8 * cpus];
        if map.lookup(&(i as u32).to_ne_bytes(), &mut buf)? {
            *s = buf
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
                .sum();
        }
    }
    Ok(Stats {
        tx_packets: sum[0],
        tx_bytes: sum[1],
        rx_packets: sum[2],
        rx_bytes: sum[3],
    })
}

/// The loaded programs and maps, and what this process attached.
pub struct FastPath {
    _object: Object,
    tx: Program,
    rx: Program,
    maps: BTreeMap<&'static str, Map>,
    pub stats: Map,
    underlay: Option<u32>,
    veths: BTreeSet<u32>,
}

fn hook(ifindex: u32) -> TcIngress {
    TcIngress {
        ifindex,
        handle: TC_HANDLE,
        priority: TC_PRIORITY,
    }
}

impl FastPath {
    /// Loads the programs (verifier, CO-RE, kfuncs) and creates empty maps; attaches nothing.
    pub fn load() -> Result<FastPath> {
        if !built() {
            return Err(anyhow!(
                "this weft was built without clang, so without the BPF fast path"
            ));
        }
        if !weft_kernel::bpf::kernel_has_btf() {
            return Err(anyhow!("the kernel has no BTF (/sys/kernel/btf/vmlinux)"));
        }
        let object = Object::load("fastpath", ELF).context(
            "loading the fast path (needs a kernel with the conntrack kfuncs, 6.0 or later)",
        )?;
        let mut maps = BTreeMap::new();
        for name in ["config", "endpoints", "remotes"] {
            maps.insert(name, object.map(name)?);
        }
        Ok(FastPath {
            tx: object.program("weft_tx")?,
            rx: object.program("weft_rx")?,
            stats: object.map("stats")?,
            maps,
            _object: object,
            underlay: None,
            veths: BTreeSet::new(),
        })
    }

    /// Makes the maps hold `d` (only differences are written: every map's removals first,
    /// then the writes, each attempted even if another failed; the first failure is
    /// returned), then attaches the programs where they are not yet (maps first: a program
    /// never runs on maps this process has not written; a key a full map could not take
    /// sends its packets to the kernel path).
    pub fn apply(&mut self, d: &Desired, veths: &BTreeSet<u32>) -> Result<usize> {
        let mut plan = Vec::new();
        for (name, want) in encoded(d) {
            let map = self
                .maps
                .get(name)
                .ok_or_else(|| anyhow!("no map {name}"))?;
            let (ks, vs) = sizes(name);
            let mut have = Entries::new();
            for k in map.keys(ks)? {
                let mut v = vec![0u8; vs];
                if map.lookup(&k, &mut v)? {
                    have.insert(k, v);
                }
            }
            plan.push((name, map, changes(name, &have, &want)));
        }
        let mut done = 0;
        let mut failed: Option<anyhow::Error> = None;
        let mut note = |name: &str, r: weft_kernel::Result<()>| match r {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::warn!(map = name, error = %e, "fast path map write failed");
                failed.get_or_insert(anyhow!("map {name}: {e}"));
            }
        };
        for (name, map, c) in &plan {
            for k in &c.delete {
                note(name, map.delete(k));
            }
        }
        for (name, map, c) in &plan {
            for (k, v) in &c.write {
                note(name, map.update(k, v));
            }
        }
        let changes = done;
        if self.underlay != Some(d.config.underlay_ifindex) {
            hook(d.config.underlay_ifindex)
                .attach(self.rx)
                .context("attaching weft_rx to the underlay interface")?;
            self.underlay = Some(d.config.underlay_ifindex);
        }
        for &i in veths.difference(&self.veths.clone()) {
            match hook(i).attach(self.tx) {
                Ok(()) => {
                    self.veths.insert(i);
                }
                // The container went away meanwhile: its next sync forgets it.
                Err(e) => tracing::warn!(ifindex = i, error = %e, "attaching weft_tx failed"),
            }
        }
        // Veths that are gone took their filters with them.
        self.veths.retain(|i| veths.contains(i));
        match failed {
            Some(e) => Err(e),
            None => Ok(changes),
        }
    }

    /// Removes the programs from every interface this process attached them to (connections
    /// carry on through the kernel path).
    pub fn detach(&mut self) {
        for i in std::mem::take(&mut self.veths) {
            let _ = hook(i).detach();
        }
        if let Some(u) = self.underlay.take() {
            if let Err(e) = hook(u).detach() {
                tracing::warn!(error = %e, "detaching weft_rx failed");
            }
        }
    }
}

/// Removes filters an earlier agent left (`--fastpath off`): from the underlay interface and
/// the given veths.
pub fn detach_all(ifindexes: impl IntoIterator<Item = u32>) {
    for i in ifindexes {
        if let Ok(Some(_)) = hook(i).query() {
            if let Err(e) = hook(i).detach() {
                tracing::warn!(ifindex = i, error = %e, "removing an earlier fast path failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(ip: &str, app: Option<&str>, mac: Option<MacAddr>) -> LocalContainer {
        LocalContainer {
            ip: ip.parse().expect("ip"),
            host_ifname: format!("weft{ip}"),
            app: app.map(str::to_string),
            mac,
        }
    }

    fn cfg() -> Config {
        Config {
            underlay_ip: Ipv4Addr::new(198, 18, 0, 1),
            underlay_ifindex: 2,
            vni: 1,
            port: 4789,
            vtep_mac: MacAddr::new([2, 0, 0, 0, 0, 1]),
        }
    }

    #[test]
    fn desired_maps_containers_tags_and_remote_cells() {
        let a = ct(
            "10.255.1.2",
            Some("app-a"),
            Some(MacAddr::new([0x0a, 0x58, 10, 255, 1, 2])),
        );
        let b = ct(
            "10.255.1.3",
            None,
            Some(MacAddr::new([0x0a, 0x58, 10, 255, 1, 3])),
        );
        let no_mac = ct("10.255.1.4", Some("app-a"), None);
        let attached = [
            Attached {
                container: &b,
                ifindex: 8,
                host_mac: MacAddr::new([1; 6]),
            },
            Attached {
                container: &a,
                ifindex: 7,
                host_mac: MacAddr::new([2; 6]),
            },
            Attached {
                container: &no_mac,
                ifindex: 9,
                host_mac: MacAddr::new([3; 6]),
            },
        ];
        let tags = BTreeMap::from([("app-a".to_string(), 42u16)]);
        let remotes = vec![
            RemoteCell {
                subnet: "10.255.2.0/24".parse().expect("net"),
                vtep_ip: "10.255.2.0".parse().expect("ip"),
                vtep_mac: MacAddr::new([4; 6]),
                underlay_ip: "198.18.0.2".parse().expect("ip"),
            },
            RemoteCell {
                subnet: "10.255.3.0/24".parse().expect("net"),
                vtep_ip: "10.255.3.0".parse().expect("ip"),
                vtep_mac: MacAddr::new([5; 6]),
                underlay_ip: "fd00::3".parse().expect("ip"),
            },
        ];
        let d = desired(cfg(), &attached, &tags, &remotes);
        assert_eq!(
            d.endpoints,
            vec![
                Endpoint {
                    ip: "10.255.1.2".parse().expect("ip"),
                    ifindex: 7,
                    tag: 42,
                    mac: MacAddr::new([0x0a, 0x58, 10, 255, 1, 2]),
                    host_mac: MacAddr::new([2; 6]),
                },
                Endpoint {
                    ip: "10.255.1.3".parse().expect("ip"),
                    ifindex: 8,
                    tag: 0,
                    mac: MacAddr::new([0x0a, 0x58, 10, 255, 1, 3]),
                    host_mac: MacAddr::new([1; 6]),
                },
            ],
            "sorted, untagged as tag 0, no MAC left out"
        );
        assert_eq!(d.remotes.len(), 1, "IPv6 underlays stay on the kernel path");
        // Pure and deterministic: the same input gives the same maps.
        assert_eq!(d, desired(cfg(), &attached, &tags, &remotes));
    }

    #[test]
    fn encodings_match_the_c_structs() {
        let c = config_value(&cfg());
        assert_eq!(&c[0..4], &[198, 18, 0, 1], "underlay_ip, network order");
        assert_eq!(u32::from_ne_bytes(c[4..8].try_into().expect("4")), 2);
        assert_eq!(u32::from_ne_bytes(c[8..12].try_into().expect("4")), 1);
        assert_eq!(u16::from_ne_bytes(c[12..14].try_into().expect("2")), 4789);
        assert_eq!(&c[14..20], &[2, 0, 0, 0, 0, 1]);
        let e = endpoint_value(&Endpoint {
            ip: Ipv4Addr::new(10, 255, 1, 2),
            ifindex: 0x01020304,
            tag: 0x0506,
            mac: MacAddr::new([7; 6]),
            host_mac: MacAddr::new([8; 6]),
        });
        assert_eq!(
            u32::from_ne_bytes(e[0..4].try_into().expect("4")),
            0x01020304
        );
        assert_eq!(u16::from_ne_bytes(e[4..6].try_into().expect("2")), 0x0506);
        assert_eq!(
            (&e[6..12], &e[12..18], &e[18..20]),
            (&[7u8; 6][..], &[8u8; 6][..], &[0u8; 2][..])
        );
        let k = remote_key("10.255.2.0/24".parse().expect("net"));
        assert_eq!(u32::from_ne_bytes(k[0..4].try_into().expect("4")), 24);
        assert_eq!(&k[4..8], &[10, 255, 2, 0]);
    }

    #[test]
    fn changes_remove_stale_keys_and_write_only_differences() {
        let e = |pairs: &[(u8, u8)]| -> Entries {
            pairs.iter().map(|(k, v)| (vec![*k], vec![*v])).collect()
        };
        let c = changes(
            "remotes",
            &e(&[(1, 1), (2, 2), (3, 3)]),
            &e(&[(2, 2), (3, 4), (5, 5)]),
        );
        assert_eq!(c.delete, vec![vec![1]]);
        assert_eq!(c.write, vec![(vec![3], vec![4]), (vec![5], vec![5])]);
        // The config array's key is never deleted.
        let c = changes("config", &e(&[(0, 1)]), &e(&[]));
        assert!(c.delete.is_empty() && c.write.is_empty());
        assert_eq!(
            changes("endpoints", &e(&[(1, 1)]), &e(&[(1, 1)])),
            Changes::default()
        );
    }

    #[test]
    fn possible_cpus_is_at_least_one() {
        assert!(possible_cpus() >= 1);
    }
}
