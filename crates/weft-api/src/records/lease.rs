//! The host's overlay lease as the agent hands it to the plugin: a small JSON file the agent
//! writes (atomically) after acquiring or renewing its lease, and weft-cni reads on every
//! overlay ADD. Containers can start while the agent restarts, as long as the file is there.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{write_atomic, RecordError};

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
    pub fn read(path: &Path) -> Result<HostLease, RecordError> {
        let bytes = std::fs::read(path).map_err(|source| RecordError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the file whole, creating its directory if need be.
    pub fn write(&self, path: &Path) -> Result<(), RecordError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError::Io { what, path, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(io::Error::other)
            .map_err(io("encode", path))?;
        write_atomic(path, &bytes).map_err(io("write", path))
    }

    /// The VTEP's own overlay address: the subnet's first address.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_read_back() {
        let l = HostLease {
            host: "cell1".into(),
            subnet: "10.255.3.0/24".parse().unwrap(),
            overlay: "10.255.0.0/16".parse().unwrap(),
            vtep: "weft.vtep".into(),
            mtu: 1450,
        };
        assert_eq!(l.vtep_ip().to_string(), "10.255.3.0");
        let dir = std::env::temp_dir().join(format!("weft-lease-{}", std::process::id()));
        let p = dir.join("lease.json");
        l.write(&p).unwrap();
        assert_eq!(HostLease::read(&p).unwrap(), l);
        std::fs::write(&p, b"{\"host\":").unwrap();
        assert!(matches!(
            HostLease::read(&p),
            Err(RecordError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        let e = HostLease::read(&p).unwrap_err();
        assert!(matches!(e, RecordError::Io { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("read {}: ", p.display())),
            "{e}"
        );
    }
}
