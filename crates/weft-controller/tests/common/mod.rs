//! Helpers shared by the integration tests: a store per test on SQLite or PostgreSQL, and
//! controllers started in-process on 127.0.0.1, port 0.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weft_api::Client;
use weft_controller::server::RunningServer;
use weft_controller::ControllerArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's store: a SQLite file in a temp dir, or a fresh schema in the test PostgreSQL.
pub struct TestStore {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub backend: Backend,
}

static SCHEMA: AtomicU64 = AtomicU64::new(0);

impl TestStore {
    /// `None` (after printing why) when PostgreSQL is asked for but WEFT_TEST_POSTGRES_URL is unset.
    pub async fn new(backend: Backend, test: &str) -> Option<TestStore> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match backend {
            Backend::Sqlite => format!("sqlite:{}", dir.path().join("controller.db").display()),
            Backend::Postgres => {
                let Ok(base) = std::env::var("WEFT_TEST_POSTGRES_URL") else {
                    // Written past libtest's output capture so that the skip is always visible.
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "{test}: skipped on PostgreSQL: WEFT_TEST_POSTGRES_URL is unset"
                    );
                    return None;
                };
                let schema = format!(
                    "t_{}_{}_{}",
                    std::process::id(),
                    SCHEMA.fetch_add(1, Ordering::Relaxed),
                    test.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                );
                let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                    .await
                    .expect("connect to WEFT_TEST_POSTGRES_URL");
                let task = tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .expect("create schema");
                drop(client);
                let _ = task.await;
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}options=-c%20search_path%3D{schema}")
            }
        };
        Some(TestStore { url, dir, backend })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Controller arguments for this store: plain HTTP on 127.0.0.1:0.
    pub fn args(&self) -> ControllerArgs {
        let mut args = ControllerArgs::from_args(["--insecure-http"]).expect("defaults");
        args.token = None;
        args.listen = "127.0.0.1:0".parse().expect("addr");
        args.store = self.url.clone();
        args.state_dir = self.state_dir();
        args.overlay_cidr = "10.255.0.0/16".parse().expect("cidr");
        args.host_prefix = 24;
        args.lease_ttl = 300;
        args
    }

    pub async fn start(&self) -> (RunningServer, Client) {
        start(self.args()).await
    }
}

pub async fn start(args: ControllerArgs) -> (RunningServer, Client) {
    let server = args.start().await.expect("controller starts");
    let client = Client::builder(server.url()).build().expect("client");
    (server, client)
}

/// Polls `check` until it returns true; panics after `limit` (a liveness bound, not a speed test).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Runs an async test body on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(store) = $crate::common::TestStore::new(
                    $crate::common::Backend::Sqlite, stringify!($name)).await {
                    super::$name(store).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(store) = $crate::common::TestStore::new(
                    $crate::common::Backend::Postgres, stringify!($name)).await {
                    super::$name(store).await;
                }
            }
        }
    )*};
}

/// The code and the fields of an API error (panics on any other error).
pub fn api_error(e: weft_api::client::ClientError) -> (u16, String, Vec<String>) {
    match e {
        weft_api::client::ClientError::Api { status, body } => (
            status,
            body.code,
            body.fields.into_iter().map(|f| f.field).collect(),
        ),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Runs `sql` on the server's store in one write transaction and commits it (to set up
/// states the API cannot make, such as an older schema).
pub async fn execute_sql(server: &RunningServer, sql: &str) {
    use weft_controller::store::TxMode;
    let mut tx = server
        .controller()
        .store()
        .begin(TxMode::Write)
        .await
        .unwrap();
    tx.batch(sql).await.unwrap();
    tx.commit().await.unwrap();
}
