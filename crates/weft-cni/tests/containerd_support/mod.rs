//! A containerd of the test's own, and `ctr` as its user runs it, for `ctr run --cni`
//! (containerd 1.6, Debian's `containerd`): root, state, sockets, FIFOs and runc's root under a
//! temporary directory, the daemon and every `ctr` in a network namespace standing in for the
//! host (the CNI plugin runs in ctr's namespace). `ctr run --cni` reads only the default CNI
//! directories (/etc/cni/net.d, /opt/cni/bin): each `ctr` runs in a mount namespace of its own
//! where /etc and /opt are overlays whose upper layers hold the test's conflist and plugins,
//! so nothing is written to the machine's /etc or /opt. Containers run busybox (Debian's
//! `busybox-static`) from a local rootfs (`ctr run --rootfs`), so no registry and no snapshot.
//! Everything is killed and removed on drop, also when the test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_kernel::netns::{CommandExt as _, Netns};

use crate::common::{unique, Ns, TempDir};

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// What the machine must have; the message says how to get it.
pub fn require_tools() {
    for (tool, pkg) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("unshare", "util-linux"),
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|d| d.join(tool).is_file());
        assert!(
            found,
            "{tool} is missing: apt-get install {pkg} (see .ci/run)"
        );
    }
    let bb = std::fs::read(BUSYBOX).unwrap_or_default();
    assert!(
        !bb.is_empty(),
        "{BUSYBOX} is missing: apt-get install busybox-static (see .ci/run)"
    );
}

/// One containerd, its host namespace and the CNI setup `ctr run --cni` finds.
pub struct Containerd {
    pub dir: TempDir,
    pub host: Ns,
    /// ctr's namespace (also the cgroup parent runc makes).
    pub ns: String,
    daemon: Option<Child>,
    /// `ctr run` processes still running (killed on drop).
    runs: Vec<(String, Child)>,
}

impl Containerd {
    /// Starts containerd on a fresh host namespace with `conflist` as the only network
    /// configuration and `plugins` (name → binary) in the CNI plugin directory. Calls of
    /// `wrap` plugins are logged to [`Containerd::cni_log`] (command, container, CNI_NETNS).
    pub fn start(
        tag: &str,
        conflist: &Value,
        plugins: &[(&str, &str)],
        wrap: &[&str],
    ) -> Containerd {
        require_tools();
        let dir = TempDir::new(tag);
        let host = Ns::new(tag);
        let d = &dir.path.clone();
        for sub in [
            "root",
            "state",
            "opt",
            "fifo",
            "runc",
            "ov/etc/up/cni/net.d",
            "ov/opt/up/cni/bin",
            "rootfs/bin",
            "rootfs/proc",
            "rootfs/sys",
            "rootfs/dev",
            "rootfs/etc",
            "rootfs/tmp",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("create containerd dirs");
        }
        std::fs::copy(BUSYBOX, d.join("rootfs/bin/busybox")).expect("copy busybox");
        let c = Containerd {
            ns: unique("ctr"),
            dir,
            host,
            daemon: None,
            runs: Vec::new(),
        };
        c.set_conflist(conflist);
        for (name, target) in plugins {
            let at = c.dir.path.join("ov/opt/up/cni/bin").join(name);
            if wrap.contains(name) {
                let script = format!(
                    "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID netns=[$CNI_NETNS]\" >> {log}\nexec {target} \"$@\"\n",
                    log = c.cni_log_path().display()
                );
                std::fs::write(&at, script).expect("write plugin wrapper");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod wrapper");
            } else {
                std::os::unix::fs::symlink(target, &at).expect("link plugin");
            }
        }
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{d}/opt\"\n",
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).expect("write containerd config");
        std::fs::write(
            d.join("ctr.sh"),
            format!(
                "mount -t overlay overlay -o ro,lowerdir={d}/ov/etc/up:/etc /etc || exit 90\n\
                 mount -t overlay overlay -o ro,lowerdir={d}/ov/opt/up:/opt /opt || exit 91\n\
                 exec ctr --address {d}/c.sock -n {ns} \"$@\"\n",
                d = d.display(),
                ns = c.ns
            ),
        )
        .expect("write ctr wrapper");
        let mut c = c;
        let hostns = Netns::open(c.host.path()).expect("open host netns");
        let log = std::fs::File::create(d.join("containerd.log")).expect("containerd log");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        cmd.netns(&hostns).expect("enter host netns");
        c.daemon = Some(cmd.spawn().expect("start containerd"));
        let start = Instant::now();
        while !(c.ctr(&["version"]).status.success()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "containerd did not come up: {}",
                std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// Replaces the network configuration ctr finds in /etc/cni/net.d.
    pub fn set_conflist(&self, conflist: &Value) {
        std::fs::write(
            self.dir.path.join("ov/etc/up/cni/net.d/10-test.conflist"),
            conflist.to_string(),
        )
        .expect("write conflist");
    }

    pub fn cni_log_path(&self) -> PathBuf {
        self.dir.path.join("cni.log")
    }

    /// The wrapped plugins' calls so far, one line each.
    pub fn cni_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.cni_log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A `ctr` command (in the host namespace and a mount namespace of its own).
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let hostns = Netns::open(self.host.path()).expect("open host netns");
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh"])
            .arg(self.dir.path.join("ctr.sh"))
            .args(args);
        cmd.netns(&hostns).expect("enter host netns");
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("run ctr")
    }

