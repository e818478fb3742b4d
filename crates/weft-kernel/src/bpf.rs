//! BPF objects, maps and tc attachments through libbpf, in-process.
//!
//! libbpf is loaded at run time (`libbpf.so.1`, Debian's `libbpf1`, which iproute2 pulls in),
//! like libnftables in [`crate::nft`]: building weft needs no C headers or libraries, and a
//! host without libbpf still runs everything but the BPF fast path. libbpf does the ELF
//! loading, the map creation, CO-RE and kfunc relocation against the running kernel's BTF,
//! and the tc attachment (a clsact qdisc and a `bpf direct-action` filter, over netlink).

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::sync::OnceLock;

use crate::{Error, Result};

type OpenMem = unsafe extern "C" fn(*const c_void, usize, *const c_void) -> *mut c_void;
type ObjLoad = unsafe extern "C" fn(*mut c_void) -> c_int;
type ObjClose = unsafe extern "C" fn(*mut c_void);
type FindByName = unsafe extern "C" fn(*const c_void, *const c_char) -> *mut c_void;
type Fd = unsafe extern "C" fn(*const c_void) -> c_int;
type MapUpdate = unsafe extern "C" fn(c_int, *const c_void, *const c_void, u64) -> c_int;
type MapKey = unsafe extern "C" fn(c_int, *const c_void) -> c_int;
type MapKeyOut = unsafe extern "C" fn(c_int, *const c_void, *mut c_void) -> c_int;
type TcHookFn = unsafe extern "C" fn(*const TcHook) -> c_int;
type TcOptsFn = unsafe extern "C" fn(*const TcHook, *mut TcOpts) -> c_int;
type SetPrint = unsafe extern "C" fn(*const c_void) -> *const c_void;

struct Api {
    _lib: libloading::Library,
    open_mem: OpenMem,
    load: ObjLoad,
    close: ObjClose,
    find_program: FindByName,
    find_map: FindByName,
    program_fd: Fd,
    map_fd: Fd,
    map_update: MapUpdate,
    map_delete: MapKey,
    map_lookup: MapKeyOut,
    map_next_key: MapKeyOut,
    tc_hook_create: TcHookFn,
    tc_attach: TcOptsFn,
    tc_detach: TcOptsFn,
    tc_query: TcOptsFn,
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| unsafe { load() }.map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Bpf(format!("cannot load libbpf.so.1 (Debian's libbpf1): {e}")))
}

unsafe fn load() -> std::result::Result<Api, libloading::Error> {
    let lib = libloading::Library::new("libbpf.so.1")?;
    if std::env::var_os("WEFT_BPF_DEBUG").is_none() {
        // libbpf prints its own warnings to stderr; errors come back as return codes.
        let set_print = *lib.get::<SetPrint>(b"libbpf_set_print\0")?;
        set_print(std::ptr::null());
    }
    Ok(Api {
        open_mem: *lib.get::<OpenMem>(b"bpf_object__open_mem\0")?,
        load: *lib.get::<ObjLoad>(b"bpf_object__load\0")?,
        close: *lib.get::<ObjClose>(b"bpf_object__close\0")?,
        find_program: *lib.get::<FindByName>(b"bpf_object__find_program_by_name\0")?,
        find_map: *lib.get::<FindByName>(b"bpf_object__find_map_by_name\0")?,
        program_fd: *lib.get::<Fd>(b"bpf_program__fd\0")?,
        map_fd: *lib.get::<Fd>(b"bpf_map__fd\0")?,
        map_update: *lib.get::<MapUpdate>(b"bpf_map_update_elem\0")?,
        map_delete: *lib.get::<MapKey>(b"bpf_map_delete_elem\0")?,
        map_lookup: *lib.get::<MapKeyOut>(b"bpf_map_lookup_elem\0")?,
        map_next_key: *lib.get::<MapKeyOut>(b"bpf_map_get_next_key\0")?,
        tc_hook_create: *lib.get::<TcHookFn>(b"bpf_tc_hook_create\0")?,
        tc_attach: *lib.get::<TcOptsFn>(b"bpf_tc_attach\0")?,
        tc_detach: *lib.get::<TcOptsFn>(b"bpf_tc_detach\0")?,
        tc_query: *lib.get::<TcOptsFn>(b"bpf_tc_query\0")?,
        _lib: lib,
    })
}

