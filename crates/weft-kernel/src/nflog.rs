//! NFLOG: packets an nftables rule hands to userspace with `log group N` (nfnetlink_log),
//! received in-process. The agent's audit log reads the policy table's log rules here.
//!
//! ```no_run
//! use std::time::Duration;
//! use weft_kernel::nflog::NflogListener;
//!
//! # fn main() -> weft_kernel::Result<()> {
//! let mut log = NflogListener::open(7)?; // this namespace's group 7
//! for p in log.recv(Duration::from_millis(500))? {
//!     println!("{} {:?} -> {:?}", p.prefix, p.ipv4(), p.dport());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A listener binds its group with an `NFULNL_MSG_CONFIG` request (`NFULA_CFG_CMD` BIND, the
//! group in the nfgenmsg's resource id), asks for the first [`COPY_RANGE`] bytes of each
//! packet (network and transport headers: all the audit needs) and a short flush timeout;
//! the kernel then sends `NFULNL_MSG_PACKET` messages (batched, several per datagram) to the
//! socket. Groups are per network namespace; one socket per group and namespace (a second
//! bind is `EBUSY`). Closing the socket unbinds. Joining needs `CAP_NET_ADMIN`.
//!
//! Invariants: [`parse_datagram`] never panics and never reads past its input (a malformed
//! attribute is skipped, a truncated message dropped); every wait is bounded; a full socket
//! buffer (the kernel dropped messages) is counted ([`NflogListener::overruns`]), not fatal.
//! Kernel objects owned: the group binding, for the socket's lifetime.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::nfnetlink::{
    attrs, be16, be32, messages, msg_type, nfgen, push_attr, request_for, string, Body, NfSocket,
    Received, NFNL_SUBSYS_ULOG, NLA_F_NET_BYTEORDER, NLM_F_ACK, NLM_F_REQUEST,
};
use crate::{Error, Result};

// <linux/netfilter/nfnetlink_log.h>
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_MARK: u16 = 2;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// Bytes of each packet copied: an IPv4 header with options (60) and the ports.
pub const COPY_RANGE: u32 = 64;
/// Receive buffer asked for: a burst of logged packets is not lost.
const SOCKET_RCVBUF: libc::c_int = 4 << 20;
/// How long the kernel holds a batch before sending it (1/100 s).
const FLUSH_TIMEOUT_CS: u32 = 5;
/// Packets per batch at most.
const QUEUE_THRESHOLD: u32 = 64;
/// The kernel's batch buffer (a datagram is at most this big).
const KERNEL_BUFSIZE: u32 = 32 * 1024;
const CONFIG_TIMEOUT: Duration = Duration::from_secs(5);

/// One logged packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPacket {
    /// The nfgenmsg family (`NFPROTO_IPV4` = 2 for IPv4 packets, also from `inet` tables).
    pub family: u8,
    /// The log statement's prefix.
    pub prefix: String,
    /// The hook (`NF_INET_*`: 2 forward).
    pub hook: Option<u8>,
    pub mark: Option<u32>,
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    /// The packet from its network header, at most [`COPY_RANGE`] bytes.
    pub payload: Vec<u8>,
}

impl LogPacket {
    /// IPv4 source, destination and protocol, when the payload is IPv4.
    pub fn ipv4(&self) -> Option<(Ipv4Addr, Ipv4Addr, u8)> {
        let h = &self.payload;
        if h.len() < 20 || h[0] >> 4 != 4 {
            return None;
        }
        let src = <[u8; 4]>::try_from(&h[12..16]).ok()?;
        let dst = <[u8; 4]>::try_from(&h[16..20]).ok()?;
        Some((Ipv4Addr::from(src), Ipv4Addr::from(dst), h[9]))
    }

