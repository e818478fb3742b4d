//! Apps and their 16-bit tags. An app gets a tag when a policy or a container first names it and
//! keeps it while any policy references it or an agent claims it. Released tags are handed out
//! again only after every other free tag (a rotating cursor), so a stale tag is unlikely to
//! meet a new app soon.

use crate::changelog;
use crate::error::{Error, FieldErrors, Result};
use crate::model::{App, Event};
use crate::store::{Row, Tx, Value};

pub const MAX_TAG: i64 = 65535;

/// Checks an app id: 1..=255 printable characters without whitespace.
pub fn validate_id(field: &str, id: &str, errors: &mut FieldErrors) {
    if id.is_empty() {
        errors.push(field, "is required");
    } else if id.len() > 255 {
        errors.push(field, "must be at most 255 characters");
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push(field, "must not contain whitespace or control characters");
    }
}

fn app_from_row(row: &Row) -> Result<App> {
    let tag = row.int(1)?;
    Ok(App {
        id: row.text(0)?,
        tag: u16::try_from(tag)
            .map_err(|_| Error::Store(format!("stored tag {tag} out of range")))?,
        claimed: row.bool(2)?,
    })
}

pub async fn get(tx: &mut dyn Tx, id: &str) -> Result<Option<App>> {
    let rows = tx
        .query(
            "SELECT id, tag, claimed FROM apps WHERE id = $1",
            &[Value::from(id)],
        )
        .await?;
    rows.first().map(app_from_row).transpose()
}

pub async fn list(tx: &mut dyn Tx) -> Result<Vec<App>> {
    let rows = tx
        .query("SELECT id, tag, claimed FROM apps ORDER BY id", &[])
        .await?;
    rows.iter().map(app_from_row).collect()
}

pub async fn count(tx: &mut dyn Tx) -> Result<i64> {
    let rows = tx.query("SELECT COUNT(*) FROM apps", &[]).await?;
    rows.first().map(|r| r.int(0)).unwrap_or(Ok(0))
}

/// The first free tag at or after `from` (1-based), wrapping around once.
async fn free_tag(tx: &mut dyn Tx, from: i64) -> Result<Option<i64>> {
    let from = if (1..=MAX_TAG).contains(&from) {
        from
    } else {
        1
    };
    for start in [from, 1] {
        let rows = tx
            .query(
                "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM apps WHERE tag = CAST($1 AS BIGINT)) \
                 THEN CAST($1 AS BIGINT) ELSE \
                 (SELECT MIN(a.tag + 1) FROM apps a WHERE a.tag >= CAST($1 AS BIGINT) AND \
                  NOT EXISTS (SELECT 1 FROM apps b WHERE b.tag = a.tag + 1)) END",
                &[Value::Int(start)],
            )
            .await?;
        if let Some(tag) = rows.first().map(|r| r.opt_int(0)).transpose()?.flatten() {
            if tag <= MAX_TAG {
                return Ok(Some(tag));
            }
        }
    }
    Ok(None)
}

/// Returns the app, giving it a tag first if it has none. Records the change.
pub async fn ensure(tx: &mut dyn Tx, id: &str) -> Result<App> {
    if let Some(app) = get(tx, id).await? {
        return Ok(app);
    }
    let cursor = changelog::meta(tx, "tag_cursor").await?.unwrap_or(1);
    let Some(tag) = free_tag(tx, cursor).await? else {
        return Err(Error::TagsExhausted(format!(
            "all {MAX_TAG} app tags are in use: app {id:?} cannot get one"
        )));
    };
    tx.execute(
        "INSERT INTO apps (id, tag, claimed) VALUES ($1, $2, FALSE)",
        &[Value::from(id), Value::Int(tag)],
    )
    .await?;
    changelog::set_meta(tx, "tag_cursor", if tag >= MAX_TAG { 1 } else { tag + 1 }).await?;
    let app = App {
        id: id.to_string(),
        tag: tag as u16,
        claimed: false,
    };
    changelog::append(tx, &Event::AppPut { app: app.clone() }).await?;
    Ok(app)
}

fn validated(id: &str) -> Result<()> {
    let mut errors = FieldErrors::default();
    validate_id("id", id, &mut errors);
    errors.into_result()
}

/// An agent holds the app for a running container: it keeps its tag until unclaimed.
pub async fn claim(tx: &mut dyn Tx, id: &str) -> Result<App> {
    validated(id)?;
    let mut app = ensure(tx, id).await?;
    if !app.claimed {
        tx.execute(
            "UPDATE apps SET claimed = TRUE WHERE id = $1",
            &[Value::from(id)],
        )
        .await?;
        app.claimed = true;
        changelog::append(tx, &Event::AppPut { app: app.clone() }).await?;
    }
    Ok(app)
}

/// Drops an agent's claim; the app is released if no policy references it either.
pub async fn unclaim(tx: &mut dyn Tx, id: &str) -> Result<Option<App>> {
    validated(id)?;
    let Some(mut app) = get(tx, id).await? else {
        return Err(Error::NotFound(format!("app {id:?} does not exist")));
    };
    if app.claimed {
        tx.execute(
            "UPDATE apps SET claimed = FALSE WHERE id = $1",
            &[Value::from(id)],
        )
        .await?;
        app.claimed = false;
    }
    if release_if_unreferenced(tx, id).await? {
        Ok(None)
    } else {
        changelog::append(tx, &Event::AppPut { app: app.clone() }).await?;
        Ok(Some(app))
    }
}

/// Releases the app (and its tag) if it is not claimed and no policy names it.
pub async fn release_if_unreferenced(tx: &mut dyn Tx, id: &str) -> Result<bool> {
    let Some(app) = get(tx, id).await? else {
        return Ok(false);
    };
    if app.claimed {
        return Ok(false);
    }
    let rows = tx
        .query(
            "SELECT EXISTS (SELECT 1 FROM policies WHERE source_id = $1 OR destination_id = $1)",
            &[Value::from(id)],
        )
        .await?;
    let referenced = match rows.first() {
        Some(r) => r.bool(0)?,
        None => false,
    };
    if referenced {
        return Ok(false);
    }
    tx.execute("DELETE FROM apps WHERE id = $1", &[Value::from(id)])
        .await?;
    changelog::append(tx, &Event::AppDeleted { app }).await?;
    Ok(true)
}
