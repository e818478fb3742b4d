//! `weft netns add|list|exec|del`: what seed 002 does with `ip netns`, plus `lo` up.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use weft_kernel::netns;

#[derive(Args)]
pub struct NetnsArgs {
    #[command(subcommand)]
    command: NetnsCommand,
}

#[derive(Subcommand)]
enum NetnsCommand {
    /// Create a named namespace and bring its loopback up
    Add { name: String },
    /// List named namespaces
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a namespace: weft netns exec NAME -- CMD [ARGS...]
    Exec {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Delete a named namespace
    #[command(alias = "delete")]
    Del { name: String },
}

#[derive(Serialize)]
struct Entry {
    name: String,
    path: String,
}

/// `weft netns add`: a named namespace (as `ip netns add`) with `lo` up; nothing is left if
/// bringing `lo` up fails.
pub fn add(name: &str) -> Result<netns::Netns> {
    weft_testbed::add_namespace(name)
}

pub fn run(args: NetnsArgs) -> Result<ExitCode> {
    match args.command {
        NetnsCommand::Add { name } => {
            add(&name)?;
            Ok(ExitCode::SUCCESS)
        }
        NetnsCommand::List { json } => {
            let names = netns::list_named()?;
            if json {
                let entries: Vec<Entry> = names
                    .into_iter()
                    .map(|n| Entry {
                        path: netns::named_path(&n).display().to_string(),
                        name: n,
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for n in names {
                    println!("{n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        NetnsCommand::Exec { name, cmd } => {
            let mut cmd = cmd.into_iter();
            let Some(prog) = cmd.next() else {
                bail!("exec: no command given (weft netns exec NAME -- CMD ...)")
            };
            netns::enter_for_exec(&name)?;
            let err = std::process::Command::new(&prog).args(cmd).exec();
            bail!("exec {prog}: {err}")
        }
        NetnsCommand::Del { name } => {
            netns::del_named(&name)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
