//! An attachment's record: its plan, what one container's network in one network should be
//! (bridge or overlay mode), written before anything is applied. The plugin's DEL, CHECK and
//! GC undo and compare exactly what it says; the agent takes the overlay containers' address,
//! MAC, host interface and app from it.
//!
//! The JSON is the one weft-cni has always written (`"mode": "bridge" | "overlay"` beside
//! the fields, MACs as `aa:bb:cc:dd:ee:ff` text): records of older versions read back as
//! they are, and older versions read what this one writes.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use weft_kernel::MacAddr;

/// The record of one attachment, in either mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Plan {
    Bridge(BridgePlan),
    Overlay(OverlayPlan),
}

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
    pub routes: Vec<Route>,
    pub ip_masq: bool,
    /// Port mappings with the container address they lead to.
    pub port_mappings: Vec<(PortMapping, IpAddr)>,
}

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
    /// Host ports leading to the container (Cloud Foundry's netin).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

/// A route in the container (bridge mode): a destination and, unless on-link, a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// A host port leading to a container port (validated from the runtime's portMappings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// One host address, or every address (`None`).
    pub host_ip: Option<IpAddr>,
}

impl PortMapping {
    /// Do both map the same host port (protocol, port and address)?
    pub fn same_host_port(&self, other: &PortMapping) -> bool {
        (self.protocol.as_str(), self.host_port, self.host_ip)
            == (other.protocol.as_str(), other.host_port, other.host_ip)
    }
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
    use serde_json::json;

    /// Records as weft-cni has written them (bridge; overlay before and after host ports):
    /// each reads back and is written again field for field.
    #[test]
    fn records_keep_their_shape() {
        let bridge = json!({
            "mode": "bridge", "network": "net1", "container_id": "abc", "ifname": "eth0",
            "netns": "/run/netns/x", "bridge": "weft0", "bridge_mac": "0a:5a:01:02:03:04",
            "bridge_addrs": ["10.88.0.1/16"], "host_veth": "weft0123456789",
            "host_alias": "weft:net1:abc:eth0", "container_mac": "0a:58:0a:58:00:05",
            "mtu": null, "hairpin": false,
            "addresses": [["10.88.0.5/16", "10.88.0.1"]],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "10.99.0.0/16"}],
            "ip_masq": true,
            "port_mappings": [[{"host_port": 8080, "container_port": 80, "protocol": "tcp",
                                "host_ip": null}, "10.88.0.5"]]
        });
        let mut overlay = json!({
            "mode": "overlay", "network": "ov", "container_id": "c1", "ifname": "eth0",
            "netns": "/run/netns/y", "host_veth": "weftabcdef0123", "host_alias": "weft:ov:c1:eth0",
            "host_mac": "0a:59:0a:ff:03:02", "container_mac": "0a:58:0a:ff:03:02",
            "ip": "10.255.3.2", "subnet": "10.255.3.0/24", "mtu": 1450, "app_id": "app-a"
        });
        for v in [bridge.clone(), overlay.clone()] {
            let p: Plan = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&p).unwrap(), v);
        }
        overlay["port_mappings"] = json!([{"host_port": 2222, "container_port": 22,
                                           "protocol": "tcp", "host_ip": "127.0.0.1"}]);
        let p: Plan = serde_json::from_value(overlay.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), overlay);
        assert_eq!(p.addresses(), vec!["10.255.3.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.port_mappings()[0].1.to_string(), "10.255.3.2");
        let p: Plan = serde_json::from_value(bridge).unwrap();
        assert_eq!((p.network(), p.app_id()), ("net1", None));
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
    fn repeat_add_port_mappings_lead_to_the_first_ipv4_address() {
        let mut p: Plan = serde_json::from_value(json!({
            "mode": "bridge", "network": "n", "container_id": "c", "ifname": "eth0",
            "netns": "/x", "bridge": "weft0", "bridge_mac": "0a:5a:01:02:03:04", "bridge_addrs": [],
            "host_veth": "weft1", "host_alias": "a", "container_mac": "", "mtu": null,
            "hairpin": false, "addresses": [["fd00::5/64", "fd00::1"], ["10.88.0.5/16", "10.88.0.1"]],
            "routes": [], "ip_masq": false, "port_mappings": []
        }))
        .unwrap();
        let pm = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None,
        };
        p.set_port_mappings(std::slice::from_ref(&pm));
        assert_eq!(p.port_mappings(), vec![(pm, "10.88.0.5".parse().unwrap())]);
    }
}
