//! `weft lab check`: the seed's expected outcome, verified on the running lab. Each check
//! sends real traffic from one namespace of the lab to another (a TCP request to weft's
//! built-in server, or a ping) and compares what happened with what the lab file expects.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::state::State;
use super::topology::{CheckSpec, Expect};
use crate::reach::{self as probe, Outcome, PROBE_TIMEOUT};

/// How long a refused connection is retried (a server just started may not listen yet).
const SERVER_START: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub from: String,
    pub to: String,
    pub address: String,
    pub port: Option<u16>,
    pub expect: Expect,
    pub outcome: Outcome,
    pub pass: bool,
    /// Why it failed, in words.
    pub problem: Option<String>,
}

impl CheckResult {
    pub fn line(&self) -> String {
        let dst = match self.port {
            Some(p) => format!("{}:{p} ({}:{p})", self.to, self.address),
            None => format!("{} ({}, ping)", self.to, self.address),
        };
        format!(
            "{}  {} -> {}  expect {}: {}{}",
            if self.pass { "PASS" } else { "FAIL" },
            self.from,
            dst,
            match self.expect {
                Expect::Allow => "allow",
                Expect::Deny => "deny",
            },
            self.outcome.text(),
            self.problem
                .as_ref()
                .map(|p| format!(" -- {p}"))
                .unwrap_or_default()
        )
    }
}

/// Sends one probe as a check describes it and judges the outcome.
pub fn run_check(st: &State, c: &CheckSpec) -> Result<CheckResult> {
    let l = &st.layout;
    let ns = l
        .namespace_of(&c.from)
        .with_context(|| format!("check from {:?}: not a container, cell or internet", c.from))?;
    let dst = l
        .address_of(st, &c.to)
        .with_context(|| format!("check to {:?}: no address known", c.to))?;
    let send = || -> Result<Outcome> {
        match c.port {
            Some(port) => probe::tcp(&ns, dst, port, PROBE_TIMEOUT),
            None => probe::ping(&ns, dst, PROBE_TIMEOUT),
        }
    };
    let mut outcome = send()?;
    // A server started by `lab up` a moment ago may not listen yet: a refusal is retried for
    // a while (a drop is not: that is the answer).
    let start = std::time::Instant::now();
    while matches!(outcome, Outcome::Refused { .. }) && start.elapsed() < SERVER_START {
        std::thread::sleep(Duration::from_millis(100));
        outcome = send()?;
    }
    let mut problem = None;
    let pass = match c.expect {
        Expect::Allow => {
            if !outcome.reached() {
                problem = Some("expected to get through".into());
                false
            } else if let Some(s) = &c.sees {
                let want = l.address_of(st, s);
                let seen = match &outcome {
                    Outcome::Reached { seen, .. } => *seen,
                    _ => None,
                };
                if seen.is_some() && seen == want {
                    true
                } else {
                    problem = Some(format!(
                        "the server should have seen {s} ({}), saw {}",
                        want.map(|w| w.to_string()).unwrap_or_else(|| "?".into()),
                        seen.map(|w| w.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    ));
                    false
                }
            } else {
                true
            }
        }
        Expect::Deny => {
            if outcome.reached() {
                problem = Some("expected to be denied".into());
            }
            !outcome.reached()
        }
    };
    Ok(CheckResult {
        from: c.from.clone(),
        to: c.to.clone(),
        address: dst.to_string(),
        port: c.port,
        expect: c.expect,
        outcome,
        pass,
        problem,
    })
}

/// Runs these checks all at once (each waits for its own answer: a deny costs the probe
/// timeout once, not once per check); results in the given order.
pub fn run_many(st: &State, checks: &[CheckSpec]) -> Result<Vec<CheckResult>> {
    std::thread::scope(|s| {
        let running: Vec<_> = checks
            .iter()
            .map(|c| s.spawn(move || run_check(st, c)))
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a check's thread panicked"))?
            })
            .collect()
    })
}

/// Runs every check of the lab.
pub fn run_all(st: &State) -> Result<Vec<CheckResult>> {
    run_many(st, &st.topology.checks)
}
