//! Routes against a real kernel, in a throwaway namespace: on-link and via-gateway routes
//! (IPv4 and IPv6) made, read back from the main table, replaced (idempotent; a new gateway
//! takes the old one's place), deleted, deleted again; the kernel's local lookup; and
//! routes whose device or gateway is not there.

mod common;

use std::net::IpAddr;

use common::TestNs;
use ipnet::IpNet;
use weft_kernel::route::Route;

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The routes of the main table to `dst`.
fn to<'a>(routes: &'a [Route], dst: &str) -> Vec<&'a Route> {
    routes.iter().filter(|r| r.dst == net(dst)).collect()
}

#[test]
fn replace_read_delete() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("route");
    let (a, _) = t.veth("wka", "wkb");
    t.block_on(|nl| async move {
        nl.add_address(a, net("10.88.0.1/24"))
            .await
            .expect("address");
        // On-link: a container's /32 through its veth (overlay mode).
        let host = Route {
            dst: net("10.255.1.2/32"),
            gateway: None,
            oif: Some(a),
            link_scope: true,
        };
        // Via a gateway: another cell's subnet (the agent's remote routes).
        let remote = Route {
            dst: net("10.255.2.0/24"),
            gateway: Some(ip("10.88.0.2")),
            oif: Some(a),
            link_scope: false,
        };
        nl.replace_route(&host).await.expect("on-link route");
        nl.replace_route(&remote).await.expect("gateway route");
        let routes = nl.routes(false).await.expect("list");
        assert_eq!(to(&routes, "10.255.1.2/32"), [&host]);
        assert_eq!(to(&routes, "10.255.2.0/24"), [&remote]);
        // The connected route of the address is read like any other.
        assert!(routes
            .iter()
            .any(|r| r.dst == net("10.88.0.0/24") && r.oif == Some(a) && r.link_scope));

        // Replacing with the same route changes nothing; with another gateway, replaces it.
        nl.replace_route(&remote).await.expect("again");
        assert_eq!(
            to(&nl.routes(false).await.expect("list"), "10.255.2.0/24"),
            [&remote]
        );
        let moved = Route {
            gateway: Some(ip("10.88.0.3")),
            ..remote.clone()
        };
        nl.replace_route(&moved).await.expect("moved");
        assert_eq!(
            to(&nl.routes(false).await.expect("list"), "10.255.2.0/24"),
            [&moved]
        );

        // IPv6 lives in its own listing.
        nl.add_address(a, net("fd00:88::1/64"))
            .await
            .expect("v6 address");
        let v6 = Route {
            dst: net("fd00:99::/64"),
            gateway: Some(ip("fd00:88::2")),
            oif: Some(a),
            link_scope: false,
        };
        nl.replace_route(&v6).await.expect("v6 route");
        assert_eq!(
            to(&nl.routes(true).await.expect("list v6"), "fd00:99::/64"),
            [&v6]
        );
        assert!(to(&nl.routes(false).await.expect("list v4"), "fd00:99::/64").is_empty());

        // Deleting: true, then false; the other routes stay.
        assert!(nl.del_route(&moved).await.expect("delete"));
        assert!(!nl.del_route(&moved).await.expect("delete again"));
        assert!(nl.del_route(&v6).await.expect("delete v6"));
        let left = nl.routes(false).await.expect("list");
        assert!(to(&left, "10.255.2.0/24").is_empty());
        assert_eq!(to(&left, "10.255.1.2/32"), [&host]);

        // The kernel's own lookup: the address is ours, the neighbour's is not, nor is an
        // address nothing routes to.
        assert!(nl.is_local(ip("10.88.0.1")).await.expect("lookup"));
        assert!(!nl.is_local(ip("10.88.0.2")).await.expect("lookup"));
        assert!(!nl.is_local(ip("192.0.2.1")).await.expect("lookup"));
    });
    // What `ip route` shows is what weft read.
    let shown = t.sh("ip route show 10.255.1.2/32");
    assert!(
        shown.contains("dev wka") && shown.contains("scope link"),
        "{shown}"
    );
}

#[test]
fn routes_that_cannot_be_or_are_not_there() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("routenf");
    t.block_on(|nl| async move {
        let r = Route {
            dst: net("10.255.9.0/24"),
            gateway: None,
            oif: Some(999_999),
            link_scope: true,
        };
        let e = nl.replace_route(&r).await.expect_err("no such device");
        assert!(e.is_not_found(), "{e}");
        assert!(
            e.to_string().contains("10.255.9.0/24"),
            "names the route: {e}"
        );
        assert!(!nl.del_route(&r).await.expect("delete"));
        // A gateway nothing leads to is refused, and nothing is left behind.
        let r = Route {
            dst: net("10.255.9.0/24"),
            gateway: Some(ip("192.0.2.1")),
            oif: None,
            link_scope: false,
        };
        let e = nl.replace_route(&r).await.expect_err("unreachable gateway");
        assert!(e.errno().is_some(), "{e}");
        assert!(to(&nl.routes(false).await.expect("list"), "10.255.9.0/24").is_empty());
        // A destination with host bits set is refused, not rounded to its network.
        let r = Route {
            dst: IpNet::V4("10.255.9.1/24".parse().expect("net")),
            gateway: None,
            oif: None,
            link_scope: false,
        };
        let e = nl.replace_route(&r).await.expect_err("host bits");
        assert!(e.to_string().contains("10.255.9.1/24"), "{e}");
        assert!(to(&nl.routes(false).await.expect("list"), "10.255.9.0/24").is_empty());
    });
}
