//! Issue 18 item 2: internal DNS in the simulated data centre (see `common/dc/mod.rs`), agents
//! with `--dns` and enforcement on. Containers ask 169.254.0.2 (their cell's agent) with
//! `dig`:
//!
//! - `APP.apps.internal` gives every running instance of APP on every cell,
//!   `INDEX.APP.apps.internal` one, an unknown app NXDOMAIN, other names REFUSED (the cells'
//!   resolv.conf here has no nameserver);
//! - a new container is in the answer, a deleted one gone, without restarts (the time it
//!   took is printed; `benches/dns.rs` measures it);
//! - the DNS address is a host service on port 53 only: a host port listening on every
//!   address is not reachable through it, and answers are not access (default deny still
//!   drops the app's traffic).
mod common;
#[path = "common/dc/mod.rs"]
mod dc;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Ns;
use dc::{metric, Dc, DcOptions, LIVE, METRICS};

fn lab(dc_dir_resolv: &str) -> Dc {
    Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        agent_args: vec![
            "--dns".into(),
            "--dns-resolv-conf".into(),
            dc_dir_resolv.into(),
            "--metrics-listen".into(),
            METRICS.into(),
        ],
        ..Default::default()
    })
}

/// `dig` from `ns` at the agent's address: (status, addresses).
fn dig(ns: &Ns, name: &str) -> (String, BTreeSet<String>) {
    let out = ns.sh(&format!(
        "dig +time=2 +tries=1 @169.254.0.2 {name} A +noall +comments +answer"
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let ips = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    (status, ips)
}

/// Waits (bounded) until `name` answers exactly `want` from `ns`; returns how long it took.
fn until_answer(ns: &Ns, name: &str, want: &[&str]) -> Duration {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let start = Instant::now();
    loop {
        let (status, ips) = dig(ns, name);
        if status == "NOERROR" && ips == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < LIVE,
            "{name}: wanted {want:?}, last answer {status} {ips:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn apps_resolve_across_cells_and_follow_containers() {
    let tmp = std::env::temp_dir().join(format!("weft-dns-resolv-{}", std::process::id()));
    std::fs::write(&tmp, "# no nameserver: other names are refused\n").expect("resolv.conf");
    let dc = lab(&tmp.display().to_string());
    let client = dc.add_container(1, "dns-client", "client");
    let w1 = dc.add_container(1, "dns-web-1", "web");
    let w2 = dc.add_container(2, "dns-web-2", "web");

    // Every instance on every cell, from a container on cell 1 (its own cell's agent).
    until_answer(&client.ns, "web.apps.internal", &[&w1.ip, &w2.ip]);
    // From cell 2 as well (each agent answers for its host, from the same placement).
    until_answer(&w2.ns, "WEB.apps.internal.", &[&w1.ip, &w2.ip]);
    // One instance by index: the indexes cover both instances.
    let mut by_index = BTreeSet::new();
    for i in 0..2 {
        let (status, ips) = dig(&client.ns, &format!("{i}.web.apps.internal"));
        assert_eq!(status, "NOERROR", "{i}.web");
        assert_eq!(ips.len(), 1, "{i}.web: {ips:?}");
        by_index.extend(ips);
    }
    assert_eq!(
        by_index,
        [w1.ip.clone(), w2.ip.clone()].into_iter().collect(),
        "INDEX.web names each instance once"
    );
    assert_eq!(dig(&client.ns, "2.web.apps.internal").0, "NXDOMAIN");
    assert_eq!(dig(&client.ns, "nope.apps.internal").0, "NXDOMAIN");
    assert_eq!(dig(&client.ns, "example.com").0, "REFUSED");

    // A new container is in the answer, a deleted one gone.
    let w3 = dc.add_container(2, "dns-web-3", "web");
    let took = until_answer(&client.ns, "web.apps.internal", &[&w1.ip, &w2.ip, &w3.ip]);
    eprintln!("ADD -> resolvable from the other cell: {took:?}");
    let gone = w1.ip.clone();
    dc.del_container(w1);
    let took = until_answer(&client.ns, "web.apps.internal", &[&w2.ip, &w3.ip]);
    eprintln!("DEL {gone} -> gone from the answer: {took:?}");

    // Answers are not access: web does not reach client, the name notwithstanding.
    let _srv = dc.echo_server(&client.ns, 8080);
    assert!(dc.tcp_exchange(&w2.ns, &client.ip, 8080, "x").is_none());

    // Port 53 only: a host service listening on every address of cell 1 is not reachable
    // through 169.254.0.2 (while it answers on the cell's own address).
    let host_srv = dc.echo_server(&dc.cell(1).ns, 8181);
    assert!(
        dc.tcp_exchange(&client.ns, "169.254.0.2", 8181, "x")
            .is_none(),
        "a host port reachable through the DNS address"
    );
    drop(host_srv);

    let m = dc.agent_metrics(1);
    for result in ["answered", "nxdomain", "refused"] {
        assert!(
            metric(&m, "weft_dns_queries_total", &[("result", result)]).unwrap_or(0.0) >= 1.0,
            "{result}: {m}"
        );
    }
    let _ = std::fs::remove_file(&tmp);
}
