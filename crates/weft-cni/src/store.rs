//! weft-cni's state on disk, one directory per network (host-local's layout, which is easy
//! to inspect by hand):
//!
//! ```text
//! <dataDir>/<network>/lock                       flock(2) held while allocating or releasing
//! <dataDir>/<network>/ips/<ip>                   "<containerID>\n<ifname>\n": who holds the address
//! <dataDir>/<network>/ips/last_reserved.<set>    where the next allocation in range set <set> starts
//! <dataDir>/<network>/attachments/<cid>_<if>.json the attachment's plan (written before applying it)
//! ```
//!
//! Every file is written whole (temporary file + rename) or created exclusively (`O_EXCL`),
//! so a process killed at any point leaves either the old or the new state, never a torn
//! file. A killed ADD leaves an attachment record and its addresses; DEL or GC undo both.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::spec::{code, CniError};

/// Width of the last-reserved hint: the longest IPv6 address text (45 characters).
const LAST_RESERVED_WIDTH: usize = 45;

/// The owner of an address: one attachment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Owner {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
    fn record_name(&self) -> String {
        format!("{}_{}.json", self.container_id, self.ifname)
    }
    fn encode(&self) -> String {
        format!("{}\n{}\n", self.container_id, self.ifname)
    }
    fn decode(s: &str) -> Option<Owner> {
        let mut l = s.lines();
        Some(Owner::new(l.next()?, l.next().unwrap_or("")))
    }
}

fn io_err(what: impl std::fmt::Display, e: io::Error) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{what}: {e}"))
}

/// The state directory of one network.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

/// Proof that the network's lock is held; released on drop.
pub struct Lock {
    _file: File,
}

impl NetworkStore {
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, CniError> {
        let dir = data_dir.join(network);
        for sub in ["ips", "attachments"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| io_err(format!("create {}", dir.join(sub).display()), e))?;
        }
        Ok(NetworkStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the network's exclusive lock (blocks until free).
    pub fn lock(&self) -> Result<Lock, CniError> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(format!("open {}", path.display()), e))?;
        loop {
            // SAFETY: flock on an fd we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err(format!("lock {}", path.display()), e));
            }
        }
        Ok(Lock { _file: file })
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join("ips").join(ip.to_string())
    }

    /// Reserves `ip` for `owner` if nobody holds it. `Ok(false)` if taken.
    pub fn reserve(&self, _lock: &Lock, ip: IpAddr, owner: &Owner) -> Result<bool, CniError> {
        let path = self.ip_path(ip);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(owner.encode().as_bytes())
                    .map_err(|e| io_err(format!("write {}", path.display()), e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(format!("create {}", path.display()), e)),
        }
    }

    /// Who holds `ip`, if anyone.
    pub fn holder(&self, ip: IpAddr) -> Option<Owner> {
        fs::read_to_string(self.ip_path(ip))
            .ok()
            .and_then(|s| Owner::decode(&s))
    }

    /// Releases `ip` if `owner` holds it.
    pub fn release(&self, _lock: &Lock, ip: IpAddr, owner: &Owner) -> Result<(), CniError> {
        if self.holder(ip).as_ref() == Some(owner) {
            let p = self.ip_path(ip);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("remove {}", p.display()), e)),
            }
        }
        Ok(())
    }

    /// Every allocation of the network.
    pub fn allocations(&self) -> Result<Vec<(IpAddr, Owner)>, CniError> {
        let dir = self.dir.join("ips");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| io_err(format!("read {}", dir.display()), e))? {
            let e = e.map_err(|e| io_err(format!("read {}", dir.display()), e))?;
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if let Some(o) = fs::read_to_string(e.path())
                .ok()
                .and_then(|s| Owner::decode(&s))
            {
                out.push((ip, o));
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        // Written padded to a fixed width (see set_last_reserved): trim.
        fs::read_to_string(self.dir.join("ips").join(format!("last_reserved.{set}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Overwritten in place with a fixed width (the address padded with spaces), not through
    /// a new file and a rename nor a truncation: the hint only says where the next search
    /// starts (a torn write reads as no hint), and on ext4 both a rename over a file and a
    /// truncate-then-write force a data flush on every ADD.
    pub fn set_last_reserved(&self, _lock: &Lock, set: usize, ip: IpAddr) -> Result<(), CniError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join("ips").join(format!("last_reserved.{set}"));
        let text = format!("{:<width$}\n", ip.to_string(), width = LAST_RESERVED_WIDTH);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| f.write_all_at(text.as_bytes(), 0))
            .map_err(|e| io_err(format!("write {}", path.display()), e))
    }

    /// Writes an attachment's record (whole or not at all).
    pub fn write_record<T: Serialize>(&self, owner: &Owner, rec: &T) -> Result<(), CniError> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| {
            CniError::new(code::IO_FAILURE, format!("encode attachment record: {e}"))
        })?;
        write_atomic(
            &self.dir.join("attachments").join(owner.record_name()),
            &bytes,
        )
    }

    pub fn read_record<T: DeserializeOwned>(&self, owner: &Owner) -> Result<Option<T>, CniError> {
        let p = self.dir.join("attachments").join(owner.record_name());
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                CniError::new(code::IO_FAILURE, format!("{} is corrupt: {e}", p.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("read {}", p.display()), e)),
        }
    }

    pub fn remove_record(&self, owner: &Owner) -> Result<(), CniError> {
        let p = self.dir.join("attachments").join(owner.record_name());
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", p.display()), e)),
        }
    }

    /// All attachment records (unreadable ones are skipped with a warning).
    pub fn records<T: DeserializeOwned>(&self) -> Result<Vec<T>, CniError> {
        let dir = self.dir.join("attachments");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| io_err(format!("read {}", dir.display()), e))? {
            let e = e.map_err(|e| io_err(format!("read {}", dir.display()), e))?;
            if e.path().extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(r) => out.push(r),
                None => {
                    tracing::warn!(path = %e.path().display(), "skipping unreadable attachment record")
                }
            }
        }
        Ok(out)
    }
}

