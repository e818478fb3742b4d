//! `weft demo`: seed 000's story in one command. It builds the c2c lab (two cells on an
//! underlay, a controller, an agent per cell, AppB on cell1, AppA and AppC on cell2) without
//! any policy, shows AppB -> AppA denied, adds the policy through the controller's API, shows
//! it allowed, prints the trace of both (with a real probe packet, so the deny is explained
//! by the rule that dropped it), and takes the lab down again (`--keep` leaves it up).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::lab::check::{self, CheckResult};
use crate::lab::state::State;
use crate::lab::topology::{CheckSpec, Expect, Topology};
use crate::lab::up::{self, Progress};
use crate::trace;

/// The seed 000 lab the demo builds (also `examples/c2c.toml`).
pub const C2C: &str = include_str!("../../../examples/c2c.toml");

#[derive(Args)]
pub struct DemoArgs {
    /// Leave the lab up afterwards (take it down with `weft lab down demo`)
    #[arg(long)]
    keep: bool,
    /// Name of the lab (its namespaces are wl-NAME.*)
    #[arg(long, default_value = "demo")]
    name: String,
    /// Also write the picture of the lab here (SVG, or DOT for *.dot)
    #[arg(long)]
    graph: Option<PathBuf>,
    /// Where labs keep their records
    #[arg(long, env = "WEFT_LAB_DIR", default_value = crate::lab::state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

fn banner(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

fn show(r: &CheckResult) {
    let dst = match r.port {
        Some(p) => format!("{}:{p}", r.to),
        None => r.to.clone(),
    };
    println!(
        "  {} -> {dst:<14} {:<8} {}",
        r.from,
        if r.outcome.reached() {
            "ALLOWED"
        } else {
            "DENIED"
        },
        r.outcome.text()
    );
}

fn probe(st: &State, from: &str, to: &str, port: u16) -> Result<CheckResult> {
    check::run_check(
        st,
        &CheckSpec {
            from: from.into(),
            to: to.into(),
            port: Some(port),
            expect: Expect::Allow,
            sees: None,
        },
    )
}

fn story(st: &State, a: &DemoArgs) -> Result<bool> {
    let mut ok = true;
    crate::lab::print_status(&crate::lab::status_of(st));

    banner("step 1: default deny -- no policy yet, AppB cannot reach AppA");
    let denied = probe(st, "app-b", "app-a", 8080)?;
    show(&denied);
    ok &= !denied.outcome.reached();

    banner("step 2: `weft policy add app-b app-a --port 8080` (through the controller's API)");
    let p = crate::lab::topology::policy_of(&st.topology.policies[0])?;
    up::add_policies(st, vec![p])?;
    let mut st2 = st.clone();
    st2.topology.policies = st.topology.policies.clone();
    up::wait_policies(&st2)?;
    println!("  the controller pushed it to the agents (watch stream); cell2 now holds:");
    if let Some(cell) = st.layout.cell("cell2") {
        let map = up::nft_in(&cell.namespace, "list map inet weft-policy allow_ports")?;
        for l in map.lines().filter(|l| l.contains("elements")) {
            println!("    {}", l.trim());
        }
    }

    banner("step 3: AppB -> AppA:8080 is allowed; everything else between apps stays denied");
    let matrix: Vec<CheckSpec> = [
        ("app-b", "app-a", 8080),
        ("app-b", "app-a", 9090),
        ("app-a", "app-b", 8080),
        ("app-c", "app-a", 8080),
    ]
    .into_iter()
    .map(|(from, to, port)| CheckSpec {
        from: from.into(),
        to: to.into(),
        port: Some(port),
        expect: Expect::Allow,
        sees: None,
    })
    .collect();
    for r in check::run_many(st, &matrix)? {
        show(&r);
        let want = (r.from.as_str(), r.to.as_str(), r.port) == ("app-b", "app-a", Some(8080));
        ok &= r.outcome.reached() == want;
    }
    let out = check::run_check(
        st,
        &CheckSpec {
            from: "app-b".into(),
            to: "internet".into(),
            port: Some(80),
            expect: Expect::Allow,
            sees: Some("cell1".into()),
        },
    )?;
    println!("  and to the outside world (masqueraded by cell1):");
    show(&out);
    ok &= out.pass;

    let trace_args = |dst: &str| -> Result<trace::TraceArgs> {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            t: trace::TraceArgs,
        }
        let sd = a.state_dir.display().to_string();
        Ok(T::try_parse_from([
            "trace",
            "app-b",
            dst,
            "--lab",
            &st.layout.lab,
            "--probe",
            "--state-dir",
            &sd,
        ])?
        .t)
    };
    banner("step 4: `weft trace app-b app-a:8080 --probe` -- the eleven steps of seed 000");
    let t = trace::trace(&trace_args("app-a:8080")?)?;
    trace::print(&t);
    ok &= t.decision.allowed;

    banner("step 5: `weft trace app-b app-a:9090 --probe` -- why a packet is dropped");
    let t = trace::trace(&trace_args("app-a:9090")?)?;
    trace::print(&t);
    ok &= !t.decision.allowed;

    if let Some(g) = &a.graph {
        let graph = crate::lab::picture::graph_of(st)?;
        let text = if g.extension().is_some_and(|e| e == "dot") {
            crate::lab::graph::dot(&graph)
        } else {
            crate::lab::graph::svg(&graph)
        };
        std::fs::write(g, text).with_context(|| format!("write {}", g.display()))?;
        println!("\nthe picture of the lab: {}", g.display());
    }
    Ok(ok)
}

/// Takes the demo's lab down when dropped (also on a panic, e.g. stdout closed), unless kept.
struct Cleanup<'a> {
    a: &'a DemoArgs,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.a.keep {
            return;
        }
        let mut p = Progress::new(true, 3);
        if let Err(e) = crate::lab::down::down(&self.a.name, &self.a.state_dir, &mut p) {
            eprintln!("weft demo: taking the lab down failed: {e:#}");
        }
    }
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let mut t = Topology::parse(C2C, "examples/c2c.toml")?;
    t.name = a.name.clone();
    // The demo adds the policy itself, halfway through.
    let policies = std::mem::take(&mut t.policies);
    banner("seed 000 on one machine: an underlay, two cells, a controller, an agent per cell, three apps");
    let dir = crate::lab::state::lab_dir(&a.state_dir, &a.name);
    if State::path(&dir).exists()
        || !crate::lab::state::existing_namespaces(&a.name, None).is_empty()
    {
        anyhow::bail!(
            "a lab named {0} is up (a demo run with --keep?): `weft lab down {0}` first, or --name another",
            a.name
        );
    }
    let mut p = Progress::for_topology(false, &t);
    let cleanup = Cleanup { a: &a };
    let built = up::up(&t, None, &a.state_dir, &mut p);
    let result = built.and_then(|mut st| {
        st.topology.policies = policies;
        story(&st, &a)
    });
    if a.keep {
        println!(
            "\nthe lab is still up (--keep): `weft lab status {0}`, `weft trace app-b app-a:8080 --lab {0}`, `weft lab down {0}`",
            a.name
        );
    } else {
        banner("cleaning up: `weft lab down`");
    }
    drop(cleanup);
    match result {
        Ok(true) => {
            println!("\ndemo done: every step behaved as seed 000 says");
            Ok(ExitCode::SUCCESS)
        }
        Ok(false) => {
            println!("\ndemo FAILED: a step did not behave as seed 000 says (see above)");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e),
    }
}
