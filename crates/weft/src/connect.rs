//! How the client commands (`weft leases`, `apps`, `policy`) reach the controller: its URL,
//! the CA that signed its certificate, a client certificate or the bearer token, and `--json`.
//! Each flag also reads an environment variable (`WEFT_CONTROLLER`, `WEFT_CA`, `WEFT_CERT`,
//! `WEFT_KEY`, `WEFT_TOKEN`), so that one export serves every command.

use std::path::PathBuf;

use weft_api::Client;

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

/// Prints `v` as pretty JSON (the `--json` output of the client commands).
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
