//! One watch stream (`GET /v1/watch`), read line by line within the bounds of its
//! [`WatchOptions`]: no line beyond `max_line`, no snapshot beyond `max_snapshot`, no silence
//! beyond a few of the controller's announced heartbeat intervals; a snapshot sent in parts is
//! joined into one message. What this version does not know (a kind, an event type, a field)
//! is skipped with a warning, once per watch ([`Warned`]).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{Client, ClientError, Result, WatchStats};
use crate::model::{Event, Snapshot, WatchLine, WatchMessage};
use crate::paths;

impl Client {
    /// change, with [`WatchOptions::default`].
    pub async fn watch(&self, since: Option<i64>) -> Result<WatchStream> {
        self.watch_with(since, &WatchOptions::default()).await
    }

    /// [`Client::watch`] with other bounds.
    pub async fn watch_with(&self, since: Option<i64>, opts: &WatchOptions) -> Result<WatchStream> {
        self.open_watch(since, opts, Warned::default()).await
    }

    pub(super) async fn open_watch(
        &self,
        since: Option<i64>,
        opts: &WatchOptions,
        warned: Warned,
    ) -> Result<WatchStream> {
        let mut r = self
            .request_on(&self.watch_http, Method::GET, paths::WATCH)
            .query(&[("snapshot", "parts")]);
        if let Some(s) = since {
            r = r.query(&[("since", s)]);
        }
        if let Some(h) = &opts.host {
            r = r.query(&[("host", h)]);
        }
        let resp = match tokio::time::timeout(opts.answer_timeout, self.send(r)).await {
            Ok(resp) => resp?,
            Err(_) => {
                return Err(ClientError::NoAnswer {
                    url: self.base.clone(),
                    after: opts.answer_timeout,
                })
            }
        };
        Ok(WatchStream {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            scanned: 0,
            url: self.base.clone(),
            opts: opts.clone(),
            heartbeat: opts.assumed_heartbeat,
            announced: None,
            heard: tokio::time::Instant::now(),
            // A stream that owes a snapshot starts at once: a new controller sends it (or
            // its first part) right away, so waiting for it is bounded like the answer. A
            // resumed one may rightly say nothing until the next change or heartbeat.
            first_bytes: since.is_none().then_some(opts.answer_timeout),
            pending: None,
            warned,
        })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// How a watch reads its stream and when it gives up on one and reconnects.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The heartbeat interval assumed on a stream until the controller announces its own
    /// (which it does right after the snapshot or replay; controllers that do not announce
    /// one send a heartbeat every 15 s).
    pub assumed_heartbeat: Duration,
    /// A stream that stays silent (no byte at all) for this many heartbeat intervals is
    /// taken for lost: a controller that froze or vanished without closing the connection.
    pub missed_heartbeats: u32,
    /// The longest line accepted, in bytes; a longer one ends the stream (the watch then
    /// reconnects). Snapshots come in parts of bounded size from controllers that can send
    /// them so; the default leaves room for a whole snapshot from one that cannot.
    pub max_line: usize,
    /// The largest snapshot accepted, in bytes over all its lines.
    pub max_snapshot: usize,
    /// How long the controller may take to answer a watch request.
    pub answer_timeout: Duration,
    /// Reconnect delays grow from `backoff_min`, doubling after each failed attempt, up to
    /// `backoff_max`; each is jittered (between half and all of it) so that many watchers do
    /// not come back in step. A stream that delivers a message resets the delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The host this watch is for (`?host=`): the controller sends what that host needs
    /// (every lease and instance, the policies to its apps and the tags they use) instead of
    /// everything. With a certificate, only its own host may be named (another: 403).
    pub host: Option<String>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            assumed_heartbeat: Duration::from_secs(15),
            missed_heartbeats: 3,
            max_line: 64 << 20,
            max_snapshot: 1 << 30,
            answer_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            host: None,
        }
    }
}

