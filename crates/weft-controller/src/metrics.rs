//! Prometheus metrics through prometheus-client, served in the OpenMetrics text format: units
//! in the names (`_seconds`), counters ending in `_total`, label values escaped by the library,
//! and `weft_build_info{version,commit}`.
//!
//! Request counts and latencies live in label families updated on every request; the state
//! read from the store at scrape time (leases, apps, policies, ...) is encoded as constant
//! gauges and counters of that scrape.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The commit this controller was built from (`WEFT_COMMIT` at build time, else git's).
pub const COMMIT: &str = env!("WEFT_COMMIT");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    /// Open watch streams.
    pub watchers: AtomicI64,
    /// Leases this controller expired (after the grace), since it started.
    pub leases_expired: AtomicU64,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            watchers: AtomicI64::new(0),
            leases_expired: AtomicU64::new(0),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
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
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        // Watch streams are long-lived: their duration is not a request latency.
        if route == weft_api::paths::WATCH {
            return;
        }
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition of one scrape ([`CONTENT_TYPE`]).
    pub fn render(&self, g: &Gauges) -> String {
        let mut r = Registry::with_prefix("weft");
        let gauge = |r: &mut Registry, name: &str, help: &str, v: i64| {
            r.register(name, help, ConstGauge::new(v));
        };
        let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(name, help, ConstCounter::new(v));
        };
        r.register(
            "build",
            "The controller's version and the commit it was built from.",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                commit: COMMIT.to_string(),
            }),
        );
        gauge(
            &mut r,
            "leases_held",
            "Subnet leases currently held.",
            g.leases,
        );
        let pool = i64::try_from(g.pool_size).unwrap_or(i64::MAX);
        gauge(
            &mut r,
            "leases_free",
            "Subnets free in the overlay pool.",
            (pool - g.leases).max(0),
        );
        gauge(
            &mut r,
            "lease_pool_size",
            "Subnets in the overlay pool.",
            pool,
        );
        gauge(&mut r, "apps", "Apps holding a tag.", g.apps);
        gauge(&mut r, "policies", "Policies stored.", g.policies);
        gauge(
            &mut r,
            "revision",
            "Latest revision of the state.",
            g.revision,
        );
        let c = &g.connections;
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(
            &mut r,
            "connections_open",
            "Client connections open.",
            count(c.open),
        );
        gauge(
            &mut r,
            "connections_pending",
            "Client connections not yet authenticated (evictable).",
            count(c.pending),
        );
        counter(
            &mut r,
            "connections_evicted",
            "Pending connections closed to make room.",
            c.evicted,
        );
        counter(
            &mut r,
            "connections_refused",
            "Connections closed at accept: every limit reached.",
            c.refused,
        );
        gauge(
            &mut r,
            "watchers",
            "Open watch streams on this controller.",
            self.watchers.load(Ordering::Relaxed),
        );
        counter(
            &mut r,
            "leases_expired",
            "Leases this controller expired (unrenewed past their expiry and the grace after start).",
            self.leases_expired.load(Ordering::Relaxed),
        );
        r.register(
            "http_requests",
            "HTTP requests served.",
            self.requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "HTTP request latency (watch streams excluded).",
            Unit::Seconds,
            self.latency.clone(),
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            leases: 3,
            pool_size: 256,
            apps: 2,
            policies: 1,
            revision: 9,
            connections: crate::limits::ConnectionCounts {
                open: 1,
                pending: 0,
                refused: 0,
                evicted: 0,
            },
        }
    }

    #[test]
    fn names_carry_units_and_types_and_build_info() {
        let m = Metrics::default();
        m.observe("POST", "/v1/leases/acquire", 200, Duration::from_millis(3));
        m.observe("GET", weft_api::paths::WATCH, 200, Duration::from_secs(60));
        let text = m.render(&gauges());
        for line in [
            "# TYPE weft_leases_held gauge",
            "weft_leases_held 3",
            "weft_leases_free 253",
            "# TYPE weft_http_requests counter",
            "weft_http_requests_total{method=\"POST\",route=\"/v1/leases/acquire\",status=\"200\"} 1",
            "weft_http_requests_total{method=\"GET\",route=\"/v1/watch\",status=\"200\"} 1",
            "# TYPE weft_http_request_duration_seconds histogram",
            "# UNIT weft_http_request_duration_seconds seconds",
            "weft_http_request_duration_seconds_count{route=\"/v1/leases/acquire\"} 1",
            "weft_http_request_duration_seconds_bucket{le=\"0.005\",route=\"/v1/leases/acquire\"} 1",
            "weft_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"/v1/leases/acquire\"} 0",
            "weft_leases_expired_total 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let build = format!(
            "weft_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            COMMIT
        );
        assert!(text.lines().any(|l| l == build), "no {build:?} in\n{text}");
        assert!(!COMMIT.is_empty());
        // The watch stream's hour is no request latency.
        assert!(!text.contains("duration_seconds_count{route=\"/v1/watch\"}"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.observe("GET", "a\"b\\c\nd", 404, Duration::ZERO);
        let text = m.render(&gauges());
        assert!(
            text.contains(r#"route="a\"b\\c\nd""#),
            "escaped route label in\n{text}"
        );
    }
}
