//! The resources of the controller as they travel over the wire: leases, apps, policies, changes
//! and watch messages, and the body of every error. The controller serializes them and the
//! [`Client`](crate::Client) reads them: one type for both ends. [`allowing`] says what a set
//! of policies allows (default deny), for whoever needs to explain a verdict.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::egress::{Destination as EgressDestination, EgressMode, EgressPolicy, EgressState};

/// A host's overlay subnet, held until `expires_at` unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// The host name the lease was asked for with; one lease per host.
    pub host: String,
    /// The host's address on the underlay network (the VXLAN tunnel endpoint).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "192.0.2.1"))]
    pub underlay_ip: IpAddr,
    /// The overlay subnet the host's containers take their addresses from.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.255.7.0/24"))]
    pub subnet: Ipv4Net,
    /// MAC address of the host's VTEP device, derived from the subnet (`ee:ee:` + subnet address).
    pub vtep_mac: String,
    /// Unix seconds when the lease was first acquired.
    pub acquired_at: i64,
    /// Unix seconds after which an unrenewed lease returns to the pool.
    pub expires_at: i64,
}

/// Now in unix seconds: the clock of [`Lease::acquired_at`] and [`Lease::expires_at`] (0 if
/// the system clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Body of `POST /v1/leases/acquire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireLease {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub underlay_ip: String,
    /// The subnet the host held before (from its lease file): granted again when it is free
    /// or already the host's, so a host returning after its lease expired keeps its
    /// containers' addresses. Another subnet is given when it is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "10.255.7.0/24"))]
    pub subnet: Option<Ipv4Net>,
}

/// Body of `POST /v1/leases/renew` and `POST /v1/leases/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRef {
    #[serde(default)]
    pub host: String,
}

/// Reply of `GET /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseList {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.255.0.0/16"))]
    pub overlay: Ipv4Net,
    pub host_prefix: u8,
    /// Number of subnets in the pool.
    pub pool_size: u64,
    pub leases: Vec<Lease>,
}

/// An app (an opaque id such as a Cloud Foundry app GUID) and its 16-bit tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimSet {
    pub apps: Vec<String>,
}

/// Reply of `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppList {
    pub apps: Vec<App>,
}

/// One container a host runs, as the host reports it (an element of [`ContainerSet`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportedInstance {
    /// The container id (as the runtime gave it to CNI); unique on its host.
    pub id: String,
    /// The app the container runs.
    pub app: String,
    /// The instance index within its app (Cloud Foundry's `INSTANCE_INDEX`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The container's overlay address: inside the host's lease.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.255.7.2"))]
    pub ip: Ipv4Addr,
}

/// Body of `PUT /v1/hosts/{host}/containers`: every container the host runs (its reported
/// instances become exactly these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContainerSet {
    pub containers: Vec<ReportedInstance>,
}

/// A running instance of an app: where a container runs (placement), as hosts report them.
/// It goes when its host reports a set without it or its host's lease goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instance {
    /// The host that runs it (the one that reported it).
    pub host: String,
    /// The container id, unique on its host.
    pub id: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.255.7.2"))]
    pub ip: Ipv4Addr,
}

/// Reply of `GET /v1/instances` and `PUT`/`GET /v1/hosts/{host}/containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceList {
    pub instances: Vec<Instance>,
}

/// One app's tag as Cloud Foundry's policy server lists it (`GET /networking/v1/external/tags`):
/// the tag in upper-case hex, two bytes wide (`"0001"`), as CF writes tags with its default
/// `tag_length` of 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagEntry {
    /// The app (CF's `policy_group_id`).
    pub id: String,
    pub tag: String,
    /// What the id names; always `"app"` in weft (CF also has `"router"`).
    #[serde(rename = "type")]
    pub kind: String,
}

impl TagEntry {
    /// The entry for an app with `tag`.
    pub fn app(id: &str, tag: u16) -> TagEntry {
        TagEntry {
            id: id.to_string(),
            tag: format!("{tag:04X}"),
            kind: "app".to_string(),
        }
    }

