//! Other hosts (seed 000 steps 4-5): for every lease but our own, three kernel entries on the
//! VTEP — a route to the remote subnet via the remote VTEP's overlay address (on-link), a
//! neighbour entry (remote VTEP address → remote VTEP MAC) and an FDB entry (remote VTEP MAC →
//! remote underlay address). [`plan`] computes them, [`Diff`] compares with the kernel,
//! [`apply`] changes only the difference.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use weft_api::model::Lease;
use weft_kernel::neigh::{FdbEntry, Neighbour};
use weft_kernel::route::Route;
use weft_kernel::{MacAddr, Netlink};

/// One remote host as the kernel should know it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteCell {
    pub subnet: Ipv4Net,
    pub vtep_ip: Ipv4Addr,
    pub vtep_mac: MacAddr,
    pub underlay_ip: IpAddr,
}

/// The remote cells for a set of leases (ours excluded; leases with unusable fields skipped).
pub fn plan<'a>(leases: impl IntoIterator<Item = &'a Lease>, own_host: &str) -> Vec<RemoteCell> {
    let mut out: Vec<RemoteCell> = leases
        .into_iter()
        .filter(|l| l.host != own_host)
        .filter_map(|l| {
            Some(RemoteCell {
                subnet: l.subnet,
                vtep_ip: l.subnet.network(),
                vtep_mac: l.vtep_mac.parse().ok()?,
                underlay_ip: l.underlay_ip,
            })
        })
        .collect();
    out.sort();
    out
}

/// What the kernel has on the VTEP.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Routes with a gateway through the VTEP: subnet → gateway.
    pub routes: BTreeMap<Ipv4Net, Ipv4Addr>,
    pub neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    pub fdb: BTreeSet<(MacAddr, IpAddr)>,
}

/// The changes that make [`Observed`] match a plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub add: Vec<RemoteCell>,
    pub del_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub del_neighbours: Vec<(Ipv4Addr, MacAddr)>,
    pub del_fdb: Vec<(MacAddr, IpAddr)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.del_routes.is_empty()
            && self.del_neighbours.is_empty()
            && self.del_fdb.is_empty()
    }

    /// Pure: compares desired cells with what is observed.
    pub fn between(desired: &[RemoteCell], observed: &Observed) -> Diff {
        let mut d = Diff::default();
        for c in desired {
            let complete = observed.routes.get(&c.subnet) == Some(&c.vtep_ip)
                && observed.neighbours.get(&c.vtep_ip) == Some(&c.vtep_mac)
                && observed.fdb.contains(&(c.vtep_mac, c.underlay_ip));
            if !complete {
                d.add.push(c.clone());
            }
        }
        let want_routes: BTreeMap<Ipv4Net, Ipv4Addr> =
            desired.iter().map(|c| (c.subnet, c.vtep_ip)).collect();
        let want_neigh: BTreeMap<Ipv4Addr, MacAddr> =
            desired.iter().map(|c| (c.vtep_ip, c.vtep_mac)).collect();
        let want_fdb: BTreeSet<(MacAddr, IpAddr)> = desired
            .iter()
            .map(|c| (c.vtep_mac, c.underlay_ip))
            .collect();
        d.del_routes = observed
            .routes
            .iter()
            .filter(|(n, g)| want_routes.get(n) != Some(g))
            .map(|(n, g)| (*n, *g))
            .collect();
        d.del_neighbours = observed
            .neighbours
            .iter()
            .filter(|(ip, m)| want_neigh.get(ip) != Some(m))
            .map(|(i, m)| (*i, *m))
            .collect();
        d.del_fdb = observed
            .fdb
            .iter()
            .filter(|e| !want_fdb.contains(e))
            .cloned()
            .collect();
        d
    }
}

/// Reads the VTEP's routes (with a gateway), permanent neighbours and FDB entries.
pub async fn observe(nl: &Netlink, vtep: u32) -> weft_kernel::Result<Observed> {
    let mut o = Observed::default();
    for r in nl.routes(false).await? {
        if let (Some(oif), Some(IpAddr::V4(gw)), IpNet::V4(dst)) = (r.oif, r.gateway, r.dst) {
            if oif == vtep {
                o.routes.insert(dst, gw);
            }
        }
    }
    for n in nl.neighbours(vtep).await? {
        if let IpAddr::V4(ip) = n.ip {
            o.neighbours.insert(ip, n.mac);
        }
    }
    for e in nl.fdb_entries(vtep).await? {
        if !e.mac.is_zero() {
            o.fdb.insert((e.mac, e.dst));
        }
    }
    Ok(o)
}