/// libbpf returns -errno (1.0 semantics) or NULL with errno set.
fn check(op: &str, rc: c_int) -> Result<c_int> {
    if rc < 0 {
        Err(Error::Io {
            op: op.to_string(),
            source: io::Error::from_raw_os_error(-rc),
        })
    } else {
        Ok(rc)
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("{s:?} contains a NUL byte")))
}

/// A loaded BPF object: its programs are verified and its maps exist while it lives (and
/// afterwards as long as a tc filter holds a program).
pub struct Object {
    api: &'static Api,
    obj: *mut c_void,
}

// SAFETY: the object is only used through &self/&mut self; libbpf objects have no thread
// affinity.
unsafe impl Send for Object {}

impl Object {
    /// Opens an ELF object from memory and loads it into the kernel (verifier, maps, CO-RE
    /// and kfunc relocations). `name` only labels errors.
    pub fn load(name: &str, elf: &[u8]) -> Result<Object> {
        let api = api()?;
        // SAFETY: elf outlives the call (libbpf copies what it keeps); opts may be NULL.
        let obj = unsafe { (api.open_mem)(elf.as_ptr().cast(), elf.len(), std::ptr::null()) };
        if obj.is_null() {
            return Err(Error::Io {
                op: format!("opening BPF object {name}"),
                source: io::Error::last_os_error(),
            });
        }
        let o = Object { api, obj };
        // SAFETY: obj is a valid, opened object.
        check(&format!("loading BPF object {name}"), unsafe {
            (api.load)(o.obj)
        })?;
        Ok(o)
    }

    /// The file descriptor of program `name`.
    pub fn program(&self, name: &str) -> Result<Program> {
        let c = cstring(name)?;
        // SAFETY: obj valid; c outlives the call.
        let p = unsafe { (self.api.find_program)(self.obj, c.as_ptr()) };
        if p.is_null() {
            return Err(Error::Bpf(format!("no program {name} in the object")));
        }
        // SAFETY: p is a program of obj.
        let fd = check(&format!("program {name}"), unsafe {
            (self.api.program_fd)(p)
        })?;
        Ok(Program { fd })
    }

    /// Map `name` of the object.
    pub fn map(&self, name: &str) -> Result<Map> {
        let c = cstring(name)?;
        // SAFETY: obj valid; c outlives the call.
        let m = unsafe { (self.api.find_map)(self.obj, c.as_ptr()) };
        if m.is_null() {
            return Err(Error::Bpf(format!("no map {name} in the object")));
        }
        // SAFETY: m is a map of obj.
        let fd = check(&format!("map {name}"), unsafe { (self.api.map_fd)(m) })?;
        Ok(Map {
            api: self.api,
            fd,
            name: name.to_string(),
        })
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: obj came from open_mem and is closed once.
        unsafe { (self.api.close)(self.obj) }
    }
}

/// A loaded program (valid while its [`Object`] lives).
#[derive(Debug, Clone, Copy)]
pub struct Program {
    fd: c_int,
}

/// A map of a loaded object (valid while its [`Object`] lives). Keys and values are the
/// bytes of the C structs the program declares.
#[derive(Clone)]
pub struct Map {
    api: &'static Api,
    fd: c_int,
    name: String,
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Map({} fd {})", self.name, self.fd)
    }
}

impl Map {
    pub fn update(&self, key: &[u8], value: &[u8]) -> Result<()> {
        // SAFETY: key/value buffers have the map's sizes (the caller's contract, checked by
        // the kernel against the map's key/value size only by length, so callers build them
        // from fixed-size arrays).
        check(&format!("updating map {}", self.name), unsafe {
            (self.api.map_update)(self.fd, key.as_ptr().cast(), value.as_ptr().cast(), 0)
        })
        .map(|_| ())
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        // SAFETY: as in update.
        match check(&format!("deleting from map {}", self.name), unsafe {
            (self.api.map_delete)(self.fd, key.as_ptr().cast())
        }) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// The value of `key` into `value` (whose length is the map's value size); false if absent.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<bool> {
        // SAFETY: as in update.
        match check(&format!("reading map {}", self.name), unsafe {
            (self.api.map_lookup)(self.fd, key.as_ptr().cast(), value.as_mut_ptr().cast())
        }) {
            Ok(_) => Ok(true),
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Every key of the map (`key_size` bytes each).
    pub fn keys(&self, key_size: usize) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut next = vec![0u8; key_size];
            let prev = out.last().map_or(std::ptr::null(), |k| k.as_ptr().cast());
            // SAFETY: prev is NULL (first key) or a key_size buffer; next is key_size bytes.
            let rc = unsafe { (self.api.map_next_key)(self.fd, prev, next.as_mut_ptr().cast()) };
            if rc == -libc::ENOENT {
                return Ok(out);
            }
            check(&format!("listing map {}", self.name), rc)?;
            out.push(next);
        }
    }
}