    /// The tag as a number (`"00FF"` → 255); `None` if it is not 1 to 4 hex digits.
    pub fn value(&self) -> Option<u16> {
        (1..=4)
            .contains(&self.tag.len())
            .then(|| u16::from_str_radix(&self.tag, 16).ok())
            .flatten()
    }
}

/// Reply of `GET /networking/v1/external/tags`, as in Cloud Foundry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagList {
    pub tags: Vec<TagEntry>,
}

/// Transport protocol a policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ports {
    pub start: u16,
    pub end: u16,
}

/// Policy source, as in Cloud Foundry's policy server external API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    pub id: String,
    /// The source app's tag; filled in by the controller on reads, ignored on writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
}

/// Policy destination, as in Cloud Foundry's policy server external API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_policies: Option<usize>,
    pub policies: Vec<Policy>,
}

/// Reply of policy create and delete: how many policies changed and the revision after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyWriteResult {
    pub changed: usize,
    pub revision: i64,
}

/// One change to the controller's state. Every change gets a global, increasing revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// A host reported a new container, or one whose app, index or address changed.
    InstancePut {
        instance: Instance,
    },
    /// A container is gone: its host no longer reports it, or the host's lease went.
    InstanceDeleted {
        instance: Instance,
    },
    /// The network-wide egress mode changed.
    EgressModeSet {
        mode: EgressMode,
    },
    /// An egress destination was created or its rules replaced.
    DestinationPut {
        destination: EgressDestination,
    },
    DestinationDeleted {
        destination: EgressDestination,
    },
    EgressPolicyCreated {
        egress_policy: EgressPolicy,
    },
    EgressPolicyDeleted {
        egress_policy: EgressPolicy,
    },
}

impl Event {
    /// The `type` of every event this version knows. A watcher skips (with a warning) a
    /// change of another type: a newer controller may send one.
    pub const TYPES: [&'static str; 13] = [
        "lease_put",
        "lease_deleted",
        "app_put",
        "app_deleted",
        "policy_created",
        "policy_deleted",
        "instance_put",
        "instance_deleted",
        "egress_mode_set",
        "destination_put",
        "destination_deleted",
        "egress_policy_created",
        "egress_policy_deleted",
    ];
}

/// An [`Event`] with its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    pub revision: i64,
    pub event: Event,
}

/// The full state at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    pub revision: i64,
    pub leases: Vec<Lease>,
    pub apps: Vec<App>,
    pub policies: Vec<Policy>,
    /// Every running instance (controllers before placement sent none: empty).
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// Egress mode, destinations and egress policies (absent: allow, none).
    #[serde(default, skip_serializing_if = "EgressState::is_default")]
    pub egress: EgressState,
}

/// One message of the watch stream (`GET /v1/watch`, JSON lines), as a
/// [`Client`](crate::Client) delivers it. On the wire a snapshot may come in several lines
/// (see [`SnapshotPart`]); the client joins them into one `Snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchMessage {
    /// The whole state; replaces whatever the watcher had.
    Snapshot(Snapshot),
    /// One change after the previous message.
    Change(Change),
    /// The stream is alive; the watcher has been sent every change up to `revision` (0 at
    /// the start of a stream that begins with a snapshot).
    Heartbeat {
        revision: i64,
        /// How often the controller sends heartbeats on an idle stream, in milliseconds. The
        /// first line of every stream is a heartbeat that announces it; a watcher that hears
        /// nothing for a few intervals may take the controller for gone. (Controllers before
        /// this field sent one every 15 s without saying so.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u64>,
    },
}

impl WatchMessage {
    pub fn revision(&self) -> i64 {
        match self {
            WatchMessage::Snapshot(s) => s.revision,
            WatchMessage::Change(c) => c.revision,
            WatchMessage::Heartbeat { revision, .. } => *revision,
        }
    }
}

