//! Links against a real kernel, in throwaway namespaces: veth pairs (the peer made directly in
//! another namespace), bridges (taken when there, a non-bridge of the name refused), VXLAN
//! devices, what is read back of them (kind, MAC, MTU, alias, state, master, peer), deletion,
//! and links that are not there.

mod common;

use common::TestNs;
use weft_kernel::link::{VethEnd, VxlanSpec};
use weft_kernel::MacAddr;

fn mac(s: &str) -> MacAddr {
    s.parse().expect("mac")
}

#[test]
fn veth_pair_with_its_peer_made_in_another_namespace() {
    if common::skip() {
        return;
    }
    let host = TestNs::new("lkh");
    let cont = TestNs::new("lkc");
    let (hmac, cmac) = (mac("0a:59:0a:00:00:02"), mac("0a:58:0a:00:00:02"));
    let local = VethEnd {
        mac: Some(hmac),
        mtu: Some(1400),
        alias: Some("weft:net1:c1:eth0"),
        arp_off: true,
        ..VethEnd::new("wkveth0")
    };
    let peer = VethEnd {
        mac: Some(cmac),
        mtu: Some(1400),
        ..VethEnd::new("eth0")
    };
    let cns = &cont.ns;
    let (h, id, again) = host.block_on(|nl| async move {
        nl.add_veth(&local, &peer, cns).await.expect("add veth");
        let h = nl
            .link_by_name("wkveth0")
            .await
            .expect("get")
            .expect("host end");
        let id = nl.nsid_of(cns).await.expect("nsid");
        // Created again: the kernel says it exists; judging that is the caller's.
        let again = nl.add_veth(&local, &peer, cns).await.expect_err("twice");
        (h, id, again)
    });
    assert!(again.is_exists(), "{again}");
    assert_eq!(h.kind.as_deref(), Some("veth"));
    assert_eq!(h.mac, Some(hmac));
    assert_eq!(h.mtu, 1400);
    assert_eq!(h.alias.as_deref(), Some("weft:net1:c1:eth0"));
    assert!(!h.up, "both ends start down unless asked");
    assert_eq!(h.master, None);
    assert!(id.is_some(), "the peer's namespace got an id");
    assert_eq!(h.link_netnsid, id, "the peer lives in the other namespace");

    let c = cont.block_on(|nl| async move {
        assert!(nl.link_by_name("wkveth0").await.expect("get").is_none());
        let c = nl
            .link_by_name("eth0")
            .await
            .expect("get")
            .expect("peer end");
        assert!(!c.up);
        nl.set_up_by_name("eth0").await.expect("up");
        nl.link_by_index(c.index)
            .await
            .expect("get")
            .expect("peer end")
    });
    assert_eq!(c.kind.as_deref(), Some("veth"));
    assert_eq!(c.mac, Some(cmac));
    assert_eq!(c.mtu, 1400);
    assert!(c.up);
    assert_eq!(c.peer_index, Some(h.index));
    assert!(host
        .block_on(|nl| async move { nl.link_by_name("eth0").await.expect("get") })
        .is_none());
    // ARP off is the kernel's NOARP flag, as `ip link` shows it.
    assert!(host.sh("ip link show wkveth0").contains("NOARP"));

    // Up, MTU: read back as set.
    let h2 = host.block_on(|nl| async move {
        nl.set_up(h.index).await.expect("up");
        nl.set_mtu(h.index, 1350).await.expect("mtu");
        nl.set_alias(h.index, "weft:other").await.expect("alias");
        nl.link_by_index(h.index)
            .await
            .expect("get")
            .expect("there")
    });
    assert!(h2.up);
    assert_eq!((h2.mtu, h2.alias.as_deref()), (1350, Some("weft:other")));

    // Deleting one end removes the pair; deleting it again is `false`, not an error.
    let (first, second, by_index) = host.block_on(|nl| async move {
        (
            nl.del_link_by_name("wkveth0").await.expect("delete"),
            nl.del_link_by_name("wkveth0").await.expect("delete again"),
            nl.link_by_index(h.index).await.expect("get"),
        )
    });
    assert!(first && !second);
    assert_eq!(by_index, None);
    assert!(cont
        .block_on(|nl| async move { nl.link_by_name("eth0").await.expect("get") })
        .is_none());
}

