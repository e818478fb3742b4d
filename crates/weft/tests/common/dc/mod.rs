//! A simulated data centre on one machine (issue 4): an underlay (a bridge in its own
//! namespace, 198.18.0.254/24), N cells (namespaces with one underlay veth each, 198.18.0.N,
//! each running its own `weft agent` process inside), one `weft controller` process inside
//! the underlay namespace, and containers attached with weft-cni in overlay mode.
//!
//! Include it next to the shared support:
//!
//! ```ignore
//! mod common;
//! #[path = "common/dc/mod.rs"]
//! mod dc;
//! ```
//!
//! Everything lives in namespaces the harness makes (unique names, so any number of `Dc`s
//! and other test files run in parallel: each has its own underlay, so reusing the same
//! 198.18.x / 10.255.x addresses in each is fine) and is removed on drop, also on panic:
//! processes first (SIGKILL), then the namespaces, then the state directory. Nothing here
//! touches the machine's own namespace.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

mod cells;
mod proc;
mod traffic;
mod view;

// Re-exported for the tests; a test binary uses some of them.
#[allow(unused_imports)]
pub use proc::{append, metric, parse_ping, Proc};
#[allow(unused_imports)]
pub use view::{policy_counter, Remote, VtepView};

use crate::common::{
    exec_plugin, result_ip, wait_until, weft_bin, weft_cni_bin, write_py, Ns, Reply, TempDir,
};

/// The underlay's /24; cell `n` is `UNDERLAY.n`, the underlay namespace is `.254`.
pub const UNDERLAY: &str = "198.18.0";
/// The underlay namespace's address on the bridge: controller address and the cells' gateway.
pub const UNDERLAY_GW: &str = "198.18.0.254";
/// The underlay bridge's MAC address, set when it is made. A bridge without one takes the
/// lowest of its ports' addresses, so the gateway's address would change whenever a cell
/// joins with a lower one, and a cell that had resolved it while it was another port's
/// address could not reach the controller until its ARP entry expired (30-60 s).
pub const UNDERLAY_MAC: &str = "02:00:c6:12:00:fe";
/// The /30 of the cable between cells 1 and 2 when [`DcOptions::cable`] is set: cell `n` is
/// `CABLE.n`.
pub const CABLE: &str = "198.19.0";
pub const CONTROLLER_PORT: u16 = 7070;
/// The controller's bearer token (the admin credential: `weft` CLI calls of the harness).
pub const TOKEN: &str = "dc-admin-token";
pub const OVERLAY: &str = "10.255.0.0/16";
pub const VTEP: &str = "weft.vtep";
pub const VXLAN_PORT: u16 = 4789;
/// The "internet" behind the underlay namespace (see [`Dc::add_internet`]); a documentation
/// range, only ever used on links the harness makes.
pub const INTERNET_IP: &str = "203.0.113.2";
/// Liveness bound for things to come up or converge; never a speed assertion.
pub const LIVE: Duration = Duration::from_secs(20);
/// Where agents serve their metrics when started with `--metrics-listen` (inside each cell).
pub const METRICS: &str = "127.0.0.1:9109";

/// Socket helpers run with python3 inside namespaces (see [`Dc::py`]):
/// - `echo PORT`: per connection, reads until EOF and answers `<peer address> <data>`;
/// - `send HOST PORT MSG`: sends MSG, half-closes and prints the answer;
/// - `sink PORT`: per connection, counts bytes until EOF and answers `<count> <max gap ms>`
///   (the longest pause between two reads);
/// - `stream HOST PORT SECS RATE`: sends RATE bytes/s for SECS seconds, half-closes, and
///   prints `sent=<n> got=<answer>`; exits 1 if the sink counted a different number.
/// - `probe HOST PORT TIMEOUT INTERVAL`: one TCP exchange (as `send`) every INTERVAL seconds,
///   forever, printing `<unix time> <ok|timeout|refused|error<errno>>` per try.
pub const SOCK_PY: &str = r#"
if mode == "echo":
    s = listener(int(sys.argv[2]))
    while True:
        c, a = s.accept()
        try:
            c.settimeout(5)
            data = read_all(c)
            c.sendall(("%s " % a[0]).encode() + data)
        except Exception:
            pass
        finally:
            c.close()
        print(a[0], flush=True)
