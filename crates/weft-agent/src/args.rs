//! The agent's command line: flags, their environment variables and defaults. The modes
//! (`--policy`, `--fastpath`) are enums, so a value the agent does not know is refused by
//! the parser with the accepted ones named, and the code matches on variants, not strings.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use weft_api::client::WatchOptions;
use weft_api::logging::LogFormat;
use weft_api::records;

/// `weft agent`'s flags. Each one can also be set by its environment variable and, with
/// `--config FILE`, by the key of its name in that TOML file (`vxlan-port = 4789`): flags
/// override the environment, which overrides the file (see `weft`'s `config` module). The
/// shipped `packaging/etc/weft/agent.toml` lists every key with its default.
#[derive(Debug, Clone, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentArgs {
    /// TOML file with settings (keys are the flag names); the environment and flags override it
    #[arg(long, env = "WEFT_AGENT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Controller URL (required: here, in WEFT_CONTROLLER or in the config file)
    #[arg(
        long,
        env = "WEFT_CONTROLLER",
        default_value = "",
        hide_default_value = true
    )]
    pub controller: String,
    /// This host's underlay address (the VXLAN tunnel endpoint); default: the first IPv4
    /// address of --underlay-dev
    #[arg(long, env = "WEFT_AGENT_UNDERLAY_IP")]
    pub underlay_ip: Option<Ipv4Addr>,
    /// The underlay interface; default: the interface holding --underlay-ip
    #[arg(long, env = "WEFT_AGENT_UNDERLAY_DEV")]
    pub underlay_dev: Option<String>,
    /// The name this host's lease is held under (default: the host its client certificate
    /// names, else the host name)
    #[arg(long, env = "WEFT_HOST")]
    pub host: Option<String>,
    /// VXLAN network identifier
    #[arg(long, env = "WEFT_AGENT_VNI", default_value_t = 1)]
    pub vni: u32,
    /// VXLAN UDP port
    #[arg(long, env = "WEFT_AGENT_VXLAN_PORT", default_value_t = 4789)]
    pub vxlan_port: u16,
    /// Name of the VTEP device
    #[arg(long, env = "WEFT_AGENT_VTEP", default_value = "weft.vtep")]
    pub vtep: String,
    /// Where to write the lease for weft-cni (overlay mode's leaseFile)
    #[arg(long, env = "WEFT_AGENT_LEASE_FILE", default_value = records::DEFAULT_LEASE_FILE)]
    pub lease_file: PathBuf,
    /// CA certificate of the controller
    #[arg(long, env = "WEFT_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (mTLS)
    #[arg(long, env = "WEFT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client certificate key
    #[arg(long, env = "WEFT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token (instead of a client certificate)
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// weft-cni's state directory (dataDir), where the agent finds this host's containers
    #[arg(long, env = "WEFT_AGENT_CNI_DATA_DIR", default_value = records::DEFAULT_DATA_DIR)]
    pub cni_data_dir: PathBuf,
    /// Re-check the kernel against the desired state this often (seconds)
    #[arg(long, env = "WEFT_AGENT_RESYNC", default_value_t = 30)]
    pub resync: u64,
    /// Policy enforcement: "on" (default deny between apps, policies allow) or "off" (labs:
    /// every container reaches every other; marking and anti-spoofing stay on)
    #[arg(long, env = "WEFT_POLICY", value_enum, default_value_t = PolicyMode::On)]
    pub policy: PolicyMode,
    /// Serve Prometheus metrics (allowed/denied packets per policy and app pair) here,
    /// e.g. 127.0.0.1:9109
    #[arg(long, env = "WEFT_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The BPF fast path for established TCP connections across hosts (see `fastpath`):
    /// "auto" (default) uses it when the kernel and build allow and says why not otherwise,
    /// "on" refuses to start without it, "off" runs on the kernel path alone (and removes
    /// the programs an earlier run left)
    #[arg(long, env = "WEFT_FASTPATH", value_enum, default_value_t = FastpathMode::Auto)]
    pub fastpath: FastpathMode,
    /// On exit, release the lease and remove the VTEP, routes and NAT (the host leaves the
    /// overlay). Without it, exiting leaves everything in place so traffic keeps flowing.
    #[arg(long, env = "WEFT_AGENT_RELEASE_ON_EXIT")]
    pub release_on_exit: bool,
    /// Bound of every call to the controller but the watch (lease renewals, app claims), in
    /// seconds; they run off the agent's loop.
    #[arg(long, env = "WEFT_AGENT_REQUEST_TIMEOUT", default_value_t = 10.0, value_parser = weft_api::client::parse_interval_secs)]
    pub request_timeout: f64,
    /// The longest watch line accepted, in bytes: a longer one ends the stream (the watch
    /// reconnects) instead of filling memory. Controllers send snapshots in parts far below it.
    #[arg(long, env = "WEFT_AGENT_WATCH_MAX_LINE", default_value_t = WatchOptions::default().max_line)]
    pub watch_max_line: usize,
    /// The longest pause between two attempts to reach the controller's watch, in seconds
    /// (pauses grow from 0.1 s, doubling, each jittered).
    #[arg(long, env = "WEFT_AGENT_RECONNECT_MAX", default_value_t = WatchOptions::default().backoff_max.as_secs_f64(), value_parser = weft_api::client::parse_interval_secs)]
    pub reconnect_max: f64,
    /// Log format: "text" or "json" (one object a line). The level is WEFT_LOG's (default info).
    #[arg(long, env = "WEFT_AGENT_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Write the audit log (denied connection attempts as JSON lines, read through NFLOG) to
    /// FILE (appended), or "-" for standard output
    #[arg(long, env = "WEFT_AGENT_AUDIT_LOG", value_name = "FILE|-")]
    pub audit_log: Option<PathBuf>,
    /// With --audit-log: also log accepted new connections
    #[arg(long, env = "WEFT_AGENT_AUDIT_ACCEPTED", requires = "audit_log")]
    pub audit_accepted: bool,
    /// Audit log lines per second at most (burst: twice as many); both the kernel's log rule
    /// and the agent's reader hold to it, the rest is counted in weft_audit_dropped_total
    #[arg(long, env = "WEFT_AGENT_AUDIT_RATE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=crate::audit::MAX_RATE as i64))]
    pub audit_rate: u32,
    /// The NFLOG group of the audit log rules
    #[arg(long, env = "WEFT_AGENT_AUDIT_GROUP", default_value_t = 2626)]
    pub audit_group: u16,
    /// Answer DNS at 169.254.0.2:53 for this host's containers: APP.apps.internal and
    /// INDEX.APP.apps.internal from the controller's placement, other names forwarded
    #[arg(long, env = "WEFT_DNS")]
    pub dns: bool,
    /// With --dns: the resolv.conf whose nameservers get the names outside apps.internal
    /// (none there, or no file: those queries are REFUSED)
    #[arg(
        long,
        env = "WEFT_AGENT_DNS_RESOLV_CONF",
        default_value = "/etc/resolv.conf"
    )]
    pub dns_resolv_conf: PathBuf,
}

