//! Connection tracking entries, through ctnetlink (a `NETLINK_NETFILTER` socket).
//!
//! weft forgets the flows that must not outlive what they were made for, so that an IP
//! handed to the next container, or a host port mapped to another container, does not
//! inherit stale (NAT) state: what `conntrack -D -s IP` and `conntrack -D -d IP` do, without
//! spawning `conntrack`. [`flows`] dumps the table, the caller picks, [`delete`] removes.
//!
//! The messages go through the one nfnetlink codec ([`crate::nfnetlink`]); this module
//! knows ctnetlink's attributes (`enum ctattr_*`) and what a flow is. Every request waits a
//! bounded time for the kernel ([`crate::REQUEST_TIMEOUT`] of silence).
//!
//! Invariant: a delete always names one entry (its original tuple, zone and id as the dump
//! gave them); a request without a tuple, which would flush the whole table, is never sent.
//!
//! Kernel objects owned: conntrack entries (read and deleted, never created).

use std::net::IpAddr;

use crate::nfnetlink::{
    self, attrs, be16, msg_type, push_attr, NfSocket, NFNL_SUBSYS_CTNETLINK, NLA_F_NESTED,
    NLA_F_NET_BYTEORDER, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::{Result, REQUEST_TIMEOUT};

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

/// A whole ctnetlink request.
fn request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    nfnetlink::request(
        msg_type(NFNL_SUBSYS_CTNETLINK, msg),
        flags,
        seq,
        family,
        attrs,
    )
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
    push_attr(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, &e.orig_raw);
    if let Some(zone) = &e.zone {
        push_attr(&mut attrs, CTA_ZONE | NLA_F_NET_BYTEORDER, zone);
    }
    if let Some(id) = &e.id {
        push_attr(&mut attrs, CTA_ID | NLA_F_NET_BYTEORDER, id);
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
    for (kind, part) in attrs(buf) {
        match kind {
            CTA_TUPLE_IP => {
                for (kind, addr) in attrs(part) {
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
                for (kind, v) in attrs(part) {
                    let port = be16(v);
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
fn parse_entry(family: u8, attributes: &[u8]) -> Option<Flow> {
    let mut e = Flow {
        family,
        ..Flow::default()
    };
    let mut has_orig = false;
    for (kind, payload) in attrs(attributes) {
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

/// A ctnetlink socket in the calling thread's network namespace.
struct Ctnetlink {
    sock: NfSocket,
    seq: u32,
}

impl Ctnetlink {
    fn open() -> Result<Self> {
        Ok(Ctnetlink {
            sock: NfSocket::to_kernel()?,
            seq: 0,
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
        self.sock.transact(
            "dump conntrack table",
            &dump_request(seq, family),
            seq,
            REQUEST_TIMEOUT,
            |m| entries.extend(nfnetlink::nfgen(m).and_then(|(f, a)| parse_entry(f, a))),
        )?;
        Ok(entries)
    }

    /// Deletes one entry; false if it was already gone.
    fn delete(&mut self, e: &Flow) -> Result<bool> {
        let seq = self.next_seq();
        match self.sock.transact(
            "delete conntrack entry",
            &delete_request(seq, e),
            seq,
            REQUEST_TIMEOUT,
            |_| {},
        ) {
            Ok(()) => Ok(true),
            Err(err) if err.errno() == Some(libc::ENOENT) => Ok(false),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfnetlink::tests::{attr as nla, control as control_msg, nested};
    use crate::nfnetlink::{
        messages, Body, NFGENMSG_LEN, NLA_HDRLEN, NLMSG_DONE, NLMSG_HDRLEN, NLM_F_MULTI,
    };

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
        m[6..8].copy_from_slice(&NLM_F_MULTI.to_ne_bytes());
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn dump_request_layout() {
        let m = dump_request(7, libc::AF_INET6 as u8);
        assert_eq!(m.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(&m[0..4], &20u32.to_ne_bytes());
        assert_eq!(&m[4..6], &0x0101u16.to_ne_bytes()); // CTNETLINK << 8 | CT_GET
        assert_eq!(&m[6..8], &0x0301u16.to_ne_bytes()); // REQUEST | DUMP
        assert_eq!(&m[8..12], &7u32.to_ne_bytes());
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 0, 0, 0]);
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
        let Body::Data(payload) = msgs[0].body else {
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
        let attrs: Vec<_> = attrs(&m[NLMSG_HDRLEN + NFGENMSG_LEN..]).collect();
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
            for m in messages(&d[..cut]) {
                if let Body::Data(p) = m.body {
                    let _ = p.get(NFGENMSG_LEN..).and_then(|a| parse_entry(2, a));
                }
            }
            // Attribute parsing directly on arbitrary slices, including bad lengths.
            let _ = parse_entry(2, &d[cut..]);
            let _ = parse_tuple(&d[..cut]);
        }
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
        // If the namespace cannot be made, nothing runs (in the host's namespace or anywhere).
        crate::netns::in_new_netns(in_private_netns).expect("a thread in a namespace of its own");
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
