//! PostgreSQL backend: a connection pool, writes serialised across all controllers sharing the
//! database by a transaction-level advisory lock, and change fan-out by `LISTEN`/`NOTIFY`.

use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Row, Store, Tx, TxMode, Value};
use crate::error::{Error, Result};

/// Key of the advisory lock every write transaction takes ("weft" in ASCII).
const WRITE_LOCK: i64 = 0x7765_6674;
/// The channel on which committed changes are announced.
const CHANNEL: &str = "weft_changes";
const POOL_SIZE: usize = 16;

pub struct PgStore {
    pool: Pool,
    signal: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(format!("postgres: {e}"))
}

/// The URL with any password hidden, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<PgStore> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| anyhow::anyhow!("--store {}: {e}", redacted(url)))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| anyhow::anyhow!("postgres pool: {e}"))?;
        let signal = Arc::new(Notify::new());
        // First connection: check the server is reachable and migrate.
        {
            let client = pool.get().await.map_err(|e| {
                anyhow::anyhow!("cannot connect to PostgreSQL at {}: {e}", redacted(url))
            })?;
            let mut tx = PgTx::begin(client, TxMode::Write, signal.clone()).await?;
            super::migrations::run(&mut tx, false).await?;
            Box::new(tx).commit().await?;
        }
        let listener = tokio::spawn(listen(config, signal.clone()));
        Ok(PgStore {
            pool,
            signal,
            listener,
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Holds a `LISTEN` connection and turns every notification into a wake-up of the change feed.
/// Reconnects after errors; wakes the feed after each (re)connect so nothing is missed meanwhile.
async fn listen(config: tokio_postgres::Config, signal: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let sig = signal.clone();
                let pump = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(msg) = messages.next().await {
                        match msg {
                            Ok(AsyncMessage::Notification(_)) => sig.notify_one(),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "postgres listen connection failed");
                                break;
                            }
                        }
                    }
                    let _ = done_tx.send(());
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        signal.notify_one();
                        let _ = done_rx.await;
                    }
                    Err(e) => tracing::warn!(error = %e, "postgres LISTEN failed"),
                }
                pump.abort();
            }
            Err(e) => tracing::warn!(error = %e, "postgres listen connection failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn begin(&self, mode: TxMode) -> Result<Box<dyn Tx + '_>> {
        let client = self.pool.get().await.map_err(store_err)?;
        Ok(Box::new(
            PgTx::begin(client, mode, self.signal.clone()).await?,
        ))
    }

    fn change_signal(&self) -> Arc<Notify> {
        self.signal.clone()
    }
}

struct PgTx {
    client: Option<Object>,
    touched: bool,
    signal: Arc<Notify>,
}

impl PgTx {
    async fn begin(client: Object, mode: TxMode, signal: Arc<Notify>) -> Result<PgTx> {
        let sql = match mode {
            TxMode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_string(),
            TxMode::Write => format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
            ),
        };
        let tx = PgTx {
            client: Some(client),
            touched: false,
            signal,
        };
        tx.client()?.batch_execute(&sql).await.map_err(store_err)?;
        Ok(tx)
    }

    fn client(&self) -> Result<&Object> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::Store("transaction already finished".into()))
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = client.batch_execute("ROLLBACK").await {
                        tracing::warn!(error = %e, "postgres rollback failed");
                        // Do not return a connection in an unknown state to the pool.
                        let _ = Object::take(client);
                    }
                });
            }
            Err(_) => {
                let _ = Object::take(client);
            }
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.to_sql(ty, out)
    }
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

fn read_row(row: &tokio_postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Value::Int(v.into())))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| Value::Int(v.into())))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map(|v| v.map(Value::Bool))
        } else {
            row.try_get::<_, Option<String>>(i)
                .map(|v| v.map(Value::Text))
        }
        .map_err(store_err)?;
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

#[async_trait]
impl Tx for PgTx {
    async fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await.map_err(store_err)?;
        client
            .execute(&stmt, &params(values))
            .await
            .map_err(store_err)
    }

    async fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await.map_err(store_err)?;
        let rows = client
            .query(&stmt, &params(values))
            .await
            .map_err(store_err)?;
        rows.iter().map(read_row).collect()
    }

    async fn batch(&mut self, sql: &str) -> Result<()> {
        self.client()?.batch_execute(sql).await.map_err(store_err)
    }

    fn touched_changelog(&mut self) {
        self.touched = true;
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let sql = if self.touched {
            format!("SELECT pg_notify('{CHANNEL}', ''); COMMIT")
        } else {
            "COMMIT".to_string()
        };
        let client = self
            .client
            .take()
            .ok_or_else(|| Error::Store("transaction already finished".into()))?;
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = Object::take(client);
            return Err(store_err(e));
        }
        if self.touched {
            self.signal.notify_one();
        }
        Ok(())
    }
}
