//! Neighbours (ARP/NDP entries) and bridge/VXLAN forwarding database (FDB) entries.
//!
//! Invariant: adding replaces (idempotent), removing what is gone is `Ok(false)`; weft's
//! entries are permanent, so the kernel never ages them out from under the agent. Kernel
//! objects owned: permanent neighbour entries, and FDB entries with a remote destination.

use std::net::IpAddr;

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState,
};

use crate::{MacAddr, Netlink, Result};

/// A permanent neighbour entry: `ip` on link `index` has `mac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: MacAddr,
}

impl Netlink {
    /// Adds or replaces a permanent neighbour entry (idempotent).
    pub async fn replace_neighbour(&self, n: &Neighbour) -> Result<()> {
        let request = self
            .handle()
            .neighbours()
            .add(n.index, n.ip)
            .link_layer_address(&n.mac.octets())
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        self.answer(format!("add neighbour {} on #{}", n.ip, n.index), request)
            .await
    }

    /// Permanent neighbour entries on link `index`.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        let messages = self
            .dump(
                "list neighbours",
                self.handle().neighbours().get().execute(),
            )
            .await?;
        for m in messages {
            if m.header.ifindex != index || m.header.state != NeighbourState::Permanent {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_slice(l).or(mac),
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.push(Neighbour { index, ip, mac });
            }
        }
        Ok(out)
    }

    /// Adds or replaces an FDB entry on a VXLAN device: frames for `mac` go to `dst`.
    pub async fn replace_fdb(&self, index: u32, mac: MacAddr, dst: IpAddr) -> Result<()> {
        let request = self
            .handle()
            .neighbours()
            .add_bridge(index, &mac.octets())
            .destination(dst)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        self.answer(format!("add fdb entry on #{index} via {dst}"), request)
            .await
    }
}

/// An FDB entry of a VXLAN device: frames for `mac` are sent to the underlay address `dst`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub dst: IpAddr,
}

impl Netlink {
    /// Removes a neighbour entry; `Ok(false)` if it was not there.
    pub async fn del_neighbour(&self, n: &Neighbour) -> Result<bool> {
        let mut msg = netlink_packet_route::neighbour::NeighbourMessage::default();
        msg.header.family = match n.ip {
            IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
        };
        msg.header.ifindex = n.index;
        msg.attributes
            .push(NeighbourAttribute::Destination(match n.ip {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
        let request = self.handle().neighbours().del(msg).execute();
        gone_ok(
            self.answer(format!("delete neighbour {}", n.ip), request)
                .await,
        )
    }

    /// The permanent FDB entries with a remote destination on link `index` (a VXLAN device).
    pub async fn fdb_entries(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let mut out = Vec::new();
        let mut req = self.handle().neighbours().get();
        req.message_mut().header.family = netlink_packet_route::AddressFamily::Bridge;
        for m in self.dump("list fdb", req.execute()).await? {
            if m.header.ifindex != index {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_slice(l).or(mac),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6))
                    }
                    // For AF_BRIDGE messages netlink-packet-route leaves NDA_DST undecoded.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = ip_of_bytes(b);
                    }
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push(FdbEntry { mac, dst });
            }
        }
        Ok(out)
    }

    /// Removes an FDB entry from a VXLAN device; `Ok(false)` if it was not there.
    pub async fn del_fdb(&self, index: u32, e: &FdbEntry) -> Result<bool> {
        let mut msg = netlink_packet_route::neighbour::NeighbourMessage::default();
        msg.header.family = netlink_packet_route::AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(
            e.mac.octets().to_vec(),
        ));
        msg.attributes
            .push(NeighbourAttribute::Destination(match e.dst {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
        let request = self.handle().neighbours().del(msg).execute();
        gone_ok(
            self.answer(format!("delete fdb entry via {}", e.dst), request)
                .await,
        )
    }
}

/// A removal's answer: `Ok(false)` when there was nothing to remove.
fn gone_ok(r: Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// An address from raw NDA_DST bytes (4 for IPv4, 16 for IPv6).
fn ip_of_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_destination_bytes() {
        assert_eq!(
            super::ip_of_bytes(&[198, 18, 0, 2]),
            Some("198.18.0.2".parse().unwrap())
        );
        assert_eq!(super::ip_of_bytes(&[0; 16]), Some("::".parse().unwrap()));
        assert_eq!(super::ip_of_bytes(&[1, 2, 3]), None);
    }
}
