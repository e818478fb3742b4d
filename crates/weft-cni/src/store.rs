//! weft-cni's state on disk (host-local's layout, which is easy to inspect by hand):
//!
//! ```text
//! <dataDir>/<network>/lock                          flock(2) held while deciding (bridge mode)
//! <dataDir>/<network>/ips/<ip>                      "<containerID>\n<ifname>\n<network>\n": who holds it
//! <dataDir>/<network>/ips/last_reserved.<set>       where the next allocation in range set <set> starts
//! <dataDir>/<network>/attachments/<cid>:<if>.json   the attachment's plan (written before
//!                                                   applying it; [`weft_api::records`] says who
//!                                                   else reads it)
//! <leaseFile>.ipam/lock, <leaseFile>.ipam/ips/...   overlay mode: lock and addresses of the host's
//!                                                   lease, shared by every overlay network using it
//! ```
//!
//! An attachment is (container id, interface name). Its record is `<cid>:<if>.json`: neither
//! part can hold ':' (the spec's container id characters; the kernel's interface names), so
//! two attachments never share a record. Records written before that (`<cid>_<if>.json`,
//! where `x_y`+`z` and `x`+`y_z` were one file) are still read, but only for the attachment
//! their content names, and removed with it: an upgrade orphans no container.
//!
//! Overlay addresses come from the host's lease, so they are allocated in one space per lease
//! file, not per network (two overlay networks on one lease handed out the same addresses).
//! Addresses an older weft-cni held in `<dataDir>/<network>/ips` move into that space under
//! its lock the first time the network is used.
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
use weft_api::records::{self, ATTACHMENTS};

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
        format!("{}:{}.json", self.container_id, self.ifname)
    }
    /// The name records had before issue 14 (ambiguous: see the module docs).
    fn legacy_record_name(&self) -> String {
        format!("{}_{}.json", self.container_id, self.ifname)
    }
    /// Does a record's content name this attachment?
    fn names(&self, record: &serde_json::Value) -> bool {
        record["container_id"].as_str() == Some(self.container_id.as_str())
            && record["ifname"].as_str() == Some(self.ifname.as_str())
    }
    /// An address file: the owner, and the network (older versions wrote no third line).
    fn encode(&self, network: &str) -> String {
        format!("{}\n{}\n{network}\n", self.container_id, self.ifname)
    }
    fn decode(s: &str) -> Option<Owner> {
        let mut l = s.lines();
        Some(Owner::new(l.next()?, l.next().unwrap_or("")))
    }
    fn decode_network(s: &str) -> Option<&str> {
        s.lines().nth(2)
    }
}

fn io_err(what: impl std::fmt::Display, e: io::Error) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{what}: {e}"))
}

/// The state of one network: its records, and the address space it allocates from (its
/// own in bridge mode, the lease's in overlay mode).
#[derive(Debug, Clone)]
pub struct NetworkStore {
    network: String,
    dir: PathBuf,
    /// Holds `lock` and `ips/`.
    space: PathBuf,
}

/// Proof that the store's lock is held; released on drop.
pub struct Lock {
    _file: File,
}

fn create_dir(d: &Path) -> Result<(), CniError> {
    fs::create_dir_all(d).map_err(|e| io_err(format!("create {}", d.display()), e))
}

