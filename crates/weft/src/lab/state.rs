//! A lab's record on disk (`<state dir>/<lab>/state.json`) and the processes it runs.
//!
//! `lab up` writes the record before it makes anything and updates it as it goes, so that
//! `lab down` can undo a lab whose `up` was killed halfway. `down` does not rely on the record
//! alone: every namespace whose name starts with the lab's prefix is the lab's, and every
//! process running in one of them is stopped.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use weft_kernel::netns::{self, CommandExt as _, Netns};

use super::topology::{self, Layout, Topology};

/// Where labs keep their records, logs and the state of their controller, agents and CNI.
pub const DEFAULT_STATE_DIR: &str = "/run/weft/lab";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub topology: Topology,
    pub layout: Layout,
    /// The topology file `up` was given (for `status`).
    pub file: Option<PathBuf>,
    pub dir: PathBuf,
    /// The controller's bearer token (policy writes).
    pub token: String,
    /// false until `up` finished.
    pub complete: bool,
    pub processes: Vec<ProcRecord>,
    pub containers: Vec<ContainerState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcRecord {
    /// "controller", "agent cell1", "server app-a-0", ...
    pub what: String,
    pub namespace: String,
    pub pid: u32,
    pub log: PathBuf,
}

/// A container as weft-cni made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    /// The host end of its veth, in the cell.
    pub host_veth: Option<String>,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn save(&self) -> Result<()> {
        let p = State::path(&self.dir);
        let tmp = p.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &p).with_context(|| format!("write {}", p.display()))?;
        Ok(())
    }

    pub fn load(dir: &Path) -> Result<State> {
        let p = State::path(dir);
        let b = fs::read(&p).with_context(|| format!("read {}", p.display()))?;
        serde_json::from_slice(&b).with_context(|| format!("parse {}", p.display()))
    }

    /// The lab's CA, the controller's certificate and one agent certificate per overlay cell.
    pub fn pki(&self) -> weft_api::pki::LabPki {
        weft_api::pki::LabPki::new(self.dir.join("pki"))
    }

    pub fn cell_dir(&self, cell: &str) -> PathBuf {
        self.dir.join("cells").join(cell)
    }

    pub fn container(&self, name: &str) -> Option<&ContainerState> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// The lab's directory under `state_dir`.
pub fn lab_dir(state_dir: &Path, lab: &str) -> PathBuf {
    state_dir.join(lab)
}

/// Labs with a record under `state_dir`.
pub fn labs(state_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(state_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// A client of the lab's controller (use it inside the underlay namespace).
pub fn client(st: &State) -> Result<weft_api::Client> {
    let o = st
        .layout
        .overlay
        .as_ref()
        .context("this lab has no controller (no overlay cells)")?;
    Ok(weft_api::Client::builder(o.controller.clone())
        .ca(st.pki().ca())
        .token(st.token.clone())
        .build()?)
}

/// The layout of a lab that is up (from its record).
pub fn load(lab: &str, state_dir: &Path) -> Result<State> {
    topology::validate_name("lab name", lab, 16)?;
    let dir = lab_dir(state_dir, lab);
    if !State::path(&dir).exists() {
        bail!("lab {lab} is not up (no {})", State::path(&dir).display());
    }
    State::load(&dir)
}

impl Layout {
    /// The lab's address for a name in checks and traces: a container's IP, a cell's underlay
    /// IP, the internet's IP, or an IP as given.
    pub fn address_of(&self, st: &State, name: &str) -> Option<Ipv4Addr> {
        if let Ok(ip) = name.parse() {
            return Some(ip);
        }
        if name == "internet" {
            return self.internet.as_ref().map(|i| i.ip);
        }
        if let Some(c) = self.cell(name) {
            return Some(c.underlay_ip);
        }
        let c = self.container(name)?;
        st.container(&c.name)?.ip
    }

    /// The namespace a name runs in (container, cell, internet).
    pub fn namespace_of(&self, name: &str) -> Option<String> {
        if name == "internet" {
            return self.internet.as_ref().map(|i| i.namespace.clone());
        }
        if let Some(c) = self.cell(name) {
            return Some(c.namespace.clone());
        }
        self.container(name).map(|c| c.namespace.clone())
    }
}

/// Starts `argv` inside the named namespace, in its own session (it outlives `lab up`),
/// output appended to `log`. Returns the pid.
pub fn spawn_in(ns: &str, argv: &[String], env: &[(&str, &str)], log: &Path) -> Result<u32> {
    let netns = Netns::named(ns).with_context(|| format!("namespace {ns}"))?;
    let (prog, args) = argv.split_first().context("empty command")?;
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.netns(&netns)?;
    // SAFETY: one async-signal-safe call (setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {prog} in {ns}"))?;
    Ok(child.id())
}

/// Runs `argv` inside the named namespace with `stdin`, waits, returns (exit ok, stdout,
/// stderr). For weft-cni: the runtime execs the plugin in the host's namespace, which for a
/// lab cell is the cell's namespace.
pub fn run_in(
    ns: &str,
    argv: &[String],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Result<(bool, Vec<u8>, Vec<u8>)> {
    use std::io::Write;
    let netns = Netns::named(ns).with_context(|| format!("namespace {ns}"))?;
    let (prog, args) = argv.split_first().context("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.netns(&netns)?;
    let mut child = cmd.spawn().with_context(|| format!("run {prog} in {ns}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin)?;
    }
    let out = child.wait_with_output()?;
    Ok((out.status.success(), out.stdout, out.stderr))
}

/// Pids of the processes whose network namespace is `ns` (what `ip netns pids` prints).
pub fn pids_in(ns: &str) -> Vec<i32> {
    let Ok(target) = fs::metadata(netns::named_path(ns)) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        })
        .collect()
}

/// Stops every process in these namespaces: SIGTERM, then SIGKILL for what is left after
/// `grace`.
pub fn stop_processes(namespaces: &[String], grace: Duration) -> usize {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids: Vec<i32> = namespaces.iter().flat_map(|n| pids_in(n)).collect();
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if pids.iter().all(|&p| kill(Pid::from_raw(p), None).is_err()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for ns in namespaces {
        for p in pids_in(ns) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    pids.len()
}

/// Is this process alive?
pub fn alive(pid: u32) -> bool {
    // A zombie has no /proc/PID/ns/net readable... keep it simple: the state in /proc/PID/stat.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// The lab's namespaces that exist now: those named in the layout and any other with the
/// lab's prefix (left by an older or killed `up`).
pub fn existing_namespaces(lab: &str, layout: Option<&Layout>) -> Vec<String> {
    let prefix = super::topology::ns_prefix(lab);
    let mut v: Vec<String> = netns::list_named()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if let Some(l) = layout {
        for n in l.namespaces() {
            if netns::named_path(&n).exists() && !v.contains(&n) {
                v.push(n);
            }
        }
    }
    v
}

/// A random token (hex), from the kernel's random pool.
pub fn random_token() -> Result<String> {
    let mut b = [0u8; 16];
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
