//! Attacks on a controller running in its own process under systemd's default file limit
//! (RLIMIT_NOFILE 1024): half-sent connections (plain HTTP and TLS) while an agent and the
//! token holder go on being served, and a 64 MB request body. The controller is this test
//! binary re-executed (`child_controller`), so its memory and descriptors are its own.
//!
//! Each test prints what it measured (RSS, latency) to stderr.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_api::pki::LabPki;
use weft_api::Client;
use weft_controller::ControllerArgs;

const CHILD_ENV: &str = "WEFT_ATTACK_CHILD";
const TOKEN: &str = "attack-token";
/// More half-sent connections than systemd's default soft limit of descriptors.
const SLOW_CONNECTIONS: usize = 1030;
/// Connection limits high enough for the controller to hold 1,000 slow connections.
const HOLD_ALL: [&str; 6] = [
    "--max-pending-per-ip",
    "2000",
    "--max-connections-per-ip",
    "2000",
    "--max-pending-connections",
    "2000",
];

#[derive(Parser)]
struct ChildArgs {
    #[command(flatten)]
    controller: ControllerArgs,
}

/// Not a test by itself: the controller process the attacks run against (see [`Controller`]).
#[test]
#[ignore]
fn child_controller() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let argv: Vec<String> = serde_json::from_str(&args).expect("child args");
    let args = ChildArgs::parse_from(std::iter::once("controller".to_string()).chain(argv));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = args.controller.start().await.expect("controller starts");
        println!("WEFT_CHILD_URL {}", server.url());
        std::io::stdout().flush().unwrap();
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
        })
        .await
        .unwrap();
        server.shutdown().await;
    });
}

/// A controller in a child process, with RLIMIT_NOFILE set to `nofile`.
struct Controller {
    child: Child,
    url: String,
}

impl Controller {
    fn spawn(args: &[String], nofile: u64) -> Controller {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "child_controller",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(args).unwrap())
        .env("WEFT_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn the controller");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the controller exited before it listened"
            );
            // libtest may print the test's name on the same line first.
            if let Some((_, url)) = line.trim().split_once("WEFT_CHILD_URL ") {
                break url.to_string();
            }
        };
        // Keep draining libtest's output so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Controller { child, url }
    }

    fn addr(&self) -> String {
        self.url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string()
    }

    /// Resident set size and its peak, in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process opens more sockets than the default soft limit allows.
fn raise_own_nofile() {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(16384);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn base_args(dir: &std::path::Path) -> Vec<String> {
    let mut args = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--store".into(),
        "sqlite::memory:".into(),
        "--state-dir".into(),
        dir.display().to_string(),
        "--token".into(),
        TOKEN.into(),
    ];
    if std::env::var_os("WEFT_ATTACK_ORIGINAL").is_none() {
        // Timeouts far beyond the test: what keeps the controller serving is the connection
        // table, not a timeout that happens to expire. (WEFT_ATTACK_ORIGINAL: the code before
        // these options existed, for the "before" figures.)
        args.extend(["--header-timeout".into(), "60".into()]);
        args.extend(["--handshake-timeout".into(), "60".into()]);
    }
    args
}

/// A lab PKI under `dir` (a server certificate for 127.0.0.1, an agent certificate for h1)
/// and [`base_args`] that serve TLS with it and take client certificates from its CA.
fn tls_args(dir: &std::path::Path) -> (LabPki, Vec<String>) {
    let pki = LabPki::new(dir.join("pki"));
    pki.generate(&["127.0.0.1".into()], &["h1".into()], false)
        .unwrap();
    let mut args = base_args(dir);
    args.extend([
        "--tls-cert".into(),
        pki.server_cert().display().to_string(),
        "--tls-key".into(),
        pki.server_key().display().to_string(),
        "--client-ca".into(),
        pki.ca().display().to_string(),
    ]);
    (pki, args)
}

