//! Issue 15, item 5: the watch stream as a client must read it from a controller that may be
//! frozen, gone without a word, newer, or hostile. The controller announces its heartbeat
//! interval; silence beyond a few intervals ends the stream; an overlong line is an error,
//! not memory; unknown kinds and fields are skipped; snapshots come in bounded parts; a
//! restarted controller resumes its watchers without a snapshot. Faults come from a fake
//! controller (a socket that answers and then does what the test says); the rest from the
//! real one, on SQLite and PostgreSQL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_api::client::{ClientError, Reconnect, WatchOptions, WatchStream};
use weft_api::model::{Event, Policy, Ports, Protocol, WatchMessage};
use weft_api::Client;

on_both_backends!(a_restarted_controller_resumes_its_watchers_without_a_snapshot);

/// Liveness bound of every wait here (never a speed assertion).
const LIVE: Duration = Duration::from_secs(20);

/// What the fake controller does once it has sent its lines.
#[derive(Clone, Copy)]
enum Then {
    /// Keeps the connection open and says nothing more (frozen, or gone without FIN/RST).
    Hang,
}

/// A fake controller on 127.0.0.1: every request gets `200` and `body` (close-delimited),
/// then [`Then`]. Returns its URL and a count of the connections it took.
async fn fake(body: Vec<u8>, then: Then) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for chunk in body.chunks(16 * 1024) {
                    if sock.write_all(chunk).await.is_err() {
                        return;
                    }
                }
                match then {
                    Then::Hang => {
                        // Hold the socket; read (and drop) whatever comes until the peer goes.
                        while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                }
            });
        }
    });
    (url, conns)
}

fn lines(ls: &[&str]) -> Vec<u8> {
    ls.iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

const SNAPSHOT: &str = r#"{"kind":"snapshot","revision":7,"leases":[],"apps":[{"id":"web","tag":1,"claimed":true}],"policies":[]}"#;

fn quick(opts: WatchOptions) -> WatchOptions {
    WatchOptions {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..opts
    }
}

/// A watch from scratch with `opts`, its first message (the snapshot) read.
async fn past_the_snapshot(client: &Client, opts: &WatchOptions) -> WatchStream {
    let mut stream = client.watch_with(None, opts).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Ok(Some(WatchMessage::Snapshot(_)))
    ));
    stream
}

/// The controller announces a 100 ms heartbeat and then goes silent with the connection open:
/// the stream ends after 3 intervals (not at TCP keepalive's pace), as `Silent`; a resuming
/// watch reconnects, counting the reason.
#[tokio::test]
async fn silence_beyond_three_heartbeats_ends_the_stream() {
    let body = lines(&[
        SNAPSHOT,
        r#"{"kind":"heartbeat","revision":7,"interval_ms":100}"#,
    ]);
    let (url, conns) = fake(body, Then::Hang).await;
    let client = Client::builder(&url).build().unwrap();

    let mut stream = client.watch(None).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Ok(Some(WatchMessage::Snapshot(_)))
    ));
    assert!(matches!(
        stream.next().await,
        Ok(Some(WatchMessage::Heartbeat {
            interval_ms: Some(100),
            ..
        }))
    ));
    assert_eq!(stream.deadline(), Duration::from_millis(300));
    let started = Instant::now();
    let end = tokio::time::timeout(LIVE, stream.next())
        .await
        .expect("the stream ends by itself");
    match end {
        Err(ClientError::Silent { after, .. }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("expected silence, got {other:?}"),
    }
    eprintln!("silent stream ended after {:?}", started.elapsed());

    let mut w = client.watch_resuming_with(None, quick(WatchOptions::default()));
    let stats = w.stats();
    for _ in 0..4 {
        tokio::time::timeout(LIVE, w.next()).await.unwrap().unwrap();
    }
    // Two streams' worth of messages: the second came after a reconnect for silence.
    assert!(stats.reconnects(Reconnect::Silence) >= 1);
    assert!(conns.load(Ordering::SeqCst) >= 3);
    assert_eq!(stats.deadline_ms.load(Ordering::Relaxed), 300);
}

/// Before a controller announces an interval the client assumes one (controllers before the
/// announcement sent a heartbeat every 15 s): silence still ends the stream.
#[tokio::test]
async fn silence_ends_a_stream_that_never_announced_its_heartbeat() {
    let (url, _) = fake(lines(&[SNAPSHOT]), Then::Hang).await;
    let client = Client::builder(&url).build().unwrap();
    let opts = WatchOptions {
        assumed_heartbeat: Duration::from_millis(100),
        ..WatchOptions::default()
    };
    let mut stream = past_the_snapshot(&client, &opts).await;
    let end = tokio::time::timeout(LIVE, stream.next()).await.unwrap();
    assert!(matches!(end, Err(ClientError::Silent { .. })), "{end:?}");
}

