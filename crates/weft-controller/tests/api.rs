//! Every endpoint, its errors and its validation, on SQLite and PostgreSQL.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{api_error, eventually, TestStore};
use weft_api::client::ClientError;
use weft_api::model::{Event, Policy, Ports, Protocol, WatchMessage};

on_both_backends!(
    leases_acquire_renew_release,
    lease_pool_exhausted,
    lease_expiry_returns_subnet,
    policies_and_tags,
    watch_snapshot_changes_and_resume,
    restart_loses_nothing,
    operations_endpoints,
    concurrent_lease_acquisitions,
    tags_cannot_be_exhausted_by_one_host,
    claims_without_a_lease_are_dropped_after_the_grace,
);

fn tcp(src: &str, dst: &str, port: u16) -> Policy {
    Policy::new(
        src,
        dst,
        Protocol::Tcp,
        Some(Ports {
            start: port,
            end: port,
        }),
    )
}

async fn leases_acquire_renew_release(store: TestStore) {
    let (server, c) = store.start().await;
    let a = c.acquire_lease("host-a", "192.0.2.1").await.unwrap();
    assert_eq!(a.subnet.prefix_len(), 24);
    assert!(a.subnet.to_string().starts_with("10.255."));
    let o = a.subnet.network().octets();
    assert_eq!(
        a.vtep_mac,
        format!("ee:ee:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    );
    // Same host again (a restarted agent): same subnet.
    let again = c.acquire_lease("host-a", "192.0.2.1").await.unwrap();
    assert_eq!(again.subnet, a.subnet);
    let b = c.acquire_lease("host-b", "192.0.2.2").await.unwrap();
    assert_ne!(b.subnet, a.subnet);
    let renewed = c.renew_lease("host-a").await.unwrap();
    assert_eq!(renewed.subnet, a.subnet);
    assert!(renewed.expires_at >= a.expires_at);

    // Errors.
    let (status, code, _) = api_error(c.renew_lease("nobody").await.unwrap_err());
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, fields) = api_error(c.acquire_lease("", "not-an-ip").await.unwrap_err());
    assert_eq!((status, code.as_str()), (400, "validation_failed"));
    assert_eq!(fields, vec!["host", "underlay_ip"]);
    let (status, _, fields) = api_error(c.acquire_lease("h", "0.0.0.0").await.unwrap_err());
    assert_eq!((status, fields), (400, vec!["underlay_ip".to_string()]));
    let (status, code, _) = api_error(c.acquire_lease("host-c", "192.0.2.1").await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "conflict"));

    // Listing and release.
    let list = c.leases().await.unwrap();
    assert_eq!(list.pool_size, 256);
    assert_eq!(list.leases.len(), 2);
    c.release_lease("host-a").await.unwrap();
    c.release_lease("host-a").await.unwrap(); // not an error
    let hosts: Vec<String> = c
        .leases()
        .await
        .unwrap()
        .leases
        .into_iter()
        .map(|l| l.host)
        .collect();
    assert_eq!(hosts, vec!["host-b"]);
    server.shutdown().await;
}

async fn lease_pool_exhausted(store: TestStore) {
    let mut args = store.args();
    args.overlay_cidr = "10.9.0.0/24".parse().unwrap();
    args.host_prefix = 26;
    let (server, c) = common::start(args).await;
    let mut subnets = HashSet::new();
    for i in 0..4 {
        let l = c
            .acquire_lease(&format!("h{i}"), &format!("192.0.2.{}", i + 1))
            .await
            .unwrap();
        assert!(subnets.insert(l.subnet));
    }
    let (status, code, _) = api_error(c.acquire_lease("h4", "192.0.2.9").await.unwrap_err());
    assert_eq!((status, code.as_str()), (503, "pool_exhausted"));
    // A held subnet is given back to its host even when the pool is full.
    assert!(c.acquire_lease("h0", "192.0.2.1").await.is_ok());
    server.shutdown().await;
}

