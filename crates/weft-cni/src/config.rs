//! The network configuration a runtime passes on stdin, parsed and checked field by field.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use weft_kernel::MacAddr;

use crate::spec::{code, CniError};
use weft_api::records::{PortMapping, DEFAULT_DATA_DIR, DEFAULT_LEASE_FILE};

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "weft0";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// `"bridge"` (default) or `"overlay"`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Overlay mode: where the agent writes the host's lease (default /var/lib/weft/lease.json).
    #[serde(default)]
    pub lease_file: Option<PathBuf>,
    #[serde(default)]
    pub bridge: Option<String>,
    /// Put the gateway address on the bridge (default true).
    #[serde(default)]
    pub is_gateway: Option<bool>,
    /// Add a default route via the gateway in the container (implies isGateway).
    #[serde(default)]
    pub is_default_gateway: Option<bool>,
    #[serde(default)]
    pub ip_masq: Option<bool>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: Option<bool>,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Option<ArgsConf>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// Passed to the result (CNI's `dns`): with weft's internal DNS,
    /// `{"nameservers": ["169.254.0.2"], "search": ["apps.internal"]}`.
    #[serde(default)]
    pub dns: crate::spec::Dns,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    pub routes: Option<Vec<RouteConf>>,
}

/// One range of `ipam.ranges`; every field may be absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RangeConf {
    pub subnet: Option<String>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteConf {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMappingConf>,
    /// Cloud Foundry / Garden container metadata (`policy_group_id`, `app_id`).
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingConf {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ArgsConf {
    #[serde(default)]
    pub cni: Option<CniArgsConf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CniArgsConf {
    #[serde(default)]
    pub ips: Vec<String>,
    /// The container's app id (what policies name).
    #[serde(default)]
    pub app_id: Option<String>,
    /// Pod labels (Kubernetes, via a meta plugin): `app` names the app.
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// One contiguous range of a range set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(&ip)
            && ip_u128(ip) >= ip_u128(self.start)
            && ip_u128(ip) <= ip_u128(self.end)
    }
}

/// How containers of the network are connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Seed 003: a bridge per host, an address from the configured ranges.
    Bridge,
    /// Seed 000: routed point-to-point veth (as Cloud Foundry's silk), an address from the
    /// host's overlay lease, which the agent writes to `lease_file`.
    Overlay { lease_file: PathBuf },
}

/// The name `weft agent` gives its VTEP unless told otherwise (`--vtep`).
pub const DEFAULT_VTEP: &str = "weft.vtep";

/// A network configuration, validated.
#[derive(Debug, Clone)]
pub struct NetworkConf {
    pub cni_version: String,
    pub network: String,
    pub mode: Mode,
    /// The container's app id, from CNI_ARGS, args or runtimeConfig metadata.
    pub app_id: Option<String>,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub data_dir: PathBuf,
    /// One address is allocated from each range set (overlay mode: filled from the lease).
    pub range_sets: Vec<Vec<Range>>,
    /// Routes for the container; `None` means "a default route via each gateway".
    pub routes: Option<Vec<(IpNet, Option<IpAddr>)>>,
    pub port_mappings: Vec<PortMapping>,
    pub requested_ips: Vec<IpAddr>,
    pub mac: Option<MacAddr>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The result's `dns` (nameservers checked to be IP addresses).
    pub dns: crate::spec::Dns,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("{field}: {why}"))
}

pub fn ip_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn ip_from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

/// The first and last usable host addresses of a subnet (network and broadcast excluded for
/// IPv4 prefixes shorter than /31).
fn usable(subnet: &IpNet) -> (IpAddr, IpAddr) {
    let net = ip_u128(subnet.network());
    let last = ip_u128(subnet.broadcast());
    let v6 = subnet.addr().is_ipv6();
    if subnet.prefix_len() >= subnet.max_prefix_len() - 1 {
        (ip_from_u128(net, v6), ip_from_u128(last, v6))
    } else if v6 {
        (ip_from_u128(net + 1, v6), ip_from_u128(last, v6))
    } else {
        (ip_from_u128(net + 1, v6), ip_from_u128(last - 1, v6))
    }
}

