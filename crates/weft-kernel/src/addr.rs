//! Interface addresses.
//!
//! Invariant: adding an address the link has is not an error and does not add it twice;
//! removing one that is not there is `Ok(false)`; every request is bounded in time. Kernel
//! objects owned: IPv4 and IPv6 interface addresses (RTM_NEWADDR / RTM_DELADDR), per link.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use crate::{Netlink, Result};

fn addr_of(msg: &AddressMessage) -> Option<IpNet> {
    let plen = msg.header.prefix_len;
    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
    let mut addr = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => return IpNet::new(*ip, plen).ok(),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    addr.and_then(|ip| IpNet::new(ip, plen).ok())
}

impl Netlink {
    /// Adds `addr` (address with prefix length) to the link; an existing identical address
    /// is not an error.
    pub async fn add_address(&self, index: u32, addr: IpNet) -> Result<()> {
        let request = self
            .handle()
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute();
        match self
            .answer(format!("add address {addr} to link #{index}"), request)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The kernel's address messages of one link.
    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        let s = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = self.dump(format!("list addresses of #{index}"), s).await?;
        out.retain(|m| m.header.index == index);
        Ok(out)
    }

    /// Addresses on one link.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        Ok(self
            .address_messages(index)
            .await?
            .iter()
            .filter_map(addr_of)
            .collect())
    }

    /// Removes one address; `Ok(false)` if it was not there.
    pub async fn del_address(&self, index: u32, addr: IpAddr) -> Result<bool> {
        let Some(m) = self
            .address_messages(index)
            .await?
            .into_iter()
            .find(|m| addr_of(m).map(|a| a.addr()) == Some(addr))
        else {
            return Ok(false);
        };
        let request = self.handle().address().del(m).execute();
        match self.answer(format!("delete address {addr}"), request).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
