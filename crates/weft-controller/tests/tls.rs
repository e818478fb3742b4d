//! TLS: agents need a client certificate that names their host and act only as that host;
//! policy writes need the token; certificates are re-read when their files change.

mod common;

use std::path::Path;

use common::{Backend, TestStore};
use weft_api::client::ClientError;
use weft_api::model::{Policy, Ports, Protocol};
use weft_api::pki::LabPki;
use weft_api::Client;
use weft_controller::ControllerArgs;

fn tls_args(store: &TestStore, cert: &Path, key: &Path, ca: &Path) -> ControllerArgs {
    let mut args = store.args();
    args.insecure_http = false;
    args.tls_cert = Some(cert.to_owned());
    args.tls_key = Some(key.to_owned());
    args.client_ca = Some(ca.to_owned());
    args.token = Some("s3cret".into());
    args
}

fn agent(url: &str, pki: &LabPki, host: &str) -> Client {
    Client::builder(url)
        .ca(pki.ca())
        .identity(pki.agent_cert(host), pki.agent_key(host))
        .build()
        .unwrap()
}

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, body }) => (status, body.error),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_a_client_certificate_and_writes_need_the_token() {
    let store = TestStore::new(Backend::Sqlite, "tls").await.unwrap();
    let pki = LabPki::new(store.dir.path().join("pki"));
    pki.generate(
        &["localhost".into(), "127.0.0.1".into()],
        &["h1".into()],
        false,
    )
    .unwrap();
    assert!(
        pki.generate(&["localhost".into()], &[], false).is_err(),
        "no silent overwrite"
    );
    let args = tls_args(&store, &pki.server_cert(), &pki.server_key(), &pki.ca());
    let server = args.start().await.unwrap();
    let url = server.url();
    assert!(url.starts_with("https://"));

    let agent = agent(&url, &pki, "h1");
    let anonymous = Client::builder(&url).ca(pki.ca()).build().unwrap();
    let admin = Client::builder(&url)
        .ca(pki.ca())
        .token("s3cret")
        .build()
        .unwrap();
    let wrong = Client::builder(&url)
        .ca(pki.ca())
        .token("guess")
        .build()
        .unwrap();

    // Public endpoints need nothing but TLS.
    assert_eq!(anonymous.health().await.unwrap().status, "ok");
    // An agent with its certificate gets a lease; without one it is refused.
    agent.acquire_lease("h1", "192.0.2.1").await.unwrap();
    let err = anonymous
        .acquire_lease("h2", "192.0.2.2")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let err = anonymous.watch(None).await.err().expect("refused");
    assert_eq!(err.status(), Some(401), "{err}");
    // Policy writes: token only; a client certificate is not enough (403).
    let p = Policy::new("a", "b", Protocol::Tcp, Some(Ports { start: 80, end: 80 }));
    let err = agent
        .create_policies(std::slice::from_ref(&p))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = wrong
        .create_policies(std::slice::from_ref(&p))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    admin
        .create_policies(std::slice::from_ref(&p))
        .await
        .unwrap();
    // Agents read policies with their certificate.
    assert_eq!(agent.policies(None).await.unwrap().policies.len(), 1);

    // A client certificate from another CA is refused at the handshake.
    let other = LabPki::new(store.dir.path().join("other"));
    other
        .generate(&["localhost".into()], &["h3".into()], false)
        .unwrap();
    let stranger = Client::builder(&url)
        .ca(pki.ca())
        .identity(other.agent_cert("h3"), other.agent_key("h3"))
        .build()
        .unwrap();
    assert!(stranger.acquire_lease("h3", "192.0.2.3").await.is_err());
    // Plain HTTP to the TLS port fails.
    let plain = Client::builder(url.replace("https://", "http://"))
        .build()
        .unwrap();
    assert!(plain.health().await.is_err());
    // https without a CA is a configuration error, not a silent insecure connection.
    assert!(Client::builder(&url).build().is_err());
    server.shutdown().await;
}