impl AgentArgs {
    /// What clap cannot check because the setting may come from the config file: a
    /// controller is named somewhere.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.controller.trim().is_empty() {
            anyhow::bail!(
                "no controller: give --controller URL, WEFT_CONTROLLER or `controller` in the config file"
            );
        }
        Ok(())
    }
}

/// `--policy` / `WEFT_POLICY`: whether the policy table denies between apps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    // Default deny between apps; policies allow.
    On,
    // Labs: every container reaches every other (marking and anti-spoofing stay on).
    Off,
}

/// `--fastpath` / `WEFT_FASTPATH`: whether the BPF fast path runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FastpathMode {
    // When the kernel and build allow; says why not otherwise.
    Auto,
    // Required: the agent refuses to start without it.
    On,
    // Kernel path alone; programs an earlier run left are removed.
    Off,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(extra: &[&str]) -> Result<AgentArgs, clap::Error> {
        let mut argv = vec!["weft-agent", "--controller", "https://c:8443"];
        argv.extend(extra);
        Cli::try_parse_from(argv).map(|c| c.agent)
    }

    /// The flags take the values they always took, with the same defaults and variables.
    #[test]
    fn modes_accept_the_values_they_always_did() {
        let a = parse(&[]).expect("defaults");
        assert_eq!((a.policy, a.fastpath), (PolicyMode::On, FastpathMode::Auto));
        let a = parse(&["--policy", "off", "--fastpath", "on"]).expect("off, on");
        assert_eq!((a.policy, a.fastpath), (PolicyMode::Off, FastpathMode::On));
        let a = parse(&["--policy=on", "--fastpath=off"]).expect("on, off");
        assert_eq!((a.policy, a.fastpath), (PolicyMode::On, FastpathMode::Off));
        for bad in [
            &["--policy", "auto"][..],
            &["--policy", "ON"],
            &["--policy", ""],
            &["--fastpath", "yes"],
        ] {
            let e = parse(bad).expect_err("refused");
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{bad:?}");
        }
        let cmd = Cli::command();
        let arg = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("--{id}"))
        };
        for (id, env, values) in [
            ("policy", "WEFT_POLICY", &["on", "off"][..]),
            ("fastpath", "WEFT_FASTPATH", &["auto", "on", "off"]),
        ] {
            let a = arg(id);
            assert_eq!(a.get_long(), Some(id));
            assert_eq!(a.get_env().and_then(|e| e.to_str()), Some(env));
            let names: Vec<String> = a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            assert_eq!(names, values);
        }
    }
}
