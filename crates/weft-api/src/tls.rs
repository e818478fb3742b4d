//! TLS for the controller's clients and the parts the controller shares with them: loading
//! PEM files, re-reading them when they change, the client configuration (trust the CA,
//! present a client certificate) and the host identity an agent's certificate carries. The
//! server's own configuration (`weft_controller::tls`) is built from the same pieces.
//!
//! Certificates are re-read when their files change (rotation without a restart): each new
//! connection looks at the files' inode, size and modification time ([`Reloading`]) and, if
//! any changed, builds the configuration again. A file that does not load (half written, key
//! and certificate not matching yet) keeps the previous configuration in use and is logged;
//! connections already open keep the certificate they started with.
//!
//! ## Host identity
//! An agent certificate names its host in a URI subject alternative name
//! `urn:weft:host:NAME` ([`HOST_URI_PREFIX`]); `weft certs --agent NAME` also sets the common
//! name to NAME for people reading it. The controller takes the host from that SAN only (never
//! from the common name, which any CA profile may fill with something else): a certificate
//! without it may read, but acts for no host. [`host_of`] is the one reader of that SAN, for
//! the controller (the peer's certificate) and the agent (its own).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The URI SAN that names an agent's host: `urn:weft:host:NAME`.
pub const HOST_URI_PREFIX: &str = "urn:weft:host:";

/// Makes ring the process-wide rustls provider (reqwest needs one even for plain HTTP). Keeps a
/// provider the embedding program installed before.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The crypto provider every configuration here is built with (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a PEM private key from {}", path.display()))
}

/// The certificates in the PEM file `ca` as trust anchors.
pub fn roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    Ok(roots)
}

/// What identifies one version of a file: inode, size, modification time.
type Stamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

type Loader<T> = Box<dyn Fn() -> anyhow::Result<T> + Send + Sync>;

/// A value built from files, built again when any of them changes (checked on [`get`]).
///
/// [`get`]: Reloading::get
pub struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<(Vec<Stamp>, Arc<T>)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish()
    }
}

impl<T> Reloading<T> {
    /// Loads the value once (an error here is an error of the caller's configuration).
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn() -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        let value = load()?;
        Ok(Reloading {
            what,
            paths,
            load: Box::new(load),
            state: Mutex::new((stamps, Arc::new(value))),
        })
    }

    /// The current value, re-read first if a file changed since the last look.
    pub fn get(&self) -> Arc<T> {
        let stamps: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 != stamps {
            // Remember the stamps even if loading fails: the next write changes them again,
            // and a broken file is logged once, not on every connection.
            state.0 = stamps;
            match (self.load)() {
                Ok(v) => {
                    state.1 = Arc::new(v);
                    tracing::info!(what = self.what, files = ?self.paths, "certificates re-read");
                }
                Err(e) => tracing::warn!(
                    what = self.what,
                    error = %format!("{e:#}"),
                    "changed certificate files do not load; keeping the previous ones"
                ),
            }
        }
        state.1.clone()
    }
}

fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let ck = CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider())
        .with_context(|| format!("{} and {} do not match", cert.display(), key.display()))?;
    Ok(Arc::new(ck))
}

/// The client certificate, re-read when its files change.
#[derive(Debug)]
struct ReloadingIdentity(Reloading<Arc<CertifiedKey>>);

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().as_ref().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies the controller's certificate against the CA file, re-read when it changes.
#[derive(Debug)]
struct ReloadingRoots(Reloading<Arc<WebPkiServerVerifier>>);

impl ReloadingRoots {
    fn current(&self) -> Arc<WebPkiServerVerifier> {
        self.0.get().as_ref().clone()
    }
}

impl ServerCertVerifier for ReloadingRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Client TLS: trust `ca`; present `identity` (certificate, key) if given. Both are re-read
/// when their files change, for the connections made after.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let ca_path = ca.to_owned();
    let roots = Reloading::new("controller CA", vec![ca_path.clone()], move || {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(&ca_path)?), provider())
            .build()
            .context("server certificate verifier")
    })?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReloadingRoots(roots)));
    let mut config = match identity {
        Some((cert, key)) => {
            let (c, k) = (cert.to_owned(), key.to_owned());
            let id = Reloading::new(
                "client certificate",
                vec![c.clone(), k.clone()],
                move || certified_key(&c, &k),
            )?;
            builder.with_client_cert_resolver(Arc::new(ReloadingIdentity(id)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The host a certificate (DER) names in its `urn:weft:host:NAME` URI SAN, if any. A
/// certificate naming two different hosts names none.
pub fn host_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut hosts = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(HOST_URI_PREFIX),
        _ => None,
    });
    let first = hosts.next()?;
    if first.is_empty() || hosts.any(|h| h != first) {
        return None;
    }
    Some(first.to_string())
}

/// The host named by the first certificate in a PEM file.
pub fn host_of_file(path: &Path) -> anyhow::Result<Option<String>> {
    let certs = load_certs(path)?;
    Ok(host_of(&certs[0]))
}

/// When the first certificate in a PEM file expires (unix seconds).
pub fn not_after(path: &Path) -> anyhow::Result<i64> {
    let certs = load_certs(path)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cert.validity().not_after.timestamp())
}
