//! The records the CNI plugin shares with the rest of the host: plain data and serde, nothing
//! of the plugin's internals (MACs are [`weft_kernel::MacAddr`]). Who writes, who reads:
//!
//! ```text
//! <leaseFile>                      HostLease: the agent writes it after taking or renewing
//!   (/var/lib/weft/lease.json)     its lease; the plugin reads it on every overlay ADD,
//!                                  `weft trace` and `weft lab` too
//! <dataDir>/<network>/attachments/<cid>:<if>.json
//!   (dataDir /var/lib/weft/cni)    Plan: the plugin writes it before applying it; the
//!                                  agent (its policy's containers), `weft containers` and
//!                                  `weft trace` read them all (see [`attachments`])
//! ```
//!
//! Invariant: every file here is written whole (a temporary file, then rename(2): see
//! [`write_atomic`]), so a reader sees the old record or the new one, never a torn one. No
//! kernel objects.

mod attachment;
mod lease;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use attachment::{BridgePlan, OverlayPlan, Plan, PortMapping, Route};
pub use lease::HostLease;

/// Default directory of the plugin's state: address allocations and attachment records.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/weft/cni";

/// Default lease file of overlay mode: state, not runtime, so that a rebooted host asks for
/// (and gets back) the subnet it had.
pub const DEFAULT_LEASE_FILE: &str = "/var/lib/weft/lease.json";

/// The directory of a network's attachment records, under its state directory.
pub const ATTACHMENTS: &str = "attachments";

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be read, created or replaced.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is there but does not hold a record of this kind.
    #[error("{} is corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Writes a file whole: a temporary file in the same directory, then rename(2).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Every attachment recorded under `data_dir`, all networks, sorted by network and
/// container. Records that cannot be read are left out (the plugin's GC removes what no
/// runtime lists); a missing directory is no attachments.
pub fn attachments(data_dir: &Path) -> Vec<Plan> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(data_dir) else {
        return out;
    };
    for net in rd.filter_map(|e| e.ok()) {
        let Ok(files) = fs::read_dir(net.path().join(ATTACHMENTS)) else {
            continue;
        };
        for f in files.filter_map(|e| e.ok()) {
            if f.path().extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            if let Some(p) = fs::read(f.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                out.push(p);
            }
        }
    }
    out.sort_by(|a: &Plan, b| {
        (a.network(), a.container_id()).cmp(&(b.network(), b.container_id()))
    });
    out
}
