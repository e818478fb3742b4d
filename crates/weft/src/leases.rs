//! `weft leases`: the overlay subnets hosts hold (list), and returning one to the pool
//! (release HOST).

use crate::connect::{print_json, ConnectArgs};

/// `weft leases`: the overlay subnets hosts hold.
#[derive(Debug, Clone, clap::Args)]
pub struct LeasesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: Option<LeasesCommand>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LeasesCommand {
    /// List leases (the default).
    List,
    /// Return a host's subnet to the pool.
    Release { host: String },
}

pub async fn run(a: LeasesArgs) -> anyhow::Result<()> {
    let client = a.connect.client()?;
    match a.command.unwrap_or(LeasesCommand::List) {
        LeasesCommand::List => {
            let list = client.leases().await?;
            if a.connect.json {
                return print_json(&list);
            }
            let now = weft_api::model::unix_now();
            let rows: Vec<Vec<String>> = list
                .leases
                .iter()
                .map(|l| {
                    vec![
                        l.host.clone(),
                        l.subnet.to_string(),
                        l.underlay_ip.to_string(),
                        l.vtep_mac.clone(),
                        format!("{}s", (l.expires_at - now).max(0)),
                    ]
                })
                .collect();
            crate::table::print(
                "",
                &["HOST", "SUBNET", "UNDERLAY", "VTEP MAC", "EXPIRES IN"],
                &rows,
            );
            println!(
                "{} of {} /{} subnets of {} leased",
                list.leases.len(),
                list.pool_size,
                list.host_prefix,
                list.overlay
            );
            Ok(())
        }
        LeasesCommand::Release { host } => {
            client.release_lease(&host).await?;
            if !a.connect.json {
                println!("released the lease of {host}");
            }
            Ok(())
        }
    }
}
