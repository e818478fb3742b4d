//! Bridge mode, the doing half: apply a [`BridgePlan`] to the kernel, undo it, check it.
//! Seed 003 by hand, per container: the bridge (stable MAC, gateway addresses), a veth pair
//! (peer created inside the container's namespace, see [`crate::veth`]), host end on the
//! bridge, address and routes inside; the forwarding sysctls the host needs to route for its
//! containers. Applying the same plan twice changes nothing. The network's masquerade is
//! [`crate::firewall`]'s, host ports are [`crate::ports`]'.
//!
//! Kernel objects owned: the bridge (shared by the network's containers, never removed
//! here), the attachment's veth pair with its addresses and routes.

use std::net::IpAddr;

use weft_kernel::link::VethEnd;
use weft_kernel::netns::Netns;
use weft_kernel::route::Route;
use weft_kernel::{sysctl, Netlink};

use crate::driver::Driver;
use crate::spec::CniError;
use crate::veth;
use weft_api::records::BridgePlan;

impl Driver for BridgePlan {
    fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// Creates the bridge and the container's veth, addresses and routes. Idempotent: applying
    /// the same plan again changes nothing.
    async fn setup(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
        let br = host
            .ensure_bridge(&self.bridge, self.mtu, Some(self.bridge_mac))
            .await?;
        for a in &self.bridge_addrs {
            host.add_address(br.index, *a).await?;
        }
        if !self.port_mappings.is_empty() {
            // DNAT of 127.0.0.1 to a container needs local-net routing on the bridge.
            sysctl::set_path(&sysctl::ipv4_conf_path(&self.bridge, "route_localnet"), "1")?;
        }
        // The host routes for its containers when it is their gateway, masquerades them, or maps
        // ports to them (as the reference bridge plugin does).
        if self.ip_masq || !self.port_mappings.is_empty() || !self.bridge_addrs.is_empty() {
            sysctl::set("net.ipv4.ip_forward", "1")?;
        }

        let cont = Netlink::in_netns(ns)?;
        let local = VethEnd {
            name: &self.host_veth,
            mac: None,
            mtu: self.mtu,
            alias: Some(&self.host_alias),
            arp_off: false,
            master: Some(br.index),
            up: true,
        };
        let peer = VethEnd {
            name: &self.ifname,
            mac: self.container_mac,
            mtu: self.mtu,
            alias: None,
            arp_off: false,
            master: None,
            // veth_open() of a peer fails (ENOTCONN) until the pair is linked: up it afterwards.
            up: false,
        };
        let (hv, cl) = veth::ensure_pair(host, &cont, ns, &self.netns, &local, &peer).await?;
        if hv.master != Some(br.index) {
            host.set_master(hv.index, br.index).await?;
        }
        if self.hairpin {
            host.set_hairpin(hv.index, true).await?;
        }
        if !hv.up {
            host.set_up(hv.index).await?;
        }

        for (addr, _) in &self.addresses {
            cont.add_address(cl.index, *addr).await?;
        }
        if !cl.up {
            cont.set_up(cl.index).await?;
        }
        for r in &self.routes {
            cont.replace_route(&Route {
                dst: r.dst,
                gateway: r.gw,
                oif: Some(cl.index),
                link_scope: false,
            })
            .await?;
        }
        Ok(())
    }

    /// Compares the kernel with the plan (CHECK). Returns the first difference.
    async fn check(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
        let br = host
            .link_by_name(&self.bridge)
            .await?
            .ok_or_else(|| CniError::mismatch(format!("bridge {} does not exist", self.bridge)))?;
        let hv = veth::host_end(host, &self.host_veth).await?;
        if hv.master != Some(br.index) {
            return Err(CniError::mismatch(format!(
                "{} is not attached to bridge {}",
                self.host_veth, self.bridge
            )));
        }
        let cont = Netlink::in_netns(ns)?;
        let cl = veth::container_end(&cont, &self.ifname, &self.netns).await?;
        if !cl.up {
            return Err(CniError::mismatch(format!("{} is down", self.ifname)));
        }
        if let Some(m) = self.container_mac {
            if cl.mac != Some(m) {
                return Err(CniError::mismatch(format!(
                    "{} has MAC {:?}, expected {}",
                    self.ifname,
                    cl.mac.map(|m| m.to_string()),
                    m
                )));
            }
        }
        let have = cont.addresses(cl.index).await?;
        for (a, _) in &self.addresses {
            if !have.contains(a) {
                return Err(CniError::mismatch(format!(
                    "{} lacks address {a}",
                    self.ifname
                )));
            }
        }
        for v6 in [false, true] {
            let routes = cont.routes(v6).await?;
            for r in self.routes.iter().filter(|r| r.dst.addr().is_ipv6() == v6) {
                let found = routes
                    .iter()
                    .any(|k| k.dst == r.dst && (r.gw.is_none() || k.gateway == r.gw));
                if !found {
                    let via =
                        r.gw.map(|g: IpAddr| format!(" via {g}"))
                            .unwrap_or_default();
                    return Err(CniError::mismatch(format!(
                        "route {}{via} is missing in {}",
                        r.dst, self.netns
                    )));
                }
            }
        }
        Ok(())
    }
}