    /// The arguments of `ctr run --cni` for container `id` running busybox `cmd`.
    fn run_args<'a>(&'a self, id: &'a str, detach: bool, cmd: &[&'a str]) -> Vec<String> {
        let d = &self.dir.path;
        let mut a: Vec<String> = vec![
            "run".into(),
            "--cni".into(),
            "--rootfs".into(),
            "--fifo-dir".into(),
            d.join("fifo").display().to_string(),
            "--runc-root".into(),
            d.join("runc").display().to_string(),
        ];
        a.push(if detach { "-d" } else { "--rm" }.into());
        a.push(d.join("rootfs").display().to_string());
        a.push(id.into());
        a.push("/bin/busybox".into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    /// `ctr run --rm --cni` in the background, as a user runs a container in the
    /// foreground: when its task ends, ctr removes its network (CNI DEL with an empty
    /// CNI_NETNS), the task and the container. Returns once the task runs.
    pub fn run(&mut self, id: &str, cmd: &[&str]) {
        let args = self.run_args(id, false, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .ctr_cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run");
        self.runs.push((id.to_string(), child));
        self.wait_running(id);
    }

    /// `ctr run -d --cni` (detached); its output.
    pub fn run_detached(&self, id: &str, cmd: &[&str]) -> Output {
        let args = self.run_args(id, true, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(&args)
    }

    /// Waits (bounded) until the task of `id` runs.
    pub fn wait_running(&mut self, id: &str) {
        let start = Instant::now();
        loop {
            let out = String::from_utf8_lossy(&self.ctr(&["task", "ls"]).stdout).into_owned();
            if out
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING"))
            {
                return;
            }
            if let Some((_, c)) = self.runs.iter_mut().find(|(i, _)| i == id) {
                if let Ok(Some(st)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("ctr run {id} exited ({st}): {err}");
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "task {id} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs busybox `cmd` inside the running container `id`.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Output {
        let exec_id = unique("x");
        let mut args = vec!["task", "exec", "--exec-id", &exec_id, id, "/bin/busybox"];
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// Kills the task of a foreground `ctr run` and waits (bounded) until that ctr has
    /// removed network, task and container and exited.
    pub fn kill(&mut self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let Some(pos) = self.runs.iter().position(|(i, _)| i == id) else {
            return;
        };
        let (_, mut child) = self.runs.remove(pos);
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ctr run {id} did not exit after its task was killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The ids (first column) of `ctr WHAT ls` (containers, tasks, snapshots).
    pub fn list(&self, what: &[&str]) -> Vec<String> {
        let mut args = what.to_vec();
        args.push("ls");
        let out = self.ctr(&args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    /// Removes a container whose `ctr run` gave up (task, container), by force.
    pub fn force_remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && !self.ctr(&["task", "rm", "-f", id]).status.success()
            && self.list(&["task"]).iter().any(|t| t == id)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ctr(&["container", "rm", id]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids: Vec<String> = self.runs.iter().map(|(i, _)| i.clone()).collect();
        for id in ids {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
        }
        for (_, mut c) in self.runs.drain(..) {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for id in self.list(&["container"]) {
            self.force_remove(&id);
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // What runc and the shims make outside the temporary directory: the cgroup parent
        // named after ctr's namespace, and the shims' socket directory (only if empty: another
        // containerd may use it).
        for ctl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(ctl.path().join(&self.ns));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.ns));
        for d in [
            "/run/containerd/s",
            "/run/containerd/fifo",
            "/run/containerd/runc",
            "/run/containerd",
        ] {
            let _ = std::fs::remove_dir(d);
        }
    }
}
