//! nftables through libnftables, in-process: each [`Nft::run`] is one atomic transaction
//! (the whole script commits or nothing does), and no `nft` process is spawned.
//!
//! libnftables is loaded at run time (`libnftables.so.1`, from Debian's `libnftables1`, which
//! the `nftables` package pulls in), so building weft needs no C headers.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::{Error, Result};

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type SetFlags = unsafe extern "C" fn(*mut c_void, c_uint);

const NFT_CTX_OUTPUT_HANDLE: c_uint = 1 << 3;
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;
/// Listings without set and map elements (`nft -t`).
const NFT_CTX_OUTPUT_TERSE: c_uint = 1 << 11;

struct Api {
    _lib: libloading::Library,
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    get_output: CtxStr,
    get_error: CtxStr,
    run_cmd: RunCmd,
    output_set_flags: SetFlags,
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| unsafe { load() }.map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| {
            Error::Nft(format!(
                "cannot load libnftables.so.1 (install Debian's nftables package): {e}"
            ))
        })
}

unsafe fn load() -> std::result::Result<Api, libloading::Error> {
    let lib = libloading::Library::new("libnftables.so.1")?;
    let ctx_new = *lib.get::<CtxNew>(b"nft_ctx_new\0")?;
    let ctx_free = *lib.get::<CtxFree>(b"nft_ctx_free\0")?;
    let buffer_output = *lib.get::<CtxInt>(b"nft_ctx_buffer_output\0")?;
    let buffer_error = *lib.get::<CtxInt>(b"nft_ctx_buffer_error\0")?;
    let get_output = *lib.get::<CtxStr>(b"nft_ctx_get_output_buffer\0")?;
    let get_error = *lib.get::<CtxStr>(b"nft_ctx_get_error_buffer\0")?;
    let run_cmd = *lib.get::<RunCmd>(b"nft_run_cmd_from_buffer\0")?;
    let output_set_flags = *lib.get::<SetFlags>(b"nft_ctx_output_set_flags\0")?;
    Ok(Api {
        _lib: lib,
        ctx_new,
        ctx_free,
        buffer_output,
        buffer_error,
        get_output,
        get_error,
        run_cmd,
        output_set_flags,
    })
}

/// A libnftables context in the network namespace of the thread that created it.
pub struct Nft {
    api: &'static Api,
    ctx: *mut c_void,
}

impl Nft {
    pub fn new() -> Result<Self> {
        let api = api()?;
        // SAFETY: plain C constructor; a null return is handled.
        let ctx = unsafe { (api.ctx_new)(0) };
        if ctx.is_null() {
            return Err(Error::Nft("nft_ctx_new failed".into()));
        }
        // SAFETY: ctx is a valid context owned by us.
        unsafe {
            (api.buffer_output)(ctx);
            (api.buffer_error)(ctx);
        }
        Ok(Nft { api, ctx })
    }

    /// Runs an nft script as one transaction and returns what it printed.
    pub fn run(&mut self, script: &str) -> Result<String> {
        self.run_with_flags(script, 0)
    }

    /// Runs a (listing) command and returns its JSON output.
    /// Like [`Nft::run`], listings show each rule's handle (`nft -a`: `# handle N`).
    pub fn run_with_handles(&mut self, script: &str) -> Result<String> {
        self.run_with_flags(script, NFT_CTX_OUTPUT_HANDLE)
    }

    pub fn run_json(&mut self, script: &str) -> Result<String> {
        self.run_with_flags(script, NFT_CTX_OUTPUT_JSON)
    }

    /// Runs a listing without set and map elements (`nft -t`): a table's structure, as cheap
    /// with a million elements as with none.
    pub fn run_terse(&mut self, script: &str) -> Result<String> {
        self.run_with_flags(script, NFT_CTX_OUTPUT_TERSE)
    }

    fn run_with_flags(&mut self, script: &str, flags: c_uint) -> Result<String> {
        let c =
            CString::new(script).map_err(|_| Error::Nft("script contains a NUL byte".into()))?;
        // SAFETY: ctx valid; c outlives the call; returned buffers are owned by ctx and
        // copied out before the next call.
        unsafe {
            (self.api.output_set_flags)(self.ctx, flags);
            let rc = (self.api.run_cmd)(self.ctx, c.as_ptr());
            let out = cstr((self.api.get_output)(self.ctx));
            let err = cstr((self.api.get_error)(self.ctx));
            if rc != 0 {
                return Err(Error::Nft(if err.trim().is_empty() {
                    format!("transaction failed (rc {rc})")
                } else {
                    err.trim().to_string()
                }));
            }
            Ok(out)
        }
    }

    /// Writes a whole table unless it is already there with `fingerprint` in its listing (its
    /// comment). `script` must replace the table in one transaction (`add table`, `delete
    /// table`, then the definition). Returns whether it wrote.
    pub fn ensure_table(
        &mut self,
        family: &str,
        name: &str,
        fingerprint: &str,
        script: &str,
    ) -> Result<bool> {
        if self.table_matches(family, name, fingerprint)? {
            return Ok(false);
        }
        self.run(script)?;
        Ok(true)
    }

    /// Is the table there with `fingerprint` in its listing (its comment)? (A terse listing:
    /// the cost does not grow with the table's elements.)
    pub fn table_matches(&mut self, family: &str, name: &str, fingerprint: &str) -> Result<bool> {
        match self.run_terse(&format!("list table {family} {name}")) {
            Ok(listing) => Ok(listing.contains(fingerprint)),
            Err(Error::Nft(m)) if m.contains("No such file") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Does `family name` table exist?
    pub fn table_exists(&mut self, family: &str, name: &str) -> Result<bool> {
        match self.run_terse(&format!("list table {family} {name}")) {
            Ok(_) => Ok(true),
            Err(Error::Nft(m)) if m.contains("No such file") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        // SAFETY: ctx was created by ctx_new and is freed once.
        unsafe { (self.api.ctx_free)(self.ctx) }
    }
}