elif mode == "send":
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3)
    c.sendall(sys.argv[4].encode())
    c.shutdown(socket.SHUT_WR)
    out = read_all(c)
    sys.stdout.write(out.decode())
elif mode == "sink":
    s = listener(int(sys.argv[2]))
    while True:
        c, a = s.accept()
        n, gap, last = 0, 0.0, None
        try:
            while True:
                b = c.recv(65536)
                now = time.monotonic()
                if last is not None:
                    gap = max(gap, now - last)
                last = now
                if not b:
                    break
                n += len(b)
            c.sendall(("%d %d" % (n, gap * 1000)).encode())
        except Exception as e:
            print("sink error", e, flush=True)
        finally:
            c.close()
        print(a[0], n, flush=True)
elif mode == "stream":
    host, port, secs, rate = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    c = socket.create_connection((host, port), timeout=10)
    c.settimeout(30)
    chunk = b"w" * max(1, rate // 100)
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < secs:
        c.sendall(chunk)
        sent += len(chunk)
        target = start + sent / rate
        d = target - time.monotonic()
        if d > 0:
            time.sleep(d)
    c.shutdown(socket.SHUT_WR)
    got = read_all(c)
    print("sent=%d got=%s" % (sent, got.decode()), flush=True)
    sys.exit(0 if got.split()[0] == str(sent).encode() else 1)
elif mode == "probe":
    host, port, timeout, interval = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    while True:
        t0 = time.time()
        kind, _ = exchange(host, port, timeout)
        print("%.3f %s" % (t0, kind), flush=True)
        time.sleep(interval)
"#;

/// Knobs of a [`Dc`]; `Dc::new(n)` takes the defaults.
#[derive(Debug, Clone)]
pub struct DcOptions {
    pub cells: usize,
    /// `weft controller --lease-ttl` (None: the controller's default).
    pub lease_ttl: Option<u64>,
    /// `weft agent --resync`, seconds.
    pub resync: u64,
    /// Start agents with `--release-on-exit`.
    pub release_on_exit: bool,
    /// `WEFT_LOG` of the agents and the controller.
    pub log: String,
    /// Extra environment of every agent. Default: `WEFT_POLICY=off` (policy enforcement off:
    /// every container reaches every other); policy tests set `WEFT_POLICY=on`.
    pub agent_env: Vec<(String, String)>,
    /// Extra arguments of every agent (e.g. `--metrics-listen`).
    pub agent_args: Vec<String>,
    /// Cells 1 and 2 are also joined back to back by a veth "cable" (`CABLE.1` and `CABLE.2`)
    /// and use it as their VXLAN underlay (`--underlay-ip`); the switch stays their way to
    /// the controller. Two physical hosts' NICs cost one veth crossing here, the software
    /// switch another (a real switch costs the hosts nothing), so benches can tell the
    /// overlay's own cost from the simulated switch's.
    pub cable: bool,
    /// `weft controller --store` (None: SQLite in the Dc's state directory). A PostgreSQL URL
    /// with a unix socket works from the underlay namespace (the socket is a file).
    pub store: Option<String>,
    /// Extra arguments of the controller (e.g. `--heartbeat 500ms`).
    pub controller_args: Vec<String>,
}

impl Default for DcOptions {
    fn default() -> Self {
        DcOptions {
            cells: 3,
            lease_ttl: None,
            resync: 2,
            release_on_exit: false,
            log: "info".into(),
            agent_env: vec![("WEFT_POLICY".into(), "off".into())],
            agent_args: Vec::new(),
            cable: false,
            store: None,
            controller_args: Vec::new(),
        }
    }
}

/// One cell (a host): its namespace, underlay address, agent and files.
pub struct Cell {
    /// 1-based number; the underlay address is `198.18.0.<n>` (`198.19.0.<n>` on a cable),
    /// the host name `cell<n>`.
    pub n: usize,
    /// On [`DcOptions::cable`]'s cable instead of the switch.
    pub cabled: bool,
    pub ns: Ns,
    pub host: String,
    pub dir: PathBuf,
    pub release_on_exit: bool,
    agent: Option<Proc>,
    agent_runs: usize,
}

impl Cell {
    pub fn underlay_ip(&self) -> String {
        let net = if self.cabled { CABLE } else { UNDERLAY };
        format!("{net}.{}", self.n)
    }
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("lease.json")
    }
    pub fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }
    /// The lease file as the agent wrote it (None until the agent holds a lease).
    pub fn lease(&self) -> Option<Value> {
        std::fs::read(self.lease_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
    /// This cell's subnet (e.g. `10.255.1.0/24`), from its lease file.
    pub fn subnet(&self) -> Option<String> {
        self.lease()
            .and_then(|l| l["subnet"].as_str().map(str::to_string))
    }
    /// The overlay network config weft-cni gets on this cell.
    pub fn cni_conf(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "ov",
            "type": "weft-cni",
            "mode": "overlay",
            "leaseFile": self.lease_file().display().to_string(),
            "dataDir": self.cni_dir().display().to_string(),
        })
    }
    pub fn agent_alive(&mut self) -> bool {
        self.agent.as_mut().is_some_and(|a| a.alive())
    }
    /// Everything the agent(s) of this cell logged.
    pub fn agent_log(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.agent_runs {
            s += &std::fs::read_to_string(self.dir.join(format!("agent.{i}.log")))
                .unwrap_or_default();
        }
        s
    }
    /// The VTEP's remote entries as the kernel has them.
    pub fn vtep(&self) -> VtepView {
        VtepView::read(&self.ns)
    }
    /// The VTEP as a remote cell must know it (None when this cell has no VTEP or lease).
    pub fn remote(&self) -> Option<Remote> {
        let subnet = self.subnet()?;
        let out = self.ns.sh(&format!("ip -j link show {VTEP}"));
        let links: Value = serde_json::from_slice(&out.stdout).ok()?;
        let mac = links[0]["address"].as_str()?.to_string();
        Some(Remote {
            vtep_ip: subnet.split('/').next().unwrap_or_default().to_string(),
            subnet,
            mac,
            underlay: self.underlay_ip(),
        })
    }
}

