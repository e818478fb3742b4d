//! `weft agent`: one per host. It holds the host's subnet lease, owns the VTEP, keeps a route,
//! a neighbour and an FDB entry for every other host's lease (seen through the controller's
//! watch stream, not by polling), and masquerades overlay traffic leaving the overlay.
//!
//! It reconciles instead of resetting: on start it adopts the VTEP and entries it finds,
//! changes only what differs, and never removes anything because the controller is away.
//!
//! - [`vtep`]: the VXLAN device (desired spec, ensure)
//! - [`remote`]: other hosts' leases → routes, neighbours, FDB entries (plan + diff + apply)
//! - [`policy`]: `inet weft-policy`: marking, default deny, anti-spoofing and anti-forgery,
//!   all failing closed (desired elements + diff + one transaction)
//! - [`nat`]: the host's nftables table (masquerade)
//! - [`fastpath`]: tc BPF VXLAN-GBP encap/decap for established connections
//! - [`agent`]: the loop: lease, renew, watch, reconcile
//! - [`args`]: its command line (flags, environment, the policy and fast path modes)

pub mod agent;
pub mod args;
pub mod egress;
pub mod fastpath;
pub mod local;
pub mod metrics;
pub mod nat;
pub mod policy;
pub mod remote;
pub mod vtep;

pub use args::{AgentArgs, FastpathMode, PolicyMode};