#[test]
fn a_bridge_is_made_once_and_taken_when_there() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("lkbr");
    let ns = &t.ns;
    let gw = mac("0a:5a:01:02:03:04");
    let (br, again, port, other, not_bridge) = t.block_on(|nl| async move {
        let br = nl
            .ensure_bridge("wkbr0", Some(1450), Some(gw))
            .await
            .expect("bridge");
        // Asked again (with other parameters): the same bridge, left as it is.
        let again = nl
            .ensure_bridge("wkbr0", Some(9000), Some(mac("0a:5a:ff:ff:ff:ff")))
            .await
            .expect("bridge again");
        // A port enslaved in the create request, another afterwards.
        let port = VethEnd {
            master: Some(br.index),
            up: true,
            ..VethEnd::new("wkp0")
        };
        nl.add_veth(&port, &VethEnd::new("wkp0b"), ns)
            .await
            .expect("port");
        nl.add_veth(&VethEnd::new("wkp1"), &VethEnd::new("wkp1b"), ns)
            .await
            .expect("veth");
        let other = nl.link_by_name("wkp1").await.expect("get").expect("wkp1");
        nl.set_master(other.index, br.index).await.expect("enslave");
        nl.set_hairpin(other.index, true).await.expect("hairpin");
        let port = nl.link_by_name("wkp0").await.expect("get").expect("wkp0");
        let other = nl
            .link_by_index(other.index)
            .await
            .expect("get")
            .expect("wkp1");
        let not_bridge = nl
            .ensure_bridge("wkp1", None, None)
            .await
            .expect_err("a veth is no bridge");
        (br, again, port, other, not_bridge)
    });
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up, "made up");
    assert_eq!((br.mtu, br.mac), (1450, Some(gw)));
    assert_eq!(again, br);
    assert_eq!(port.master, Some(br.index));
    assert_eq!(other.master, Some(br.index));
    assert!(
        not_bridge.to_string().contains("not a bridge"),
        "{not_bridge}"
    );
    assert!(t.sh("ip -d link show wkp1").contains("hairpin on"));
    assert!(t.sh("ip -d link show wkp0").contains("hairpin off"));
    // A bridge taken while down is brought up.
    t.sh("ip link set wkbr0 down");
    let up = t.block_on(|nl| async move {
        nl.ensure_bridge("wkbr0", None, None)
            .await
            .expect("bridge")
            .index
    });
    assert_eq!(up, br.index);
    assert!(t.sh("ip link show wkbr0").contains(",UP"));
}

#[test]
fn a_vxlan_device_carries_its_fingerprint() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("lkvx");
    let spec = VxlanSpec {
        name: "wkvtep".into(),
        vni: 42,
        port: 4790,
        local: "198.18.0.1".parse().expect("ip"),
        dev: None,
        mtu: 1450,
        mac: mac("ee:ee:0a:ff:01:00"),
    };
    let s = &spec;
    let (l, port, twice, not_vxlan) = t.block_on(|nl| async move {
        nl.add_vxlan(s).await.expect("vxlan");
        let l = nl.link_by_name("wkvtep").await.expect("get").expect("vtep");
        let port = nl.vxlan_port("wkvtep").await.expect("port");
        let twice = nl.add_vxlan(s).await.expect_err("twice");
        let not_vxlan = nl.vxlan_port("lo").await.expect("lo");
        (l, port, twice, not_vxlan)
    });
    assert_eq!(l.kind.as_deref(), Some("vxlan"));
    assert_eq!((l.mac, l.mtu, l.up), (Some(spec.mac), 1450, false));
    assert_eq!(l.alias.as_deref(), Some(spec.fingerprint().as_str()));
    assert_eq!(port, Some(4790));
    assert!(twice.is_exists(), "{twice}");
    assert_eq!(not_vxlan, None);
    let d = t.sh("ip -d link show wkvtep");
    assert!(
        d.contains("vxlan id 42") && d.contains("gbp") && d.contains("nolearning"),
        "{d}"
    );
    assert!(t.block_on(|nl| async move { nl.del_link_by_name("wkvtep").await.expect("del") }));
}

#[test]
fn links_that_are_not_there() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("lknf");
    t.block_on(|nl| async move {
        assert_eq!(nl.link_by_name("wknope").await.expect("get"), None);
        assert_eq!(nl.link_by_index(999_999).await.expect("get"), None);
        assert_eq!(nl.vxlan_port("wknope").await.expect("port"), None);
        assert!(!nl.del_link_by_name("wknope").await.expect("delete"));
        let e = nl.set_up_by_name("wknope").await.expect_err("up");
        assert!(e.to_string().contains("wknope"), "{e}");
        let e = nl.del_link(999_999).await.expect_err("delete by index");
        assert!(e.is_not_found(), "{e}");
        let e = nl.set_mtu(999_999, 1400).await.expect_err("mtu");
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("#999999"), "names the link: {e}");
        // Only what the namespace has: lo, nothing of the host's.
        let names: Vec<String> = nl
            .links()
            .await
            .expect("links")
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["lo"]);
    });
}