/// Writes a file whole: a temporary file in the same directory, then rename(2).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CniError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(format!("write {}", path.display()), e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "weft-store-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reserve_is_exclusive_and_release_checks_owner() {
        let d = tempdir();
        let s = NetworkStore::open(&d, "net").unwrap();
        let l = s.lock().unwrap();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let a = Owner::new("a", "eth0");
        let b = Owner::new("b", "eth0");
        assert!(s.reserve(&l, ip, &a).unwrap());
        assert!(!s.reserve(&l, ip, &b).unwrap());
        s.release(&l, ip, &b).unwrap();
        assert_eq!(s.holder(ip), Some(a.clone()));
        s.release(&l, ip, &a).unwrap();
        assert_eq!(s.holder(ip), None);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn last_reserved_overwrites_in_place() {
        let d = tempdir();
        let s = NetworkStore::open(&d, "net").unwrap();
        let l = s.lock().unwrap();
        assert_eq!(s.last_reserved(0), None);
        for ip in ["fd00::1234:5678:9abc", "10.77.2.100", "10.77.2.9"] {
            let ip: IpAddr = ip.parse().unwrap();
            s.set_last_reserved(&l, 0, ip).unwrap();
            assert_eq!(s.last_reserved(0), Some(ip));
        }
        // A hint that does not parse is no hint.
        fs::write(d.join("net").join("ips").join("last_reserved.0"), "10.77.").unwrap();
        assert_eq!(s.last_reserved(0), None);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn records_round_trip() {
        let d = tempdir();
        let s = NetworkStore::open(&d, "net").unwrap();
        let o = Owner::new("c1", "eth0");
        s.write_record(&o, &serde_json::json!({"x": 1})).unwrap();
        let r: Option<serde_json::Value> = s.read_record(&o).unwrap();
        assert_eq!(r.unwrap()["x"], 1);
        assert_eq!(s.records::<serde_json::Value>().unwrap().len(), 1);
        s.remove_record(&o).unwrap();
        s.remove_record(&o).unwrap();
        assert!(s.read_record::<serde_json::Value>(&o).unwrap().is_none());
        fs::remove_dir_all(d).unwrap();
    }
}