/// A container attached to a cell with weft-cni (overlay mode). Its namespace goes on drop
/// (without a CNI DEL; use [`Dc::del_container`] for that).
pub struct Container {
    pub ns: Ns,
    /// Overlay address, without prefix.
    pub ip: String,
    pub id: String,
    pub cell: usize,
    pub app: String,
    /// The ADD result.
    pub result: Value,
}

/// The simulated data centre. See the module docs.
pub struct Dc {
    cells: Vec<Option<Cell>>,
    controller: Option<Proc>,
    controller_runs: usize,
    internet: Option<Ns>,
    underlay: Ns,
    pub opts: DcOptions,
    pub dir: TempDir,
}

impl Dc {
    /// `cells` cells with default options, every cell routing to every other.
    pub fn new(cells: usize) -> Dc {
        Dc::with(DcOptions {
            cells,
            ..Default::default()
        })
    }

    pub fn with(opts: DcOptions) -> Dc {
        let dir = TempDir::new("dc");
        let underlay = Ns::new("ul");
        write_py(&dir.path.join("sock.py"), SOCK_PY);
        // br0's MAC is set, not inherited: a bridge otherwise takes the lowest MAC of its ports,
        // so a cell joining later with a lower veth MAC changed the controller's MAC under the
        // cells already running; their neighbour entries then pointed at the old MAC and their
        // packets to the controller were dropped until the entry was resolved again (seen as
        // requests left unanswered for 10 s and more right after a cell joined).
        weft_testbed::Underlay {
            ns: &underlay.name,
            bridge: "br0",
            mac: UNDERLAY_MAC.parse().expect("underlay MAC"),
            gateway: format!("{UNDERLAY_GW}/24")
                .parse()
                .expect("underlay gateway"),
            bridge_netfilter_off: true,
        }
        .build()
        .expect("underlay bridge");
        // The data centre's CA and the controller's certificate; each cell gets its own agent
        // certificate naming it (spawn_cell), as an operator would issue them.
        weft_api::pki::LabPki::new(dir.path.join("pki"))
            .generate(&[UNDERLAY_GW.to_string()], &[], false)
            .expect("dc certificates");
        let mut dc = Dc {
            cells: Vec::new(),
            controller: None,
            controller_runs: 0,
            internet: None,
            underlay,
            opts: opts.clone(),
            dir,
        };
        dc.start_controller();
        for _ in 0..opts.cells {
            dc.spawn_cell(opts.release_on_exit);
        }
        dc.wait_mesh();
        dc
    }

