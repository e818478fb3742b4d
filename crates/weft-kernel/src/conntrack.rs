//! Connection tracking entries, through ctnetlink (a `NETLINK_NETFILTER` socket).
//!
//! weft forgets the flows that must not outlive what they were made for, so that an IP
//! handed to the next container, or a host port mapped to another container, does not
//! inherit stale (NAT) state: what `conntrack -D -s IP` and `conntrack -D -d IP` do, without
//! spawning `conntrack`. [`flows`] dumps the table, the caller picks, [`delete`] removes.
//!
//! The messages are small enough to build and parse by hand: a `nlmsghdr`, a `nfgenmsg`
//! and netlink attributes (NLAs), each 4-byte aligned, nested ones flagged `NLA_F_NESTED`.
//! Header fields are in host byte order; addresses, ports, zones and ids in network order.

use std::io;
use std::net::IpAddr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::{Error, Result};

// <linux/netlink.h>
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300; // NLM_F_ROOT | NLM_F_MATCH
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

// <linux/netfilter/nfnetlink.h>: struct nfgenmsg { u8 family; u8 version; __be16 res_id; }
const NFGENMSG_LEN: usize = 4;
const NFNETLINK_V0: u8 = 0;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;

// <linux/netfilter/nfnetlink_conntrack.h>
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// Big enough for any datagram of a dump: the kernel fills at most 32 KiB per batch.
const RECV_BUF_LEN: usize = 64 * 1024;

/// Deletes every conntrack entry whose original or reply tuple has `ip` as source or
/// destination, in the calling thread's network namespace. Returns how many were deleted.
pub fn delete_by_ip(ip: IpAddr) -> Result<usize> {
    delete_by_ips(&[ip])
}

/// [`delete_by_ip`] for several addresses with one dump: a dump walks the kernel's whole
/// conntrack hash (shared by every namespace), whatever it returns.
pub fn delete_by_ips(ips: &[IpAddr]) -> Result<usize> {
    let family = match (
        ips.iter().any(IpAddr::is_ipv4),
        ips.iter().any(IpAddr::is_ipv6),
    ) {
        (false, false) => return Ok(0),
        (true, false) => libc::AF_INET,
        (false, true) => libc::AF_INET6,
        (true, true) => libc::AF_UNSPEC,
    } as u8;
    let doomed: Vec<Flow> = Ctnetlink::open()?
        .dump(family)?
        .into_iter()
        .filter(|f| ips.iter().any(|ip| f.involves(*ip)))
        .collect();
    delete(&doomed)
}

/// Every entry of one address family (IPv4, or IPv6 when `v6`) in the calling thread's
/// network namespace.
pub fn flows(v6: bool) -> Result<Vec<Flow>> {
    let family = if v6 {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    };
    Ctnetlink::open()?.dump(family)
}

/// Deletes these entries, each by its original tuple, zone and id (so a newer entry that
/// took over the same tuple since the dump is left alone). An entry that is gone already
/// (ENOENT) is not an error and not counted.
pub fn delete(flows: &[Flow]) -> Result<usize> {
    if flows.is_empty() {
        return Ok(0);
    }
    let mut ct = Ctnetlink::open()?;
    let mut deleted = 0;
    for f in flows {
        if ct.delete(f)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// One direction of a connection: addresses, and ports for TCP, UDP and SCTP.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// One conntrack entry: what a caller decides on, and what names it for deletion.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, ...).
    pub proto: Option<u8>,
    pub orig: Tuple,
    pub reply: Tuple,
    family: u8,
    /// CTA_TUPLE_ORIG's payload as the kernel sent it (addresses, protocol, ports, maybe a
    /// tuple zone): sent back verbatim, it names exactly this entry.
    orig_raw: Vec<u8>,
    /// CTA_ZONE payload (__be16), if the entry lives in a non-default zone.
    zone: Option<Vec<u8>>,
    /// CTA_ID payload (__be32): with it the kernel refuses (ENOENT) to delete a newer entry
    /// that took over the same tuple after our dump.
    id: Option<Vec<u8>>,
}

impl Flow {
    /// Has `ip` as source or destination in either direction?
    pub fn involves(&self, ip: IpAddr) -> bool {
        [self.orig.src, self.orig.dst, self.reply.src, self.reply.dst].contains(&Some(ip))
    }

    /// Was the destination rewritten (the answer comes from elsewhere than the original
    /// destination: DNAT)?
    pub fn dnat(&self) -> bool {
        (self.reply.src, self.reply.sport) != (self.orig.dst, self.orig.dport)
    }
}

/// Iterates over the attributes in `buf`: (type without flags, payload). Stops at the first
/// malformed header instead of reading past the buffer.
struct Nlas<'a> {
    buf: &'a [u8],
}

