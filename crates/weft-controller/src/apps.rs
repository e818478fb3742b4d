//! Apps and their 16-bit tags. An app gets a tag when a policy or a container first names it and
//! keeps it while any policy references it or any host claims it. Claims are per host
//! (`app_claims`): a host claims the apps of the containers it runs, at most
//! `--max-claims-per-host` of them, only while it holds a lease; its claims go when it unclaims,
//! sets a claim set without them, releases its lease or lets it expire, and an app then claimed
//! by nobody and named by no policy is released (its tag returns to the pool). Released tags are handed out
//! again only after every other free tag (a rotating cursor), so a stale tag is unlikely to
//! meet a new app soon.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::changelog;
use crate::error::{Error, FieldErrors, Result};
use crate::store::{placeholders, statement_chunks, value_rows, Row, Tx, Value};
use weft_api::model::{App, Event};

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

/// Looks up several apps at once (any number of ids), keyed by id; missing ids are absent.
pub async fn get_many(tx: &mut dyn Tx, ids: &[String]) -> Result<HashMap<String, App>> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in statement_chunks(ids) {
        let sql = format!(
            "SELECT id, tag, claimed FROM apps WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let params: Vec<Value> = chunk.iter().map(Value::from).collect();
        for row in tx.query(&sql, &params).await? {
            let app = app_from_row(&row)?;
            out.insert(app.id.clone(), app);
        }
    }
    Ok(out)
}

/// Up to `limit` runs of free tags `(first, last)` at or after `from`, in order.
async fn free_ranges(tx: &mut dyn Tx, from: i64, limit: usize) -> Result<Vec<(i64, i64)>> {
    // Each used tag at or after `from` (and the sentinel `from - 1`) followed by a gap starts a
    // run of free tags that ends before the next used tag (or at MAX_TAG).
    let rows = tx
        .query(
            "SELECT g.tag + 1, COALESCE(g.next, CAST($3 AS BIGINT)) - 1 FROM \
             (SELECT u.tag, LEAD(u.tag) OVER (ORDER BY u.tag) AS next FROM \
              (SELECT tag FROM apps WHERE tag >= CAST($1 AS BIGINT) \
               UNION ALL SELECT CAST($1 AS BIGINT) - 1) u) g \
             WHERE COALESCE(g.next, CAST($3 AS BIGINT)) > g.tag + 1 \
             ORDER BY g.tag LIMIT $2",
            &[
                Value::Int(from),
                Value::Int(limit as i64),
                Value::Int(MAX_TAG + 1),
            ],
        )
        .await?;
    rows.iter().map(|r| Ok((r.int(0)?, r.int(1)?))).collect()
}

/// The first `n` free tags in the order they are handed out: ascending from `from` (1-based),
/// then wrapping around once to 1. Fewer if fewer are free.
async fn free_tags(tx: &mut dyn Tx, from: i64, n: usize) -> Result<Vec<i64>> {
    let from = if (1..=MAX_TAG).contains(&from) {
        from
    } else {
        1
    };
    let mut tags = Vec::with_capacity(n);
    // [from, MAX_TAG], then [1, from).
    for (start, end) in [(from, MAX_TAG), (1, from - 1)] {
        if tags.len() >= n || start > end {
            continue;
        }
        for (first, last) in free_ranges(tx, start, n - tags.len()).await? {
            let last = last.min(end);
            let mut tag = first;
            while tag <= last && tags.len() < n {
                tags.push(tag);
                tag += 1;
            }
            if tags.len() >= n || last >= end {
                break;
            }
        }
    }
    Ok(tags)
}

/// Returns the apps with these ids, keyed by id, giving the missing ones tags in `ids` order (the
/// order one-at-a-time creation would hand them out). The new apps come back too, in that order:
/// the caller records their `AppPut` events, so that it can interleave them with its own.
pub async fn ensure_all(
    tx: &mut dyn Tx,
    ids: &[String],
) -> Result<(HashMap<String, App>, Vec<App>)> {
    let mut apps = get_many(tx, ids).await?;
    let mut seen = HashSet::new();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !apps.contains_key(*id) && seen.insert(id.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok((apps, Vec::new()));
    }
    let cursor = changelog::meta(tx, "tag_cursor").await?.unwrap_or(1);
    let tags = free_tags(tx, cursor, missing.len()).await?;
    if let Some(id) = missing.get(tags.len()) {
        return Err(Error::TagsExhausted(format!(
            "all {MAX_TAG} app tags are in use: app {id:?} cannot get one"
        )));
    }
    let created: Vec<App> = missing
        .iter()
        .zip(&tags)
        .map(|(id, tag)| App {
            id: id.to_string(),
            tag: *tag as u16,
            claimed: false,
        })
        .collect();
    for chunk in statement_chunks(&created) {
        let sql = format!(
            "INSERT INTO apps (id, tag, claimed) VALUES {}",
            value_rows(chunk.len(), 3)
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|a| {
                [
                    Value::from(&a.id),
                    Value::Int(a.tag.into()),
                    Value::Bool(false),
                ]
            })
            .collect();
        tx.execute(&sql, &params).await?;
    }
    let last = *tags.last().expect("at least one new app");
    changelog::set_meta(tx, "tag_cursor", if last >= MAX_TAG { 1 } else { last + 1 }).await?;
    for app in &created {
        apps.insert(app.id.clone(), app.clone());
    }
    Ok((apps, created))
}

