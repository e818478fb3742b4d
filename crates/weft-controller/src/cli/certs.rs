use std::path::PathBuf;

use crate::certs::LabPki;

/// `weft certs`: create a lab CA, a controller certificate and an agent client certificate.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory for ca.pem, server.pem, server-key.pem, agent.pem, agent-key.pem.
    #[arg(long, default_value = "weft-certs")]
    pub out: PathBuf,
    /// DNS names and IP addresses of the controller (repeatable).
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub names: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

impl CertsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let pki = LabPki::new(&self.out);
        pki.generate(&self.names, self.force)?;
        println!("lab CA and certificates written to {}", self.out.display());
        println!(
            "  controller: weft controller --tls-cert {} --tls-key {} --client-ca {}",
            pki.server_cert().display(),
            pki.server_key().display(),
            pki.ca().display()
        );
        println!(
            "  agents:     WEFT_CA={} WEFT_CERT={} WEFT_KEY={}",
            pki.ca().display(),
            pki.agent_cert().display(),
            pki.agent_key().display()
        );
        Ok(())
    }
}
