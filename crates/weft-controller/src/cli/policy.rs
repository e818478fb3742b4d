use anyhow::Context;

use super::{print_json, table, ConnectArgs};
use crate::model::{Policy, Ports, Protocol};

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
}

fn parse_ports(s: &str) -> anyhow::Result<Ports> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let start: u16 = a
        .trim()
        .parse()
        .with_context(|| format!("--port {s:?}: {a:?} is not a port (1-65535)"))?;
    let end: u16 = b
        .trim()
        .parse()
        .with_context(|| format!("--port {s:?}: {b:?} is not a port (1-65535)"))?;
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

impl PolicyArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = self.connect.client()?;
        let json = self.connect.json;
        match self.command {
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
                print!(
                    "{}",
                    table(
                        &["SOURCE", "TAG", "DESTINATION", "TAG", "PROTOCOL", "PORTS"],
                        &rows
                    )
                );
            }
        }
        Ok(())
    }
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