/// A client of `ctl` with h1's agent certificate.
fn agent_client(ctl: &Controller, pki: &LabPki) -> Client {
    Client::builder(&ctl.url)
        .ca(pki.ca())
        .identity(pki.agent_cert("h1"), pki.agent_key("h1"))
        .build()
        .unwrap()
}

/// [`stall`]ed connections held against `ctl`, with its RSS (MiB) before and after.
struct Stalled {
    conns: Vec<TcpStream>,
    refused: usize,
    rss0: f64,
    rss1: f64,
}

/// Stalls `n` connections that send `prefix` and measures the controller's RSS around it.
async fn stall_measured(ctl: &Controller, n: usize, prefix: &'static [u8]) -> Stalled {
    let (rss0, _) = ctl.rss_mib();
    let (conns, refused) = stall(&ctl.addr(), n, prefix).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss1, _) = ctl.rss_mib();
    Stalled {
        conns,
        refused,
        rss0,
        rss1,
    }
}

/// Opens `n` connections that each send `prefix` and then stall. Connections the controller
/// refuses or closes are counted, not retried.
async fn stall(addr: &str, n: usize, prefix: &'static [u8]) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Ok(mut s)) => {
                if s.write_all(prefix).await.is_ok() {
                    open.push(s);
                } else {
                    failed += 1;
                }
            }
            _ => failed += 1,
        }
    }
    (open, failed)
}

/// How long `f` took, or None if it failed or took longer than `limit`.
async fn timed<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Option<Duration> {
    let start = Instant::now();
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(_)) => Some(start.elapsed()),
        Ok(Err(e)) => {
            eprintln!("  {what}: failed after {:?}: {e}", start.elapsed());
            None
        }
        Err(_) => {
            eprintln!("  {what}: no answer within {limit:?}");
            None
        }
    }
}

const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_plain_connections_do_not_lock_out_the_token_holder() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path());
    args.push("--insecure-http".into());
    let ctl = Controller::spawn(&args, 1024);
    let client = Client::builder(&ctl.url).token(TOKEN).build().unwrap();
    client.leases().await.unwrap();
    // Headers without the blank line that ends them.
    let st = stall_measured(
        &ctl,
        SLOW_CONNECTIONS,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    eprintln!(
        "plain: {} half-sent connections open ({} refused), controller fds {}, RSS {:.1} -> {:.1} MiB",
        st.conns.len(),
        st.refused,
        ctl.open_fds(),
        st.rss0,
        st.rss1
    );
    let fresh = Client::builder(&ctl.url).token(TOKEN).build().unwrap();
    let token = timed("token request", PROMPT, fresh.leases()).await;
    let agent = timed(
        "agent request",
        PROMPT,
        fresh.acquire_lease("h1", "192.0.2.1"),
    )
    .await;
    eprintln!("plain: token request {token:?}, agent request {agent:?}");
    assert!(token.is_some() && agent.is_some(), "locked out");
    drop(st);
}

