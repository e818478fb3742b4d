//! How weft names the kernel objects of an attachment, in both modes: the host end of its
//! veth (fits IFNAMSIZ), the alias that marks it as this network's (GC finds weft's links by
//! it), and MACs derived from addresses and names (stable across re-ADDs, so ARP caches are
//! never poisoned). Pure; names, not objects.

use sha2::{Digest, Sha256};
use weft_kernel::MacAddr;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// The host-side veth name of an attachment: `weft` + 10 hex digits of a hash of network,
/// container and interface (fits IFNAMSIZ).
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "weft{}",
        &hex(&hash(&[network, container_id, ifname]))[..10]
    )
}

/// The alias prefix marking the host-side links of `network`.
pub fn alias_prefix(network: &str) -> String {
    format!("weft:{network}:")
}

/// The alias of an attachment's host-side link: [`alias_prefix`] + container + interface.
pub fn host_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{}{container_id}:{ifname}", alias_prefix(network))
}

/// The second byte of the MAC [`MacAddr::from_ip`] gives a container's interface.
pub const CONTAINER_MAC_PREFIX: u8 = 0x58;
/// The second byte of the MAC [`MacAddr::from_ip`] gives the host end of an overlay veth.
pub const HOST_MAC_PREFIX: u8 = 0x59;

/// A stable MAC for a bridge, from its name.
pub fn bridge_mac(bridge: &str) -> MacAddr {
    let h = hash(&["bridge", bridge]);
    MacAddr::new([0x0a, 0x5a, h[0], h[1], h[2], h[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_fit_the_kernel() {
        let v = host_veth_name("net1", "abc", "eth0");
        assert!(v.starts_with("weft") && v.len() == 14, "{v}");
        assert_eq!(v, host_veth_name("net1", "abc", "eth0"));
        assert_ne!(v, host_veth_name("net1", "abc", "eth1"));
        assert_ne!(v, host_veth_name("net2", "abc", "eth0"));
        assert_eq!(host_alias("net1", "abc", "eth0"), "weft:net1:abc:eth0");
        assert!(host_alias("net1", "abc", "eth0").starts_with(&alias_prefix("net1")));
        assert_eq!(
            MacAddr::from_ip(CONTAINER_MAC_PREFIX, "10.88.0.5".parse().unwrap()),
            MacAddr::new([0x0a, 0x58, 10, 88, 0, 5])
        );
        assert_eq!(bridge_mac("weft0"), bridge_mac("weft0"));
        assert_ne!(bridge_mac("weft0"), bridge_mac("weft1"));
        assert_eq!(bridge_mac("weft0").octets()[..2], [0x0a, 0x5a]);
    }
}
