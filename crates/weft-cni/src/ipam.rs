//! Address allocation inside the plugin: one address per range set, round robin from where
//! the last allocation stopped (as host-local does), never the gateway, never twice.

use std::net::IpAddr;

use crate::config::{ip_from_u128, ip_u128, Range};
use crate::spec::{code, CniError};
use crate::store::{Lock, NetworkStore, Owner};

/// One allocated address and the range it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub range: Range,
}

/// Allocates one address from each range set for `owner`. `requested` addresses are taken
/// where they fall into a set. On error nothing stays reserved.
pub fn allocate(
    store: &NetworkStore,
    lock: &Lock,
    owner: &Owner,
    range_sets: &[Vec<Range>],
    requested: &[IpAddr],
) -> Result<Vec<Allocation>, CniError> {
    let mut out: Vec<Allocation> = Vec::new();
    let result = (|| {
        for r in requested {
            if !range_sets.iter().flatten().any(|rg| rg.contains(*r)) {
                return Err(CniError::new(
                    code::ADDRESS_UNAVAILABLE,
                    format!("requested address {r} is not in any configured range"),
                ));
            }
        }
        for (i, set) in range_sets.iter().enumerate() {
            if let Some(ip) = requested
                .iter()
                .find(|ip| set.iter().any(|r| r.contains(**ip)))
            {
                let range = set
                    .iter()
                    .find(|r| r.contains(*ip))
                    .cloned()
                    .ok_or_else(|| {
                        CniError::new(
                            code::ADDRESS_UNAVAILABLE,
                            format!("requested address {ip} is not in range set {i}"),
                        )
                    })?;
                if *ip == range.gateway {
                    return Err(CniError::new(
                        code::ADDRESS_UNAVAILABLE,
                        format!("requested address {ip} is the gateway"),
                    ));
                }
                if !store.reserve(lock, *ip, owner)? {
                    let holder = store
                        .holder(*ip)
                        .map(|o| o.container_id)
                        .unwrap_or_default();
                    return Err(CniError::new(
                        code::ADDRESS_UNAVAILABLE,
                        format!(
                            "requested address {ip} is already allocated to container {holder}"
                        ),
                    ));
                }
                out.push(Allocation { ip: *ip, range });
                continue;
            }
            out.push(next_free(store, lock, owner, i, set)?);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(out),
        Err(e) => {
            for a in &out {
                let _ = store.release(lock, a.ip, owner);
            }
            Err(e)
        }
    }
}

fn next_free(
    store: &NetworkStore,
    lock: &Lock,
    owner: &Owner,
    set_idx: usize,
    set: &[Range],
) -> Result<Allocation, CniError> {
    let total: u128 = set
        .iter()
        .map(|r| ip_u128(r.end) - ip_u128(r.start) + 1)
        .sum();
    // Position just after the last reserved address, if it is still in the set.
    let start_pos = store
        .last_reserved(set_idx)
        .and_then(|last| {
            let mut pos = 0u128;
            for r in set {
                if r.contains(last) {
                    return Some(pos + ip_u128(last) - ip_u128(r.start) + 1);
                }
                pos += ip_u128(r.end) - ip_u128(r.start) + 1;
            }
            None
        })
        .unwrap_or(0);
    let at = |pos: u128| -> (IpAddr, &Range) {
        let mut p = pos % total;
        for r in set {
            let n = ip_u128(r.end) - ip_u128(r.start) + 1;
            if p < n {
                return (ip_from_u128(ip_u128(r.start) + p, r.start.is_ipv6()), r);
            }
            p -= n;
        }
        (set[0].start, &set[0])
    };
    for k in 0..total {
        let (ip, range) = at(start_pos + k);
        if ip == range.gateway {
            continue;
        }
        if store.reserve(lock, ip, owner)? {
            store.set_last_reserved(lock, set_idx, ip)?;
            return Ok(Allocation {
                ip,
                range: range.clone(),
            });
        }
    }
    let desc: Vec<String> = set
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect();
    Err(CniError::new(
        code::RANGE_EXHAUSTED,
        format!(
            "no free address left in range set {set_idx} ({})",
            desc.join(", ")
        ),
    ))
}

/// Free addresses left in a range set (for STATUS).
pub fn free_count(store: &NetworkStore, set: &[Range]) -> Result<u128, CniError> {
    let total: u128 = set
        .iter()
        .map(|r| ip_u128(r.end) - ip_u128(r.start) + 1)
        .sum();
    let gateways = set.iter().filter(|r| r.contains(r.gateway)).count() as u128;
    let used = store
        .allocations()?
        .iter()
        .filter(|(ip, _)| set.iter().any(|r| r.contains(*ip)))
        .count() as u128;
    Ok(total.saturating_sub(gateways).saturating_sub(used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_netconf, NetworkConf};
    use std::collections::{BTreeMap, HashSet};

    fn sets(json_ipam: &str) -> Vec<Vec<Range>> {
        let j =
            format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"weft-cni","ipam":{json_ipam}}}"#);
        NetworkConf::from_netconf(parse_netconf(j.as_bytes()).unwrap(), &BTreeMap::new())
            .unwrap()
            .range_sets
    }

    fn tmp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "weft-ipam-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn allocates_distinct_skips_gateway_and_exhausts() {
        let d = tmp();
        let s = NetworkStore::open(&d, "n").unwrap();
        let rs = sets(r#"{"subnet":"10.9.0.0/29"}"#); // usable .1-.6, gateway .1
        let l = s.lock().unwrap();
        let mut seen = HashSet::new();
        for i in 0..5 {
            let a = allocate(&s, &l, &Owner::new(&format!("c{i}"), "eth0"), &rs, &[]).unwrap();
            assert_ne!(a[0].ip.to_string(), "10.9.0.1");
            assert!(seen.insert(a[0].ip));
        }
        let e = allocate(&s, &l, &Owner::new("c9", "eth0"), &rs, &[]).unwrap_err();
        assert_eq!(e.code, code::RANGE_EXHAUSTED);
        assert_eq!(free_count(&s, &rs[0]).unwrap(), 0);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn round_robin_does_not_reuse_immediately() {
        let d = tmp();
        let s = NetworkStore::open(&d, "n").unwrap();
        let rs = sets(r#"{"subnet":"10.9.0.0/24"}"#);
        let l = s.lock().unwrap();
        let o = Owner::new("c", "eth0");
        let a = allocate(&s, &l, &o, &rs, &[]).unwrap();
        s.release(&l, a[0].ip, &o).unwrap();
        let b = allocate(&s, &l, &o, &rs, &[]).unwrap();
        assert_ne!(a[0].ip, b[0].ip);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn requested_and_dual_stack() {
        let d = tmp();
        let s = NetworkStore::open(&d, "n").unwrap();
        let rs = sets(r#"{"ranges":[[{"subnet":"10.9.0.0/24"}],[{"subnet":"fd00:9::/64"}]]}"#);
        let l = s.lock().unwrap();
        let want: IpAddr = "10.9.0.77".parse().unwrap();
        let a = allocate(&s, &l, &Owner::new("a", "eth0"), &rs, &[want]).unwrap();
        assert_eq!(a[0].ip, want);
        assert!(a[1].ip.is_ipv6());
        let e = allocate(&s, &l, &Owner::new("b", "eth0"), &rs, &[want]).unwrap_err();
        assert_eq!(e.code, code::ADDRESS_UNAVAILABLE);
        assert!(e.msg.contains("container a"));
        // The failed call left nothing behind.
        assert_eq!(s.allocations().unwrap().len(), 2);
        let e = allocate(
            &s,
            &l,
            &Owner::new("b", "eth0"),
            &rs,
            &["10.10.0.1".parse().unwrap()],
        )
        .unwrap_err();
        assert!(e.msg.contains("not in any configured range"));
        std::fs::remove_dir_all(d).unwrap();
    }
}
