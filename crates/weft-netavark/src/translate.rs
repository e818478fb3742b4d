//! netavark's setup/teardown input → the configuration and environment of weft-cni's ADD
//! and DEL; weft-cni's result → netavark's status block. Pure (apart from
//! [`ports_held_elsewhere`], which reads the attachment records).
//!
//! | netavark                              | weft-cni                                        |
//! |---------------------------------------|-------------------------------------------------|
//! | `network.name`                        | `name` (the state directory, the network table) |
//! | `network_interface`                   | `bridge`                                        |
//! | `subnets[i]` (+ `lease_range`)        | `ipam.ranges[i]` (one address per subnet)       |
//! | `internal`                            | no masquerade, no default route                 |
//! | `routes`                              | `ipam.routes` (and the default route)           |
//! | `--opt mode/mtu/data_dir/lease_file`  | `mode`, `mtu`, `dataDir`, `leaseFile`           |
//! | `network_options.static_ips`          | `runtimeConfig.ips` (podman's IPAM choice)      |
//! | `network_options.static_mac`          | `runtimeConfig.mac`                             |
//! | `network_options.options.app_id`      | `args.cni.app_id` (what policies name)          |
//! | `port_mappings` (ranges, `tcp,udp`)   | `runtimeConfig.portMappings`, one per port      |
//! | `container_id`, `interface_name`, NETNS | CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS        |

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{json, Value};
use weft_cni::spec::{CniResult, Command, Env};

use crate::api::{NetAddress, NetInterface, PluginExec, PortMapping, StatusBlock};
use crate::settings::{Mode, Settings};
use crate::Error;

/// The CNI version weft-cni is spoken to in (in-process: the newest).
pub const CNI_VERSION: &str = "1.1.0";

/// At most this many single-port mappings after expanding ranges and protocols.
pub const MAX_PORTS: usize = 4096;

/// One weft-cni call: its environment and its configuration (stdin).
#[derive(Debug, Clone)]
pub struct Call {
    pub env: Env,
    pub conf: Vec<u8>,
}

/// The state directory weft-cni uses for the network.
pub fn data_dir(s: &Settings) -> PathBuf {
    s.data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(weft_api::records::DEFAULT_DATA_DIR))
}

/// netavark's port mappings, one per host port and protocol, as weft-cni's
/// `runtimeConfig.portMappings`. Errors name netavark's field.
pub fn port_mappings(pms: &[PortMapping]) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for (i, pm) in pms.iter().enumerate() {
        let f = |k: &str| format!("port_mappings[{i}].{k}");
        if pm.host_port == 0 {
            return Err(Error::new(format!(
                "{}: 0 (podman chooses a free port before netavark runs)",
                f("host_port")
            )));
        }
        if pm.container_port == 0 {
            return Err(Error::new(format!(
                "{}: 0 is not a port",
                f("container_port")
            )));
        }
        let range = pm.range.max(1);
        for (k, p) in [
            ("host_port", pm.host_port),
            ("container_port", pm.container_port),
        ] {
            if u32::from(p) + u32::from(range) - 1 > 65535 {
                return Err(Error::new(format!(
                    "{}: {p} and {range} ports after it pass 65535 ({})",
                    f(k),
                    f("range")
                )));
            }
        }
        let host_ip = match pm.host_ip.as_str() {
            "" => None,
            s => match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if a.is_unspecified() => None,
                Ok(IpAddr::V4(a)) => Some(a.to_string()),
                Ok(IpAddr::V6(_)) => {
                    return Err(Error::new(format!(
                        "{}: {s}: weft maps IPv4 host addresses only",
                        f("host_ip")
                    )))
                }
                Err(_) => {
                    return Err(Error::new(format!(
                        "{}: {s:?} is not an IP address",
                        f("host_ip")
                    )))
                }
            },
        };
        let protocols: Vec<&str> = if pm.protocol.is_empty() {
            vec!["tcp"]
        } else {
            pm.protocol.split(',').map(str::trim).collect()
        };
        for p in &protocols {
            if !matches!(*p, "tcp" | "udp" | "sctp") {
                return Err(Error::new(format!(
                    "{}: {p:?} (tcp, udp, sctp, or several joined by ',')",
                    f("protocol")
                )));
            }
        }
        for p in protocols {
            for n in 0..range {
                let mut m = json!({
                    "hostPort": pm.host_port + n,
                    "containerPort": pm.container_port + n,
                    "protocol": p,
                });
                if let Some(ip) = &host_ip {
                    m["hostIP"] = json!(ip);
                }
                out.push(m);
            }
        }
        if out.len() > MAX_PORTS {
            return Err(Error::new(format!(
                "port_mappings: more than {MAX_PORTS} ports (after ranges and protocols)"
            )));
        }
    }
    Ok(out)
}

