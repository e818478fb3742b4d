//! The plan: what one container's network should look like in bridge mode, computed from the
//! configuration and the allocated addresses, without touching the kernel. ADD applies it,
//! DEL and GC undo exactly what it says, CHECK compares the kernel against it. It is stored
//! with the attachment (see [`crate::store`]) before anything is applied.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_kernel::MacAddr;

use crate::config::{NetworkConf, PortMapping};
use crate::ipam::Allocation;
use crate::spec::{CniResult, Interface, IpConfig, RouteSpec};

/// One container attachment in bridge mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgePlan {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub bridge: String,
    pub bridge_mac: MacAddr,
    /// Gateway addresses put on the bridge (empty unless isGateway).
    pub bridge_addrs: Vec<IpNet>,
    /// Host end of the veth pair: `weft` + 10 hex digits of a hash of network, container, ifname.
    pub host_veth: String,
    /// Alias set on the host end, so GC can find weft's links for this network.
    pub host_alias: String,
    /// The container end's MAC (`""` in the record when none was set).
    #[serde(with = "weft_kernel::mac::or_empty")]
    pub container_mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    /// Container addresses with their subnet's prefix length, and the gateway of each.
    pub addresses: Vec<(IpNet, IpAddr)>,
    pub routes: Vec<RouteSpec>,
    pub ip_masq: bool,
    /// Port mappings with the container address they lead to.
    pub port_mappings: Vec<(PortMapping, IpAddr)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// The host-side veth name of an attachment (fits IFNAMSIZ).
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "weft{}",
        &hex(&hash(&[network, container_id, ifname]))[..10]
    )
}

/// The alias prefix marking the host-side links of `network`.
pub fn alias_prefix(network: &str) -> String {
    format!("weft:{network}:")
}

/// A stable MAC for a bridge, from its name.
pub fn bridge_mac(bridge: &str) -> MacAddr {
    let h = hash(&["bridge", bridge]);
    MacAddr::new([0x0a, 0x5a, h[0], h[1], h[2], h[3]])
}

/// Computes the plan of one attachment.
pub fn bridge(
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
    let route = |dst: IpNet, gw: Option<IpAddr>| RouteSpec {
        dst,
        gw,
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    };
    let mut routes: Vec<RouteSpec> = match &conf.routes {
        Some(rs) => rs
            .iter()
            .map(|(dst, gw)| route(*dst, gw.or_else(|| gw_of(dst.addr().is_ipv6()))))
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
                routes.push(route(dst, Some(*gw)));
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
        .or_else(|| first_ip.map(|ip| MacAddr::from_ip(0x58, ip)));
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
        host_alias: format!("{}{container_id}:{ifname}", alias_prefix(&conf.network)),
        container_mac,
        mtu: conf.mtu,
        hairpin: conf.hairpin,
        addresses,
        routes,
        ip_masq: conf.ip_masq,
        port_mappings,
    }
}

impl BridgePlan {
    /// The CNI result this attachment produces (host interface, container interface, IPs).
    pub fn result(&self) -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: self.bridge.clone(),
                    mac: self.bridge_mac.to_string(),
                    ..Default::default()
                },
                Interface {
                    name: self.host_veth.clone(),
                    ..Default::default()
                },
                Interface {
                    name: self.ifname.clone(),
                    mac: self
                        .container_mac
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    mtu: self.mtu,
                    sandbox: self.netns.clone(),
                    ..Default::default()
                },
            ],
            ips: self
                .addresses
                .iter()
                .map(|(net, gw)| IpConfig {
                    address: *net,
                    gateway: Some(*gw),
                    interface: Some(2),
                })
                .collect(),
            routes: self.routes.clone(),
            dns: Default::default(),
        }
    }
}

/// The record of one attachment, in either mode; what DEL, CHECK, GC and `weft containers`
/// read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Plan {
    Bridge(BridgePlan),
    Overlay(crate::overlay::OverlayPlan),
}

