//! netavark's plugin API, the part weft reads and writes (containers/netavark
//! `plugin-API.md`, `src/network/types.rs`): the network configuration podman stores, what
//! netavark passes to `setup`/`teardown`, and the status block `setup` answers with.
//!
//! Fields weft does not use are kept as they came ([`Network::rest`]): `create` returns the
//! configuration podman gave it with only weft's own fields completed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The plugin API version netavark expects in `info`.
pub const API_VERSION: &str = "1.0.0";

/// A network as podman stores it (`podman network inspect`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    /// The host interface: in bridge mode the bridge's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<Subnet>>,
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub dns_enabled: bool,
    /// `podman network create --opt K=V`: weft's options (see [`crate::settings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// Everything else (`created`, `labels`, `network_dns_servers`, ...), as it came.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One subnet of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub subnet: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_range: Option<LeaseRange>,
}

/// Where in a subnet addresses are handed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ip: Option<String>,
}

/// A static route of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub destination: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_type: Option<String>,
}

/// What `setup` and `teardown` read on stdin: one container on one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginExec {
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    /// The container's port mappings (all of them, on every network it joins).
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
    pub network: Network,
    pub network_options: PerNetworkOptions,
}

/// The container's options on this network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PerNetworkOptions {
    pub interface_name: String,
    /// Addresses podman's IPAM chose (one per subnet).
    #[serde(default)]
    pub static_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub static_mac: Option<String>,
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    /// Per-container driver options: weft reads `app_id`.
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

/// One port mapping, possibly a range of ports and several protocols (`tcp,udp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub range: u16,
}

/// `setup`'s answer: the container's interfaces on this network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatusBlock {
    pub dns_search_domains: Option<Vec<String>>,
    pub dns_server_ips: Option<Vec<IpAddr>>,
    pub interfaces: Option<BTreeMap<String, NetInterface>>,
}

/// One interface in the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Option<Vec<NetAddress>>,
}

/// One address of an interface, with its prefix, and the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetAddress {
    pub ipnet: IpNet,
    pub gateway: Option<IpAddr>,
}
