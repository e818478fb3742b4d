//! Cells joining, leaving and restarting their agents; waiting for the mesh.

use super::*;

impl Dc {
    /// Adds a cell (namespace, underlay veth, agent) and waits until its agent holds a lease,
    /// but not for the other cells to learn it. Returns its number.
    pub fn spawn_cell(&mut self, release_on_exit: bool) -> usize {
        let n = self.cells.len() + 1;
        assert!(n < 200, "too many cells");
        let ns = Ns::new(&format!("c{n}"));
        let dir = self.dir.path.join(format!("cell{n}"));
        std::fs::create_dir_all(&dir).expect("cell dir");
        weft_testbed::Uplink {
            upper_ns: &self.underlay.name,
            upper_if: &format!("u{n}"),
            upper_master: Some("br0"),
            upper_addr: None,
            lower_ns: &ns.name,
            lower_addr: format!("{UNDERLAY}.{n}/24").parse().expect("cell address"),
            lower_gateway: UNDERLAY_GW.parse().expect("underlay gateway"),
        }
        .build()
        .expect("cell on the underlay");
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

    pub(super) fn lease_file_id(path: &Path) -> Option<(u64, u64, i64)> {
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

    pub(super) fn wait_view(&self, r: &Remote, done: fn(&VtepView, &Remote) -> bool) {
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

    /// The agent process of cell `n` (the only `weft agent` in its namespace).
    pub fn agent_pid(&self, n: usize) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &self.cell_ns(n).name])
            .output()
            .expect("ip netns pids");
        let pids = String::from_utf8_lossy(&out.stdout).into_owned();
        let agent: Vec<&str> = pids
            .split_whitespace()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("agent"))
            })
            .collect();
        assert_eq!(agent.len(), 1, "one agent in cell {n}: {pids}");
        agent[0].to_string()
    }
}
