//! SQLite backend: one connection, writes serialised by `BEGIN IMMEDIATE`. The embedded default
//! for one controller; several controllers must not share one SQLite file (use PostgreSQL).
//!
//! SQLite calls are short and run inline on the async task that owns the connection lock.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;
use tokio::sync::{Mutex, MutexGuard, Notify};

use super::{sqlite_sql, Row, Store, Tx, TxMode, Value};
use crate::error::{Error, Result};

pub struct SqliteStore {
    conn: Mutex<Connection>,
    signal: Arc<Notify>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create state directory {}: {e}", dir.display())
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open SQLite store {}: {e}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> anyhow::Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> anyhow::Result<SqliteStore> {
        let store = SqliteStore {
            conn: Mutex::new(conn),
            signal: Arc::new(Notify::new()),
        };
        // Migrations run synchronously here: the store is not shared yet.
        let guard = store
            .conn
            .try_lock()
            .map_err(|_| anyhow::anyhow!("SQLite store busy during setup"))?;
        let mut tx = SqliteTx::begin(guard, TxMode::Write, store.signal.clone())?;
        futures_util::FutureExt::now_or_never(super::migrations::run(&mut tx, true))
            .ok_or_else(|| anyhow::anyhow!("SQLite migration did not complete synchronously"))??;
        tx.commit_now()?;
        Ok(store)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn begin(&self, mode: TxMode) -> Result<Box<dyn Tx + '_>> {
        let guard = self.conn.lock().await;
        Ok(Box::new(SqliteTx::begin(guard, mode, self.signal.clone())?))
    }

    fn change_signal(&self) -> Arc<Notify> {
        self.signal.clone()
    }
}

struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
    done: bool,
    touched: bool,
    signal: Arc<Notify>,
}

fn store_err(e: rusqlite::Error) -> Error {
    Error::Store(format!("sqlite: {e}"))
}

fn to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Int(i) => SqlValue::Integer(*i),
        Value::Text(s) => SqlValue::Text(s.clone()),
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Null => SqlValue::Null,
    }
}

impl<'a> SqliteTx<'a> {
    fn begin(
        conn: MutexGuard<'a, Connection>,
        mode: TxMode,
        signal: Arc<Notify>,
    ) -> Result<SqliteTx<'a>> {
        let sql = match mode {
            TxMode::Read => "BEGIN DEFERRED",
            TxMode::Write => "BEGIN IMMEDIATE",
        };
        conn.execute_batch(sql).map_err(store_err)?;
        Ok(SqliteTx {
            conn,
            done: false,
            touched: false,
            signal,
        })
    }

    fn commit_now(mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(store_err)?;
        self.done = true;
        if self.touched {
            self.signal.notify_one();
        }
        Ok(())
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "sqlite rollback failed");
            }
        }
    }
}

#[async_trait]
impl Tx for SqliteTx<'_> {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached(&sqlite_sql(sql))
            .map_err(store_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter().map(to_sql)))
            .map_err(store_err)?;
        Ok(n as u64)
    }

    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self
            .conn
            .prepare_cached(&sqlite_sql(sql))
            .map_err(store_err)?;
        let ncols = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_sql)))
            .map_err(store_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(store_err)? {
            let mut values = Vec::with_capacity(ncols);
            for i in 0..ncols {
                values.push(match row.get_ref(i).map_err(store_err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Blob(_) => {
                        return Err(Error::Store(format!("column {i}: unexpected blob")))
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    async fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(store_err)
    }

    fn touched_changelog(&mut self) {
        self.touched = true;
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        (*self).commit_now()
    }
}
