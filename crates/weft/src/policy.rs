//! `weft policy add|list|rm|check`: which app may reach which. Writes need the token; `check`
//! answers from the controller's policies with [`weft_api::model::allowing`], the same reading
//! `weft trace` gives. [`parse_ports`] reads the port syntax (`8080`, `8000-8099`) of `--port`
//! and of the lab's topology files.

use anyhow::Context;
use weft_api::model::{allowing, Policy, Ports, Protocol};

use crate::connect::{print_json, ConnectArgs};

/// `weft policy add|list|rm`: allow traffic between apps.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PolicySpec {
    /// Source app id.
    pub source: String,
    /// Destination app id.
    pub destination: String,
    /// tcp, udp or icmp.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Destination port or range, e.g. 8080 or 8000-8099 (not for icmp).
    #[arg(long)]
    pub port: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Allow SOURCE to reach DESTINATION (creating it twice is not an error).
    Add(PolicySpec),
    /// List policies, all or those naming one of the --app ids.
    List {
        #[arg(long = "app")]
        apps: Vec<String>,
    },
    /// Remove a policy.
    Rm(PolicySpec),
    /// Would SOURCE reach DESTINATION on PORT under the current policies? Names the policy
    /// that allows it (exit code 0) or says it is denied (exit code 1).
    Check {
        /// Source app id.
        source: String,
        /// Destination app id.
        destination: String,
        /// Destination port (leave out for icmp).
        port: Option<u16>,
        /// tcp, udp or icmp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
    },
}

/// A port or an inclusive range `START-END`; the error names the bad part.
pub fn parse_ports(s: &str) -> anyhow::Result<Ports> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let start: u16 = a
        .trim()
        .parse()
        .with_context(|| format!("--port {s:?}: {a:?} is not a port (1-65535)"))?;
    let end: u16 = b
        .trim()
        .parse()
        .with_context(|| format!("--port {s:?}: {b:?} is not a port (1-65535)"))?;
    if start == 0 || start > end {
        anyhow::bail!("--port {s:?}: not a port (1-65535) or a range START-END with START <= END");
    }
    Ok(Ports { start, end })
}

impl PolicySpec {
    fn policy(&self) -> anyhow::Result<Policy> {
        let protocol = Protocol::parse(&self.protocol)
            .with_context(|| format!("--protocol {:?}: must be tcp, udp or icmp", self.protocol))?;
        let ports = match (&self.port, protocol) {
            (None, Protocol::Icmp) => None,
            (None, _) => anyhow::bail!("--port is required for {protocol}"),
            (Some(p), _) => Some(parse_ports(p)?),
        };
        Ok(Policy::new(
            &self.source,
            &self.destination,
            protocol,
            ports,
        ))
    }
}

fn ports_text(p: &Policy) -> String {
    match p.destination.ports {
        None => "-".into(),
        Some(Ports { start, end }) if start == end => start.to_string(),
        Some(Ports { start, end }) => format!("{start}-{end}"),
    }
}

fn tag_text(t: Option<u16>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

pub async fn run(a: PolicyArgs) -> anyhow::Result<()> {
    let client = a.connect.client()?;
    let json = a.connect.json;
    match a.command {
        PolicyCommand::Add(spec) => {
            let r = client.create_policies(&[spec.policy()?]).await?;
            if json {
                return print_json(&r);
            }
            println!(
                "{} (revision {})",
                if r.changed > 0 {
                    "created"
                } else {
                    "already present"
                },
                r.revision
            );
        }
        PolicyCommand::Rm(spec) => {
            let r = client.delete_policies(&[spec.policy()?]).await?;
            if json {
                return print_json(&r);
            }
            println!(
                "{} (revision {})",
                if r.changed > 0 {
                    "removed"
                } else {
                    "no such policy"
                },
                r.revision
            );
        }
        PolicyCommand::Check {
            source,
            destination,
            port,
            protocol,
        } => {
            let proto = Protocol::parse(&protocol)
                .with_context(|| format!("--protocol {protocol:?}: must be tcp, udp or icmp"))?;
            if proto != Protocol::Icmp && port.is_none() {
                anyhow::bail!("PORT is required for {proto}");
            }
            let list = client.policies(Some(&[source.as_str()])).await?;
            let found = allowing(&list.policies, &source, &destination, proto, port);
            let what = match port {
                Some(p) if proto != Protocol::Icmp => format!("{proto}/{p}"),
                _ => proto.to_string(),
            };
            if json {
                print_json(&serde_json::json!({ "allowed": found.is_some(), "policy": found }))?;
            } else {
                match found {
                        Some(p) => println!(
                            "allowed: {source} -> {destination} {what} by policy {source} -> {destination} {} {}",
                            p.destination.protocol,
                            ports_text(p)
                        ),
                        None => println!("denied: no policy allows {source} -> {destination} {what} (default deny)"),
                    }
            }
            if found.is_none() {
                std::process::exit(1);
            }
        }
        PolicyCommand::List { apps } => {
            let ids: Vec<&str> = apps.iter().map(String::as_str).collect();
            let list = client
                .policies(if ids.is_empty() { None } else { Some(&ids) })
                .await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .policies
                .iter()
                .map(|p| {
                    vec![
                        p.source.id.clone(),
                        tag_text(p.source.tag),
                        p.destination.id.clone(),
                        tag_text(p.destination.tag),
                        p.destination.protocol.to_string(),
                        ports_text(p),
                    ]
                })
                .collect();
            crate::table::print(
                "",
                &["SOURCE", "TAG", "DESTINATION", "TAG", "PROTOCOL", "PORTS"],
                &rows,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(
            parse_ports("8080").unwrap(),
            Ports {
                start: 8080,
                end: 8080
            }
        );
        assert_eq!(parse_ports("1-2").unwrap(), Ports { start: 1, end: 2 });
        assert!(parse_ports("70000").is_err());
    }
}
