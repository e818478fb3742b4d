//! Listening for trace events: a socket in the `NFNLGRP_NFTRACE` group of one namespace,
//! bounded waits, and the packet headers the kernel sends once per packet and hook copied
//! onto that packet's later events.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::event::{parse_datagram, TraceEvent};
use crate::netns::Netns;
use crate::nfnetlink::{NfSocket, Received};
use crate::Result;

/// enum nfnetlink_groups: NFNLGRP_NFTRACE.
pub const NFNLGRP_NFTRACE: u32 = 9;
/// Receive buffer asked for, so that a burst of traced packets is not lost.
const SOCKET_RCVBUF: libc::c_int = 4 << 20;
/// How many packets' headers the listener remembers to fill in their later events.
const PACKET_CACHE_LEN: usize = 256;

/// The packet part of an event: what the kernel sends only once per packet and hook.
#[derive(Debug, Clone)]
struct Packet {
    id: u32,
    iif: Option<u32>,
    oif: Option<u32>,
    network_header: Option<Vec<u8>>,
    transport_header: Option<Vec<u8>>,
}

/// The packets seen last, to complete the events that come without them.
#[derive(Debug, Default)]
struct PacketCache {
    recent: VecDeque<Packet>,
}

impl PacketCache {
    /// Remembers the packet of `ev`, or fills it in from the last one with the same id.
    fn complete(&mut self, ev: &mut TraceEvent) {
        if ev.has_packet() {
            self.recent.retain(|p| p.id != ev.id);
            if self.recent.len() >= PACKET_CACHE_LEN {
                self.recent.pop_front();
            }
            self.recent.push_back(Packet {
                id: ev.id,
                iif: ev.iif,
                oif: ev.oif,
                network_header: ev.network_header.clone(),
                transport_header: ev.transport_header.clone(),
            });
        } else if let Some(p) = self.recent.iter().rev().find(|p| p.id == ev.id) {
            ev.iif = p.iif;
            ev.oif = p.oif;
            ev.network_header.clone_from(&p.network_header);
            ev.transport_header.clone_from(&p.transport_header);
        }
    }
}

/// A `NETLINK_NETFILTER` socket in the `NFNLGRP_NFTRACE` group of one network namespace.
#[derive(Debug)]
pub struct TraceListener {
    sock: NfSocket,
    packets: PacketCache,
    overruns: u64,
}

impl TraceListener {
    /// Listens in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut sock = NfSocket::open()?;
        sock.set_rcvbuf(SOCKET_RCVBUF);
        sock.join(NFNLGRP_NFTRACE, "NFNLGRP_NFTRACE")?;
        Ok(TraceListener {
            sock,
            packets: PacketCache::default(),
            overruns: 0,
        })
    }

    /// Listens in `ns` (the socket is made on a thread inside it, see [`Netns::run`]).
    pub fn open_in(ns: &Netns) -> Result<Self> {
        ns.run(Self::open)?
    }

    /// The events that arrive until `timeout` passes without one, or at the latest after ten
    /// times `timeout` (so that a steady stream of traced packets cannot hold it forever).
    /// Events already queued count: open the listener before sending the probe.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<TraceEvent>> {
        self.recv_for(timeout, timeout.checked_mul(10).unwrap_or(Duration::MAX))
    }

    /// The events that arrive until `idle` passes without one, or until `limit` has passed.
    pub fn recv_for(&mut self, idle: Duration, limit: Duration) -> Result<Vec<TraceEvent>> {
        let start = Instant::now();
        let mut events = Vec::new();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            let wait = idle.min(left);
            if !self.sock.wait_readable(wait)? {
                break;
            }
            self.drain(&mut events)?;
            if start.elapsed() >= limit {
                break;
            }
        }
        Ok(events)
    }

    /// How many times the kernel dropped events because the socket's buffer was full
    /// (ENOBUFS) since the listener was opened.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Reads every queued datagram.
    fn drain(&mut self, events: &mut Vec<TraceEvent>) -> Result<()> {
        loop {
            let (mut got, errors) = match self.sock.recv("receive nftables trace events")? {
                Received::Empty => return Ok(()),
                Received::Overrun => {
                    self.overruns += 1;
                    tracing::warn!("nftables trace: socket buffer overrun, events were lost");
                    continue;
                }
                Received::Datagram {
                    data,
                    truncated_from,
                } => {
                    if let Some(n) = truncated_from {
                        tracing::warn!(
                            "nftables trace: {n}-byte datagram truncated to {}",
                            data.len()
                        );
                    }
                    parse_datagram(data)
                }
            };
            for errno in errors {
                tracing::debug!(
                    "nftables trace: netlink error: {}",
                    io::Error::from_raw_os_error(errno)
                );
            }
            for ev in &mut got {
                self.packets.complete(ev);
            }
            events.append(&mut got);
        }
    }
}

impl AsFd for TraceListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftrace::event::{parse, tests::drop_event};

    #[test]
    fn later_events_of_a_packet_get_its_headers() {
        let first = parse(&drop_event()).pop().expect("event");
        let mut later = TraceEvent {
            network_header: None,
            transport_header: None,
            iif: None,
            oif: None,
            ..first.clone()
        };
        let mut other = TraceEvent {
            id: 77,
            ..later.clone()
        };
        let mut cache = PacketCache::default();
        let mut f = first.clone();
        cache.complete(&mut f);
        assert_eq!(f, first);
        cache.complete(&mut later);
        assert_eq!(later, first);
        cache.complete(&mut other);
        assert_eq!((other.network_header, other.iif), (None, None));
        for id in 0..2 * PACKET_CACHE_LEN as u32 {
            cache.complete(&mut TraceEvent {
                id,
                ..first.clone()
            });
        }
        assert_eq!(cache.recent.len(), PACKET_CACHE_LEN);
    }
}
