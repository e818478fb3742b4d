//! A simulated data centre on one machine (issue 4): an underlay (a bridge in its own
//! namespace, 198.18.0.254/24), N cells (namespaces with one underlay veth each, 198.18.0.N,
//! each running its own `weft agent` process inside), one `weft controller` process inside
//! the underlay namespace, and containers attached with weft-cni in overlay mode.
//!
//! Include it next to the shared support:
//!
//! ```ignore
//! mod common;
//! #[path = "common/dc.rs"]
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

use crate::common::{
    exec_plugin, result_ip, wait_until, weft_bin, weft_cni_bin, Ns, Reply, TempDir,
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
import socket, sys, time
mode = sys.argv[1]
def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    return s
if mode == "echo":
    s = listener(int(sys.argv[2]))
    while True:
        c, a = s.accept()
        try:
            c.settimeout(5)
            data = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
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
    out = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        out += b
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
    got = b""
    while True:
        b = c.recv(64)
        if not b:
            break
        got += b
    print("sent=%d got=%s" % (sent, got.decode()), flush=True)
    sys.exit(0 if got.split()[0] == str(sent).encode() else 1)
elif mode == "probe":
    host, port, timeout, interval = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    while True:
        t0 = time.time()
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(timeout)
        try:
            c.connect((host, port))
            c.sendall(b"probe")
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
            kind = "ok"
        except (socket.timeout, TimeoutError):
            kind = "timeout"
        except ConnectionRefusedError:
            kind = "refused"
        except OSError as e:
            kind = "error%d" % (e.errno or 0)
        finally:
            c.close()
        print("%.3f %s" % (t0, kind), flush=True)
        time.sleep(interval)
"#;

/// A child process started inside a namespace, output appended to a log file; SIGKILLed on
/// drop. Unlike `common::Bg`, it can be stopped gracefully ([`Proc::stop`]).
pub struct Proc {
    child: Option<Child>,
    pub what: String,
    pub log: PathBuf,
}

impl Proc {
    /// Runs `argv` inside `ns` (`ip netns exec` execs it, so the pid is the program's own).
    pub fn spawn(ns: &Ns, argv: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let f2 = f.try_clone().expect("dup log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {}: {e}", ns.name));
        Proc {
            child: Some(child),
            what: format!("{} in {}", argv.join(" "), ns.name),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig`, waits (bounded) for the exit, SIGKILLs if it does not come. Returns the
    /// exit status (None if it had to be killed).
    pub fn stop(mut self, sig: Signal, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        let _ = kill(Pid::from_raw(c.id() as i32), sig);
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Waits (bounded) for the process to exit by itself; SIGKILL after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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

/// What the other cells need to reach one cell: route, neighbour, FDB entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub subnet: String,
    pub vtep_ip: String,
    pub mac: String,
    pub underlay: String,
}

/// A cell's VTEP entries: routes `(dst, gateway)`, neighbours `(ip, lladdr, state)`, FDB
/// entries `(mac, dst)`.
#[derive(Debug, Clone, Default)]
pub struct VtepView {
    pub routes: Vec<(String, String)>,
    pub neighbours: Vec<(String, String, String)>,
    pub fdb: Vec<(String, String)>,
}

fn json_list(ns: &Ns, cmd: &str) -> Vec<Value> {
    let out = ns.sh(cmd);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl VtepView {
    pub fn read(ns: &Ns) -> VtepView {
        VtepView {
            routes: json_list(ns, &format!("ip -j route show dev {VTEP}"))
                .iter()
                .filter(|r| r.get("gateway").is_some())
                .map(|r| (s(&r["dst"]), s(&r["gateway"])))
                .collect(),
            neighbours: json_list(ns, &format!("ip -j neigh show dev {VTEP}"))
                .iter()
                .map(|n| (s(&n["dst"]), s(&n["lladdr"]), s(&n["state"])))
                .collect(),
            fdb: json_list(ns, &format!("bridge -j fdb show dev {VTEP}"))
                .iter()
                .map(|f| (s(&f["mac"]), s(&f["dst"])))
                .collect(),
        }
    }

    /// All three entries for `r` are there (the neighbour permanent).
    pub fn knows(&self, r: &Remote) -> bool {
        self.routes
            .iter()
            .any(|(d, g)| *d == r.subnet && *g == r.vtep_ip)
            && self
                .neighbours
                .iter()
                .any(|(ip, mac, st)| *ip == r.vtep_ip && *mac == r.mac && st.contains("PERMANENT"))
            && self
                .fdb
                .iter()
                .any(|(mac, dst)| *mac == r.mac && *dst == r.underlay)
    }

    /// Neither route nor neighbour entry for `r` is left (the FDB is not looked at).
    pub fn unrouted(&self, r: &Remote) -> bool {
        !self
            .routes
            .iter()
            .any(|(d, g)| *d == r.subnet || *g == r.vtep_ip)
            && !self
                .neighbours
                .iter()
                .any(|(ip, mac, _)| *ip == r.vtep_ip || *mac == r.mac)
    }

    /// None of the three entries for `r` is left.
    pub fn forgot(&self, r: &Remote) -> bool {
        !self
            .routes
            .iter()
            .any(|(d, g)| *d == r.subnet || *g == r.vtep_ip)
            && !self
                .neighbours
                .iter()
                .any(|(ip, mac, _)| *ip == r.vtep_ip || *mac == r.mac)
            && !self
                .fdb
                .iter()
                .any(|(mac, dst)| *mac == r.mac || *dst == r.underlay)
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
        std::fs::write(dir.path.join("sock.py"), SOCK_PY).expect("write sock.py");
        // br0's MAC is set, not inherited: a bridge otherwise takes the lowest MAC of its ports,
        // so a cell joining later with a lower veth MAC changed the controller's MAC under the
        // cells already running; their neighbour entries then pointed at the old MAC and their
        // packets to the controller were dropped until the entry was resolved again (seen as
        // requests left unanswered for 10 s and more right after a cell joined).
        underlay.ok(&format!(
            "ip link set lo up && ip link add br0 address {UNDERLAY_MAC} type bridge && \
             ip link set br0 up && \
             ip addr add {UNDERLAY_GW}/24 dev br0 && sysctl -qw net.ipv4.ip_forward=1"
        ));
        // The underlay bridge stands for the data centre's switches, which do not run a
        // host's firewall: when br_netfilter is loaded, its hooks would otherwise run on every
        // bridged packet in this namespace and bill the switch's work to the overlay.
        underlay.sh("for k in iptables ip6tables arptables; do \
             sysctl -qw net.bridge.bridge-nf-call-$k=0 2>/dev/null; done; true");
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
        let mut argv = vec![
            weft_bin().to_string(),
            "controller".into(),
            "--tls-cert".into(),
            pki.server_cert().display().to_string(),
            "--tls-key".into(),
            pki.server_key().display().to_string(),
            "--client-ca".into(),
            pki.ca().display().to_string(),
            "--token".into(),
            TOKEN.into(),
            // Benchmarks send batches of 10,000 policies in one request.
            "--max-body-bytes".into(),
            (16 << 20).to_string(),
            "--listen".into(),
            listen,
            "--state-dir".into(),
            state.display().to_string(),
            "--overlay-cidr".into(),
            OVERLAY.into(),
            "--host-prefix".into(),
            "24".into(),
        ];
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

    /// `weft leases list --json` (None when the controller does not answer).
    pub fn leases(&self) -> Option<Value> {
        let out = self.weft("leases list --json");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    // ----- cells and agents -----

    /// Adds a cell (namespace, underlay veth, agent) and waits until its agent holds a lease,
    /// but not for the other cells to learn it. Returns its number.
    pub fn spawn_cell(&mut self, release_on_exit: bool) -> usize {
        let n = self.cells.len() + 1;
        assert!(n < 200, "too many cells");
        let ns = Ns::new(&format!("c{n}"));
        let dir = self.dir.path.join(format!("cell{n}"));
        std::fs::create_dir_all(&dir).expect("cell dir");
        self.underlay.ok(&format!(
            "ip link add u{n} type veth peer name eth0 netns {} && ip link set u{n} master br0 up",
            ns.name
        ));
        ns.ok(&format!(
            "ip link set lo up && ip addr add {UNDERLAY}.{n}/24 dev eth0 && ip link set eth0 up && \
             ip route add default via {UNDERLAY_GW}"
        ));
        let cabled = self.opts.cable && n <= 2;
        if cabled && n == 1 {
            // Cell 2 does not exist yet: both ends start here, cell 2 takes its end below.
            ns.ok(&format!(
                "ip link add cable type veth peer name cable2 && \
                 ip addr add {CABLE}.1/30 dev cable && ip link set cable up"
            ));
        } else if cabled {
            self.cell(1)
                .ns
                .ok(&format!("ip link set cable2 netns {}", ns.name));
            ns.ok(&format!(
                "ip link set cable2 name cable && ip addr add {CABLE}.2/30 dev cable && \
                 ip link set cable up"
            ));
        }
        // This cell's agent certificate, naming its host.
        let host = format!("cell{n}");
        let pki = self.pki();
        if !pki.agent_cert(&host).exists() {
            pki.generate(&[], std::slice::from_ref(&host), false)
                .expect("agent certificate");
        }
        self.cells.push(Some(Cell {
            n,
            cabled,
            ns,
            host,
            dir,
            release_on_exit,
            agent: None,
            agent_runs: 0,
        }));
        self.start_agent(n);
        n
    }

    /// Adds a cell (with the Dc's `release_on_exit`) and waits until every cell routes to
    /// every other.
    pub fn add_cell(&mut self) -> usize {
        let n = self.spawn_cell(self.opts.release_on_exit);
        self.wait_mesh();
        n
    }

    fn lease_file_id(path: &Path) -> Option<(u64, u64, i64)> {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.mtime_nsec()))
    }

    /// Starts the cell's agent and waits until it has (re)written the lease file, i.e. holds
    /// its lease and has set up (or adopted) the VTEP and NAT.
    pub fn start_agent(&mut self, n: usize) {
        let url = self.controller_url();
        let resync = self.opts.resync.to_string();
        let log_level = self.opts.log.clone();
        let extra_args = self.opts.agent_args.clone();
        let mut env: Vec<(String, String)> = self.opts.agent_env.clone();
        env.push(("WEFT_LOG".into(), log_level));
        let pki = self.pki();
        let cell = self.cell_mut(n);
        assert!(cell.agent.is_none(), "agent of cell {n} already running");
        cell.agent_runs += 1;
        let before = Dc::lease_file_id(&cell.lease_file());
        let lease_file = cell.lease_file().display().to_string();
        let cni_dir = cell.cni_dir().display().to_string();
        let uip = cell.underlay_ip();
        let (ca, cert, key) = (
            pki.ca().display().to_string(),
            pki.agent_cert(&cell.host).display().to_string(),
            pki.agent_key(&cell.host).display().to_string(),
        );
        let mut argv = vec![
            weft_bin(),
            "agent",
            "--controller",
            &url,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--underlay-ip",
            &uip,
            "--host",
            &cell.host,
            "--lease-file",
            &lease_file,
            "--cni-data-dir",
            &cni_dir,
            "--resync",
            &resync,
        ];
        if cell.release_on_exit {
            argv.push("--release-on-exit");
        }
        argv.extend(extra_args.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let log = cell.dir.join(format!("agent.{}.log", cell.agent_runs));
        let mut p = Proc::spawn(&cell.ns, &argv, &env, &log);
        let start = Instant::now();
        loop {
            let now = Dc::lease_file_id(&cell.lease_file());
            if now.is_some() && now != before {
                break;
            }
            assert!(
                p.alive() && start.elapsed() < LIVE,
                "agent of cell {n} did not write its lease: {}",
                p.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        cell.agent = Some(p);
    }

    /// Stops the cell's agent gracefully (SIGTERM) and returns its exit status (None: it had
    /// to be killed). Without `--release-on-exit` it leaves everything in place.
    pub fn stop_agent(&mut self, n: usize) -> Option<ExitStatus> {
        let p = self.cell_mut(n).agent.take()?;
        p.stop(Signal::SIGTERM, Duration::from_secs(10))
    }

    /// Kills the cell's agent (SIGKILL), as a crash would.
    pub fn kill_agent(&mut self, n: usize) {
        if let Some(p) = self.cell_mut(n).agent.take() {
            p.stop(Signal::SIGKILL, Duration::from_secs(10));
        }
    }

    pub fn agent_alive(&mut self, n: usize) -> bool {
        self.cell_mut(n).agent_alive()
    }

    /// The process id of cell `n`'s running agent.
    pub fn agent_pid(&self, n: usize) -> u32 {
        self.cell(n).agent.as_ref().expect("agent running").pid()
    }

    /// `GET /metrics` of cell `n`'s agent, started with `--metrics-listen` [`METRICS`] (from
    /// inside the cell; bounded wait for it to serve).
    pub fn agent_metrics(&self, n: usize) -> String {
        let start = Instant::now();
        loop {
            let out = self
                .cell_ns(n)
                .sh(&format!("curl -sf --max-time 5 http://{METRICS}/metrics"));
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                start.elapsed() < LIVE,
                "cell {n}: no metrics at {METRICS}: {}\n--- agent:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.cell(n).agent_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cell leaves the overlay: with `--release-on-exit` its agent is stopped with
    /// SIGTERM (it releases the lease and removes its VTEP); otherwise the agent is stopped
    /// and the lease released with `weft leases release`. The namespace stays (see
    /// [`Dc::remove_cell`]). Returns what the other cells knew about it.
    pub fn leave_cell(&mut self, n: usize) -> Remote {
        let remote = self
            .cell(n)
            .remote()
            .unwrap_or_else(|| panic!("cell {n} has no VTEP or lease"));
        let host = self.cell(n).host.clone();
        if self.cell(n).release_on_exit {
            let st = self.stop_agent(n);
            assert!(
                st.is_some_and(|s| s.success()),
                "agent of cell {n} did not leave cleanly ({st:?}): {}",
                self.cell(n).agent_log()
            );
        } else {
            self.stop_agent(n);
            let out = self.weft(&format!("leases release {host}"));
            assert!(
                out.status.success(),
                "weft leases release {host}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        remote
    }

    /// [`Dc::leave_cell`], then the cell's namespace goes.
    pub fn remove_cell(&mut self, n: usize) -> Remote {
        let r = self.leave_cell(n);
        self.drop_cell(n);
        r
    }

    /// The cell's agent is killed and its namespace goes, without leaving the overlay (a
    /// host that vanished; its lease expires on its own). After [`Dc::leave_cell`]: cleanup.
    pub fn drop_cell(&mut self, n: usize) {
        self.kill_agent(n);
        self.cells[n - 1] = None;
    }

    /// Does cell `from` have route, neighbour and FDB entry for cell `to`?
    pub fn routes_to(&self, from: usize, to: usize) -> bool {
        match self.cell(to).remote() {
            Some(r) => self.cell(from).vtep().knows(&r),
            None => false,
        }
    }

    /// Waits (bounded) until every cell routes to every other.
    pub fn wait_mesh(&self) {
        let cells = self.cell_numbers();
        let mut missing = Vec::new();
        let start = Instant::now();
        loop {
            missing.clear();
            let remotes: Vec<(usize, Option<Remote>)> =
                cells.iter().map(|&n| (n, self.cell(n).remote())).collect();
            for &a in &cells {
                let view = self.cell(a).vtep();
                for (b, r) in &remotes {
                    if a != *b && !r.as_ref().is_some_and(|r| view.knows(r)) {
                        missing.push((a, *b));
                    }
                }
            }
            if missing.is_empty() {
                return;
            }
            if start.elapsed() > LIVE {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs: Vec<String> = cells
            .iter()
            .map(|&n| format!("--- cell {n} agent:\n{}", self.cell(n).agent_log()))
            .collect();
        let ctl = self.controller_log();
        let ctl_tail: Vec<&str> = ctl.lines().rev().take(40).collect();
        let ctl_tail: Vec<&str> = ctl_tail.into_iter().rev().collect();
        panic!(
            "cells do not route to each other (from, to): {missing:?}\n{}\n--- controller (tail):\n{}",
            logs.join("\n"),
            ctl_tail.join("\n")
        );
    }

    /// Waits (bounded) until no cell has any entry (route, neighbour, FDB) for `r` left.
    pub fn wait_forgotten(&self, r: &Remote) {
        self.wait_view(r, VtepView::forgot)
    }

    /// Waits (bounded) until no cell has a route or neighbour entry for `r` left.
    pub fn wait_unrouted(&self, r: &Remote) {
        self.wait_view(r, VtepView::unrouted)
    }

    fn wait_view(&self, r: &Remote, done: fn(&VtepView, &Remote) -> bool) {
        let start = Instant::now();
        loop {
            let left: Vec<(usize, VtepView)> = self
                .cell_numbers()
                .iter()
                .map(|&n| (n, self.cell(n).vtep()))
                .filter(|(_, v)| !done(v, r))
                .collect();
            if left.is_empty() {
                return;
            }
            if start.elapsed() > LIVE {
                let logs: Vec<String> = left
                    .iter()
                    .map(|(n, _)| format!("--- cell {n} agent:\n{}", self.cell(*n).agent_log()))
                    .collect();
                panic!(
                    "cells still have entries for {r:?}: {left:#?}\n{}\n--- controller:\n{}",
                    logs.join("\n"),
                    self.controller_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // ----- containers -----

    /// Runs weft-cni in cell `cell` as a runtime would (`CNI_ARGS=WEFT_APP_ID=<app>`).
    pub fn cni(&self, cell: usize, command: &str, id: &str, netns: &str, app: &str) -> Reply {
        let c = self.cell(cell);
        let args = format!("WEFT_APP_ID={app}");
        exec_plugin(
            weft_cni_bin(),
            &c.ns.path(),
            command,
            id,
            netns,
            "eth0",
            &c.cni_conf(),
            &[("CNI_ARGS", args.as_str())],
        )
    }

    /// A new container namespace attached to cell `cell` (loopback up, as runtimes do).
    pub fn add_container(&self, cell: usize, id: &str, app: &str) -> Container {
        let ns = Ns::new("ct");
        ns.ok("ip link set lo up");
        let r = self.cni(cell, "ADD", id, &ns.path(), app);
        assert!(r.ok, "ADD {id} on cell {cell}: {:?} {}", r.json, r.stderr);
        Container {
            ip: result_ip(&r.json),
            ns,
            id: id.to_string(),
            cell,
            app: app.to_string(),
            result: r.json,
        }
    }

    /// CNI DEL of the container, then its namespace goes.
    pub fn del_container(&self, c: Container) {
        let r = self.cni(c.cell, "DEL", &c.id, &c.ns.path(), &c.app);
        assert!(r.ok, "DEL {}: {:?} {}", c.id, r.json, r.stderr);
    }

    /// `weft containers --json` in cell `cell`.
    pub fn containers_json(&self, cell: usize) -> Value {
        let c = self.cell(cell);
        let out = c.ns.ok(&format!(
            "{} containers --json --data-dir {} --lease-file {}",
            weft_bin(),
            c.cni_dir().display(),
            c.lease_file().display()
        ));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("weft containers --json: {e}: {out}"))
    }

    // ----- traffic helpers -----

    /// An "internet" namespace behind the underlay namespace (which routes, like a provider
    /// edge): `203.0.113.2/24`, default via `203.0.113.1` (the underlay namespace). It has no
    /// route to the overlay, so only masqueraded traffic from containers gets answers.
    /// Idempotent; [`Dc::internet_ns`] returns it.
    pub fn add_internet(&mut self) {
        if self.internet.is_none() {
            let inet = Ns::new("inet");
            self.underlay.ok(&format!(
                "ip link add inet0 type veth peer name eth0 netns {} && \
                 ip addr add 203.0.113.1/24 dev inet0 && ip link set inet0 up",
                inet.name
            ));
            inet.ok(&format!(
                "ip link set lo up && ip addr add {INTERNET_IP}/24 dev eth0 && ip link set eth0 up && \
                 ip route add default via 203.0.113.1"
            ));
            self.internet = Some(inet);
        }
    }

    pub fn internet_ns(&self) -> &Ns {
        self.internet.as_ref().expect("call add_internet first")
    }

    /// Starts the echo server on `port` in `ns` and waits until it answers on loopback.
    pub fn echo_server(&self, ns: &Ns, port: u16) -> Proc {
        let log = self.dir.path.join(format!("{}-echo{port}.log", ns.name));
        let py = self.dir.path.join("sock.py").display().to_string();
        let p = Proc::spawn(ns, &["python3", &py, "echo", &port.to_string()], &[], &log);
        wait_until(&format!("echo server in {}", ns.name), LIVE, || {
            self.tcp_exchange(ns, "127.0.0.1", port, "hi").is_some()
        });
        p
    }

    /// One TCP exchange from `from` to `ip:port` (an echo server): the answer
    /// (`<peer as the server saw it> <msg>`), or None.
    pub fn tcp_exchange(&self, from: &Ns, ip: &str, port: u16, msg: &str) -> Option<String> {
        let out = from.sh(&format!("{} send {ip} {port} '{msg}'", self.py()));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Pings `ip` from `from` `count` times every `interval` seconds; (sent, received).
    pub fn ping_count(from: &Ns, ip: &str, count: u32, interval: f64) -> (u32, u32) {
        let out = from.sh(&format!("ping -n -q -i {interval} -c {count} -W 2 {ip}"));
        parse_ping(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Sum of the samples of `name` in a Prometheus text page whose labels include all of
/// `labels` (`&[]` for a sample without labels).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        let (lbls, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once('}') {
                Some(parts) => parts,
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if labels
            .iter()
            .all(|(k, v)| lbls.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        {
            let v: f64 = value.trim().parse().unwrap_or(0.0);
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `(transmitted, received)` of ping's summary.
pub fn parse_ping(out: &str) -> (u32, u32) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("");
    let num = |key: &str| -> u32 {
        line.split(',')
            .find(|p| p.contains(key))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num("transmitted"), num("received"))
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

/// Opens a file to append to (for captures and the like).
pub fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
}
