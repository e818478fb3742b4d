//! Decoding trace events: one `NFT_MSG_TRACE` message into a [`TraceEvent`], without a
//! socket. Invariant: never panics on what it is handed; a malformed attribute is skipped, a
//! message without table and chain is not an event.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::nfnetlink::{
    attrs, be32, be64, messages, msg_type, nfgen, string, Body, NFNL_SUBSYS_NFTABLES,
};
use crate::nft::{Family, Verdict};

// <linux/netfilter/nf_tables.h>: enum nf_tables_msg_types
const NFT_MSG_TRACE: u16 = 17;
/// The `nlmsg_type` of a trace event.
const TRACE_MSG_TYPE: u16 = msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_TRACE);

// enum nft_trace_attributes
const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_POLICY: u16 = 16;

// enum nft_trace_types
const NFT_TRACETYPE_POLICY: u32 = 1;
const NFT_TRACETYPE_RETURN: u32 = 2;
const NFT_TRACETYPE_RULE: u32 = 3;

// enum nft_verdict_attributes
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

// <linux/netfilter.h> verdicts, enum nft_verdicts
const NF_VERDICT_MASK: i32 = 0xff;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_BREAK: i32 = -2;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// What an event reports (`enum nft_trace_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// A rule matched; [`TraceEvent::rule_handle`] names it.
    Rule,
    /// The packet reached the end of a base chain: its policy decided.
    Policy,
    /// The packet reached the end of a regular chain and returns to the calling one.
    Return,
    /// A type this code does not know.
    Other(u32),
}

impl TraceKind {
    fn from_raw(t: u32) -> Self {
        match t {
            NFT_TRACETYPE_RULE => TraceKind::Rule,
            NFT_TRACETYPE_POLICY => TraceKind::Policy,
            NFT_TRACETYPE_RETURN => TraceKind::Return,
            t => TraceKind::Other(t),
        }
    }
}

/// The verdict of a verdict code (NFTA_VERDICT_CODE, NFTA_TRACE_POLICY) and the jump/goto
/// target.
fn verdict_of_code(code: i32, chain: Option<String>) -> Verdict {
    match code {
        NFT_CONTINUE => Verdict::Continue,
        NFT_BREAK => Verdict::Break,
        NFT_JUMP => Verdict::Jump(chain.unwrap_or_default()),
        NFT_GOTO => Verdict::Goto(chain.unwrap_or_default()),
        NFT_RETURN => Verdict::Return,
        // The upper bits of netfilter verdicts carry data (an errno, a queue number).
        c if c >= 0 && c & NF_VERDICT_MASK == NF_DROP => Verdict::Drop,
        c if c >= 0 && c & NF_VERDICT_MASK == NF_ACCEPT => Verdict::Accept,
        c => Verdict::Other(c),
    }
}

/// One trace event: a packet passed a rule, a chain end or a chain policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Pseudo-id of the packet: the same for all its events.
    pub id: u32,
    /// Family of the table (nfgenmsg): 1 inet, 2 ip, 3 arp, 5 netdev, 7 bridge, 10 ip6.
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub kind: TraceKind,
    /// Handle of the rule (as `nft -a list ruleset` shows it), for rule events.
    pub rule_handle: Option<u64>,
    /// The verdict; for policy events the chain's policy.
    pub verdict: Option<Verdict>,
    /// Input / output interface index.
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    /// The packet mark; the kernel leaves it out when it is 0.
    pub mark: Option<u32>,
    /// The first bytes (up to 40) of the network header.
    pub network_header: Option<Vec<u8>>,
    /// The first bytes (up to 20) of the transport header.
    pub transport_header: Option<Vec<u8>>,
}

impl TraceEvent {
    /// IPv4 source, destination and protocol from the network header, when it is IPv4.
    pub fn ipv4(&self) -> Option<(Ipv4Addr, Ipv4Addr, u8)> {
        let h = self.network_header.as_deref()?;
        if h.len() < 20 || h[0] >> 4 != 4 {
            return None;
        }
        let src = <[u8; 4]>::try_from(&h[12..16]).ok()?;
        let dst = <[u8; 4]>::try_from(&h[16..20]).ok()?;
        Some((Ipv4Addr::from(src), Ipv4Addr::from(dst), h[9]))
    }

