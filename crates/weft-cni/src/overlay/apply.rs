//! Overlay mode, the doing half: apply an [`OverlayPlan`] to the kernel, undo it, check it.
//! Idempotent: applying the same plan twice changes nothing.
//!
//! Kernel objects owned: the attachment's veth pair (peer created inside the container's
//! namespace, see [`crate::veth`]); on the host end 169.254.0.1/32, the container's /32
//! routed to it and a permanent neighbour entry, route_localnet when it has host ports; in
//! the container its /32, the gateway on-link, the default route and the gateway's
//! permanent neighbour entry. And `net.ipv4.ip_forward`, which the host needs to route.

use std::net::IpAddr;

use weft_kernel::link::VethEnd;
use weft_kernel::neigh::Neighbour;
use weft_kernel::netns::Netns;
use weft_kernel::route::Route;
use weft_kernel::{sysctl, Netlink};

use super::{default_route, host_net, GATEWAY};
use crate::driver::Driver;
use crate::spec::CniError;
use crate::veth;
use weft_api::records::OverlayPlan;

impl Driver for OverlayPlan {
    fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// Creates the veth pair, the /32s, the link-local gateway and the neighbour entries.
    /// Idempotent.
    async fn setup(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
        sysctl::set("net.ipv4.ip_forward", "1")?;
        let cont = Netlink::in_netns(ns)?;
        let local = VethEnd {
            name: &self.host_veth,
            mac: Some(self.host_mac),
            mtu: Some(self.mtu),
            alias: Some(&self.host_alias),
            arp_off: true,
            master: None,
            up: true,
        };
        let peer = VethEnd {
            name: &self.ifname,
            mac: Some(self.container_mac),
            mtu: Some(self.mtu),
            alias: None,
            arp_off: true,
            master: None,
            // veth_open() of a peer fails (ENOTCONN) until the pair is linked: up it afterwards.
            up: false,
        };
        let (hv, cl) = veth::ensure_pair(host, &cont, ns, &self.netns, &local, &peer).await?;

        // Host end: 169.254.0.1/32, the container's /32 routed to it, its MAC pinned.
        host.add_address(hv.index, host_net(GATEWAY)).await?;
        if !self.port_mappings.is_empty() {
            // The host's own connections to 127.0.0.1 are DNAT'd out through this link; the
            // ports table keeps loopback destinations from coming in through it.
            sysctl::set_path(
                &sysctl::ipv4_conf_path(&self.host_veth, "route_localnet"),
                "1",
            )?;
        }
        if !hv.up {
            host.set_up(hv.index).await?;
        }
        host.replace_neighbour(&Neighbour {
            index: hv.index,
            ip: self.ip.into(),
            mac: self.container_mac,
        })
        .await?;
        host.replace_route(&Route {
            dst: host_net(self.ip),
            gateway: None,
            oif: Some(hv.index),
            link_scope: true,
        })
        .await?;

        // Container end: its /32, the gateway on-link, a default route, the gateway's MAC pinned.
        cont.add_address(cl.index, host_net(self.ip)).await?;
        if !cl.up {
            cont.set_up(cl.index).await?;
        }
        cont.replace_neighbour(&Neighbour {
            index: cl.index,
            ip: GATEWAY.into(),
            mac: self.host_mac,
        })
        .await?;
        cont.replace_route(&Route {
            dst: host_net(GATEWAY),
            gateway: None,
            oif: Some(cl.index),
            link_scope: true,
        })
        .await?;
        cont.replace_route(&Route {
            dst: default_route(),
            gateway: Some(GATEWAY.into()),
            oif: Some(cl.index),
            link_scope: false,
        })
        .await?;
        Ok(())
    }

    /// CHECK: the kernel matches the plan.
    async fn check(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
        let hv = veth::host_end(host, &self.host_veth).await?;
        let routes = host.routes(false).await?;
        if !routes
            .iter()
            .any(|r| r.dst == host_net(self.ip) && r.oif == Some(hv.index))
        {
            return Err(CniError::mismatch(format!(
                "the host has no route {}/32 dev {}",
                self.ip, self.host_veth
            )));
        }
        let cont = Netlink::in_netns(ns)?;
        let cl = veth::container_end(&cont, &self.ifname, &self.netns).await?;
        if !cont.addresses(cl.index).await?.contains(&host_net(self.ip)) {
            return Err(CniError::mismatch(format!(
                "{} lacks address {}/32",
                self.ifname, self.ip
            )));
        }
        let croutes = cont.routes(false).await?;
        if !croutes
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(GATEWAY.into()))
        {
            return Err(CniError::mismatch(format!(
                "route 0.0.0.0/0 via {GATEWAY} is missing in {}",
                self.netns
            )));
        }
        let neigh = cont.neighbours(cl.index).await?;
        if !neigh.iter().any(|n| n.ip == IpAddr::V4(GATEWAY)) {
            return Err(CniError::mismatch(format!(
                "the neighbour entry for {GATEWAY} is missing in {}",
                self.netns
            )));
        }
        Ok(())
    }
}
