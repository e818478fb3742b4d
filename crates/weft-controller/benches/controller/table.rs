//! The benchmark's result table (Markdown), one column per store backend.

use super::*;

// ---------------------------------------------------------------------------------------------
// Table

pub(crate) fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

pub(crate) fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "timed out".into(),
    }
}

pub(crate) fn cell(r: &Option<anyhow::Result<Report>>, f: impl Fn(&Report) -> String) -> String {
    match r {
        Some(Ok(r)) => f(r),
        Some(Err(_)) => "failed".into(),
        None => "skipped".into(),
    }
}

pub(crate) fn print_table(
    sizes: &Sizes,
    sqlite: &Option<anyhow::Result<Report>>,
    pg: &Option<anyhow::Result<Report>>,
) {
    let w = sizes.watchers;
    let apps = sizes.policies / 2;
    let rows: Vec<(String, String, String, &str)> = vec![
        (
            format!(
                "lease acquisitions/s ({} hosts, {} concurrent)",
                sizes.hosts, sizes.lease_concurrency
            ),
            cell(sqlite, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.lease_per_sec.unwrap_or(0.0),
                    r.lease_errors
                )
            }),
            cell(pg, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.lease_per_sec.unwrap_or(0.0),
                    r.lease_errors
                )
            }),
            "",
        ),
        (
            format!(
                "policy creations/s ({} in batches of {})",
                sizes.rate_policies, sizes.batch
            ),
            cell(sqlite, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.rate_per_sec.unwrap_or(0.0),
                    r.rate_errors
                )
            }),
            cell(pg, |r| {
                format!(
                    "{:.0} ({} err)",
                    r.rate_per_sec.unwrap_or(0.0),
                    r.rate_errors
                )
            }),
            "",
        ),
        (
            format!(
                "store {} policies / {apps} apps (batches of {})",
                sizes.policies, sizes.batch
            ),
            cell(sqlite, |r| {
                format!(
                    "{} ({} new, {} err)",
                    secs(r.store_elapsed),
                    r.store_created,
                    r.store_errors
                )
            }),
            cell(pg, |r| {
                format!(
                    "{} ({} new, {} err)",
                    secs(r.store_elapsed),
                    r.store_created,
                    r.store_errors
                )
            }),
            "< 5 s",
        ),
        (
            format!(
                "connect {w} watchers (snapshot each, {} at a time)",
                sizes.connect_concurrency
            ),
            cell(sqlite, |r| {
                format!("{} ({} ok)", secs(r.connect_elapsed), r.watchers_ready)
            }),
            cell(pg, |r| {
                format!("{} ({} ok)", secs(r.connect_elapsed), r.watchers_ready)
            }),
            "",
        ),
        (
            "snapshot size".into(),
            cell(sqlite, |r| {
                format!("{:.1} MB", r.snapshot_bytes as f64 / 1e6)
            }),
            cell(pg, |r| format!("{:.1} MB", r.snapshot_bytes as f64 / 1e6)),
            "",
        ),
        (
            format!("propagation p50, {w} watchers x {} writes", sizes.writes),
            cell(sqlite, |r| ms(r.prop.pct(50.0))),
            cell(pg, |r| ms(r.prop.pct(50.0))),
            "",
        ),
        (
            "propagation p99".into(),
            cell(sqlite, |r| ms(r.prop.pct(99.0))),
            cell(pg, |r| ms(r.prop.pct(99.0))),
            "< 100 ms",
        ),
        (
            "propagation max".into(),
            cell(sqlite, |r| ms(r.prop.pct(100.0))),
            cell(pg, |r| ms(r.prop.pct(100.0))),
            "",
        ),
        (
            "propagation: missing / before reply".into(),
            cell(sqlite, |r| format!("{} / {}", r.prop.missing, r.prop.early)),
            cell(pg, |r| format!("{} / {}", r.prop.missing, r.prop.early)),
            "0 / -",
        ),
        (
            format!("mass reconnect of {w}: errors"),
            cell(sqlite, |r| r.reconnect_errors.to_string()),
            cell(pg, |r| r.reconnect_errors.to_string()),
            "0",
        ),
        (
            "mass reconnect: all answered".into(),
            cell(sqlite, |r| secs(r.reconnect_answered)),
            cell(pg, |r| secs(r.reconnect_answered)),
            "",
        ),
        (
            "mass reconnect: all resumed (missed change replayed)".into(),
            cell(sqlite, |r| {
                format!(
                    "{} ({} missing)",
                    secs(r.reconnect_caught_up),
                    r.reconnect_missing
                )
            }),
            cell(pg, |r| {
                format!(
                    "{} ({} missing)",
                    secs(r.reconnect_caught_up),
                    r.reconnect_missing
                )
            }),
            "",
        ),
        (
            "mass reconnect: snapshots instead of replay".into(),
            cell(sqlite, |r| r.resume_snapshots.to_string()),
            cell(pg, |r| r.resume_snapshots.to_string()),
            "0",
        ),
        (
            "propagation after reconnect p50 / p99".into(),
            cell(sqlite, |r| {
                format!("{} / {}", ms(r.after.pct(50.0)), ms(r.after.pct(99.0)))
            }),
            cell(pg, |r| {
                format!("{} / {}", ms(r.after.pct(50.0)), ms(r.after.pct(99.0)))
            }),
            "",
        ),
        (
            "watch errors in total / connect retries".into(),
            cell(sqlite, |r| {
                format!("{} / {}", r.watch_errors, r.connect_retries)
            }),
            cell(pg, |r| {
                format!("{} / {}", r.watch_errors, r.connect_retries)
            }),
            "0 / 0",
        ),
    ];
    let w0 = rows
        .iter()
        .map(|r| r.0.len())
        .max()
        .unwrap_or(0)
        .max("metric".len());
    let w1 = rows
        .iter()
        .map(|r| r.1.len())
        .max()
        .unwrap_or(0)
        .max("SQLite".len());
    let w2 = rows
        .iter()
        .map(|r| r.2.len())
        .max()
        .unwrap_or(0)
        .max("PostgreSQL".len());
    let w3 = rows
        .iter()
        .map(|r| r.3.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    println!(
        "| {:<w0$} | {:>w1$} | {:>w2$} | {:<w3$} |",
        "metric", "SQLite", "PostgreSQL", "target"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 1) + ":",
        "-".repeat(w2 + 1) + ":",
        "-".repeat(w3 + 2)
    );
    for (m, s, p, t) in &rows {
        println!("| {m:<w0$} | {s:>w1$} | {p:>w2$} | {t:<w3$} |");
    }
}
