//! Placement (issues 18 item 2 and 19 item 1): hosts report the containers they run
//! (`PUT /v1/hosts/{host}/containers`); the controller validates them (bounded, inside the host's
//! lease, one host acting only for itself as for its app claims), stores them, sends their
//! changes on the watch stream and in snapshots, and drops them with the host's lease.

mod common;

use std::time::Duration;

use common::TestStore;
use weft_api::client::ClientError;
use weft_api::model::{Event, Instance, ReportedInstance, WatchMessage};
use weft_api::pki::LabPki;
use weft_api::Client;

on_both_backends!(reported_containers_become_instances_and_go_with_the_lease);

/// Liveness bound of every wait here (never a speed assertion).
const LIVE: Duration = Duration::from_secs(20);

fn reported(id: &str, app: &str, ip: std::net::Ipv4Addr, index: Option<u32>) -> ReportedInstance {
    ReportedInstance {
        id: id.into(),
        app: app.into(),
        index,
        ip,
    }
}

/// The `n`-th address of a subnet.
fn nth(subnet: ipnet::Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    (u32::from(subnet.network()) + n).into()
}

fn api_error(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, Vec<String>, String) {
    match r {
        Err(ClientError::Api { status, body }) => (
            status,
            body.fields.into_iter().map(|f| f.field).collect(),
            body.error,
        ),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next change on the stream (heartbeats skipped), within the liveness bound.
async fn next_event(w: &mut weft_api::client::WatchStream) -> Event {
    loop {
        let msg = tokio::time::timeout(LIVE, w.next())
            .await
            .expect("a change within the liveness bound")
            .expect("watch ok")
            .expect("stream open");
        if let WatchMessage::Change(c) = msg {
            return c.event;
        }
    }
}

async fn reported_containers_become_instances_and_go_with_the_lease(store: TestStore) {
    let (server, client) = store.start().await;
    let l1 = client.acquire_lease("h1", "192.0.2.1").await.unwrap();
    let l2 = client.acquire_lease("h2", "192.0.2.2").await.unwrap();

    // A host without a lease may not report (409), as for claims.
    let (code, _, msg) = api_error(
        client
            .set_containers("h9", &[reported("c", "web", nth(l1.subnet, 2), None)])
            .await,
    );
    assert_eq!(code, 409, "{msg}");
    // An address outside the host's lease: 400 naming the field.
    let (code, fields, msg) = api_error(
        client
            .set_containers(
                "h1",
                &[
                    reported("c1", "web", nth(l1.subnet, 2), None),
                    reported("c2", "web", nth(l2.subnet, 2), None),
                ],
            )
            .await,
    );
    assert_eq!(
        (code, fields),
        (400, vec!["containers[1].ip".to_string()]),
        "{msg}"
    );
    assert!(msg.contains(&l1.subnet.to_string()), "{msg}");
    assert!(client.instances(None).await.unwrap().instances.is_empty());

    let mut w = client.watch(None).await.unwrap();
    let Some(WatchMessage::Snapshot(snap)) = w.next().await.unwrap() else {
        panic!("a watch begins with a snapshot");
    };
    assert!(snap.instances.is_empty());

    // Two containers on h1, one on h2.
    let web0 = reported("c1", "web", nth(l1.subnet, 2), Some(0));
    let db = reported("c2", "db", nth(l1.subnet, 3), None);
    let web1 = reported("c3", "web", nth(l2.subnet, 2), Some(1));
    let got = client
        .set_containers("h1", &[web0.clone(), db.clone()])
        .await
        .unwrap();
    assert_eq!(got.instances.len(), 2);
    client
        .set_containers("h2", std::slice::from_ref(&web1))
        .await
        .unwrap();
    let mut puts = Vec::new();
    for _ in 0..3 {
        match next_event(&mut w).await {
            Event::InstancePut { instance } => puts.push(instance),
            other => panic!("expected instance_put, got {other:?}"),
        }
    }
    puts.sort();
    let expected = vec![
        Instance {
            host: "h1".into(),
            id: "c1".into(),
            app: "web".into(),
            index: Some(0),
            ip: web0.ip,
        },
        Instance {
            host: "h1".into(),
            id: "c2".into(),
            app: "db".into(),
            index: None,
            ip: db.ip,
        },
        Instance {
            host: "h2".into(),
            id: "c3".into(),
            app: "web".into(),
            index: Some(1),
            ip: web1.ip,
        },
    ];
    assert_eq!(puts, expected);
    let web: Vec<String> = client
        .instances(Some("web"))
        .await
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(web, vec!["c1", "c3"]);

    // The same set again changes nothing; a set without c2 deletes it (and only it).
    client
        .set_containers("h1", &[web0.clone(), db.clone()])
        .await
        .unwrap();
    let before = client.health().await.unwrap().revision;
    client
        .set_containers("h1", std::slice::from_ref(&web0))
        .await
        .unwrap();
    assert_eq!(client.health().await.unwrap().revision, before + 1);
    match next_event(&mut w).await {
        Event::InstanceDeleted { instance } => assert_eq!(instance, expected[1]),
        other => panic!("expected instance_deleted, got {other:?}"),
    }
    assert_eq!(
        client.containers("h1").await.unwrap().instances,
        vec![expected[0].clone()]
    );

    // A new watcher gets them in its snapshot, also in parts.
    let mut again = client.watch(None).await.unwrap();
    let Some(WatchMessage::Snapshot(snap)) = again.next().await.unwrap() else {
        panic!("snapshot");
    };
    assert_eq!(
        snap.instances,
        vec![expected[0].clone(), expected[2].clone()]
    );

    // The lease goes: its instances with it.
    client.release_lease("h2").await.unwrap();
    loop {
        match next_event(&mut w).await {
            Event::InstanceDeleted { instance } => {
                assert_eq!(instance, expected[2]);
                break;
            }
            Event::LeaseDeleted { .. } | Event::AppPut { .. } | Event::AppDeleted { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        client.instances(None).await.unwrap().instances,
        vec![expected[0].clone()]
    );
    server.shutdown().await;
}

/// Bodies are bounded and every bad field is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_container_sets_name_the_field() {
    let store = TestStore::new(common::Backend::Sqlite, "placement_bad")
        .await
        .unwrap();
    let (server, client) = store.start().await;
    let l1 = client.acquire_lease("h1", "192.0.2.1").await.unwrap();
    let url = format!("{}/v1/hosts/h1/containers", server.url());
    let http = reqwest::Client::new();
    let put = |body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .put(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: weft_api::model::ErrorBody = r.json().await.unwrap();
            (
                status,
                body.fields.into_iter().map(|f| f.field).collect::<Vec<_>>(),
            )
        }
    };
    let ip = nth(l1.subnet, 2);
    assert_eq!(put("{}".into()).await, (400, vec!["containers".into()]));
    assert_eq!(
        put(format!(
            r#"{{"containers":[{{"id":"c1","app":"web","ip":"{ip}","index":"x"}},{{"id":"c1","app":"","ip":"{ip}"}}]}}"#
        ))
        .await,
        (
            400,
            vec![
                "containers[0].index".to_string(),
                "containers[1].app".to_string()
            ]
        )
    );
    assert_eq!(
        put(format!(
            r#"{{"containers":[{{"id":"c1","app":"web","ip":"{ip}"}},{{"id":"c1","app":"web","ip":"10.255.250.1"}}]}}"#
        ))
        .await,
        (400, vec!["containers[1].id".to_string()])
    );
    let many: Vec<String> = (0..=weft_controller::instances::MAX_PER_HOST)
        .map(|i| format!(r#"{{"id":"c{i}","app":"a","ip":"{ip}"}}"#))
        .collect();
    assert_eq!(
        put(format!(r#"{{"containers":[{}]}}"#, many.join(","))).await,
        (400, vec!["containers".to_string()])
    );
    assert!(client.instances(None).await.unwrap().instances.is_empty());
    server.shutdown().await;
}

/// With TLS, a host reports only its own containers (the certificate's host, as for its app
/// claims); the token may report for any host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_reports_only_its_own_containers() {
    let store = TestStore::new(common::Backend::Sqlite, "placement_tls")
        .await
        .unwrap();
    let pki = LabPki::new(store.dir.path().join("pki"));
    pki.generate(&["127.0.0.1".into()], &["h1".into(), "h2".into()], false)
        .unwrap();
    let mut args = store.args();
    args.insecure_http = false;
    args.tls_cert = Some(pki.server_cert());
    args.tls_key = Some(pki.server_key());
    args.client_ca = Some(pki.ca());
    args.token = Some("s3cret".into());
    let server = args.start().await.unwrap();
    let url = server.url();
    let agent = |host: &str| {
        Client::builder(&url)
            .ca(pki.ca())
            .identity(pki.agent_cert(host), pki.agent_key(host))
            .build()
            .unwrap()
    };
    let (h1, h2) = (agent("h1"), agent("h2"));
    let admin = Client::builder(&url)
        .ca(pki.ca())
        .token("s3cret")
        .build()
        .unwrap();
    let l1 = h1.acquire_lease("", "192.0.2.1").await.unwrap();
    let l2 = h2.acquire_lease("", "192.0.2.2").await.unwrap();
    let c2 = reported("c", "web", nth(l2.subnet, 2), None);
    let (code, _, msg) = api_error(h1.set_containers("h2", std::slice::from_ref(&c2)).await);
    assert_eq!(code, 403, "{msg}");
    assert!(client_sees_none(&admin).await);
    // Naming no host is the certificate's host; its own works.
    let mine = h1
        .set_containers("", &[reported("c", "web", nth(l1.subnet, 2), None)])
        .await
        .unwrap();
    assert_eq!(mine.instances[0].host, "h1");
    // An anonymous client (no certificate, no token) is refused.
    let anonymous = Client::builder(&url).ca(pki.ca()).build().unwrap();
    assert_eq!(
        api_error(
            anonymous
                .set_containers("h2", std::slice::from_ref(&c2))
                .await
        )
        .0,
        401
    );
    // The token acts for any host.
    admin
        .set_containers("h2", std::slice::from_ref(&c2))
        .await
        .unwrap();
    assert_eq!(admin.instances(None).await.unwrap().instances.len(), 2);
    server.shutdown().await;
}

async fn client_sees_none(c: &Client) -> bool {
    c.instances(None).await.unwrap().instances.is_empty()
}
