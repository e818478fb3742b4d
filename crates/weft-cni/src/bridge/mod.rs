//! Bridge mode (seed 003, per container): one Linux bridge per network on the host, each
//! container's veth on it, addresses from the network's own ranges. [`plan`](mod@plan) decides (pure),
//! [`apply`] does and undoes (the mode's [`crate::driver::Driver`]). The network's
//! masquerade and forward rules are [`crate::firewall`]'s; host ports are [`crate::ports`]'.

pub mod apply;
pub mod plan;

pub use plan::plan;
