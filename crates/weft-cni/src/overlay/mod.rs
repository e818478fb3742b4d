//! Overlay mode (seed 000, steps 1-2 and 11): a container is a routed point-to-point link, as
//! in Cloud Foundry's silk. No bridge: the container's interface has its overlay address as a
//! /32 and a default route via 169.254.0.1, the host end of its veth; the host routes the /32
//! to the veth. ARP is off on both ends, each holding a permanent neighbour entry for the
//! other (MACs derived from the container's address). Addresses come from the host's lease
//! ([`weft_api::records::HostLease`], written by the agent). Traffic to other hosts' subnets
//! leaves through the agent's VTEP; the agent marks it by app (the policy issue). Port
//! mappings are Cloud Foundry's netin: the host's ports table ([`crate::ports`]) DNATs them to
//! the overlay address; the host end gets route_localnet so that 127.0.0.1 works too.
//!
//! [`plan`](mod@plan) decides (pure), [`apply`] does and undoes (the mode's [`crate::driver::Driver`]).

pub mod apply;
pub mod plan;

pub use plan::{lease_range, plan};

use std::net::Ipv4Addr;
use std::path::Path;

use crate::spec::{code, CniError};
use ipnet::{IpNet, Ipv4Net};
use weft_api::records::{HostLease, RecordError};

/// The link-local address of the host side of every overlay veth (as silk does): the
/// containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// The host's lease, as the agent wrote it to `leaseFile`. Missing or unreadable: try again
/// later (code 11; the agent may not have its lease yet); corrupt: code 5.
pub fn read_lease(path: &Path) -> Result<HostLease, CniError> {
    HostLease::read(path).map_err(|e| match e {
        RecordError::Io { source, .. } => CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "leaseFile {}: {source} (is `weft agent` running on this host and has it got a lease?)",
                path.display()
            ),
        ),
        RecordError::Corrupt { source, .. } => CniError::new(
            code::IO_FAILURE,
            format!("leaseFile {} is corrupt: {source}", path.display()),
        ),
    })
}

/// `ip` as a /32.
fn host_net(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

/// 0.0.0.0/0, the container's default route.
fn default_route() -> IpNet {
    IpNet::V4(Ipv4Net::default())
}