/// Not an attack: what 1,000 slow connections cost the controller when its limits let it hold
/// them all (a larger file limit), for the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_under_1000_slow_connections() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let (pki, mut args) = tls_args(dir.path());
    args.extend(HOLD_ALL.map(String::from));
    let ctl = Controller::spawn(&args, 4096);
    let agent = agent_client(&ctl, &pki);
    agent.leases().await.unwrap();
    let tls = stall_measured(&ctl, 1000, b"\x16\x03\x01\x02\x00").await;
    let fds = ctl.open_fds();
    eprintln!(
        "rss: 1000 half-sent TLS connections held (fds {fds}): RSS {:.1} -> {:.1} MiB",
        tls.rss0, tls.rss1
    );
    assert!(fds >= 1000, "the controller holds them all ({fds} fds)");
    agent.leases().await.expect("still serving");
    drop(tls);
    drop(ctl);

    // The same over plain HTTP: headers that never end.
    let mut args = base_args(dir.path());
    args.push("--insecure-http".into());
    args.extend(HOLD_ALL.map(String::from));
    let ctl = Controller::spawn(&args, 4096);
    let client = Client::builder(&ctl.url).build().unwrap();
    client.leases().await.unwrap();
    let plain = stall_measured(&ctl, 1000, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let fds = ctl.open_fds();
    eprintln!(
        "rss: 1000 half-sent plain connections held (fds {fds}): RSS {:.1} -> {:.1} MiB",
        plain.rss0, plain.rss1
    );
    assert!(fds >= 1000, "the controller holds them all ({fds} fds)");
    client.leases().await.expect("still serving");
    drop(plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_tls_connections_do_not_lock_out_agents_or_the_token_holder() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let (pki, args) = tls_args(dir.path());
    let ctl = Controller::spawn(&args, 1024);
    agent_client(&ctl, &pki).leases().await.unwrap();
    // A TLS record header announcing a ClientHello that never comes.
    let st = stall_measured(&ctl, SLOW_CONNECTIONS, b"\x16\x03\x01\x02\x00").await;
    eprintln!(
        "tls: {} half-sent connections open ({} refused), controller fds {}, RSS {:.1} -> {:.1} MiB",
        st.conns.len(),
        st.refused,
        ctl.open_fds(),
        st.rss0,
        st.rss1
    );
    let agent = agent_client(&ctl, &pki);
    let admin = Client::builder(&ctl.url)
        .ca(pki.ca())
        .token(TOKEN)
        .build()
        .unwrap();
    let a = timed(
        "agent request",
        PROMPT,
        agent.acquire_lease("h1", "192.0.2.1"),
    )
    .await;
    let t = timed("token request", PROMPT, admin.leases()).await;
    eprintln!("tls: agent request {a:?}, token request {t:?}");
    assert!(a.is_some() && t.is_some(), "locked out");
    drop(st);
}

/// Sends a policy write of `size` bytes (`{"policies":[0,0,...]}`) and returns the status line
/// and how long the answer took. With `chunked`, no Content-Length is sent.
async fn big_body(addr: &str, size: usize, chunked: bool) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {size}")
    };
    let head = format!(
        "POST /networking/v1/external/policies HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"policies\":[0");
    // `{"policies":[0` then `,0` up to the size: valid JSON, half a number per byte.
    let start = body.len();
    body.resize(size - 2, b'0');
    for pair in body[start..].chunks_mut(2) {
        pair[0] = b',';
    }
    assert_eq!(body.last(), Some(&b'0'), "size must be even");
    body.extend_from_slice(b"]}");
    let start = Instant::now();
    let (mut rd, mut wr) = s.split();
    let write = async {
        wr.write_all(head.as_bytes()).await?;
        for piece in body.chunks(1 << 20) {
            if chunked {
                wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                wr.write_all(piece).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(piece).await?;
            }
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(())
    };
    let read = async {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            let n = rd.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    tokio::pin!(write);
    tokio::pin!(read);
    let mut written = false;
    let reply = loop {
        tokio::select! {
            r = &mut write, if !written => { let _ = r; written = true; }
            reply = &mut read => break reply,
        }
    };
    (reply, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mb_body_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path());
    args.push("--insecure-http".into());
    let ctl = Controller::spawn(&args, 1024);
    Client::builder(&ctl.url)
        .build()
        .unwrap()
        .health()
        .await
        .unwrap();
    let (rss0, _) = ctl.rss_mib();
    for chunked in [false, true] {
        let (reply, took) = big_body(&ctl.addr(), 64 << 20, chunked).await;
        let (rss, peak) = ctl.rss_mib();
        let status = reply.lines().next().unwrap_or("").to_string();
        eprintln!(
            "64 MB body (chunked: {chunked}): {status:?} after {took:?}; RSS {rss0:.1} MiB before, \
             {rss:.1} MiB after, peak {peak:.1} MiB"
        );
        assert!(status.contains(" 413 "), "{reply}");
        assert!(reply.contains("application/json"), "{reply}");
        assert!(peak < 100.0, "peak RSS {peak:.1} MiB");
    }
}
