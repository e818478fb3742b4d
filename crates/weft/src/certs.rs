//! `weft certs`: a lab CA, the controller's certificate and one client certificate per agent
//! (host), made by [`weft_api::pki::LabPki`] — the same PKI `weft lab` and the controller's
//! first start make. Production PKI is the operator's; these are for labs and trials.

use std::path::PathBuf;

use weft_api::pki::LabPki;

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

pub fn run(a: CertsArgs) -> anyhow::Result<std::process::ExitCode> {
    let pki = LabPki::new(&a.out);
    let new_ca = a.force || !pki.ca().exists();
    pki.generate(&a.names, &a.agents, a.force)?;
    if new_ca {
        println!("lab CA and certificates written to {}", a.out.display());
        println!(
            "  controller: weft controller --tls-cert {} --tls-key {} --client-ca {}",
            pki.server_cert().display(),
            pki.server_key().display(),
            pki.ca().display()
        );
    }
    for name in &a.agents {
        println!(
            "  agent {name}: WEFT_CA={} WEFT_CERT={} WEFT_KEY={}",
            pki.ca().display(),
            pki.agent_cert(name).display(),
            pki.agent_key(name).display()
        );
    }
    if a.agents.is_empty() {
        println!("  no agent certificates: add one per host with --agent NAME");
    }
    Ok(std::process::ExitCode::SUCCESS)
}