/// weft-cni's network configuration for one container on one network. Port mappings are
/// left out when `with_ports` is false (see [`ports_held_elsewhere`]).
pub fn conf(s: &Settings, exec: &PluginExec, with_ports: bool) -> Result<Value, Error> {
    let mut c = json!({
        "cniVersion": CNI_VERSION,
        "name": s.name,
        "type": "weft-cni",
        "dataDir": data_dir(s),
    });
    if let Some(mtu) = s.mtu {
        c["mtu"] = json!(mtu);
    }
    match &s.mode {
        Mode::Bridge { bridge } => {
            c["mode"] = json!("bridge");
            c["bridge"] = json!(bridge);
            c["isGateway"] = json!(true);
            c["ipMasq"] = json!(!s.internal);
            let ranges: Vec<Value> = s
                .subnets
                .iter()
                .map(|sub| {
                    let mut r = json!({ "subnet": sub.subnet.to_string(), "gateway": sub.gateway });
                    if let Some(a) = sub.start {
                        r["rangeStart"] = json!(a);
                    }
                    if let Some(b) = sub.end {
                        r["rangeEnd"] = json!(b);
                    }
                    json!([r])
                })
                .collect();
            c["ipam"] = json!({ "type": "weft", "ranges": ranges });
            // No routes given: weft-cni adds a default route via each gateway. Internal
            // networks get none; static routes come with the default route beside them.
            if s.internal {
                c["ipam"]["routes"] = json!([]);
            } else if !s.routes.is_empty() {
                c["isDefaultGateway"] = json!(true);
                c["ipam"]["routes"] = s
                    .routes
                    .iter()
                    .map(|(dst, gw)| match gw {
                        Some(g) => json!({ "dst": dst.to_string(), "gw": g }),
                        None => json!({ "dst": dst.to_string() }),
                    })
                    .collect();
            }
        }
        Mode::Overlay { lease_file } => {
            c["mode"] = json!("overlay");
            if let Some(l) = lease_file {
                c["leaseFile"] = json!(l);
            }
        }
    }
    let no = &exec.network_options;
    let mut rc = json!({});
    if let Some(ips) = no.static_ips.as_ref().filter(|v| !v.is_empty()) {
        if let Mode::Bridge { .. } = s.mode {
            // One address per subnet: weft-cni allocates one from each range set.
            for sub in &s.subnets {
                let n = ips.iter().filter(|ip| sub.subnet.contains(*ip)).count();
                if n > 1 {
                    return Err(Error::new(format!(
                        "network_options.static_ips: {n} addresses in {}; weft gives a container one per subnet",
                        sub.subnet
                    )));
                }
            }
            if let Some(ip) = ips
                .iter()
                .find(|ip| !s.subnets.iter().any(|sub| sub.subnet.contains(*ip)))
            {
                return Err(Error::new(format!(
                    "network_options.static_ips: {ip} is in none of the network's subnets"
                )));
            }
        }
        rc["ips"] = ips.iter().map(|ip| json!(ip.to_string())).collect();
    }
    if let Some(mac) = no.static_mac.as_ref().filter(|m| !m.is_empty()) {
        mac.parse::<weft_kernel::MacAddr>().map_err(|_| {
            Error::new(format!(
                "network_options.static_mac: {mac:?} is not a MAC address"
            ))
        })?;
        rc["mac"] = json!(mac);
    }
    let pms = exec.port_mappings.as_deref().unwrap_or_default();
    if with_ports && !pms.is_empty() {
        if !s.has_ipv4() {
            tracing::info!(network = %s.name, "no IPv4 subnet: port mappings are left to the container's other networks");
        } else {
            rc["portMappings"] = Value::Array(port_mappings(pms)?);
        }
    }
    c["runtimeConfig"] = rc;
    if let Some(app) = no.options.as_ref().and_then(|o| o.get("app_id")) {
        c["args"] = json!({ "cni": { "app_id": app } });
    }
    if let Some(k) = no
        .options
        .as_ref()
        .and_then(|o| o.keys().find(|k| k.as_str() != "app_id"))
    {
        return Err(Error::new(format!(
            "network_options.options.{k}: unknown per-container weft option (weft knows: app_id)"
        )));
    }
    Ok(c)
}

