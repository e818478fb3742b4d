//! Overlay mode (seed 000, steps 1-2 and 11): a container is a routed point-to-point link, as
//! in Cloud Foundry's silk. No bridge: the container's interface has its overlay address as a
//! /32 and a default route via 169.254.0.1, the host end of its veth; the host routes the /32
//! to the veth. ARP is off on both ends, each holding a permanent neighbour entry for the
//! other (MACs derived from the container's address). Traffic to other hosts' subnets leaves
//! through the agent's VTEP; the agent marks it by app (the policy issue). Port mappings
//! are Cloud Foundry's netin: the host's ports table ([`crate::ports`]) DNATs them to the
//! overlay address; the host end gets route_localnet so that 127.0.0.1 works too.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use weft_kernel::link::VethEnd;
use weft_kernel::neigh::Neighbour;
use weft_kernel::netns::Netns;
use weft_kernel::route::Route;
use weft_kernel::{sysctl, MacAddr, Netlink};

use crate::config::{NetworkConf, PortMapping};
use crate::lease::{HostLease, GATEWAY};
use crate::plan::{alias_prefix, host_veth_name};
use crate::spec::{code, CniError, CniResult, Interface, IpConfig, RouteSpec};

/// One container attachment in overlay mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPlan {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub host_veth: String,
    pub host_alias: String,
    pub host_mac: MacAddr,
    pub container_mac: MacAddr,
    /// The container's overlay address.
    pub ip: Ipv4Addr,
    /// The host's lease subnet it came from.
    pub subnet: Ipv4Net,
    pub mtu: u32,
    /// The app the container belongs to (policies name apps; the agent marks by it).
    pub app_id: Option<String>,
    /// Host ports leading to the container (Cloud Foundry's netin; see [`crate::ports`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

/// Computes the plan of one attachment from the lease and the allocated address.
pub fn plan(
    conf: &NetworkConf,
    lease: &HostLease,
    container_id: &str,
    ifname: &str,
    netns: &str,
    ip: Ipv4Addr,
) -> OverlayPlan {
    OverlayPlan {
        network: conf.network.clone(),
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        host_veth: host_veth_name(&conf.network, container_id, ifname),
        host_alias: format!("{}{container_id}:{ifname}", alias_prefix(&conf.network)),
        host_mac: MacAddr::from_ip(0x59, IpAddr::V4(ip)),
        container_mac: conf
            .mac
            .unwrap_or_else(|| MacAddr::from_ip(0x58, IpAddr::V4(ip))),
        ip,
        subnet: lease.subnet,
        mtu: conf.mtu.unwrap_or(lease.mtu),
        app_id: conf.app_id.clone(),
        port_mappings: conf.port_mappings.clone(),
    }
}

fn host_net(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

impl OverlayPlan {
    fn routes(&self) -> Vec<RouteSpec> {
        vec![RouteSpec {
            dst: "0.0.0.0/0"
                .parse()
                .unwrap_or(host_net(Ipv4Addr::UNSPECIFIED)),
            gw: Some(GATEWAY.into()),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }]
    }

    pub fn result(&self) -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: self.host_veth.clone(),
                    mac: self.host_mac.to_string(),
                    ..Default::default()
                },
                Interface {
                    name: self.ifname.clone(),
                    mac: self.container_mac.to_string(),
                    mtu: Some(self.mtu),
                    sandbox: self.netns.clone(),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: host_net(self.ip),
                gateway: Some(GATEWAY.into()),
                interface: Some(1),
            }],
            routes: self.routes(),
            dns: Default::default(),
        }
    }
}

