//! `weft egress mode|add|list|rm`: what apps may reach outside the overlay. `add FROM TO`
//! makes a destination of one rule (TO with --protocol and --ports; named after them unless
//! --name) and lets FROM reach it; `rm` takes the same words and removes the egress policy
//! (and the destination when no other app uses it). Writes need the token.

use anyhow::Context;
use weft_api::egress::{
    parse_ips, parse_ports, Destination, DestinationRule, EgressMode, EgressPolicy, EgressProtocol,
};

use crate::connect::{print_json, ConnectArgs};

/// `weft egress`: egress policy (traffic from apps to outside the overlay).
#[derive(Debug, Clone, clap::Args)]
pub struct EgressArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: EgressCommand,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EgressSpec {
    /// The app whose containers send.
    pub from: String,
    /// Where to: a CIDR, an address or a range A-B.
    pub to: String,
    /// tcp, udp, icmp or all.
    #[arg(long, default_value = "all")]
    pub protocol: String,
    /// Destination port or range (tcp and udp; default every port).
    #[arg(long)]
    pub ports: Option<String>,
    /// The destination's name (default: made from TO, the protocol and the ports).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EgressCommand {
    /// Show or set the network-wide mode: allow (apps reach everything outside the overlay)
    /// or deny (only what egress rules allow).
    Mode { mode: Option<String> },
    /// Let FROM reach TO (creating it twice is not an error).
    Add(EgressSpec),
    /// The mode and every egress rule.
    List,
    /// Remove what `add` with the same words made.
    Rm(EgressSpec),
}

impl EgressSpec {
    /// The destination `add` makes; errors name the flag.
    pub fn destination(&self) -> anyhow::Result<Destination> {
        let protocol = EgressProtocol::parse(&self.protocol).with_context(|| {
            format!(
                "--protocol {:?}: must be tcp, udp, icmp or all",
                self.protocol
            )
        })?;
        parse_ips(&self.to).map_err(|e| anyhow::anyhow!("TO {:?}: {e}", self.to))?;
        if let Some(p) = &self.ports {
            if !protocol.has_ports() {
                anyhow::bail!("--ports: {} rules take no ports", protocol.as_str());
            }
            parse_ports(p).map_err(|e| anyhow::anyhow!("--ports {p:?}: {e}"))?;
        }
        let name = self.name.clone().unwrap_or_else(|| {
            let mut n = format!("{}-{}", self.to.replace('/', "_"), protocol.as_str());
            if let Some(p) = &self.ports {
                n += &format!("-{p}");
            }
            n
        });
        Ok(Destination {
            id: name.clone(),
            name,
            description: String::new(),
            rules: vec![DestinationRule {
                protocol,
                ips: self.to.clone(),
                ports: self.ports.clone(),
                description: String::new(),
            }],
        })
    }
}

pub async fn run(a: EgressArgs) -> anyhow::Result<()> {
    let client = a.connect.client()?;
    let json = a.connect.json;
    match a.command {
        EgressCommand::Mode { mode } => {
            let settings = match mode {
                None => client.egress_mode().await?,
                Some(m) => {
                    let m = EgressMode::parse(&m)
                        .with_context(|| format!("MODE {m:?}: must be allow or deny"))?;
                    client.set_egress_mode(m).await?
                }
            };
            if json {
                return print_json(&settings);
            }
            println!("egress {}", settings.mode.as_str());
        }
        EgressCommand::Add(spec) => {
            let d = spec.destination()?;
            client.put_destinations(std::slice::from_ref(&d)).await?;
            let r = client
                .create_egress_policies(&[EgressPolicy::new(&spec.from, &d.id)])
                .await?;
            if json {
                return print_json(&serde_json::json!({"destination": d, "result": r}));
            }
            println!(
                "{} {} -> {} (revision {})",
                if r.changed > 0 {
                    "allowed"
                } else {
                    "already allowed"
                },
                spec.from,
                d.name,
                r.revision
            );
        }
        EgressCommand::Rm(spec) => {
            let d = spec.destination()?;
            let r = client
                .delete_egress_policies(&[EgressPolicy::new(&spec.from, &d.id)])
                .await?;
            // The destination goes with its last policy (409 while others use it).
            let still_used = client
                .egress_policies()
                .await?
                .egress_policies
                .iter()
                .any(|p| p.destination.id == d.id);
            if !still_used {
                match client.delete_destination(&d.id).await {
                    Ok(_) => {}
                    Err(weft_api::client::ClientError::Api { status: 404, .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if json {
                return print_json(&r);
            }
            println!(
                "{} (revision {})",
                if r.changed > 0 {
                    "removed"
                } else {
                    "no such egress rule"
                },
                r.revision
            );
        }
        EgressCommand::List => {
            let mode = client.egress_mode().await?;
            let dests = client.destinations().await?;
            let policies = client.egress_policies().await?;
            if json {
                return print_json(&serde_json::json!({
                    "mode": mode.mode,
                    "destinations": dests.destinations,
                    "egress_policies": policies.egress_policies,
                }));
            }
            println!("egress {}", mode.mode.as_str());
            let mut rows = Vec::new();
            for p in &policies.egress_policies {
                let Some(d) = dests.destinations.iter().find(|d| d.id == p.destination.id) else {
                    continue;
                };
                for r in &d.rules {
                    rows.push(vec![
                        p.source.id.clone(),
                        p.source
                            .tag
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| "-".into()),
                        d.name.clone(),
                        r.protocol.as_str().to_string(),
                        r.ips.clone(),
                        r.ports.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
            }
            crate::table::print(
                "",
                &["FROM", "TAG", "DESTINATION", "PROTOCOL", "TO", "PORTS"],
                &rows,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(to: &str, protocol: &str, ports: Option<&str>) -> EgressSpec {
        EgressSpec {
            from: "db".into(),
            to: to.into(),
            protocol: protocol.into(),
            ports: ports.map(String::from),
            name: None,
        }
    }

    #[test]
    fn add_makes_one_rule_named_after_it_and_names_bad_flags() {
        let d = spec("203.0.113.0/24", "tcp", Some("80"))
            .destination()
            .unwrap();
        assert_eq!(d.name, "203.0.113.0_24-tcp-80");
        assert_eq!(d.rules[0].ips, "203.0.113.0/24");
        for (s, flag) in [
            (spec("203.0.113.0/33", "tcp", None), "TO"),
            (spec("1.1.1.1", "sctp", None), "--protocol"),
            (spec("1.1.1.1", "icmp", Some("1")), "--ports"),
            (spec("1.1.1.1", "tcp", Some("0")), "--ports"),
        ] {
            let e = s.destination().unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
    }
}