impl WatchOptions {
    /// How long a stream may stay silent when heartbeats come every `heartbeat`.
    pub fn deadline(&self, heartbeat: Duration) -> Duration {
        heartbeat * self.missed_heartbeats.max(1)
    }
}

/// The shortest heartbeat interval (or other watch timing) a watcher accepts.
pub const INTERVAL_MIN: Duration = Duration::from_millis(10);
/// The longest heartbeat interval (or other watch timing) a watcher accepts.
pub const INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// An announced heartbeat interval, within [`INTERVAL_MIN`] ..= [`INTERVAL_MAX`].
fn announced_interval(ms: u64) -> Duration {
    Duration::from_millis(ms).clamp(INTERVAL_MIN, INTERVAL_MAX)
}

/// A watch timing given in seconds on a command line (fractions allowed), within the bounds a
/// watcher accepts ([`INTERVAL_MIN`] ..= [`INTERVAL_MAX`]): the controller's `--heartbeat`,
/// the agent's reconnect and timeout flags. For clap's `value_parser`.
pub fn parse_interval_secs(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let (min, max) = (INTERVAL_MIN.as_secs_f64(), INTERVAL_MAX.as_secs_f64());
    if !(min..=max).contains(&v) {
        return Err(format!("{v} s is outside {min}..={max} s"));
    }
    Ok(v)
}

/// Remembers what has been warned about, so that a newer controller's unknown kinds and
/// fields are reported once per watch, not once per line.
#[derive(Debug, Clone, Default)]
pub(super) struct Warned(Arc<Mutex<HashSet<String>>>);

impl Warned {
    /// At most this many distinct warnings are remembered (and given).
    const MAX: usize = 64;

    fn once(&self, what: String, stats: Option<&WatchStats>) {
        if let Some(st) = stats {
            st.skipped.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut seen) = self.0.lock() else {
            return;
        };
        if seen.len() < Self::MAX && seen.insert(what.clone()) {
            tracing::warn!(
                skipped = %what,
                "watch: the controller sent what this version does not know; skipped (the controller is probably newer)"
            );
        }
    }
}

/// The paths of the fields in `got` that `known` (the same message, as this version reads it)
/// does not have: what a newer controller added. `null` fields count as absent.
fn unknown_fields(got: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (got, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (name, v) in g {
                if v.is_null() {
                    continue;
                }
                let p = format!("{path}.{name}");
                match k.get(name) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            let p = format!("{path}[]");
            for (v, kv) in g.iter().zip(k) {
                unknown_fields(v, kv, &p, out);
            }
        }
        _ => {}
    }
}

/// Reads one line of the stream. `Ok(None)`: a kind (or change event type) this version does
/// not know, skipped with a warning. Unknown fields are skipped with a warning too.
fn parse_line(
    line: &[u8],
    warned: &Warned,
    stats: Option<&WatchStats>,
) -> std::result::Result<Option<WatchLine<'static>>, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("watch line: {e}"))?;
    let Some(kind) = value.get("kind").and_then(Value::as_str) else {
        return Err("watch line without a \"kind\"".into());
    };
    if !WatchLine::KINDS.contains(&kind) {
        warned.once(format!("kind {kind:?}"), stats);
        return Ok(None);
    }
    if kind == "change" {
        if let Some(t) = value.pointer("/event/type").and_then(Value::as_str) {
            if !Event::TYPES.contains(&t) {
                warned.once(format!("change event type {t:?}"), stats);
                return Ok(None);
            }
        }
    }
    let msg = WatchLine::deserialize(&value).map_err(|e| format!("watch {kind} line: {e}"))?;
    let known = serde_json::to_value(&msg).map_err(|e| format!("watch {kind} line: {e}"))?;
    let mut unknown = Vec::new();
    unknown_fields(&value, &known, kind, &mut unknown);
    for field in unknown {
        warned.once(format!("field {field}"), None);
    }
    Ok(Some(msg))
}

