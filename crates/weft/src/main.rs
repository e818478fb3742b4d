//! `weft`: the command line for people.

mod apps;
mod audit;
mod certs;
mod config;
mod connect;
mod containers;
mod demo;
mod doctor;
mod egress;
mod lab;
mod leases;
mod netns;
mod policy;
mod reach;
mod rt;
mod table;
mod trace;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use weft_api::logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "weft: container networking with namespaces, veth, bridges, VXLAN and per-app policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Network namespaces, compatible with `ip netns` (/run/netns/NAME)
    Netns(netns::NetnsArgs),
    /// Run this host's agent: lease, VTEP, routes to other hosts, NAT
    Agent(weft_agent::AgentArgs),
    /// This host's containers: namespace, interfaces, IP, app, tag
    Containers(containers::ContainersArgs),
    /// Run the controller: subnet leases, apps and tags, policies, watch
    Controller(weft_controller::ControllerArgs),
    /// Subnet leases held by hosts (from the controller)
    Leases(leases::LeasesArgs),
    /// Apps and their tags (from the controller)
    Apps(apps::AppsArgs),
    /// Policies: which app may reach which (from the controller)
    Policy(policy::PolicyArgs),
    /// Egress: what apps may reach outside the overlay (mode allow|deny, rules)
    Egress(egress::EgressArgs),
    /// Create a CA and certificates for a lab
    Certs(certs::CertsArgs),
    /// Build seed topologies on this machine in namespaces: up, check, status, graph, down
    Lab(lab::LabArgs),
    /// The path of a packet through seed 000's eleven steps, with the kernel objects at each
    Trace(trace::TraceArgs),
    /// Seed 000 in one command: deny, policy, allow, trace; then clean up
    Demo(demo::DemoArgs),
    /// Check this host for weft: kernel features, sysctls, libraries, controller, certificate,
    /// lease, CNI configuration; say what is wrong and how to fix it
    Doctor(doctor::DoctorArgs),
    /// The audit log: denied (and accepted) connections an agent logged, for a host or a lab
    Audit(audit::AuditArgs),
}

fn block_on(
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Logging to stderr at WEFT_LOG's level, else `default`.
fn init_logging(default: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| default.into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// The daemons' `--config FILE` laid under their flags and environment
/// ([`config::layered`]); `matches` is what `cli` was parsed from.
fn layer_config(cli: &mut Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(());
    };
    match &mut cli.command {
        Command::Agent(a) => {
            if let Some(file) = a.config.clone() {
                *a = config::layered(a, sub, &file)?;
                a.config = Some(file);
            }
        }
        Command::Controller(a) => {
            if let Some(file) = a.config.clone() {
                *a = config::layered(a, sub, &file)?;
                a.config = Some(file);
            }
        }
        _ => {}
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = layer_config(&mut cli, &matches) {
        eprintln!("weft: {e:#}");
        return std::process::ExitCode::from(2);
    }
    match &cli.command {
        // The controller sets up its own logging (info, text or --log-format json).
        Command::Controller(_) => {}
        // The agent is a daemon too: info unless WEFT_LOG says otherwise.
        Command::Agent(a) => init_logging("info", a.log_format),
        _ => init_logging("warn", LogFormat::Text),
    }
    let res = match cli.command {
        Command::Netns(a) => netns::run(a),
        Command::Controller(a) => block_on(a.run()),
        Command::Agent(a) => block_on(a.run()),
        Command::Containers(a) => containers::run(a),
        Command::Leases(a) => block_on(leases::run(a)),
        Command::Apps(a) => block_on(apps::run(a)),
        Command::Policy(a) => block_on(policy::run(a)),
        Command::Egress(a) => block_on(egress::run(a)),
        Command::Certs(a) => certs::run(a),
        Command::Lab(a) => lab::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Audit(a) => audit::run(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    /// Every subcommand mounts (clap's own consistency checks) and the client commands take
    /// their connection flags before or after the subcommand.
    #[test]
    fn subcommands_mount_and_parse() {
        Cli::command().debug_assert();
        let w = Cli::parse_from([
            "weft",
            "policy",
            "--controller",
            "http://x:1",
            "--json",
            "add",
            "a",
            "b",
            "--port",
            "80-90",
        ]);
        let Command::Policy(p) = w.command else {
            panic!("policy")
        };
        assert!(p.connect.json);
        assert_eq!(p.connect.controller, "http://x:1");
        assert!(Cli::try_parse_from(["weft", "controller", "--tls-cert", "x"]).is_err());
        assert!(Cli::try_parse_from(["weft", "leases", "release", "h1"]).is_ok());
        assert!(Cli::try_parse_from(["weft", "certs", "--agent", "c1"]).is_ok());
    }
}
