//! The store: one trait, two backends (SQLite embedded, PostgreSQL for many controllers).
//!
//! A backend only knows how to open transactions and run SQL; the SQL itself is written once, in
//! the module of the resource it belongs to (`leases`, `apps`, `policies`, `changelog`), in the
//! dialect both databases share (`$1` parameters, `ON CONFLICT`, `RETURNING`, `CAST`).
//!
//! Write transactions are serialised: SQLite by `BEGIN IMMEDIATE` on one connection, PostgreSQL
//! by a transaction-level advisory lock taken first in every write transaction. So every write
//! sees the latest state, subnets and tags are never handed out twice, and revisions commit in
//! the order they were assigned (a watcher reading the change log in order misses nothing).

mod migrations;
pub mod postgres;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// A value bound to or read from SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
    Bool(bool),
    Null,
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn get(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| Error::Store(format!("result row has no column {i}")))
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        match self.get(i)? {
            Value::Int(v) => Ok(*v),
            other => Err(Error::Store(format!(
                "column {i}: expected integer, got {other:?}"
            ))),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub fn text(&self, i: usize) -> Result<String> {
        match self.get(i)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(Error::Store(format!(
                "column {i}: expected text, got {other:?}"
            ))),
        }
    }

    pub fn bool(&self, i: usize) -> Result<bool> {
        match self.get(i)? {
            Value::Bool(v) => Ok(*v),
            Value::Int(v) => Ok(*v != 0),
            other => Err(Error::Store(format!(
                "column {i}: expected boolean, got {other:?}"
            ))),
        }
    }
}

/// Whether a transaction writes (and so takes the store's write lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    Read,
    Write,
}

/// An open transaction. Dropping it without [`Tx::commit`] rolls it back.
#[async_trait]
pub trait Tx: Send {
    /// Runs one statement; returns the number of rows changed.
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs one query and returns all its rows.
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Runs several statements without parameters (migrations).
    async fn batch(&mut self, sql: &str) -> Result<()>;
    /// Marks that this transaction appended to the change log, so that watchers are woken on commit.
    fn touched_changelog(&mut self);
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// A database holding the controller's state.
#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    async fn begin(&self, mode: TxMode) -> Result<Box<dyn Tx + '_>>;
    /// Notified (`notify_one`) whenever the change log may have grown, by this controller or, on
    /// PostgreSQL, by any controller sharing the database.
    fn change_signal(&self) -> Arc<Notify>;
}

/// Opens a store from a URL: `sqlite:PATH`, `sqlite::memory:` or `postgres://...`, and runs the
/// schema migrations.
pub async fn open(url: &str, state_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path == ":memory:" {
            Ok(Arc::new(sqlite::SqliteStore::open_in_memory()?))
        } else {
            let path = if Path::new(path).is_absolute() {
                Path::new(path).to_path_buf()
            } else {
                state_dir.join(path)
            };
            Ok(Arc::new(sqlite::SqliteStore::open(&path)?))
        }
    } else {
        anyhow::bail!(
            "--store {url:?}: expected sqlite:PATH, sqlite::memory: or postgres://USER@HOST/DB"
        )
    }
}

/// Most rows one multi-row statement (`VALUES (...), (...)`, `IN (...)`) carries.
pub(crate) const MAX_STATEMENT_ROWS: usize = 1024;

/// Splits `items` into the slices that multi-row statements carry: powers of two, largest first,
/// each at most [`MAX_STATEMENT_ROWS`]. A batch of any size then costs a few statements, and only
/// a few distinct statement texts exist (each backend caches one prepared statement per text).
pub(crate) fn statement_chunks<T>(items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_STATEMENT_ROWS);
        let size = 1usize << (usize::BITS - 1 - n.leading_zeros());
        let (head, tail) = rest.split_at(size);
        out.push(head);
        rest = tail;
    }
    out
}

/// `$1, $2, ..., $n`.
pub(crate) fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2), ($3, $4), ...`: `rows` rows of `cols` parameters, row by row.
pub(crate) fn value_rows(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Converts the shared SQL dialect's `$N` parameters to SQLite's `?N`.
pub(crate) fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_chunks_are_powers_of_two_in_order() {
        let items: Vec<usize> = (0..3000).collect();
        let sizes: Vec<usize> = statement_chunks(&items).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1024, 1024, 512, 256, 128, 32, 16, 8]);
        let joined: Vec<usize> = statement_chunks(&items).concat();
        assert_eq!(joined, items);
        assert!(statement_chunks::<usize>(&[]).is_empty());
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(3), "$1, $2, $3");
    }
}
