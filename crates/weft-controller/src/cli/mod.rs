//! The `weft` CLI subcommands this crate provides, as clap-derive argument structs with
//! `async fn run(self)`. The `weft` binary mounts them (see the crate documentation).

mod apps;
mod certs;
mod controller;
mod leases;
mod policy;

use std::path::PathBuf;

pub use apps::AppsArgs;
pub use certs::CertsArgs;
pub use controller::ControllerArgs;
pub use leases::LeasesArgs;
pub use policy::{allowing, parse_ports, PolicyArgs};

use crate::client::Client;

/// How a CLI command reaches the controller.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Controller URL.
    #[arg(
        long,
        global = true,
        env = "WEFT_CONTROLLER",
        default_value = "https://127.0.0.1:7070"
    )]
    pub controller: String,
    /// CA certificate that signed the controller's certificate (`weft certs` writes ca.pem).
    #[arg(long, global = true, env = "WEFT_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (agents).
    #[arg(long, env = "WEFT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client certificate key.
    #[arg(long, env = "WEFT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token (needed for policy writes).
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ConnectArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let mut b = Client::builder(self.controller.clone());
        if let Some(ca) = &self.ca {
            b = b.ca(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            b = b.identity(cert, key);
        }
        if let Some(t) = &self.token {
            b = b.token(t.clone());
        }
        Ok(b.build()?)
    }
}

/// Renders rows as a left-aligned table with a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// The subcommands mounted as the `weft` binary is told to (see the crate docs).
    #[derive(Debug, clap::Parser)]
    struct Weft {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        Controller(super::ControllerArgs),
        Leases(super::LeasesArgs),
        Apps(super::AppsArgs),
        Policy(super::PolicyArgs),
        Certs(super::CertsArgs),
    }

    #[test]
    fn subcommands_mount_and_parse() {
        Weft::command().debug_assert();
        let w = Weft::parse_from([
            "weft",
            "controller",
            "--store",
            "postgres://u@h/db",
            "--overlay-cidr",
            "10.240.0.0/12",
            "--host-prefix",
            "26",
            "--insecure-http",
        ]);
        let Command::Controller(c) = w.command else {
            panic!("controller")
        };
        assert_eq!(c.host_prefix, 26);
        assert!(c.insecure_http);
        let w = Weft::parse_from([
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
        assert!(matches!(w.command, Command::Policy(_)));
        assert!(Weft::try_parse_from(["weft", "controller", "--tls-cert", "x"]).is_err());
        assert!(Weft::try_parse_from([
            "weft",
            "controller",
            "--insecure-http",
            "--tls-cert",
            "a",
            "--tls-key",
            "b",
            "--client-ca",
            "c"
        ])
        .is_err());
    }

    #[test]
    fn table_aligns_columns() {
        let t = super::table(
            &["HOST", "SUBNET"],
            &[
                vec!["a".into(), "10.0.0.0/24".into()],
                vec!["long-host".into(), "x".into()],
            ],
        );
        assert_eq!(
            t,
            "HOST       SUBNET\na          10.0.0.0/24\nlong-host  x\n"
        );
    }
}