async fn lease_expiry_returns_subnet(store: TestStore) {
    let mut args = store.args();
    args.overlay_cidr = "10.9.0.0/24".parse().unwrap();
    args.host_prefix = 24; // a pool of one subnet
    args.lease_ttl = 1;
    let (server, c) = common::start(args).await;
    let first = c.acquire_lease("old-host", "192.0.2.1").await.unwrap();
    let claimed = c.claim_app("old-host", "app-x").await;
    match c.acquire_lease("new-host", "192.0.2.2").await {
        Err(e) => assert_eq!(api_error(e).0, 503),
        Ok(second) => {
            // Only possible when the first lease had already expired (a loaded machine can
            // take longer than the 1 s TTL between the two calls): never while it is valid.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert!(
                first.expires_at <= now,
                "the subnet was given to another host while its lease was valid: {first:?} {second:?}"
            );
            assert_eq!(second.subnet, first.subnet);
            server.shutdown().await;
            return;
        }
    }
    eventually(Duration::from_secs(20), "the lease to expire", || async {
        c.leases()
            .await
            .map(|l| l.leases.is_empty())
            .unwrap_or(false)
    })
    .await;
    let second = c.acquire_lease("new-host", "192.0.2.2").await.unwrap();
    assert_eq!(second.subnet, first.subnet);
    // The expired host's claims went with its lease: nobody runs app-x, no policy names it.
    if claimed.is_ok() {
        let (status, _, _) = api_error(c.app("app-x").await.unwrap_err());
        assert_eq!(status, 404, "app-x's tag is reclaimed");
    }
    server.shutdown().await;
}

/// Before: one credential claimed all 65,535 tags (60.9 s, one client) and every other app
/// got `503 tags_exhausted`. Now a host claims at most --max-claims-per-host apps, only while
/// it holds a lease, and what it claimed is released with its lease.
async fn tags_cannot_be_exhausted_by_one_host(store: TestStore) {
    let (server, c) = store.start().await;
    c.acquire_lease("h1", "192.0.2.1").await.unwrap();
    // All the tags in one claim set: refused whole, naming the limit.
    let all: Vec<String> = (0..65_532).map(|i| format!("a{i}")).collect();
    let (status, code, _) = api_error(c.set_claims("h1", &all).await.unwrap_err());
    assert_eq!((status, code.as_str()), (422, "claim_limit_exceeded"));
    let msg = c.set_claims("h1", &all).await.unwrap_err().to_string();
    assert!(
        msg.contains("256") && msg.contains("--max-claims-per-host"),
        "{msg}"
    );
    assert!(c.apps().await.unwrap().apps.is_empty(), "nothing half done");
    // One at a time: the limit holds too.
    let mut claimed = 0;
    let err = loop {
        match c.claim_app("h1", &all[claimed]).await {
            Ok(_) => claimed += 1,
            Err(e) => break e,
        }
        assert!(claimed <= 256, "more claims than the limit");
    };
    assert_eq!(claimed, 256);
    assert_eq!(api_error(err).0, 422);
    // Claiming one it holds again is no new claim.
    c.claim_app("h1", &all[0]).await.unwrap();
    // Everyone else still gets tags.
    c.acquire_lease("h2", "192.0.2.2").await.unwrap();
    let victim = c.claim_app("h2", "victim").await.unwrap();
    assert!(victim.claimed);
    // A policy names an app nobody runs yet: it gets a tag from the policy.
    c.create_policies(&[tcp("victim", "planned", 80)])
        .await
        .unwrap();
    // The claim set is the placement: the apps h1 no longer runs are released.
    let now: Vec<String> = vec![all[0].clone(), "planned".into()];
    let apps = c.set_claims("h1", &now).await.unwrap().apps;
    assert_eq!(
        apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec![all[0].as_str(), "planned"]
    );
    assert_eq!(c.claims("h1").await.unwrap().apps.len(), 2);
    assert_eq!(c.apps().await.unwrap().apps.len(), 3);
    // h1 leaves: what only it ran is released; what a policy names keeps its tag.
    let planned = c.app("planned").await.unwrap();
    c.release_lease("h1").await.unwrap();
    assert_eq!(api_error(c.app(&all[0]).await.unwrap_err()).0, 404);
    let kept = c.app("planned").await.unwrap();
    assert_eq!((kept.tag, kept.claimed), (planned.tag, false));
    assert!(c.app("victim").await.unwrap().claimed, "h2's claim stands");
    assert!(c.claims("h1").await.unwrap().apps.is_empty());
    // A host without a lease claims nothing.
    assert_eq!(api_error(c.claim_app("h1", "x").await.unwrap_err()).0, 409);
    server.shutdown().await;
}

