//! The watch that survives controller restarts, fail-overs and network errors
//! ([`ResumingWatch`]): every end of a stream becomes a logged reconnect, counted by its
//! [`Reconnect`] reason in [`WatchStats`], after a jittered, capped exponential backoff, resuming
//! after the last revision delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::watch::Warned;
use super::{Client, ClientError, Result, WatchOptions, WatchStream};
use crate::model::WatchMessage;

impl Client {
    /// A watch that reconnects by itself, resuming after the last revision it delivered, with
    /// [`WatchOptions::default`].
    pub fn watch_resuming(&self, since: Option<i64>) -> ResumingWatch {
        self.watch_resuming_with(since, WatchOptions::default())
    }

    /// [`Client::watch_resuming`] with other bounds and backoff.
    pub fn watch_resuming_with(&self, since: Option<i64>, opts: WatchOptions) -> ResumingWatch {
        ResumingWatch {
            client: self.clone(),
            last: since,
            stream: None,
            unclassified: false,
            backoff: opts.backoff_min,
            retry_at: None,
            heartbeat: opts.assumed_heartbeat,
            stats: Arc::new(WatchStats::default()),
            warned: Warned::default(),
            opts,
        }
    }
}

/// Why a watch reconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Nothing arrived for [`WatchOptions::missed_heartbeats`] heartbeat intervals.
    Silence,
    /// The controller ended the stream (e.g. it is shutting down).
    Ended,
    /// The connection could not be made, or broke.
    Transport,
    /// The controller did not answer the watch request in time.
    NoAnswer,
    /// A line or snapshot beyond the configured bounds.
    TooLong,
    /// A line that is not a message this version can read.
    Malformed,
    /// The controller answered "not now" (5xx, 408, 429).
    Refused,
}

impl Reconnect {
    pub const ALL: [Reconnect; 7] = [
        Reconnect::Silence,
        Reconnect::Ended,
        Reconnect::Transport,
        Reconnect::NoAnswer,
        Reconnect::TooLong,
        Reconnect::Malformed,
        Reconnect::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reconnect::Silence => "silence",
            Reconnect::Ended => "ended",
            Reconnect::Transport => "transport",
            Reconnect::NoAnswer => "no_answer",
            Reconnect::TooLong => "too_long",
            Reconnect::Malformed => "malformed",
            Reconnect::Refused => "refused",
        }
    }

    fn of(e: &ClientError) -> Reconnect {
        match e {
            ClientError::Silent { .. } => Reconnect::Silence,
            ClientError::TooLong { .. } => Reconnect::TooLong,
            ClientError::Decode(_) => Reconnect::Malformed,
            ClientError::NoAnswer { .. } => Reconnect::NoAnswer,
            ClientError::Api { .. } => Reconnect::Refused,
            ClientError::Transport { .. } | ClientError::Config(_) => Reconnect::Transport,
        }
    }
}

/// What a [`ResumingWatch`] has been through, for logs and metrics (shared, read any time).
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Streams opened (the controller answered the watch request).
    pub streams: AtomicU64,
    /// Streams that resumed after the last revision without a snapshot.
    pub resumed: AtomicU64,
    /// Snapshots received (the first one included).
    pub snapshots: AtomicU64,
    /// Lines skipped because this version does not know their kind.
    pub skipped: AtomicU64,
    /// The silence deadline in force, in milliseconds.
    pub deadline_ms: AtomicU64,
    reconnects: [AtomicU64; Reconnect::ALL.len()],
}

impl WatchStats {
    /// Reconnects for `reason` so far.
    pub fn reconnects(&self, reason: Reconnect) -> u64 {
        self.reconnects[reason as usize].load(Ordering::Relaxed)
    }
}

