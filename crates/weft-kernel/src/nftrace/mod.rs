//! nftables trace events, received in-process: what `nft monitor trace` prints.
//!
//! A packet whose `meta nftrace` bit is set (by a rule such as
//! `ip daddr 10.88.0.5 meta nftrace set 1`) makes nf_tables report every rule it matches,
//! every chain it leaves and the base chain policy that decides its fate. The reports go to
//! the `NFNLGRP_NFTRACE` multicast group of `NETLINK_NETFILTER` sockets in the packet's
//! network namespace; `weft trace --probe` listens there to tell which rule of which chain
//! dropped or accepted its probe packet.
//!
//! ```no_run
//! use std::time::Duration;
//! use weft_kernel::nftrace::{TraceListener, Verdict};
//!
//! # fn main() -> weft_kernel::Result<()> {
//! let ns = weft_kernel::netns::Netns::open("/run/netns/blue")?;
//! let mut trace = TraceListener::open_in(&ns)?; // listen first ...
//! // ... then send the probe, then collect what it caused:
//! for ev in trace.recv(Duration::from_millis(500))? {
//!     if ev.verdict == Some(Verdict::Drop) {
//!         println!("dropped by {ev}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The socket belongs to the namespace of the thread that created it
//! ([`TraceListener::open`]) or to the one given to [`TraceListener::open_in`], for good.
//! Joining the group needs `CAP_NET_ADMIN` (nfnetlink has no unprivileged groups).
//!
//! Each event is one datagram: a `nlmsghdr` of type `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE`,
//! a `nfgenmsg` (the table's family) and netlink attributes (`enum nft_trace_attributes`),
//! numbers in network byte order. [`parse`] decodes them without a socket; it never panics
//! on what the kernel (or anybody) hands it: a malformed attribute is skipped, a truncated
//! message dropped.
//!
//! The kernel sends the packet itself (interfaces, network and transport headers) only with
//! the first event of a packet at each hook; [`TraceListener`] copies it onto that packet's
//! later events (same [`TraceEvent::id`]), so the event that carries the verdict also answers
//! [`TraceEvent::ipv4`] and [`TraceEvent::dport`].

mod event;
mod listener;

pub use crate::nft::Verdict;
pub use event::{parse, TraceEvent, TraceKind};
pub use listener::{TraceListener, NFNLGRP_NFTRACE};
