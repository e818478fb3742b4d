//! `weft agent`: one per host. It holds the host's subnet lease, owns the VTEP, keeps a route,
//! a neighbour and an FDB entry for every other host's lease (seen through the controller's
//! watch stream, not by polling), and masquerades overlay traffic leaving the overlay.
//!
//! It reconciles instead of resetting: on start it adopts the VTEP and entries it finds,
//! changes only what differs, and never removes anything because the controller is away.
//!
//! - [`vtep`]: the VXLAN device (desired spec, ensure)
//! - [`remote`]: other hosts' leases → routes, neighbours, FDB entries (plan + diff + apply)
//! - [`tables`]: the nftables tables on weft-kernel's typed model: [`policy`] (`inet
//!   weft-policy`: marking, default deny, anti-spoofing and anti-forgery, all failing closed;
//!   retried with backoff after a failed transaction) and [`nat`] (masquerade)
//! - [`placement`]: reports this host's containers to the controller (for DNS and filtering)
//! - [`fastpath`]: tc BPF VXLAN-GBP encap/decap for established connections
//! - [`agent`]: the loop: lease, renew, watch, reconcile; [`sync`]: the watch-to-state
//!   reducer it runs (pure)
//! - [`audit`]: the audit log: NFLOG rules in the policy table, read and written as JSON lines
//! - [`dns`]: internal DNS at 169.254.0.2 (`apps.internal`, forwarding)
//! - [`args`]: its command line (flags, environment, the policy and fast path modes)

pub mod agent;
pub mod args;
pub mod audit;
mod controller;
pub mod dns;
pub mod fastpath;
pub mod local;
pub mod metrics;
pub mod placement;
pub mod remote;
mod retry;
pub mod sync;
pub mod tables;
mod underlay;
pub mod vtep;

pub use tables::{egress, nat, policy};

pub use args::{AgentArgs, FastpathMode, PolicyMode};
