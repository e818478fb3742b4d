//! weft-cni: a CNI 1.1 plugin. Bridge mode does, per container, what seed 003 does by hand.
//! The binary (`weft-cni`, `src/main.rs`) reads CNI_* and stdin and runs [`commands::run`].
//!
//! - [`spec`]: the CNI protocol (environment, errors, results of every version)
//! - [`config`]: the network configuration, checked field by field
//! - [`store`], [`ipam`]: state on disk and address allocation
//! - [`plan`]: what one container's network should be (pure)
//! - [`bridge`], [`firewall`]: bridge mode, applying and undoing a plan (kernel, nftables)
//! - [`ports`]: host ports of every network on the host, one registry (nftables)
//! - [`overlay`], [`lease`]: overlay mode (routed /32 veth, address from the host's lease)
//! - [`commands`]: ADD, DEL, CHECK, GC, STATUS, VERSION

pub mod bridge;
pub mod commands;
pub mod config;
pub mod firewall;
pub mod ipam;
pub mod lease;
pub mod overlay;
pub mod plan;
pub mod ports;
pub mod spec;
pub mod store;
pub mod veth;
