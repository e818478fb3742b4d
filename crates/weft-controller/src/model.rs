//! The resources of the controller as they travel over the wire: leases, apps, policies, changes
//! and watch messages. The server and the [`Client`](crate::Client) share these types.

use std::net::IpAddr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A host's overlay subnet, held until `expires_at` unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The host name the lease was asked for with; one lease per host.
    pub host: String,
    /// The host's address on the underlay network (the VXLAN tunnel endpoint).
    pub underlay_ip: IpAddr,
    /// The overlay subnet the host's containers take their addresses from.
    pub subnet: Ipv4Net,
    /// MAC address of the host's VTEP device, derived from the subnet (`ee:ee:` + subnet address).
    pub vtep_mac: String,
    /// Unix seconds when the lease was first acquired.
    pub acquired_at: i64,
    /// Unix seconds after which an unrenewed lease returns to the pool.
    pub expires_at: i64,
}

/// Body of `POST /v1/leases/acquire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireLease {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub underlay_ip: String,
}

/// Body of `POST /v1/leases/renew` and `POST /v1/leases/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRef {
    #[serde(default)]
    pub host: String,
}

/// Reply of `GET /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseList {
    pub overlay: Ipv4Net,
    pub host_prefix: u8,
    /// Number of subnets in the pool.
    pub pool_size: u64,
    pub leases: Vec<Lease>,
}

/// An app (an opaque id such as a Cloud Foundry app GUID) and its 16-bit tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    /// 1..=65535; fits the VXLAN group-policy field. Stable while the app is referenced.
    pub tag: u16,
    /// True while any host claims the app for a running container (`PUT /v1/hosts/{host}/apps`).
    pub claimed: bool,
}

/// Body of `PUT /v1/hosts/{host}/apps`: every app the host runs (its claims become exactly
/// these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimSet {
    pub apps: Vec<String>,
}

/// Reply of `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<App>,
}

/// Transport protocol a policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive destination port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ports {
    pub start: u16,
    pub end: u16,
}

/// Policy source, as in Cloud Foundry's policy server external API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Source {
    pub id: String,
    /// The source app's tag; filled in by the controller on reads, ignored on writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
}

/// Policy destination, as in Cloud Foundry's policy server external API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Destination {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    pub protocol: Protocol,
    /// Required for tcp and udp, absent for icmp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
}

/// One allow rule: traffic from the source app to the destination app's ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Policy {
    pub source: Source,
    pub destination: Destination,
}

impl Policy {
    /// A policy without tags, as written by a client.
    pub fn new(source: &str, destination: &str, protocol: Protocol, ports: Option<Ports>) -> Self {
        Policy {
            source: Source {
                id: source.to_string(),
                tag: None,
            },
            destination: Destination {
                id: destination.to_string(),
                tag: None,
                protocol,
                ports,
            },
        }
    }

    /// The same policy with the tags dropped (what identifies it).
    pub fn untagged(&self) -> Policy {
        let mut p = self.clone();
        p.source.tag = None;
        p.destination.tag = None;
        p
    }
}

/// Body of policy create and delete requests and reply of policy list, as in Cloud Foundry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_policies: Option<usize>,
    pub policies: Vec<Policy>,
}

/// Reply of policy create and delete: how many policies changed and the revision after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyWriteResult {
    pub changed: usize,
    pub revision: i64,
}

/// One change to the controller's state. Every change gets a global, increasing revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A lease was acquired, renewed or moved to a new underlay IP.
    LeasePut {
        lease: Lease,
    },
    /// A lease was released or expired; its subnet is back in the pool.
    LeaseDeleted {
        lease: Lease,
    },
    /// An app got a tag or was claimed or unclaimed.
    AppPut {
        app: App,
    },
    /// An app was released; its tag may be given to another app later.
    AppDeleted {
        app: App,
    },
    PolicyCreated {
        policy: Policy,
    },
    PolicyDeleted {
        policy: Policy,
    },
}

/// An [`Event`] with its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: i64,
    pub event: Event,
}

/// The full state at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub revision: i64,
    pub leases: Vec<Lease>,
    pub apps: Vec<App>,
    pub policies: Vec<Policy>,
}

/// One line of the watch stream (`GET /v1/watch`, JSON lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchMessage {
    /// The whole state; replaces whatever the watcher had.
    Snapshot(Snapshot),
    /// One change after the previous message.
    Change(Change),
    /// Nothing changed; the stream is alive at this revision.
    Heartbeat { revision: i64 },
}

impl WatchMessage {
    pub fn revision(&self) -> i64 {
        match self {
            WatchMessage::Snapshot(s) => s.revision,
            WatchMessage::Change(c) => c.revision,
            WatchMessage::Heartbeat { revision } => *revision,
        }
    }
}

/// Reply of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub store: String,
    pub revision: i64,
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `policies[0].destination.ports.start`.
    pub field: String,
    pub message: String,
}

/// Body of every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `validation_failed`, `pool_exhausted`.
    pub code: String,
    /// A human-readable message.
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}