/// A certificate signed by the CA in `pki` without a host name (as the shared `agent.pem` of
/// earlier releases).
fn unnamed_cert(pki: &LabPki) -> (std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.ca_key()).unwrap()).unwrap();
    let issuer =
        Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.ca()).unwrap(), ca_key).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "weft agent");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (c, k) = (pki.dir.join("agent.pem"), pki.dir.join("agent-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// Before: every certificate of the client CA could acquire, renew or release any host's
/// lease and claim for any host (one certificate released another host's lease, took its name
/// at another underlay address and held 255 leases). Now the certificate's host is the only
/// host it acts for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_acts_only_as_the_host_its_certificate_names() {
    let store = TestStore::new(Backend::Sqlite, "identity").await.unwrap();
    let pki = LabPki::new(store.dir.path().join("pki"));
    pki.generate(&["127.0.0.1".into()], &["h1".into(), "h2".into()], false)
        .unwrap();
    // Adding a host later reuses the CA.
    let ca_before = std::fs::read(pki.ca()).unwrap();
    pki.generate(&[], &["h3".into()], false).unwrap();
    assert_eq!(std::fs::read(pki.ca()).unwrap(), ca_before);
    assert!(
        pki.generate(&[], &["h3".into()], false).is_err(),
        "no silent overwrite"
    );
    assert!(pki.generate(&[], &["../evil".into()], false).is_err());
    assert_eq!(
        weft_api::tls::host_of_file(&pki.agent_cert("h3")).unwrap(),
        Some("h3".to_string())
    );

    let server = tls_args(&store, &pki.server_cert(), &pki.server_key(), &pki.ca())
        .start()
        .await
        .unwrap();
    let url = server.url();
    let h1 = agent(&url, &pki, "h1");
    let h2 = agent(&url, &pki, "h2");
    let admin = Client::builder(&url)
        .ca(pki.ca())
        .token("s3cret")
        .build()
        .unwrap();

    let l2 = h2.acquire_lease("h2", "192.0.2.2").await.unwrap();
    // The host comes from the certificate: h1 naming no host is h1.
    let l1 = h1.acquire_lease("", "192.0.2.1").await.unwrap();
    assert_eq!(l1.host, "h1");
    // Another host's lease: 403 with a message, and nothing changed.
    let (code, msg) = status(h1.acquire_lease("h2", "192.0.2.99").await);
    assert_eq!(code, 403);
    assert!(msg.contains("\"h1\"") && msg.contains("\"h2\""), "{msg}");
    assert_eq!(status(h1.renew_lease("h2").await).0, 403);
    assert_eq!(status(h1.release_lease("h2").await).0, 403);
    let leases = admin.leases().await.unwrap().leases;
    let still = leases.iter().find(|l| l.host == "h2").unwrap();
    assert_eq!(
        (still.subnet, still.underlay_ip),
        (l2.subnet, l2.underlay_ip)
    );
    // Claims for another host: 403, by path, by query and by claim set.
    assert_eq!(status(h1.claim_app("h2", "app").await).0, 403);
    assert_eq!(status(h1.set_claims("h2", &["app".into()]).await).0, 403);
    h2.claim_app("", "shared").await.unwrap();
    assert_eq!(status(h1.unclaim_app("h2", "shared").await).0, 403);
    assert_eq!(
        admin.claims("h2").await.unwrap().apps[0].id,
        "shared",
        "h2's claim stands"
    );
    // Its own: fine, with or without naming itself.
    h1.claim_app("h1", "web").await.unwrap();
    h1.set_claims("h1", &["web".into(), "api".into()])
        .await
        .unwrap();
    // The token is the admin: it may act for any host.
    admin.renew_lease("h2").await.unwrap();
    admin.claim_app("h2", "db").await.unwrap();
    admin.release_lease("h2").await.unwrap();

    // A certificate without a host name reads, but writes nothing host-scoped.
    let (c, k) = unnamed_cert(&pki);
    let unnamed = Client::builder(&url)
        .ca(pki.ca())
        .identity(c, k)
        .build()
        .unwrap();
    assert_eq!(unnamed.leases().await.unwrap().leases.len(), 1);
    let (code, msg) = status(unnamed.acquire_lease("h9", "192.0.2.9").await);
    assert_eq!(code, 403);
    assert!(msg.contains("names no host"), "{msg}");
    assert_eq!(status(unnamed.release_lease("h1").await).0, 403);
    assert_eq!(status(unnamed.claim_app("h1", "x").await).0, 403);
    server.shutdown().await;
}

fn copy(from: &Path, to: &Path) {
    // Write to a new file and rename over: how certificate tools replace files.
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// The controller's certificate, its client CA, and an agent's CA and certificate are each
/// replaced on disk while everything runs: new connections use the new files, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    let store = TestStore::new(Backend::Sqlite, "rotate").await.unwrap();
    let a = LabPki::new(store.dir.path().join("a"));
    a.generate(&["127.0.0.1".into()], &["h1".into()], false)
        .unwrap();
    let b = LabPki::new(store.dir.path().join("b"));
    b.generate(&["127.0.0.1".into()], &["h1".into()], false)
        .unwrap();
    // The files the controller and the agent use, first CA a's.
    let live = store.dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let (cert, key, client_ca) = (
        live.join("server.pem"),
        live.join("server-key.pem"),
        live.join("client-ca.pem"),
    );
    let (agent_ca, agent_cert, agent_key) = (
        live.join("agent-ca.pem"),
        live.join("agent.pem"),
        live.join("agent-key.pem"),
    );
    copy(&a.server_cert(), &cert);
    copy(&a.server_key(), &key);
    copy(&a.ca(), &client_ca);
    copy(&a.ca(), &agent_ca);
    copy(&a.agent_cert("h1"), &agent_cert);
    copy(&a.agent_key("h1"), &agent_key);
    let server = tls_args(&store, &cert, &key, &client_ca)
        .start()
        .await
        .unwrap();
    let url = server.url();
    let old = Client::builder(&url)
        .ca(&agent_ca)
        .identity(&agent_cert, &agent_key)
        .build()
        .unwrap();
    old.acquire_lease("h1", "192.0.2.1").await.unwrap();
    let trusts_b = Client::builder(&url).ca(b.ca()).build().unwrap();
    assert!(
        trusts_b.health().await.is_err(),
        "server certificate is a's"
    );

    // The controller's certificate and client CA become b's.
    copy(&b.server_cert(), &cert);
    copy(&b.server_key(), &key);
    copy(&b.ca(), &client_ca);
    trusts_b
        .health()
        .await
        .expect("new connections get the new server certificate");
    let agent = Client::builder(&url)
        .ca(&agent_ca)
        .identity(&agent_cert, &agent_key)
        .build()
        .unwrap();
    assert!(
        agent.renew_lease("h1").await.is_err(),
        "the agent still trusts a and presents a's certificate"
    );
    // The agent's CA and certificate become b's: the same client, no rebuild.
    copy(&b.ca(), &agent_ca);
    copy(&b.agent_cert("h1"), &agent_cert);
    copy(&b.agent_key("h1"), &agent_key);
    agent
        .renew_lease("h1")
        .await
        .expect("new connections use the new CA and certificate");
    // A half-written file does not take the controller down: the previous one stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntrunc").unwrap();
    agent.leases().await.unwrap();
    Client::builder(&url)
        .ca(b.ca())
        .build()
        .unwrap()
        .health()
        .await
        .expect("still served with the last good certificate");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_start_makes_a_lab_pki_and_token() {
    let store = TestStore::new(Backend::Sqlite, "autotls").await.unwrap();
    let mut args = store.args();
    args.insecure_http = false;
    let server = args.start().await.unwrap();
    let pki = LabPki::new(store.state_dir().join("tls"));
    assert!(pki.exists());
    let token = std::fs::read_to_string(store.state_dir().join("token")).unwrap();
    let admin = Client::builder(server.url())
        .ca(pki.ca())
        .token(token.trim())
        .build()
        .unwrap();
    let p = Policy::new("a", "b", Protocol::Icmp, None);
    assert_eq!(admin.create_policies(&[p]).await.unwrap().changed, 1);
    // `weft certs --agent` adds hosts to that CA.
    pki.generate(&[], &["h1".into()], false).unwrap();
    let h1 = agent(&server.url(), &pki, "h1");
    h1.acquire_lease("", "192.0.2.1").await.unwrap();
    server.shutdown().await;
}

/// RFC 7235: the scheme is case-insensitive (the cf CLI sends `bearer`). Before: 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_scheme_is_case_insensitive() {
    let store = TestStore::new(Backend::Sqlite, "scheme").await.unwrap();
    let mut args = store.args();
    args.token = Some("s3cret".into());
    let server = args.start().await.unwrap();
    weft_api::tls::install_default_provider();
    let http = reqwest::Client::new();
    let body = r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"icmp"}}]}"#;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let resp = http
            .post(format!("{}/networking/v1/external/policies", server.url()))
            .header("Authorization", format!("{scheme} s3cret"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    let resp = http
        .post(format!("{}/networking/v1/external/policies", server.url()))
        .header("Authorization", "Basic s3cret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    server.shutdown().await;
}
