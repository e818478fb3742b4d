//! Processes in namespaces (`Proc`), log files, and what they print (metrics, ping).

use super::*;

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
        reap(c, timeout)
    }

    /// Waits (bounded) for the process to exit by itself; SIGKILL after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Option<ExitStatus> {
        let c = self.child.take()?;
        reap(c, timeout)
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits up to `timeout` for `c` to exit; SIGKILL after that.
fn reap(mut c: Child, timeout: Duration) -> Option<ExitStatus> {
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

impl Proc {
    /// `tcpdump -n --immediate-mode ARGS` in `ns`, logging to `log`; capturing when this
    /// returns.
    pub fn tcpdump(ns: &Ns, args: &[&str], log: &Path) -> Proc {
        let mut argv = vec!["tcpdump", "-n", "--immediate-mode"];
        argv.extend_from_slice(args);
        let p = Proc::spawn(ns, &argv, &[], log);
        wait_until(&format!("tcpdump in {}", ns.name), LIVE, || {
            std::fs::read_to_string(log).is_ok_and(|l| l.contains("listening on"))
        });
        p
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

/// Opens a file to append to (for captures and the like).
pub fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
}
