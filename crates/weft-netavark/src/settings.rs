//! A network's weft settings, read and checked from podman's network configuration: what
//! `create` validates and completes, and what `setup`/`teardown` read again (the stored
//! configuration is not trusted either). Errors name the field as podman spells it.
//!
//! Options (`podman network create -d weft --opt K=V`):
//!
//! | option       | values                     | default                       |
//! |--------------|----------------------------|-------------------------------|
//! | `mode`       | `bridge`, `overlay`        | `bridge`                      |
//! | `mtu`        | 68..65535                  | the kernel's (1500)           |
//! | `data_dir`   | an absolute path           | weft-cni's, /var/lib/weft/cni |
//! | `lease_file` | an absolute path (overlay) | /run/weft/lease.json          |

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::api::{LeaseRange, Network, Subnet};
use crate::Error;

/// The options weft knows.
pub const OPTIONS: &[&str] = &["mode", "mtu", "data_dir", "lease_file"];

/// How the network's containers are connected (weft-cni's modes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A bridge on the host (the network's `network_interface`), addresses from its subnets.
    Bridge { bridge: String },
    /// Routed /32 per container, addresses from the host's overlay lease (the agent's).
    Overlay { lease_file: Option<PathBuf> },
}

/// One subnet, checked: gateway and lease range filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSubnet {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
}

/// A network's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub mode: Mode,
    pub mtu: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub subnets: Vec<CheckedSubnet>,
    pub internal: bool,
    /// Static routes (destination, gateway).
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::new(format!("{field}: {why}"))
}

/// The first usable address of a subnet (the network address itself for /31, /32, /127, /128).
fn first_usable(net: &IpNet) -> IpAddr {
    if net.prefix_len() + 1 >= net.max_prefix_len() {
        return net.network();
    }
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + 1).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
    }
}

/// The interface name weft gives a bridge-mode network's bridge when podman names none:
/// `wfb` and the first 12 digits of the network's id (a name per network, at most 15 bytes).
pub fn default_bridge(id: &str) -> String {
    let digits: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("wfb{digits}")
}

impl Settings {
    /// Reads and checks a network's configuration.
    pub fn of(net: &Network) -> Result<Settings, Error> {
        weft_cni::spec::valid_name(&net.name, weft_cni::spec::MAX_NETWORK_NAME)
            .map_err(|e| invalid("name", e))?;
        let empty = BTreeMap::new();
        let opts = net.options.as_ref().unwrap_or(&empty);
        for k in opts.keys() {
            if !OPTIONS.contains(&k.as_str()) {
                return Err(invalid(
                    &format!("options.{k}"),
                    format!("unknown weft option (weft knows: {})", OPTIONS.join(", ")),
                ));
            }
        }
        let path_opt = |k: &str| -> Result<Option<PathBuf>, Error> {
            match opts.get(k) {
                None => Ok(None),
                Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
                    Ok(Some(PathBuf::from(p)))
                }
                Some(p) => Err(invalid(
                    &format!("options.{k}"),
                    format!("{p:?} must be an absolute path without '..'"),
                )),
            }
        };
        let mtu = match opts.get("mtu") {
            None => None,
            Some(s) => match s.parse::<u32>() {
                Ok(m) if (68..=65535).contains(&m) => Some(m),
                _ => {
                    return Err(invalid(
                        "options.mtu",
                        format!("{s:?} is not an MTU (68..65535)"),
                    ))
                }
            },
        };
        let data_dir = path_opt("data_dir")?;
        let lease_file = path_opt("lease_file")?;
        let subnets = net.subnets.as_deref().unwrap_or_default();
        let mode = match opts.get("mode").map(String::as_str) {
            None | Some("bridge") => {
                if lease_file.is_some() {
                    return Err(invalid(
                        "options.lease_file",
                        "only overlay mode (--opt mode=overlay) reads a lease",
                    ));
                }
                let bridge = net
                    .network_interface
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| default_bridge(&net.id));
                weft_kernel::link::validate_ifname(&bridge)
                    .and_then(|()| weft_cni::spec::valid_ifname(&bridge))
                    .map_err(|e| invalid("network_interface", e))?;
                if subnets.is_empty() {
                    return Err(invalid(
                        "subnets",
                        "weft's bridge mode needs a subnet (podman network create -d weft --subnet CIDR)",
                    ));
                }
                Mode::Bridge { bridge }
            }
            Some("overlay") => {
                if !subnets.is_empty() {
                    return Err(invalid(
                        "subnets",
                        "overlay mode takes addresses from the host's lease (weft agent); leave --subnet out",
                    ));
                }
                Mode::Overlay { lease_file }
            }
            Some(m) => {
                return Err(invalid(
                    "options.mode",
                    format!("{m:?} is not a mode (bridge, overlay)"),
                ))
            }
        };
        if let Some(d) = net
            .ipam_options
            .as_ref()
            .and_then(|o| o.get("driver"))
            .filter(|d| !matches!(d.as_str(), "host-local" | "none" | ""))
        {
            return Err(invalid(
                "ipam_options.driver",
                format!(
                    "{d:?}: weft takes podman's addresses (host-local) or chooses its own (none)"
                ),
            ));
        }
        let mut checked: Vec<CheckedSubnet> = Vec::new();
        for (i, s) in subnets.iter().enumerate() {
            let c = check_subnet(&format!("subnets[{i}]"), s)?;
            if let Some(o) = checked.iter().find(|o| {
                o.subnet.contains(&c.subnet.network()) || c.subnet.contains(&o.subnet.network())
            }) {
                return Err(invalid(
                    &format!("subnets[{i}].subnet"),
                    format!("{} overlaps {}", c.subnet, o.subnet),
                ));
            }
            checked.push(c);
        }
        let mut routes = Vec::new();
        for (i, r) in net.routes.iter().flatten().enumerate() {
            if let Some(t) = r.route_type.as_deref().filter(|t| *t != "unicast") {
                return Err(invalid(
                    &format!("routes[{i}].route_type"),
                    format!("{t:?}: weft sets unicast routes only"),
                ));
            }
            if r.metric.is_some() {
                return Err(invalid(
                    &format!("routes[{i}].metric"),
                    "weft does not set route metrics",
                ));
            }
            routes.push((r.destination.trunc(), r.gateway));
        }
        Ok(Settings {
            name: net.name.clone(),
            mode,
            mtu,
            data_dir,
            subnets: checked,
            internal: net.internal,
            routes,
        })
    }

    /// Does the network have an IPv4 address for its containers (port mappings lead there)?
    pub fn has_ipv4(&self) -> bool {
        match self.mode {
            Mode::Overlay { .. } => true,
            Mode::Bridge { .. } => self.subnets.iter().any(|s| s.subnet.addr().is_ipv4()),
        }
    }
}

