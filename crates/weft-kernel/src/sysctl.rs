//! Sysctls, through /proc/sys of the calling thread's network namespace (no `sysctl` process).
//!
//! Invariant: a key names a file under /proc/sys and nothing else (empty, absolute and `..`
//! keys are refused). Kernel objects owned: the sysctl values weft sets (forwarding,
//! `route_localnet` of a link, conntrack's TCP window tracking), in the calling thread's
//! namespace.

use std::fs;
use std::path::PathBuf;

use crate::{Error, Result};

fn path_of(key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.contains("..") || key.starts_with('/') {
        return Err(Error::Invalid(format!("invalid sysctl key {key:?}")));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// Reads `net.ipv4.ip_forward`-style keys (interface names with dots are not supported;
/// use [`get_path`] with a `/`-separated path for those).
pub fn get(key: &str) -> Result<String> {
    get_path(&path_of(key)?.to_string_lossy())
}

/// Writes a value unless it is already set (so a read-only /proc/sys with the right value is fine).
pub fn set(key: &str, value: &str) -> Result<()> {
    set_path(&path_of(key)?.to_string_lossy(), value)
}

/// Reads `/proc/sys/...` by full path.
pub fn get_path(path: &str) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(format!("read {path}"), e))
}

/// Writes `/proc/sys/...` by full path, only if the value differs.
pub fn set_path(path: &str, value: &str) -> Result<()> {
    if get_path(path).ok().as_deref() == Some(value) {
        return Ok(());
    }
    fs::write(path, value).map_err(|e| Error::io(format!("write {value} to {path}"), e))
}

/// `/proc/sys/net/ipv4/conf/IFNAME/KEY` (interface names may contain dots).
pub fn ipv4_conf_path(ifname: &str, key: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{ifname}/{key}")
}
