//! `weft doctor`: checks a host before and while weft runs, and says what is wrong and how
//! to fix it. Each check is a [`Check`] with a status: `ok`, `warn` (weft runs, something is
//! missing or will be soon) or `fail` (something weft needs is not there: the exit status is
//! then 1). `--json` prints the same report as one JSON object.
//!
//! - [`kernel`]: the kernel features weft uses, probed by creating them (veth, bridge, VXLAN
//!   with GBP, the agent's own nftables tables, the BPF fast path) in a network namespace of
//!   the probe's own, never the host's;
//! - [`host`]: sysctls, the nftables and libbpf libraries, the CNI plugin binary;
//! - [`setup`]: the agent's config file, its certificate, the lease, the controller, the CNI
//!   network configurations.

mod host;
mod kernel;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

/// `weft doctor`'s flags.
#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The agent's settings (as `weft agent --config` reads them, environment included): the
    /// controller, certificates and lease file checked. A missing default file only skips
    /// those checks; a missing file given here is a failure.
    #[arg(long, default_value = setup::DEFAULT_AGENT_CONFIG)]
    pub config: PathBuf,
    /// Where the container runtime reads CNI network configurations.
    #[arg(long, env = "CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Where runtimes look for CNI plugins (the weft-cni binary is looked for in each).
    #[arg(
        long,
        value_delimiter = ':',
        default_value = "/usr/lib/cni:/opt/cni/bin"
    )]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Seconds to wait for the controller.
    #[arg(long, default_value_t = 5.0, value_parser = weft_api::client::parse_interval_secs)]
    pub timeout: f64,
    /// One JSON object: {"ok": bool, "checks": [{"name","status","detail","fix"}]}
    #[arg(long)]
    pub json: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's result: what was looked at, what was found, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::with_fix(Status::Warn, name.into(), detail.into(), fix.into())
    }
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::with_fix(Status::Fail, name.into(), detail.into(), fix.into())
    }
    /// A check that did not pass, with the fix to show beside it.
    fn with_fix(status: Status, name: String, detail: String, fix: String) -> Check {
        Check {
            name,
            status,
            detail,
            fix: Some(fix),
        }
    }
}

/// Every check's result.
#[derive(Debug, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    fn print(&self) {
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            println!("{mark}  {:<26} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("      {:<26} fix: {fix}", "");
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        println!(
            "\n{} ok, {} warnings, {} failed{}",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            if self.ok {
                ""
            } else {
                ": weft cannot run here until the failures are fixed"
            }
        );
    }
}

/// Runs every check.
pub fn checks(args: &DoctorArgs) -> Vec<Check> {
    let mut out = kernel::checks();
    out.extend(host::checks(&args.cni_bin_dirs));
    out.extend(setup::checks(args));
    out
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = Report::new(checks(&args));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_fails_the_report_a_warning_does_not() {
        let ok = Check::ok("a", "fine");
        let warn = Check::warn("b", "meh", "do x");
        let fail = Check::fail("c", "broken", "do y");
        assert!(Report::new(vec![ok.clone(), warn.clone()]).ok);
        assert!(!Report::new(vec![ok, warn, fail]).ok);
        let j =
            serde_json::to_value(Report::new(vec![Check::fail("c", "broken", "do y")])).unwrap();
        assert_eq!(j["ok"], false);
        assert_eq!(j["checks"][0]["status"], "fail");
        assert_eq!(j["checks"][0]["fix"], "do y");
    }
}
