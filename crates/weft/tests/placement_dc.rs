//! Placement in a simulated data centre (issue 18 item 2, issue 19 item 1): each cell's agent
//! reports the containers it runs, and a watcher of the controller sees an `instance_put` for
//! a container ADD and an `instance_deleted` for its DEL, pushed from the agent's watch on the
//! CNI records — the agents' resync is an hour here, so nothing periodic delivers them. Waits
//! are liveness bounds; the latencies are printed (the issue asks for under a second).
mod common;
#[path = "common/dc.rs"]
mod dc;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use dc::{Dc, DcOptions, LIVE};
use weft_api::model::{Event, Instance, WatchMessage};

/// What the watcher thread passes on.
enum Seen {
    /// The snapshot arrived, with these instances.
    Snapshot(Vec<Instance>),
    Put(Instance, Instant),
    Deleted(Instance, Instant),
}

/// Watches the controller from the underlay namespace (where it listens) on a thread of its
/// own; ends when the controller goes or the receiver is dropped.
fn watcher(dc: &Dc) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    let client = dc.client();
    let ns = dc.underlay_ns().path();
    std::thread::spawn(move || {
        weft_kernel::netns::Netns::open(&ns)
            .and_then(|n| n.enter())
            .expect("enter the underlay namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut w = client.watch(None).await.expect("watch");
            while let Ok(Some(msg)) = w.next().await {
                let seen = match msg {
                    WatchMessage::Snapshot(s) => Seen::Snapshot(s.instances),
                    WatchMessage::Change(c) => match c.event {
                        Event::InstancePut { instance } => Seen::Put(instance, Instant::now()),
                        Event::InstanceDeleted { instance } => {
                            Seen::Deleted(instance, Instant::now())
                        }
                        _ => continue,
                    },
                    WatchMessage::Heartbeat { .. } => continue,
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
    });
    rx
}

/// The next instance event matching `want`, within the liveness bound.
fn wait_for(rx: &mpsc::Receiver<Seen>, what: &str, want: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + LIVE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) if want(&s) => return s,
            Ok(_) => {}
            Err(e) => panic!("{what}: not seen within {LIVE:?} ({e})"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn a_container_add_and_del_reach_watchers_as_instance_events() {
    let dc = Dc::with(DcOptions {
        cells: 2,
        resync: 3600,
        ..Default::default()
    });
    let rx = watcher(&dc);
    match wait_for(&rx, "the snapshot", |s| matches!(s, Seen::Snapshot(_))) {
        Seen::Snapshot(instances) => assert!(instances.is_empty(), "{instances:?}"),
        _ => unreachable!(),
    }

    let started = Instant::now();
    let web = dc.add_container(1, "ct-web", "web");
    let added = Instant::now();
    let put = wait_for(
        &rx,
        "instance_put of ct-web",
        |s| matches!(s, Seen::Put(i, _) if i.id == "ct-web"),
    );
    let Seen::Put(instance, at) = put else {
        unreachable!()
    };
    assert_eq!(
        (instance.host.as_str(), instance.app.as_str()),
        ("cell1", "web")
    );
    assert_eq!(instance.ip.to_string(), web.ip);
    println!(
        "ADD -> instance_put: {:.1} ms after ADD returned ({:.1} ms after it began)",
        ms(at.saturating_duration_since(added)),
        ms(at.saturating_duration_since(started))
    );

    let api = dc.add_container(2, "ct-api", "api");
    let Seen::Put(instance, _) = wait_for(
        &rx,
        "instance_put of ct-api",
        |s| matches!(s, Seen::Put(i, _) if i.id == "ct-api"),
    ) else {
        unreachable!()
    };
    assert_eq!(
        (instance.host.as_str(), instance.ip.to_string()),
        ("cell2", api.ip.clone())
    );

    let started = Instant::now();
    dc.del_container(web);
    let deleted = Instant::now();
    let Seen::Deleted(instance, at) = wait_for(
        &rx,
        "instance_deleted of ct-web",
        |s| matches!(s, Seen::Deleted(i, _) if i.id == "ct-web"),
    ) else {
        unreachable!()
    };
    assert_eq!(instance.host, "cell1");
    println!(
        "DEL -> instance_deleted: {:.1} ms after DEL returned ({:.1} ms after it began)",
        ms(at.saturating_duration_since(deleted)),
        ms(at.saturating_duration_since(started))
    );

    // What the controller holds now: ct-api alone.
    let ids: Vec<String> = {
        let client = dc.client();
        let ns = dc.underlay_ns().path();
        weft_kernel::netns::in_netns(&ns, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(client.instances(None))
        })
        .expect("in the underlay namespace")
        .expect("instances")
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect()
    };
    assert_eq!(ids, vec!["ct-api"]);
    dc.del_container(api);
}
