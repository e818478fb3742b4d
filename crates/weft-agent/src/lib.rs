//! `weft agent`: one per host. It holds the host's subnet lease, owns the VTEP, keeps a route,
//! a neighbour and an FDB entry for every other host's lease (seen through the controller's
//! watch stream, not by polling), and masquerades overlay traffic leaving the overlay.
//!
//! It reconciles instead of resetting: on start it adopts the VTEP and entries it finds,
//! changes only what differs, and never removes anything because the controller is away.
//!
//! - [`vtep`]: the VXLAN device (desired spec, ensure)
//! - [`remote`]: other hosts' leases → routes, neighbours, FDB entries (plan + diff + apply)
//! - [`policy`]: `inet weft-policy`: marking, default deny, anti-spoofing and anti-forgery,
//!   all failing closed (desired elements + diff + one transaction)
//! - [`nat`]: the host's nftables table (masquerade)
//! - [`fastpath`]: tc BPF VXLAN-GBP encap/decap for established connections
//! - [`agent`]: the loop: lease, renew, watch, reconcile
//! - [`args`]: its command line (flags, environment, the policy and fast path modes)

pub mod agent;
pub mod args;
pub mod fastpath;
pub mod local;
pub mod metrics;
pub mod nat;
pub mod policy;
pub mod remote;
pub mod vtep;

pub use args::{AgentArgs, FastpathMode, PolicyMode};

/// Every container attachment recorded under weft-cni's state directory, all networks.
pub fn local_containers(cni_data_dir: &std::path::Path) -> Vec<weft_cni::plan::Plan> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(cni_data_dir) else {
        return out;
    };
    for net in rd.filter_map(|e| e.ok()) {
        let Ok(files) = std::fs::read_dir(net.path().join("attachments")) else {
            continue;
        };
        for f in files.filter_map(|e| e.ok()) {
            if f.path().extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            if let Some(p) = std::fs::read(f.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                out.push(p);
            }
        }
    }
    out.sort_by(|a: &weft_cni::plan::Plan, b| {
        (a.network(), a.container_id()).cmp(&(b.network(), b.container_id()))
    });
    out
}