impl Plan {
    pub fn network(&self) -> &str {
        match self {
            Plan::Bridge(p) => &p.network,
            Plan::Overlay(p) => &p.network,
        }
    }
    pub fn container_id(&self) -> &str {
        match self {
            Plan::Bridge(p) => &p.container_id,
            Plan::Overlay(p) => &p.container_id,
        }
    }
    pub fn ifname(&self) -> &str {
        match self {
            Plan::Bridge(p) => &p.ifname,
            Plan::Overlay(p) => &p.ifname,
        }
    }
    pub fn netns(&self) -> &str {
        match self {
            Plan::Bridge(p) => &p.netns,
            Plan::Overlay(p) => &p.netns,
        }
    }
    pub fn host_veth(&self) -> &str {
        match self {
            Plan::Bridge(p) => &p.host_veth,
            Plan::Overlay(p) => &p.host_veth,
        }
    }
    /// The container's addresses.
    pub fn addresses(&self) -> Vec<IpAddr> {
        match self {
            Plan::Bridge(p) => p.addresses.iter().map(|(n, _)| n.addr()).collect(),
            Plan::Overlay(p) => vec![p.ip.into()],
        }
    }
    pub fn app_id(&self) -> Option<&str> {
        match self {
            Plan::Bridge(_) => None,
            Plan::Overlay(p) => p.app_id.as_deref(),
        }
    }
    pub fn result(&self) -> CniResult {
        match self {
            Plan::Bridge(p) => p.result(),
            Plan::Overlay(p) => p.result(),
        }
    }
    /// The container's port mappings, each with the address it leads to.
    pub fn port_mappings(&self) -> Vec<(PortMapping, IpAddr)> {
        match self {
            Plan::Bridge(p) => p.port_mappings.clone(),
            Plan::Overlay(p) => p
                .port_mappings
                .iter()
                .map(|pm| (pm.clone(), IpAddr::V4(p.ip)))
                .collect(),
        }
    }
    /// Replaces the port mappings (a repeat ADD that asks for others). In bridge mode they
    /// lead to the first IPv4 address; without one there are none.
    pub fn set_port_mappings(&mut self, pms: &[PortMapping]) {
        match self {
            Plan::Bridge(p) => {
                let v4 = p
                    .addresses
                    .iter()
                    .map(|(n, _)| n.addr())
                    .find(IpAddr::is_ipv4);
                p.port_mappings = v4
                    .map(|ip| pms.iter().map(|pm| (pm.clone(), ip)).collect())
                    .unwrap_or_default();
            }
            Plan::Overlay(p) => p.port_mappings = pms.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_netconf, NetworkConf};
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
        let p = bridge(&c, "abc", "eth0", "/run/netns/x", &alloc(&c, "10.88.0.5"));
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
        let r = p.result();
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.interfaces[2].sandbox, "/run/netns/x");
    }

    /// Records older versions wrote (MACs as text) read into the typed plans, and the typed
    /// plans write them byte for byte the same (an older version reads what this one wrote).
    #[test]
    fn records_of_older_versions_read_and_write_the_same() {
        let bridge = r#"{"mode":"bridge","network":"net1","container_id":"abc","ifname":"eth0","netns":"/run/netns/x","bridge":"weft0","bridge_mac":"0a:5a:12:34:56:78","bridge_addrs":["10.88.0.1/16"],"host_veth":"weft0123456789","host_alias":"weft:net1:abc:eth0","container_mac":"0a:58:0a:58:00:05","mtu":null,"hairpin":false,"addresses":[["10.88.0.5/16","10.88.0.1"]],"routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"}],"ip_masq":true,"port_mappings":[[{"host_port":8080,"container_port":80,"protocol":"tcp","host_ip":null},"10.88.0.5"]]}"#;
        let overlay = r#"{"mode":"overlay","network":"ov","container_id":"c1","ifname":"eth0","netns":"/run/netns/y","host_veth":"weftabcdef0123","host_alias":"weft:ov:c1:eth0","host_mac":"0a:59:0a:ff:07:02","container_mac":"0a:58:0a:ff:07:02","ip":"10.255.7.2","subnet":"10.255.7.0/24","mtu":1450,"app_id":"app-a"}"#;
        let no_mac = bridge.replace("\"0a:58:0a:58:00:05\"", "\"\"");
        for old in [bridge, overlay, no_mac.as_str()] {
            let p: Plan = serde_json::from_str(old).unwrap_or_else(|e| panic!("{old}: {e}"));
            assert_eq!(serde_json::to_string(&p).expect("encode"), old);
        }
        let Plan::Bridge(b) = serde_json::from_str(bridge).unwrap() else {
            panic!("bridge")
        };
        assert_eq!(
            b.bridge_mac,
            MacAddr::new([0x0a, 0x5a, 0x12, 0x34, 0x56, 0x78])
        );
        assert_eq!(
            b.container_mac,
            Some(MacAddr::new([0x0a, 0x58, 10, 88, 0, 5]))
        );
        let Plan::Bridge(b) = serde_json::from_str(&no_mac).unwrap() else {
            panic!("bridge")
        };
        assert_eq!(b.container_mac, None);
        let Plan::Overlay(o) = serde_json::from_str(overlay).unwrap() else {
            panic!("overlay")
        };
        assert_eq!(o.host_mac.to_string(), "0a:59:0a:ff:07:02");
        // A record whose MAC is not one is refused, naming it, not read half.
        let bad = overlay.replace("0a:59:0a:ff:07:02", "0a:59:0a:ff:07");
        let e = serde_json::from_str::<Plan>(&bad).expect_err("bad MAC");
        assert!(e.to_string().contains("invalid MAC address"), "{e}");
    }

    #[test]
    fn explicit_routes_and_no_gateway() {
        let c = conf(r#","isGateway":false"#);
        let p = bridge(&c, "abc", "eth0", "/x", &alloc(&c, "10.88.0.5"));
        assert!(p.bridge_addrs.is_empty());
        let j = r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/16","routes":[{"dst":"192.168.0.0/16"}]}}"#;
        let c = NetworkConf::from_netconf(parse_netconf(j.as_bytes()).unwrap(), &BTreeMap::new())
            .unwrap();
        let p = bridge(&c, "abc", "eth0", "/x", &alloc(&c, "10.88.0.5"));
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].dst.to_string(), "192.168.0.0/16");
        assert_eq!(p.routes[0].gw.unwrap().to_string(), "10.88.0.1");
    }
}
