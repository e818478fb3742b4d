//! Where this host meets the underlay: the interface (by name, or the one holding the
//! address given) and its address and MTU.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, bail, Result};
use weft_kernel::Netlink;

use crate::args::AgentArgs;

/// Where this host meets the underlay.
pub(crate) struct Underlay {
    pub ip: Ipv4Addr,
    pub dev: u32,
    /// The interface's name (the policy table accepts VXLAN on it only).
    pub name: String,
    pub mtu: u32,
}

pub(crate) async fn find_underlay(nl: &Netlink, args: &AgentArgs) -> Result<Underlay> {
    if let Some(name) = &args.underlay_dev {
        let l = nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("--underlay-dev: no interface {name}"))?;
        let ip = match args.underlay_ip {
            Some(ip) => ip,
            None => nl
                .addresses(l.index)
                .await?
                .into_iter()
                .find_map(|a| match a.addr() {
                    IpAddr::V4(v4) => Some(v4),
                    _ => None,
                })
                .ok_or_else(|| anyhow!("--underlay-dev: {name} has no IPv4 address"))?,
        };
        return Ok(Underlay {
            ip,
            dev: l.index,
            name: l.name,
            mtu: l.mtu,
        });
    }
    let ip = args
        .underlay_ip
        .ok_or_else(|| anyhow!("give --underlay-ip or --underlay-dev"))?;
    for l in nl.links().await? {
        if nl
            .addresses(l.index)
            .await?
            .iter()
            .any(|a| a.addr() == IpAddr::V4(ip))
        {
            return Ok(Underlay {
                ip,
                dev: l.index,
                name: l.name,
                mtu: l.mtu,
            });
        }
    }
    bail!("--underlay-ip: no interface holds {ip}")
}
