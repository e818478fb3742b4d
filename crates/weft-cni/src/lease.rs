//! The host's overlay lease as the agent hands it to the plugin: a small JSON file the agent
//! writes (atomically) after acquiring or renewing its lease, and weft-cni reads on every
//! overlay ADD. Containers can start while the agent restarts, as long as the file is there.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::Range;
use crate::spec::{code, CniError};
use crate::store::write_atomic;

/// The link-local address of the host side of every overlay veth (as silk does): the
/// containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLease {
    /// The host name the lease is held under.
    pub host: String,
    /// This host's overlay subnet (containers take their addresses from it).
    pub subnet: Ipv4Net,
    /// The whole overlay network (e.g. 10.255.0.0/16).
    pub overlay: Ipv4Net,
    /// The VTEP device and its MTU (the containers' MTU).
    pub vtep: String,
    pub mtu: u32,
}

impl HostLease {
    pub fn read(path: &Path) -> Result<HostLease, CniError> {
        let bytes = std::fs::read(path).map_err(|e| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "leaseFile {}: {e} (is `weft agent` running on this host and has it got a lease?)",
                    path.display()
                ),
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                format!("leaseFile {} is corrupt: {e}", path.display()),
            )
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), CniError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                CniError::new(code::IO_FAILURE, format!("create {}: {e}", dir.display()))
            })?;
        }
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("encode lease: {e}")))?;
        write_atomic(path, &bytes)
    }

    /// The VTEP's own overlay address: the subnet's first address.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }

    /// Containers get the subnet's addresses after the VTEP's, up to the last but one.
    pub fn range(&self) -> Range {
        let net = u32::from(self.subnet.network());
        let last = u32::from(self.subnet.broadcast());
        let (start, end) = if self.subnet.prefix_len() >= 31 {
            (net, last)
        } else {
            (net + 1, last - 1)
        };
        Range {
            subnet: self.subnet.into(),
            start: Ipv4Addr::from(start).into(),
            end: Ipv4Addr::from(end).into(),
            gateway: self.vtep_ip().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_leaves_out_the_vtep() {
        let l = HostLease {
            host: "cell1".into(),
            subnet: "10.255.3.0/24".parse().unwrap(),
            overlay: "10.255.0.0/16".parse().unwrap(),
            vtep: "weft.vtep".into(),
            mtu: 1450,
        };
        let r = l.range();
        assert_eq!(r.start.to_string(), "10.255.3.1");
        assert_eq!(r.end.to_string(), "10.255.3.254");
        assert_eq!(l.vtep_ip().to_string(), "10.255.3.0");
        let p = std::env::temp_dir().join(format!("weft-lease-{}.json", std::process::id()));
        l.write(&p).unwrap();
        assert_eq!(HostLease::read(&p).unwrap(), l);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(HostLease::read(&p).unwrap_err().code, code::TRY_AGAIN_LATER);
    }
}
