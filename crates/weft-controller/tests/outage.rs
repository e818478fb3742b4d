//! Issue 15, item 6: an outage of the controller does not renumber the hosts. Leases outlive
//! it (no lease expires during the grace after a start, on any path), a returning host gets
//! its previous subnet back, expirations are logged and counted; a controller refuses a
//! database whose schema is newer than it knows, and upgrades one of schema 1 (before claims
//! per host) keeping leases and tags. On SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{eventually, Backend, TestStore};
use weft_api::client::ClientError;

on_both_backends!(
    leases_outlive_an_outage_and_expire_after_the_grace,
    a_returning_host_gets_its_previous_subnet,
    a_newer_schema_is_refused_naming_both_versions,
    a_database_of_schema_1_is_upgraded_keeping_leases_and_tags,
);

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Hosts a and b hold leases; the controller is down past their expiry; when a new one starts
/// on the same store, host c's acquisition (the path that used to expire every lease at once)
/// leaves a and b alone, and so does the sweep, until the grace is over. Then unrenewed leases
/// expire, each logged and counted.
async fn leases_outlive_an_outage_and_expire_after_the_grace(store: TestStore) {
    let mut args = store.args();
    args.lease_ttl = 1;
    args.lease_grace = Some(0);
    let (server, c) = common::start(args.clone()).await;
    let a = c.acquire_lease("host-a", "192.0.2.1").await.unwrap();
    let b = c.acquire_lease("host-b", "192.0.2.2").await.unwrap();
    server.shutdown().await;
    // Down past both expiries.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    args.lease_grace = Some(4);
    let (server, c) = common::start(args).await;
    let new = c.acquire_lease("host-c", "192.0.2.3").await.unwrap();
    let held = c.leases().await.unwrap().leases;
    let hosts: Vec<&str> = held.iter().map(|l| l.host.as_str()).collect();
    assert_eq!(
        hosts.len(),
        3,
        "no lease expired during the grace: {held:?}"
    );
    assert!(new.subnet != a.subnet && new.subnet != b.subnet, "{new:?}");
    // Host a comes back (its renewal is late) and keeps its subnet.
    let renewed = c.renew_lease("host-a").await.unwrap();
    assert_eq!(renewed.subnet, a.subnet);
    // An expired lease's underlay address is still its own during the grace.
    let taken = c.acquire_lease("host-x", "192.0.2.2").await.unwrap_err();
    assert_eq!(taken.status(), Some(409), "{taken}");
    let m = c.metrics().await.unwrap();
    assert_eq!(metric(&m, "weft_leases_expired_total"), Some(0.0), "{m}");

    // After the grace the sweep expires what nobody renewed (b, and by now a and c too).
    eventually(
        Duration::from_secs(20),
        "host-b's lease to expire",
        || async {
            c.leases()
                .await
                .is_ok_and(|l| l.leases.iter().all(|l| l.host != "host-b"))
        },
    )
    .await;
    let m = c.metrics().await.unwrap();
    assert!(
        metric(&m, "weft_leases_expired_total").unwrap_or(0.0) >= 1.0,
        "expirations are counted: {m}"
    );
    server.shutdown().await;
}

