use std::path::PathBuf;

use crate::certs::LabPki;

/// `weft certs`: create a lab CA, a controller certificate and one client certificate per
/// agent (host). With the CA already in OUT, `--agent NAME` adds that host's certificate.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory for ca.pem, ca-key.pem, server.pem, server-key.pem and, per agent,
    /// agent-NAME.pem and agent-NAME-key.pem.
    #[arg(long, default_value = "weft-certs")]
    pub out: PathBuf,
    /// DNS names and IP addresses of the controller (repeatable).
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub names: Vec<String>,
    /// A host to issue an agent certificate for (repeatable). The certificate names the host
    /// (URI SAN urn:weft:host:NAME, common name NAME): the controller lets it act only as NAME.
    #[arg(long = "agent", value_name = "NAME")]
    pub agents: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

impl CertsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let pki = LabPki::new(&self.out);
        let new_ca = self.force || !pki.ca().exists();
        pki.generate(&self.names, &self.agents, self.force)?;
        if new_ca {
            println!("lab CA and certificates written to {}", self.out.display());
            println!(
                "  controller: weft controller --tls-cert {} --tls-key {} --client-ca {}",
                pki.server_cert().display(),
                pki.server_key().display(),
                pki.ca().display()
            );
        }
        for a in &self.agents {
            println!(
                "  agent {a}: WEFT_CA={} WEFT_CERT={} WEFT_KEY={}",
                pki.ca().display(),
                pki.agent_cert(a).display(),
                pki.agent_key(a).display()
            );
        }
        if self.agents.is_empty() {
            println!("  no agent certificates: add one per host with --agent NAME");
        }
        Ok(())
    }
}