    /// The transport header of an IPv4 payload (after the header's IHL words).
    fn transport(&self) -> Option<&[u8]> {
        let (_, _, _) = self.ipv4()?;
        let ihl = ((self.payload[0] & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        self.payload.get(ihl..)
    }

    fn port(&self, at: usize) -> Option<u16> {
        let (_, _, proto) = self.ipv4()?;
        if !matches!(proto, 6 | 17 | 132 | 136) {
            return None;
        }
        be16(self.transport()?.get(at..at + 2)?)
    }

    /// Source port (tcp, udp, sctp, udplite).
    pub fn sport(&self) -> Option<u16> {
        self.port(0)
    }

    /// Destination port (tcp, udp, sctp, udplite).
    pub fn dport(&self) -> Option<u16> {
        self.port(2)
    }
}

/// Pure: the packets in one datagram, and the errno of every error message in it.
pub fn parse_datagram(data: &[u8]) -> (Vec<LogPacket>, Vec<i32>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for m in messages(data) {
        match m.body {
            Body::Data(p) if m.kind == msg_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET) => {
                if let Some(pkt) = parse_packet(p) {
                    out.push(pkt);
                }
            }
            Body::Error(e) => errors.push(e),
            _ => {}
        }
    }
    (out, errors)
}

fn parse_packet(payload: &[u8]) -> Option<LogPacket> {
    let (family, a) = nfgen(payload)?;
    let mut p = LogPacket {
        family,
        ..LogPacket::default()
    };
    for (kind, v) in attrs(a) {
        match kind {
            NFULA_PACKET_HDR => p.hook = v.get(2).copied(),
            NFULA_MARK => p.mark = be32(v),
            NFULA_IFINDEX_INDEV => p.indev = be32(v),
            NFULA_IFINDEX_OUTDEV => p.outdev = be32(v),
            NFULA_PAYLOAD => p.payload = v[..v.len().min(COPY_RANGE as usize)].to_vec(),
            NFULA_PREFIX => p.prefix = string(v),
            _ => {}
        }
    }
    Some(p)
}

/// The config request that binds `group` and sets its copy mode and batching.
fn config_request(group: u16, seq: u32) -> Vec<u8> {
    let mut a = Vec::new();
    push_attr(&mut a, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    push_attr(&mut a, NFULA_CFG_MODE, &mode);
    for (k, v) in [
        (NFULA_CFG_NLBUFSIZ, KERNEL_BUFSIZE),
        (NFULA_CFG_TIMEOUT, FLUSH_TIMEOUT_CS),
        (NFULA_CFG_QTHRESH, QUEUE_THRESHOLD),
    ] {
        push_attr(&mut a, k | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
    }
    request_for(
        msg_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        libc::AF_UNSPEC as u8,
        group,
        &a,
    )
}

/// A `NETLINK_NETFILTER` socket bound to one NFLOG group of one network namespace.
#[derive(Debug)]
pub struct NflogListener {
    sock: NfSocket,
    group: u16,
    overruns: u64,
}

impl NflogListener {
    /// Binds `group` in the calling thread's network namespace.
    pub fn open(group: u16) -> Result<Self> {
        let mut sock = NfSocket::to_kernel()?;
        sock.set_rcvbuf(SOCKET_RCVBUF);
        let op = format!("bind NFLOG group {group}");
        sock.transact(&op, &config_request(group, 1), 1, CONFIG_TIMEOUT, |_| {})
            .map_err(|e| match e {
                Error::Netlink {
                    errno: Some(libc::EBUSY),
                    ..
                } => Error::Invalid(format!(
                    "{op}: another process listens on it in this namespace"
                )),
                e => e,
            })?;
        Ok(NflogListener {
            sock,
            group,
            overruns: 0,
        })
    }

    /// Binds `group` in `ns`.
    pub fn open_in(ns: &Netns, group: u16) -> Result<Self> {
        ns.run(move || Self::open(group))?
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// How many times the kernel dropped messages because the socket buffer was full.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Waits at most `wait` for packets, then returns what is queued (maybe nothing).
    pub fn next(&mut self, wait: Duration) -> Result<Vec<LogPacket>> {
        let mut out = Vec::new();
        if self.sock.wait_readable(wait)? {
            self.drain(&mut out)?;
        }
        Ok(out)
    }

    /// The packets that arrive until `idle` passes without one, or ten times `idle` at most.
    pub fn recv(&mut self, idle: Duration) -> Result<Vec<LogPacket>> {
        let limit = idle.checked_mul(10).unwrap_or(Duration::MAX);
        let start = Instant::now();
        let mut out = Vec::new();
        while self
            .sock
            .wait_readable(idle.min(limit.saturating_sub(start.elapsed())))?
        {
            self.drain(&mut out)?;
            if start.elapsed() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn drain(&mut self, out: &mut Vec<LogPacket>) -> Result<()> {
        loop {
            match self.sock.recv("receive NFLOG packets")? {
                Received::Empty => return Ok(()),
                Received::Overrun => {
                    self.overruns += 1;
                    tracing::debug!(group = self.group, "NFLOG: socket buffer overrun");
                }
                Received::Datagram { data, .. } => {
                    let (mut got, errors) = parse_datagram(data);
                    for e in errors {
                        tracing::debug!(
                            group = self.group,
                            "NFLOG: netlink error: {}",
                            std::io::Error::from_raw_os_error(e)
                        );
                    }
                    out.append(&mut got);
                }
            }
        }
    }
}

impl AsFd for NflogListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfnetlink::tests::attr;
    use crate::nfnetlink::{request, NLMSG_HDRLEN};

    /// An IPv4/TCP header from 10.255.1.2:40000 to 10.255.2.3:8080.
    fn tcp_packet() -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 255, 1, 2, 10, 255, 2, 3]);
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&8080u16.to_be_bytes());
        ip.extend_from_slice(&[0; 16]);
        ip
    }

    fn packet_message(prefix: &str, mark: u32, payload: &[u8]) -> Vec<u8> {
        let mut a = attr(NFULA_PACKET_HDR, &[8, 0, 2, 0]);
        a.extend(attr(NFULA_MARK, &mark.to_be_bytes()));
        a.extend(attr(NFULA_IFINDEX_INDEV, &7u32.to_be_bytes()));
        a.extend(attr(NFULA_IFINDEX_OUTDEV, &9u32.to_be_bytes()));
        a.extend(attr(NFULA_PREFIX, format!("{prefix}\0").as_bytes()));
        a.extend(attr(NFULA_PAYLOAD, payload));
        request(msg_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET), 0, 0, 2, &a)
    }

