//! The nfnetlink wire format and socket: one codec for every `NETLINK_NETFILTER` user
//! (ctnetlink in [`crate::conntrack`], nf_tables trace events in [`crate::nftrace`], NFLOG
//! packets in [`crate::nflog`]).
//!
//! A datagram holds netlink messages: a `nlmsghdr` (16 bytes, host byte order), then for
//! nfnetlink a `nfgenmsg` (family, version, resource id) and netlink attributes (NLAs), each
//! 4-byte aligned, nested ones flagged `NLA_F_NESTED`. Attribute payloads (addresses, ports,
//! ids, nf_tables numbers) are in network byte order: the `be*` readers.
//!
//! Invariant: decoding never reads past the buffer and never panics, whatever it is handed
//! (the kernel, or anybody who can write to the socket): a malformed header ends the
//! iteration, a short attribute is the caller's to skip. Every wait on the socket is bounded
//! ([`NfSocket::wait_readable`]); a request's answer that does not come is an
//! [`Error::Timeout`], not a hang.
//!
//! Kernel objects owned: none; a [`NfSocket`] is bound to the network namespace of the
//! thread that opened it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::{Error, Result};

// <linux/netlink.h>
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
#[cfg(test)]
pub(crate) const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300; // NLM_F_ROOT | NLM_F_MATCH
pub(crate) const NLA_HDRLEN: usize = 4;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

// <linux/netfilter/nfnetlink.h>: struct nfgenmsg { u8 family; u8 version; __be16 res_id; }
pub(crate) const NFGENMSG_LEN: usize = 4;
pub(crate) const NFNETLINK_V0: u8 = 0;
pub(crate) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(crate) const NFNL_SUBSYS_ULOG: u16 = 4;
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// Big enough for any datagram: the kernel fills at most 32 KiB per dump batch, and one
/// multicast event is far smaller.
pub(crate) const RECV_BUF_LEN: usize = 64 * 1024;

/// The `nlmsg_type` of message `msg` of nfnetlink subsystem `subsys`.
pub(crate) const fn msg_type(subsys: u16, msg: u16) -> u16 {
    (subsys << 8) | msg
}

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes in `buf`: (type without flags, payload). Stops at the first malformed
/// header (shorter than itself, or longer than what is left) instead of reading past the
/// buffer; the last attribute's padding may be missing.
pub(crate) fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let hdr = self.buf.get(..NLA_HDRLEN)?;
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        let Some(payload) = self.buf.get(NLA_HDRLEN..len) else {
            self.buf = &[];
            return None;
        };
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    }
}

/// Appends one attribute (header, payload, padding to 4 bytes). `kind` carries its flags.
pub(crate) fn push_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = (NLA_HDRLEN + payload.len()) as u16;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

/// A whole nfnetlink request: nlmsghdr + nfgenmsg (`family`, version 0, res_id 0) + `attrs`
/// (already encoded).
pub(crate) fn request(kind: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    request_for(kind, flags, seq, family, 0, attrs)
}

/// [`request`] with a resource id in the nfgenmsg (e.g. the NFLOG group a config message
/// is about).
pub(crate) fn request_for(
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
    out.extend_from_slice(&[family, NFNETLINK_V0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
    out
}

/// A data message's payload split into its nfgenmsg family and its attributes.
pub(crate) fn nfgen(payload: &[u8]) -> Option<(u8, &[u8])> {
    Some((*payload.first()?, payload.get(NFGENMSG_LEN..)?))
}

pub(crate) fn be16(p: &[u8]) -> Option<u16> {
    <[u8; 2]>::try_from(p).ok().map(u16::from_be_bytes)
}

pub(crate) fn be32(p: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(p).ok().map(u32::from_be_bytes)
}

pub(crate) fn be64(p: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(p).ok().map(u64::from_be_bytes)
}

/// An NLA_STRING: up to the first NUL, invalid UTF-8 replaced.
pub(crate) fn string(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// One netlink message of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    /// `nlmsg_type`: a control type (NLMSG_*) or `subsystem << 8 | message`.
    pub kind: u16,
    pub seq: u32,
    pub body: Body<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body<'a> {
    /// A data message; the payload starts with the nfgenmsg ([`nfgen`]).
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

/// Splits a datagram into its messages; stops at a malformed or truncated header.
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let hdr = buf.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        let Some(payload) = buf.get(NLMSG_HDRLEN..len) else {
            buf = &[];
            return None;
        };
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        // The errno of NLMSG_ERROR (and of NLMSG_DONE after a failed dump) is a negative int.
        let code = || {
            payload
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let body = match kind {
            NLMSG_NOOP => Body::Noop,
            NLMSG_ERROR => match code() {
                Some(0) => Body::Ack,
                Some(c) => Body::Error(c.saturating_neg()),
                None => Body::Error(libc::EBADMSG),
            },
            NLMSG_DONE => match code() {
                Some(c) if c < 0 => Body::Error(c.saturating_neg()),
                _ => Body::Done,
            },
            _ => Body::Data(payload),
        };
        Some(Message { kind, seq, body })
    })
}

/// What one receive gave.
pub(crate) enum Received<'a> {
    /// A datagram; `truncated_from` is its real size when it did not fit the buffer.
    Datagram {
        data: &'a [u8],
        truncated_from: Option<usize>,
    },
    /// Nothing queued.
    Empty,
    /// The kernel dropped messages because the receive buffer was full (ENOBUFS).
    Overrun,
}

