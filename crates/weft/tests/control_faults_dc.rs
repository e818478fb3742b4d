//! Issue 15's fault tests, in the simulated data centre (see `common/dc/mod.rs`): the controller
//! is killed, frozen, or vanishes without a word (no FIN, no RST) and is replaced at the same
//! address; it restarts on SQLite and on PostgreSQL; it is down past every lease's expiry
//! while a new host joins.
//!
//! Throughout, the agents keep forwarding the allowed flow and dropping the denied one
//! (probes every 0.2 s, checked one by one). They notice a silent controller by its missing
//! heartbeats (their metrics say why they reconnected), resume from their revision without a
//! snapshot, and enforce what is written to the controller once it is back; no host changes
//! subnet. The controller's heartbeat is 0.5 s here (a 1.5 s deadline) to keep each test to
//! seconds (`WEFT_TEST_HEARTBEAT` sets another, to measure); waits are liveness bounds and
//! the timings are printed, never asserted.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dc::{metric, Container, Dc, DcOptions, Proc, LIVE, METRICS};

const PORT: u16 = 8080;
/// Lease TTL of the tests that outlast it: agents renew every second (a third of it), which
/// leaves a loaded machine 3 s to get a renewal through.
const LEASE_TTL: u64 = 4;

fn heartbeat() -> f64 {
    std::env::var("WEFT_TEST_HEARTBEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5)
}

/// A generous bound for noticing a silent controller: the deadline (3 heartbeats) plus the
/// liveness bound.
fn notice_bound() -> Duration {
    Duration::from_secs_f64(heartbeat() * 3.0) + LIVE
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Options for these tests: enforcement on, agent metrics, a short heartbeat, quick retries.
fn options(cells: usize) -> DcOptions {
    DcOptions {
        cells,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        agent_args: [
            "--metrics-listen",
            METRICS,
            "--reconnect-max",
            "1",
            "--request-timeout",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        controller_args: vec!["--heartbeat".into(), heartbeat().to_string()],
        ..Default::default()
    }
}

/// Two cells: `a` (app-a) and `c` (app-c) on cell 1, `b` (app-b, an echo server) on cell 2,
/// the policy app-a -> app-b tcp/8080, and probes a -> b (allowed) and c -> b (denied)
/// running from the start.
struct Scene {
    dc: Dc,
    a: Container,
    b: Container,
    c: Container,
    _echo: Proc,
    allowed: Proc,
    denied: Proc,
}

impl Scene {
    fn new(opts: DcOptions) -> Scene {
        let dc = Dc::with(opts);
        let a = dc.add_container(1, "fa", "app-a");
        let c = dc.add_container(1, "fc", "app-c");
        let b = dc.add_container(2, "fb", "app-b");
        let echo = dc.echo_server(&b.ns, PORT);
        let out = dc.weft(&format!(
            "policy add app-a app-b --protocol tcp --port {PORT}"
        ));
        assert!(out.status.success(), "policy add: {out:?}");
        let start = Instant::now();
        while dc.tcp_exchange(&a.ns, &b.ip, PORT, "hello").is_none() {
            assert!(start.elapsed() < LIVE, "a never reached b{}", diag(&dc));
            std::thread::sleep(Duration::from_millis(100));
        }
        let probe = |from: &Container, timeout: &str, name: &str| {
            let py = dc.dir.path.join("sock.py").display().to_string();
            Proc::spawn(
                &from.ns,
                &[
                    "python3",
                    &py,
                    "probe",
                    &b.ip,
                    &PORT.to_string(),
                    timeout,
                    "0.2",
                ],
                &[],
                &dc.dir.path.join(format!("{name}.log")),
            )
        };
        let allowed = probe(&a, "2", "allowed");
        let denied = probe(&c, "1", "denied");
        let scene = Scene {
            dc,
            a,
            b,
            c,
            _echo: echo,
            allowed,
            denied,
        };
        // Both probes have run a few times before any fault.
        let start = Instant::now();
        while scene.probes(&scene.allowed).len() < 3 || scene.probes(&scene.denied).len() < 3 {
            assert!(
                start.elapsed() < LIVE,
                "probes do not run{}",
                diag(&scene.dc)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        scene
    }

    /// `(start time, result)` of every try of a probe so far.
    fn probes(&self, p: &Proc) -> Vec<(f64, String)> {
        p.output()
            .lines()
            .filter_map(|l| {
                let (t, kind) = l.split_once(' ')?;
                Some((t.parse().ok()?, kind.trim().to_string()))
            })
            .collect()
    }

    /// Every try so far: a -> b answered, c -> b did not (until `opened`, the time the test
    /// allowed it).
    fn assert_enforced_throughout(&self, opened: Option<f64>) {
        let allowed = self.probes(&self.allowed);
        let denied = self.probes(&self.denied);
        let failed: Vec<&(f64, String)> = allowed.iter().filter(|(_, k)| k != "ok").collect();
        let leaked: Vec<&(f64, String)> = denied
            .iter()
            .filter(|(t, k)| opened.is_none_or(|o| *t < o) && k != "timeout")
            .collect();
        eprintln!(
            "probes: {} allowed tries, {} denied tries",
            allowed.len(),
            denied.len()
        );
        assert!(
            failed.is_empty(),
            "the allowed flow a -> b failed {} of {} times: {failed:?}{}",
            failed.len(),
            allowed.len(),
            diag(&self.dc)
        );
        assert!(
            leaked.is_empty(),
            "the denied flow c -> b got through (or failed otherwise) {} times: {leaked:?}{}",
            leaked.len(),
            diag(&self.dc)
        );
    }

    /// After a fault, with a controller back: a policy written to it (app-c -> app-b) is
    /// enforced, every agent resumed without a snapshot, no host changed subnet (`before`),
    /// and the probes never saw the fault. Returns how long enforcing the policy took.
    fn converges(&self, before: &BTreeMap<String, String>, what: &str) -> Duration {
        let (opened, took) = self.open_c_to_b();
        eprintln!("{what}: a policy written to the controller was enforced in {took:?}");
        assert_resumed(self, before);
        // Probes started before the policy are judged; give the last ones time to finish.
        std::thread::sleep(Duration::from_secs(2));
        self.assert_enforced_throughout(Some(opened));
        took
    }

    /// Writes the policy app-c -> app-b and waits until c reaches b: the controller's state
    /// arrived. Returns when it was written (unix time) and how long enforcing it took.
    fn open_c_to_b(&self) -> (f64, Duration) {
        let opened = unix_now();
        let start = Instant::now();
        let out = self.dc.weft(&format!(
            "policy add app-c app-b --protocol tcp --port {PORT}"
        ));
        assert!(out.status.success(), "policy add: {out:?}");
        while self
            .dc
            .tcp_exchange(&self.c.ns, &self.b.ip, PORT, "c")
            .is_none()
        {
            assert!(
                start.elapsed() < LIVE,
                "the policy written to the controller is not enforced{}",
                diag(&self.dc)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (opened, start.elapsed())
    }
}

/// A sample of cell `n`'s agent metrics (0 when absent).
fn agent_metric(dc: &Dc, n: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&dc.agent_metrics(n), name, labels).unwrap_or(0.0)
}

/// Waits (bounded by `limit`) until every cell's `name{labels}` is at least `want`; returns
/// how long that took.
fn wait_agents(
    dc: &Dc,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let behind: Vec<(usize, f64)> = dc
            .cell_numbers()
            .into_iter()
            .map(|n| (n, agent_metric(dc, n, name, labels)))
            .filter(|(_, v)| *v < want)
            .collect();
        if behind.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{name}{labels:?} < {want} on cells {behind:?}{}",
            diag(dc)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Host -> subnet, as the controller has them.
fn subnets(dc: &Dc) -> BTreeMap<String, String> {
    let list = dc.leases().expect("controller answers");
    list["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| {
            (
                l["host"].as_str().unwrap_or_default().to_string(),
                l["subnet"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Agent log tails and the controller's, for failure messages.
fn diag(dc: &Dc) -> String {
    let tail = |s: String| -> String {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    };
    let mut s = String::new();
    for n in dc.cell_numbers() {
        s += &format!("\n--- cell {n} agent:\n{}", tail(dc.cell(n).agent_log()));
    }
    s + &format!("\n--- controller:\n{}", tail(dc.controller_log()))
}

/// The agents' watch counters, per cell: (snapshots, resumes).
fn watch_counts(dc: &Dc) -> Vec<(f64, f64)> {
    dc.cell_numbers()
        .into_iter()
        .map(|n| {
            let m = dc.agent_metrics(n);
            (
                metric(&m, "weft_agent_watch_snapshots_total", &[]).unwrap_or(0.0),
                metric(&m, "weft_agent_watch_resumes_total", &[]).unwrap_or(0.0),
            )
        })
        .collect()
}

/// After a fault: every agent resumed from its revision (once more than before) without a
/// snapshot beyond the first, the hosts kept their subnets, the first policy survived.
fn assert_resumed(s: &Scene, before: &BTreeMap<String, String>) {
    wait_agents(&s.dc, "weft_agent_watch_resumes_total", &[], 1.0, LIVE);
    for (n, (snapshots, _)) in watch_counts(&s.dc).into_iter().enumerate() {
        assert_eq!(
            snapshots,
            1.0,
            "cell {}: resumed with a snapshot{}",
            n + 1,
            diag(&s.dc)
        );
    }
    assert_eq!(&subnets(&s.dc), before, "no host changed subnet");
    let list = s.dc.weft("policy list --json");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("app-a"),
        "the policy written before the fault survived: {list:?}"
    );
}

/// The controller goes down (`down`) and a new one starts on the same store: the agents
/// resume from their revision without a snapshot; nothing is lost; traffic never notices.
fn restart(opts: DcOptions, down: impl FnOnce(&mut Dc), what: &str) {
    let mut s = Scene::new(opts);
    let before = subnets(&s.dc);
    down(&mut s.dc);
    std::thread::sleep(Duration::from_secs(1));
    s.dc.start_controller();
    s.converges(&before, what);
}

/// Killed (SIGKILL) and started again on the same SQLite store.
#[test]
fn killed_controller_restarts_on_sqlite_and_agents_resume() {
    restart(options(2), Dc::kill_controller, "killed, SQLite");
}

/// A schema of its own in the test PostgreSQL (WEFT_TEST_POSTGRES_URL), dropped on drop.
struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    fn new() -> Option<PgSchema> {
        let Ok(base) = std::env::var("WEFT_TEST_POSTGRES_URL") else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "restarted_controller_on_postgres: skipped: WEFT_TEST_POSTGRES_URL is unset"
            );
            return None;
        };
        let name = common::unique("pg");
        let out = Command::new("psql")
            .args([base.as_str(), "-q", "-c", &format!("CREATE SCHEMA {name}")])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql CREATE SCHEMA: {out:?}");
        Some(PgSchema { base, name })
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.base.as_str(),
                "-q",
                "-c",
                &format!("DROP SCHEMA {} CASCADE", self.name),
            ])
            .output();
    }
}

/// Stopped (SIGTERM) and started again on PostgreSQL.
#[test]
fn restarted_controller_on_postgres_and_agents_resume() {
    let Some(schema) = PgSchema::new() else {
        return;
    };
    restart(
        DcOptions {
            store: Some(schema.url()),
            ..options(2)
        },
        Dc::stop_controller,
        "restarted, PostgreSQL",
    );
    drop(schema);
}

/// The controller is frozen (SIGSTOP) for 5 s, longer than the lease TTL (4 s). The agents
/// notice by the missing heartbeats; their renewals hang but their loops do not (a container
/// started meanwhile is enforced while the controller is still frozen); on SIGCONT they
/// resume without a snapshot, and the controller, seeing it was stalled, lets no lease expire.
#[test]
fn frozen_controller_is_noticed_and_thawed_without_renumbering() {
    let mut opts = options(2);
    opts.lease_ttl = Some(LEASE_TTL);
    opts.controller_args
        .extend(["--lease-grace".to_string(), "5".to_string()]);
    let s = Scene::new(opts);
    let before = subnets(&s.dc);
    s.dc.freeze_controller();
    let frozen = Instant::now();
    let noticed = wait_agents(
        &s.dc,
        "weft_agent_watch_reconnects_total",
        &[("reason", "silence")],
        1.0,
        notice_bound(),
    );
    eprintln!("frozen: every agent noticed the silence within {noticed:?}");
    let d = s.dc.add_container(2, "fd", "app-d");
    let nft = |c: &Container| {
        s.dc.cell_ns(c.cell)
            .ok("nft list set inet weft-policy containers")
            .contains(&format!("{} . \"", c.ip))
    };
    while !nft(&d) {
        assert!(
            frozen.elapsed() < Duration::from_secs(5),
            "a container started while the controller is frozen waited for it (the agent's loop was blocked){}",
            diag(&s.dc)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "frozen: the new container was enforced {:?} into the freeze",
        frozen.elapsed()
    );
    let left = Duration::from_secs(5).saturating_sub(frozen.elapsed());
    std::thread::sleep(left);
    // Renewals (every second with a 4 s TTL) hung on the frozen controller meanwhile.
    assert!(
        s.dc.cell(2).agent_log().contains("lease renewal failed"),
        "renewals were tried and timed out during the freeze{}",
        diag(&s.dc)
    );
    s.dc.thaw_controller();
    s.converges(&before, "frozen, after SIGCONT");
    let m = s.dc.controller_metrics().expect("controller metrics");
    assert_eq!(
        metric(&m, "weft_leases_expired_total", &[]),
        Some(0.0),
        "no lease expired because the controller was frozen{}",
        diag(&s.dc)
    );
    assert!(
        s.dc.controller_log().contains("did not run for a while"),
        "the controller says it was stalled{}",
        diag(&s.dc)
    );
}

/// The controller vanishes without FIN or RST (every connection to it blackholed, the process
/// gone) and a new one takes its address at once, on the same store: the agents notice by
/// the missing heartbeats, reconnect to the new one, resume without a snapshot, and enforce
/// a policy written to it. Prints the time to notice and to enforce.
#[test]
fn vanished_controller_is_noticed_and_its_replacement_takes_over() {
    let mut s = Scene::new(options(2));
    let before = subnets(&s.dc);
    let cut = s.dc.vanish_controller();
    let gone = Instant::now();
    s.dc.start_controller();
    let (noticed, enforced) = std::thread::scope(|scope| {
        let noticed = scope.spawn(|| {
            wait_agents(
                &s.dc,
                "weft_agent_watch_reconnects_total",
                &[("reason", "silence")],
                1.0,
                notice_bound(),
            );
            gone.elapsed()
        });
        let written = gone.elapsed();
        let took = s.converges(&before, "vanished, replaced");
        (noticed.join().expect("noticing thread"), written + took)
    });
    eprintln!(
        "vanished ({cut} connections cut, heartbeat {} s): every agent noticed the silence \
         {noticed:?} after the controller vanished; the policy written to the replacement at \
         once was enforced {enforced:?} after it vanished",
        heartbeat()
    );
}

/// The controller is down past every lease's expiry; when it is back, a new host joins at
/// once (the acquisition that used to expire all leases). No running host changes subnet;
/// a host whose agent was gone meanwhile loses its lease only after the grace (logged and
/// counted), and when its agent returns it asks for, and gets, its old subnet.
#[test]
fn outage_past_lease_expiry_renumbers_no_host() {
    let mut opts = options(3);
    opts.lease_ttl = Some(LEASE_TTL);
    opts.controller_args
        .extend(["--lease-grace".to_string(), "4".to_string()]);
    let mut dc = Dc::with(opts);
    let before = subnets(&dc);
    assert_eq!(before.len(), 3, "{before:?}");
    dc.kill_agent(3);
    dc.stop_controller();
    std::thread::sleep(Duration::from_secs(LEASE_TTL + 1));
    dc.start_controller();
    let n4 = dc.spawn_cell(false);
    let joined = subnets(&dc);
    for (host, subnet) in &before {
        assert_eq!(
            joined.get(host),
            Some(subnet),
            "{host} during the grace: {joined:?}"
        );
    }
    let new = dc.cell(n4).subnet().expect("the new host has a subnet");
    assert!(!before.values().any(|s| *s == new), "{new} was someone's");

    // After the grace: cell 3's lease (nobody renewed it) expires; the others stay.
    let start = Instant::now();
    while subnets(&dc).contains_key("cell3") {
        assert!(
            start.elapsed() < LIVE,
            "cell3's lease never expired{}",
            diag(&dc)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = subnets(&dc);
    for host in ["cell1", "cell2"] {
        assert_eq!(
            after.get(host),
            before.get(host),
            "{host} kept its subnet: {after:?}{}",
            diag(&dc)
        );
    }
    let m = dc.controller_metrics().expect("controller metrics");
    assert_eq!(
        metric(&m, "weft_leases_expired_total", &[]),
        Some(1.0),
        "{m}"
    );
    assert!(
        dc.controller_log().contains("lease expired"),
        "{}",
        diag(&dc)
    );

    dc.start_agent(3);
    assert_eq!(
        dc.cell(3).subnet(),
        before.get("cell3").cloned(),
        "the returning host got its old subnet{}",
        diag(&dc)
    );
    dc.wait_mesh();
    let end = subnets(&dc);
    for host in ["cell1", "cell2", "cell3"] {
        assert_eq!(end.get(host), before.get(host), "{host}: {end:?}");
    }
}

/// `weft apps --json`: app id -> (tag, claimed).
fn apps(dc: &Dc) -> BTreeMap<String, (u64, bool)> {
    let out = dc.weft("apps --json");
    assert!(out.status.success(), "weft apps: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("apps json");
    v["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default().to_string(),
                (
                    a["tag"].as_u64().unwrap_or_default(),
                    a["claimed"].as_bool().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// Waits (bounded) until `ok` holds of the controller's apps; returns them.
fn wait_apps(
    dc: &Dc,
    what: &str,
    ok: impl Fn(&BTreeMap<String, (u64, bool)>) -> bool,
) -> BTreeMap<String, (u64, bool)> {
    let start = Instant::now();
    loop {
        let now = apps(dc);
        if ok(&now) {
            return now;
        }
        assert!(start.elapsed() < LIVE, "{what}: {now:?}{}", diag(dc));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running host loses its lease (the token releases it, as an operator may; an expiry
/// past the grace does the same): its app claims go with it, so an app only it runs, named
/// by no policy, is released. Its agent learns at its next renewal (off its loop), acquires
/// the lease again asking for the subnet it had, and sends its claim set again: the app is
/// claimed again (with a new tag: a released tag is reused last) and the agent publishes
/// that tag; the allowed flow works again, and the denied one never got through.
#[test]
fn a_lost_lease_is_acquired_again_with_its_subnet_and_its_claims() {
    let mut opts = options(2);
    opts.lease_ttl = Some(LEASE_TTL);
    let s = Scene::new(opts);
    let _e = s.dc.add_container(2, "fe", "app-e");
    let first = wait_apps(&s.dc, "app-e claimed", |a| {
        a.get("app-e").is_some_and(|(_, claimed)| *claimed)
    });
    let old_tag = first["app-e"].0;
    let before = subnets(&s.dc);

    let out = s.dc.weft("leases release cell2");
    assert!(out.status.success(), "weft leases release: {out:?}");
    let released = Instant::now();
    let again = wait_apps(&s.dc, "cell2 claims app-b and app-e again", |a| {
        a.get("app-e")
            .is_some_and(|(tag, claimed)| *claimed && *tag != old_tag)
            && a.get("app-b").is_some_and(|(_, claimed)| *claimed)
    });
    eprintln!(
        "lost lease: cell2 claimed its apps again {:?} after the release (app-e: tag {old_tag} -> {})",
        released.elapsed(),
        again["app-e"].0
    );
    let log = s.dc.cell(2).agent_log();
    assert!(
        log.contains("lease lost") && log.contains("lease acquired again, same subnet"),
        "the agent acquired its lease again{}",
        diag(&s.dc)
    );
    assert_eq!(subnets(&s.dc), before, "no host changed subnet");
    // The agent publishes the new tag (what `weft containers` shows).
    let tags_file = weft_agent::agent::tags_file(&s.dc.cell(2).lease_file());
    let start = Instant::now();
    loop {
        let tags: BTreeMap<String, u64> = std::fs::read(&tags_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if tags.get("app-e") == Some(&again["app-e"].0) {
            break;
        }
        assert!(
            start.elapsed() < LIVE,
            "cell2's tags file has app-e's new tag: {tags:?}{}",
            diag(&s.dc)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Cell 1 routes to cell 2 again: the allowed flow works.
    let start = Instant::now();
    while s.dc.tcp_exchange(&s.a.ns, &s.b.ip, PORT, "again").is_none() {
        assert!(start.elapsed() < LIVE, "a reaches b again{}", diag(&s.dc));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let leaked: Vec<(f64, String)> = s
        .probes(&s.denied)
        .into_iter()
        .filter(|(_, k)| k != "timeout")
        .collect();
    assert!(
        leaked.is_empty(),
        "the denied flow c -> b got through while cell2 lost its lease: {leaked:?}{}",
        diag(&s.dc)
    );
}