impl NetworkStore {
    /// Bridge mode: records and addresses under `<dataDir>/<network>`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, CniError> {
        let dir = data_dir.join(network);
        Self::with_space(network, dir.clone(), dir)
    }

    /// Overlay mode: records under `<dataDir>/<network>`, addresses in the lease's space.
    pub fn open_on_lease(
        data_dir: &Path,
        network: &str,
        lease_file: &Path,
    ) -> Result<Self, CniError> {
        Self::with_space(network, data_dir.join(network), lease_space(lease_file))
    }

    fn with_space(network: &str, dir: PathBuf, space: PathBuf) -> Result<Self, CniError> {
        create_dir(&dir.join(ATTACHMENTS))?;
        create_dir(&space.join("ips"))?;
        Ok(NetworkStore {
            network: network.to_string(),
            dir,
            space,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock of the address space (blocks until free); every decision
    /// about this network's records and addresses is made under it. In overlay mode, moves
    /// addresses an older version kept per network into the lease's space first.
    pub fn lock(&self) -> Result<Lock, CniError> {
        let path = self.space.join("lock");
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
        let lock = Lock { _file: file };
        if self.space != self.dir {
            self.adopt_network_ips(&lock)?;
        }
        Ok(lock)
    }

    /// Moves `<dir>/ips/*` (a per-network space of an older version) into the shared space.
    /// One failed stat when there is nothing to move.
    fn adopt_network_ips(&self, lock: &Lock) -> Result<(), CniError> {
        let old = self.dir.join("ips");
        if !old.is_dir() {
            return Ok(());
        }
        for (ip, owner, _) in address_files(&old)? {
            if !self.reserve(lock, ip, &owner)? && self.holder(ip).as_ref() != Some(&owner) {
                tracing::warn!(%ip, container = %owner.container_id, holder = ?self.holder(ip),
                    "an older weft-cni gave this address to two containers; keeping the first");
            }
        }
        fs::remove_dir_all(&old).map_err(|e| io_err(format!("remove {}", old.display()), e))
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.space.join("ips").join(ip.to_string())
    }

    /// Reserves `ip` for `owner` if nobody holds it. `Ok(false)` if taken.
    pub fn reserve(&self, _lock: &Lock, ip: IpAddr, owner: &Owner) -> Result<bool, CniError> {
        let path = self.ip_path(ip);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(owner.encode(&self.network).as_bytes())
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

    /// Every allocation of the address space (overlay mode: of every network on the lease).
    pub fn allocations(&self) -> Result<Vec<(IpAddr, Owner)>, CniError> {
        let mut out: Vec<_> = address_files(&self.space.join("ips"))?
            .into_iter()
            .map(|(ip, o, _)| (ip, o))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The allocations of this network: all of its own space, or in a shared space those
    /// written for this network.
    pub fn own_allocations(&self) -> Result<Vec<(IpAddr, Owner)>, CniError> {
        let shared = self.space != self.dir;
        let mut out: Vec<_> = address_files(&self.space.join("ips"))?
            .into_iter()
            .filter(|(_, _, net)| !shared || net.as_deref() == Some(self.network.as_str()))
            .map(|(ip, o, _)| (ip, o))
            .collect();
        out.sort();
        Ok(out)
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        // Written padded to a fixed width (see set_last_reserved): trim.
        fs::read_to_string(self.space.join("ips").join(format!("last_reserved.{set}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Overwritten in place with a fixed width (the address padded with spaces), not through
    /// a new file and a rename nor a truncation: the hint only says where the next search
    /// starts (a torn write reads as no hint), and on ext4 both a rename over a file and a
    /// truncate-then-write force a data flush on every ADD.
    pub fn set_last_reserved(&self, _lock: &Lock, set: usize, ip: IpAddr) -> Result<(), CniError> {
        use std::os::unix::fs::FileExt;
        let path = self.space.join("ips").join(format!("last_reserved.{set}"));
        let text = format!("{:<width$}\n", ip.to_string(), width = LAST_RESERVED_WIDTH);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| f.write_all_at(text.as_bytes(), 0))
            .map_err(|e| io_err(format!("write {}", path.display()), e))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(ATTACHMENTS).join(name)
    }

    /// Writes an attachment's record (whole or not at all), replacing one of the old name.
    pub fn write_record<T: Serialize>(&self, owner: &Owner, rec: &T) -> Result<(), CniError> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| {
            CniError::new(code::IO_FAILURE, format!("encode attachment record: {e}"))
        })?;
        write_atomic(&self.record_path(&owner.record_name()), &bytes)?;
        self.remove_legacy_record(owner)
    }

    pub fn read_record<T: DeserializeOwned>(&self, owner: &Owner) -> Result<Option<T>, CniError> {
        let p = self.record_path(&owner.record_name());
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                CniError::new(code::IO_FAILURE, format!("{} is corrupt: {e}", p.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.legacy_record(owner)? {
                Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
                    CniError::new(
                        code::IO_FAILURE,
                        format!(
                            "{} is corrupt: {e}",
                            self.record_path(&owner.legacy_record_name()).display()
                        ),
                    )
                }),
                None => Ok(None),
            },
            Err(e) => Err(io_err(format!("read {}", p.display()), e)),
        }
    }

    /// The record of an older version under the ambiguous name, if its content names `owner`.
    fn legacy_record(&self, owner: &Owner) -> Result<Option<serde_json::Value>, CniError> {
        let p = self.record_path(&owner.legacy_record_name());
        match fs::read(&p) {
            Ok(b) => Ok(serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .filter(|v| owner.names(v))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("read {}", p.display()), e)),
        }
    }

    fn remove_legacy_record(&self, owner: &Owner) -> Result<(), CniError> {
        if self.legacy_record(owner)?.is_some() {
            remove_file(&self.record_path(&owner.legacy_record_name()))?;
        }
        Ok(())
    }

    pub fn remove_record(&self, owner: &Owner) -> Result<(), CniError> {
        remove_file(&self.record_path(&owner.record_name()))?;
        self.remove_legacy_record(owner)
    }

    /// All attachment records (unreadable ones are skipped with a warning).
    pub fn records<T: DeserializeOwned>(&self) -> Result<Vec<T>, CniError> {
        let dir = self.dir.join(ATTACHMENTS);
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

/// The address files of an `ips` directory: address, owner, and the network when written.
fn address_files(dir: &Path) -> Result<Vec<(IpAddr, Owner, Option<String>)>, CniError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io_err(format!("read {}", dir.display()), e))? {
        let e = e.map_err(|e| io_err(format!("read {}", dir.display()), e))?;
        let Some(ip) = e
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if let Ok(text) = fs::read_to_string(e.path()) {
            if let Some(o) = Owner::decode(&text) {
                let net = Owner::decode_network(&text).map(str::to_string);
                out.push((ip, o, net));
            }
        }
    }
    Ok(out)
}

/// The address space of the overlay networks using `lease_file`: `<leaseFile>.ipam`.
pub fn lease_space(lease_file: &Path) -> PathBuf {
    let mut name = lease_file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "lease".into());
    name.push(".ipam");
    lease_file.with_file_name(name)
}

fn remove_file(p: &Path) -> Result<(), CniError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", p.display()), e)),
    }
}