/// A watch that survives controller restarts, fail-overs and network errors: it ends a
/// stream that stays silent beyond its deadline (a few heartbeat intervals), reconnects
/// with jittered, capped exponential backoff and `since` set to the last revision it
/// delivered, so the caller sees every change once (or a fresh snapshot when the controller
/// can no longer replay). Every reconnect is logged with its reason and delay, and counted in
/// [`WatchStats`].
///
/// `next` may be dropped midway (e.g. in `select!`): the silence deadline and the reconnect
/// delay are kept in the watch, not in the future.
pub struct ResumingWatch {
    client: Client,
    opts: WatchOptions,
    last: Option<i64>,
    stream: Option<WatchStream>,
    /// The current stream has not yet shown whether it resumed or starts with a snapshot.
    unclassified: bool,
    /// The delay before the next reconnect (before jitter).
    backoff: Duration,
    /// No connection attempt before this.
    retry_at: Option<tokio::time::Instant>,
    /// The interval the controller last announced.
    heartbeat: Duration,
    stats: Arc<WatchStats>,
    warned: Warned,
}

impl ResumingWatch {
    /// The last revision delivered.
    pub fn revision(&self) -> Option<i64> {
        self.last
    }

    /// What this watch has been through (reconnects by reason, resumes, snapshots).
    pub fn stats(&self) -> Arc<WatchStats> {
        self.stats.clone()
    }

    /// The next message; waits (with backoff) through disconnects. Errors the controller answers
    /// with that retrying will not change (e.g. 401, 403) are returned.
    pub async fn next(&mut self) -> Result<WatchMessage> {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            if self.stream.is_none() {
                let opened = self
                    .client
                    .open_watch(self.last, &self.opts, self.warned.clone())
                    .await;
                match opened {
                    Ok(s) => {
                        self.stats.streams.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(since = ?self.last, "watch: connected");
                        self.stream = Some(s);
                        self.unclassified = true;
                    }
                    Err(e) if e.is_transient() => {
                        self.reconnect(Reconnect::of(&e), &e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next_counted(Some(&self.stats)).await {
                Ok(Some(msg)) => {
                    if let Some(interval) = stream.announced_heartbeat() {
                        if interval != self.heartbeat {
                            tracing::info!(heartbeat = ?interval, deadline = ?self.opts.deadline(interval), "watch: the controller announced its heartbeat");
                        }
                        self.heartbeat = interval;
                    }
                    self.stats
                        .deadline_ms
                        .store(stream.deadline().as_millis() as u64, Ordering::Relaxed);
                    self.classify(&msg);
                    self.backoff = self.opts.backoff_min;
                    if !matches!(msg, WatchMessage::Heartbeat { .. }) {
                        self.last = Some(msg.revision());
                    }
                    return Ok(msg);
                }
                Ok(None) => self.reconnect(Reconnect::Ended, &"the controller ended the stream"),
                Err(e) => self.reconnect(Reconnect::of(&e), &e),
            }
        }
    }

    /// Logs and counts, on a stream's first message, whether it resumed or begins anew.
    fn classify(&mut self, msg: &WatchMessage) {
        if let WatchMessage::Snapshot(s) = msg {
            self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
            if self.unclassified {
                match self.last {
                    Some(since) => tracing::info!(
                        since,
                        revision = s.revision,
                        "watch: snapshot at revision {} (the controller could not replay after {since})",
                        s.revision
                    ),
                    None => tracing::info!(revision = s.revision, "watch: snapshot at revision {}", s.revision),
                }
            }
            self.unclassified = false;
        } else if self.unclassified {
            // A change or heartbeat first: a stream without a snapshot (one with a snapshot
            // starts with it), so the controller replayed from our revision.
            if let Some(since) = self.last {
                self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(since, "watch: resumed from revision {since}");
                self.unclassified = false;
            }
        }
    }

    /// Drops the stream and schedules the next attempt.
    fn reconnect(&mut self, reason: Reconnect, why: &dyn std::fmt::Display) {
        self.stream = None;
        if matches!(reason, Reconnect::Silence | Reconnect::NoAnswer) {
            // The controller went quiet without closing anything: the idle connections of
            // the client's other requests are as dead as the stream.
            self.client.reset_connections();
        }
        self.stats.reconnects[reason as usize].fetch_add(1, Ordering::Relaxed);
        let delay = jitter(self.backoff);
        self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
        self.retry_at = Some(tokio::time::Instant::now() + delay);
        tracing::warn!(
            reason = reason.as_str(),
            error = %why,
            retry_in = ?delay,
            since = ?self.last,
            "watch: reconnecting"
        );
    }
}

/// Between half and all of `d`, at random.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }
}