    #[test]
    fn packets_are_decoded_with_their_headers() {
        let mut d = packet_message("weft:deny", 11, &tcp_packet());
        d.extend(packet_message("weft:accept", 12, &tcp_packet()[..22]));
        let (got, errors) = parse_datagram(&d);
        assert!(errors.is_empty());
        assert_eq!(got.len(), 2, "two messages in one datagram");
        let p = &got[0];
        assert_eq!(
            (
                p.family,
                p.prefix.as_str(),
                p.hook,
                p.mark,
                p.indev,
                p.outdev
            ),
            (
                "2".parse().unwrap(),
                "weft:deny",
                Some(2),
                Some(11),
                Some(7),
                Some(9)
            )
        );
        assert_eq!(
            p.ipv4(),
            Some((
                "10.255.1.2".parse().unwrap(),
                "10.255.2.3".parse().unwrap(),
                6
            ))
        );
        assert_eq!((p.sport(), p.dport()), (Some(40000), Some(8080)));
        // Cut inside the ports: the addresses stay, the destination port is unknown.
        assert_eq!(got[1].mark, Some(12));
        assert_eq!((got[1].sport(), got[1].dport()), (Some(40000), None));
    }

    #[test]
    fn options_shift_the_ports_and_non_port_protocols_have_none() {
        let mut pkt = tcp_packet();
        pkt[0] = 0x46; // IHL 6: four bytes of options before the ports
        pkt.splice(20..20, [1, 1, 1, 1]);
        let p = LogPacket {
            payload: pkt.clone(),
            ..LogPacket::default()
        };
        assert_eq!(p.dport(), Some(8080));
        pkt[9] = 1; // icmp
        let p = LogPacket {
            payload: pkt,
            ..LogPacket::default()
        };
        assert_eq!((p.sport(), p.dport()), (None, None));
        let p = LogPacket {
            payload: vec![0x60; 40],
            ..LogPacket::default()
        };
        assert_eq!(p.ipv4(), None, "IPv6 is not IPv4");
    }

    #[test]
    fn garbage_never_panics() {
        let d = packet_message("x", 1, &tcp_packet());
        for cut in 0..=d.len() {
            let (got, _) = parse_datagram(&d[..cut]);
            for p in got {
                let _ = (p.ipv4(), p.sport(), p.dport());
            }
            let _ = parse_datagram(&d[cut..]);
        }
        // A header claiming an IHL below 5.
        let mut bad = tcp_packet();
        bad[0] = 0x41;
        let p = LogPacket {
            payload: bad,
            ..LogPacket::default()
        };
        assert_eq!(p.dport(), None);
        // An oversized payload is cut to COPY_RANGE.
        let (got, _) = parse_datagram(&packet_message("x", 1, &[0x45; 200]));
        assert_eq!(got[0].payload.len(), COPY_RANGE as usize);
    }

    #[test]
    fn config_binds_the_group_in_the_resource_id() {
        let m = config_request(0x1234, 9);
        assert_eq!(&m[4..6], &0x0401u16.to_ne_bytes());
        assert_eq!(
            &m[NLMSG_HDRLEN..NLMSG_HDRLEN + 4],
            &[libc::AF_UNSPEC as u8, 0, 0x12, 0x34]
        );
        let a: Vec<_> = attrs(&m[NLMSG_HDRLEN + 4..]).collect();
        assert_eq!(a[0], (NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND][..]));
        assert_eq!(
            a[1],
            (NFULA_CFG_MODE, &[0, 0, 0, 64, NFULNL_COPY_PACKET, 0][..])
        );
        assert_eq!(a.len(), 5);
    }

    /// In a namespace of its own: a `log group` rule's packet reaches the listener with its
    /// prefix, mark and headers; a second listener on the same group is refused.
    #[test]
    fn a_logged_packet_arrives_in_its_namespace() {
        crate::netns::in_new_netns(|| {
            let mut log = NflogListener::open(33).expect("bind");
            assert!(NflogListener::open(33).is_err(), "one listener per group");
            let mut nft = crate::nft::Nft::new().expect("nft");
            nft.run(
                "table inet t {\n chain out {\n type filter hook output priority 0; policy accept;\n \
                 udp dport 9999 meta mark set 77 log group 33 prefix \"probe\"\n }\n}\n",
            )
            .expect("table");
            let lo = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            assert!(lo.success());
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
            s.send_to(b"x", "127.0.0.1:9999").expect("send");
            let got = log.recv(Duration::from_millis(500)).expect("recv");
            let p = got
                .iter()
                .find(|p| p.prefix == "probe")
                .expect("logged packet");
            assert_eq!(p.mark, Some(77));
            assert_eq!(p.dport(), Some(9999));
            assert_eq!(
                p.ipv4().map(|(_, d, proto)| (d, proto)),
                Some(("127.0.0.1".parse().unwrap(), 17))
            );
        })
        .expect("new netns");
    }
}