async fn policies_and_tags(store: TestStore) {
    let (server, c) = store.start().await;
    let p1 = tcp("app-a", "app-b", 8080);
    let p2 = Policy::new(
        "app-b",
        "app-c",
        Protocol::Udp,
        Some(Ports {
            start: 5000,
            end: 5100,
        }),
    );
    let p3 = Policy::new("app-a", "app-c", Protocol::Icmp, None);
    let r = c
        .create_policies(&[p1.clone(), p2.clone(), p3.clone()])
        .await
        .unwrap();
    assert_eq!(r.changed, 3);
    // Idempotent.
    let r2 = c.create_policies(std::slice::from_ref(&p1)).await.unwrap();
    assert_eq!(r2.changed, 0);
    assert_eq!(r2.revision, r.revision);

    let all = c.policies(None).await.unwrap();
    assert_eq!(all.total_policies, Some(3));
    let untagged: Vec<Policy> = all.policies.iter().map(Policy::untagged).collect();
    assert_eq!(untagged, vec![p1.clone(), p2.clone(), p3.clone()]);
    let apps = c.apps().await.unwrap().apps;
    assert_eq!(apps.len(), 3);
    let tags: HashSet<u16> = apps.iter().map(|a| a.tag).collect();
    assert_eq!(tags.len(), 3, "tags are distinct");
    assert!(tags.iter().all(|t| *t >= 1));
    let tag_of = |id: &str| apps.iter().find(|a| a.id == id).map(|a| a.tag);
    assert_eq!(all.policies[0].source.tag, tag_of("app-a"));
    assert_eq!(all.policies[0].destination.tag, tag_of("app-b"));

    // Filter by app id: source or destination.
    let for_a = c.policies(Some(&["app-a"])).await.unwrap();
    assert_eq!(for_a.policies.len(), 2);
    let for_bc = c.policies(Some(&["app-b"])).await.unwrap();
    assert_eq!(for_bc.policies.len(), 2);

    // Validation names each field.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/networking/v1/external/policies", server.url()))
        .body(r#"{"policies":[{"source":{"id":"x"},"destination":{"id":"y","protocol":"sctp","ports":{"start":0,"end":1}}},{"source":{},"destination":{"id":"y","protocol":"tcp","ports":{"start":9,"end":8}}}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: weft_api::model::ErrorBody = resp.json().await.unwrap();
    let fields: Vec<String> = body.fields.iter().map(|f| f.field.clone()).collect();
    assert_eq!(
        fields,
        vec![
            "policies[0].destination.protocol",
            "policies[1].source.id",
            "policies[1].destination.ports"
        ]
    );
    let resp = http
        .post(format!("{}/networking/v1/external/policies", server.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Claims keep an app (and its tag) alive; deleting policies releases the others. A claim
    // names its host, which must hold a lease.
    let (status, code, fields) = api_error(c.claim_app("", "app-c").await.unwrap_err());
    assert_eq!((status, code.as_str()), (400, "validation_failed"));
    assert_eq!(fields, vec!["host"]);
    let (status, _, _) = api_error(c.claim_app("h1", "app-c").await.unwrap_err());
    assert_eq!(status, 409, "no lease, no claim");
    c.acquire_lease("h1", "192.0.2.1").await.unwrap();
    let claimed = c.claim_app("h1", "app-c").await.unwrap();
    assert!(claimed.claimed);
    assert_eq!(Some(claimed.tag), tag_of("app-c"));
    let old_a = tag_of("app-a").unwrap();
    let r = c
        .delete_policies(&[p1.clone(), p2.clone(), p3.clone()])
        .await
        .unwrap();
    assert_eq!(r.changed, 3);
    assert_eq!(
        c.delete_policies(std::slice::from_ref(&p1))
            .await
            .unwrap()
            .changed,
        0
    );
    let left: Vec<String> = c
        .apps()
        .await
        .unwrap()
        .apps
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(left, vec!["app-c"]);
    assert_eq!(c.app("app-c").await.unwrap().tag, claimed.tag);
    // A new app does not get a just-released tag while other tags are free.
    let fresh = c.claim_app("h1", "app-d").await.unwrap();
    assert_ne!(fresh.tag, old_a);
    assert_ne!(fresh.tag, claimed.tag);
    // Unclaim: released (204) since no policy names it.
    assert_eq!(c.unclaim_app("h1", "app-c").await.unwrap(), None);
    let (status, _, _) = api_error(c.app("app-c").await.unwrap_err());
    assert_eq!(status, 404);
    let (status, _, _) = api_error(c.unclaim_app("h1", "app-c").await.unwrap_err());
    assert_eq!(status, 404);
    // Unclaim of an app a policy names: kept, 200 with the app.
    c.create_policies(&[tcp("app-d", "app-e", 80)])
        .await
        .unwrap();
    let kept = c
        .unclaim_app("h1", "app-d")
        .await
        .unwrap()
        .expect("still referenced");
    assert_eq!(kept.tag, fresh.tag);
    assert!(!kept.claimed);
    server.shutdown().await;
}

async fn next_change(w: &mut weft_api::client::WatchStream) -> weft_api::model::Change {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .expect("a watch message in time")
            .expect("watch stream ok")
            .expect("stream still open");
        match msg {
            WatchMessage::Change(c) => return c,
            WatchMessage::Heartbeat { .. } => continue,
            WatchMessage::Snapshot(s) => panic!("unexpected snapshot at {}", s.revision),
        }
    }
}

async fn watch_snapshot_changes_and_resume(store: TestStore) {
    let (server, c) = store.start().await;
    c.acquire_lease("h1", "192.0.2.1").await.unwrap();
    let mut w = c.watch(None).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    let WatchMessage::Snapshot(snap) = first else {
        panic!("first message must be a snapshot, got {first:?}");
    };
    assert_eq!(snap.leases.len(), 1);
    let r = c.create_policies(&[tcp("a", "b", 80)]).await.unwrap();
    let mut seen = Vec::new();
    while seen.last().map(|c: &weft_api::model::Change| c.revision) != Some(r.revision) {
        seen.push(next_change(&mut w).await);
    }
    let kinds: Vec<&str> = seen
        .iter()
        .map(|c| match &c.event {
            Event::AppPut { .. } => "app_put",
            Event::PolicyCreated { .. } => "policy_created",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["app_put", "app_put", "policy_created"]);
    assert!(seen.windows(2).all(|p| p[0].revision < p[1].revision));
    let last = seen.last().unwrap().revision;
    drop(w);

    // Changes while disconnected, then resume: exactly the missed changes, no snapshot.
    c.acquire_lease("h2", "192.0.2.2").await.unwrap();
    c.create_policies(&[tcp("a", "c", 81)]).await.unwrap();
    c.release_lease("h1").await.unwrap();
    let expected = server.controller().changes_after(last, 1000).await.unwrap();
    assert_eq!(expected.len(), 4); // lease_put, app_put (c), policy_created, lease_deleted
    let mut w = c.watch(Some(last)).await.unwrap();
    let mut resumed = Vec::new();
    for _ in 0..expected.len() {
        resumed.push(next_change(&mut w).await);
    }
    assert_eq!(resumed, expected);
    // And it stays live.
    let r = c.create_policies(&[tcp("a", "b", 82)]).await.unwrap();
    let live = next_change(&mut w).await;
    assert_eq!(live.revision, r.revision);

    // A resume from the future (e.g. another database) gets a snapshot.
    let mut w = c.watch(Some(r.revision + 1000)).await.unwrap();
    assert!(matches!(
        w.next().await.unwrap(),
        Some(WatchMessage::Snapshot(_))
    ));

    // Bad since.
    let resp = reqwest::get(format!("{}/v1/watch?since=-3", server.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

async fn restart_loses_nothing(store: TestStore) {
    let (server, c) = store.start().await;
    let lease = c.acquire_lease("h1", "192.0.2.1").await.unwrap();
    c.create_policies(&[tcp("a", "b", 80)]).await.unwrap();
    c.claim_app("h1", "z").await.unwrap();
    let before = server.controller().snapshot().await.unwrap();
    server.shutdown().await;

    let (server, c) = store.start().await;
    let after = server.controller().snapshot().await.unwrap();
    assert_eq!(after, before);
    let again = c.acquire_lease("h1", "192.0.2.1").await.unwrap();
    assert_eq!(again.subnet, lease.subnet);
    // Revisions keep increasing across the restart.
    let r = c.create_policies(&[tcp("a", "b", 81)]).await.unwrap();
    assert!(r.revision > before.revision);
    server.shutdown().await;
}

async fn operations_endpoints(store: TestStore) {
    let (server, c) = store.start().await;
    let h = c.health().await.unwrap();
    assert_eq!(h.status, "ok");
    assert_eq!(
        h.store,
        match store.backend {
            common::Backend::Sqlite => "sqlite",
            common::Backend::Postgres => "postgres",
        }
    );
    c.acquire_lease("h1", "192.0.2.1").await.unwrap();
    let m = c.metrics().await.unwrap();
    assert!(m.contains("weft_leases_held 1"), "{m}");
    assert!(m.contains("weft_leases_free 255"), "{m}");
    assert!(m.contains("weft_http_requests_total{method=\"POST\",route=\"/v1/leases/acquire\",status=\"200\"} 1"), "{m}");
    assert!(
        m.contains("weft_http_request_duration_seconds_count{route=\"/v1/leases/acquire\"} 1"),
        "{m}"
    );
    let doc = c.openapi().await.unwrap();
    for path in [
        "/healthz",
        "/metrics",
        "/v1/leases/acquire",
        "/v1/leases/renew",
        "/v1/leases/release",
        "/v1/apps/{id}",
        "/v1/watch",
        "/networking/v1/external/policies",
        "/networking/v1/external/policies/delete",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    let resp = reqwest::get(format!("{}/nope", server.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/leases/acquire", server.url()))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

/// 500 hosts at once. On PostgreSQL through two controllers sharing the database.
async fn concurrent_lease_acquisitions(store: TestStore) {
    let mut args = store.args();
    args.overlay_cidr = "10.240.0.0/12".parse().unwrap();
    args.host_prefix = 24; // 4096 subnets
    let (s1, c1) = common::start(args.clone()).await;
    let second = if store.backend == common::Backend::Postgres {
        Some(common::start(args.clone()).await)
    } else {
        None
    };
    let c2 = second
        .as_ref()
        .map(|(_, c)| c.clone())
        .unwrap_or_else(|| c1.clone());
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
        tasks.push(tokio::spawn(async move {
            let ip = format!("10.0.{}.{}", i / 250, i % 250 + 1);
            c.acquire_lease(&format!("host-{i}"), &ip).await
        }));
    }
    let mut subnets = HashSet::new();
    for t in tasks {
        let lease = t.await.unwrap().expect("every acquisition succeeds");
        assert!(
            subnets.insert(lease.subnet),
            "subnet {} given twice",
            lease.subnet
        );
    }
    assert_eq!(subnets.len(), 500);
    let listed = c2.leases().await.unwrap().leases;
    assert_eq!(listed.len(), 500);
    let listed: HashSet<_> = listed.into_iter().map(|l| l.subnet).collect();
    assert_eq!(listed, subnets);
    if let Some((s2, _)) = second {
        s2.shutdown().await;
    }
    s1.shutdown().await;
}

/// Claims from before claims had hosts (migration 2 gives them host "") and claims of hosts
/// without a lease are dropped by the sweep after the restart grace, with their apps.
async fn claims_without_a_lease_are_dropped_after_the_grace(store: TestStore) {
    let mut args = store.args();
    args.lease_ttl = 1;
    let (server, c) = common::start(args).await;
    common::execute_sql(
        &server,
        "INSERT INTO apps (id, tag, claimed) VALUES ('legacy', 9, TRUE); \
         INSERT INTO app_claims (app_id, host) VALUES ('legacy', '')",
    )
    .await;
    assert!(c.app("legacy").await.unwrap().claimed);
    eventually(
        Duration::from_secs(20),
        "the legacy claim to go",
        || async {
            matches!(
                c.app("legacy").await,
                Err(ClientError::Api { status: 404, .. })
            )
        },
    )
    .await;
    server.shutdown().await;
}

/// The header timeout also closes idle connections, but never a watch stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_do_not_cut_a_watch_stream() {
    let store = TestStore::new(common::Backend::Sqlite, "watch_timeouts")
        .await
        .unwrap();
    let mut args = store.args();
    args.header_timeout = 1;
    args.body_timeout = 1;
    let (server, c) = common::start(args).await;
    let mut w = c.watch(None).await.unwrap();
    assert!(matches!(
        w.next().await.unwrap(),
        Some(WatchMessage::Snapshot(_))
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.create_policies(&[tcp("a", "b", 80)]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match w.next().await.unwrap() {
                Some(WatchMessage::Change(ch))
                    if matches!(ch.event, Event::PolicyCreated { .. }) =>
                {
                    break
                }
                Some(_) => continue,
                None => panic!("the watch stream was cut"),
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no change on the watch");
    server.shutdown().await;
}