/// `struct bpf_tc_hook` (libbpf.h). The tail padding is an explicit zeroed field: libbpf
/// rejects (EINVAL) options whose bytes past the last known field are not zero.
#[repr(C)]
struct TcHook {
    sz: usize,
    ifindex: c_int,
    attach_point: u32,
    parent: u32,
    _pad: u32,
}

/// `struct bpf_tc_opts` (libbpf.h), tail padding explicit as in [`TcHook`].
#[repr(C)]
#[derive(Default)]
struct TcOpts {
    sz: usize,
    prog_fd: c_int,
    flags: u32,
    prog_id: u32,
    handle: u32,
    priority: u32,
    _pad: u32,
}

const BPF_TC_INGRESS: u32 = 1;
const BPF_TC_F_REPLACE: u32 = 1;

/// Where a tc filter sits: the ingress of an interface, with a handle and priority of our
/// own (so other filters on the interface are left alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcIngress {
    pub ifindex: u32,
    pub handle: u32,
    pub priority: u32,
}

impl TcIngress {
    fn hook(&self) -> TcHook {
        TcHook {
            sz: std::mem::size_of::<TcHook>(),
            ifindex: self.ifindex as c_int,
            attach_point: BPF_TC_INGRESS,
            parent: 0,
            _pad: 0,
        }
    }

    fn opts(&self) -> TcOpts {
        TcOpts {
            sz: std::mem::size_of::<TcOpts>(),
            handle: self.handle,
            priority: self.priority,
            ..Default::default()
        }
    }

    /// Attaches `prog` (direct action), atomically replacing a filter already at this
    /// handle/priority; creates the clsact qdisc if the interface has none.
    pub fn attach(&self, prog: Program) -> Result<()> {
        let api = api()?;
        let hook = self.hook();
        // SAFETY: hook is a valid bpf_tc_hook.
        let rc = unsafe { (api.tc_hook_create)(&hook) };
        if rc != -libc::EEXIST {
            check(&format!("adding clsact to interface {}", self.ifindex), rc)?;
        }
        let mut opts = self.opts();
        opts.prog_fd = prog.fd;
        opts.flags = BPF_TC_F_REPLACE;
        // SAFETY: hook/opts valid.
        check(
            &format!("attaching to interface {}", self.ifindex),
            unsafe { (api.tc_attach)(&hook, &mut opts) },
        )
        .map(|_| ())
    }

    /// The id of the program attached here, if any.
    pub fn query(&self) -> Result<Option<u32>> {
        let api = api()?;
        let hook = self.hook();
        let mut opts = self.opts();
        // SAFETY: hook/opts valid.
        let rc = unsafe { (api.tc_query)(&hook, &mut opts) };
        if rc == -libc::ENOENT || rc == -libc::EINVAL || rc == -libc::ENODEV {
            return Ok(None);
        }
        check(&format!("querying interface {}", self.ifindex), rc)?;
        Ok(Some(opts.prog_id))
    }

    /// Removes the filter at this handle/priority (none there is fine).
    pub fn detach(&self) -> Result<()> {
        let api = api()?;
        let hook = self.hook();
        let mut opts = self.opts();
        // SAFETY: hook/opts valid.
        let rc = unsafe { (api.tc_detach)(&hook, &mut opts) };
        if rc == -libc::ENOENT || rc == -libc::EINVAL || rc == -libc::ENODEV {
            return Ok(());
        }
        check(&format!("detaching from interface {}", self.ifindex), rc).map(|_| ())
    }
}

/// Whether this kernel has what the conntrack-gated fast path needs: BTF and the conntrack
/// kfuncs (the object's load fails with a verifier message otherwise; this is the cheap
/// early answer for status output).
pub fn kernel_has_btf() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_structs_have_libbpf_sizes() {
        // libbpf 1.x: bpf_tc_hook is 24 bytes, bpf_tc_opts 32 (both end in `size_t :0`).
        assert_eq!(std::mem::size_of::<TcHook>(), 24);
        assert_eq!(std::mem::size_of::<TcOpts>(), 32);
    }
}
