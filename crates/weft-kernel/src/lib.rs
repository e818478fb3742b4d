//! weft's kernel layer: one home per kernel object kind.
//!
//! | object            | module      | transport                        |
//! |-------------------|-------------|----------------------------------|
//! | network namespace | [`netns`]   | setns(2), bind mounts in /run/netns |
//! | link (veth, bridge, vxlan) | [`link`] | rtnetlink                 |
//! | address           | [`addr`]    | rtnetlink                        |
//! | route             | [`route`]   | rtnetlink                        |
//! | neighbour / FDB   | [`neigh`]   | rtnetlink                        |
//! | sysctl            | [`sysctl`]  | /proc/sys                        |
//! | nftables table, set, map, chain, rule, element | [`nft`] | libnftables, in-process, one transaction per call; a typed table model rendered to scripts and parsed back from `nft -j` |
//! | conntrack entry   | [`conntrack`] | ctnetlink (NETLINK_NETFILTER socket) |
//! | nftables trace events | [`nftrace`] | NETLINK_NETFILTER, group NFNLGRP_NFTRACE |
//! | NFLOG packets (`log group N`) | [`nflog`] | NETLINK_NETFILTER, nfnetlink_log |
//! | (codec)           | `nfnetlink` | the one NETLINK_NETFILTER wire format and socket, for conntrack, nftrace and nflog |
//! | BPF object, map, tc filter | [`bpf`] | libbpf, in-process (bpf(2), tc over rtnetlink) |
//! | (type)            | [`mac`]     | [`MacAddr`], the link-layer address links, neighbours and FDB entries carry |
//!
//! Nothing here spawns a process. [`Netlink`] is a socket bound to one network namespace,
//! opened once and reused for every request (the pattern netavark uses).

pub mod addr;
pub mod bpf;
pub mod conntrack;
mod error;
pub mod link;
pub mod mac;
pub mod neigh;
mod netlink;
pub mod netns;
pub mod nflog;
mod nfnetlink;
pub mod nft;
pub mod nftrace;
pub mod route;
pub mod sysctl;

pub use error::{Error, Result};
pub use mac::MacAddr;
pub use netlink::{Netlink, REQUEST_TIMEOUT};