/// Returns the app, giving it a tag first if it has none. Records the change.
pub async fn ensure(tx: &mut dyn Tx, id: &str) -> Result<App> {
    let (mut apps, created) = ensure_all(tx, &[id.to_string()]).await?;
    for app in created {
        changelog::append(tx, &Event::AppPut { app }).await?;
    }
    apps.remove(id)
        .ok_or_else(|| Error::Store(format!("app {id:?} missing after ensure")))
}

fn validated(id: &str) -> Result<()> {
    let mut errors = FieldErrors::default();
    validate_id("id", id, &mut errors);
    errors.into_result()
}

/// The apps `host` claims, by id.
pub async fn claims_of(tx: &mut dyn Tx, host: &str) -> Result<BTreeSet<String>> {
    let rows = tx
        .query(
            "SELECT app_id FROM app_claims WHERE host = $1",
            &[Value::from(host)],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}

/// Every host's claims: host → app ids.
pub async fn all_claims(tx: &mut dyn Tx) -> Result<HashMap<String, BTreeSet<String>>> {
    let rows = tx.query("SELECT host, app_id FROM app_claims", &[]).await?;
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in rows {
        out.entry(r.text(0)?).or_default().insert(r.text(1)?);
    }
    Ok(out)
}

/// Sets `claimed` to whether any host claims the app, recording the change.
async fn refresh_claimed(tx: &mut dyn Tx, app: &mut App) -> Result<bool> {
    let rows = tx
        .query(
            "SELECT EXISTS (SELECT 1 FROM app_claims WHERE app_id = $1)",
            &[Value::from(&app.id)],
        )
        .await?;
    let claimed = match rows.first() {
        Some(r) => r.bool(0)?,
        None => false,
    };
    if claimed == app.claimed {
        return Ok(false);
    }
    tx.execute(
        "UPDATE apps SET claimed = $2 WHERE id = $1",
        &[Value::from(&app.id), Value::Bool(claimed)],
    )
    .await?;
    app.claimed = claimed;
    Ok(true)
}

/// Claims are for hosts that hold a lease: what a host claims goes when its lease does.
async fn needs_lease(tx: &mut dyn Tx, host: &str) -> Result<()> {
    let mut errors = FieldErrors::default();
    crate::leases::validate_host("host", host, &mut errors);
    errors.into_result()?;
    if crate::leases::holds(tx, host).await? {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "host {host:?} holds no lease: acquire one before claiming apps"
    )))
}

fn over_limit(host: &str, n: usize, limit: usize) -> Error {
    Error::ClaimLimit(format!(
        "host {host:?} would claim {n} apps; a host may claim at most {limit} \
         (the controller's --max-claims-per-host)"
    ))
}

