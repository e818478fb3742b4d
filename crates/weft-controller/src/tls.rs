//! The server's TLS: its certificate and key, and the client CA that agents' certificates must
//! chain to. Client certificates are asked for, not required: whether a route needs one is
//! decided per route ([`crate::auth`]). The configuration is re-read when any of the three
//! files changes, for the connections accepted after (built from [`weft_api::tls`]'s pieces,
//! which also read the host an agent's certificate names: [`weft_api::tls::host_of`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use weft_api::tls::{load_certs, load_key, provider, roots, Reloading};

/// Server TLS: the server's certificate and key; client certificates are asked for and, when
/// presented, must chain to `client_ca`. Whether a route needs one is decided per route.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)?), provider())
            .allow_unauthenticated()
            .build()
            .context("client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .with_context(|| format!("{} and {} do not match", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server's TLS configuration, re-read when the certificate, key or client CA changes.
pub struct ServerTls(Reloading<Arc<rustls::ServerConfig>>);

impl ServerTls {
    pub fn from_files(cert: &Path, key: &Path, client_ca: &Path) -> anyhow::Result<ServerTls> {
        let (c, k, ca) = (cert.to_owned(), key.to_owned(), client_ca.to_owned());
        Ok(ServerTls(Reloading::new(
            "server certificate and client CA",
            vec![c.clone(), k.clone(), ca.clone()],
            move || server_config(&c, &k, &ca),
        )?))
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.0.get().as_ref().clone()
    }
}
