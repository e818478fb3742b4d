//! Overlay mode, the deciding half: the plan of one attachment from the host's lease and the
//! allocated address, the range of the lease containers take addresses from, and the CNI
//! result. Pure.

use std::net::{IpAddr, Ipv4Addr};

use weft_kernel::MacAddr;

use super::{default_route, host_net, GATEWAY};
use crate::config::{NetworkConf, Range};
use crate::naming::{host_alias, host_veth_name, CONTAINER_MAC_PREFIX, HOST_MAC_PREFIX};
use crate::spec::{CniResult, Interface, IpConfig, RouteSpec};
use weft_api::records::{HostLease, OverlayPlan};

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
        host_alias: host_alias(&conf.network, container_id, ifname),
        host_mac: MacAddr::from_ip(HOST_MAC_PREFIX, IpAddr::V4(ip)),
        container_mac: conf
            .mac
            .unwrap_or_else(|| MacAddr::from_ip(CONTAINER_MAC_PREFIX, IpAddr::V4(ip))),
        ip,
        subnet: lease.subnet,
        mtu: conf.mtu.unwrap_or(lease.mtu),
        app_id: conf.app_id.clone(),
        port_mappings: conf.port_mappings.clone(),
    }
}

/// The lease's addresses containers get: the subnet's after the VTEP's, up to the last but
/// one. It replaces the configuration's ranges in overlay mode.
pub fn lease_range(lease: &HostLease) -> Range {
    let net = u32::from(lease.subnet.network());
    let last = u32::from(lease.subnet.broadcast());
    let (start, end) = if lease.subnet.prefix_len() >= 31 {
        (net, last)
    } else {
        (net + 1, last - 1)
    };
    Range {
        subnet: lease.subnet.into(),
        start: Ipv4Addr::from(start).into(),
        end: Ipv4Addr::from(end).into(),
        gateway: lease.vtep_ip().into(),
    }
}

/// The CNI result an attachment produces (host interface, container interface, its /32).
pub fn result(plan: &OverlayPlan) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: plan.host_veth.clone(),
                mac: plan.host_mac.to_string(),
                ..Default::default()
            },
            Interface {
                name: plan.ifname.clone(),
                mac: plan.container_mac.to_string(),
                mtu: Some(plan.mtu),
                sandbox: plan.netns.clone(),
                ..Default::default()
            },
        ],
        ips: vec![IpConfig {
            address: host_net(plan.ip),
            gateway: Some(GATEWAY.into()),
            interface: Some(1),
        }],
        routes: vec![RouteSpec::new(default_route(), Some(GATEWAY.into()))],
        dns: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_netconf;
    use std::collections::BTreeMap;

    fn lease() -> HostLease {
        HostLease {
            host: "cell1".into(),
            subnet: "10.255.3.0/24".parse().unwrap(),
            overlay: "10.255.0.0/16".parse().unwrap(),
            vtep: "weft.vtep".into(),
            mtu: 1450,
        }
    }

    #[test]
    fn range_leaves_out_the_vtep() {
        let r = lease_range(&lease());
        assert_eq!(r.start.to_string(), "10.255.3.1");
        assert_eq!(r.end.to_string(), "10.255.3.254");
        assert_eq!(r.gateway.to_string(), "10.255.3.0");
    }

    #[test]
    fn plan_for_a_container() {
        let j = r#"{"cniVersion":"1.1.0","name":"ov","type":"weft-cni","mode":"overlay","args":{"cni":{"app_id":"app-a"}}}"#;
        let c = NetworkConf::from_netconf(parse_netconf(j.as_bytes()).unwrap(), &BTreeMap::new())
            .unwrap();
        let p = plan(
            &c,
            &lease(),
            "c1",
            "eth0",
            "/run/netns/y",
            "10.255.3.2".parse().unwrap(),
        );
        assert_eq!(p.host_mac.to_string(), "0a:59:0a:ff:03:02");
        assert_eq!(p.container_mac.to_string(), "0a:58:0a:ff:03:02");
        assert_eq!((p.mtu, p.app_id.as_deref()), (1450, Some("app-a")));
        assert_eq!(p.host_veth, host_veth_name("ov", "c1", "eth0"));
        let r = result(&p);
        assert_eq!(r.ips[0].address.to_string(), "10.255.3.2/32");
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.routes[0].gw, Some(GATEWAY.into()));
        assert_eq!(r.interfaces[1].sandbox, "/run/netns/y");
    }
}
