//! The VTEP (seed 000 steps 4-5 and 9): a VXLAN device whose address is the host's subnet's
//! first address with the overlay's prefix, so the whole overlay is routed to it; GBP on.

use ipnet::{IpNet, Ipv4Net};
use weft_kernel::link::{Link, VxlanSpec};
use weft_kernel::Netlink;

/// VXLAN adds 50 bytes (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The VTEP's overlay address: the host subnet's first address, with the overlay's prefix.
pub fn vtep_address(subnet: Ipv4Net, overlay: Ipv4Net) -> IpNet {
    IpNet::V4(Ipv4Net::new(subnet.network(), overlay.prefix_len()).unwrap_or(subnet))
}

/// Makes the kernel's VTEP match `spec` and carry `addr`. An existing device with the same
/// configuration is kept as it is (flows through it go on); a different one is recreated.
pub async fn ensure(nl: &Netlink, spec: &VxlanSpec, addr: IpNet) -> weft_kernel::Result<Link> {
    let existing = nl.link_by_name(&spec.name).await?;
    let link = match existing {
        Some(l)
            if l.kind.as_deref() == Some("vxlan")
                && l.alias.as_deref() == Some(&spec.fingerprint()) =>
        {
            l
        }
        Some(l) => {
            tracing::warn!(vtep = %spec.name, was = ?l.alias, "VTEP configuration changed; recreating it");
            nl.del_link(l.index).await?;
            create(nl, spec).await?
        }
        None => create(nl, spec).await?,
    };
    if link.mtu != spec.mtu {
        nl.set_mtu(link.index, spec.mtu).await?;
    }
    // Only this host's current address: a lease that moved leaves an old one behind.
    for a in nl.addresses(link.index).await? {
        if a != addr && !matches!(a, IpNet::V6(_)) {
            nl.del_address(link.index, a.addr()).await?;
        }
    }
    nl.add_address(link.index, addr).await?;
    if !link.up {
        nl.set_up(link.index).await?;
    }
    Ok(link)
}

async fn create(nl: &Netlink, spec: &VxlanSpec) -> weft_kernel::Result<Link> {
    match nl.add_vxlan(spec).await {
        Ok(()) => {}
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(e),
    }
    nl.link_by_name(&spec.name).await?.ok_or_else(|| {
        weft_kernel::Error::Invalid(format!("{} vanished after creation", spec.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_takes_the_overlay_prefix() {
        let a = vtep_address(
            "10.255.3.0/24".parse().unwrap(),
            "10.255.0.0/16".parse().unwrap(),
        );
        assert_eq!(a.to_string(), "10.255.3.0/16");
    }
}
