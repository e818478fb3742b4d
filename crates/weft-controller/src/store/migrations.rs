//! Schema migrations, applied in order at startup inside one write transaction; each version is
//! recorded in `schema_migrations`. Written in PostgreSQL's dialect; [`for_sqlite`] rewrites the
//! few differences.

use super::{Tx, Value};
use crate::error::{Error, Result};

/// (version, SQL). Append new versions; never edit a released one.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    CREATE TABLE changes (
        revision BIGSERIAL PRIMARY KEY,
        event TEXT NOT NULL
    );
    CREATE TABLE leases (
        host TEXT PRIMARY KEY,
        idx BIGINT NOT NULL UNIQUE,
        subnet TEXT NOT NULL UNIQUE,
        underlay_ip TEXT NOT NULL UNIQUE,
        vtep_mac TEXT NOT NULL UNIQUE,
        acquired_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX leases_expires_at ON leases (expires_at);
    CREATE TABLE apps (
        id TEXT PRIMARY KEY,
        tag BIGINT NOT NULL UNIQUE CHECK (tag BETWEEN 1 AND 65535),
        claimed BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE TABLE policies (
        id BIGSERIAL PRIMARY KEY,
        source_id TEXT NOT NULL,
        destination_id TEXT NOT NULL,
        protocol TEXT NOT NULL,
        start_port BIGINT NOT NULL,
        end_port BIGINT NOT NULL,
        UNIQUE (source_id, destination_id, protocol, start_port, end_port)
    );
    CREATE INDEX policies_destination_id ON policies (destination_id);
    ",
    ),
    // Claims per host: the bound per host and the release of a host's claims with its lease.
    // Claims made before (apps.claimed without a host) get no row: they are dropped, with their
    // apps if nothing else holds them, by the first lease sweep after the restart grace, by
    // which time every running agent has claimed its apps again under its own host.
    (
        2,
        "
    CREATE TABLE app_claims (
        app_id TEXT NOT NULL,
        host TEXT NOT NULL,
        PRIMARY KEY (app_id, host)
    );
    CREATE INDEX app_claims_host ON app_claims (host);
    INSERT INTO app_claims (app_id, host) SELECT id, '' FROM apps WHERE claimed;
    ",
    ),
    // Placement: the containers each host reports (internal DNS, per-host filtering).
    (
        3,
        "
    CREATE TABLE instances (
        host TEXT NOT NULL,
        id TEXT NOT NULL,
        app TEXT NOT NULL,
        instance_index BIGINT,
        ip TEXT NOT NULL,
        PRIMARY KEY (host, id)
    );
    CREATE INDEX instances_app ON instances (app);
    ",
    ),
    // Egress: destinations (rules as JSON, validated on write) and egress policies. The mode
    // is the meta key egress_deny (absent: allow).
    (
        4,
        "
    CREATE TABLE egress_destinations (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        rules TEXT NOT NULL
    );
    CREATE TABLE egress_policies (
        id BIGSERIAL PRIMARY KEY,
        source_id TEXT NOT NULL,
        destination_id TEXT NOT NULL REFERENCES egress_destinations (id),
        UNIQUE (source_id, destination_id)
    );
    CREATE INDEX egress_policies_destination_id ON egress_policies (destination_id);
    ",
    ),
];

/// The newest schema version this controller knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0)
}

fn for_sqlite(sql: &str) -> String {
    sql.replace("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT")
}

/// Brings the schema up to date. The caller holds a write transaction (and so the write lock:
/// two controllers starting at once do not both migrate).
pub(crate) async fn run(tx: &mut dyn Tx, sqlite: bool) -> Result<()> {
    tx.batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
        .await?;
    let rows = tx
        .query(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    let current = match rows.first() {
        Some(row) => row.int(0)?,
        None => 0,
    };
    let known = latest();
    if current > known {
        // A newer controller migrated this database: its tables may mean something this
        // version would misread or overwrite. Refuse rather than guess.
        return Err(Error::Store(format!(
            "the database schema is at version {current}, newer than this controller knows \
             (version {known}): run a controller of the version that migrated it (or newer)"
        )));
    }
    for (version, sql) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        tracing::info!(version, "applying schema migration");
        let sql = if sqlite {
            for_sqlite(sql)
        } else {
            sql.to_string()
        };
        tx.batch(&sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[Value::Int(*version)],
        )
        .await?;
    }
    Ok(())
}