/// One weft-cni call for `cmd` (ADD or DEL).
pub fn call(
    cmd: Command,
    s: &Settings,
    exec: &PluginExec,
    netns: &str,
    with_ports: bool,
) -> Result<Call, Error> {
    let command = match cmd {
        Command::Add => "ADD",
        Command::Del => "DEL",
        other => return Err(Error::new(format!("{other:?} is not a netavark call"))),
    };
    let vars: BTreeMap<&str, &str> = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", exec.container_id.as_str()),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", exec.network_options.interface_name.as_str()),
    ]
    .into();
    let env = Env::from_vars(|k| vars.get(k).map(|v| v.to_string())).map_err(|e| {
        // Name netavark's fields, not the CNI variables they became.
        let msg = e
            .msg
            .replace("CNI_CONTAINERID", "container_id")
            .replace("CNI_IFNAME", "network_options.interface_name")
            .replace("CNI_NETNS", "network namespace path");
        Error::new(msg)
    })?;
    let conf = conf(s, exec, with_ports && cmd == Command::Add)?;
    Ok(Call {
        env,
        conf: serde_json::to_vec(&conf).map_err(|e| Error::new(e.to_string()))?,
    })
}

/// netavark passes a container's port mappings to every network it joins; a host port can
/// lead to one place only. The first weft network set up for the container holds them: true
/// when another network of the same state directory already records this container with
/// port mappings.
pub fn ports_held_elsewhere(s: &Settings, exec: &PluginExec) -> bool {
    if exec.port_mappings.as_deref().unwrap_or_default().is_empty() {
        return false;
    }
    weft_api::records::attachments(&data_dir(s))
        .iter()
        .any(|p| {
            p.container_id() == exec.container_id
                && p.network() != s.name
                && !p.port_mappings().is_empty()
        })
}

