//! The conntrack side of host ports: a change of a mapping forgets the entries that would
//! keep the old path alive (a datagram flow does not keep going to the port's former
//! holder).

use std::collections::HashMap;
use std::net::IpAddr;

use weft_kernel::conntrack::{self, Flow};
use weft_kernel::Netlink;

use super::{Change, Element, Key};

/// Does the flow hit `key` (protocol, original destination port and address)?
fn hits(f: &Flow, key: &Key) -> bool {
    f.proto == Some(key.proto_number())
        && f.orig.dport == Some(key.port)
        && key
            .host_ip
            .is_none_or(|ip| f.orig.dst == Some(IpAddr::V4(ip)))
}

/// Pure: a flow through a removed mapping that still leads to its old target.
pub fn leads_to_removed(f: &Flow, e: &Element) -> bool {
    hits(f, &e.key)
        && f.dnat()
        && (f.reply.src, f.reply.sport) == (Some(IpAddr::V4(e.to.0)), Some(e.to.1))
}

/// Pure: a flow on an added mapping's host port that does not lead to its new target
/// (DNAT'd to a former holder, or tracked before anyone mapped the port). Only flows whose
/// original destination is one of the host's own addresses count (checked by the caller):
/// a forwarded connection to some server's port of the same number is not the host's.
pub fn misses_added(f: &Flow, e: &Element) -> bool {
    hits(f, &e.key) && (f.reply.src, f.reply.sport) != (Some(IpAddr::V4(e.to.0)), Some(e.to.1))
}

/// Pure: whether `c` can have left flows behind that [`forget_flows`] must look for. A
/// removed mapping can (its flows still DNAT to the former target). An added UDP or SCTP
/// mapping can (datagrams that hit the port before keep their entry as long as they keep
/// coming); an added TCP one cannot: a former holder's flows went with its mapping, and a
/// connection attempt that found nothing was reset (its next SYN makes a new entry).
pub fn leaves_flows(c: &Change) -> bool {
    !c.remove.is_empty() || c.add.iter().any(|e| e.key.proto != "tcp")
}

/// Forgets the conntrack entries that `c` made stale (best effort: logged, not an error;
/// a kernel without conntrack has nothing to forget). One dump of the IPv4 table, when
/// [`leaves_flows`].
pub async fn forget_flows(host: &Netlink, c: &Change) {
    if !leaves_flows(c) {
        return;
    }
    let flows = match conntrack::flows(false) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "could not read conntrack entries");
            return;
        }
    };
    let mut local: HashMap<IpAddr, bool> = HashMap::new();
    let mut doomed = Vec::new();
    for f in flows {
        if c.remove.iter().any(|e| leads_to_removed(&f, e)) {
            doomed.push(f);
            continue;
        }
        if !c
            .add
            .iter()
            .any(|e| e.key.proto != "tcp" && misses_added(&f, e))
        {
            continue;
        }
        let Some(dst) = f.orig.dst else { continue };
        let is_local = match local.get(&dst) {
            Some(l) => *l,
            None => {
                let l = host.is_local(dst).await.unwrap_or(false);
                local.insert(dst, l);
                l
            }
        };
        if is_local {
            doomed.push(f);
        }
    }
    match conntrack::delete(&doomed) {
        Ok(n) if n > 0 => {
            tracing::info!(entries = n, "conntrack entries of moved host ports removed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not remove conntrack entries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::tests::{el, key};

    #[test]
    fn stale_flows_of_a_moved_port() {
        let mut f = Flow::default();
        f.proto = Some(17);
        f.orig.src = Some("203.0.113.2".parse().unwrap());
        f.orig.sport = Some(40000);
        f.orig.dst = Some("203.0.113.1".parse().unwrap());
        f.orig.dport = Some(5300);
        // DNAT'd to the former holder 10.88.0.2:53.
        f.reply.src = Some("10.88.0.2".parse().unwrap());
        f.reply.sport = Some(53);
        f.reply.dst = f.orig.src;
        f.reply.dport = f.orig.sport;
        let old = el(key("udp", 5300, None), "10.88.0.2", 53, None);
        let new = el(key("udp", 5300, None), "10.88.0.3", 53, None);
        assert!(leads_to_removed(&f, &old));
        assert!(!leads_to_removed(&f, &new));
        assert!(misses_added(&f, &new));
        assert!(!misses_added(&f, &old));
        // Another protocol, port or host address is not touched.
        assert!(!misses_added(
            &f,
            &el(key("tcp", 5300, None), "10.88.0.3", 53, None)
        ));
        assert!(!misses_added(
            &f,
            &el(key("udp", 5301, None), "10.88.0.3", 53, None)
        ));
        assert!(!misses_added(
            &f,
            &el(key("udp", 5300, Some("127.0.0.1")), "10.88.0.3", 53, None)
        ));
        // Tracked before anyone mapped the port (answered by the host itself): stale for a
        // new mapping, and not a DNAT'd flow of a removed one.
        let mut g = f.clone();
        g.reply.src = f.orig.dst;
        g.reply.sport = f.orig.dport;
        assert!(!g.dnat());
        assert!(misses_added(&g, &new));
        assert!(!leads_to_removed(&g, &old));
    }

    #[test]
    fn only_changes_that_can_leave_flows_cost_a_dump() {
        let tcp = el(key("tcp", 8080, None), "10.88.0.2", 80, None);
        let udp = el(key("udp", 53, None), "10.88.0.2", 53, None);
        let add = |v: Vec<Element>| Change {
            remove: Vec::new(),
            add: v,
        };
        assert!(!leaves_flows(&Change::default()));
        assert!(!leaves_flows(&add(vec![tcp.clone()])));
        assert!(leaves_flows(&add(vec![tcp.clone(), udp])));
        assert!(leaves_flows(&Change {
            remove: vec![tcp],
            add: Vec::new()
        }));
    }
}
