//! Egress: what an app may reach outside the overlay, in the spirit of Cloud Foundry's dynamic
//! egress API. A [`Destination`] names address ranges with a protocol and ports; an
//! [`EgressPolicy`] lets one app reach one destination. In the network-wide mode
//! [`EgressMode::Deny`] an app reaches exactly what its egress policies allow; in
//! [`EgressMode::Allow`] (the default, weft's behaviour before egress policy) it reaches
//! everything outside the overlay.
//!
//! The wire fields are CF's strings (`"ips": "10.0.0.1-10.0.0.9"`, `"ports": "80-90"`); the
//! parse functions here turn them into typed ranges, naming the bad field, for the controller
//! (validation) and the agent (its table) alike.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{Event, Ports};

/// Network-wide egress mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Apps reach everything outside the overlay (egress policies are not needed).
    #[default]
    Allow,
    /// Apps reach outside the overlay only what an egress policy allows.
    Deny,
}

impl EgressMode {
    pub fn parse(s: &str) -> Option<EgressMode> {
        match s {
            "allow" => Some(EgressMode::Allow),
            "deny" => Some(EgressMode::Deny),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::Allow => "allow",
            EgressMode::Deny => "deny",
        }
    }
}

/// Protocol of a destination rule; `all` matches every protocol (ports must then be absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EgressProtocol {
    Tcp,
    Udp,
    Icmp,
    All,
}

impl EgressProtocol {
    pub fn parse(s: &str) -> Option<EgressProtocol> {
        match s {
            "tcp" => Some(EgressProtocol::Tcp),
            "udp" => Some(EgressProtocol::Udp),
            "icmp" => Some(EgressProtocol::Icmp),
            "all" => Some(EgressProtocol::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EgressProtocol::Tcp => "tcp",
            EgressProtocol::Udp => "udp",
            EgressProtocol::Icmp => "icmp",
            EgressProtocol::All => "all",
        }
    }

    /// Whether rules of this protocol carry ports.
    pub fn has_ports(self) -> bool {
        matches!(self, EgressProtocol::Tcp | EgressProtocol::Udp)
    }
}

/// One rule of a destination, as CF writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DestinationRule {
    pub protocol: EgressProtocol,
    /// A CIDR (`203.0.113.0/24`), an address, or an inclusive range (`10.0.0.1-10.0.0.9`).
    pub ips: String,
    /// A port (`"80"`) or an inclusive range (`"8080-8090"`); tcp and udp only, absent means
    /// every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A named set of address ranges outside the overlay.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// Named apart from the c2c policy's `Destination` in the OpenAPI document.
#[cfg_attr(feature = "openapi", schema(as = EgressDestination))]
pub struct Destination {
    /// The destination's id: its name (given by the controller on create).
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub rules: Vec<DestinationRule>,
}

/// Body of destination create and reply of destination list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DestinationList {
    pub destinations: Vec<Destination>,
}

/// The app an egress policy lets out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EgressSource {
    pub id: String,
    /// Always `"app"`.
    #[serde(rename = "type", default = "app_type")]
    pub kind: String,
    /// The app's tag; filled in by the controller on reads, ignored on writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
}

fn app_type() -> String {
    "app".to_string()
}

/// The destination an egress policy opens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EgressTarget {
    pub id: String,
}

/// One app may reach one destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EgressPolicy {
    pub source: EgressSource,
    pub destination: EgressTarget,
}

impl EgressPolicy {
    pub fn new(app: &str, destination: &str) -> EgressPolicy {
        EgressPolicy {
            source: EgressSource {
                id: app.to_string(),
                kind: app_type(),
                tag: None,
            },
            destination: EgressTarget {
                id: destination.to_string(),
            },
        }
    }

    /// The same policy without the tag (what identifies it).
    pub fn untagged(&self) -> EgressPolicy {
        let mut p = self.clone();
        p.source.tag = None;
        p
    }
}

/// Body of egress policy create and delete, reply of egress policy list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EgressPolicyList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_egress_policies: Option<usize>,
    pub egress_policies: Vec<EgressPolicy>,
}

/// The egress part of a watch snapshot: the mode, every destination and every egress policy
/// (with tags). Absent from the JSON when it is the default (allow, nothing defined), so older
/// agents and controllers read and write the same snapshots as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EgressState {
    #[serde(default)]
    pub mode: EgressMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<EgressPolicy>,
}

impl EgressState {
    pub fn is_default(&self) -> bool {
        *self == EgressState::default()
    }

    /// [`allowing`] with this state's policies and destinations.
    pub fn allowing(
        &self,
        app: &str,
        ip: Ipv4Addr,
        protocol: &str,
        port: Option<u16>,
    ) -> Option<(&Destination, usize)> {
        allowing(&self.policies, &self.destinations, app, ip, protocol, port)
    }

