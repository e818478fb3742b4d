//! Test support: namespaces, temp dirs and background processes that clean up after
//! themselves (also when a test panics), and a CNI runtime stand-in that execs `weft-cni`
//! the way podman or containerd do (CNI_* environment, config on stdin, in the host's netns).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_kernel::netns::{CommandExt as _, Netns};

/// The `weft` binary under test.
pub fn weft_bin() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| locate("weft", option_env!("CARGO_BIN_EXE_weft")))
}

/// The `weft-cni` binary under test.
pub fn weft_cni_bin() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| locate("weft-cni", option_env!("CARGO_BIN_EXE_weft-cni")))
}

/// Where binary `name` is. Cargo tells a crate's tests and benches where that crate's own
/// binaries are (`CARGO_BIN_EXE_*`: `weft` for the weft crate's, `weft-cni` for weft-cni's);
/// the other one is looked for beside it, in the same target directory. `cargo test
/// --workspace` builds both before it runs any test; `cargo test -p weft` alone does not
/// build weft-cni, and this says so.
fn locate(name: &str, from_cargo: Option<&'static str>) -> String {
    if let Some(p) = from_cargo {
        return p.to_string();
    }
    let own = option_env!("CARGO_BIN_EXE_weft")
        .or(option_env!("CARGO_BIN_EXE_weft-cni"))
        .expect("the test support is included by a crate that builds neither weft nor weft-cni");
    let path = Path::new(own).with_file_name(name);
    let release = path
        .parent()
        .is_some_and(|d| d.file_name().is_some_and(|n| n == "release"));
    assert!(
        path.exists(),
        "{name} is not built: it is not beside {own}. Build it with `cargo build{} -p {name}` \
         (`cargo test --workspace` and `cargo build` build every binary)",
        if release { " --release" } else { "" }
    );
    path.display().to_string()
}

/// The start of every python helper script the tests write: the imports, `mode` (the first
/// argument), `listener(port)` (a TCP socket listening on every address), `read_all(c)`
/// (what the peer sends until it shuts its side down) and `exchange(host, port, timeout)`
/// (one TCP exchange: sends `probe`, half-closes, reads the answer; returns `("ok", answer)`
/// or the kind of failure: `timeout`, `refused`, `error<errno>`).
pub const PY_PRELUDE: &str = r#"import json, socket, struct, sys, time
mode = sys.argv[1] if len(sys.argv) > 1 else ""
def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    return s
def read_all(c):
    out = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        out += b
    return out
def exchange(host, port, timeout):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(timeout)
    try:
        c.connect((host, port))
        c.sendall(b"probe")
        c.shutdown(socket.SHUT_WR)
        return "ok", read_all(c)
    except (socket.timeout, TimeoutError):
        return "timeout", b""
    except ConnectionRefusedError:
        return "refused", b""
    except OSError as e:
        return "error%d" % (e.errno or 0), b""
    finally:
        c.close()
"#;

