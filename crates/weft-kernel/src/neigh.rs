//! Neighbours (ARP/NDP entries) and bridge/VXLAN forwarding database (FDB) entries.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState,
};

use crate::{Error, Netlink, Result};

/// A permanent neighbour entry: `ip` on link `index` has `mac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

impl Netlink {
    /// Adds or replaces a permanent neighbour entry (idempotent).
    pub async fn replace_neighbour(&self, n: &Neighbour) -> Result<()> {
        self.handle()
            .neighbours()
            .add(n.index, n.ip)
            .link_layer_address(&n.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("add neighbour {} on #{}", n.ip, n.index), e))
    }

    /// Permanent neighbour entries on link `index`.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        let mut s = self.handle().neighbours().get().execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| Error::netlink("list neighbours", e))?
        {
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
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        let mut b = [0u8; 6];
                        b.copy_from_slice(l);
                        mac = Some(b);
                    }
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
    pub async fn replace_fdb(&self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<()> {
        self.handle()
            .neighbours()
            .add_bridge(index, &mac)
            .destination(dst)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("add fdb entry on #{index} via {dst}"), e))
    }
}