    /// Applies a watch event; true if it was an egress event (the state may have changed).
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::EgressModeSet { mode } => self.mode = *mode,
            Event::DestinationPut { destination } => {
                match self
                    .destinations
                    .iter_mut()
                    .find(|d| d.id == destination.id)
                {
                    Some(d) => *d = destination.clone(),
                    None => self.destinations.push(destination.clone()),
                }
            }
            Event::DestinationDeleted { destination } => {
                self.destinations.retain(|d| d.id != destination.id)
            }
            Event::EgressPolicyCreated { egress_policy } => {
                let key = egress_policy.untagged();
                if !self.policies.iter().any(|p| p.untagged() == key) {
                    self.policies.push(egress_policy.clone());
                }
            }
            Event::EgressPolicyDeleted { egress_policy } => {
                let key = egress_policy.untagged();
                self.policies.retain(|p| p.untagged() != key)
            }
            _ => return false,
        }
        true
    }
}

/// Body of `PUT /v1/egress` and its reply: the network-wide egress mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EgressSettings {
    pub mode: EgressMode,
}

/// An inclusive IPv4 address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl IpRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }
}

/// A rule in typed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub protocol: EgressProtocol,
    pub ips: IpRange,
    /// `None`: every port (and always for icmp and all).
    pub ports: Option<Ports>,
}

impl Rule {
    /// Whether the rule allows a packet to `ip` with `protocol` (`tcp`, `udp`, `icmp` or
    /// another) and, for tcp and udp, destination `port`.
    pub fn allows(&self, ip: Ipv4Addr, protocol: &str, port: Option<u16>) -> bool {
        if !self.ips.contains(ip) {
            return false;
        }
        match self.protocol {
            EgressProtocol::All => true,
            p if p.as_str() != protocol => false,
            _ => match (self.ports, port) {
                (None, _) => true,
                (Some(r), Some(port)) => r.start <= port && port <= r.end,
                (Some(_), None) => false,
            },
        }
    }
}

/// `"203.0.113.0/24"`, `"203.0.113.7"` or `"10.0.0.1-10.0.0.9"`.
pub fn parse_ips(s: &str) -> Result<IpRange, String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let start: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let end: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not an IPv4 address"))?;
        if start > end {
            return Err(format!("range start {start} is after its end {end}"));
        }
        return Ok(IpRange { start, end });
    }
    if s.contains('/') {
        let net: Ipv4Net = s
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 CIDR"))?;
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set (the network is {})",
                net.trunc()
            ));
        }
        return Ok(IpRange {
            start: net.network(),
            end: net.broadcast(),
        });
    }
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address, CIDR or range (A-B)"))?;
    Ok(IpRange { start: ip, end: ip })
}

/// `"80"` or `"8080-8090"`.
pub fn parse_ports(s: &str) -> Result<Ports, String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!("{p:?} is not a port: must be 1 to 65535")),
        }
    };
    let (start, end) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(s)?;
            (p, p)
        }
    };
    if start > end {
        return Err(format!("start {start} is greater than end {end}"));
    }
    Ok(Ports { start, end })
}

impl DestinationRule {
    /// A rule without a description.
    pub fn new(protocol: EgressProtocol, ips: &str, ports: Option<&str>) -> DestinationRule {
        DestinationRule {
            protocol,
            ips: ips.into(),
            ports: ports.map(String::from),
            description: String::new(),
        }
    }

    /// The rule in typed form, or the name of the bad field (relative: `ips`, `ports`) and why.
    pub fn parse(&self) -> Result<Rule, (&'static str, String)> {
        let ips = parse_ips(&self.ips).map_err(|e| ("ips", e))?;
        let ports = match (&self.ports, self.protocol.has_ports()) {
            (None, _) => None,
            (Some(p), true) => Some(parse_ports(p).map_err(|e| ("ports", e))?),
            (Some(_), false) => {
                return Err((
                    "ports",
                    format!("{} rules take no ports", self.protocol.as_str()),
                ))
            }
        };
        Ok(Rule {
            protocol: self.protocol,
            ips,
            ports,
        })
    }
}

