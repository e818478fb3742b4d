//! Bridge mode, the deciding half: what one container's network should look like, computed
//! from the configuration and the allocated addresses without touching the kernel, and the
//! CNI result it produces. Pure.

use std::net::IpAddr;

use ipnet::IpNet;
use weft_kernel::MacAddr;

use crate::config::NetworkConf;
use crate::ipam::Allocation;
use crate::naming::{bridge_mac, host_alias, host_veth_name, CONTAINER_MAC_PREFIX};
use crate::spec::{CniResult, Interface, IpConfig, RouteSpec};
use weft_api::records::{BridgePlan, Route};

/// Computes the plan of one attachment.
pub fn plan(
    conf: &NetworkConf,
    container_id: &str,
    ifname: &str,
    netns: &str,
    allocs: &[Allocation],
) -> BridgePlan {
    let addresses: Vec<(IpNet, IpAddr)> = allocs
        .iter()
        .filter_map(|a| {
            IpNet::new(a.ip, a.range.subnet.prefix_len())
                .ok()
                .map(|n| (n, a.range.gateway))
        })
        .collect();
    let bridge_addrs = if conf.is_gateway {
        allocs
            .iter()
            .filter_map(|a| IpNet::new(a.range.gateway, a.range.subnet.prefix_len()).ok())
            .collect()
    } else {
        Vec::new()
    };
    let gw_of = |v6: bool| {
        addresses
            .iter()
            .find(|(n, _)| n.addr().is_ipv6() == v6)
            .map(|(_, gw)| *gw)
    };
    let mut routes: Vec<Route> = match &conf.routes {
        Some(rs) => rs
            .iter()
            .map(|(dst, gw)| Route {
                dst: *dst,
                gw: gw.or_else(|| gw_of(dst.addr().is_ipv6())),
            })
            .collect(),
        None => Vec::new(),
    };
    // A default route via the gateway: always when no routes are configured, and when
    // isDefaultGateway asks for it.
    if conf.routes.is_none() || conf.is_default_gateway {
        for (net, gw) in &addresses {
            let dst: IpNet = if net.addr().is_ipv6() {
                "::/0"
            } else {
                "0.0.0.0/0"
            }
            .parse()
            .unwrap_or(*net);
            if !routes.iter().any(|r| r.dst == dst) {
                routes.push(Route { dst, gw: Some(*gw) });
            }
        }
    }
    let first_ip = addresses
        .iter()
        .find(|(n, _)| n.addr().is_ipv4())
        .or(addresses.first())
        .map(|(n, _)| n.addr());
    let container_mac = conf
        .mac
        .or_else(|| first_ip.map(|ip| MacAddr::from_ip(CONTAINER_MAC_PREFIX, ip)));
    let v4 = addresses
        .iter()
        .find(|(n, _)| n.addr().is_ipv4())
        .map(|(n, _)| n.addr());
    let port_mappings = match v4 {
        Some(ip) => conf
            .port_mappings
            .iter()
            .map(|pm| (pm.clone(), ip))
            .collect(),
        None => Vec::new(),
    };
    BridgePlan {
        network: conf.network.clone(),
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        bridge: conf.bridge.clone(),
        bridge_mac: bridge_mac(&conf.bridge),
        bridge_addrs,
        host_veth: host_veth_name(&conf.network, container_id, ifname),
        host_alias: host_alias(&conf.network, container_id, ifname),
        container_mac,
        mtu: conf.mtu,
        hairpin: conf.hairpin,
        addresses,
        routes,
        ip_masq: conf.ip_masq,
        port_mappings,
    }
}

/// The CNI result an attachment produces (bridge, host interface, container interface, IPs).
pub fn result(plan: &BridgePlan) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: plan.bridge.clone(),
                mac: plan.bridge_mac.to_string(),
                ..Default::default()
            },
            Interface {
                name: plan.host_veth.clone(),
                ..Default::default()
            },
            Interface {
                name: plan.ifname.clone(),
                mac: plan
                    .container_mac
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                mtu: plan.mtu,
                sandbox: plan.netns.clone(),
                ..Default::default()
            },
        ],
        ips: plan
            .addresses
            .iter()
            .map(|(net, gw)| IpConfig {
                address: *net,
                gateway: Some(*gw),
                interface: Some(2),
            })
            .collect(),
        routes: plan
            .routes
            .iter()
            .map(|r| RouteSpec::new(r.dst, r.gw))
            .collect(),
        dns: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_netconf;
    use std::collections::BTreeMap;

    fn conf(extra: &str) -> NetworkConf {
        let j = format!(
            r#"{{"cniVersion":"1.1.0","name":"net1","type":"weft-cni","ipam":{{"subnet":"10.88.0.0/16"}}{extra}}}"#
        );
        NetworkConf::from_netconf(parse_netconf(j.as_bytes()).unwrap(), &BTreeMap::new()).unwrap()
    }

    fn alloc(c: &NetworkConf, ip: &str) -> Vec<Allocation> {
        vec![Allocation {
            ip: ip.parse().unwrap(),
            range: c.range_sets[0][0].clone(),
        }]
    }

    #[test]
    fn plan_for_a_container() {
        let c = conf("");
        let p = plan(&c, "abc", "eth0", "/run/netns/x", &alloc(&c, "10.88.0.5"));
        assert_eq!(p.addresses[0].0.to_string(), "10.88.0.5/16");
        assert_eq!(p.bridge_addrs[0].to_string(), "10.88.0.1/16");
        assert_eq!(p.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(p.routes[0].gw.unwrap().to_string(), "10.88.0.1");
        assert_eq!(
            p.container_mac.map(|m| m.to_string()).as_deref(),
            Some("0a:58:0a:58:00:05")
        );
        assert!(p.host_veth.starts_with("weft") && p.host_veth.len() == 14);
        assert_eq!(p.host_veth, host_veth_name("net1", "abc", "eth0"));
        assert_ne!(p.host_veth, host_veth_name("net1", "abc", "eth1"));
        assert_eq!(p.host_alias, "weft:net1:abc:eth0");
        let r = result(&p);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.interfaces[2].sandbox, "/run/netns/x");
        assert_eq!(r.routes[0].gw, p.routes[0].gw);
    }

    #[test]
    fn explicit_routes_and_no_gateway() {
        let c = conf(r#","isGateway":false"#);
        let p = plan(&c, "abc", "eth0", "/x", &alloc(&c, "10.88.0.5"));
        assert!(p.bridge_addrs.is_empty());
        let j = r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/16","routes":[{"dst":"192.168.0.0/16"}]}}"#;
        let c = NetworkConf::from_netconf(parse_netconf(j.as_bytes()).unwrap(), &BTreeMap::new())
            .unwrap();
        let p = plan(&c, "abc", "eth0", "/x", &alloc(&c, "10.88.0.5"));
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].dst.to_string(), "192.168.0.0/16");
        assert_eq!(p.routes[0].gw.unwrap().to_string(), "10.88.0.1");
    }
}