fn parse_range(field: &str, rc: &RangeConf) -> Result<Range, CniError> {
    let subnet_s = rc
        .subnet
        .as_deref()
        .ok_or_else(|| invalid(&format!("{field}.subnet"), "missing"))?;
    let subnet: IpNet = subnet_s.parse().map_err(|_| {
        invalid(
            &format!("{field}.subnet"),
            format!("{subnet_s:?} is not a CIDR (e.g. 10.88.0.0/16)"),
        )
    })?;
    if subnet.addr() != subnet.network() {
        return Err(invalid(
            &format!("{field}.subnet"),
            format!(
                "{subnet} has host bits set; did you mean {}?",
                subnet.trunc()
            ),
        ));
    }
    let (first, last) = usable(&subnet);
    if ip_u128(last) < ip_u128(first) + 1 && subnet.prefix_len() < subnet.max_prefix_len() {
        return Err(invalid(
            &format!("{field}.subnet"),
            format!("{subnet} is too small"),
        ));
    }
    let gateway = rc.gateway.unwrap_or(first);
    if !subnet.contains(&gateway) {
        return Err(invalid(
            &format!("{field}.gateway"),
            format!("{gateway} is not in {subnet}"),
        ));
    }
    let start = rc.range_start.unwrap_or(first);
    let end = rc.range_end.unwrap_or(last);
    for (name, ip) in [("rangeStart", start), ("rangeEnd", end)] {
        if !subnet.contains(&ip) || ip_u128(ip) < ip_u128(first) || ip_u128(ip) > ip_u128(last) {
            return Err(invalid(
                &format!("{field}.{name}"),
                format!("{ip} is not a usable address of {subnet}"),
            ));
        }
    }
    if ip_u128(start) > ip_u128(end) {
        return Err(invalid(
            &format!("{field}.rangeStart"),
            format!("{start} is after rangeEnd {end}"),
        ));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn parse_mac(field: &str, s: &str) -> Result<MacAddr, CniError> {
    let mac: MacAddr = s
        .parse()
        .map_err(|_| invalid(field, format!("{s:?} is not a MAC address")))?;
    if mac.is_multicast() {
        return Err(invalid(field, format!("{s} is a multicast address")));
    }
    Ok(mac)
}

/// Reads stdin's bytes: bad JSON is a decode failure (code 6), a wrong field type or value an
/// invalid configuration (code 7) naming the field.
pub fn parse_netconf(bytes: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            format!("network configuration is not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            "network configuration must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize::<_, NetConf>(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "configuration".to_string()
        } else {
            path
        };
        invalid(&field, e.inner())
    })
}

/// Just the cniVersion, for answering errors in the caller's version even when the rest of
/// the configuration is broken.
pub fn peek_version(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// The container's app id: CNI_ARGS `WEFT_APP_ID` or `APP_ID`, `args.cni.app_id`, a pod
/// label `app` in `args.cni.labels`, or Garden's `runtimeConfig.metadata`
/// (`policy_group_id`, else `app_id`).
fn app_id_of(
    nc: &NetConf,
    cni_args: &std::collections::BTreeMap<String, String>,
) -> Result<Option<String>, CniError> {
    let cni = nc.args.as_ref().and_then(|a| a.cni.as_ref());
    let meta = nc.runtime_config.metadata.as_ref();
    let meta_str = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let id = cni_args
        .get("WEFT_APP_ID")
        .or_else(|| cni_args.get("APP_ID"))
        .cloned()
        .or_else(|| cni.and_then(|c| c.app_id.clone()))
        .or_else(|| {
            cni.and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get("app").cloned())
        })
        .or_else(|| meta_str("policy_group_id"))
        .or_else(|| meta_str("app_id"));
    match id {
        Some(id) if id.is_empty() || id.len() > 255 || id.chars().any(|c| c.is_control()) => {
            Err(invalid(
                "app id",
                format!("{id:?} must be 1 to 255 printable characters"),
            ))
        }
        other => Ok(other),
    }
}

/// The range sets of bridge mode's `ipam`.
fn parse_ipam(ipam: Option<&IpamConf>) -> Result<Vec<Vec<Range>>, CniError> {
    let ipam = ipam.ok_or_else(|| {
        invalid(
            "ipam",
            "missing (weft-cni needs ipam.subnet or ipam.ranges)",
        )
    })?;
    if let Some(t) = ipam.ipam_type.as_deref() {
        if !matches!(t, "weft" | "host-local" | "") {
            return Err(invalid(
                "ipam.type",
                format!("{t:?}: weft-cni allocates addresses itself; use \"weft\" or leave it out"),
            ));
        }
    }
    let mut range_sets = Vec::new();
    if let Some(subnet) = &ipam.subnet {
        if !ipam.ranges.is_empty() {
            return Err(invalid(
                "ipam.subnet",
                "give either ipam.subnet or ipam.ranges, not both",
            ));
        }
        let rc = RangeConf {
            subnet: Some(subnet.clone()),
            range_start: ipam.range_start,
            range_end: ipam.range_end,
            gateway: ipam.gateway,
        };
        range_sets.push(vec![parse_range("ipam", &rc)?]);
    } else {
        if ipam.ranges.is_empty() {
            return Err(invalid(
                "ipam.subnet",
                "missing (give ipam.subnet or ipam.ranges)",
            ));
        }
        for (i, set) in ipam.ranges.iter().enumerate() {
            if set.is_empty() {
                return Err(invalid(&format!("ipam.ranges[{i}]"), "empty range set"));
            }
            let mut parsed = Vec::new();
            for (j, rc) in set.iter().enumerate() {
                parsed.push(parse_range(&format!("ipam.ranges[{i}][{j}]"), rc)?);
            }
            let fam = parsed[0].subnet.addr().is_ipv4();
            if parsed.iter().any(|r| r.subnet.addr().is_ipv4() != fam) {
                return Err(invalid(
                    &format!("ipam.ranges[{i}]"),
                    "mixes IPv4 and IPv6 ranges",
                ));
            }
            range_sets.push(parsed);
        }
    }
    Ok(range_sets)
}

impl NetworkConf {
    /// Validates a parsed configuration. `cni_args` is CNI_ARGS (IP=, MAC=, WEFT_APP_ID=).
    pub fn from_netconf(
        nc: NetConf,
        cni_args: &std::collections::BTreeMap<String, String>,
    ) -> Result<NetworkConf, CniError> {
        if nc.name.is_empty() {
            return Err(invalid("name", "missing"));
        }
        // The name becomes a directory under dataDir, a table name and part of aliases:
        // nothing that escapes (`..`) or needs quoting.
        crate::spec::valid_name(&nc.name, crate::spec::MAX_NETWORK_NAME)
            .map_err(|e| invalid("name", e))?;
        let mode = match nc.mode.as_deref() {
            None | Some("bridge") => Mode::Bridge,
            Some("overlay") => Mode::Overlay {
                lease_file: nc
                    .lease_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_LEASE_FILE)),
            },
            Some(m) => {
                return Err(invalid(
                    "mode",
                    format!("unknown mode {m:?} (supported: \"bridge\", \"overlay\")"),
                ))
            }
        };
        let bridge = nc
            .bridge
            .clone()
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        weft_kernel::link::validate_ifname(&bridge).map_err(|e| invalid("bridge", e))?;
        if let Some(mtu) = nc.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid("mtu", format!("{mtu} is outside 68..65535")));
            }
        }
        let range_sets = match (&mode, nc.ipam.as_ref()) {
            (Mode::Overlay { .. }, Some(_)) => {
                return Err(invalid(
                    "ipam",
                    "overlay mode takes addresses from the host's lease; remove ipam",
                ))
            }
            (Mode::Overlay { .. }, None) => Vec::new(),
            (Mode::Bridge, ipam) => parse_ipam(ipam)?,
        };
        // No two ranges may overlap (an address must have one owner).
        let flat: Vec<(String, &Range)> = range_sets
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.iter()
                    .enumerate()
                    .map(move |(j, r)| (format!("ipam.ranges[{i}][{j}]"), r))
            })
            .collect();
        for (a, (na, ra)) in flat.iter().enumerate() {
            for (nb, rb) in &flat[a + 1..] {
                let overlap = ra.subnet.addr().is_ipv4() == rb.subnet.addr().is_ipv4()
                    && ip_u128(ra.start) <= ip_u128(rb.end)
                    && ip_u128(rb.start) <= ip_u128(ra.end);
                if overlap {
                    return Err(invalid(
                        nb,
                        format!(
                            "{} ({}-{}) overlaps {na} ({}-{})",
                            rb.subnet, rb.start, rb.end, ra.start, ra.end
                        ),
                    ));
                }
            }
        }
        let routes = match nc.ipam.as_ref().and_then(|i| i.routes.as_ref()) {
            None => None,
            Some(rs) => {
                let mut out = Vec::new();
                for (i, r) in rs.iter().enumerate() {
                    let dst: IpNet = r.dst.parse().map_err(|_| {
                        invalid(
                            &format!("ipam.routes[{i}].dst"),
                            format!("{:?} is not a CIDR", r.dst),
                        )
                    })?;
                    out.push((dst.trunc(), r.gw));
                }
                Some(out)
            }
        };
        let mut port_mappings = Vec::new();
        for (i, pm) in nc.runtime_config.port_mappings.iter().enumerate() {
            let f = |k: &str| format!("runtimeConfig.portMappings[{i}].{k}");
            let port = |k: &str, p: u32| -> Result<u16, CniError> {
                if p == 0 || p > 65535 {
                    Err(invalid(&f(k), format!("{p} is not a port (1..65535)")))
                } else {
                    Ok(p as u16)
                }
            };
            let protocol = pm
                .protocol
                .clone()
                .unwrap_or_else(|| "tcp".into())
                .to_ascii_lowercase();
            if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(invalid(
                    &f("protocol"),
                    format!("{protocol:?} (tcp, udp or sctp)"),
                ));
            }
            let host_ip = match pm.host_ip.as_deref() {
                None | Some("") | Some("0.0.0.0") => None,
                Some(s) => {
                    let ip: IpAddr = s.parse().map_err(|_| {
                        invalid(&f("hostIP"), format!("{s:?} is not an IP address"))
                    })?;
                    if ip.is_ipv6() {
                        // IPv6 port mappings would need an ip6 table: not done yet; say so.
                        return Err(CniError::new(
                            code::UNSUPPORTED_FIELD,
                            format!("{}: IPv6 host addresses are not supported yet", f("hostIP")),
                        ));
                    }
                    Some(ip)
                }
            };
            let pm = PortMapping {
                host_port: port("hostPort", pm.host_port)?,
                container_port: port("containerPort", pm.container_port)?,
                protocol,
                host_ip,
            };
            // The same mapping twice is one; the same host port to two places is a mistake.
            match port_mappings
                .iter()
                .find(|d: &&PortMapping| d.same_host_port(&pm))
            {
                Some(d) if *d == pm => {}
                Some(d) => {
                    return Err(invalid(
                        &f("hostPort"),
                        format!(
                            "{}/{} is mapped twice (to container ports {} and {})",
                            pm.host_port, pm.protocol, d.container_port, pm.container_port
                        ),
                    ))
                }
                None => port_mappings.push(pm),
            }
        }
        // Static addresses: runtimeConfig.ips (capability "ips"), args.cni.ips, CNI_ARGS IP=.
        let mut requested = Vec::new();
        let mut add_ips = |field: &str, list: &[String]| -> Result<(), CniError> {
            for s in list {
                let ip = s
                    .split('/')
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .ok_or_else(|| invalid(field, format!("{s:?} is not an IP address")))?;
                if !requested.contains(&ip) {
                    requested.push(ip);
                }
            }
            Ok(())
        };
        add_ips("runtimeConfig.ips", &nc.runtime_config.ips)?;
        if let Some(cni) = nc.args.as_ref().and_then(|a| a.cni.as_ref()) {
            add_ips("args.cni.ips", &cni.ips)?;
        }
        if let Some(ip) = cni_args.get("IP") {
            let list: Vec<String> = ip.split(',').map(str::to_string).collect();
            add_ips("CNI_ARGS IP", &list)?;
        }
        let mac = if let Some(m) = &nc.runtime_config.mac {
            Some(parse_mac("runtimeConfig.mac", m)?)
        } else if let Some(m) = nc
            .args
            .as_ref()
            .and_then(|a| a.cni.as_ref())
            .and_then(|c| c.mac.as_ref())
        {
            Some(parse_mac("args.cni.mac", m)?)
        } else if let Some(m) = cni_args.get("MAC") {
            Some(parse_mac("CNI_ARGS MAC", m)?)
        } else {
            None
        };
        let is_default_gateway = nc.is_default_gateway.unwrap_or(false);
        let app_id = app_id_of(&nc, cni_args)?;
        for (i, ns) in nc.dns.nameservers.iter().enumerate() {
            ns.parse::<IpAddr>().map_err(|_| {
                invalid(
                    &format!("dns.nameservers[{i}]"),
                    format!("{ns:?} is not an IP address"),
                )
            })?;
        }
        Ok(NetworkConf {
            cni_version: nc.cni_version,
            network: nc.name,
            mode,
            app_id,
            bridge,
            is_gateway: nc.is_gateway.unwrap_or(true) || is_default_gateway,
            is_default_gateway,
            ip_masq: nc.ip_masq.unwrap_or(false),
            mtu: nc.mtu,
            hairpin: nc.hairpin_mode.unwrap_or(false),
            data_dir: nc
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            range_sets,
            routes,
            port_mappings,
            requested_ips: requested,
            mac,
            prev_result: nc.prev_result,
            valid_attachments: nc.valid_attachments,
            dns: nc.dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn conf(json: &str) -> Result<NetworkConf, CniError> {
        NetworkConf::from_netconf(parse_netconf(json.as_bytes())?, &BTreeMap::new())
    }

    /// The message of the error a configuration that must be rejected gets.
    fn conf_err(json: &str) -> String {
        conf(json).unwrap_err().msg
    }

    #[test]
    fn minimal_subnet() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"}}"#).unwrap();
        let r = &c.range_sets[0][0];
        assert_eq!(r.gateway.to_string(), "10.88.0.1");
        assert_eq!(r.start.to_string(), "10.88.0.1");
        assert_eq!(r.end.to_string(), "10.88.0.254");
        assert!(c.is_gateway && !c.ip_masq);
    }

    #[test]
    fn dns_is_passed_on_and_its_nameservers_checked() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"},"dns":{"nameservers":["169.254.0.2"],"search":["apps.internal"]}}"#).unwrap();
        assert_eq!(c.dns.nameservers, vec!["169.254.0.2"]);
        assert_eq!(c.dns.search, vec!["apps.internal"]);
        let e = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"},"dns":{"nameservers":["169.254.0.2","resolver"]}}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.starts_with("dns.nameservers[1]:"), "{}", e.msg);
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"}}"#).unwrap();
        assert_eq!(c.dns, crate::spec::Dns::default());
    }

    #[test]
    fn errors_name_the_field() {
        let e = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","mtu":"big","ipam":{"subnet":"10.88.0.0/24"}}"#)
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.starts_with("mtu:"), "{}", e.msg);
        let e =
            conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{}}"#).unwrap_err();
        assert!(e.msg.starts_with("ipam.subnet: missing"), "{}", e.msg);
        let e = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni"}"#).unwrap_err();
        assert!(e.msg.starts_with("ipam:"), "{}", e.msg);
        let e = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/33"}}"#).unwrap_err();
        assert!(e.msg.starts_with("ipam.subnet:"), "{}", e.msg);
        let e = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.1/24"}}"#).unwrap_err();
        assert!(e.msg.contains("host bits"), "{}", e.msg);
        let e = parse_netconf(b"{not json").unwrap_err();
        assert_eq!(e.code, code::DECODE_FAILURE);
    }

    #[test]
    fn network_names_cannot_escape_or_need_quoting() {
        for bad in ["..", ".", ".x", "-x", "a/b", "a b", "a\"b", "%d"] {
            let j = format!(
                r#"{{"cniVersion":"1.0.0","name":{},"type":"weft-cni","ipam":{{"subnet":"10.88.0.0/24"}}}}"#,
                serde_json::to_string(bad).unwrap()
            );
            let e = conf(&j).unwrap_err();
            assert!(e.msg.starts_with("name:"), "{bad:?}: {}", e.msg);
        }
        let long = "n".repeat(crate::spec::MAX_NETWORK_NAME + 1);
        let j = format!(
            r#"{{"cniVersion":"1.0.0","name":"{long}","type":"weft-cni","ipam":{{"subnet":"10.88.0.0/24"}}}}"#
        );
        assert!(conf(&j).unwrap_err().msg.starts_with("name:"));
        let ok = conf(
            r#"{"cniVersion":"1.0.0","name":"net_1.a-b","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"}}"#,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn duplicate_port_mappings() {
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"},
               "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80},
                                                {"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                                                {"hostPort":8080,"containerPort":81,"hostIP":"127.0.0.1"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.port_mappings.len(), 2);
        let msg = conf_err(
            r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"},
               "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80},
                                                {"hostPort":8080,"containerPort":81}]}}"#,
        );
        assert!(
            msg.starts_with("runtimeConfig.portMappings[1].hostPort"),
            "{msg}"
        );
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let msg = conf_err(
            r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"ranges":[
              [{"subnet":"10.1.0.0/16"}],[{"subnet":"10.1.2.0/24"}]]}}"#,
        );
        assert!(
            msg.starts_with("ipam.ranges[1][0]") && msg.contains("overlaps"),
            "{msg}"
        );
    }

    #[test]
    fn range_bounds_checked() {
        let msg = conf_err(
            r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"ranges":[
              [{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.50","rangeEnd":"10.1.0.10"}]]}}"#,
        );
        assert!(msg.contains("rangeStart"), "{msg}");
        let msg = conf_err(
            r#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{"ranges":[
              [{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}]]}}"#,
        );
        assert!(msg.starts_with("ipam.ranges[0][0].gateway"), "{msg}");
    }

    #[test]
    fn port_mappings_and_static_ips() {
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"},
               "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"TCP"}],
                                "ips":["10.88.0.9/24"],"mac":"0a:00:00:00:00:01"}}"#,
        )
        .unwrap();
        assert_eq!(c.port_mappings[0].protocol, "tcp");
        assert_eq!(
            c.requested_ips,
            vec!["10.88.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.mac, Some(MacAddr::new([0x0a, 0, 0, 0, 0, 1])));
        let msg = conf_err(
            r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","ipam":{"subnet":"10.88.0.0/24"},
               "runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}"#,
        );
        assert!(
            msg.starts_with("runtimeConfig.portMappings[0].hostPort"),
            "{msg}"
        );
    }
}
