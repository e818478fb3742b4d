//! The CNI protocol (containernetworking/cni SPEC.md, version 1.1): environment, error
//! codes, and the result shapes of every supported version. Nothing here touches the kernel.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Versions whose configurations and results this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Error codes of the spec (1-99) and weft's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// weft: the kernel refused a change (netlink or nftables); the message says which.
    pub const KERNEL: u32 = 100;
    /// weft: no free address left in the configured ranges.
    pub const RANGE_EXHAUSTED: u32 = 101;
    /// weft: a requested static address is outside the ranges or already taken.
    pub const ADDRESS_UNAVAILABLE: u32 = 102;
    /// weft: a host port is already mapped to another container.
    pub const PORT_IN_USE: u32 = 103;
    /// weft: CHECK found the container's network differs from what ADD set up.
    pub const CHECK_MISMATCH: u32 = 104;
}

/// A CNI error, printed as the spec's error JSON on stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    /// CHECK found the kernel or the state differs from what ADD set up (code 104).
    pub fn mismatch(msg: impl Into<String>) -> Self {
        CniError::new(code::CHECK_MISMATCH, msg)
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl From<weft_kernel::Error> for CniError {
    fn from(e: weft_kernel::Error) -> Self {
        CniError::new(code::KERNEL, e.to_string())
    }
}

/// The command a runtime asks for (CNI_COMMAND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The CNI_* environment of one call, validated for its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS, `K=V;K=V`.
    pub args: BTreeMap<String, String>,
}

/// The longest container id accepted: the id is part of the attachment's record name and
/// of its host interface's alias (IFALIASZ), which must not overflow. Runtimes use 64 hex
/// digits (containerd, CRI-O, podman) or a GUID (Cloud Foundry).
pub const MAX_CONTAINER_ID: usize = 128;
/// The longest network name accepted: it names a directory, a bridge table, an alias.
pub const MAX_NETWORK_NAME: usize = 64;

/// Spec (container ids and network names): "Must start with an alphanumeric character,
/// optionally followed by any combination of one or more alphanumeric characters,
/// underscore, dot or hyphen" — so never `.`, `..`, a `/`, a `%` or white space — and at
/// most `max` bytes. `Err` says why.
pub fn valid_name(id: &str, max: usize) -> Result<(), String> {
    let mut chars = id.chars();
    if !matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "{id:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
        ));
    }
    if id.len() > max {
        return Err(format!(
            "{} characters, at most {max} are allowed",
            id.len()
        ));
    }
    Ok(())
}

/// Spec: "Must start with an alphanumeric character, optionally followed by any combination of
/// one or more alphanumeric characters, underscore, dot or hyphen."
pub fn valid_container_id(id: &str) -> bool {
    valid_name(id, MAX_CONTAINER_ID).is_ok()
}

/// The container's interface name (CNI_IFNAME): what the kernel takes as a name as it is
/// (at most 15 bytes, IFNAMSIZ; no `%`, which the kernel expands into the next free
/// `eth0`, `eth1`...), restricted to the characters of [`valid_name`] so that it is safe in a
/// file name, an alias and an nftables comment.
pub fn valid_ifname(name: &str) -> Result<(), String> {
    if name.contains('%') {
        return Err(format!(
            "{name:?} holds '%', which the kernel expands into the next free name"
        ));
    }
    valid_name(name, 15).map_err(|e| format!("interface name {e}"))?;
    weft_kernel::link::validate_ifname(name)
}

impl Env {
    /// Reads and checks the environment. Which variables are required depends on the command.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let invalid =
            |var: &str, why: &str| CniError::new(code::INVALID_ENV, format!("{var}: {why}"));
        let cmd = get("CNI_COMMAND").ok_or_else(|| invalid("CNI_COMMAND", "not set"))?;
        let command = Command::parse(&cmd).ok_or_else(|| {
            invalid(
                "CNI_COMMAND",
                &format!("unknown command {cmd:?} (ADD, DEL, CHECK, VERSION, STATUS, GC)"),
            )
        })?;
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let var = |name: &str| get(name).unwrap_or_default();
        let container_id = var("CNI_CONTAINERID");
        let netns = var("CNI_NETNS");
        let ifname = var("CNI_IFNAME");
        if needs_container {
            if container_id.is_empty() {
                return Err(invalid("CNI_CONTAINERID", "not set"));
            }
            if let Err(why) = valid_name(&container_id, MAX_CONTAINER_ID) {
                return Err(invalid("CNI_CONTAINERID", &why));
            }
            if ifname.is_empty() {
                return Err(invalid("CNI_IFNAME", "not set"));
            }
            if let Err(why) = valid_ifname(&ifname) {
                return Err(invalid("CNI_IFNAME", &why));
            }
            // DEL may come after the namespace is gone: an empty CNI_NETNS is allowed there.
            if netns.is_empty() && command != Command::Del {
                return Err(invalid("CNI_NETNS", "not set"));
            }
        }
        let mut args = BTreeMap::new();
        for kv in var("CNI_ARGS").split(';').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| invalid("CNI_ARGS", &format!("{kv:?} is not KEY=VALUE")))?;
            args.insert(k.to_string(), v.to_string());
        }
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

/// Is `v` one of [`SUPPORTED_VERSIONS`]?
pub fn supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// Parses "1.0.0" into a comparable triple.
pub fn version_triple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (
        it.next()??,
        it.next().unwrap_or(Some(0))?,
        it.next().unwrap_or(Some(0))?,
    );
    Some(t)
}