/// Makes `ids` exactly the apps `host` claims (the apps of the containers it runs): new ones
/// get tags, the host's other claims are dropped, and apps then claimed by no host and named by
/// no policy are released. At most `limit` apps; the host must hold a lease. Returns the apps
/// of `ids`, in that order.
pub async fn set_claims(
    tx: &mut dyn Tx,
    host: &str,
    ids: &[String],
    limit: usize,
) -> Result<Vec<App>> {
    let mut errors = FieldErrors::default();
    for (i, id) in ids.iter().enumerate() {
        validate_id(&format!("apps[{i}]"), id, &mut errors);
    }
    errors.into_result()?;
    let wanted: BTreeSet<String> = ids.iter().cloned().collect();
    if wanted.len() > limit {
        return Err(over_limit(host, wanted.len(), limit));
    }
    needs_lease(tx, host).await?;
    let current = claims_of(tx, host).await?;
    let added: Vec<String> = ids
        .iter()
        .filter(|id| !current.contains(*id))
        .cloned()
        .collect();
    let (mut apps, created) = ensure_all(tx, &added).await?;
    let mut events: Vec<Event> = created
        .into_iter()
        .map(|app| Event::AppPut { app })
        .collect();
    let mut seen = HashSet::new();
    for id in added.iter().filter(|id| seen.insert(id.as_str())) {
        tx.execute(
            "INSERT INTO app_claims (app_id, host) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[Value::from(id), Value::from(host)],
        )
        .await?;
        let app = apps
            .get_mut(id)
            .ok_or_else(|| Error::Store(format!("app {id:?} missing after ensure")))?;
        if refresh_claimed(tx, app).await? {
            events.push(Event::AppPut { app: app.clone() });
        }
    }
    changelog::append_all(tx, &events).await?;
    let dropped: Vec<String> = current.difference(&wanted).cloned().collect();
    drop_claims(tx, host, &dropped).await?;
    let mut out = Vec::with_capacity(ids.len());
    let kept: Vec<String> = ids
        .iter()
        .filter(|id| !apps.contains_key(*id))
        .cloned()
        .collect();
    apps.extend(get_many(tx, &kept).await?);
    for id in ids {
        out.push(
            apps.get(id)
                .cloned()
                .ok_or_else(|| Error::Store(format!("claimed app {id:?} missing")))?,
        );
    }
    Ok(out)
}

/// Drops `host`'s claims on `ids`; apps left unclaimed and unnamed by policies are released.
async fn drop_claims(tx: &mut dyn Tx, host: &str, ids: &[String]) -> Result<()> {
    for id in ids {
        tx.execute(
            "DELETE FROM app_claims WHERE app_id = $1 AND host = $2",
            &[Value::from(id), Value::from(host)],
        )
        .await?;
        let Some(mut app) = get(tx, id).await? else {
            continue;
        };
        if refresh_claimed(tx, &mut app).await? && !release_if_unreferenced(tx, id).await? {
            changelog::append(tx, &Event::AppPut { app }).await?;
        }
    }
    Ok(())
}

/// Drops every claim of `host` (its lease was released or expired).
pub async fn drop_host_claims(tx: &mut dyn Tx, host: &str) -> Result<()> {
    let ids: Vec<String> = claims_of(tx, host).await?.into_iter().collect();
    drop_claims(tx, host, &ids).await
}

/// Drops the claims of hosts that hold no lease (claims made before claims had hosts, or
/// left by a lease deleted some other way).
pub async fn drop_orphan_claims(tx: &mut dyn Tx) -> Result<()> {
    let rows = tx
        .query(
            "SELECT DISTINCT host FROM app_claims c \
             WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.host = c.host)",
            &[],
        )
        .await?;
    for row in rows {
        let host = row.text(0)?;
        tracing::info!(%host, "dropping the app claims of a host without a lease");
        drop_host_claims(tx, &host).await?;
    }
    Ok(())
}

/// `host` claims one app for a running container: it keeps its tag until no host claims it
/// and no policy names it. Within the host's limit; the host must hold a lease.
pub async fn claim(tx: &mut dyn Tx, host: &str, id: &str, limit: usize) -> Result<App> {
    validated(id)?;
    needs_lease(tx, host).await?;
    let mut current = claims_of(tx, host).await?;
    if !current.contains(id) && current.len() >= limit {
        return Err(over_limit(host, current.len() + 1, limit));
    }
    current.insert(id.to_string());
    let ids: Vec<String> = current.into_iter().collect();
    let apps = set_claims(tx, host, &ids, limit).await?;
    apps.into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| Error::Store(format!("claimed app {id:?} missing")))
}

/// Drops `host`'s claim; the app is released if no other host claims it and no policy names
/// it (`None`), else returned.
pub async fn unclaim(tx: &mut dyn Tx, host: &str, id: &str) -> Result<Option<App>> {
    validated(id)?;
    let mut errors = FieldErrors::default();
    crate::leases::validate_host("host", host, &mut errors);
    errors.into_result()?;
    if get(tx, id).await?.is_none() {
        return Err(Error::NotFound(format!("app {id:?} does not exist")));
    }
    drop_claims(tx, host, &[id.to_string()]).await?;
    if release_if_unreferenced(tx, id).await? {
        return Ok(None);
    }
    get(tx, id).await
}