    pub fn underlay_ns(&self) -> &Ns {
        &self.underlay
    }

    pub fn controller_url(&self) -> String {
        format!("https://{UNDERLAY_GW}:{CONTROLLER_PORT}")
    }

    /// The data centre's CA, controller certificate and per-cell agent certificates.
    pub fn pki(&self) -> weft_api::pki::LabPki {
        weft_api::pki::LabPki::new(self.dir.path.join("pki"))
    }

    /// A client of the controller with the token (use it inside the underlay namespace).
    pub fn client(&self) -> weft_api::Client {
        weft_api::Client::builder(self.controller_url())
            .ca(self.pki().ca())
            .token(TOKEN)
            .build()
            .expect("controller client")
    }

    /// The python socket helpers ([`SOCK_PY`]).
    pub fn py(&self) -> String {
        format!("python3 {}", self.dir.path.join("sock.py").display())
    }

    pub fn cell(&self, n: usize) -> &Cell {
        self.cells
            .get(n.wrapping_sub(1))
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("no cell {n}"))
    }

    fn cell_mut(&mut self, n: usize) -> &mut Cell {
        self.cells
            .get_mut(n.wrapping_sub(1))
            .and_then(Option::as_mut)
            .unwrap_or_else(|| panic!("no cell {n}"))
    }

    pub fn cell_ns(&self, n: usize) -> &Ns {
        &self.cell(n).ns
    }

    /// Numbers of the cells that exist (not removed).
    pub fn cell_numbers(&self) -> Vec<usize> {
        self.cells.iter().flatten().map(|c| c.n).collect()
    }

    // ----- controller -----

    /// Starts the controller (same state dir every time, so leases survive a restart) and
    /// waits until it answers.
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        self.controller_runs += 1;
        let state = self.dir.path.join("ctl");
        let listen = format!("{UNDERLAY_GW}:{CONTROLLER_PORT}");
        let pki = self.pki();
        let mut argv = weft_testbed::ControllerCmd {
            weft: weft_bin(),
            cert: &pki.server_cert(),
            key: &pki.server_key(),
            client_ca: &pki.ca(),
            listen,
            state_dir: &state,
            overlay_cidr: OVERLAY.into(),
            host_prefix: 24,
        }
        .argv();
        argv.extend(["--token".into(), TOKEN.into()]);
        // Benchmarks send batches of 10,000 policies in one request.
        argv.extend(["--max-body-bytes".into(), (16 << 20).to_string()]);
        if let Some(ttl) = self.opts.lease_ttl {
            argv.push("--lease-ttl".into());
            argv.push(ttl.to_string());
        }
        if let Some(store) = &self.opts.store {
            argv.push("--store".into());
            argv.push(store.clone());
        }
        argv.extend(self.opts.controller_args.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let log = self
            .dir
            .path
            .join(format!("controller.{}.log", self.controller_runs));
        let mut p = Proc::spawn(
            &self.underlay,
            &argv,
            &[("WEFT_LOG", self.opts.log.as_str())],
            &log,
        );
        let start = Instant::now();
        loop {
            if self.leases().is_some() {
                break;
            }
            assert!(
                p.alive() && start.elapsed() < LIVE,
                "controller did not come up: {}",
                p.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.controller = Some(p);
    }

    /// Stops the controller (SIGTERM).
    pub fn stop_controller(&mut self) {
        if let Some(p) = self.controller.take() {
            p.stop(Signal::SIGTERM, Duration::from_secs(10));
        }
    }

    /// Kills the controller (SIGKILL), as a crash would: the kernel still closes its
    /// connections (the agents see FIN or RST).
    pub fn kill_controller(&mut self) {
        if let Some(p) = self.controller.take() {
            p.stop(Signal::SIGKILL, Duration::from_secs(10));
        }
    }

    /// Freezes the controller (SIGSTOP): its connections stay open and nothing answers on
    /// them; the kernel still accepts new connections into the listen backlog.
    pub fn freeze_controller(&self) {
        let p = self.controller.as_ref().expect("controller running");
        kill(Pid::from_raw(p.pid() as i32), Signal::SIGSTOP).expect("SIGSTOP controller");
    }

    /// Lets a frozen controller run again (SIGCONT).
    pub fn thaw_controller(&self) {
        let p = self.controller.as_ref().expect("controller running");
        kill(Pid::from_raw(p.pid() as i32), Signal::SIGCONT).expect("SIGCONT controller");
    }

    /// The controller vanishes without a word, as on power loss or when a firewall forgets
    /// the flows: every connection open to it is blackholed in the underlay namespace (an
    /// nftables drop of each connection's address and port pair, both ways, so neither FIN
    /// nor RST gets out), then the process is killed. New connections to the same address
    /// pass: a controller started afterwards ([`Dc::start_controller`], same store) is a
    /// fail-over to another controller at the same address. Returns how many connections
    /// were cut; the rule stays until the Dc goes (with the namespace).
    pub fn vanish_controller(&mut self) -> usize {
        let out = self.underlay.ok(&format!(
            "ss -Htn state established '( sport = :{CONTROLLER_PORT} )'"
        ));
        // Lines: `0 0 198.18.0.254:7070 198.18.0.1:45678`.
        let peers: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter_map(|peer| peer.rsplit_once(':'))
            .map(|(ip, port)| format!("{ip} . {port}"))
            .collect();
        assert!(!peers.is_empty(), "no connection to the controller: {out}");
        let runs = self.controller_runs;
        let set = peers.join(", ");
        let rules = format!(
            "table inet weft-test-blackhole-{runs} {{\n\
             chain in {{ type filter hook input priority -300; \
             tcp dport {CONTROLLER_PORT} ip saddr . tcp sport {{ {set} }} drop; }}\n\
             chain out {{ type filter hook output priority -300; \
             tcp sport {CONTROLLER_PORT} ip daddr . tcp dport {{ {set} }} drop; }}\n}}\n"
        );
        let path = self
            .dir
            .path
            .join(format!("blackhole.{}.nft", self.controller_runs));
        std::fs::write(&path, rules).expect("write blackhole rules");
        self.underlay.ok(&format!("nft -f {}", path.display()));
        self.kill_controller();
        peers.len()
    }

    pub fn controller_alive(&mut self) -> bool {
        self.controller.as_mut().is_some_and(|p| p.alive())
    }

    pub fn controller_log(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.controller_runs {
            s += &std::fs::read_to_string(self.dir.path.join(format!("controller.{i}.log")))
                .unwrap_or_default();
        }
        s
    }

    /// `GET /metrics` of the controller (None when it does not answer).
    pub fn controller_metrics(&self) -> Option<String> {
        let out = self.underlay.sh(&format!(
            "curl -sf --max-time 5 --cacert {} {}/metrics",
            self.pki().ca().display(),
            self.controller_url()
        ));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `weft ARGS --controller URL` in the underlay namespace.
    pub fn weft(&self, args: &str) -> std::process::Output {
        self.underlay.sh(&format!(
            "{} {args} --controller {} --ca {} --token {TOKEN}",
            weft_bin(),
            self.controller_url(),
            self.pki().ca().display()
        ))
    }

    /// Runs `weft policy ARGS` against the controller; panics unless it succeeds.
    pub fn policy(&self, args: &str) -> String {
        let out = self.weft(&format!("policy {args}"));
        assert!(
            out.status.success(),
            "weft policy {args}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `weft leases list --json` (None when the controller does not answer).
    pub fn leases(&self) -> Option<Value> {
        let out = self.weft("leases list --json");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    // ----- cells and agents -----
}

impl Drop for Dc {
    fn drop(&mut self) {
        // Processes first (so nothing recreates state), then namespaces, then the files.
        for c in self.cells.iter_mut().flatten() {
            c.agent.take();
        }
        self.controller.take();
        self.cells.clear();
        self.internet.take();
        // `underlay` and `dir` drop after this (field order).
    }
}
