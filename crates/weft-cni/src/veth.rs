//! The container's veth pair, shared by both modes: the peer is created directly inside the
//! container's namespace (no move afterwards); ADD run again keeps an existing pair; a stale
//! host end whose container end is gone is replaced.

use weft_kernel::link::{Link, VethEnd};
use weft_kernel::netns::Netns;
use weft_kernel::Netlink;

use crate::spec::{code, CniError};

/// Makes sure the pair `local` (host) / `peer` (container, in `ns`) exists and returns both
/// links as the kernel has them. `cont` is a socket in `ns`; `netns_label` names it in errors.
pub async fn ensure_pair(
    host: &Netlink,
    cont: &Netlink,
    ns: &Netns,
    netns_label: &str,
    local: &VethEnd<'_>,
    peer: &VethEnd<'_>,
) -> Result<(Link, Link), CniError> {
    // The common case first: nothing there yet, create the pair (one round trip).
    let created = match host.add_veth(local, peer, ns).await {
        Ok(()) => true,
        Err(e) if e.is_exists() => false,
        Err(e) => return Err(e.into()),
    };
    let existing_host = if created {
        None
    } else {
        host.link_by_name(local.name).await?
    };
    let existing_cont = if created {
        None
    } else {
        cont.link_by_name(peer.name).await?
    };
    match (&existing_host, &existing_cont) {
        _ if created => {}
        (Some(_), Some(_)) => {} // ADD again for the same attachment: keep the pair.
        (None, Some(_)) => {
            return Err(CniError::new(
                code::KERNEL,
                format!(
                    "an interface named {} already exists in {netns_label}",
                    peer.name
                ),
            ))
        }
        (Some(_), None) => {
            // A stale host end (its container end was moved or renamed): replace the pair.
            host.del_link_by_name(local.name).await?;
            host.add_veth(local, peer, ns).await?;
        }
        (None, None) => host.add_veth(local, peer, ns).await?,
    }
    let hv = host.link_by_name(local.name).await?.ok_or_else(|| {
        CniError::new(
            code::KERNEL,
            format!("{} vanished after creation", local.name),
        )
    })?;
    if created {
        // The host end's IFLA_LINK is the peer's index in the container's namespace: no
        // second lookup for a pair we just made (it is down, as created).
        if let Some(index) = hv.peer_index {
            let cl = Link {
                index,
                name: peer.name.to_string(),
                kind: Some("veth".into()),
                mac: peer.mac,
                mtu: peer.mtu.unwrap_or(hv.mtu),
                up: peer.up,
                master: None,
                peer_index: Some(hv.index),
                alias: None,
            };
            return Ok((hv, cl));
        }
    }
    let cl = cont.link_by_name(peer.name).await?.ok_or_else(|| {
        CniError::new(
            code::KERNEL,
            format!("{} vanished in {netns_label}", peer.name),
        )
    })?;
    Ok((hv, cl))
}