/// Creates the veth pair, the /32s, the link-local gateway and the neighbour entries.
/// Idempotent.
pub async fn apply(plan: &OverlayPlan, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
    sysctl::set("net.ipv4.ip_forward", "1")?;
    let cont = Netlink::in_netns(ns)?;
    let local = VethEnd {
        name: &plan.host_veth,
        mac: Some(plan.host_mac),
        mtu: Some(plan.mtu),
        alias: Some(&plan.host_alias),
        arp_off: true,
        master: None,
        up: true,
    };
    let peer = VethEnd {
        name: &plan.ifname,
        mac: Some(plan.container_mac),
        mtu: Some(plan.mtu),
        alias: None,
        arp_off: true,
        master: None,
        // veth_open() of a peer fails (ENOTCONN) until the pair is linked: up it afterwards.
        up: false,
    };
    let (hv, cl) = crate::veth::ensure_pair(host, &cont, ns, &plan.netns, &local, &peer).await?;

    // Host end: 169.254.0.1/32, the container's /32 routed to it, its MAC pinned.
    host.add_address(hv.index, host_net(GATEWAY)).await?;
    if !plan.port_mappings.is_empty() {
        // The host's own connections to 127.0.0.1 are DNAT'd out through this link; the
        // ports table keeps loopback destinations from coming in through it.
        sysctl::set_path(
            &sysctl::ipv4_conf_path(&plan.host_veth, "route_localnet"),
            "1",
        )?;
    }
    if !hv.up {
        host.set_up(hv.index).await?;
    }
    host.replace_neighbour(&Neighbour {
        index: hv.index,
        ip: plan.ip.into(),
        mac: plan.container_mac,
    })
    .await?;
    host.replace_route(&Route {
        dst: host_net(plan.ip),
        gateway: None,
        oif: Some(hv.index),
        link_scope: true,
    })
    .await?;

    // Container end: its /32, the gateway on-link, a default route, the gateway's MAC pinned.
    cont.add_address(cl.index, host_net(plan.ip)).await?;
    if !cl.up {
        cont.set_up(cl.index).await?;
    }
    cont.replace_neighbour(&Neighbour {
        index: cl.index,
        ip: GATEWAY.into(),
        mac: plan.host_mac,
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
        dst: "0.0.0.0/0"
            .parse()
            .unwrap_or(host_net(Ipv4Addr::UNSPECIFIED)),
        gateway: Some(GATEWAY.into()),
        oif: Some(cl.index),
        link_scope: false,
    })
    .await?;
    Ok(())
}

/// Removes the veth pair (its routes and neighbours go with it).
pub async fn teardown(plan: &OverlayPlan, host: &Netlink) -> Result<(), CniError> {
    host.del_link_by_name(&plan.host_veth).await?;
    Ok(())
}

/// CHECK: the kernel matches the plan.
pub async fn check(plan: &OverlayPlan, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
    let mismatch = |m: String| CniError::new(code::CHECK_MISMATCH, m);
    let hv = host
        .link_by_name(&plan.host_veth)
        .await?
        .ok_or_else(|| mismatch(format!("host interface {} does not exist", plan.host_veth)))?;
    let routes = host.routes(false).await?;
    if !routes
        .iter()
        .any(|r| r.dst == host_net(plan.ip) && r.oif == Some(hv.index))
    {
        return Err(mismatch(format!(
            "the host has no route {}/32 dev {}",
            plan.ip, plan.host_veth
        )));
    }
    let cont = Netlink::in_netns(ns)?;
    let cl = cont
        .link_by_name(&plan.ifname)
        .await?
        .ok_or_else(|| mismatch(format!("{} does not exist in {}", plan.ifname, plan.netns)))?;
    if !cont.addresses(cl.index).await?.contains(&host_net(plan.ip)) {
        return Err(mismatch(format!(
            "{} lacks address {}/32",
            plan.ifname, plan.ip
        )));
    }
    let croutes = cont.routes(false).await?;
    if !croutes
        .iter()
        .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(GATEWAY.into()))
    {
        return Err(mismatch(format!(
            "route 0.0.0.0/0 via {GATEWAY} is missing in {}",
            plan.netns
        )));
    }
    let neigh = cont.neighbours(cl.index).await?;
    if !neigh.iter().any(|n| n.ip == IpAddr::V4(GATEWAY)) {
        return Err(mismatch(format!(
            "the neighbour entry for {GATEWAY} is missing in {}",
            plan.netns
        )));
    }
    Ok(())
}