/// A non-blocking `NETLINK_NETFILTER` socket in the network namespace of the thread that
/// opened it.
#[derive(Debug)]
pub(crate) struct NfSocket {
    sock: Socket,
    buf: Vec<u8>,
}

impl NfSocket {
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| Error::io("open NETLINK_NETFILTER socket", e))?;
        sock.bind_auto()
            .map_err(|e| Error::io("bind NETLINK_NETFILTER socket", e))?;
        sock.set_non_blocking(true)
            .map_err(|e| Error::io("make NETLINK_NETFILTER socket non-blocking", e))?;
        Ok(NfSocket {
            sock,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    /// A socket for requests: its default destination is the kernel (port 0), and it takes
    /// datagrams from the kernel only.
    pub fn to_kernel() -> Result<Self> {
        let s = Self::open()?;
        s.sock
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io("connect NETLINK_NETFILTER socket", e))?;
        Ok(s)
    }

    /// Joins a multicast group (needs CAP_NET_ADMIN: nfnetlink has no unprivileged groups).
    pub fn join(&mut self, group: u32, name: &str) -> Result<()> {
        self.sock
            .add_membership(group)
            .map_err(|e| Error::io(format!("join netlink group {name}"), e))
    }

    /// Asks for a receive buffer of `size` bytes: SO_RCVBUFFORCE (root may exceed
    /// rmem_max), else SO_RCVBUF (capped at rmem_max). Best effort: the default works, only
    /// smaller.
    pub fn set_rcvbuf(&self, size: libc::c_int) {
        // SAFETY: a valid socket, and a c_int option value with its size.
        let forced = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced != 0 {
            if let Err(e) = self.sock.set_rx_buf_sz(size) {
                tracing::debug!("NETLINK_NETFILTER socket: SO_RCVBUF: {e}");
            }
        }
    }

    pub fn send(&self, req: &[u8], op: &str) -> Result<()> {
        loop {
            match self.sock.send(req, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("{op}: send"), e)),
            }
        }
    }

    /// poll(2) for input for at most `wait`; false when nothing came. A pending error
    /// (POLLERR, e.g. ENOBUFS) counts as readable: the receive reports it.
    pub fn wait_readable(&self, wait: Duration) -> Result<bool> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Rounded up, so that a wait under a millisecond does not spin.
            let ms = left
                .as_nanos()
                .div_ceil(1_000_000)
                .min(libc::c_int::MAX as u128) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, and its count.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("poll NETLINK_NETFILTER socket", e));
            }
            return Ok(n > 0);
        }
    }

    /// One queued datagram, without waiting.
    pub fn recv(&mut self, op: &str) -> Result<Received<'_>> {
        loop {
            self.buf.clear();
            // MSG_TRUNC: the return value is the datagram's real size, so truncation shows.
            match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => {
                    let truncated_from = (n > self.buf.len()).then_some(n);
                    return Ok(Received::Datagram {
                        data: &self.buf,
                        truncated_from,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Received::Overrun),
                Err(e) => return Err(Error::io(format!("{op}: receive"), e)),
            }
        }
    }

    /// Sends `req` and hands the data messages answering `seq` to `on_data`, until its ACK,
    /// DONE or error. Each wait for the kernel is bounded by `timeout`: a dump that keeps
    /// coming is not cut short, an answer that stops coming is an [`Error::Timeout`].
    pub fn transact(
        &mut self,
        op: &str,
        req: &[u8],
        seq: u32,
        timeout: Duration,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<()> {
        self.send(req, op)?;
        loop {
            if !self.wait_readable(timeout)? {
                return Err(Error::Timeout {
                    op: op.to_string(),
                    after: timeout,
                });
            }
            let data = match self.recv(op)? {
                Received::Datagram {
                    truncated_from: Some(n),
                    data,
                } => {
                    return Err(Error::Invalid(format!(
                        "{op}: {n}-byte netlink message truncated to {}",
                        data.len()
                    )))
                }
                Received::Datagram { data, .. } => data,
                Received::Empty => continue,
                Received::Overrun => {
                    return Err(Error::io(
                        format!("{op}: receive"),
                        io::Error::from_raw_os_error(libc::ENOBUFS),
                    ))
                }
            };
            for m in messages(data) {
                if m.seq != seq {
                    continue; // a late answer to an earlier request
                }
                match m.body {
                    Body::Data(payload) => on_data(payload),
                    Body::Noop => {}
                    Body::Ack | Body::Done => return Ok(()),
                    Body::Error(errno) => {
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

impl AsFd for NfSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One attribute, encoded.
    pub(crate) fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_attr(&mut out, kind, payload);
        out
    }

    /// A nested attribute holding `parts`.
    pub(crate) fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | NLA_F_NESTED, &parts.concat())
    }

    /// A control message (NLMSG_ERROR / NLMSG_DONE) with its code.
    pub(crate) fn control(seq: u32, kind: u16, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m
    }

    #[test]
    fn attribute_is_padded_to_four_bytes_and_read_back_without_flags() {
        let out = attr(18 | NLA_F_NET_BYTEORDER, &[0, 7]);
        assert_eq!(out.len(), 8);
        assert_eq!(&out[..2], &6u16.to_ne_bytes());
        assert_eq!(&out[2..4], &(18 | NLA_F_NET_BYTEORDER).to_ne_bytes());
        assert_eq!(&out[6..], &[0, 0]);
        assert_eq!(attrs(&out).collect::<Vec<_>>(), vec![(18, &[0u8, 7][..])]);
        // The last attribute's padding may be missing.
        assert_eq!(attrs(&out[..6]).count(), 1);
    }

    #[test]
    fn nested_attributes() {
        let n = nested(1, &[attr(2, b"ab"), attr(3, &7u32.to_be_bytes())]);
        let (kind, inner) = attrs(&n).next().expect("outer");
        assert_eq!(kind, 1, "the nested flag is not part of the type");
        let inner: Vec<_> = attrs(inner).collect();
        assert_eq!(inner, vec![(2, &b"ab"[..]), (3, &[0, 0, 0, 7][..])]);
        assert_eq!(be32(inner[1].1), Some(7));
    }

    #[test]
    fn request_layout() {
        let m = request(
            msg_type(NFNL_SUBSYS_CTNETLINK, 1),
            NLM_F_REQUEST | NLM_F_DUMP,
            7,
            libc::AF_INET6 as u8,
            &attr(1, &[9]),
        );
        assert_eq!(m.len(), NLMSG_HDRLEN + NFGENMSG_LEN + 8);
        assert_eq!(&m[0..4], &(m.len() as u32).to_ne_bytes());
        assert_eq!(&m[4..6], &0x0101u16.to_ne_bytes());
        assert_eq!(&m[6..8], &0x0301u16.to_ne_bytes());
        assert_eq!(&m[8..12], &7u32.to_ne_bytes());
        assert_eq!(&m[12..16], &[0; 4]);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, NFNETLINK_V0, 0, 0]);
        let msgs: Vec<_> = messages(&m).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].kind, msgs[0].seq), (0x0101, 7));
        let Body::Data(payload) = msgs[0].body else {
            panic!("not data");
        };
        let (family, a) = nfgen(payload).expect("nfgenmsg");
        assert_eq!(family, libc::AF_INET6 as u8);
        assert_eq!(attrs(a).collect::<Vec<_>>(), vec![(1, &[9u8][..])]);
    }

    #[test]
    fn control_messages() {
        let mut d = control(3, NLMSG_ERROR, 0);
        d.extend(control(4, NLMSG_ERROR, -libc::ENOENT));
        d.extend(control(5, NLMSG_DONE, 0));
        d.extend(control(6, NLMSG_DONE, -libc::EINTR));
        let mut noop = control(7, NLMSG_NOOP, 0);
        noop[0..4].copy_from_slice(&16u32.to_ne_bytes());
        d.extend(&noop[..16]);
        let got: Vec<_> = messages(&d).map(|m| (m.seq, m.body)).collect();
        assert_eq!(
            got,
            vec![
                (3, Body::Ack),
                (4, Body::Error(libc::ENOENT)),
                (5, Body::Done),
                (6, Body::Error(libc::EINTR)),
                (7, Body::Noop),
            ]
        );
        // An error message too short for its code.
        let mut short = control(8, NLMSG_ERROR, 0);
        short[0..4].copy_from_slice(&17u32.to_ne_bytes());
        let got: Vec<_> = messages(&short[..17]).map(|m| m.body).collect();
        assert_eq!(got, vec![Body::Error(libc::EBADMSG)]);
    }

    #[test]
    fn big_endian_readers_and_strings() {
        assert_eq!(be16(&[1, 2]), Some(0x0102));
        assert_eq!(be16(&[1, 2, 3]), None);
        assert_eq!(be32(&[0, 0, 1, 0]), Some(256));
        assert_eq!(be32(&[1]), None);
        assert_eq!(be64(&[0, 0, 0, 0, 0, 0, 0, 9]), Some(9));
        assert_eq!(be64(&[0; 4]), None);
        assert_eq!(string(b"forward\0\0"), "forward");
        assert_eq!(string(b"no-nul"), "no-nul");
        assert_eq!(string(&[b'a', 0xff, 0]), "a\u{fffd}");
        assert_eq!(nfgen(&[2, 0, 0]), None);
        assert_eq!(nfgen(&[2, 0, 0, 0]), Some((2, &[][..])));
    }

    #[test]
    fn truncated_or_garbage_input_never_panics() {
        let mut d = request(0x0a11, NLM_F_MULTI, 1, 1, &nested(1, &[attr(2, b"x")]));
        d.extend(control(1, NLMSG_DONE, 0));
        for cut in 0..=d.len() {
            for m in messages(&d[..cut]) {
                if let Body::Data(p) = m.body {
                    let _ = nfgen(p).map(|(_, a)| attrs(a).count());
                }
            }
            let _ = attrs(&d[cut..]).count();
            let _ = messages(&d[cut..]).count();
        }
        // Lengths pointing past the end or below the header size.
        assert_eq!(attrs(&[0xff, 0xff, 1, 0, 1, 2]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(messages(&[0xff; 16]).count(), 0);
        assert_eq!(messages(&[0; 16]).count(), 0);
        // A message cut inside: the ones before it survive.
        assert_eq!(messages(&d[..d.len() - 1]).count(), 1);
    }

    /// A request nobody answers (a socket that is not the kernel's partner: its requests
    /// go nowhere) fails within its bound instead of waiting forever.
    #[test]
    fn an_unanswered_request_times_out() {
        let mut a = NfSocket::open().expect("socket");
        // A second socket as the destination: it never answers.
        let b = NfSocket::open().expect("socket");
        let port = b.sock.local_addr_port();
        a.sock
            .connect(&SocketAddr::new(port, 0))
            .expect("connect to the silent socket");
        let started = Instant::now();
        let e = a
            .transact(
                "silent request",
                &request(0x0101, NLM_F_REQUEST, 1, 2, &[]),
                1,
                Duration::from_millis(200),
                |_| {},
            )
            .expect_err("no answer");
        assert!(e.is_timeout(), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            e.to_string(),
            "silent request: no answer from the kernel within 200ms"
        );
    }

    trait PortOf {
        fn local_addr_port(&self) -> u32;
    }

    impl PortOf for Socket {
        fn local_addr_port(&self) -> u32 {
            let mut addr = SocketAddr::new(0, 0);
            self.get_address(&mut addr).expect("getsockname");
            addr.port_number()
        }
    }
}
