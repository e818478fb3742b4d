//! The container's veth pair, shared by both modes: the peer is created directly inside the
//! container's namespace (no move afterwards); removing the host end removes both. ADD run again keeps an existing pair only if
//! it really is the pair: the host end's peer is the interface of that name, in that
//! namespace. Anything else of that name is not adopted (it may be another container's, or
//! an impostor); a host end whose container end was renamed in the same namespace is
//! replaced.

use weft_kernel::link::{Link, VethEnd};
use weft_kernel::netns::Netns;
use weft_kernel::Netlink;

use crate::spec::{code, CniError};

/// Are `host_end` (in the host's namespace) and `cont_end` (in the container's, which the
/// host knows as `nsid`) the two ends of one veth pair?
pub fn is_pair(host_end: &Link, cont_end: &Link, nsid: Option<i32>) -> bool {
    let veth = |l: &Link| l.kind.as_deref() == Some("veth");
    veth(host_end)
        && veth(cont_end)
        && host_end.peer_index == Some(cont_end.index)
        && cont_end.peer_index == Some(host_end.index)
        && nsid.is_some()
        && host_end.link_netnsid == nsid
}

fn conflict(msg: String) -> CniError {
    CniError::new(code::KERNEL, msg)
}

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
    match host.add_veth(local, peer, ns).await {
        Ok(()) => {
            let hv = host
                .link_by_name(local.name)
                .await?
                .ok_or_else(|| conflict(format!("{} vanished after creation", local.name)))?;
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
                    link_netnsid: None,
                    alias: None,
                };
                return Ok((hv, cl));
            }
            let cl = cont
                .link_by_name(peer.name)
                .await?
                .ok_or_else(|| conflict(format!("{} vanished in {netns_label}", peer.name)))?;
            return Ok((hv, cl));
        }
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(e.into()),
    }
    let hv = host.link_by_name(local.name).await?;
    let cl = cont.link_by_name(peer.name).await?;
    match (hv, cl) {
        (Some(hv), Some(cl)) => {
            // ADD again for the same attachment: keep the pair, if it is one.
            if is_pair(&hv, &cl, host.nsid_of(ns).await?) {
                return Ok((hv, cl));
            }
            Err(conflict(format!(
                "{} in {netns_label} is not the peer of {}: another interface has taken its \
                 name; not adopting it (DEL the attachment, or remove that interface)",
                peer.name, local.name
            )))
        }
        (None, Some(_)) => Err(conflict(format!(
            "an interface named {} already exists in {netns_label}",
            peer.name
        ))),
        (Some(hv), None) => {
            // The host end is there, the container end not under its name: if its peer is in
            // this namespace (renamed), replace the pair; a peer anywhere else is not ours.
            let nsid = host.nsid_of(ns).await?;
            if hv.kind.as_deref() != Some("veth") || nsid.is_none() || hv.link_netnsid != nsid {
                return Err(conflict(format!(
                    "{} exists but its peer is not in {netns_label}; not taking it over",
                    local.name
                )));
            }
            host.del_link_by_name(local.name).await?;
            host.add_veth(local, peer, ns).await?;
            lookup_pair(host, cont, netns_label, local, peer).await
        }
        (None, None) => {
            host.add_veth(local, peer, ns).await?;
            lookup_pair(host, cont, netns_label, local, peer).await
        }
    }
}

async fn lookup_pair(
    host: &Netlink,
    cont: &Netlink,
    netns_label: &str,
    local: &VethEnd<'_>,
    peer: &VethEnd<'_>,
) -> Result<(Link, Link), CniError> {
    let hv = host
        .link_by_name(local.name)
        .await?
        .ok_or_else(|| conflict(format!("{} vanished after creation", local.name)))?;
    let cl = cont
        .link_by_name(peer.name)
        .await?
        .ok_or_else(|| conflict(format!("{} vanished in {netns_label}", peer.name)))?;
    Ok((hv, cl))
}

/// CHECK: the host end as the kernel has it; missing is a mismatch (104).
pub async fn host_end(host: &Netlink, name: &str) -> Result<Link, CniError> {
    host.link_by_name(name)
        .await?
        .ok_or_else(|| CniError::mismatch(format!("host interface {name} does not exist")))
}

/// CHECK: the container end as the kernel has it in the container's namespace (`cont`, a
/// socket there; `netns_label` names it); missing is a mismatch (104).
pub async fn container_end(
    cont: &Netlink,
    name: &str,
    netns_label: &str,
) -> Result<Link, CniError> {
    cont.link_by_name(name)
        .await?
        .ok_or_else(|| CniError::mismatch(format!("{name} does not exist in {netns_label}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, peer: Option<u32>, nsid: Option<i32>) -> Link {
        Link {
            index,
            name: "x".into(),
            kind: Some("veth".into()),
            mac: None,
            mtu: 1500,
            up: true,
            master: None,
            peer_index: peer,
            link_netnsid: nsid,
            alias: None,
        }
    }

    #[test]
    fn a_pair_points_at_each_other_across_the_right_namespace() {
        let host = link(7, Some(2), Some(3));
        let cont = link(2, Some(7), Some(0));
        assert!(is_pair(&host, &cont, Some(3)));
        // Peer in another namespace that happens to have the same indexes.
        assert!(!is_pair(&host, &cont, Some(4)));
        assert!(!is_pair(&host, &cont, None));
        // An impostor: another veth called like the container end.
        assert!(!is_pair(&host, &link(5, Some(9), Some(0)), Some(3)));
        let mut not_veth = cont.clone();
        not_veth.kind = Some("macvlan".into());
        assert!(!is_pair(&host, &not_veth, Some(3)));
    }
}