fn check_subnet(field: &str, s: &Subnet) -> Result<CheckedSubnet, Error> {
    let net = s.subnet;
    if net.addr() != net.network() {
        return Err(invalid(
            &format!("{field}.subnet"),
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    if net.prefix_len() + 2 > net.max_prefix_len() {
        return Err(invalid(
            &format!("{field}.subnet"),
            format!("{net} is too small for a gateway and a container"),
        ));
    }
    let gateway = s.gateway.unwrap_or_else(|| first_usable(&net));
    if !net.contains(&gateway) || gateway == net.network() {
        return Err(invalid(
            &format!("{field}.gateway"),
            format!("{gateway} is not a host address of {net}"),
        ));
    }
    let ip = |k: &str, v: Option<&String>| -> Result<Option<IpAddr>, Error> {
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let f = format!("{field}.lease_range.{k}");
        let a: IpAddr = v
            .parse()
            .map_err(|_| invalid(&f, format!("{v:?} is not an IP address")))?;
        if !net.contains(&a) {
            return Err(invalid(&f, format!("{a} is not in {net}")));
        }
        Ok(Some(a))
    };
    let lr = s.lease_range.as_ref();
    let start = ip(
        "start_ip",
        lr.and_then(|l: &LeaseRange| l.start_ip.as_ref()),
    )?;
    let end = ip("end_ip", lr.and_then(|l| l.end_ip.as_ref()))?;
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(invalid(
                &format!("{field}.lease_range.start_ip"),
                format!("{a} is after end_ip {b}"),
            ));
        }
    }
    Ok(CheckedSubnet {
        subnet: net,
        gateway,
        start,
        end,
    })
}

/// `create`: the network podman gave, checked, with weft's fields completed: each subnet's
/// gateway, the bridge's name, IPAM (podman's host-local in bridge mode, none in overlay
/// mode, where the lease decides), `ipv6_enabled`, and no DNS (weft runs no aardvark-dns).
/// Name, id and driver are left as they are.
pub fn create(mut net: Network) -> Result<Network, Error> {
    let s = Settings::of(&net)?;
    let ipam = net.ipam_options.get_or_insert_with(BTreeMap::new);
    match &s.mode {
        Mode::Bridge { bridge } => {
            net.network_interface = Some(bridge.clone());
            if ipam.get("driver").is_none_or(|d| d.is_empty()) {
                ipam.insert("driver".into(), "host-local".into());
            }
        }
        Mode::Overlay { .. } => {
            net.network_interface = None;
            ipam.insert("driver".into(), "none".into());
        }
    }
    if let Some(subnets) = net.subnets.as_mut() {
        for (sub, c) in subnets.iter_mut().zip(&s.subnets) {
            sub.gateway = Some(c.gateway);
        }
    }
    net.ipv6_enabled = s.subnets.iter().any(|c| c.subnet.addr().is_ipv6());
    net.dns_enabled = false;
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(v: serde_json::Value) -> Network {
        let mut base = json!({
            "name": "wnet", "id": "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
            "driver": "weft", "subnets": [{ "subnet": "10.89.0.0/24" }],
            "ipv6_enabled": false, "internal": false, "dns_enabled": true,
            "created": "2024-01-01T00:00:00Z", "labels": { "a": "b" }
        });
        for (k, x) in v.as_object().unwrap() {
            base[k] = x.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        create(net(v)).unwrap_err().to_string()
    }

    #[test]
    fn create_completes_a_bridge_network_and_keeps_the_rest() {
        let out = create(net(json!({}))).unwrap();
        assert_eq!(out.network_interface.as_deref(), Some("wfb2f259bab93aa"));
        let sub = &out.subnets.as_ref().unwrap()[0];
        assert_eq!(sub.gateway, Some("10.89.0.1".parse().unwrap()));
        assert_eq!(out.ipam_options.as_ref().unwrap()["driver"], "host-local");
        assert!(!out.dns_enabled && !out.ipv6_enabled);
        let j = serde_json::to_value(&out).unwrap();
        assert_eq!(j["created"], "2024-01-01T00:00:00Z");
        assert_eq!(j["labels"]["a"], "b");
        assert_eq!(
            (j["name"].as_str(), j["driver"].as_str()),
            (Some("wnet"), Some("weft"))
        );
        // Creating what create made changes nothing.
        assert_eq!(create(out.clone()).unwrap(), out);
    }

    #[test]
    fn create_keeps_what_podman_chose() {
        let out = create(net(json!({
            "network_interface": "podbr7",
            "subnets": [{ "subnet": "10.89.0.0/24", "gateway": "10.89.0.254",
                          "lease_range": { "start_ip": "10.89.0.10", "end_ip": "10.89.0.20" } },
                        { "subnet": "fd00:89::/64" }],
            "options": { "mtu": "1400" }
        })))
        .unwrap();
        assert_eq!(out.network_interface.as_deref(), Some("podbr7"));
        let subs = out.subnets.unwrap();
        assert_eq!(subs[0].gateway, Some("10.89.0.254".parse().unwrap()));
        assert_eq!(subs[1].gateway, Some("fd00:89::1".parse().unwrap()));
        assert!(out.ipv6_enabled);
        let s = Settings::of(&net(json!({ "options": { "mtu": "1400" } }))).unwrap();
        assert_eq!(s.mtu, Some(1400));
    }

    #[test]
    fn overlay_mode_takes_no_subnet_and_no_podman_ipam() {
        let out = create(net(
            json!({ "subnets": [], "options": { "mode": "overlay" } }),
        ))
        .unwrap();
        assert_eq!(out.ipam_options.as_ref().unwrap()["driver"], "none");
        assert_eq!(out.network_interface, None);
        let e = err(json!({ "options": { "mode": "overlay" } }));
        assert!(e.starts_with("subnets: overlay mode"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({ "subnets": [] }),
                "subnets: weft's bridge mode needs a subnet",
            ),
            (
                json!({ "subnets": [{ "subnet": "10.89.0.1/24" }] }),
                "subnets[0].subnet: 10.89.0.1/24 has host bits",
            ),
            (
                json!({ "subnets": [{ "subnet": "10.89.0.0/24", "gateway": "10.90.0.1" }] }),
                "subnets[0].gateway:",
            ),
            (
                json!({ "subnets": [{ "subnet": "10.89.0.0/24" }, { "subnet": "10.89.0.0/16" }] }),
                "subnets[1].subnet: 10.89.0.0/16 overlaps",
            ),
            (
                json!({ "subnets": [{ "subnet": "10.89.0.0/24", "lease_range": { "start_ip": "10.1.1.1" } }] }),
                "subnets[0].lease_range.start_ip:",
            ),
            (
                json!({ "subnets": [{ "subnet": "10.89.0.0/24", "lease_range": { "start_ip": "10.89.0.9", "end_ip": "10.89.0.3" } }] }),
                "subnets[0].lease_range.start_ip: 10.89.0.9 is after",
            ),
            (
                json!({ "options": { "colour": "blue" } }),
                "options.colour: unknown weft option",
            ),
            (json!({ "options": { "mode": "vlan" } }), "options.mode:"),
            (json!({ "options": { "mtu": "9" } }), "options.mtu:"),
            (
                json!({ "options": { "data_dir": "rel/dir" } }),
                "options.data_dir:",
            ),
            (
                json!({ "options": { "data_dir": "/a/../etc" } }),
                "options.data_dir:",
            ),
            (
                json!({ "options": { "lease_file": "/run/x" } }),
                "options.lease_file: only overlay",
            ),
            (
                json!({ "network_interface": "a-much-too-long-name" }),
                "network_interface:",
            ),
            (
                json!({ "ipam_options": { "driver": "dhcp" } }),
                "ipam_options.driver:",
            ),
            (json!({ "name": "../x" }), "name:"),
            (
                json!({ "routes": [{ "destination": "10.0.0.0/8", "route_type": "blackhole" }] }),
                "routes[0].route_type:",
            ),
        ];
        for (v, want) in cases {
            let e = err(v.clone());
            assert!(e.starts_with(want), "{v}: {e}");
        }
    }
}
