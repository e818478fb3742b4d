//! 200 ADDs at once into 200 namespaces: no duplicate address, all reachable; then 200 DELs
//! at once: nothing left. The same across two overlay networks that share the host's lease.

#[path = "../../weft/tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use serde_json::json;

/// `f(i)` for i in 0..n, each on a thread of its own, all started before any is waited for;
/// the results in order.
fn at_once<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || f(i))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a call's thread"))
        .collect()
}

#[test]
fn two_hundred_parallel_adds_and_dels() {
    const N: usize = 200;
    let net = Arc::new(Net::new(
        "par",
        json!({ "cniVersion": "1.1.0", "bridge": "wbr0", "ipMasq": true, "ipam": { "subnet": "10.220.0.0/16" } }),
    ));
    let cs: Arc<Vec<Ns>> = Arc::new((0..N).map(|_| Ns::new("c")).collect());

    let ips: Vec<String> = at_once(N, {
        let (net, cs) = (net.clone(), cs.clone());
        move |i| {
            let r = net.call("ADD", &format!("ctr{i}"), &cs[i], "eth0");
            assert!(r.ok, "ADD ctr{i}: {:?} {}", r.json, r.stderr);
            result_ip(&r.json)
        }
    });
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), N, "duplicate addresses handed out: {ips:?}");
    assert_eq!(net.allocated().len(), N);
    assert_eq!(net.host_links().len(), N);

    // Every container is reachable from the host, and the address is really on its eth0.
    for (i, ip) in ips.iter().enumerate() {
        assert!(cs[i]
            .ok("ip -o -4 addr show dev eth0")
            .contains(&format!("{ip}/16")));
        assert!(ping_ok(&net.host, ip), "container {i} at {ip} unreachable");
    }
    // And containers reach each other across the bridge.
    assert!(ping_ok(&cs[0], &ips[N - 1]));

    at_once(N, {
        let (net, cs) = (net.clone(), cs.clone());
        move |i| {
            let r = net.call("DEL", &format!("ctr{i}"), &cs[i], "eth0");
            assert!(r.ok, "DEL ctr{i}: {:?} {}", r.json, r.stderr);
        }
    });
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(net.host_links().is_empty(), "{:?}", net.host_links());
    let records = std::fs::read_dir(net.state_dir().join("attachments"))
        .unwrap()
        .count();
    assert_eq!(records, 0);
    for c in cs.iter() {
        assert_eq!(
            c.ok("ip -o link show").lines().count(),
            1,
            "only lo left in {}",
            c.name
        );
    }
}

/// Two overlay networks on one host take their addresses from the same lease: 100 ADDs into
/// each, all 200 at once, hand out 200 different addresses (issue 14: each network used to
/// allocate on its own and both handed out the lease's first addresses).
#[test]
fn two_overlay_networks_sharing_a_lease_never_share_an_address() {
    const PER_NET: usize = 100;
    let net = Arc::new(Net::overlay("ovpar", "10.255.40.0/24"));
    let lease = net.conf["leaseFile"].clone();
    let other = Arc::new(net.sibling(
        "second",
        json!({ "cniVersion": "1.1.0", "mode": "overlay", "leaseFile": lease }),
    ));
    let cs: Arc<Vec<Ns>> = Arc::new((0..2 * PER_NET).map(|_| Ns::new("c")).collect());
    let ips: Vec<String> = at_once(2 * PER_NET, {
        let (net, other, cs) = (net.clone(), other.clone(), cs.clone());
        move |i| {
            let conf = if i % 2 == 0 { &net.conf } else { &*other };
            let r = net.call_conf("ADD", &format!("ctr{i}"), &cs[i].path(), "eth0", conf);
            assert!(r.ok, "ADD ctr{i}: {:?} {}", r.json, r.stderr);
            result_ip(&r.json)
        }
    });
    let distinct: HashSet<&String> = ips.iter().collect();
    let mut dup: Vec<&String> = ips
        .iter()
        .filter(|ip| ips.iter().filter(|o| o == ip).count() > 1)
        .collect();
    dup.sort();
    dup.dedup();
    eprintln!(
        "attack: 2 x {PER_NET} overlay ADDs on one lease: {} distinct addresses, {} handed out twice (first: {:?})",
        distinct.len(),
        dup.len(),
        dup.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(
        distinct.len(),
        2 * PER_NET,
        "duplicate addresses handed out: {dup:?}"
    );
    for (i, ip) in ips.iter().enumerate().step_by(17) {
        assert!(ping_ok(&net.host, ip), "container {i} at {ip} unreachable");
    }
    for i in 0..2 * PER_NET {
        let conf = if i % 2 == 0 { &net.conf } else { &*other };
        let r = net.call_conf("DEL", &format!("ctr{i}"), &cs[i].path(), "eth0", conf);
        assert!(r.ok, "DEL ctr{i}: {:?}", r.json);
    }
    assert!(net.host_links().is_empty(), "{:?}", net.host_links());
}
