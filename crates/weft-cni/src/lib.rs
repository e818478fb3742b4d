//! weft-cni: a CNI 1.1 plugin. Bridge mode does, per container, what seed 003 does by hand;
//! overlay mode is Cloud Foundry silk's routed /32 per container. The binary (`weft-cni`,
//! `src/main.rs`) reads CNI_* and stdin and runs [`commands::run`].
//!
//! Who uses whom (each level uses only the levels below it):
//!
//! ```text
//! commands                                 the six commands, step by step
//!   ├─ bridge/{plan,apply}  overlay/{plan,apply}
//!   │    each implements driver::Driver; neither uses the other
//!   │    └─ naming, veth                   what both modes share
//!   ├─ firewall, ports                     the network's table, the host's ports
//!   └─ config, ipam, store                 configuration, allocation, state on disk
//!        └─ spec (and weft_api::records)   the CNI protocol; the contract with the agent
//! ```
//!
//! - [`spec`]: the CNI protocol (environment, errors, results of every version)
//! - [`config`]: the network configuration, checked field by field
//! - [`weft_api::records`]: the host's lease and the attachment records, plain data shared
//!   with the agent and the CLI, in the contract crate
//! - [`store`], [`ipam`]: state on disk and address allocation
//! - [`commands`]: ADD, DEL, CHECK, GC, STATUS, VERSION, step by step
//! - [`driver`]: a mode's kernel side (setup, teardown, check) behind one trait
//! - [`bridge`]: bridge mode, [`bridge::plan`](mod@bridge::plan) (pure) and [`bridge::apply`] (kernel)
//! - [`overlay`]: overlay mode, [`overlay::plan`](mod@overlay::plan) (pure) and [`overlay::apply`] (kernel)
//! - [`naming`], [`veth`]: what both modes share: names and MACs, the veth pair
//! - [`firewall`]: the network's own nftables table (masquerade, hairpin, forward)
//! - [`ports`]: host ports of every network on the host, one registry (nftables)

pub mod bridge;
pub mod commands;
pub mod config;
pub mod driver;
pub mod exec;
pub mod firewall;
pub mod ipam;
pub mod naming;
pub mod overlay;
pub mod ports;
pub mod spec;
pub mod store;
pub mod veth;
