//! Bounds on what clients may hold: connections (in all, per client address, and not yet
//! authenticated), time to finish a TLS handshake, request headers and a body, and body size.
//!
//! Invariant: the controller never runs out of file descriptors and an authenticated peer (an
//! agent with its certificate, the token holder) always gets a connection. A connection is
//! *pending* from accept until a request on it authenticates (a client certificate naming the
//! CA at the handshake, or a request that passes the route's check); pending connections are
//! the cheap ones: when a limit is reached, a new connection evicts the oldest pending one (of
//! its own address first), so half-sent connections cannot fill the table for longer than a
//! real client needs to authenticate, and each of them is also closed by the handshake and
//! header timeouts. Established connections are never evicted; past the limits with nothing to
//! evict, a new connection is closed at once (its descriptor freed).
//!
//! The global cap derives from RLIMIT_NOFILE (raised to its hard limit at start), less a
//! reserve for the store, the listener and log files.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Descriptors kept for everything that is not a client connection.
pub const FD_RESERVE: u64 = 128;

/// The limits; `Limits::from_nofile` gives the defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections in all.
    pub max_connections: usize,
    /// Connections from one client address.
    pub max_connections_per_ip: usize,
    /// Connections not yet authenticated, in all.
    pub max_pending: usize,
    /// Connections not yet authenticated from one client address.
    pub max_pending_per_ip: usize,
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to send a request's headers, and to start the next request on an idle connection.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