fn nlas(buf: &[u8]) -> Nlas<'_> {
    Nlas { buf }
}

impl<'a> Iterator for Nlas<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let hdr = self.buf.get(..NLA_HDRLEN)?;
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let payload = &self.buf[NLA_HDRLEN..len];
        // The last attribute's padding may be missing.
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (header, payload, padding to 4 bytes).
fn push_nla(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = (NLA_HDRLEN + payload.len()) as u16;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

/// A whole ctnetlink request: nlmsghdr + nfgenmsg + `attrs` (already encoded).
fn request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
    out.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]); // res_id 0
    out.extend_from_slice(attrs);
    out
}

/// The dump request for one address family.
fn dump_request(seq: u32, family: u8) -> Vec<u8> {
    request(
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family,
        &[],
    )
}

/// The request deleting `e`. It always carries CTA_TUPLE_ORIG: a delete without a tuple
/// would flush the whole table.
fn delete_request(seq: u32, e: &Flow) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_nla(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, &e.orig_raw);
    if let Some(zone) = &e.zone {
        push_nla(&mut attrs, CTA_ZONE | NLA_F_NET_BYTEORDER, zone);
    }
    if let Some(id) = &e.id {
        push_nla(&mut attrs, CTA_ID | NLA_F_NET_BYTEORDER, id);
    }
    request(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        e.family,
        &attrs,
    )
}