    /// IPv6 source, destination and next header from the network header, when it is IPv6.
    /// (The kernel sends 40 bytes: the fixed header, no extension headers.)
    pub fn ipv6(&self) -> Option<(Ipv6Addr, Ipv6Addr, u8)> {
        let h = self.network_header.as_deref()?;
        if h.len() < 40 || h[0] >> 4 != 6 {
            return None;
        }
        let src = <[u8; 16]>::try_from(&h[8..24]).ok()?;
        let dst = <[u8; 16]>::try_from(&h[24..40]).ok()?;
        Some((Ipv6Addr::from(src), Ipv6Addr::from(dst), h[6]))
    }

    /// The transport protocol number, from the IPv4 or IPv6 header.
    pub fn protocol(&self) -> Option<u8> {
        self.ipv4()
            .map(|(_, _, p)| p)
            .or_else(|| self.ipv6().map(|(_, _, p)| p))
    }

    /// Destination port from the transport header, for tcp, udp, udplite and sctp.
    pub fn dport(&self) -> Option<u16> {
        self.port(2)
    }

    /// Source port from the transport header, for tcp, udp, udplite and sctp.
    pub fn sport(&self) -> Option<u16> {
        self.port(0)
    }

    fn port(&self, at: usize) -> Option<u16> {
        // tcp, udp, sctp, udplite: source port then destination port, 16 bits each.
        if !matches!(self.protocol()?, 6 | 17 | 132 | 136) {
            return None;
        }
        let t = self.transport_header.as_deref()?;
        let b = t.get(at..at + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Whether this event carries the packet (the kernel sends it with a packet's first
    /// event at each hook).
    pub(super) fn has_packet(&self) -> bool {
        self.network_header.is_some()
            || self.transport_header.is_some()
            || self.iif.is_some()
            || self.oif.is_some()
    }
}

/// One line, the way `nft monitor trace` names things:
/// `inet weft-policy forward rule handle 7: drop (mark 0x0000000b)`,
/// `inet tt out policy accept`.
impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Family::from_nfproto(self.family) {
            Some(name) => write!(f, "{name}")?,
            None => write!(f, "family {}", self.family)?,
        }
        write!(f, " {} {} ", self.table, self.chain)?;
        match self.kind {
            TraceKind::Rule => f.write_str("rule")?,
            TraceKind::Policy => f.write_str("policy")?,
            TraceKind::Return => f.write_str("return")?,
            TraceKind::Other(t) => write!(f, "event {t}")?,
        }
        if let Some(h) = self.rule_handle {
            write!(f, " handle {h}")?;
        }
        match (&self.kind, &self.verdict) {
            (TraceKind::Policy, Some(v)) => write!(f, " {v}")?,
            // The implicit return at the end of a chain carries "continue": nothing to add.
            (TraceKind::Return, Some(Verdict::Continue)) => {}
            (_, Some(v)) => write!(f, ": {v}")?,
            (_, None) => {}
        }
        if let Some(m) = self.mark {
            write!(f, " (mark 0x{m:08x})")?;
        }
        Ok(())
    }
}

/// NFTA_TRACE_VERDICT's payload (enum nft_verdict_attributes); None without a code.
fn parse_verdict(buf: &[u8]) -> Option<Verdict> {
    let mut code = None;
    let mut chain = None;
    for (kind, p) in attrs(buf) {
        match kind {
            NFTA_VERDICT_CODE => code = be32(p).map(|c| c as i32).or(code),
            NFTA_VERDICT_CHAIN => chain = Some(string(p)),
            _ => {}
        }
    }
    code.map(|c| verdict_of_code(c, chain))
}

/// The payload of one NFT_MSG_TRACE message (nfgenmsg + attributes). None if it is too
/// short for the nfgenmsg or names no table and chain.
fn parse_event(msg: &[u8]) -> Option<TraceEvent> {
    let (family, attributes) = nfgen(msg)?;
    let mut table = None;
    let mut chain = None;
    let mut kind = TraceKind::Other(0);
    let mut policy = None;
    let mut ev = TraceEvent {
        id: 0,
        family,
        table: String::new(),
        chain: String::new(),
        kind,
        rule_handle: None,
        verdict: None,
        iif: None,
        oif: None,
        mark: None,
        network_header: None,
        transport_header: None,
    };
    // An attribute with the wrong size is skipped (the `if let` / `.or` fall-throughs).
    for (t, p) in attrs(attributes) {
        match t {
            NFTA_TRACE_TABLE => table = Some(string(p)),
            NFTA_TRACE_CHAIN => chain = Some(string(p)),
            NFTA_TRACE_RULE_HANDLE => ev.rule_handle = be64(p).or(ev.rule_handle),
            NFTA_TRACE_TYPE => {
                if let Some(v) = be32(p) {
                    kind = TraceKind::from_raw(v);
                }
            }
            NFTA_TRACE_VERDICT => ev.verdict = parse_verdict(p).or(ev.verdict.take()),
            NFTA_TRACE_ID => ev.id = be32(p).unwrap_or(ev.id),
            NFTA_TRACE_NETWORK_HEADER => ev.network_header = Some(p.to_vec()),
            NFTA_TRACE_TRANSPORT_HEADER => ev.transport_header = Some(p.to_vec()),
            NFTA_TRACE_IIF => ev.iif = be32(p).or(ev.iif),
            NFTA_TRACE_OIF => ev.oif = be32(p).or(ev.oif),
            NFTA_TRACE_MARK => ev.mark = be32(p).or(ev.mark),
            NFTA_TRACE_POLICY => policy = be32(p).or(policy),
            // LL header, interface types, nfproto, padding, anything newer.
            _ => {}
        }
    }
    ev.table = table?;
    ev.chain = chain?;
    ev.kind = kind;
    if ev.kind == TraceKind::Policy && ev.verdict.is_none() {
        ev.verdict = policy.map(|p| verdict_of_code(p as i32, None));
    }
    Some(ev)
}

/// A datagram's trace events, and the errnos of the error messages in it.
pub(super) fn parse_datagram(buf: &[u8]) -> (Vec<TraceEvent>, Vec<i32>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for m in messages(buf) {
        match m.body {
            Body::Data(payload) if m.kind == TRACE_MSG_TYPE => events.extend(parse_event(payload)),
            Body::Error(errno) => errors.push(errno),
            // ACKs, NLMSG_NOOP, NLMSG_DONE, other nf_tables notifications: not ours.
            _ => {}
        }
    }
    (events, errors)
}

/// The trace events in `buf`, one or more netlink messages as read from a
/// `NETLINK_NETFILTER` socket. Other messages are ignored, a malformed attribute is skipped,
/// and a truncated message (or anything after it) is left out. Headers are not copied between
/// events here (see [`super::TraceListener`]).
pub fn parse(buf: &[u8]) -> Vec<TraceEvent> {
    parse_datagram(buf).0
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::nfnetlink::tests::attr as nla;
    use crate::nfnetlink::{
        NFGENMSG_LEN, NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLMSG_ERROR, NLMSG_HDRLEN,
    };

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    fn verdict(code: i32, chain: Option<&str>) -> Vec<u8> {
        let mut inner = nla(NFTA_VERDICT_CODE | NLA_F_NET_BYTEORDER, &code.to_be_bytes());
        if let Some(c) = chain {
            inner.extend(nla(NFTA_VERDICT_CHAIN, &s(c)));
        }
        nla(NFTA_TRACE_VERDICT | NLA_F_NESTED, &inner)
    }

    /// nlmsghdr + nfgenmsg + attributes, as the kernel sends a trace event.
    fn msg(kind: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let attrs = attrs.concat();
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(&attrs);
        m
    }

    fn u32_attr(kind: u16, v: u32) -> Vec<u8> {
        nla(kind, &v.to_be_bytes())
    }

    /// IPv4 + UDP headers 10.0.0.1:4000 -> 10.0.0.2:9999.
    fn ipv4_udp() -> (Vec<u8>, Vec<u8>) {
        let mut ip = vec![0x45, 0, 0, 33, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let mut udp = Vec::new();
        udp.extend_from_slice(&4000u16.to_be_bytes());
        udp.extend_from_slice(&9999u16.to_be_bytes());
        udp.extend_from_slice(&[0, 13, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        (ip, udp)
    }

    /// A rule event dropping a packet, the way nft_trace_notify lays it out.
    pub(in crate::nftrace) fn drop_event() -> Vec<u8> {
        let (ip, udp) = ipv4_udp();
        msg(
            TRACE_MSG_TYPE,
            1,
            &[
                u32_attr(NFTA_TRACE_NFPROTO, 2),
                u32_attr(NFTA_TRACE_TYPE, NFT_TRACETYPE_RULE),
                u32_attr(NFTA_TRACE_ID, 0xdead_beef),
                nla(NFTA_TRACE_CHAIN, &s("forward")),
                nla(NFTA_TRACE_TABLE, &s("weft-policy")),
                nla(17, &[]), // NFTA_TRACE_PAD before the 64-bit handle
                nla(NFTA_TRACE_RULE_HANDLE, &7u64.to_be_bytes()),
                verdict(0, None),
                u32_attr(NFTA_TRACE_MARK, 0xb),
                u32_attr(NFTA_TRACE_IIF, 3),
                nla(11, &1u16.to_be_bytes()), // NFTA_TRACE_IIFTYPE
                u32_attr(NFTA_TRACE_OIF, 4),
                nla(NFTA_TRACE_NETWORK_HEADER, &ip),
                nla(NFTA_TRACE_TRANSPORT_HEADER, &udp[..8]),
                nla(NFTA_TRACE_LL_HEADER, &[0; 14]),
            ],
        )
    }

    const NFTA_TRACE_LL_HEADER: u16 = 7;
    const NFTA_TRACE_NFPROTO: u16 = 15;

    #[test]
    fn rule_event_with_drop_verdict() {
        let evs = parse(&drop_event());
        assert_eq!(evs.len(), 1);
        let e = &evs[0];
        assert_eq!(e.id, 0xdead_beef);
        assert_eq!(e.family, 1);
        assert_eq!(e.table, "weft-policy");
        assert_eq!(e.chain, "forward");
        assert_eq!(e.kind, TraceKind::Rule);
        assert_eq!(e.rule_handle, Some(7));
        assert_eq!(e.verdict, Some(Verdict::Drop));
        assert_eq!((e.iif, e.oif, e.mark), (Some(3), Some(4), Some(0xb)));
        assert_eq!(
            e.ipv4(),
            Some((Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17))
        );
        assert_eq!(e.ipv6(), None);
        assert_eq!(e.dport(), Some(9999));
        assert_eq!(e.sport(), Some(4000));
        assert_eq!(
            e.to_string(),
            "inet weft-policy forward rule handle 7: drop (mark 0x0000000b)"
        );
    }

    #[test]
    fn policy_event_takes_its_verdict_from_the_policy() {
        let m = msg(
            TRACE_MSG_TYPE,
            2,
            &[
                u32_attr(NFTA_TRACE_TYPE, NFT_TRACETYPE_POLICY),
                u32_attr(NFTA_TRACE_ID, 1),
                nla(NFTA_TRACE_CHAIN, &s("out")),
                nla(NFTA_TRACE_TABLE, &s("tt")),
                u32_attr(NFTA_TRACE_POLICY, 1),
            ],
        );
        let evs = parse(&m);
        assert_eq!(evs.len(), 1);
        let e = &evs[0];
        assert_eq!(e.kind, TraceKind::Policy);
        assert_eq!(e.verdict, Some(Verdict::Accept));
        assert_eq!(e.rule_handle, None);
        assert_eq!(e.mark, None);
        assert_eq!((e.ipv4(), e.dport()), (None, None));
        assert_eq!(e.to_string(), "ip tt out policy accept");

        // A policy drop.
        let m = msg(
            TRACE_MSG_TYPE,
            10,
            &[
                u32_attr(NFTA_TRACE_TYPE, NFT_TRACETYPE_POLICY),
                nla(NFTA_TRACE_CHAIN, &s("in")),
                nla(NFTA_TRACE_TABLE, &s("t6")),
                u32_attr(NFTA_TRACE_POLICY, 0),
            ],
        );
        assert_eq!(parse(&m)[0].to_string(), "ip6 t6 in policy drop");
    }

    #[test]
    fn jump_and_goto_carry_the_target_chain() {
        let ev = |code: i32, chain: &str| {
            let m = msg(
                TRACE_MSG_TYPE,
                1,
                &[
                    u32_attr(NFTA_TRACE_TYPE, NFT_TRACETYPE_RULE),
                    nla(NFTA_TRACE_CHAIN, &s("forward")),
                    nla(NFTA_TRACE_TABLE, &s("weft")),
                    nla(NFTA_TRACE_RULE_HANDLE, &12u64.to_be_bytes()),
                    verdict(code, Some(chain)),
                ],
            );
            parse(&m).pop().expect("one event")
        };
        let j = ev(NFT_JUMP, "pod-ingress");
        assert_eq!(j.verdict, Some(Verdict::Jump("pod-ingress".into())));
        assert_eq!(
            j.to_string(),
            "inet weft forward rule handle 12: jump pod-ingress"
        );
        let g = ev(NFT_GOTO, "x");
        assert_eq!(g.verdict, Some(Verdict::Goto("x".into())));
    }

    #[test]
    fn verdict_codes() {
        let v = |c| verdict_of_code(c, None);
        assert_eq!(v(0), Verdict::Drop);
        assert_eq!(v(1), Verdict::Accept);
        assert_eq!(v(-1), Verdict::Continue);
        assert_eq!(v(-2), Verdict::Break);
        assert_eq!(v(-3), Verdict::Jump(String::new()));
        assert_eq!(v(-5), Verdict::Return);
        // NF_DROP_ERR(-EPERM): errno in the upper bits.
        assert_eq!(v(libc::EPERM << 16), Verdict::Drop);
        // NF_QUEUE to queue 3.
        assert_eq!(v((3 << 16) | 3), Verdict::Other((3 << 16) | 3));
        assert_eq!(v(-42), Verdict::Other(-42));
    }

    #[test]
    fn return_event_and_unknown_family() {
        let m = msg(
            TRACE_MSG_TYPE,
            42,
            &[
                u32_attr(NFTA_TRACE_TYPE, NFT_TRACETYPE_RETURN),
                nla(NFTA_TRACE_CHAIN, &s("sub")),
                nla(NFTA_TRACE_TABLE, &s("t")),
                verdict(NFT_CONTINUE, None),
            ],
        );
        let e = parse(&m).pop().expect("event");
        assert_eq!(e.kind, TraceKind::Return);
        assert_eq!(e.to_string(), "family 42 t sub return");
    }

    #[test]
    fn several_messages_per_datagram_and_foreign_ones() {
        let mut d = drop_event();
        d.extend(msg(0x0a00, 1, &[nla(1, &s("newtable"))])); // NFT_MSG_NEWTABLE
        d.extend(drop_event());
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0; 10]);
        err.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        d.extend(&err);
        let (evs, errors) = parse_datagram(&d);
        assert_eq!(evs.len(), 2);
        assert_eq!(errors, vec![libc::EPERM]);
    }

    #[test]
    fn malformed_attributes_are_skipped() {
        let m = msg(
            TRACE_MSG_TYPE,
            1,
            &[
                nla(NFTA_TRACE_ID, &[1, 2, 3]),          // wrong size
                nla(NFTA_TRACE_RULE_HANDLE, &[0; 4]),    // wrong size
                nla(NFTA_TRACE_VERDICT, &[0xff; 3]),     // no usable nested attribute
                nla(NFTA_TRACE_TYPE, &[0, 0]),           // wrong size
                nla(NFTA_TRACE_TABLE, &[b'a', 0xff, 0]), // invalid UTF-8
                nla(NFTA_TRACE_CHAIN, &s("c")),
            ],
        );
        let e = parse(&m).pop().expect("event");
        assert_eq!(e.id, 0);
        assert_eq!(e.rule_handle, None);
        assert_eq!(e.verdict, None);
        assert_eq!(e.kind, TraceKind::Other(0));
        assert_eq!(e.table, "a\u{fffd}");
        assert_eq!(e.chain, "c");

        // No table or chain: not an event.
        let m = msg(TRACE_MSG_TYPE, 1, &[u32_attr(NFTA_TRACE_ID, 5)]);
        assert!(parse(&m).is_empty());
    }

    #[test]
    fn truncated_or_garbage_input_never_panics() {
        let mut d = drop_event();
        d.extend(drop_event());
        let whole = parse(&d).len();
        assert_eq!(whole, 2);
        for cut in 0..=d.len() {
            let n = parse(&d[..cut]).len();
            assert!(n <= whole);
            let _ = parse(&d[cut..]);
            let _ = parse_event(&d[..cut]);
            let _ = parse_verdict(&d[cut..]);
        }
        // The first message survives a cut inside the second one.
        assert_eq!(parse(&d[..d.len() - 1]).len(), 1);
        // An attribute whose length runs past the end ends the attributes, not the event.
        let mut m = drop_event();
        m.extend_from_slice(&[0xff, 0x00, 0x01, 0x00, 1, 2]);
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse(&m).len(), 1);
        // Lengths below the header size or past the end.
        assert!(parse(&[0xff; 64]).is_empty());
        assert!(parse(&[0; 64]).is_empty());
        // Headers too short to read addresses or ports from.
        let mut e = parse(&drop_event()).pop().expect("event");
        e.network_header = Some(vec![0x45; 19]);
        assert_eq!((e.ipv4(), e.dport()), (None, None));
        e.network_header = Some(ipv4_udp().0);
        e.transport_header = Some(vec![0, 1, 2]);
        assert_eq!(e.dport(), None);
    }
}