/// One watch response, read line by line within the bounds of its [`WatchOptions`]: no
/// line beyond `max_line`, no silence beyond the deadline, snapshot parts joined.
pub struct WatchStream {
    body: ByteStream,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline (a snapshot line can be megabytes:
    /// searching it from the start after every chunk would be quadratic).
    scanned: usize,
    url: String,
    opts: WatchOptions,
    /// The heartbeat interval in force (announced, or assumed until announced).
    heartbeat: Duration,
    announced: Option<Duration>,
    /// When the last bytes arrived: the silence deadline runs from here. Kept here (not in a
    /// timer per call) so that a caller that drops `next()` midway does not reset it.
    heard: tokio::time::Instant,
    /// Until the first bytes arrive, the deadline is this instead (when set).
    first_bytes: Option<Duration>,
    /// A snapshot whose parts are still coming, and its size so far.
    pending: Option<(Snapshot, usize)>,
    warned: Warned,
}

impl WatchStream {
    /// The heartbeat interval the controller announced on this stream, once it has.
    pub fn announced_heartbeat(&self) -> Option<Duration> {
        self.announced
    }

    /// How long this stream may stay silent before [`WatchStream::next`] gives up on it.
    pub fn deadline(&self) -> Duration {
        self.first_bytes
            .unwrap_or_else(|| self.opts.deadline(self.heartbeat))
    }

    /// The next message; `Ok(None)` when the controller ended the stream (e.g. shutting down).
    /// Silence beyond the deadline is [`ClientError::Silent`], an oversized line
    /// [`ClientError::TooLong`], an unreadable one [`ClientError::Decode`].
    pub async fn next(&mut self) -> Result<Option<WatchMessage>> {
        self.next_counted(None).await
    }

