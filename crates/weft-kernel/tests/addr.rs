//! Interface addresses against a real kernel, in a throwaway namespace: add (IPv4 and IPv6),
//! read back per link, add again (no error, no duplicate), delete, delete what is gone,
//! and links that are not there.

mod common;

use common::TestNs;
use ipnet::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

/// Without the IPv6 link-local address the kernel adds by itself (when it likes): weft reads
/// those, never asks for them.
fn ours(mut addrs: Vec<IpNet>) -> Vec<IpNet> {
    addrs.retain(|n| !matches!(n, IpNet::V6(v6) if v6.addr().segments()[0] == 0xfe80));
    addrs.sort();
    addrs
}

#[test]
fn add_read_again_delete() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("addr");
    let (a, b) = t.veth("wka", "wkb");
    t.block_on(|nl| async move {
        nl.add_address(a, net("10.88.0.1/16"))
            .await
            .expect("add v4");
        nl.add_address(a, net("169.254.0.1/32"))
            .await
            .expect("add /32");
        nl.add_address(a, net("fd00:88::1/64"))
            .await
            .expect("add v6");
        nl.add_address(b, net("10.88.0.2/16"))
            .await
            .expect("add on b");
        // Again: the kernel has it, that is not an error, and it is there once.
        nl.add_address(a, net("10.88.0.1/16"))
            .await
            .expect("add again");

        assert_eq!(
            ours(nl.addresses(a).await.expect("list")),
            [
                net("10.88.0.1/16"),
                net("169.254.0.1/32"),
                net("fd00:88::1/64")
            ]
        );
        assert_eq!(
            ours(nl.addresses(b).await.expect("list b")),
            [net("10.88.0.2/16")]
        );

        // The same address with another prefix length is another address.
        nl.add_address(a, net("10.89.0.1/24")).await.expect("add");
        assert!(nl
            .addresses(a)
            .await
            .expect("list")
            .contains(&net("10.89.0.1/24")));

        assert!(nl
            .del_address(a, "10.88.0.1".parse().expect("ip"))
            .await
            .expect("delete"));
        assert!(!nl
            .del_address(a, "10.88.0.1".parse().expect("ip"))
            .await
            .expect("delete again"));
        assert!(nl
            .del_address(a, "fd00:88::1".parse().expect("ip"))
            .await
            .expect("delete v6"));
        let left = nl.addresses(a).await.expect("list");
        assert!(!left.contains(&net("10.88.0.1/16")) && !left.contains(&net("fd00:88::1/64")));
        assert!(
            left.contains(&net("169.254.0.1/32")),
            "the others stay: {left:?}"
        );
        // b's address is b's: deleting it from a is "not there".
        assert!(!nl
            .del_address(a, "10.88.0.2".parse().expect("ip"))
            .await
            .expect("not on a"));
        assert_eq!(
            ours(nl.addresses(b).await.expect("list b")),
            [net("10.88.0.2/16")]
        );
    });
    // What `ip` shows is what weft read.
    let shown = t.sh("ip -4 -o addr show dev wka");
    assert!(
        shown.contains("169.254.0.1/32") && !shown.contains("10.88.0.1/"),
        "{shown}"
    );
}

#[test]
fn addresses_of_a_link_that_is_not_there() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("addrnf");
    t.block_on(|nl| async move {
        assert_eq!(nl.addresses(999_999).await.expect("list"), []);
        assert!(!nl
            .del_address(999_999, "10.0.0.1".parse().expect("ip"))
            .await
            .expect("delete"));
        let e = nl
            .add_address(999_999, net("10.0.0.1/24"))
            .await
            .expect_err("no such link");
        assert!(e.is_not_found(), "{e}");
        assert!(
            e.to_string().contains("10.0.0.1/24"),
            "names the address: {e}"
        );
    });
}