/// A host whose lease is gone asks for the subnet it had (from its lease file): it gets it
/// when it is free, another one when it is taken, and a subnet that is not one of the pool's
/// is refused naming the field.
async fn a_returning_host_gets_its_previous_subnet(store: TestStore) {
    let (server, c) = store.start().await;
    let a = c.acquire_lease("host-a", "192.0.2.1").await.unwrap();
    c.release_lease("host-a").await.unwrap();
    // The rotating cursor would give the next host a fresh subnet, not a's.
    let x = c.acquire_lease("host-x", "192.0.2.9").await.unwrap();
    assert_ne!(x.subnet, a.subnet);
    let back = c
        .acquire_lease_preferring("host-a", "192.0.2.1", Some(a.subnet))
        .await
        .unwrap();
    assert_eq!(
        back.subnet, a.subnet,
        "a returning host gets its subnet back"
    );
    // Taken by a: another host asking for it gets another one.
    let y = c
        .acquire_lease_preferring("host-y", "192.0.2.10", Some(a.subnet))
        .await
        .unwrap();
    assert!(y.subnet != a.subnet && y.subnet != x.subnet, "{y:?}");
    // Already holding a lease: that one, whatever is asked for.
    let again = c
        .acquire_lease_preferring("host-a", "192.0.2.1", Some(x.subnet))
        .await
        .unwrap();
    assert_eq!(again.subnet, a.subnet);
    for bad in ["10.0.0.0/24", "10.255.7.5/24", "10.255.8.0/25"] {
        let e = c
            .acquire_lease_preferring("host-z", "192.0.2.11", Some(bad.parse().unwrap()))
            .await
            .unwrap_err();
        match e {
            ClientError::Api { status, body } => {
                assert_eq!(status, 400, "{bad}: {body:?}");
                assert!(
                    body.fields.iter().any(|f| f.field == "subnet"),
                    "{bad}: {body:?}"
                );
            }
            other => panic!("{bad}: expected 400, got {other}"),
        }
    }
    server.shutdown().await;
}

/// A database migrated by a newer controller: this one refuses to start, saying which
/// version the database has and which it knows.
async fn a_newer_schema_is_refused_naming_both_versions(store: TestStore) {
    let (server, _c) = store.start().await;
    server.shutdown().await;
    match store.backend {
        Backend::Sqlite => {
            let path = store.url.strip_prefix("sqlite:").unwrap();
            let db = rusqlite::Connection::open(path).unwrap();
            db.execute("INSERT INTO schema_migrations (version) VALUES (99)", [])
                .unwrap();
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&store.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let task = tokio::spawn(conn);
            client
                .batch_execute("INSERT INTO schema_migrations (version) VALUES (99)")
                .await
                .unwrap();
            drop(client);
            let _ = task.await;
        }
    }
    let err = match store.args().start().await {
        Ok(s) => {
            s.shutdown().await;
            panic!("a controller started on a schema newer than it knows");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("version 99") && err.contains("version 4)"),
        "the error names both versions: {err}"
    );
}

/// A database a controller of schema 1 left (before per-host claims: an app is just
/// `claimed`) is migrated to 2 at start: leases and tags stay; the old claims belong to no
/// host (`""`) until the hosts send their claim sets again, and keep their tags meanwhile.
async fn a_database_of_schema_1_is_upgraded_keeping_leases_and_tags(store: TestStore) {
    let (server, c) = store.start().await;
    let lease = c.acquire_lease("host-a", "192.0.2.1").await.unwrap();
    // Back to schema 1: no app_claims (nor instances) table, an app claimed the old way.
    common::execute_sql(
        &server,
        "DROP TABLE app_claims; DROP TABLE instances; \
         DROP TABLE egress_policies; DROP TABLE egress_destinations; \
         DELETE FROM schema_migrations WHERE version >= 2; \
         INSERT INTO apps (id, tag, claimed) VALUES ('old', 9, TRUE)",
    )
    .await;
    server.shutdown().await;

    let (server, c) = store.start().await;
    let held = c.leases().await.unwrap().leases;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].subnet, lease.subnet);
    let app = c.app("old").await.unwrap();
    assert!(app.claimed && app.tag == 9, "{app:?}");
    // The host sends its claim set: the same tag, now its claim.
    let mine = c.set_claims("host-a", &["old".to_string()]).await.unwrap();
    assert_eq!(mine.apps.len(), 1);
    assert_eq!(mine.apps[0].tag, 9);
    let claims = c.claims("host-a").await.unwrap();
    assert_eq!(claims.apps.len(), 1, "{claims:?}");
    server.shutdown().await;
}
