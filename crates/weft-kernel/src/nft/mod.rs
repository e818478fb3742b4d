//! nftables through libnftables, in-process, and the typed table model that weft writes and
//! reads back.
//!
//! - [`Nft`]: a libnftables context. Each [`Nft::run`] / [`Nft::apply`] is one atomic
//!   transaction (the whole script commits or nothing does); no `nft` process is spawned.
//!   libnftables is loaded at run time (`libnftables.so.1`, from Debian's `libnftables1`,
//!   which the `nftables` package pulls in), so building weft needs no C headers.
//! - [`Table`] and its parts ([`Set`], [`Element`], [`Value`], [`Chain`], [`Rule`]): one
//!   type both ways. Rendered ([`Table::replace_script`], [`Transaction`]) into what
//!   [`Nft::apply`] runs, and parsed back from the kernel by [`Nft::list_table`], with rule
//!   counters and handles and set elements with theirs. Readers ([`Table::counter_of_rule`],
//!   [`Table::elements`], [`Table::matches`], [`Set::lookup`]) work on the type, never on
//!   listing text; [`Nft::list_sets`] reads a table's sets alone, from one listing.
//! - [`Expr`]: typed pieces of rule expressions (`meta mark`, `ct`, raw payload, concatenated
//!   keys, set references, `vmap`, `update`), shared by a set's `typeof` key and its rules.
//!
//! ```no_run
//! use weft_kernel::nft::{Chain, Family, Nft, Rule, Table, Verdict};
//!
//! # fn main() -> weft_kernel::Result<()> {
//! let table = Table::new(Family::Inet, "example")
//!     .with_comment("example v1")
//!     .with_chain(
//!         Chain::base("input", "filter", "input", 0, Verdict::Accept)
//!             .with_rule(Rule::new("tcp dport 23").counter().drop().comment("telnet")),
//!     );
//! let mut nft = Nft::new()?;
//! nft.ensure(&table)?; // written unless the kernel has it with this comment
//! let read = nft.list_table(Family::Inet, "example")?.expect("the table");
//! let dropped = read.counter_of_rule("telnet").map_or(0, |c| c.packets);
//! # let _ = dropped;
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: a table is written whole or not at all (one transaction), and a reader sees
//! the kernel's table through the same type that wrote it. Kernel objects owned: nftables
//! tables, sets, maps, chains, rules and elements, in the calling thread's network namespace.

mod expr;
mod model;
mod parse;
mod render;

pub use expr::{Base, Ct, Expr, Meta};

pub use model::{
    Chain, Counter, Element, Family, Hook, Rule, Set, SetFlag, SetKey, SetKind, Table, Value,
    Verdict,
};
pub use render::Transaction;

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

    /// Applies `tx` as one transaction (nothing when it is empty).
    pub fn apply(&mut self, tx: &Transaction) -> Result<()> {
        if !tx.is_empty() {
            self.run(tx.script())?;
        }
        Ok(())
    }

    /// Writes `table` (replacing any table of its name, in one transaction) unless the
    /// kernel's has the same comment (weft's fingerprint of what the table depends on).
    /// Returns whether it wrote.
    pub fn ensure(&mut self, table: &Table) -> Result<bool> {
        let fingerprint = table.comment.as_deref().unwrap_or_default();
        self.ensure_table(
            table.family.as_str(),
            &table.name,
            fingerprint,
            &table.replace_script(),
        )
    }

    /// The table `family name` as the kernel has it, with its elements, counters and
    /// handles; `None` when there is no such table.
    pub fn list_table(&mut self, family: Family, name: &str) -> Result<Option<Table>> {
        let cmd = format!("list table {family} {name}");
        let mut attempts = 0;
        loop {
            let Some(json) = absent_is_none(self.run_json(&cmd))? else {
                return Ok(None);
            };
            let Some(text) = absent_is_none(
                self.run_with_flags(&cmd, NFT_CTX_OUTPUT_TERSE | NFT_CTX_OUTPUT_HANDLE),
            )?
            else {
                return Ok(None);
            };
            match parse::table(&json, &text) {
                Ok(t) => return Ok(Some(t)),
                // Rewritten between the two listings: list again (a few times).
                Err(parse::Listing::Changed(_)) if attempts < 3 => attempts += 1,
                Err(parse::Listing::Changed(m) | parse::Listing::Malformed(m)) => {
                    return Err(Error::Nft(m))
                }
            }
        }
    }

    /// The sets and maps of table `family name` with their elements (and their counters and
    /// comments), from one JSON listing: no rules and no second listing, so cheaper than
    /// [`Nft::list_table`] on a hot path. A `typeof` key reads as its data types. `None` when
    /// there is no such table.
    pub fn list_sets(&mut self, family: Family, name: &str) -> Result<Option<Vec<Set>>> {
        let cmd = format!("list table {family} {name}");
        match absent_is_none(self.run_json(&cmd))? {
            Some(json) => parse::sets(&json).map(Some).map_err(Error::Nft),
            None => Ok(None),
        }
    }

    /// The names of the tables of `family`, as the kernel lists them.
    pub fn list_tables(&mut self, family: Family) -> Result<Vec<String>> {
        let json = self.run_json(&format!("list tables {family}"))?;
        parse::table_names(&json).map_err(Error::Nft)
    }

    /// The comment of table `family name` (`Some(None)`: a table without one; `None`: no
    /// such table). A terse listing: the cost does not grow with the table's elements.
    pub fn table_comment(&mut self, family: &str, name: &str) -> Result<Option<Option<String>>> {
        let listing = self.run_terse(&format!("list table {family} {name}"));
        Ok(absent_is_none(listing)?.map(|text| parse::text_listing(&text).comment))
    }

    /// Writes a whole table unless it is already there with `fingerprint` as its comment.
    /// `script` must replace the table in one transaction (`add table`, `delete table`, then
    /// the definition: [`Table::replace_script`]). Returns whether it wrote.
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

    /// Is the table there with `fingerprint` as its comment? (A terse listing: the cost does
    /// not grow with the table's elements.)
    pub fn table_matches(&mut self, family: &str, name: &str, fingerprint: &str) -> Result<bool> {
        Ok(self.table_comment(family, name)?.flatten().as_deref() == Some(fingerprint))
    }

    /// Does `family name` table exist?
    pub fn table_exists(&mut self, family: &str, name: &str) -> Result<bool> {
        Ok(absent_is_none(self.run_terse(&format!("list table {family} {name}")))?.is_some())
    }
}

/// A listing's answer, `None` when what it lists does not exist.
fn absent_is_none(r: Result<String>) -> Result<Option<String>> {
    match r {
        Ok(s) => Ok(Some(s)),
        Err(Error::Nft(m)) if m.contains("No such file") => Ok(None),
        Err(e) => Err(e),
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