/// Applies a diff: additions first (neighbour and FDB before the route, so the first packet
/// routed to a new cell finds its way), then removals.
pub async fn apply(nl: &Netlink, vtep: u32, diff: &Diff) -> weft_kernel::Result<()> {
    for c in &diff.add {
        nl.replace_neighbour(&Neighbour {
            index: vtep,
            ip: c.vtep_ip.into(),
            mac: c.vtep_mac,
        })
        .await?;
        nl.replace_fdb(vtep, c.vtep_mac, c.underlay_ip).await?;
        nl.replace_route(&Route {
            dst: IpNet::V4(c.subnet),
            gateway: Some(c.vtep_ip.into()),
            oif: Some(vtep),
            link_scope: false,
        })
        .await?;
        tracing::info!(subnet = %c.subnet, underlay = %c.underlay_ip, "remote cell added");
    }
    for (dst, gw) in &diff.del_routes {
        nl.del_route(&Route {
            dst: IpNet::V4(*dst),
            gateway: Some((*gw).into()),
            oif: Some(vtep),
            link_scope: false,
        })
        .await?;
        tracing::info!(subnet = %dst, "remote cell removed");
    }
    for (ip, mac) in &diff.del_neighbours {
        nl.del_neighbour(&Neighbour {
            index: vtep,
            ip: (*ip).into(),
            mac: *mac,
        })
        .await?;
    }
    for (mac, dst) in &diff.del_fdb {
        nl.del_fdb(
            vtep,
            &FdbEntry {
                mac: *mac,
                dst: *dst,
            },
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(host: &str, subnet: &str, underlay: &str) -> Lease {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        let o = subnet.network().octets();
        Lease {
            host: host.into(),
            underlay_ip: underlay.parse().unwrap(),
            subnet,
            vtep_mac: format!("ee:ee:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
            acquired_at: 0,
            expires_at: 0,
        }
    }

    #[test]
    fn plan_skips_own_lease() {
        let ls = [
            lease("a", "10.255.1.0/24", "198.18.0.1"),
            lease("b", "10.255.2.0/24", "198.18.0.2"),
        ];
        let p = plan(&ls, "a");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].vtep_ip.to_string(), "10.255.2.0");
        assert_eq!(p[0].vtep_mac, MacAddr::new([0xee, 0xee, 10, 255, 2, 0]));
    }

    #[test]
    fn diff_adds_missing_and_removes_stale_only() {
        let ls = [
            lease("b", "10.255.2.0/24", "198.18.0.2"),
            lease("c", "10.255.3.0/24", "198.18.0.3"),
        ];
        let want = plan(&ls, "a");
        let mut o = Observed::default();
        // b fully present, plus a stale d.
        let b = &want[0];
        o.routes.insert(b.subnet, b.vtep_ip);
        o.neighbours.insert(b.vtep_ip, b.vtep_mac);
        o.fdb.insert((b.vtep_mac, b.underlay_ip));
        let d_net: Ipv4Net = "10.255.4.0/24".parse().unwrap();
        o.routes.insert(d_net, "10.255.4.0".parse().unwrap());
        o.fdb.insert((
            MacAddr::new([0xee, 0xee, 10, 255, 4, 0]),
            "198.18.0.4".parse().unwrap(),
        ));
        let d = Diff::between(&want, &o);
        assert_eq!(d.add, vec![want[1].clone()]);
        assert_eq!(d.del_routes, vec![(d_net, "10.255.4.0".parse().unwrap())]);
        assert_eq!(d.del_fdb.len(), 1);
        assert!(d.del_neighbours.is_empty());
        // Applied, nothing is left to do: the plan is a fixed point.
        let mut after = o.clone();
        for c in &d.add {
            after.routes.insert(c.subnet, c.vtep_ip);
            after.neighbours.insert(c.vtep_ip, c.vtep_mac);
            after.fdb.insert((c.vtep_mac, c.underlay_ip));
        }
        after.routes.remove(&d_net);
        after.fdb.retain(|e| !d.del_fdb.contains(e));
        assert!(Diff::between(&want, &after).is_empty());
    }

    #[test]
    fn moved_underlay_is_re_added_and_old_fdb_removed() {
        let want = plan(&[lease("b", "10.255.2.0/24", "198.18.0.9")], "a");
        let mut o = Observed::default();
        let c = &want[0];
        o.routes.insert(c.subnet, c.vtep_ip);
        o.neighbours.insert(c.vtep_ip, c.vtep_mac);
        o.fdb.insert((c.vtep_mac, "198.18.0.2".parse().unwrap()));
        let d = Diff::between(&want, &o);
        assert_eq!(d.add.len(), 1);
        assert_eq!(d.del_fdb, vec![(c.vtep_mac, "198.18.0.2".parse().unwrap())]);
    }
}
