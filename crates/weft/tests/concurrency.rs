//! 100 ADDs at once into 100 namespaces: no duplicate address, all reachable; then 100 DELs
//! at once: nothing left.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use serde_json::json;

#[test]
fn hundred_parallel_adds_and_dels() {
    const N: usize = 100;
    let net = Arc::new(Net::new(
        "par",
        json!({ "cniVersion": "1.1.0", "bridge": "wbr0", "ipMasq": true, "ipam": { "subnet": "10.220.0.0/16" } }),
    ));
    let cs: Arc<Vec<Ns>> = Arc::new((0..N).map(|_| Ns::new("c")).collect());

    let adds: Vec<_> = (0..N)
        .map(|i| {
            let (net, cs) = (net.clone(), cs.clone());
            std::thread::spawn(move || {
                let r = net.call("ADD", &format!("ctr{i}"), &cs[i], "eth0");
                assert!(r.ok, "ADD ctr{i}: {:?} {}", r.json, r.stderr);
                result_ip(&r.json)
            })
        })
        .collect();
    let ips: Vec<String> = adds
        .into_iter()
        .map(|h| h.join().expect("ADD thread"))
        .collect();
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

    let dels: Vec<_> = (0..N)
        .map(|i| {
            let (net, cs) = (net.clone(), cs.clone());
            std::thread::spawn(move || {
                let r = net.call("DEL", &format!("ctr{i}"), &cs[i], "eth0");
                assert!(r.ok, "DEL ctr{i}: {:?} {}", r.json, r.stderr);
            })
        })
        .collect();
    for h in dels {
        h.join().expect("DEL thread");
    }
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
