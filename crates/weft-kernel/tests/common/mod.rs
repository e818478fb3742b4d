//! Test support for weft-kernel's tests against a real kernel (root needed; skipped
//! otherwise): throwaway named network namespaces, deleted by a guard when the test ends,
//! also when it panics. The host's namespace is never changed: work inside goes through
//! `Netns::run` (a thread of its own) or `ip netns exec` (a process of its own).
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use weft_kernel::link::VethEnd;
use weft_kernel::netns::{self, Netns};
use weft_kernel::Netlink;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True (and says so) when the test cannot run here: `if common::skip() { return; }`.
pub fn skip() -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipped: needs root");
    true
}

/// A name no other test (or parallel test process) uses: `wk<pid>x<n><tag>`.
pub fn unique(tag: &str) -> String {
    format!(
        "wk{}x{}{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A named namespace, deleted on drop (fields drop in order: the handle, then the name).
pub struct TestNs {
    pub ns: Netns,
    pub name: String,
    _del: DelOnDrop,
}

impl TestNs {
    /// A fresh namespace with `lo` up.
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        let ns = netns::add_named(&name).unwrap_or_else(|e| panic!("add {name}: {e}"));
        // Armed before anything else can fail.
        let del = DelOnDrop(name.clone());
        let t = TestNs {
            ns,
            name,
            _del: del,
        };
        t.block_on(|nl| async move { nl.set_up_by_name("lo").await })
            .expect("lo up");
        t
    }

    /// Runs `f` with a netlink socket of this namespace, on a thread inside it with a runtime
    /// of its own (so it works from sync and async tests alike).
    pub fn block_on<T, F, Fut>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce(Netlink) -> Fut + Send,
        Fut: std::future::Future<Output = T>,
    {
        self.ns
            .run(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let nl = Netlink::current().expect("netlink socket");
                    f(nl).await
                })
            })
            .expect("thread in the namespace")
    }

    /// A shell command inside the namespace, as a user would type it; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "in {}: `{script}`: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl TestNs {
    /// A veth pair with both ends in this namespace and up (a link with a carrier, to put
    /// addresses, routes and neighbours on). Returns the ends' indices.
    pub fn veth(&self, a: &str, b: &str) -> (u32, u32) {
        let ns = &self.ns;
        self.block_on(|nl| async move {
            // Made down: the kernel refuses to open a veth end before the pair exists.
            nl.add_veth(&VethEnd::new(a), &VethEnd::new(b), ns)
                .await
                .unwrap_or_else(|e| panic!("veth {a} <-> {b}: {e}"));
            let up = |name| {
                let nl = &nl;
                async move {
                    let l = nl
                        .link_by_name(name)
                        .await
                        .expect("get link")
                        .unwrap_or_else(|| panic!("{name} is there"));
                    nl.set_up(l.index).await.expect("up");
                    l.index
                }
            };
            (up(a).await, up(b).await)
        })
    }

    /// Loads an nft script inside the namespace (`nft -f -`, as a user would).
    pub fn nft(&self, script: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let out = child.wait_with_output().expect("wait nft");
        assert!(
            out.status.success(),
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Deletes the named namespace when dropped.
pub struct DelOnDrop(pub String);

impl Drop for DelOnDrop {
    fn drop(&mut self) {
        if let Err(e) = netns::del_named(&self.0) {
            eprintln!("could not delete namespace {}: {e}", self.0);
        }
    }
}