/// The first (destination, rule index) among `policies` of `app` that allows the packet, given
/// the destinations by id. `None` in deny mode means dropped.
pub fn allowing<'a>(
    policies: &[EgressPolicy],
    destinations: &'a [Destination],
    app: &str,
    ip: Ipv4Addr,
    protocol: &str,
    port: Option<u16>,
) -> Option<(&'a Destination, usize)> {
    for p in policies.iter().filter(|p| p.source.id == app) {
        let Some(d) = destinations.iter().find(|d| d.id == p.destination.id) else {
            continue;
        };
        for (i, r) in d.rules.iter().enumerate() {
            if r.parse().is_ok_and(|r| r.allows(ip, protocol, port)) {
                return Some((d, i));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cf_ip_and_port_strings() {
        assert_eq!(
            parse_ips("203.0.113.0/24").unwrap(),
            IpRange {
                start: ip("203.0.113.0"),
                end: ip("203.0.113.255")
            }
        );
        assert_eq!(
            parse_ips("10.0.0.1-10.0.0.9").unwrap(),
            IpRange {
                start: ip("10.0.0.1"),
                end: ip("10.0.0.9")
            }
        );
        assert_eq!(parse_ips("1.2.3.4").unwrap().end, ip("1.2.3.4"));
        for bad in [
            "10.0.0.9-10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/24",
            "x",
            "::1",
            "",
        ] {
            assert!(parse_ips(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ports("80").unwrap(), Ports { start: 80, end: 80 });
        assert_eq!(
            parse_ports("8080-8090").unwrap(),
            Ports {
                start: 8080,
                end: 8090
            }
        );
        for bad in ["0", "65536", "90-80", "a", ""] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_allow_exactly_their_range_protocol_and_ports() {
        let rule = DestinationRule {
            protocol: EgressProtocol::Tcp,
            ips: "203.0.113.0/24".into(),
            ports: Some("80".into()),
            description: String::new(),
        }
        .parse()
        .unwrap();
        assert!(rule.allows(ip("203.0.113.9"), "tcp", Some(80)));
        assert!(!rule.allows(ip("203.0.114.9"), "tcp", Some(80)));
        assert!(!rule.allows(ip("203.0.113.9"), "tcp", Some(81)));
        assert!(!rule.allows(ip("203.0.113.9"), "udp", Some(80)));
        let icmp_with_ports = DestinationRule {
            protocol: EgressProtocol::Icmp,
            ips: "1.1.1.1".into(),
            ports: Some("1".into()),
            description: String::new(),
        };
        assert_eq!(icmp_with_ports.parse().unwrap_err().0, "ports");
        let all = DestinationRule {
            protocol: EgressProtocol::All,
            ips: "1.1.1.0-1.1.1.3".into(),
            ports: None,
            description: String::new(),
        }
        .parse()
        .unwrap();
        assert!(all.allows(ip("1.1.1.3"), "icmp", None));
        assert!(!all.allows(ip("1.1.1.4"), "icmp", None));

        let dests = vec![Destination {
            id: "web".into(),
            name: "web".into(),
            description: String::new(),
            rules: vec![DestinationRule::new(
                EgressProtocol::Tcp,
                "203.0.113.0/24",
                Some("80"),
            )],
        }];
        let ps = vec![EgressPolicy::new("db", "web")];
        assert!(allowing(&ps, &dests, "db", ip("203.0.113.1"), "tcp", Some(80)).is_some());
        assert!(allowing(&ps, &dests, "api", ip("203.0.113.1"), "tcp", Some(80)).is_none());
        assert!(allowing(&ps, &dests, "db", ip("203.0.113.1"), "tcp", Some(443)).is_none());
    }

    #[test]
    fn watch_events_build_the_state() {
        let d = Destination {
            id: "net".into(),
            name: "net".into(),
            description: String::new(),
            rules: vec![],
        };
        let mut s = EgressState::default();
        assert!(s.apply(&Event::EgressModeSet {
            mode: EgressMode::Deny
        }));
        assert!(s.apply(&Event::DestinationPut {
            destination: d.clone()
        }));
        assert!(s.apply(&Event::DestinationPut {
            destination: d.clone()
        }));
        let mut p = EgressPolicy::new("db", "net");
        p.source.tag = Some(7);
        assert!(s.apply(&Event::EgressPolicyCreated {
            egress_policy: p.clone()
        }));
        assert!(s.apply(&Event::EgressPolicyCreated {
            egress_policy: p.clone()
        }));
        assert_eq!((s.destinations.len(), s.policies.len()), (1, 1));
        assert_eq!(s.mode, EgressMode::Deny);
        assert!(s.apply(&Event::EgressPolicyDeleted {
            egress_policy: EgressPolicy::new("db", "net")
        }));
        assert!(s.apply(&Event::DestinationDeleted { destination: d }));
        assert!(!s.apply(&Event::AppDeleted {
            app: crate::model::App {
                id: "db".into(),
                tag: 7,
                claimed: false
            }
        }));
        assert_eq!(
            s,
            EgressState {
                mode: EgressMode::Deny,
                ..Default::default()
            }
        );
    }

    #[test]
    fn wire_shape_is_cfs() {
        let p = EgressPolicy::new("app-guid", "dest-guid");
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"source": {"id": "app-guid", "type": "app"}, "destination": {"id": "dest-guid"}})
        );
        let d: Destination = serde_json::from_value(serde_json::json!(
            {"name": "net", "rules": [{"protocol": "tcp", "ips": "10.0.0.0/8", "ports": "80-81"}]}
        ))
        .unwrap();
        assert_eq!(
            d.rules[0].parse().unwrap().ports,
            Some(Ports { start: 80, end: 81 })
        );
    }
}