/// `a >= b` for version strings; unparsable versions compare low.
pub fn version_at_least(a: &str, b: &str) -> bool {
    match (version_triple(a), version_triple(b)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

/// The VERSION command's answer.
pub fn version_info(cni_version: &str) -> Value {
    json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS })
}

// ---- results -------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl RouteSpec {
    /// A route to `dst` (via `gw`, or on-link), with nothing else set.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> RouteSpec {
        RouteSpec {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A result in the newest shape (1.1.0); [`CniResult::to_version`] renders older ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a `prevResult` of any supported version (0.3/0.4 carry `"version"` on each IP,
    /// which is dropped).
    pub fn from_prev(v: &Value) -> Result<CniResult, CniError> {
        let mut v = v.clone();
        if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
            for ip in ips {
                if let Some(o) = ip.as_object_mut() {
                    o.remove("version");
                }
            }
        }
        serde_path_to_error::deserialize(v).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                format!("prevResult.{}: {}", e.path(), e.inner()),
            )
        })
    }

    /// Appends `other` (this plugin's part) after the previous plugins' part, renumbering its
    /// interface indices.
    pub fn merge(mut self, other: CniResult) -> CniResult {
        let base = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        self.routes.extend(other.routes);
        if self.dns == Dns::default() {
            self.dns = other.dns;
        }
        self
    }

    /// The JSON a runtime of `cni_version` expects.
    pub fn to_version(&self, cni_version: &str) -> Value {
        let mut r = self.clone();
        let is_11 = version_at_least(cni_version, "1.1.0");
        if !is_11 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path.clear();
                i.pci_id.clear();
            }
            for rt in &mut r.routes {
                rt.mtu = None;
                rt.advmss = None;
                rt.priority = None;
                rt.table = None;
                rt.scope = None;
            }
        }
        let mut v = serde_json::to_value(&r).unwrap_or_else(|_| json!({}));
        v["cniVersion"] = json!(cni_version);
        if !version_at_least(cni_version, "1.0.0") {
            if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
                for (ip, cfg) in ips.iter_mut().zip(&r.ips) {
                    let fam = if cfg.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    ip["version"] = json!(fam);
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn env_requires_container_vars_for_add() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_CONTAINERID"));
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"));
        let ok = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(ok.command, Command::Del);
    }

    #[test]
    fn env_rejects_bad_ifname_container_id_and_command() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/x"),
        ];
        let mut v = base.to_vec();
        v.push(("CNI_IFNAME", "this-name-is-too-long"));
        assert!(env(&v).unwrap_err().msg.starts_with("CNI_IFNAME"));
        let mut v = base.to_vec();
        v.push(("CNI_IFNAME", "eth/0"));
        assert!(env(&v).unwrap_err().msg.starts_with("CNI_IFNAME"));
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(e.unwrap_err().msg.starts_with("CNI_CONTAINERID"));
        for bad in ["eth%d", "%d", "e th", "eth\"0", "-eth", "ethé"] {
            let mut v = base.to_vec();
            v.push(("CNI_IFNAME", bad));
            let e = env(&v).unwrap_err();
            assert!(e.msg.starts_with("CNI_IFNAME"), "{bad:?}: {}", e.msg);
        }
        let long = "c".repeat(MAX_CONTAINER_ID + 1);
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", long.as_str()),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(e.unwrap_err().msg.starts_with("CNI_CONTAINERID"));
        for ok in ["eth0", "net1", "e.1", "veth_a-b"] {
            assert_eq!(valid_ifname(ok), Ok(()), "{ok}");
        }
        assert!(env(&[("CNI_COMMAND", "FROB")])
            .unwrap_err()
            .msg
            .contains("unknown command"));
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn env_parses_args() {
        let e = env(&[
            ("CNI_COMMAND", "GC"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.5"),
        ])
        .unwrap();
        assert_eq!(e.args.get("IP").map(String::as_str), Some("10.0.0.5"));
        assert!(env(&[("CNI_COMMAND", "GC"), ("CNI_ARGS", "novalue")]).is_err());
    }

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:00:00:05".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/x".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: Some("10.0.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![RouteSpec {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.0.0.1".parse().unwrap()),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn result_shapes_per_version() {
        let r = sample();
        let v040 = r.to_version("0.4.0");
        assert_eq!(v040["ips"][0]["version"], "4");
        assert!(v040["interfaces"][0].get("mtu").is_none());
        let v100 = r.to_version("1.0.0");
        assert!(v100["ips"][0].get("version").is_none());
        assert!(v100["interfaces"][0].get("mtu").is_none());
        let v110 = r.to_version("1.1.0");
        assert_eq!(v110["interfaces"][0]["mtu"], 1500);
        assert_eq!(v110["cniVersion"], "1.1.0");
        // Round trip through prevResult of an old version.
        assert_eq!(CniResult::from_prev(&v040).unwrap().ips, r.ips);
    }

    #[test]
    fn merge_renumbers_interfaces() {
        let prev = sample();
        let mine = sample();
        let m = prev.merge(mine);
        assert_eq!(m.interfaces.len(), 2);
        assert_eq!(m.ips[1].interface, Some(1));
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("1.1.0", "1.0.0"));
        assert!(!version_at_least("0.4.0", "1.0.0"));
        assert!(supported("0.4.0") && supported("1.1.0") && !supported("2.0.0"));
    }
}