/// A new watch is answered but its snapshot never comes (seen once in the simulated data
/// centre): the stream ends after the answer timeout, not after 3 assumed heartbeats.
#[tokio::test]
async fn a_snapshot_that_never_comes_ends_the_stream() {
    let (url, _) = fake(Vec::new(), Then::Hang).await;
    let client = Client::builder(&url).build().unwrap();
    let opts = WatchOptions {
        answer_timeout: Duration::from_millis(200),
        ..WatchOptions::default()
    };
    let mut stream = client.watch_with(None, &opts).await.unwrap();
    assert_eq!(stream.deadline(), Duration::from_millis(200));
    let end = tokio::time::timeout(LIVE, stream.next()).await.unwrap();
    assert!(matches!(end, Err(ClientError::Silent { .. })), "{end:?}");
    // A resumed watch may rightly hear nothing until the next change or heartbeat.
    let stream = client.watch_with(Some(7), &opts).await.unwrap();
    assert_eq!(stream.deadline(), Duration::from_secs(45));
}

/// A controller (or something in its place) sends 4 MiB without a newline: the client stops
/// at its bound with `TooLong` instead of buffering it all, and a resuming watch reconnects.
#[tokio::test]
async fn a_line_beyond_the_bound_is_an_error_not_memory() {
    let mut body = SNAPSHOT.as_bytes().to_vec();
    body.push(b'\n');
    body.extend(std::iter::repeat_n(b'x', 4 << 20));
    let (url, conns) = fake(body, Then::Hang).await;
    let client = Client::builder(&url).build().unwrap();
    let opts = WatchOptions {
        max_line: 64 << 10,
        ..WatchOptions::default()
    };
    let mut stream = past_the_snapshot(&client, &opts).await;
    let end = tokio::time::timeout(LIVE, stream.next()).await.unwrap();
    match end {
        Err(ClientError::TooLong { limit, .. }) => assert_eq!(limit, 64 << 10),
        other => panic!("expected TooLong, got {other:?}"),
    }

    let mut w = client.watch_resuming_with(None, quick(opts));
    let stats = w.stats();
    for _ in 0..2 {
        let m = tokio::time::timeout(LIVE, w.next()).await.unwrap().unwrap();
        assert!(matches!(m, WatchMessage::Snapshot(_)), "{m:?}");
    }
    assert!(stats.reconnects(Reconnect::TooLong) >= 1);
    assert!(conns.load(Ordering::SeqCst) >= 3);
}

/// A newer controller's stream: a kind this version does not know, a change of an unknown
/// event type, and unknown fields everywhere. The known messages arrive, the rest is skipped
/// (counted, warned once), and the stream goes on.
#[tokio::test]
async fn unknown_kinds_and_fields_are_skipped() {
    let lease = r#"{"host":"cell-1","underlay_ip":"192.0.2.1","subnet":"10.255.1.0/24","vtep_mac":"ee:ee:0a:ff:01:00","acquired_at":1,"expires_at":2,"zone":"eu-1"}"#;
    let body = lines(&[
        r#"{"kind":"snapshot","revision":7,"leases":[],"apps":[],"policies":[],"cluster":"x"}"#,
        r#"{"kind":"hologram","revision":8,"shape":"torus"}"#,
        r#"{"kind":"change","revision":8,"event":{"type":"app_renamed","from":"a","to":"b"}}"#,
        &format!(
            r#"{{"kind":"change","revision":9,"event":{{"type":"lease_put","lease":{lease},"why":"renew"}},"origin":"ctl-2"}}"#
        ),
        r#"{"kind":"heartbeat","revision":9,"interval_ms":5000,"load":0.5}"#,
    ]);
    let (url, _) = fake(body, Then::Hang).await;
    let client = Client::builder(&url).build().unwrap();
    let mut w = client.watch_resuming_with(None, quick(WatchOptions::default()));
    let stats = w.stats();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(tokio::time::timeout(LIVE, w.next()).await.unwrap().unwrap());
    }
    assert!(matches!(&got[0], WatchMessage::Snapshot(s) if s.revision == 7));
    match &got[1] {
        WatchMessage::Change(c) => match &c.event {
            Event::LeasePut { lease } => assert_eq!(lease.host, "cell-1"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &got[2],
        WatchMessage::Heartbeat {
            revision: 9,
            interval_ms: Some(5000)
        }
    ));
    assert_eq!(stats.skipped.load(Ordering::Relaxed), 2);
    assert_eq!(w.revision(), Some(9));
    assert_eq!(stats.reconnects(Reconnect::Malformed), 0);
}

fn tcp(src: &str, dst: &str) -> Policy {
    Policy::new(
        src,
        dst,
        Protocol::Tcp,
        Some(Ports {
            start: 8080,
            end: 8080,
        }),
    )
}