/// Releases the app (and its tag) if it is not claimed and no policy (c2c or egress) names it.
pub async fn release_if_unreferenced(tx: &mut dyn Tx, id: &str) -> Result<bool> {
    let Some(app) = get(tx, id).await? else {
        return Ok(false);
    };
    if app.claimed {
        return Ok(false);
    }
    let rows = tx
        .query(
            "SELECT EXISTS (SELECT 1 FROM policies WHERE source_id = $1 OR destination_id = $1) \
             OR EXISTS (SELECT 1 FROM egress_policies WHERE source_id = $1)",
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::{Store, TxMode};

    /// One-at-a-time allocation, as `ensure` hands tags out: the first free tag at or after the
    /// cursor, wrapping once; the cursor then moves past it.
    fn reference(used: &BTreeSet<i64>, mut cursor: i64, n: usize) -> Vec<i64> {
        let mut used = used.clone();
        let mut out = Vec::new();
        for _ in 0..n {
            if !(1..=MAX_TAG).contains(&cursor) {
                cursor = 1;
            }
            let Some(tag) = (cursor..=MAX_TAG)
                .chain(1..=MAX_TAG)
                .find(|t| !used.contains(t))
            else {
                break;
            };
            used.insert(tag);
            out.push(tag);
            cursor = if tag >= MAX_TAG { 1 } else { tag + 1 };
        }
        out
    }

    async fn case(store: &dyn Store, used: &[i64], cursor: i64, n: usize) {
        let mut tx = store.begin(TxMode::Write).await.unwrap();
        tx.batch("DELETE FROM apps").await.unwrap();
        for t in used {
            tx.execute(
                "INSERT INTO apps (id, tag, claimed) VALUES ($1, $2, FALSE)",
                &[Value::from(format!("old{t}")), Value::Int(*t)],
            )
            .await
            .unwrap();
        }
        changelog::set_meta(&mut *tx, "tag_cursor", cursor)
            .await
            .unwrap();
        let ids: Vec<String> = (0..n).map(|i| format!("new{i}")).collect();
        let (apps, created) = ensure_all(&mut *tx, &ids).await.unwrap();
        let got: Vec<i64> = created.iter().map(|a| i64::from(a.tag)).collect();
        let want = reference(&used.iter().copied().collect(), cursor, n);
        assert_eq!(got, want, "used {used:?}, cursor {cursor}, n {n}");
        assert_eq!(apps.len(), n);
        let last = *want.last().unwrap();
        let next = if last >= MAX_TAG { 1 } else { last + 1 };
        assert_eq!(
            changelog::meta(&mut *tx, "tag_cursor").await.unwrap(),
            Some(next)
        );
        // Asking again changes nothing.
        let (_, again) = ensure_all(&mut *tx, &ids).await.unwrap();
        assert!(again.is_empty());
    }

    async fn check(store: &dyn Store) {
        case(store, &[], 1, 3).await;
        case(store, &[], 0, 2).await;
        case(store, &[1, 2, 3, 5, 9, 10], 2, 6).await;
        case(store, &[65533, 65535], 65533, 4).await;
        case(store, &[1, 2, 65534], 65534, 4).await;
        case(store, &[4, 6, 7], 6, 5).await;
        case(store, &[4, 6, 7], 70000, 3).await;
        case(store, &[2, 3, 4, 65535], 65535, 3).await;
        case(store, &[], 65535, 2).await;

        // Exhaustion: all but two tags in use; a third new app cannot get one.
        let mut tx = store.begin(TxMode::Write).await.unwrap();
        tx.batch("DELETE FROM apps").await.unwrap();
        tx.batch(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 65535) \
             INSERT INTO apps (id, tag, claimed) \
             SELECT 'old' || CAST(n AS TEXT), n, FALSE FROM s WHERE n <> 7 AND n <> 60000",
        )
        .await
        .unwrap();
        changelog::set_meta(&mut *tx, "tag_cursor", 100)
            .await
            .unwrap();
        let ids: Vec<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
        match ensure_all(&mut *tx, &ids).await {
            Err(Error::TagsExhausted(msg)) => assert!(msg.contains("\"z\""), "{msg}"),
            other => panic!("expected tags exhausted, got {other:?}"),
        }
        let (_, created) = ensure_all(&mut *tx, &ids[..2]).await.unwrap();
        let tags: Vec<u16> = created.iter().map(|a| a.tag).collect();
        assert_eq!(tags, vec![60000, 7]);
    }

    #[tokio::test]
    async fn batch_tags_match_one_at_a_time_sqlite() {
        let store = crate::store::sqlite::SqliteStore::open_in_memory().unwrap();
        check(&store).await;
    }

    #[tokio::test]
    async fn batch_tags_match_one_at_a_time_postgres() {
        let Ok(base) = std::env::var("WEFT_TEST_POSTGRES_URL") else {
            return;
        };
        let schema = format!("apps_unit_{}", std::process::id());
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let store = crate::store::postgres::PgStore::connect(&url)
            .await
            .unwrap();
        check(&store).await;
        drop(store);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    }
}