impl Limits {
    /// Defaults for a process that may open `nofile` descriptors.
    pub fn from_nofile(nofile: u64) -> Limits {
        let max_connections = nofile.saturating_sub(FD_RESERVE).max(16) as usize;
        Limits {
            max_connections,
            max_connections_per_ip: (max_connections / 2).max(8),
            max_pending: (max_connections / 2).max(8),
            max_pending_per_ip: (max_connections / 4).max(4),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Defaults for this process (see [`raise_nofile`]).
    pub fn for_this_process() -> Limits {
        Limits::from_nofile(nofile())
    }
}

/// This process's soft RLIMIT_NOFILE.
pub fn nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (systemd starts services with 1024 soft,
/// 524288 hard). Returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

#[derive(Default)]
struct PerIp {
    total: usize,
    pending: usize,
}

#[derive(Default)]
struct Table {
    next: u64,
    total: usize,
    /// Pending connections by age (id), with their address, eviction signal and number of
    /// requests in progress (a connection serving a request is not evicted).
    pending: BTreeMap<u64, (IpAddr, Arc<Notify>, Arc<AtomicUsize>)>,
    per_ip: HashMap<IpAddr, PerIp>,
}

impl Table {
    fn per_ip(&mut self, ip: IpAddr) -> &mut PerIp {
        self.per_ip.entry(ip).or_default()
    }

    fn forget(&mut self, ip: IpAddr, pending: bool) {
        self.total -= 1;
        if let Some(p) = self.per_ip.get_mut(&ip) {
            p.total -= 1;
            if pending {
                p.pending -= 1;
            }
            if p.total == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Evicts the oldest idle pending connection (of `ip` if given). False if there is none.
    fn evict_oldest(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .pending
            .iter()
            .find(|(_, (a, _, busy))| {
                ip.is_none_or(|ip| *a == ip) && busy.load(Ordering::Relaxed) == 0
            })
            .map(|(id, _)| *id);
        let Some(id) = victim else {
            return false;
        };
        let (addr, notify, _) = self.pending.remove(&id).expect("victim is pending");
        self.forget(addr, true);
        notify.notify_one();
        true
    }
}

/// The connection table.
#[derive(Default)]
pub struct Tracker {
    limits: Limits,
    table: Mutex<Table>,
    /// Connections closed at accept because every limit was reached by established ones.
    pub refused: AtomicU64,
    /// Pending connections closed to make room for new ones.
    pub evicted: AtomicU64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_nofile(1024)
    }
}

/// Counts for the metrics page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub open: usize,
    pub pending: usize,
    pub refused: u64,
    pub evicted: u64,
}

impl Tracker {
    pub fn new(limits: Limits) -> Arc<Tracker> {
        Arc::new(Tracker {
            limits,
            ..Tracker::default()
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counts(&self) -> ConnectionCounts {
        let t = self.lock();
        ConnectionCounts {
            open: t.total,
            pending: t.pending.len(),
            refused: self.refused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Takes a slot for a new connection from `ip` (pending), evicting the oldest pending
    /// connection where a limit is reached; `None` if nothing can be evicted.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Slot>> {
        let l = &self.limits;
        let mut t = self.lock();
        let (total, pending) = t.per_ip.get(&ip).map_or((0, 0), |p| (p.total, p.pending));
        if total >= l.max_connections_per_ip || pending >= l.max_pending_per_ip {
            if !t.evict_oldest(Some(ip)) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        if t.total >= l.max_connections || t.pending.len() >= l.max_pending {
            if !t.evict_oldest(None) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        t.next += 1;
        let id = t.next;
        let evict = Arc::new(Notify::new());
        let busy = Arc::new(AtomicUsize::new(0));
        t.pending.insert(id, (ip, evict.clone(), busy.clone()));
        t.total += 1;
        let p = t.per_ip(ip);
        p.total += 1;
        p.pending += 1;
        Some(Arc::new(Slot {
            id,
            ip,
            tracker: self.clone(),
            evict,
            busy,
            established: AtomicBool::new(false),
        }))
    }
}

/// One connection's place in the table; dropping it frees the place.
pub struct Slot {
    id: u64,
    ip: IpAddr,
    tracker: Arc<Tracker>,
    evict: Arc<Notify>,
    busy: Arc<AtomicUsize>,
    established: AtomicBool,
}

/// A request in progress on a connection (see [`Slot::busy`]).
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slot {
    /// A request is being served: the connection is not evicted until the guard drops.
    pub fn busy(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.busy.clone())
    }

    /// The peer authenticated: the connection is no longer evictable.
    pub fn authenticated(&self) {
        if self.established.load(Ordering::Relaxed) {
            return;
        }
        let mut t = self.tracker.lock();
        if t.pending.remove(&self.id).is_some() {
            t.per_ip(self.ip).pending -= 1;
            self.established.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection was evicted to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.tracker.lock();
        if t.pending.remove(&self.id).is_some() {
            t.forget(self.ip, true);
        } else if self.established.load(Ordering::Relaxed) {
            t.forget(self.ip, false);
        }
        // Otherwise it was evicted, and forgotten then.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 6,
            max_connections_per_ip: 4,
            max_pending: 4,
            max_pending_per_ip: 3,
            ..Limits::default()
        }
    }

    #[test]
    fn pending_connections_make_room_oldest_first() {
        let t = Tracker::new(limits());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = t.admit(a).unwrap();
        let a2 = t.admit(a).unwrap();
        let a3 = t.admit(a).unwrap();
        // a's fourth evicts a's oldest pending.
        let a4 = t.admit(a).unwrap();
        assert!(a1.evict.notified().now_or_never().is_some());
        drop(a1);
        assert_eq!(t.counts().open, 3);
        // b's first: pending is not full (3 < 4): no eviction.
        let b1 = t.admit(b).unwrap();
        b1.authenticated();
        assert_eq!(t.counts().pending, 3);
        let b2 = t.admit(b).unwrap();
        b2.authenticated();
        let b3 = t.admit(b).unwrap();
        b3.authenticated();
        // The table is full (6): b4 evicts the oldest pending connection (a2); established
        // connections are never evicted.
        let b4 = t.admit(b).unwrap();
        assert!(a2.evict.notified().now_or_never().is_some());
        b4.authenticated();
        // b holds 4 established (its limit) and nothing pending: refused.
        assert!(t.admit(b).is_none());
        assert_eq!(t.counts().refused, 1);
        // A pending connection serving a request is not evicted: a3 is busy, a4 goes.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let busy = a3.busy();
        let c1 = t.admit(c).unwrap();
        assert!(a3.evict.notified().now_or_never().is_none());
        assert!(a4.evict.notified().now_or_never().is_some());
        drop(busy);
        drop((a2, a3, a4, c1));
        assert_eq!(t.counts().open, 4);
        drop((b1, b2, b3, b4));
        assert_eq!(
            t.counts(),
            ConnectionCounts {
                open: 0,
                pending: 0,
                refused: 1,
                evicted: 3
            }
        );
        assert!(t.lock().per_ip.is_empty());
    }

    #[test]
    fn defaults_stay_below_the_descriptor_limit() {
        let l = Limits::from_nofile(1024);
        assert_eq!(l.max_connections, 896);
        assert!(l.max_pending <= l.max_connections);
        assert_eq!(l.max_body_bytes, 1 << 20);
        assert_eq!(Limits::from_nofile(10).max_connections, 16);
    }

    use futures_util::FutureExt;
}