/// 1,500 policies (and their 3,000 apps): a client that asks for parts gets the snapshot in
/// lines of at most 1,000 items and joins them; one that does not (older agents) gets one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_comes_in_parts_and_whole_to_older_clients() {
    let store = TestStore::new(common::Backend::Sqlite, "parts")
        .await
        .unwrap();
    let (server, c) = store.start().await;
    let policies: Vec<Policy> = (0..1500)
        .map(|i| tcp(&format!("src-{i}"), &format!("dst-{i}")))
        .collect();
    c.create_policies(&policies).await.unwrap();

    let raw = reqwest::Client::new();
    let read = |query: &'static str| {
        let raw = raw.clone();
        let url = format!("{}/v1/watch{query}", server.url());
        async move {
            let mut resp = raw.get(url).send().await.unwrap();
            let mut buf = Vec::new();
            let mut out: Vec<serde_json::Value> = Vec::new();
            loop {
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                    if v["kind"] == "heartbeat" {
                        return out;
                    }
                    out.push(v);
                }
                let chunk = tokio::time::timeout(LIVE, resp.chunk())
                    .await
                    .unwrap()
                    .unwrap()
                    .expect("stream goes on until the heartbeat");
                buf.extend_from_slice(&chunk);
            }
        }
    };
    let parts = read("?snapshot=parts").await;
    assert_eq!(parts.len(), 5, "4,500 items in lines of 1,000");
    assert_eq!(parts[0]["kind"], "snapshot");
    assert_eq!(parts[0]["more"], true);
    for (i, p) in parts.iter().enumerate().skip(1) {
        assert_eq!(p["kind"], "snapshot_part");
        assert_eq!(p["revision"], parts[0]["revision"]);
        assert_eq!(p["more"].as_bool().unwrap_or(false), i + 1 < parts.len());
    }
    for p in &parts {
        let items: usize = ["leases", "apps", "policies"]
            .iter()
            .map(|k| p[k].as_array().unwrap().len())
            .sum();
        assert!(items <= 1000, "{items} items on one line");
    }
    let whole = read("").await;
    assert_eq!(whole.len(), 1);
    assert!(whole[0].get("more").is_none());
    assert_eq!(whole[0]["policies"].as_array().unwrap().len(), 1500);

    let mut w = c.watch(None).await.unwrap();
    match w.next().await.unwrap().unwrap() {
        WatchMessage::Snapshot(s) => {
            assert_eq!(s.policies.len(), 1500);
            assert_eq!(s.apps.len(), 3000);
        }
        other => panic!("{other:?}"),
    }
    // A snapshot beyond the client's bound is refused, whatever its line sizes.
    let small = WatchOptions {
        max_snapshot: 64 << 10,
        ..WatchOptions::default()
    };
    let mut w = c.watch_with(None, &small).await.unwrap();
    assert!(matches!(w.next().await, Err(ClientError::TooLong { .. })));
    server.shutdown().await;
}

/// The controller announces its heartbeat right after the snapshot; it stops (gracefully) and
/// a new one starts on the same store at the same address: the watch reconnects and resumes
/// from its revision without a snapshot, and a change made on the new one arrives.
async fn a_restarted_controller_resumes_its_watchers_without_a_snapshot(store: TestStore) {
    let mut args = store.args();
    args.heartbeat = 0.2;
    let (server, c) = common::start(args.clone()).await;
    args.listen = server.local_addr();
    let mut w = c.watch_resuming_with(None, quick(WatchOptions::default()));
    let stats = w.stats();
    assert!(matches!(w.next().await.unwrap(), WatchMessage::Snapshot(_)));
    match w.next().await.unwrap() {
        WatchMessage::Heartbeat { interval_ms, .. } => assert_eq!(interval_ms, Some(200)),
        other => panic!("expected the announcing heartbeat, got {other:?}"),
    }
    let first = c.create_policies(&[tcp("a", "b")]).await.unwrap();
    // The apps the policy names come first, then the policy.
    while w.revision() < Some(first.revision) {
        tokio::time::timeout(LIVE, w.next()).await.unwrap().unwrap();
    }
    server.shutdown().await;

    let (server, c) = common::start(args).await;
    let second = c.create_policies(&[tcp("a", "c")]).await.unwrap();
    loop {
        match tokio::time::timeout(LIVE, w.next()).await.unwrap().unwrap() {
            WatchMessage::Snapshot(s) => panic!("resumed with a snapshot at {}", s.revision),
            WatchMessage::Change(ch) if ch.revision == second.revision => break,
            _ => {}
        }
    }
    assert_eq!(stats.snapshots.load(Ordering::Relaxed), 1);
    assert_eq!(stats.resumed.load(Ordering::Relaxed), 1);
    assert!(stats.reconnects(Reconnect::Ended) + stats.reconnects(Reconnect::Transport) >= 1);
    server.shutdown().await;
}
