//! Bridge mode, the doing half: apply a [`BridgePlan`] to the kernel, undo it, check it.
//! Seed 003 by hand, per container: veth pair (peer created inside the container's
//! namespace), host end on the bridge, address and routes inside. The network's masquerade
//! is [`crate::firewall`]'s, host ports are [`crate::ports`]'.

use std::net::IpAddr;

use weft_kernel::link::VethEnd;
use weft_kernel::netns::Netns;
use weft_kernel::route::Route;
use weft_kernel::{sysctl, Netlink};

use crate::plan::BridgePlan;
use crate::spec::{code, CniError};

/// Creates the bridge and the container's veth, addresses and routes. Idempotent: applying
/// the same plan again changes nothing.
pub async fn apply(plan: &BridgePlan, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
    let br = host
        .ensure_bridge(&plan.bridge, plan.mtu, Some(plan.bridge_mac))
        .await?;
    for a in &plan.bridge_addrs {
        host.add_address(br.index, *a).await?;
    }
    if !plan.port_mappings.is_empty() {
        // DNAT of 127.0.0.1 to a container needs local-net routing on the bridge.
        sysctl::set_path(&sysctl::ipv4_conf_path(&plan.bridge, "route_localnet"), "1")?;
    }
    // The host routes for its containers when it is their gateway, masquerades them, or maps
    // ports to them (as the reference bridge plugin does).
    if plan.ip_masq || !plan.port_mappings.is_empty() || !plan.bridge_addrs.is_empty() {
        sysctl::set("net.ipv4.ip_forward", "1")?;
    }

    let cont = Netlink::in_netns(ns)?;
    let local = VethEnd {
        name: &plan.host_veth,
        mac: None,
        mtu: plan.mtu,
        alias: Some(&plan.host_alias),
        arp_off: false,
        master: Some(br.index),
        up: true,
    };
    let peer = VethEnd {
        name: &plan.ifname,
        mac: plan.container_mac,
        mtu: plan.mtu,
        alias: None,
        arp_off: false,
        master: None,
        // veth_open() of a peer fails (ENOTCONN) until the pair is linked: up it afterwards.
        up: false,
    };
    let (hv, cl) = crate::veth::ensure_pair(host, &cont, ns, &plan.netns, &local, &peer).await?;
    if hv.master != Some(br.index) {
        host.set_master(hv.index, br.index).await?;
    }
    if plan.hairpin {
        host.set_hairpin(hv.index, true).await?;
    }
    if !hv.up {
        host.set_up(hv.index).await?;
    }

    for (addr, _) in &plan.addresses {
        cont.add_address(cl.index, *addr).await?;
    }
    if !cl.up {
        cont.set_up(cl.index).await?;
    }
    for r in &plan.routes {
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

/// Removes what the plan created for this container: the veth pair (deleting the host end
/// removes both ends, also when the container's namespace is already gone). The bridge and
/// the network's firewall table stay for the network's other containers.
pub async fn teardown(plan: &BridgePlan, host: &Netlink) -> Result<(), CniError> {
    host.del_link_by_name(&plan.host_veth).await?;
    Ok(())
}

/// Compares the kernel with the plan (CHECK). Returns the first difference.
pub async fn check(plan: &BridgePlan, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
    let mismatch = |m: String| CniError::new(code::CHECK_MISMATCH, m);
    let br = host
        .link_by_name(&plan.bridge)
        .await?
        .ok_or_else(|| mismatch(format!("bridge {} does not exist", plan.bridge)))?;
    let hv = host
        .link_by_name(&plan.host_veth)
        .await?
        .ok_or_else(|| mismatch(format!("host interface {} does not exist", plan.host_veth)))?;
    if hv.master != Some(br.index) {
        return Err(mismatch(format!(
            "{} is not attached to bridge {}",
            plan.host_veth, plan.bridge
        )));
    }
    let cont = Netlink::in_netns(ns)?;
    let cl = cont
        .link_by_name(&plan.ifname)
        .await?
        .ok_or_else(|| mismatch(format!("{} does not exist in {}", plan.ifname, plan.netns)))?;
    if !cl.up {
        return Err(mismatch(format!("{} is down", plan.ifname)));
    }
    if let Some(m) = plan.container_mac {
        if cl.mac != Some(m) {
            return Err(mismatch(format!(
                "{} has MAC {:?}, expected {}",
                plan.ifname,
                cl.mac.map(|m| m.to_string()),
                m
            )));
        }
    }
    let have = cont.addresses(cl.index).await?;
    for (a, _) in &plan.addresses {
        if !have.contains(a) {
            return Err(mismatch(format!("{} lacks address {a}", plan.ifname)));
        }
    }
    for v6 in [false, true] {
        let routes = cont.routes(v6).await?;
        for r in plan.routes.iter().filter(|r| r.dst.addr().is_ipv6() == v6) {
            let found = routes
                .iter()
                .any(|k| k.dst == r.dst && (r.gw.is_none() || k.gateway == r.gw));
            if !found {
                let via =
                    r.gw.map(|g: IpAddr| format!(" via {g}"))
                        .unwrap_or_default();
                return Err(mismatch(format!(
                    "route {}{via} is missing in {}",
                    r.dst, plan.netns
                )));
            }
        }
    }
    Ok(())
}