    pub(super) async fn next_counted(
        &mut self,
        stats: Option<&WatchStats>,
    ) -> Result<Option<WatchMessage>> {
        loop {
            let found = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|p| p + self.scanned);
            if let Some(pos) = found {
                self.scanned = 0;
                if pos > self.opts.max_line {
                    return Err(self.too_long("a watch line", self.opts.max_line));
                }
                let line = &self.buf[..pos];
                let parsed = if line.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    parse_line(line, &self.warned, stats).map_err(ClientError::Decode)?
                };
                self.buf.drain(..=pos);
                if let Some(msg) = self.take(parsed, pos)? {
                    return Ok(Some(msg));
                }
                continue;
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.opts.max_line {
                return Err(self.too_long("a watch line", self.opts.max_line));
            }
            let deadline = self.heard + self.deadline();
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => {
                    return Err(ClientError::Silent {
                        url: self.url.clone(),
                        after: self.deadline(),
                        heartbeat: self.heartbeat,
                    })
                }
                Ok(Some(Ok(chunk))) => {
                    self.heard = tokio::time::Instant::now();
                    self.first_bytes = None;
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(Some(Err(source))) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        source,
                    })
                }
                // A partial line at the end is dropped: the watcher resumes before it.
                Ok(None) => return Ok(None),
            }
        }
    }

    fn too_long(&self, what: &'static str, limit: usize) -> ClientError {
        ClientError::TooLong {
            url: self.url.clone(),
            what,
            limit,
        }
    }

    /// Takes one line (`None`: skipped) of `len` bytes: a message to deliver, or nothing yet
    /// (a snapshot part, a skipped line).
    fn take(
        &mut self,
        line: Option<WatchLine<'static>>,
        len: usize,
    ) -> Result<Option<WatchMessage>> {
        let malformed = |what: &str| Err(ClientError::Decode(format!("watch stream: {what}")));
        let Some(line) = line else {
            return Ok(None);
        };
        match line {
            WatchLine::Snapshot(part) => {
                if self.pending.is_some() {
                    return malformed("a snapshot began before the last one ended");
                }
                let snap = Snapshot {
                    revision: part.revision,
                    leases: part.leases.into_owned(),
                    apps: part.apps.into_owned(),
                    policies: part.policies.into_owned(),
                    instances: part.instances.into_owned(),
                    egress: part.egress.into_owned(),
                };
                if !part.more {
                    return Ok(Some(WatchMessage::Snapshot(snap)));
                }
                self.pending = Some((snap, 0));
                self.add_to_snapshot(len)?;
                Ok(None)
            }
            WatchLine::SnapshotPart(part) => {
                match &self.pending {
                    None => return malformed("a snapshot part without a snapshot"),
                    Some((snap, _)) if snap.revision != part.revision => {
                        return malformed("a snapshot part of another revision")
                    }
                    Some(_) => {}
                }
                self.add_to_snapshot(len)?;
                if let Some((snap, _)) = self.pending.as_mut() {
                    snap.leases.extend(part.leases.into_owned());
                    snap.apps.extend(part.apps.into_owned());
                    snap.policies.extend(part.policies.into_owned());
                    snap.instances.extend(part.instances.into_owned());
                }
                if part.more {
                    return Ok(None);
                }
                Ok(self
                    .pending
                    .take()
                    .map(|(snap, _)| WatchMessage::Snapshot(snap)))
            }
            WatchLine::Change(c) => {
                if self.pending.is_some() {
                    return malformed("a change inside a snapshot");
                }
                Ok(Some(WatchMessage::Change(c.into_owned())))
            }
            WatchLine::Heartbeat {
                revision,
                interval_ms,
            } => {
                if let Some(ms) = interval_ms {
                    let interval = announced_interval(ms);
                    self.heartbeat = interval;
                    self.announced = Some(interval);
                }
                if self.pending.is_some() {
                    // A beat while a long snapshot comes: proof of life, nothing to deliver.
                    return Ok(None);
                }
                Ok(Some(WatchMessage::Heartbeat {
                    revision,
                    interval_ms,
                }))
            }
        }
    }

    fn add_to_snapshot(&mut self, len: usize) -> Result<()> {
        let limit = self.opts.max_snapshot;
        let over = match self.pending.as_mut() {
            Some((_, size)) => {
                *size += len;
                *size > limit
            }
            None => false,
        };
        if over {
            return Err(self.too_long("a snapshot", limit));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_at_any_depth() {
        let got = serde_json::json!({"kind": "change", "revision": 3, "origin": "x",
            "event": {"type": "lease_put", "lease": {"host": "h", "zone": "z", "tag": null}},
            "list": [{"a": 1, "b": 2}]});
        let known = serde_json::json!({"kind": "change", "revision": 3,
            "event": {"type": "lease_put", "lease": {"host": "h"}},
            "list": [{"a": 1}]});
        let mut out = Vec::new();
        unknown_fields(&got, &known, "change", &mut out);
        out.sort();
        assert_eq!(
            out,
            vec![
                "change.event.lease.zone",
                "change.list[].b",
                "change.origin"
            ]
        );
    }

    #[test]
    fn interval_flags_are_bounded_like_announced_intervals() {
        assert_eq!(parse_interval_secs("0.5"), Ok(0.5));
        assert_eq!(parse_interval_secs("0.01"), Ok(0.01));
        assert_eq!(parse_interval_secs("3600"), Ok(3600.0));
        assert_eq!(
            parse_interval_secs("0.001"),
            Err("0.001 s is outside 0.01..=3600 s".into())
        );
        assert!(parse_interval_secs("3601").is_err());
        assert!(parse_interval_secs("NaN").is_err());
        assert!(parse_interval_secs("x").is_err());
    }

    #[test]
    fn announced_intervals_are_bounded() {
        assert_eq!(announced_interval(0), Duration::from_millis(10));
        assert_eq!(announced_interval(u64::MAX), Duration::from_secs(3600));
        let opts = WatchOptions::default();
        assert_eq!(
            opts.deadline(Duration::from_secs(5)),
            Duration::from_secs(15)
        );
    }
}