/// A snapshot, or one part of it, as one line on the wire. A client that asks for parts
/// (`GET /v1/watch?snapshot=parts`) gets the snapshot as a `snapshot` line with `"more": true`
/// followed by `snapshot_part` lines at the same revision, the last with `more` false (or
/// absent); each line carries a bounded number of leases, apps and policies in all (the
/// controller's `weft_controller::watch::PART_ITEMS`; instances count too). Without `snapshot=parts` the whole snapshot is one `snapshot` line (older clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart<'a> {
    pub revision: i64,
    pub leases: Cow<'a, [Lease]>,
    pub apps: Cow<'a, [App]>,
    pub policies: Cow<'a, [Policy]>,
    /// Running instances (absent from controllers before placement, and when empty).
    #[serde(default, skip_serializing_if = "<[Instance]>::is_empty")]
    pub instances: Cow<'a, [Instance]>,
    /// The egress state: whole, on the first line only.
    #[serde(default, skip_serializing_if = "EgressState::is_default")]
    pub egress: Cow<'a, EgressState>,
    /// More parts of this snapshot follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// One line of the watch stream exactly as it travels (see [`WatchMessage`] for what a
/// client delivers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchLine<'a> {
    Snapshot(SnapshotPart<'a>),
    SnapshotPart(SnapshotPart<'a>),
    Change(Cow<'a, Change>),
    Heartbeat {
        revision: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u64>,
    },
}

impl WatchLine<'_> {
    /// The kinds this version knows; a client skips (with a warning) lines of another kind.
    pub const KINDS: [&'static str; 4] = ["snapshot", "snapshot_part", "change", "heartbeat"];
}

/// Reply of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
    pub store: String,
    pub revision: i64,
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Path of the field in the request, e.g. `policies[0].destination.ports.start`.
    pub field: String,
    pub message: String,
}

/// Body of every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `validation_failed`, `pool_exhausted`.
    pub code: String,
    /// A human-readable message.
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

/// The first policy (in the given order) that allows `source` to reach `destination` with
/// `protocol` on `port`, if any; none means denied (the default). ICMP policies have no ports;
/// TCP and UDP need the port inside the policy's range.
pub fn allowing<'a>(
    policies: &'a [Policy],
    source: &str,
    destination: &str,
    protocol: Protocol,
    port: Option<u16>,
) -> Option<&'a Policy> {
    policies.iter().find(|p| {
        p.source.id == source
            && p.destination.id == destination
            && p.destination.protocol == protocol
            && match (protocol, p.destination.ports, port) {
                (Protocol::Icmp, _, _) => true,
                (_, Some(r), Some(port)) => r.start <= port && port <= r.end,
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            host: "h".into(),
            underlay_ip: "192.0.2.1".parse().unwrap(),
            subnet: "10.255.1.0/24".parse().unwrap(),
            vtep_mac: "ee:ee:0a:ff:01:00".into(),
            acquired_at: 1,
            expires_at: 2,
        }
    }

    fn instance() -> Instance {
        Instance {
            host: "h".into(),
            id: "c1".into(),
            app: "web".into(),
            index: Some(0),
            ip: "10.255.1.2".parse().unwrap(),
        }
    }

    /// The lists a client checks unknown kinds and event types against name exactly what
    /// this version reads.
    #[test]
    fn known_kinds_and_event_types_match_the_types() {
        let app = App {
            id: "a".into(),
            tag: 1,
            claimed: false,
        };
        let policy = Policy::new("a", "b", Protocol::Icmp, None);
        let dest = EgressDestination {
            id: "d".into(),
            name: "d".into(),
            description: String::new(),
            rules: vec![],
        };
        let events = [
            Event::LeasePut { lease: lease() },
            Event::LeaseDeleted { lease: lease() },
            Event::AppPut { app: app.clone() },
            Event::AppDeleted { app },
            Event::PolicyCreated {
                policy: policy.clone(),
            },
            Event::PolicyDeleted { policy },
            Event::InstancePut {
                instance: instance(),
            },
            Event::InstanceDeleted {
                instance: instance(),
            },
            Event::EgressModeSet {
                mode: EgressMode::Deny,
            },
            Event::DestinationPut {
                destination: dest.clone(),
            },
            Event::DestinationDeleted { destination: dest },
            Event::EgressPolicyCreated {
                egress_policy: EgressPolicy::new("a", "d"),
            },
            Event::EgressPolicyDeleted {
                egress_policy: EgressPolicy::new("a", "d"),
            },
        ];
        let types: Vec<String> = events
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(types, Event::TYPES);

        let part = SnapshotPart {
            revision: 1,
            leases: Cow::Owned(vec![lease()]),
            apps: Cow::Owned(vec![]),
            policies: Cow::Owned(vec![]),
            instances: Cow::Owned(vec![instance()]),
            egress: Cow::Owned(EgressState::default()),
            more: false,
        };
        let lines = [
            WatchLine::Snapshot(part.clone()),
            WatchLine::SnapshotPart(part),
            WatchLine::Change(Cow::Owned(Change {
                revision: 2,
                event: events[0].clone(),
            })),
            WatchLine::Heartbeat {
                revision: 2,
                interval_ms: Some(5000),
            },
        ];
        let kinds: Vec<String> = lines
            .iter()
            .map(|l| {
                serde_json::to_value(l).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(kinds, WatchLine::KINDS);
    }

    /// A whole snapshot line is the same JSON older clients read as `WatchMessage::Snapshot`,
    /// and `more` only appears when parts follow.
    #[test]
    fn a_whole_snapshot_line_is_what_older_clients_read() {
        let part = SnapshotPart {
            revision: 4,
            leases: Cow::Owned(vec![lease()]),
            apps: Cow::Owned(vec![]),
            policies: Cow::Owned(vec![]),
            instances: Cow::Owned(vec![]),
            egress: Cow::Owned(EgressState::default()),
            more: false,
        };
        let json = serde_json::to_string(&WatchLine::Snapshot(part.clone())).unwrap();
        assert!(!json.contains("more"));
        assert!(
            !json.contains("instances"),
            "no instances, no field: {json}"
        );
        let old: WatchMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(
            old,
            WatchMessage::Snapshot(Snapshot {
                revision: 4,
                leases: vec![lease()],
                apps: vec![],
                policies: vec![],
                instances: vec![],
                egress: EgressState::default(),
            })
        );
        // With instances, the line still reads as a snapshot, and round-trips.
        let with = SnapshotPart {
            instances: Cow::Owned(vec![instance()]),
            ..part.clone()
        };
        let json = serde_json::to_string(&WatchLine::Snapshot(with)).unwrap();
        let WatchMessage::Snapshot(read) = serde_json::from_str(&json).unwrap() else {
            panic!("not a snapshot: {json}");
        };
        assert_eq!(read.instances, vec![instance()]);
        let more = SnapshotPart { more: true, ..part };
        let json = serde_json::to_string(&WatchLine::Snapshot(more)).unwrap();
        assert!(json.contains("\"more\":true"));
        // A heartbeat with its interval is still a heartbeat to an older client.
        let beat = serde_json::to_string(&WatchLine::Heartbeat {
            revision: 4,
            interval_ms: Some(5000),
        })
        .unwrap();
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Old {
            Heartbeat { revision: i64 },
        }
        let Old::Heartbeat { revision } = serde_json::from_str(&beat).unwrap();
        assert_eq!(revision, 4);
    }

    #[test]
    fn allowing_finds_the_policy_that_allows() {
        let ps = vec![
            Policy::new(
                "b",
                "a",
                Protocol::Tcp,
                Some(Ports {
                    start: 8080,
                    end: 8090,
                }),
            ),
            Policy::new("b", "a", Protocol::Icmp, None),
        ];
        assert!(allowing(&ps, "b", "a", Protocol::Tcp, Some(8085)).is_some());
        assert!(allowing(&ps, "b", "a", Protocol::Tcp, Some(8091)).is_none());
        assert!(
            allowing(&ps, "a", "b", Protocol::Tcp, Some(8080)).is_none(),
            "one-way"
        );
        assert!(allowing(&ps, "b", "a", Protocol::Udp, Some(8080)).is_none());
        assert!(
            allowing(&ps, "b", "a", Protocol::Tcp, None).is_none(),
            "no port, no tcp"
        );
        assert!(allowing(&ps, "b", "a", Protocol::Icmp, None).is_some());
    }
}