/// Writes a file whole ([`records::write_atomic`]): the old content or the new, never a
/// torn file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CniError> {
    records::write_atomic(path, bytes).map_err(|e| io_err(format!("write {}", path.display()), e))
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

    fn rec(cid: &str, ifname: &str) -> serde_json::Value {
        serde_json::json!({ "container_id": cid, "ifname": ifname })
    }

    #[test]
    fn records_of_colliding_old_names_stay_apart() {
        let d = tempdir();
        let s = NetworkStore::open(&d, "net").unwrap();
        let (a, b) = (Owner::new("x_y", "z"), Owner::new("x", "y_z"));
        s.write_record(&a, &rec("x_y", "z")).unwrap();
        s.write_record(&b, &rec("x", "y_z")).unwrap();
        let ra: serde_json::Value = s.read_record(&a).unwrap().unwrap();
        let rb: serde_json::Value = s.read_record(&b).unwrap().unwrap();
        assert_eq!(
            (ra["container_id"].as_str(), rb["container_id"].as_str()),
            (Some("x_y"), Some("x"))
        );
        s.remove_record(&b).unwrap();
        assert!(s.read_record::<serde_json::Value>(&a).unwrap().is_some());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn old_records_are_read_for_their_own_attachment_only() {
        let d = tempdir();
        let s = NetworkStore::open(&d, "net").unwrap();
        let att = d.join("net").join("attachments");
        // An older version wrote (x_y, z) as x_y_z.json, which is also (x, y_z)'s old name.
        fs::write(att.join("x_y_z.json"), rec("x_y", "z").to_string()).unwrap();
        let (a, b) = (Owner::new("x_y", "z"), Owner::new("x", "y_z"));
        assert!(s.read_record::<serde_json::Value>(&b).unwrap().is_none());
        assert_eq!(s.records::<serde_json::Value>().unwrap().len(), 1);
        // b's new record and b's DEL leave a's old one alone.
        s.write_record(&b, &rec("x", "y_z")).unwrap();
        s.remove_record(&b).unwrap();
        assert!(att.join("x_y_z.json").exists());
        let r: serde_json::Value = s.read_record(&a).unwrap().unwrap();
        assert_eq!(r["ifname"], "z");
        // Rewriting a's record moves it to the new name; removing it removes both.
        s.write_record(&a, &rec("x_y", "z")).unwrap();
        assert!(!att.join("x_y_z.json").exists() && att.join("x_y:z.json").exists());
        fs::write(att.join("x_y_z.json"), rec("x_y", "z").to_string()).unwrap();
        s.remove_record(&a).unwrap();
        assert_eq!(fs::read_dir(&att).unwrap().count(), 0);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn overlay_networks_share_the_lease_space_and_adopt_old_addresses() {
        let d = tempdir();
        let lease = d.join("run").join("lease.json");
        fs::create_dir_all(lease.parent().unwrap()).unwrap();
        assert_eq!(lease_space(&lease), d.join("run").join("lease.json.ipam"));
        // An older version kept net1's addresses under the network.
        let old = d.join("cni").join("net1").join("ips");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("10.255.1.1"), "old\neth0\n").unwrap();
        fs::write(old.join("last_reserved.0"), "10.255.1.1").unwrap();
        let n1 = NetworkStore::open_on_lease(&d.join("cni"), "net1", &lease).unwrap();
        let n2 = NetworkStore::open_on_lease(&d.join("cni"), "net2", &lease).unwrap();
        let ip: IpAddr = "10.255.1.1".parse().unwrap();
        {
            let l = n2.lock().unwrap();
            // net2 knows nothing of net1's old directory until net1 is used...
            assert!(n2
                .reserve(&l, "10.255.1.2".parse().unwrap(), &Owner::new("b", "eth0"))
                .unwrap());
        }
        {
            let _l = n1.lock().unwrap();
            assert!(!old.exists());
        }
        // ...then the address is held in the shared space, for both networks.
        let l = n2.lock().unwrap();
        assert!(!n2.reserve(&l, ip, &Owner::new("c", "eth0")).unwrap());
        assert_eq!(n2.holder(ip), Some(Owner::new("old", "eth0")));
        assert_eq!(n1.allocations().unwrap().len(), 2);
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
