//! The change log: every change gets the next global revision, in the `changes` table, in the
//! same transaction as the change itself. Watchers read it in revision order.

use crate::error::{Error, Result};
use crate::store::{statement_chunks, value_rows, Tx, Value};
use weft_api::model::{Change, Event};

/// How many changes the log keeps; a watcher resuming from an older revision gets a snapshot.
pub const RETAINED_CHANGES: i64 = 100_000;

/// Appends an event to the log and returns its revision.
pub async fn append(tx: &mut dyn Tx, event: &Event) -> Result<i64> {
    let json = serde_json::to_string(event).map_err(Error::store)?;
    let rows = tx
        .query(
            "INSERT INTO changes (event) VALUES ($1) RETURNING revision",
            &[Value::Text(json)],
        )
        .await?;
    tx.touched_changelog();
    rows.first()
        .ok_or_else(|| Error::Store("INSERT ... RETURNING gave no row".into()))?
        .int(0)
}

/// Appends several events, in order (one revision each, increasing), with a few multi-row
/// statements; returns the last revision (or `None` for no events).
pub async fn append_all(tx: &mut dyn Tx, events: &[Event]) -> Result<Option<i64>> {
    let mut last = None;
    for chunk in statement_chunks(events) {
        let params = chunk
            .iter()
            .map(|e| serde_json::to_string(e).map(Value::Text))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::store)?;
        let sql = format!(
            "INSERT INTO changes (event) VALUES {} RETURNING revision",
            value_rows(chunk.len(), 1)
        );
        let rows = tx.query(&sql, &params).await?;
        tx.touched_changelog();
        for row in &rows {
            let revision = row.int(0)?;
            last = Some(last.map_or(revision, |l: i64| l.max(revision)));
        }
    }
    Ok(last)
}

/// The revision of the latest change (0 for an empty store).
pub async fn revision(tx: &mut dyn Tx) -> Result<i64> {
    let rows = tx
        .query(
            "SELECT COALESCE(MAX(revision), 0), \
             COALESCE((SELECT value FROM meta WHERE key = 'log_floor'), 0) FROM changes",
            &[],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Store("no revision row".into()))?;
    Ok(row.int(0)?.max(row.int(1)?))
}

/// The highest revision no longer in the log: changes after it can be replayed.
pub async fn floor(tx: &mut dyn Tx) -> Result<i64> {
    let rows = tx
        .query("SELECT value FROM meta WHERE key = 'log_floor'", &[])
        .await?;
    match rows.first() {
        Some(r) => r.int(0),
        None => Ok(0),
    }
}

/// Up to `limit` changes with a revision above `after`, in order.
pub async fn after(tx: &mut dyn Tx, after: i64, limit: i64) -> Result<Vec<Change>> {
    let rows = tx
        .query(
            "SELECT revision, event FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2",
            &[Value::Int(after), Value::Int(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let revision = r.int(0)?;
            let event: Event = serde_json::from_str(&r.text(1)?).map_err(|e| {
                Error::Store(format!("change log revision {revision} unreadable: {e}"))
            })?;
            Ok(Change { revision, event })
        })
        .collect()
}

/// Drops all but the newest `keep` changes and records the new floor.
pub async fn prune(tx: &mut dyn Tx, keep: i64) -> Result<()> {
    let rows = tx
        .query("SELECT COALESCE(MAX(revision), 0) FROM changes", &[])
        .await?;
    let max = match rows.first() {
        Some(r) => r.int(0)?,
        None => 0,
    };
    let new_floor = max - keep;
    if new_floor <= floor(tx).await? {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM changes WHERE revision <= $1",
        &[Value::Int(new_floor)],
    )
    .await?;
    set_meta(tx, "log_floor", new_floor).await
}

/// Reads an integer from the `meta` table.
pub async fn meta(tx: &mut dyn Tx, key: &str) -> Result<Option<i64>> {
    let rows = tx
        .query("SELECT value FROM meta WHERE key = $1", &[Value::from(key)])
        .await?;
    rows.first().map(|r| r.int(0)).transpose()
}

/// Writes an integer to the `meta` table.
pub async fn set_meta(tx: &mut dyn Tx, key: &str, value: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[Value::from(key), Value::Int(value)],
    )
    .await?;
    Ok(())
}
