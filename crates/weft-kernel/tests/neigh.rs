//! Neighbours and FDB entries against a real kernel, in a throwaway namespace: permanent
//! neighbour entries (IPv4 and IPv6) made, read back, replaced with another MAC (one entry,
//! the new MAC), deleted, deleted again; FDB entries of a VXLAN device likewise; and links
//! that are not there.

mod common;

use std::net::IpAddr;

use common::TestNs;
use weft_kernel::link::VxlanSpec;
use weft_kernel::neigh::{FdbEntry, Neighbour};
use weft_kernel::MacAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("mac")
}

#[test]
fn permanent_neighbours() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("neigh");
    let (a, b) = t.veth("wka", "wkb");
    t.block_on(|nl| async move {
        let n = Neighbour {
            index: a,
            ip: ip("10.255.1.2"),
            mac: mac("0a:58:0a:ff:01:02"),
        };
        let n6 = Neighbour {
            index: a,
            ip: ip("fd00::2"),
            mac: mac("0a:58:00:00:00:02"),
        };
        nl.replace_neighbour(&n).await.expect("add");
        nl.replace_neighbour(&n6).await.expect("add v6");
        nl.replace_neighbour(&n).await.expect("again");
        let mut got = nl.neighbours(a).await.expect("list");
        got.sort_by_key(|n| n.ip);
        assert_eq!(got, [n.clone(), n6.clone()]);
        assert_eq!(nl.neighbours(b).await.expect("list b"), []);

        // Another MAC for the same address replaces the entry.
        let moved = Neighbour {
            mac: mac("0a:58:0a:ff:01:99"),
            ..n.clone()
        };
        nl.replace_neighbour(&moved).await.expect("replace");
        let got = nl.neighbours(a).await.expect("list");
        assert_eq!(
            got.iter().filter(|x| x.ip == n.ip).collect::<Vec<_>>(),
            [&moved]
        );

        assert!(nl.del_neighbour(&moved).await.expect("delete"));
        assert!(!nl.del_neighbour(&moved).await.expect("delete again"));
        assert_eq!(nl.neighbours(a).await.expect("list"), [n6]);
    });
    // A user sees it as weft left it: permanent.
    let shown = t.sh("ip -6 neigh show dev wka");
    assert!(
        shown.contains("fd00::2") && shown.contains("PERMANENT"),
        "{shown}"
    );
}

#[test]
fn fdb_entries_of_a_vxlan_device() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("fdb");
    let spec = VxlanSpec {
        name: "wkvtep".into(),
        vni: 7,
        port: 4789,
        local: "198.18.0.1".parse().expect("ip"),
        dev: None,
        mtu: 1450,
        mac: mac("ee:ee:0a:ff:01:00"),
    };
    let s = &spec;
    t.block_on(|nl| async move {
        nl.add_vxlan(s).await.expect("vxlan");
        let v = nl
            .link_by_name("wkvtep")
            .await
            .expect("get")
            .expect("vtep")
            .index;
        let e2 = FdbEntry {
            mac: mac("ee:ee:0a:ff:02:00"),
            dst: ip("198.18.0.2"),
        };
        let e3 = FdbEntry {
            mac: mac("ee:ee:0a:ff:03:00"),
            dst: ip("198.18.0.3"),
        };
        nl.replace_fdb(v, e2.mac, e2.dst).await.expect("add");
        nl.replace_fdb(v, e3.mac, e3.dst).await.expect("add");
        nl.replace_fdb(v, e2.mac, e2.dst).await.expect("again");
        let mut got = nl.fdb_entries(v).await.expect("list");
        got.sort_by_key(|e| e.mac);
        assert_eq!(got, [e2.clone(), e3.clone()]);

        // The cell moved to another underlay address: one entry, the new destination.
        let moved = FdbEntry {
            dst: ip("198.18.0.22"),
            ..e2.clone()
        };
        nl.replace_fdb(v, moved.mac, moved.dst)
            .await
            .expect("replace");
        let got = nl.fdb_entries(v).await.expect("list");
        assert_eq!(
            got.iter().filter(|e| e.mac == e2.mac).collect::<Vec<_>>(),
            [&moved]
        );

        assert!(nl.del_fdb(v, &moved).await.expect("delete"));
        assert!(!nl.del_fdb(v, &moved).await.expect("delete again"));
        assert_eq!(nl.fdb_entries(v).await.expect("list"), [e3]);
    });
    let shown = t.sh("bridge fdb show dev wkvtep");
    assert!(
        shown.contains("ee:ee:0a:ff:03:00 dst 198.18.0.3") && shown.contains("permanent"),
        "{shown}"
    );
}

#[test]
fn neighbours_of_links_that_are_not_there() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("neighnf");
    t.block_on(|nl| async move {
        let n = Neighbour {
            index: 999_999,
            ip: ip("10.255.1.2"),
            mac: mac("0a:58:0a:ff:01:02"),
        };
        assert_eq!(nl.neighbours(999_999).await.expect("list"), []);
        let e = nl.replace_neighbour(&n).await.expect_err("no such link");
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("10.255.1.2"), "names the entry: {e}");
        assert!(!nl.del_neighbour(&n).await.expect("delete"));
        let e = FdbEntry {
            mac: n.mac,
            dst: ip("198.18.0.2"),
        };
        assert_eq!(nl.fdb_entries(999_999).await.expect("list"), []);
        assert!(nl.replace_fdb(999_999, e.mac, e.dst).await.is_err());
        assert!(!nl.del_fdb(999_999, &e).await.expect("delete"));
    });
}
