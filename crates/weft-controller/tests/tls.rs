//! TLS: agents need a client certificate, policy writes need the token.

mod common;

use common::{Backend, TestStore};
use weft_controller::certs::LabPki;
use weft_controller::model::{Policy, Ports, Protocol};
use weft_controller::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_a_client_certificate_and_writes_need_the_token() {
    let store = TestStore::new(Backend::Sqlite, "tls").await.unwrap();
    let pki = LabPki::new(store.dir.path().join("pki"));
    pki.generate(&["localhost".into(), "127.0.0.1".into()], false)
        .unwrap();
    assert!(
        pki.generate(&["localhost".into()], false).is_err(),
        "no silent overwrite"
    );
    let mut args = store.args();
    args.insecure_http = false;
    args.tls_cert = Some(pki.server_cert());
    args.tls_key = Some(pki.server_key());
    args.client_ca = Some(pki.ca());
    args.token = Some("s3cret".into());
    let server = args.start().await.unwrap();
    let url = server.url();
    assert!(url.starts_with("https://"));

    let agent = Client::builder(&url)
        .ca(pki.ca())
        .identity(pki.agent_cert(), pki.agent_key())
        .build()
        .unwrap();
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
    // Policy writes: token only (not a client certificate).
    let p = Policy::new("a", "b", Protocol::Tcp, Some(Ports { start: 80, end: 80 }));
    let err = agent
        .create_policies(std::slice::from_ref(&p))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
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
    other.generate(&["localhost".into()], false).unwrap();
    let stranger = Client::builder(&url)
        .ca(pki.ca())
        .identity(other.agent_cert(), other.agent_key())
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
    server.shutdown().await;
}
