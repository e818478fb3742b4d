//! Egress resources: the mode, destinations and egress policies through the API, their
//! errors, what they do to app tags, and how the watch carries them (snapshot and changes).

mod common;

use std::time::Duration;

use common::{api_error, TestStore};
use weft_api::egress::{
    Destination, DestinationRule, EgressMode, EgressPolicy, EgressProtocol, EgressState,
};
use weft_api::model::{Change, Event, WatchMessage};

on_both_backends!(egress_resources_errors_tags_and_watch);

fn destination(name: &str, ips: &str, ports: Option<&str>) -> Destination {
    Destination {
        id: String::new(),
        name: name.into(),
        description: String::new(),
        rules: vec![DestinationRule {
            protocol: EgressProtocol::Tcp,
            ips: ips.into(),
            ports: ports.map(String::from),
            description: String::new(),
        }],
    }
}

async fn next_change(w: &mut weft_api::client::WatchStream) -> Change {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("a change within 10 s")
            .unwrap()
            .expect("stream open");
        if let WatchMessage::Change(c) = msg {
            return c;
        }
    }
}

async fn egress_resources_errors_tags_and_watch(store: TestStore) {
    let (server, c) = store.start().await;
    let mut w = c.watch(None).await.unwrap();
    let WatchMessage::Snapshot(first) = w.next().await.unwrap().unwrap() else {
        panic!("a snapshot first");
    };
    assert_eq!(first.egress, EgressState::default());
    assert_eq!(c.egress_mode().await.unwrap().mode, EgressMode::Allow);

    // Mode.
    c.set_egress_mode(EgressMode::Deny).await.unwrap();
    assert_eq!(c.egress_mode().await.unwrap().mode, EgressMode::Deny);
    assert_eq!(
        next_change(&mut w).await.event,
        Event::EgressModeSet {
            mode: EgressMode::Deny
        }
    );
    // Setting it again changes nothing (no event).
    c.set_egress_mode(EgressMode::Deny).await.unwrap();

    // Destinations: created with id = name, replaced by name, announced once per change.
    let web = destination("web", "203.0.113.0/24", Some("80"));
    let stored = c
        .put_destinations(std::slice::from_ref(&web))
        .await
        .unwrap();
    assert_eq!(stored.destinations[0].id, "web");
    let Event::DestinationPut { destination: put } = next_change(&mut w).await.event else {
        panic!("destination_put");
    };
    assert_eq!(put.rules, web.rules);
    c.put_destinations(std::slice::from_ref(&web))
        .await
        .unwrap(); // the same: no change
    let wider = destination("web", "203.0.113.0/24", Some("80-443"));
    c.put_destinations(std::slice::from_ref(&wider))
        .await
        .unwrap();
    let Event::DestinationPut { destination: put } = next_change(&mut w).await.event else {
        panic!("destination_put");
    };
    assert_eq!(put.rules, wider.rules);
    let (status, code, fields) = api_error(
        c.put_destinations(&[destination("bad", "203.0.113.0/33", Some("0"))])
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (400, "validation_failed"));
    assert_eq!(
        fields,
        vec![
            "destinations[0].rules[0].ips".to_string(),
            "destinations[0].rules[0].ports".to_string()
        ]
    );

    // Egress policies: the app gets a tag; an unknown destination is refused.
    let r = c
        .create_egress_policies(&[EgressPolicy::new("db", "web")])
        .await
        .unwrap();
    assert_eq!(r.changed, 1);
    let tag = c.app("db").await.unwrap().tag;
    let Event::AppPut { app } = next_change(&mut w).await.event else {
        panic!("app_put for the new app");
    };
    assert_eq!(app.id, "db");
    let Event::EgressPolicyCreated { egress_policy } = next_change(&mut w).await.event else {
        panic!("egress_policy_created");
    };
    assert_eq!(egress_policy.source.id, "db");
    assert_eq!(egress_policy.source.tag, Some(tag));
    let again = c
        .create_egress_policies(&[EgressPolicy::new("db", "web")])
        .await
        .unwrap();
    assert_eq!(again.changed, 0);
    let (status, _, fields) = api_error(
        c.create_egress_policies(&[EgressPolicy::new("db", "nowhere")])
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status, fields),
        (400, vec!["egress_policies[0].destination.id".to_string()])
    );
    let list = c.egress_policies().await.unwrap();
    assert_eq!(list.total_egress_policies, Some(1));
    assert_eq!(list.egress_policies[0].source.tag, Some(tag));

    // A destination in use cannot go; an unknown one is 404.
    let (status, code, _) = api_error(c.delete_destination("web").await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "conflict"));
    let (status, _, _) = api_error(c.delete_destination("nope").await.unwrap_err());
    assert_eq!(status, 404);

    // A new watcher's snapshot carries the whole egress state.
    let mut w2 = c.watch(None).await.unwrap();
    let WatchMessage::Snapshot(snap) = w2.next().await.unwrap().unwrap() else {
        panic!("a snapshot first");
    };
    assert_eq!(snap.egress.mode, EgressMode::Deny);
    assert_eq!(snap.egress.destinations.len(), 1);
    assert_eq!(snap.egress.destinations[0].rules, wider.rules);
    assert_eq!(snap.egress.policies.len(), 1);
    assert_eq!(snap.egress.policies[0].source.tag, Some(tag));
    drop(w2);

    // Removing the egress policy releases the app (nothing else holds it), then the
    // destination can go.
    let r = c
        .delete_egress_policies(&[EgressPolicy::new("db", "web")])
        .await
        .unwrap();
    assert_eq!(r.changed, 1);
    assert!(matches!(
        next_change(&mut w).await.event,
        Event::EgressPolicyDeleted { .. }
    ));
    assert!(matches!(
        next_change(&mut w).await.event,
        Event::AppDeleted { .. }
    ));
    let (status, _, _) = api_error(c.app("db").await.unwrap_err());
    assert_eq!(status, 404);
    let gone = c.delete_destination("web").await.unwrap();
    assert_eq!(gone.id, "web");
    assert!(matches!(
        next_change(&mut w).await.event,
        Event::DestinationDeleted { .. }
    ));
    assert!(c.destinations().await.unwrap().destinations.is_empty());

    // Restart: the mode is stored.
    server.shutdown().await;
    let (server, c) = store.start().await;
    assert_eq!(c.egress_mode().await.unwrap().mode, EgressMode::Deny);
    server.shutdown().await;
}
