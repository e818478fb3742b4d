//! Talking from inside a namespace the way an app would, without spawning anything: a TCP
//! request, an ICMP echo, and weft's tiny built-in server (`weft lab serve`), which answers
//! both HTTP and plain TCP with who it is and whom it sees.
//!
//! A socket belongs to the namespace of the thread that created it, so every probe opens its
//! socket on a thread inside the namespace ([`Netns::run`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use weft_kernel::netns::Netns;

/// How long a probe waits for an answer; a policy drop shows as no answer in this time.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Connected (TCP) or answered (ICMP). `seen` is the source address the server saw (weft's
    /// built-in server says so), `reply` its first line.
    Reached {
        seen: Option<Ipv4Addr>,
        reply: String,
        ms: f64,
    },
    /// Nothing came back in time: dropped somewhere (a policy, a missing route).
    TimedOut { ms: f64 },
    /// Something answered with a refusal (TCP RST, ICMP unreachable): the path works, no
    /// listener.
    Refused { detail: String },
    /// The probe could not be sent (no route, namespace gone...).
    Failed { detail: String },
}

impl Outcome {
    /// Did the packet get through to the destination?
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Reached { .. })
    }

    pub fn text(&self) -> String {
        match self {
            Outcome::Reached { seen, reply, ms } => match seen {
                Some(s) => format!("reached in {ms:.1} ms; the server saw {s}"),
                None if reply.is_empty() => format!("reached in {ms:.1} ms"),
                None => format!("reached in {ms:.1} ms: {reply}"),
            },
            Outcome::TimedOut { ms } => format!("no answer in {ms:.0} ms (dropped)"),
            Outcome::Refused { detail } => format!("refused: {detail}"),
            Outcome::Failed { detail } => format!("failed: {detail}"),
        }
    }
}

/// A TCP connection to `dst:port` from inside `ns`, with an HTTP GET; weft's server answers
/// with the address it saw.
pub fn tcp(ns: &str, dst: Ipv4Addr, port: u16, timeout: Duration) -> Result<Outcome> {
    Ok(Netns::named(ns)?.run(move || tcp_here(dst, port, timeout))?)
}

pub fn tcp_here(dst: Ipv4Addr, port: u16, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let ms = |s: Instant| s.elapsed().as_secs_f64() * 1000.0;
    let addr = SocketAddr::from((dst, port));
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Outcome::TimedOut { ms: ms(start) }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Outcome::Refused {
                detail: format!("connection refused by {addr} (reachable, nothing listening)"),
            }
        }
        Err(e) => {
            return Outcome::Failed {
                detail: format!("connect {addr}: {e}"),
            }
        }
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.write_all(b"GET / HTTP/1.0\r\nUser-Agent: weft\r\n\r\n");
    let _ = s.shutdown(Shutdown::Write);
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    // The body (after the HTTP header, if any); weft's server says "... you are IP:PORT".
    let body = text.split("\r\n\r\n").nth(1).unwrap_or(&text);
    let reply = body.lines().next().unwrap_or("").trim().to_string();
    let seen = body
        .split("you are ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|ip| ip.trim().parse().ok());
    Outcome::Reached {
        seen,
        reply,
        ms: ms(start),
    }
}

/// One ICMP echo from inside `ns` to `dst`.
pub fn ping(ns: &str, dst: Ipv4Addr, timeout: Duration) -> Result<Outcome> {
    Ok(Netns::named(ns)?.run(move || ping_here(dst, timeout))?)
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ping_here(dst: Ipv4Addr, timeout: Duration) -> Outcome {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let start = Instant::now();
    let ms = |s: Instant| s.elapsed().as_secs_f64() * 1000.0;
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Outcome::Failed {
            detail: format!("raw ICMP socket: {}", std::io::Error::last_os_error()),
        };
    }
    // SAFETY: fd is a new, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let id = (std::process::id() as u16) ^ (start.elapsed().subsec_nanos() as u16);
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"weft lab probe..");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: pkt and sa are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Outcome::Failed {
            detail: format!(
                "send ICMP echo to {dst}: {}",
                std::io::Error::last_os_error()
            ),
        };
    }
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Outcome::TimedOut { ms: ms(start) };
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if r <= 0 {
            continue;
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let b = &buf[..n as usize];
        let ihl = ((b.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
        if b.len() < ihl + 8 || b.len() < 20 {
            continue;
        }
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let icmp = &b[ihl..];
        match icmp[0] {
            0 if src == dst && icmp[4..6] == id.to_be_bytes() => {
                return Outcome::Reached {
                    seen: None,
                    reply: format!("echo reply from {src}"),
                    ms: ms(start),
                }
            }
            3 if icmp.len() >= 8 + 20 + 8 => {
                // Unreachable about our echo: the original header follows.
                let orig = &icmp[8..];
                let oihl = ((orig[0] & 0x0f) as usize) * 4;
                let odst = Ipv4Addr::new(orig[16], orig[17], orig[18], orig[19]);
                if odst == dst
                    && orig.len() >= oihl + 8
                    && orig[oihl + 4..oihl + 6] == id.to_be_bytes()
                {
                    return Outcome::Refused {
                        detail: format!("{src} says destination unreachable (code {})", icmp[1]),
                    };
                }
            }
            _ => {}
        }
    }
}

/// weft's built-in server: listens on every port in `ports` (in the calling process's
/// namespace) and answers each connection with one line, `weft lab server NAME port PORT:
/// you are IP:PORT`, as an HTTP response if the client sent an HTTP request and as a plain
/// line otherwise. Runs until killed.
pub fn serve(name: &str, ports: &[u16]) -> Result<()> {
    let mut handles = Vec::new();
    for &port in ports {
        let l = TcpListener::bind(("0.0.0.0", port))
            .with_context(|| format!("listen on port {port}"))?;
        let name = name.to_string();
        handles.push(std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let name = name.clone();
                std::thread::spawn(move || answer(c, &name, port));
            }
        }));
    }
    eprintln!("weft lab server {name}: listening on {ports:?}");
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn answer(mut c: TcpStream, name: &str, port: u16) {
    let peer = c
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    // Read what the client sends, up to the end of an HTTP header, EOF, or a short pause
    // (a plain TCP client may send nothing).
    let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while req.len() < 64 * 1024 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                req.extend_from_slice(&buf[..n]);
                if req.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let line = format!("weft lab server {name} port {port}: you are {peer}\n");
    let http = req.starts_with(b"GET ") || req.starts_with(b"HEAD ") || req.starts_with(b"POST ");
    let out = if http {
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
            line.len()
        )
    } else {
        line
    };
    let _ = c.write_all(out.as_bytes());
    let _ = c.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_checksum() {
        // An echo request with id 1, seq 1 and no data: 0xf7fd.
        let p = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&p), 0xf7fd);
    }

    #[test]
    fn server_answers_http_and_plain_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                answer(c, "t", port);
            }
        });
        match tcp_here(Ipv4Addr::LOCALHOST, port, Duration::from_secs(2)) {
            Outcome::Reached { seen, reply, .. } => {
                assert_eq!(seen, Some(Ipv4Addr::LOCALHOST));
                assert!(reply.starts_with("weft lab server t port"), "{reply}");
            }
            o => panic!("{o:?}"),
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("weft lab server t"), "{out}");
    }
}
