//! Network namespaces: open, run code inside, start processes inside, and the named ones
//! under /run/netns that `ip netns` uses.
//!
//! Invariant: no thread of the caller ever changes namespace to do work in another one.
//! [`Netns::run`] (and [`in_netns`], and [`in_new_netns`] for a namespace of the closure's
//! own) runs a closure on a fresh thread that enters the namespace and ends with the closure (the shape of the CNI plugins' `ns.Do`, without its
//! risk of a thread left behind in the wrong namespace); [`CommandExt::netns`] makes a child
//! process join a namespace between fork and exec. A socket belongs to the namespace of the
//! thread that created it, so a socket made inside `run` keeps talking to that namespace.
//!
//! Kernel objects owned: network namespace files (`/run/netns/NAME` bind mounts, exactly as
//! iproute2 makes them, so `ip netns` and `weft netns` see each other's namespaces).

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{Error, Result};

/// Where named namespaces live (shared with iproute2).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens a namespace by path; fails with a clear message if it is not a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path)
            .map_err(|e| Error::io(format!("open network namespace {}", path.display()), e))?;
        // NS_GET_NSTYPE would be exact; a namespace file lives on nsfs (magic 0x6e736673).
        let st = nix::sys::statfs::fstatfs(&file)
            .map_err(|e| Error::io(format!("statfs {}", path.display()), e.into()))?;
        if st.filesystem_type().0 as i64 != 0x6e73_6673 {
            return Err(Error::Invalid(format!(
                "{} is not a network namespace",
                path.display()
            )));
        }
        Ok(Netns { file, path })
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Inode number: two handles refer to the same namespace iff (dev, ino) are equal.
    pub fn id(&self) -> Result<(u64, u64)> {
        let m = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?;
        Ok((m.dev(), m.ino()))
    }

    /// Do both handles refer to the same namespace (by (dev, ino), not by path)?
    pub fn same_as(&self, other: &Netns) -> Result<bool> {
        Ok(self.id()? == other.id()?)
    }

    /// Takes an exclusive flock(2) on the namespace itself (its nsfs inode), blocking until
    /// it is free: every process that locks the same namespace, through whatever path,
    /// contends for the same lock, and no file is left anywhere when it is released (on
    /// drop) or when the holder dies.
    pub fn lock(self) -> Result<NetnsLock> {
        loop {
            // SAFETY: flock on an fd we own.
            let rc = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(NetnsLock { _ns: self });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io(format!("lock {}", self.path.display()), e));
            }
        }
    }

    /// Opens the named namespace `/run/netns/NAME` (the names `ip netns` uses).
    pub fn named(name: &str) -> Result<Self> {
        validate_name(name)?;
        Self::open(named_path(name))
    }

    /// Runs `f` on a fresh thread inside this namespace and returns what it returned. The
    /// calling thread never changes namespace; the thread that did ends with `f`, so nothing
    /// is ever left running in the wrong namespace. Sockets `f` opens belong to this
    /// namespace for good. `f` may borrow from the caller (a scoped thread). A panic in `f`
    /// comes back as an error naming the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        on_fresh_thread(&self.path.display().to_string(), || self.enter(), f)
    }

    /// Moves the calling thread into this namespace for good (a thread of its own that stays
    /// there; to do something there and come back, use [`Netns::run`]).
    pub fn enter(&self) -> Result<()> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::io(format!("setns {}", self.path.display()), e.into()))
    }
}

/// Runs `f` on a fresh thread inside the namespace at `path` (see [`Netns::run`]).
pub fn in_netns<T: Send>(path: impl AsRef<Path>, f: impl FnOnce() -> T + Send) -> Result<T> {
    Netns::open(path)?.run(f)
}

/// Runs `f` on a fresh thread in a network namespace of its own: new, unnamed, holding only
/// a `lo` (down), and freed by the kernel with everything in it (links, routes,
/// tables) when the thread ends. Nothing to clean up, even when `f` panics; the caller never
/// changes namespace. What tests use when they need a namespace and nobody else does.
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    on_fresh_thread(
        "(a new one)",
        || {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("unshare a new network namespace", e.into()))
        },
        f,
    )
}

