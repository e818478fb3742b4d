//! A lab PKI made with rcgen: one CA that signs the controller's server certificate and the
//! agents' client certificate. For labs and tests; production PKI is the operator's.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where the files of a lab PKI are.
#[derive(Debug, Clone)]
pub struct LabPki {
    pub dir: PathBuf,
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
    pub fn agent_cert(&self) -> PathBuf {
        self.dir.join("agent.pem")
    }
    pub fn agent_key(&self) -> PathBuf {
        self.dir.join("agent-key.pem")
    }

    pub fn exists(&self) -> bool {
        [self.ca(), self.server_cert(), self.server_key()]
            .iter()
            .all(|p| p.exists())
    }

    /// Creates the CA, a server certificate for `server_names` (DNS names or IP addresses) and
    /// an agent client certificate. Refuses to overwrite unless `force`.
    pub fn generate(&self, server_names: &[String], force: bool) -> anyhow::Result<()> {
        if !force && self.ca().exists() {
            anyhow::bail!(
                "{} already exists (use --force to replace the lab CA and certificates)",
                self.ca().display()
            );
        }
        if server_names.is_empty() {
            anyhow::bail!("the server certificate needs at least one name or IP address");
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;

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
        write(&self.server_cert(), &server_cert.pem(), false)?;
        write(&self.server_key(), &server_key.serialize_pem(), true)?;

        let mut agent = CertificateParams::new(Vec::<String>::new())?;
        agent
            .distinguished_name
            .push(DnType::CommonName, "weft agent");
        agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let agent_key = KeyPair::generate()?;
        let agent_cert = agent.signed_by(&agent_key, &issuer)?;
        write(&self.agent_cert(), &agent_cert.pem(), false)?;
        write(&self.agent_key(), &agent_key.serialize_pem(), true)?;
        Ok(())
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
