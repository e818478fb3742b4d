//! Prometheus metrics, rendered by hand in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// Open watch streams.
    pub watchers: AtomicI64,
    /// Leases this controller expired (after the grace), since it started.
    pub leases_expired: AtomicU64,
    /// (method, route, status) -> count
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route -> latency histogram
    latency: Mutex<BTreeMap<String, Histogram>>,
}

/// State counts read from the store at scrape time.
pub struct Gauges {
    pub leases: i64,
    pub pool_size: u64,
    pub apps: i64,
    pub policies: i64,
    pub revision: i64,
    pub connections: crate::limits::ConnectionCounts,
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_string(), route.to_string(), status))
                .or_default() += 1;
        }
        // Watch streams are long-lived: their duration is not a request latency.
        if route == weft_api::paths::WATCH {
            return;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route.to_string()).or_default();
            let secs = elapsed.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "weft_leases_held",
            "Subnet leases currently held.",
            g.leases.to_string(),
        );
        gauge(
            &mut out,
            "weft_leases_free",
            "Subnets free in the overlay pool.",
            (g.pool_size as i64 - g.leases).max(0).to_string(),
        );
        gauge(
            &mut out,
            "weft_lease_pool_size",
            "Subnets in the overlay pool.",
            g.pool_size.to_string(),
        );
        gauge(
            &mut out,
            "weft_apps",
            "Apps holding a tag.",
            g.apps.to_string(),
        );
        gauge(
            &mut out,
            "weft_policies",
            "Policies stored.",
            g.policies.to_string(),
        );
        gauge(
            &mut out,
            "weft_revision",
            "Latest revision of the state.",
            g.revision.to_string(),
        );
        let c = &g.connections;
        gauge(
            &mut out,
            "weft_connections_open",
            "Client connections open.",
            c.open.to_string(),
        );
        gauge(
            &mut out,
            "weft_connections_pending",
            "Client connections not yet authenticated (evictable).",
            c.pending.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP weft_connections_evicted_total Pending connections closed to make room.\n\
             # TYPE weft_connections_evicted_total counter\nweft_connections_evicted_total {}",
            c.evicted
        );
        let _ = writeln!(
            out,
            "# HELP weft_connections_refused_total Connections closed at accept: every limit reached.\n\
             # TYPE weft_connections_refused_total counter\nweft_connections_refused_total {}",
            c.refused
        );
        gauge(
            &mut out,
            "weft_watchers",
            "Open watch streams on this controller.",
            self.watchers.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP weft_leases_expired_total Leases this controller expired (unrenewed past their expiry and the grace after start).\n# TYPE weft_leases_expired_total counter\nweft_leases_expired_total {}",
            self.leases_expired.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP weft_http_requests_total HTTP requests served.\n# TYPE weft_http_requests_total counter"
        );
        if let Ok(r) = self.requests.lock() {
            for ((method, route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "weft_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weft_http_request_duration_seconds HTTP request latency.\n# TYPE weft_http_request_duration_seconds histogram"
        );
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                let name = "weft_http_request_duration_seconds";
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", h.count);
            }
        }
        out
    }
}
