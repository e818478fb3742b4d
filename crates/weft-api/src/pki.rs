//! A lab PKI made with rcgen: one CA that signs the controller's server certificate and one
//! client certificate per agent, naming its host (`urn:weft:host:NAME` URI SAN and common name
//! NAME, read back by [`crate::tls::host_of`]); and the policy-write token file. For labs and
//! tests (and a controller started without certificates); production PKI is the operator's.
//!
//! Files it owns, in [`LabPki::dir`]: `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`,
//! `agent-NAME.pem`, `agent-NAME-key.pem`; keys and tokens are written mode 0600. Behind the
//! crate feature `pki`: the agent, which only reads certificates, does not build rcgen.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::tls::HOST_URI_PREFIX;

/// Where the files of a lab PKI are.
#[derive(Debug, Clone)]
pub struct LabPki {
    pub dir: PathBuf,
}

/// Checks an agent name for `--agent`: a host name (letters, digits, `.`, `-`, `_`; at most
/// 253), which also names its files.
pub fn validate_agent_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 253
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        anyhow::bail!(
            "--agent {name:?}: a host name is 1 to 253 letters, digits, '.', '-' or '_' (not starting with '.')"
        );
    }
    Ok(())
}

impl LabPki {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LabPki { dir: dir.into() }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    /// `agent-NAME.pem`: the client certificate of host NAME.
    pub fn agent_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("agent-{name}.pem"))
    }
    /// `agent-NAME-key.pem`.
    pub fn agent_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("agent-{name}-key.pem"))
    }

    pub fn exists(&self) -> bool {
        [self.ca(), self.server_cert(), self.server_key()]
            .iter()
            .all(|p| p.exists())
    }

    /// Creates the CA and a server certificate for `server_names` (DNS names or IP addresses),
    /// then one client certificate per name in `agents`. Refuses to replace an existing file
    /// unless `force`. With a CA already there (and no `force`), only the agents' certificates
    /// are made, signed by that CA: adding a host later needs no new CA.
    pub fn generate(
        &self,
        server_names: &[String],
        agents: &[String],
        force: bool,
    ) -> anyhow::Result<()> {
        for a in agents {
            validate_agent_name(a)?;
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let issuer = if force || !self.ca().exists() {
            self.new_ca(server_names)?
        } else {
            if agents.is_empty() {
                anyhow::bail!(
                    "{} already exists (use --force to replace the lab CA and certificates, or \
                     --agent NAME to add a host's certificate)",
                    self.ca().display()
                );
            }
            let key = fs::read_to_string(self.ca_key())
                .with_context(|| format!("cannot read {}", self.ca_key().display()))?;
            let key = KeyPair::from_pem(&key)
                .with_context(|| format!("{} is not a PEM key", self.ca_key().display()))?;
            let cert = fs::read_to_string(self.ca())
                .with_context(|| format!("cannot read {}", self.ca().display()))?;
            Issuer::from_ca_cert_pem(&cert, key)
                .with_context(|| format!("{} is not a CA certificate", self.ca().display()))?
        };
        for name in agents {
            if !force && self.agent_cert(name).exists() {
                anyhow::bail!(
                    "{} already exists (use --force to replace it)",
                    self.agent_cert(name).display()
                );
            }
            let mut agent = CertificateParams::new(Vec::<String>::new())?;
            agent.distinguished_name.push(DnType::CommonName, name);
            agent.subject_alt_names = vec![SanType::URI(
                format!("{HOST_URI_PREFIX}{name}")
                    .try_into()
                    .context("agent name")?,
            )];
            agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let agent_key = KeyPair::generate()?;
            let agent_cert = agent.signed_by(&agent_key, &issuer)?;
            write(&self.agent_key(name), &agent_key.serialize_pem(), true)?;
            write(&self.agent_cert(name), &agent_cert.pem(), false)?;
        }
        Ok(())
    }

    fn new_ca(&self, server_names: &[String]) -> anyhow::Result<Issuer<'static, KeyPair>> {
        if server_names.is_empty() {
            anyhow::bail!("the server certificate needs at least one name or IP address");
        }
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "weft lab CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write(&self.ca(), &ca_cert.pem(), false)?;
        write(&self.ca_key(), &ca_key.serialize_pem(), true)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server =
            CertificateParams::new(server_names.to_vec()).context("server certificate names")?;
        server
            .distinguished_name
            .push(DnType::CommonName, "weft controller");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &issuer)?;
        write(&self.server_key(), &server_key.serialize_pem(), true)?;
        write(&self.server_cert(), &server_cert.pem(), false)?;
        Ok(issuer)
    }
}

fn write(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A random hex token (32 bytes from the kernel's CSPRNG).
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    let mut f = fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes).context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token in `path`, creating it (mode 0600) with a random one if missing.
pub fn token_file(path: &Path) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let token = random_token()?;
            write(path, &format!("{token}\n"), true)?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
