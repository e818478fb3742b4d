//! Several controllers on one PostgreSQL: changes made through one reach watchers on another.

mod common;

use std::time::Duration;

use common::{Backend, TestStore};
use weft_api::model::{Event, Policy, Ports, Protocol, WatchMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_controller_1_reaches_a_watcher_on_controller_2() {
    let Some(store) = TestStore::new(Backend::Postgres, "fanout").await else {
        return;
    };
    let (s1, c1) = store.start().await;
    let (s2, c2) = store.start().await;
    let mut w = c2.watch_resuming(None);
    let first = w.next().await.unwrap();
    assert!(matches!(first, WatchMessage::Snapshot(_)));

    let p = Policy::new(
        "web",
        "api",
        Protocol::Tcp,
        Some(Ports {
            start: 8080,
            end: 8080,
        }),
    );
    let r = c1.create_policies(std::slice::from_ref(&p)).await.unwrap();
    let lease = c1.acquire_lease("cell-1", "192.0.2.10").await.unwrap();
    let mut got_policy = false;
    let mut got_lease = false;
    while !(got_policy && got_lease) {
        let msg = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .expect("change reaches controller 2 in time")
            .unwrap();
        if let WatchMessage::Change(c) = msg {
            match c.event {
                Event::PolicyCreated { policy } => {
                    assert_eq!(policy.untagged(), p);
                    assert_eq!(c.revision, r.revision);
                    got_policy = true;
                }
                Event::LeasePut { lease: l } => {
                    assert_eq!(l, lease);
                    got_lease = true;
                }
                _ => {}
            }
        }
    }

    // Controller 2 goes away; the watcher resumes on controller 1 from where it was.
    let last = w.revision().unwrap();
    s2.shutdown().await;
    c1.release_lease("cell-1").await.unwrap();
    let mut w1 = c1.watch(Some(last)).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(20), w1.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match msg {
        WatchMessage::Change(c) => {
            assert!(matches!(c.event, Event::LeaseDeleted { .. }));
            assert!(c.revision > last);
        }
        other => panic!("expected the missed change, got {other:?}"),
    }
    s1.shutdown().await;
}