/// Parses a CTA_TUPLE_ORIG / CTA_TUPLE_REPLY payload into the tuple and the protocol;
/// unknown or odd-sized parts are skipped.
fn parse_tuple(buf: &[u8]) -> (Tuple, Option<u8>) {
    let mut t = Tuple::default();
    let mut proto = None;
    for (kind, part) in nlas(buf) {
        match kind {
            CTA_TUPLE_IP => {
                for (kind, addr) in nlas(part) {
                    let addr = match kind {
                        CTA_IP_V4_SRC | CTA_IP_V4_DST => {
                            <[u8; 4]>::try_from(addr).ok().map(IpAddr::from)
                        }
                        CTA_IP_V6_SRC | CTA_IP_V6_DST => {
                            <[u8; 16]>::try_from(addr).ok().map(IpAddr::from)
                        }
                        _ => None,
                    };
                    let Some(addr) = addr else { continue };
                    match kind {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => t.src = Some(addr),
                        _ => t.dst = Some(addr),
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (kind, v) in nlas(part) {
                    let port = <[u8; 2]>::try_from(v).ok().map(u16::from_be_bytes);
                    match kind {
                        CTA_PROTO_NUM if v.len() == 1 => proto = Some(v[0]),
                        CTA_PROTO_SRC_PORT => t.sport = port,
                        CTA_PROTO_DST_PORT => t.dport = port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (t, proto)
}

/// Parses the attributes of one conntrack message of `family` (after the nfgenmsg); None
/// without an original tuple, which we could not delete by anyway.
fn parse_entry(family: u8, attrs: &[u8]) -> Option<Flow> {
    let mut e = Flow {
        family,
        ..Flow::default()
    };
    let mut has_orig = false;
    for (kind, payload) in nlas(attrs) {
        match kind {
            CTA_TUPLE_ORIG => {
                (e.orig, e.proto) = parse_tuple(payload);
                e.orig_raw = payload.to_vec();
                has_orig = true;
            }
            CTA_TUPLE_REPLY => e.reply = parse_tuple(payload).0,
            CTA_ZONE if payload.len() == 2 => e.zone = Some(payload.to_vec()),
            CTA_ID if payload.len() == 4 => e.id = Some(payload.to_vec()),
            _ => {}
        }
    }
    has_orig.then_some(e)
}

/// One netlink message of a received datagram.
#[derive(Debug, PartialEq, Eq)]
enum Msg<'a> {
    /// A data message (for us: a conntrack entry); the payload starts with the nfgenmsg.
    Data(&'a [u8]),
    /// NLMSG_ERROR with 0: the ACK.
    Ack,
    /// NLMSG_ERROR with an error, or NLMSG_DONE carrying one: the positive errno.
    Error(i32),
    /// NLMSG_DONE: end of a dump.
    Done,
    /// NLMSG_NOOP: nothing.
    Noop,
}

/// Splits a datagram into (sequence number, message); stops at a malformed header.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u32, Msg<'_>)> {
    std::iter::from_fn(move || {
        let hdr = buf.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            buf = &[];
            return None;
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        // The errno of NLMSG_ERROR (and of NLMSG_DONE after a dump) is a negative int.
        let code = || {
            payload
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let msg = match kind {
            NLMSG_NOOP => Msg::Noop,
            NLMSG_ERROR => match code() {
                Some(0) => Msg::Ack,
                Some(c) => Msg::Error(c.saturating_neg()),
                None => Msg::Error(libc::EBADMSG),
            },
            NLMSG_DONE => match code() {
                Some(c) if c < 0 => Msg::Error(c.saturating_neg()),
                _ => Msg::Done,
            },
            _ => Msg::Data(payload),
        };
        Some((seq, msg))
    })
}

/// A ctnetlink socket in the calling thread's network namespace.
struct Ctnetlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Ctnetlink {
    fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| Error::io("open NETLINK_NETFILTER socket", e))?;
        sock.bind_auto()
            .map_err(|e| Error::io("bind NETLINK_NETFILTER socket", e))?;
        // Port 0 is the kernel.
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io("connect NETLINK_NETFILTER socket", e))?;
        Ok(Ctnetlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Every entry of one address family (AF_UNSPEC: of both). Each entry keeps the family
    /// its message says (its nfgenmsg), which its deletion needs. A namespace that tracks
    /// nothing (its entry count says 0, or conntrack is not loaded) is not dumped: a dump
    /// walks the kernel's whole hash, shared by every namespace, even to return nothing.
    fn dump(&mut self, family: u8) -> Result<Vec<Flow>> {
        let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count");
        if count.map_or(true, |c| c.trim() == "0") {
            return Ok(Vec::new());
        }
        let seq = self.next_seq();
        let mut entries = Vec::new();
        self.transact(
            "dump conntrack table",
            &dump_request(seq, family),
            seq,
            |m| {
                let parsed = m
                    .first()
                    .zip(m.get(NFGENMSG_LEN..))
                    .and_then(|(f, a)| parse_entry(*f, a));
                if let Some(e) = parsed {
                    entries.push(e);
                }
            },
        )?;
        Ok(entries)
    }

    /// Deletes one entry; false if it was already gone.
    fn delete(&mut self, e: &Flow) -> Result<bool> {
        let seq = self.next_seq();
        match self.transact(
            "delete conntrack entry",
            &delete_request(seq, e),
            seq,
            |_| {},
        ) {
            Ok(()) => Ok(true),
            Err(err) if err.errno() == Some(libc::ENOENT) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Sends `req` and reads the answers to `seq` until its ACK, DONE or error, handing data
    /// messages to `on_data`.
    fn transact(
        &mut self,
        op: &str,
        req: &[u8],
        seq: u32,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<()> {
        self.sock
            .send(req, 0)
            .map_err(|e| Error::io(format!("{op}: send"), e))?;
        loop {
            self.buf.clear();
            // MSG_TRUNC: the return value is the datagram's real size, so truncation shows.
            let n = match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("{op}: receive"), e)),
            };
            if n > self.buf.len() {
                return Err(Error::Invalid(format!(
                    "{op}: {n}-byte netlink message truncated to {}",
                    self.buf.len()
                )));
            }
            for (s, msg) in messages(&self.buf) {
                if s != seq {
                    continue; // a late answer to an earlier request
                }
                match msg {
                    Msg::Data(payload) => on_data(payload),
                    Msg::Noop => {}
                    Msg::Ack | Msg::Done => return Ok(()),
                    Msg::Error(errno) => {
                        return Err(Error::Netlink {
                            op: op.to_string(),
                            errno: Some(errno),
                            msg: io::Error::from_raw_os_error(errno).to_string(),
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        push_nla(&mut out, kind | NLA_F_NESTED, &parts.concat());
        out
    }

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_nla(&mut out, kind, payload);
        out
    }

    /// A tuple as the kernel dumps it: CTA_TUPLE_IP + CTA_TUPLE_PROTO (UDP, ports).
    fn tuple(kind: u16, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
        let (s, d) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (
                nla(CTA_IP_V4_SRC, &s.octets()),
                nla(CTA_IP_V4_DST, &d.octets()),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => (
                nla(CTA_IP_V6_SRC, &s.octets()),
                nla(CTA_IP_V6_DST, &d.octets()),
            ),
            _ => panic!("mixed families"),
        };
        // CTA_TUPLE_PROTO(2) { CTA_PROTO_NUM(1), CTA_PROTO_SRC_PORT(2), CTA_PROTO_DST_PORT(3) }
        let proto = nested(
            2,
            &[
                nla(1, &[17]),
                nla(2, &sport.to_be_bytes()),
                nla(3, &dport.to_be_bytes()),
            ],
        );
        nested(kind, &[nested(CTA_TUPLE_IP, &[s, d]), proto])
    }

    /// A dumped entry: nlmsghdr + nfgenmsg + attributes.
    fn entry_msg(seq: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = request(IPCTNL_MSG_CT_GET, NLM_F_REQUEST, seq, 2, &attrs.concat());
        m[6..8].copy_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
        m
    }

    fn control_msg(seq: u32, kind: u16, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nla_is_padded_to_four_bytes() {
        let mut out = Vec::new();
        push_nla(&mut out, CTA_ZONE | NLA_F_NET_BYTEORDER, &[0, 7]);
        assert_eq!(out.len(), 8);
        assert_eq!(&out[..2], &6u16.to_ne_bytes());
        assert_eq!(&out[2..4], &(CTA_ZONE | NLA_F_NET_BYTEORDER).to_ne_bytes());
        let parsed: Vec<_> = nlas(&out).collect();
        assert_eq!(parsed, vec![(CTA_ZONE, &[0u8, 7][..])]);
    }

    #[test]
    fn dump_request_layout() {
        let m = dump_request(7, libc::AF_INET6 as u8);
        assert_eq!(m.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(&m[0..4], &20u32.to_ne_bytes());
        assert_eq!(&m[4..6], &0x0101u16.to_ne_bytes()); // CTNETLINK << 8 | CT_GET
        assert_eq!(&m[6..8], &0x0301u16.to_ne_bytes()); // REQUEST | DUMP
        assert_eq!(&m[8..12], &7u32.to_ne_bytes());
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, NFNETLINK_V0, 0, 0]);
    }

    #[test]
    fn parses_entry_and_matches_all_four_addresses() {
        // A DNATed flow: 10.0.0.1 -> 192.0.2.1, answered by 10.88.0.5.
        let orig = tuple(CTA_TUPLE_ORIG, ip("10.0.0.1"), ip("192.0.2.1"), 4000, 80);
        let reply = tuple(CTA_TUPLE_REPLY, ip("10.88.0.5"), ip("10.0.0.1"), 80, 4000);
        let m = entry_msg(
            1,
            &[
                orig.clone(),
                reply,
                nla(CTA_ZONE | NLA_F_NET_BYTEORDER, &[0, 3]),
                nla(CTA_ID | NLA_F_NET_BYTEORDER, &[1, 2, 3, 4]),
            ],
        );
        let msgs: Vec<_> = messages(&m).collect();
        assert_eq!(msgs.len(), 1);
        let Msg::Data(payload) = msgs[0].1 else {
            panic!("not data: {:?}", msgs[0]);
        };
        let e = parse_entry(2, &payload[NFGENMSG_LEN..]).expect("entry");
        assert_eq!(e.orig.src, Some(ip("10.0.0.1")));
        assert_eq!(e.orig.dst, Some(ip("192.0.2.1")));
        assert_eq!(e.reply.src, Some(ip("10.88.0.5")));
        assert_eq!(e.reply.dst, Some(ip("10.0.0.1")));
        assert_eq!(e.proto, Some(17));
        assert_eq!((e.orig.sport, e.orig.dport), (Some(4000), Some(80)));
        assert_eq!((e.reply.sport, e.reply.dport), (Some(80), Some(4000)));
        assert!(e.dnat());
        assert_eq!(e.orig_raw, orig[NLA_HDRLEN..]);
        assert_eq!(e.zone.as_deref(), Some(&[0u8, 3][..]));
        assert_eq!(e.id.as_deref(), Some(&[1u8, 2, 3, 4][..]));
        for a in ["10.0.0.1", "192.0.2.1", "10.88.0.5"] {
            assert!(e.involves(ip(a)), "{a}");
        }
        assert!(!e.involves(ip("10.88.0.6")));
        assert!(!e.involves(ip("::1")));
    }

    #[test]
    fn parses_ipv6_entry() {
        let attrs = [
            tuple(CTA_TUPLE_ORIG, ip("fd00::1"), ip("fd00::2"), 1, 2),
            tuple(CTA_TUPLE_REPLY, ip("fd00::2"), ip("fd00::1"), 2, 1),
        ]
        .concat();
        let e = parse_entry(10, &attrs).expect("entry");
        assert_eq!(e.orig.src, Some(ip("fd00::1")));
        assert_eq!(e.reply.src, Some(ip("fd00::2")));
        assert_eq!((&e.zone, &e.id), (&None, &None));
        assert!(e.involves(ip("fd00::2")));
    }

    #[test]
    fn entry_without_original_tuple_is_skipped() {
        let attrs = tuple(CTA_TUPLE_REPLY, ip("10.0.0.2"), ip("10.0.0.1"), 2, 1);
        assert_eq!(parse_entry(2, &attrs), None);
    }

    #[test]
    fn delete_request_resends_tuple_zone_and_id() {
        let orig = tuple(CTA_TUPLE_ORIG, ip("10.0.0.1"), ip("10.0.0.2"), 5, 6);
        let e = parse_entry(
            libc::AF_INET as u8,
            &[
                orig.clone(),
                nla(CTA_ZONE | NLA_F_NET_BYTEORDER, &[0, 9]),
                nla(CTA_ID | NLA_F_NET_BYTEORDER, &[9, 8, 7, 6]),
            ]
            .concat(),
        )
        .expect("entry");
        let m = delete_request(42, &e);
        assert_eq!(&m[0..4], &(m.len() as u32).to_ne_bytes());
        assert_eq!(&m[4..6], &0x0102u16.to_ne_bytes()); // CTNETLINK << 8 | CT_DELETE
        assert_eq!(&m[6..8], &0x0005u16.to_ne_bytes()); // REQUEST | ACK
        assert_eq!(&m[8..12], &42u32.to_ne_bytes());
        assert_eq!(m[16], libc::AF_INET as u8);
        let attrs: Vec<_> = nlas(&m[NLMSG_HDRLEN + NFGENMSG_LEN..]).collect();
        assert_eq!(
            attrs,
            vec![
                (CTA_TUPLE_ORIG, &orig[NLA_HDRLEN..]),
                (CTA_ZONE, &[0u8, 9][..]),
                (CTA_ID, &[9u8, 8, 7, 6][..]),
            ]
        );
        // The nested flag is set on the tuple.
        let t = u16::from_ne_bytes([m[22], m[23]]);
        assert_eq!(t, CTA_TUPLE_ORIG | NLA_F_NESTED);
    }

    #[test]
    fn control_messages() {
        let mut d = control_msg(3, NLMSG_ERROR, 0);
        d.extend(control_msg(4, NLMSG_ERROR, -libc::ENOENT));
        d.extend(control_msg(5, NLMSG_DONE, 0));
        d.extend(control_msg(6, NLMSG_DONE, -libc::EINTR));
        let got: Vec<_> = messages(&d).collect();
        assert_eq!(
            got,
            vec![
                (3, Msg::Ack),
                (4, Msg::Error(libc::ENOENT)),
                (5, Msg::Done),
                (6, Msg::Error(libc::EINTR)),
            ]
        );
    }

    #[test]
    fn truncated_or_garbage_input_never_panics() {
        let mut d = entry_msg(
            1,
            &[
                tuple(CTA_TUPLE_ORIG, ip("10.0.0.1"), ip("10.0.0.2"), 5, 6),
                tuple(CTA_TUPLE_REPLY, ip("10.0.0.2"), ip("10.0.0.1"), 6, 5),
                nla(CTA_ZONE, &[0, 1]),
            ],
        );
        d.extend(control_msg(1, NLMSG_DONE, 0));
        for cut in 0..=d.len() {
            for (_, m) in messages(&d[..cut]) {
                if let Msg::Data(p) = m {
                    let _ = p.get(NFGENMSG_LEN..).and_then(|a| parse_entry(2, a));
                }
            }
            // Attribute parsing directly on arbitrary slices, including bad lengths.
            let _ = parse_entry(2, &d[cut..]);
            let _ = parse_tuple(&d[..cut]);
        }
        // Lengths pointing past the end or below the header size.
        assert_eq!(nlas(&[0xff, 0xff, 1, 0, 1, 2]).count(), 0);
        assert_eq!(nlas(&[2, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(messages(&[0xff; 16]).count(), 0);
        assert_eq!(messages(&[0; 16]).count(), 0);
    }

    /// Needs root (CI runs as root). Everything happens in a network namespace private to a
    /// thread of its own, which the kernel frees (with its nft tables and conntrack entries)
    /// when the thread ends; the host's namespace is never entered.
    #[test]
    fn deletes_entries_of_one_address_in_a_private_netns() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // If this fails, nothing below runs in the host's namespace.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            in_private_netns();
        })
        .join()
        .expect("test thread panicked");
    }

    /// (source, destination) of the original tuple of every entry of `family`, sorted.
    fn pairs_of(family: u8) -> Vec<(IpAddr, IpAddr)> {
        let mut ct = Ctnetlink::open().expect("open ctnetlink");
        let mut f: Vec<_> = ct
            .dump(family)
            .expect("dump")
            .into_iter()
            .filter_map(|e| Some((e.orig.src?, e.orig.dst?)))
            .collect();
        f.sort();
        f
    }

    fn in_private_netns() {
        use std::net::UdpSocket;
        let v4 = libc::AF_INET as u8;
        let v6 = libc::AF_INET6 as u8;

        // lo up (127.0.0.0/8 and ::1 come with it).
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let nl = crate::Netlink::current().expect("rtnetlink");
                nl.set_up_by_name("lo").await.expect("lo up");
            });

        // A rule using conntrack makes the kernel track this namespace's flows; the NAT rule
        // gives one entry whose reply tuple differs from its original one.
        let mut nft = crate::nft::Nft::new().expect("libnftables");
        nft.run(
            "table inet weft_ct_test {
               chain out { type filter hook output priority 0; ct state new counter; }
             }
             table ip weft_ct_nat {
               chain out { type nat hook output priority -100; ip daddr 127.0.0.5 dnat to 127.0.0.6; }
             }",
        )
        .expect("nft rules");

        // Receivers, so nothing answers with ICMP; they live until the end.
        let _rx: Vec<UdpSocket> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6", "::1"]
            .iter()
            .map(|a| UdpSocket::bind((ip(a), 5000)).expect("bind receiver"))
            .collect();
        for (src, dst) in [
            ("127.0.0.1", "127.0.0.2"),
            ("127.0.0.2", "127.0.0.3"),
            ("127.0.0.3", "127.0.0.4"),
            ("127.0.0.1", "127.0.0.5"), // DNATed to 127.0.0.6
            ("::1", "::1"),
        ] {
            let tx = UdpSocket::bind((ip(src), 0)).expect("bind sender");
            tx.send_to(b"hello", (ip(dst), 5000)).expect("send");
        }

        let pairs = |l: &[(&str, &str)]| -> Vec<(IpAddr, IpAddr)> {
            let mut v: Vec<_> = l.iter().map(|(s, d)| (ip(s), ip(d))).collect();
            v.sort();
            v
        };
        assert_eq!(
            pairs_of(v4),
            pairs(&[
                ("127.0.0.1", "127.0.0.2"),
                ("127.0.0.1", "127.0.0.5"),
                ("127.0.0.2", "127.0.0.3"),
                ("127.0.0.3", "127.0.0.4"),
            ])
        );
        assert_eq!(pairs_of(v6), pairs(&[("::1", "::1")]));

        // The live dump has protocol and ports; the NAT'd flow shows as DNAT.
        let nat = super::flows(false)
            .expect("flows")
            .into_iter()
            .find(|f| f.orig.dst == Some(ip("127.0.0.5")))
            .expect("the DNAT'd flow");
        assert_eq!((nat.proto, nat.orig.dport), (Some(17), Some(5000)));
        assert_eq!(nat.reply.src, Some(ip("127.0.0.6")));
        assert!(nat.dnat());
        assert!(!super::flows(false)
            .expect("flows")
            .iter()
            .any(|f| f.orig.dst == Some(ip("127.0.0.2")) && f.dnat()));

        // Found through the reply tuple only (127.0.0.6 answers for 127.0.0.5).
        assert_eq!(delete_by_ip(ip("127.0.0.6")).expect("delete .6"), 1);
        // As destination of one entry and source of another.
        assert_eq!(delete_by_ip(ip("127.0.0.2")).expect("delete .2"), 2);
        assert_eq!(pairs_of(v4), pairs(&[("127.0.0.3", "127.0.0.4")]));
        assert_eq!(pairs_of(v6), pairs(&[("::1", "::1")]));

        // Nothing left for that address; an unknown one deletes nothing.
        assert_eq!(delete_by_ip(ip("127.0.0.2")).expect("again"), 0);
        assert_eq!(delete_by_ip(ip("127.0.0.9")).expect("unknown"), 0);

        // Both families in one dump.
        assert_eq!(
            delete_by_ips(&[ip("::1"), ip("127.0.0.9")]).expect("delete ::1 and .9"),
            1
        );
        assert_eq!(pairs_of(v6), vec![]);
        assert_eq!(pairs_of(v4), pairs(&[("127.0.0.3", "127.0.0.4")]));
    }
}