/// weft-cni's ADD result → the status block: the container's interface, its MAC and
/// addresses with their gateways.
pub fn status(result: &Value, ifname: &str) -> Result<StatusBlock, Error> {
    let r = CniResult::from_prev(result)?;
    let idx = r
        .interfaces
        .iter()
        .position(|i| i.name == ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            Error::new(format!(
                "weft-cni's result has no interface {ifname} in the container"
            ))
        })?;
    let subnets = r
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(idx))
        .map(|ip| NetAddress {
            ipnet: ip.address,
            gateway: ip.gateway,
        })
        .collect();
    let iface = NetInterface {
        mac_address: r.interfaces[idx].mac.clone(),
        subnets: Some(subnets),
    };
    Ok(StatusBlock {
        dns_search_domains: Some(Vec::new()),
        dns_server_ips: Some(Vec::new()),
        interfaces: Some([(ifname.to_string(), iface)].into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Network;

    const CID: &str = "752947ff91f961eb3cb47ffe9315016979f3ffbec09e4d96a4fae3fb03391697";

    fn exec(net: Value, opts: Value, ports: Value) -> PluginExec {
        let mut n = json!({
            "name": "wnet", "id": "2f259bab93aa", "driver": "weft",
            "network_interface": "wfbtest", "subnets": [{ "subnet": "10.89.0.0/24", "gateway": "10.89.0.1" }],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "ipam_options": { "driver": "host-local" }
        });
        for (k, x) in net.as_object().unwrap() {
            n[k] = x.clone();
        }
        let mut o = json!({ "interface_name": "eth0", "aliases": ["752947ff91f9"] });
        for (k, x) in opts.as_object().unwrap() {
            o[k] = x.clone();
        }
        serde_json::from_value(json!({
            "container_id": CID, "container_name": "c1", "port_mappings": ports,
            "network": n, "network_options": o,
        }))
        .unwrap()
    }

    fn conf_of(e: &PluginExec) -> Result<Value, Error> {
        conf(&Settings::of(&e.network)?, e, true)
    }

    #[test]
    fn a_bridge_network_with_podmans_address_and_mac() {
        let e = exec(
            json!({}),
            json!({ "static_ips": ["10.89.0.7"], "static_mac": "aa:bb:cc:dd:aa:00" }),
            json!([{ "container_port": 80, "host_port": 8080, "host_ip": "", "protocol": "tcp", "range": 1 }]),
        );
        let c = conf_of(&e).unwrap();
        assert_eq!(c["name"], "wnet");
        assert_eq!(c["bridge"], "wfbtest");
        assert_eq!(c["ipMasq"], true);
        assert_eq!(c["ipam"]["ranges"][0][0]["subnet"], "10.89.0.0/24");
        assert_eq!(c["ipam"]["ranges"][0][0]["gateway"], "10.89.0.1");
        assert!(c["ipam"].get("routes").is_none());
        assert_eq!(c["runtimeConfig"]["ips"], json!(["10.89.0.7"]));
        assert_eq!(c["runtimeConfig"]["mac"], "aa:bb:cc:dd:aa:00");
        assert_eq!(
            c["runtimeConfig"]["portMappings"],
            json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }])
        );
        // weft-cni takes it as it is.
        let nc = weft_cni::config::parse_netconf(&serde_json::to_vec(&c).unwrap()).unwrap();
        let wc = weft_cni::config::NetworkConf::from_netconf(nc, &BTreeMap::new()).unwrap();
        assert_eq!(
            wc.requested_ips,
            vec!["10.89.0.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(wc.port_mappings.len(), 1);
        let call = call(
            Command::Add,
            &Settings::of(&e.network).unwrap(),
            &e,
            "/run/netns/x",
            true,
        )
        .unwrap();
        assert_eq!(
            (call.env.container_id.as_str(), call.env.ifname.as_str()),
            (CID, "eth0")
        );
        assert_eq!(call.env.netns, "/run/netns/x");
    }

    #[test]
    fn internal_networks_have_no_masquerade_and_no_default_route() {
        let c = conf_of(&exec(json!({ "internal": true }), json!({}), Value::Null)).unwrap();
        assert_eq!(c["ipMasq"], false);
        assert_eq!(c["ipam"]["routes"], json!([]));
        let c = conf_of(&exec(
            json!({ "routes": [{ "destination": "192.168.7.0/24", "gateway": "10.89.0.254" }] }),
            json!({}),
            Value::Null,
        ))
        .unwrap();
        assert_eq!(c["isDefaultGateway"], true);
        assert_eq!(
            c["ipam"]["routes"],
            json!([{ "dst": "192.168.7.0/24", "gw": "10.89.0.254" }])
        );
    }

    #[test]
    fn port_ranges_and_protocols_become_one_mapping_each() {
        let pms: Vec<PortMapping> = serde_json::from_value(json!([
            { "container_port": 80, "host_port": 8080, "host_ip": "127.0.0.1", "protocol": "tcp,udp", "range": 2 }
        ]))
        .unwrap();
        let out = port_mappings(&pms).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[1],
            json!({ "hostPort": 8081, "containerPort": 81, "protocol": "tcp", "hostIP": "127.0.0.1" })
        );
        assert_eq!(out[2]["protocol"], "udp");
        let bad = |v: Value| {
            let pms: Vec<PortMapping> = serde_json::from_value(json!([v])).unwrap();
            port_mappings(&pms).unwrap_err().to_string()
        };
        let pm = |k: &str, x: Value| {
            let mut v = json!({ "container_port": 80, "host_port": 8080, "host_ip": "", "protocol": "tcp", "range": 1 });
            v[k] = x;
            v
        };
        assert!(bad(pm("host_port", json!(0))).starts_with("port_mappings[0].host_port:"));
        assert!(bad(pm("container_port", json!(0))).starts_with("port_mappings[0].container_port:"));
        assert!(bad(pm("protocol", json!("icmp"))).starts_with("port_mappings[0].protocol:"));
        assert!(bad(pm("host_ip", json!("::1"))).starts_with("port_mappings[0].host_ip:"));
        assert!(bad(pm("host_ip", json!("nope"))).starts_with("port_mappings[0].host_ip:"));
        assert!(bad(pm("range", json!(65000))).starts_with("port_mappings[0].host_port:"));
        let huge = json!({ "container_port": 1, "host_port": 1, "host_ip": "", "protocol": "tcp,udp,sctp", "range": 3000 });
        assert!(bad(huge).starts_with("port_mappings: more than"));
    }

    #[test]
    fn bad_container_options_name_netavarks_field() {
        let e = |opts: Value| {
            conf_of(&exec(json!({}), opts, Value::Null))
                .unwrap_err()
                .to_string()
        };
        assert!(e(json!({ "static_ips": ["10.89.0.7", "10.89.0.8"] }))
            .starts_with("network_options.static_ips: 2 addresses"));
        assert!(e(json!({ "static_ips": ["10.9.0.7"] }))
            .starts_with("network_options.static_ips: 10.9.0.7 is in none"));
        assert!(e(json!({ "static_mac": "zz" })).starts_with("network_options.static_mac:"));
        assert!(e(json!({ "options": { "colour": "x" } }))
            .starts_with("network_options.options.colour:"));
        let x = exec(json!({}), json!({ "interface_name": "bad%d" }), Value::Null);
        let s = Settings::of(&x.network).unwrap();
        let err = call(Command::Add, &s, &x, "/run/netns/x", true)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("network_options.interface_name:"), "{err}");
        let mut x = exec(json!({}), json!({}), Value::Null);
        x.container_id = "../../etc".into();
        let err = call(Command::Add, &s, &x, "/run/netns/x", true)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("container_id:"), "{err}");
    }

    #[test]
    fn overlay_mode_and_app_id() {
        let e = exec(
            json!({ "subnets": [], "network_interface": null, "options": { "mode": "overlay", "lease_file": "/run/l.json" } }),
            json!({ "options": { "app_id": "shop" } }),
            Value::Null,
        );
        let c = conf_of(&e).unwrap();
        assert_eq!(c["mode"], "overlay");
        assert_eq!(c["leaseFile"], "/run/l.json");
        assert!(c.get("ipam").is_none());
        assert_eq!(c["args"]["cni"]["app_id"], "shop");
    }

    #[test]
    fn the_status_block_is_the_containers_interface() {
        let r = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{ "name": "wfbtest", "mac": "02:00:00:00:00:01" }, { "name": "weftabc" },
                           { "name": "eth0", "mac": "aa:bb:cc:dd:aa:00", "sandbox": "/run/netns/x" }],
            "ips": [{ "address": "10.89.0.7/24", "gateway": "10.89.0.1", "interface": 2 },
                    { "address": "fd00::7/64", "gateway": "fd00::1", "interface": 2 }],
            "routes": [], "dns": {}
        });
        let s = status(&r, "eth0").unwrap();
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["interfaces"]["eth0"]["mac_address"], "aa:bb:cc:dd:aa:00");
        assert_eq!(
            j["interfaces"]["eth0"]["subnets"][0],
            json!({ "ipnet": "10.89.0.7/24", "gateway": "10.89.0.1" })
        );
        assert_eq!(j["interfaces"]["eth0"]["subnets"][1]["ipnet"], "fd00::7/64");
        assert!(status(&r, "eth1").is_err());
        let _: Network =
            serde_json::from_value(json!({"name":"n","id":"i","driver":"weft"})).unwrap();
    }
}
