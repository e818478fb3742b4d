//! Interface addresses.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use crate::{Error, Netlink, Result};

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
        match self
            .handle()
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = Error::netlink(format!("add address {addr} to link #{index}"), e);
                if e.is_exists() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The kernel's address messages of one link.
    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        let mut out = Vec::new();
        let mut s = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| Error::netlink(format!("list addresses of #{index}"), e))?
        {
            if m.header.index == index {
                out.push(m);
            }
        }
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
        match self.handle().address().del(m).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = Error::netlink(format!("delete address {addr}"), e);
                if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}
