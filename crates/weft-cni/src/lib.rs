//! weft-cni: a CNI 1.1 plugin. Bridge mode does, per container, what seed 003 does by hand.
//!
//! - [`spec`]: the CNI protocol (environment, errors, results of every version)
//! - [`config`]: the network configuration, checked field by field
//! - [`store`], [`ipam`]: state on disk and address allocation
//! - [`plan`]: what one container's network should be (pure)
//! - [`bridge`], [`firewall`]: applying and undoing a plan (kernel, nftables)
//! - [`commands`]: ADD, DEL, CHECK, GC, STATUS, VERSION

pub mod bridge;
pub mod commands;
pub mod config;
pub mod firewall;
pub mod ipam;
pub mod plan;
pub mod spec;
pub mod store;