/// Writes a python helper script: [`PY_PRELUDE`], then `body`.
pub fn write_py(path: &Path, body: &str) {
    std::fs::write(path, format!("{PY_PRELUDE}{body}"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or parallel test process) uses: `wt<pid>x<n><tag>`.
pub fn unique(tag: &str) -> String {
    format!(
        "wt{}x{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        tag
    )
}

/// A named network namespace with `lo` up (as `weft netns add` makes it), deleted on drop.
pub struct Ns {
    pub name: String,
    /// Made by `weft netns add` (and so removed by `weft netns del`).
    by_cli: bool,
}

impl Ns {
    /// Made in this process, with the library calls `weft netns add` makes.
    pub fn new(tag: &str) -> Ns {
        let name = unique(tag);
        if let Err(e) = add_netns(&name) {
            panic!("creating network namespace {name}: {e}");
        }
        Ns {
            name,
            by_cli: false,
        }
    }

    /// Made by the `weft` binary (`weft netns add`), for the tests of that command.
    pub fn by_weft_cli(tag: &str) -> Ns {
        let name = unique(tag);
        let out = Command::new(weft_bin())
            .args(["netns", "add", &name])
            .output()
            .expect("run weft netns add");
        assert!(
            out.status.success(),
            "weft netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ns { name, by_cli: true }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a shell command inside the namespace (`ip netns exec`), as a user would.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("run ip netns exec")
    }

    /// Like [`Ns::sh`] but panics on failure and returns stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in {}: `{script}` failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running command inside the namespace; it is killed on drop.
    pub fn spawn(&self, script: &str) -> Bg {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "sh",
                "-c",
                &format!("exec {script}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in netns");
        Bg { child: Some(child) }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // Kill anything still running inside, then remove the namespace.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        if self.by_cli {
            let _ = Command::new(weft_bin())
                .args(["netns", "del", &self.name])
                .output();
        } else {
            let _ = weft_kernel::netns::del_named(&self.name);
        }
    }
}

/// A named namespace with `lo` up (the test bed's); nothing is left when bringing `lo` up
/// fails.
fn add_netns(name: &str) -> Result<(), String> {
    weft_testbed::add_namespace(name)
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

/// A background process killed on drop.
pub struct Bg {
    child: Option<Child>,
}

impl Bg {
    /// Stops the process and returns what it printed.
    pub fn finish(mut self) -> (String, String) {
        let mut c = self.child.take().expect("child");
        let _ = c.kill();
        let out = c.wait_with_output().expect("wait");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What one plugin call returned.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

impl Reply {
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }
    pub fn msg(&self) -> String {
        self.json["msg"].as_str().unwrap_or("").to_string()
    }
}

/// Execs a CNI plugin binary the way a runtime does, inside `host_netns` (a path).
#[allow(clippy::too_many_arguments)]
pub fn exec_plugin(
    plugin: &str,
    host_netns: &str,
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
    extra_env: &[(&str, &str)],
) -> Reply {
    let host = Netns::open(host_netns).expect("open host netns");
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env(
            "CNI_PATH",
            Path::new(plugin)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.netns(&host).expect("enter host netns");
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(conf).expect("encode").as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait plugin");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.to_string()))
    };
    Reply {
        ok: out.status.success(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A CNI network under test: a host namespace (standing in for the host), a private data
/// dir, and a base configuration.
pub struct Net {
    pub host: Ns,
    pub data: TempDir,
    pub conf: Value,
}

impl Net {
    /// `conf` gets `name`, `type`, `dataDir` filled in.
    pub fn new(tag: &str, mut conf: Value) -> Net {
        let host = Ns::new(tag);
        let data = TempDir::new(tag);
        conf["name"] = Value::String(format!("{}-net", host.name));
        conf["type"] = Value::String("weft-cni".into());
        conf["dataDir"] = Value::String(data.path.display().to_string());
        if conf.get("cniVersion").is_none() {
            conf["cniVersion"] = Value::String("1.1.0".into());
        }
        Net { host, data, conf }
    }

    pub fn call(&self, command: &str, cid: &str, ns: &Ns, ifname: &str) -> Reply {
        self.call_conf(command, cid, &ns.path(), ifname, &self.conf)
    }

    pub fn call_conf(
        &self,
        command: &str,
        cid: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> Reply {
        exec_plugin(
            weft_cni_bin(),
            &self.host.path(),
            command,
            cid,
            netns,
            ifname,
            conf,
            &[],
        )
    }

    pub fn add(&self, cid: &str, ns: &Ns) -> Value {
        let r = self.call("ADD", cid, ns, "eth0");
        assert!(r.ok, "ADD {cid}: {:?} {}", r.json, r.stderr);
        r.json
    }

    pub fn del(&self, cid: &str, ns: &Ns) {
        let r = self.call("DEL", cid, ns, "eth0");
        assert!(r.ok, "DEL {cid}: {:?} {}", r.json, r.stderr);
    }

    /// Another network on the same host namespace: `conf` gets its own `name`
    /// (`<host>-<suffix>`), `type` and `dataDir` (a directory under this network's, so it
    /// goes with it). Call it with [`Net::call_conf`].
    pub fn sibling(&self, suffix: &str, mut conf: Value) -> Value {
        let dir = self.data.path.join(suffix);
        std::fs::create_dir_all(&dir).expect("create sibling data dir");
        conf["name"] = Value::String(format!("{}-{suffix}", self.host.name));
        conf["type"] = Value::String("weft-cni".into());
        conf["dataDir"] = Value::String(dir.display().to_string());
        if conf.get("cniVersion").is_none() {
            conf["cniVersion"] = Value::String("1.1.0".into());
        }
        conf
    }

    /// An overlay-mode network on a fresh host namespace, without an agent: the test writes
    /// the lease file the agent would (`subnet`, e.g. `10.255.7.0/24`, of 10.255.0.0/16),
    /// into this network's data directory.
    pub fn overlay(tag: &str, subnet: &str) -> Net {
        let mut net = Net::new(
            tag,
            serde_json::json!({ "cniVersion": "1.1.0", "mode": "overlay" }),
        );
        let lease = write_lease(&net.data.path, subnet);
        net.conf["leaseFile"] = Value::String(lease.display().to_string());
        net
    }

    /// The network's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.data
            .path
            .join(self.conf["name"].as_str().unwrap_or_default())
    }

    /// Where the network's addresses are held: its state directory, or in overlay mode the
    /// lease's (`<leaseFile>.ipam`).
    pub fn ip_space(&self) -> PathBuf {
        match self.conf["leaseFile"].as_str() {
            Some(lease) => PathBuf::from(format!("{lease}.ipam")),
            None => self.state_dir(),
        }
    }

    /// Address files currently held in the IPAM store.
    pub fn allocated(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.ip_space().join("ips"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with("last_reserved"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// weft's host-side links in the host namespace.
    pub fn host_links(&self) -> Vec<String> {
        weft_testbed::weft_host_links(&self.host.ok("ip -o link show"))
    }
}

/// Writes a host lease file as the agent does (`<dir>/lease.json`) and returns its path.
pub fn write_lease(dir: &Path, subnet: &str) -> PathBuf {
    let path = dir.join("lease.json");
    let lease = serde_json::json!({
        "host": "test-host",
        "subnet": subnet,
        "overlay": "10.255.0.0/16",
        "vtep": "weft.vtep",
        "mtu": 1450,
    });
    std::fs::write(&path, lease.to_string()).expect("write lease file");
    path
}

/// An "outside" namespace joined to `host` by a veth: the host is 203.0.113.1/24, the
/// outside 203.0.113.2/24 (a documentation range, only on this link).
pub fn outside_of(host: &Ns) -> Ns {
    let out = Ns::new("out");
    host.ok(&format!(
        "ip link add wout0 type veth peer name wout1 netns {o} && \
         ip addr add 203.0.113.1/24 dev wout0 && ip link set wout0 up",
        o = out.name
    ));
    out.ok("ip link set lo up && ip addr add 203.0.113.2/24 dev wout1 && ip link set wout1 up");
    out
}

/// The first IPv4 address of an ADD result, without prefix.
pub fn result_ip(r: &Value) -> String {
    r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// Waits (bounded) until `f` holds; for liveness only, never for speed.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Pings until one reply arrives (up to 3 s): a fresh veth may drop the very first packet.
pub fn ping_ok(from: &Ns, ip: &str) -> bool {
    from.sh(&format!("ping -c 1 -W 1 -w 3 {ip}"))
        .status
        .success()
}

/// Sends UDP datagrams to ports 1.. of HOST for SECS seconds, one socket, one datagram per
/// port (each a new flow for the policy), then prints `sent <n> <seconds taken>`.
pub const SCAN_PY: &str = r#"
import socket, sys, time
host, secs = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, start = 0, time.monotonic()
while time.monotonic() - start < secs:
    for _ in range(100):
        try:
            s.sendto(b"x", (host, 1 + n % 60000))
        except OSError:
            pass
        n += 1
print("sent %d %.3f" % (n, time.monotonic() - start), flush=True)
"#;

/// A bench's `NAME VALUE` argument (after `--` on cargo bench's command line), else `default`.
pub fn bench_arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