/// Runs `enter`, then `f`, on a thread of their own that ends with them (a scoped thread:
/// `f` may borrow). A panic comes back as an error naming the namespace (`which`).
fn on_fresh_thread<T: Send>(
    which: &str,
    enter: impl FnOnce() -> Result<()> + Send,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name("weft-netns".into())
            .spawn_scoped(s, || -> Result<T> {
                enter()?;
                Ok(f())
            })
            .map_err(|e| Error::io(format!("start a thread for network namespace {which}"), e))?;
        thread.join().unwrap_or_else(|panic| {
            Err(Error::Invalid(format!(
                "the thread in network namespace {which} panicked: {}",
                panic_message(panic.as_ref())
            )))
        })
    })
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Starting a child process inside a network namespace.
pub trait CommandExt {
    /// The child joins `ns` between fork and exec (setns(2), nothing else): the program runs
    /// inside `ns` from its first instruction, and the parent never changes namespace. The
    /// command keeps its own handle on the namespace until it is dropped.
    fn netns(&mut self, ns: &Netns) -> Result<&mut Self>;
}

impl CommandExt for std::process::Command {
    fn netns(&mut self, ns: &Netns) -> Result<&mut Self> {
        // A handle of the command's own (close-on-exec): `ns` may be gone by the spawn.
        let fd: OwnedFd = ns
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("duplicate {}", ns.path.display()), e))?
            .into();
        // SAFETY: between fork and exec the closure makes one async-signal-safe call
        // (setns) on an fd it owns, and allocates nothing.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(self, move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(self)
    }
}

/// An exclusive lock on a network namespace ([`Netns::lock`]); released on drop.
#[derive(Debug)]
pub struct NetnsLock {
    _ns: Netns,
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Checks a namespace name the way `ip netns` would accept it as a file name.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.len() > 255 {
        return Err(Error::Invalid(format!("invalid namespace name {name:?}")));
    }
    if name.contains('/') || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(format!(
            "invalid namespace name {name:?}: no '/', spaces or control characters"
        )));
    }
    Ok(())
}

/// Path of a named namespace.
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespaces created here
/// propagate into other mount namespaces (and the other way round).
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR)
        .map_err(|e| Error::io(format!("create {NETNS_RUN_DIR}"), e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::io(format!("bind mount {NETNS_RUN_DIR}"), e.into()))?;
            mount(
                None::<&str>,
                NETNS_RUN_DIR,
                None::<&str>,
                shared,
                None::<&str>,
            )
            .map_err(|e| Error::io(format!("make {NETNS_RUN_DIR} shared"), e.into()))
        }
        Err(e) => Err(Error::io(format!("make {NETNS_RUN_DIR} shared"), e.into())),
    }
}

/// Creates a new named network namespace (`ip netns add NAME`) and returns it open.
/// `lo` is left to the caller ([`crate::link`] brings it up through netlink).
pub fn add_named(name: &str) -> Result<Netns> {
    validate_name(name)?;
    prepare_run_dir()?;
    let path = named_path(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => {
                Error::Invalid(format!("network namespace {name:?} already exists"))
            }
            _ => Error::io(format!("create {}", path.display()), e),
        })?;
    // unshare(CLONE_NEWNET) affects only the calling thread: do it on a thread of its own
    // that ends right after the bind mount keeps the namespace alive.
    let p = path.clone();
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::io("unshare(CLONE_NEWNET)", e.into()))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &p,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::io(format!("bind mount namespace on {}", p.display()), e.into()))
    })
    .join()
    .map_err(|_| Error::Invalid("namespace creation thread panicked".into()))?;
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Netns::open(&path)
}

/// Deletes a named namespace (`ip netns del NAME`): unmounts and removes the file. The kernel
/// frees the namespace when its last user (process, open file, mount) is gone.
pub fn del_named(name: &str) -> Result<()> {
    validate_name(name)?;
    let path = named_path(name);
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "network namespace {name:?} does not exist"
        )));
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(Error::io(format!("unmount {}", path.display()), e.into())),
    }
    fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))
}

/// Names of the namespaces under /run/netns, sorted.
pub fn list_named() -> Result<Vec<String>> {
    let rd = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {NETNS_RUN_DIR}"), e)),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Prepares the calling process to `exec` a command inside a named namespace, the way
/// `ip netns exec` does: join the network namespace, get a private mount namespace, and
/// remount /sys so that /sys/class/net shows the namespace's own devices.
pub fn enter_for_exec(name: &str) -> Result<()> {
    validate_name(name)?;
    let ns = Netns::open(named_path(name))?;
    ns.enter()?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| Error::io("unshare(CLONE_NEWNS)", e.into()))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::io("make / a slave mount", e.into()))?;
    // Best effort, as iproute2: a missing /sys is not fatal.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some(name),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    Ok(())
}
