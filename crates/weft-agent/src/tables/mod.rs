//! The agent's nftables tables, each on weft-kernel's typed model ([`weft_kernel::nft`]):
//! built as a [`Table`](weft_kernel::nft::Table) (pure), written in one transaction, read
//! back with [`Nft::list_table`](weft_kernel::nft::Nft::list_table). Each module owns its
//! table's names (table, sets, chains, rule comments) as constants for every reader.
//!
//! - [`policy`]: `inet weft-policy`: marking, default deny, anti-spoofing and anti-forgery,
//!   all failing closed (desired elements + diff + one transaction)
//! - [`nat`]: `ip weft-agent`: the host's masquerade and forward rules
//! - [`egress`]: `inet weft-egress`: what local overlay containers may reach outside the
//!   overlay (egress policy; still written as nft script text, not yet on the typed model)
//!
//! Invariant: a table is written whole or not at all; a transaction that fails leaves the
//! kernel's table as it was (see [`PolicySync`] for what the agent does then).

mod apply;
pub mod egress;
pub mod nat;
pub mod policy;

pub use apply::{Backoff, PolicySync};

use weft_kernel::nft::{Family, Nft, Transaction};

/// Where the tables' transactions go: the kernel ([`Nft`]) or, in tests, a kernel that fails
/// on demand.
pub trait Kernel {
    /// Is table `family name` there with `fingerprint` as its comment?
    fn table_matches(
        &mut self,
        family: Family,
        name: &str,
        fingerprint: &str,
    ) -> weft_kernel::Result<bool>;
    /// Is table `family name` there at all?
    fn table_exists(&mut self, family: Family, name: &str) -> weft_kernel::Result<bool>;
    /// Applies `tx` as one transaction.
    fn apply(&mut self, tx: &Transaction) -> weft_kernel::Result<()>;
}

impl Kernel for Nft {
    fn table_matches(
        &mut self,
        family: Family,
        name: &str,
        fingerprint: &str,
    ) -> weft_kernel::Result<bool> {
        Nft::table_matches(self, family.as_str(), name, fingerprint)
    }

    fn table_exists(&mut self, family: Family, name: &str) -> weft_kernel::Result<bool> {
        Nft::table_exists(self, family.as_str(), name)
    }

    fn apply(&mut self, tx: &Transaction) -> weft_kernel::Result<()> {
        Nft::apply(self, tx)
    }
}
