//! `weft lab up` and `weft lab down`: build a lab in namespaces on this machine, and remove
//! it again.
//!
//! What `up` makes, in order (each step shown as it happens):
//! 1. the underlay: a namespace with a bridge (`br0`, a fixed MAC address) holding the
//!    underlay gateway address;
//! 2. the internet (optional): a namespace linked to the underlay namespace, which routes;
//! 3. each cell: a namespace with `eth0` on the underlay bridge, default route via the
//!    underlay gateway, forwarding on;
//! 4. the controller (if any cell is in overlay mode), in the underlay namespace;
//! 5. one `weft agent` per overlay cell, in the cell's namespace, until it holds a lease;
//! 6. each container: a namespace (lo up) and `weft-cni ADD` executed in the cell's
//!    namespace exactly as a runtime would (CNI_* environment, config on stdin, the app id in
//!    CNI_ARGS);
//! 7. servers: weft's built-in server (or the app's command) in each container, on cells and
//!    on the internet;
//! 8. the policies, through the controller's API; then it waits until every agent routes to
//!    every other cell and enforces every policy.
//!
//! Nothing touches the machine's own namespace: every link, address, route, sysctl and
//! process lives in a namespace of the lab, and no route leads out of the machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::{IpNet, Ipv4Net};
use weft_kernel::netns::{self, Netns};

use crate::rt::{block_in, runtime};

use super::state::{self, ContainerState, ProcRecord, State};
use super::topology::{self, CellLayout, Mode, Topology};

/// Liveness bound for a lab's daemons to come up and converge (not a speed figure).
const LIVE: Duration = Duration::from_secs(30);

/// Shows progress on stderr (`[step/total] what`), unless quiet.
pub struct Progress {
    pub quiet: bool,
    step: usize,
    total: usize,
    start: Instant,
}

impl Progress {
    pub fn new(quiet: bool, total: usize) -> Self {
        Progress {
            quiet,
            step: 0,
            total,
            start: Instant::now(),
        }
    }

    /// As many steps as `up` shows for this topology.
    pub fn for_topology(quiet: bool, t: &Topology) -> Self {
        let overlay_cells = t.cells.iter().filter(|c| c.mode == Mode::Overlay).count();
        let containers: usize = t.apps.iter().map(|a| a.cells.len()).sum();
        let overlay = overlay_cells > 0;
        let servers = t.internet.as_ref().is_some_and(|i| !i.serve.is_empty())
            || t.cells.iter().any(|c| !c.serve.is_empty())
            || t.apps
                .iter()
                .any(|a| !a.serve.is_empty() || !a.command.is_empty());
        Progress::new(
            quiet,
            1 + t.internet.is_some() as usize
                + t.cells.len()
                + overlay as usize
                + overlay_cells
                + containers
                + servers as usize
                + (overlay && !t.policies.is_empty()) as usize
                + (overlay
                    && (!t.egress.is_empty()
                        || t.overlay.as_ref().is_some_and(|o| o.egress != "allow")))
                    as usize
                + overlay as usize,
        )
    }

    pub fn step(&mut self, what: impl AsRef<str>) {
        self.step += 1;
        if !self.quiet {
            eprintln!(
                "[{:>2}/{}] {:>5.1}s  {}",
                self.step.min(self.total),
                self.total,
                self.start.elapsed().as_secs_f64(),
                what.as_ref()
            );
        }
    }

    pub fn note(&self, what: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("                {}", what.as_ref());
        }
    }
}

/// Where the binaries a lab runs are: `weft` (this program) and `weft-cni` beside it.
pub struct Bins {
    pub weft: PathBuf,
    pub cni: PathBuf,
}

impl Bins {
    pub fn find() -> Result<Bins> {
        let weft = std::env::current_exe().context("where is this weft binary")?;
        let dir = weft.parent().map(Path::to_path_buf).unwrap_or_default();
        let candidates = [
            dir.join("weft-cni"),
            PathBuf::from("/usr/local/bin/weft-cni"),
            PathBuf::from("/usr/lib/cni/weft-cni"),
            PathBuf::from("/opt/cni/bin/weft-cni"),
        ];
        let cni = candidates
            .into_iter()
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "weft-cni not found next to {} (nor in /usr/local/bin, /usr/lib/cni, /opt/cni/bin): build it with `cargo build`",
                    weft.display()
                )
            })?;
        Ok(Bins { weft, cni })
    }
}

/// Builds the lab. On error, what was made stays for `lab down` (the record says what).
pub fn up(
    t: &Topology,
    file: Option<PathBuf>,
    state_dir: &Path,
    p: &mut Progress,
) -> Result<State> {
    let layout = topology::layout(t)?;
    let dir = state::lab_dir(state_dir, &layout.lab);
    let there = state::existing_namespaces(&layout.lab, Some(&layout));
    if State::path(&dir).exists() || !there.is_empty() {
        bail!(
            "lab {} is already up (or was not taken down): run `weft lab down` for it first",
            layout.lab
        );
    }
    let bins = Bins::find()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut st = State {
        topology: t.clone(),
        layout: layout.clone(),
        file,
        dir: dir.clone(),
        token: state::random_token()?,
        complete: false,
        processes: Vec::new(),
        containers: Vec::new(),
    };
    st.save()?;
    let l = &layout;

    // 1. underlay
    p.step(format!(
        "underlay: namespace {}, bridge {} {}/{}",
        l.underlay.namespace,
        l.underlay.bridge,
        l.underlay.gateway,
        l.underlay.subnet.prefix_len()
    ));
    weft_testbed::add_namespace(&l.underlay.namespace)?;
    weft_testbed::Underlay {
        ns: &l.underlay.namespace,
        bridge: &l.underlay.bridge,
        mac: weft_cni::naming::bridge_mac(&format!(
            "{}/{}",
            l.underlay.namespace, l.underlay.bridge
        )),
        gateway: Ipv4Net::new(l.underlay.gateway, l.underlay.subnet.prefix_len())?,
        bridge_netfilter_off: false,
    }
    .build()?;

    // 2. internet
    if let Some(i) = &l.internet {
        p.step(format!(
            "internet: namespace {}, {} (via {} in the underlay namespace)",
            i.namespace, i.ip, i.gateway
        ));
        weft_testbed::add_namespace(&i.namespace)?;
        weft_testbed::Uplink {
            upper_ns: &l.underlay.namespace,
            upper_if: "inet0",
            upper_master: None,
            upper_addr: Some(Ipv4Net::new(i.gateway, i.prefix)?),
            lower_ns: &i.namespace,
            lower_addr: Ipv4Net::new(i.ip, i.prefix)?,
            lower_gateway: i.gateway,
        }
        .build()?;
    }

    // 3. cells
    for c in &l.cells {
        p.step(format!(
            "cell {}: namespace {}, eth0 {}/{} on the underlay ({} mode)",
            c.name,
            c.namespace,
            c.underlay_ip,
            l.underlay.subnet.prefix_len(),
            c.mode.as_str()
        ));
        weft_testbed::add_namespace(&c.namespace)?;
        weft_testbed::Uplink {
            upper_ns: &l.underlay.namespace,
            upper_if: &c.uplink,
            upper_master: Some(&l.underlay.bridge),
            upper_addr: None,
            lower_ns: &c.namespace,
            lower_addr: Ipv4Net::new(c.underlay_ip, l.underlay.subnet.prefix_len())?,
            lower_gateway: l.underlay.gateway,
        }
        .build()?;
        weft_testbed::sysctl_in(&c.namespace, "net.ipv4.ip_forward", "1")?;
        std::fs::create_dir_all(st.cell_dir(&c.name))?;
    }
    st.save()?;

    // 4. controller
    if let Some(o) = &l.overlay {
        p.step(format!(
            "controller: {} in {} (leases of {} as /{} per cell)",
            o.controller, l.underlay.namespace, o.cidr, o.host_prefix
        ));
        let log = dir.join("controller.log");
        // One client certificate per overlay cell, naming it: each agent acts only as its cell.
        let pki = st.pki();
        let agents: Vec<String> = l
            .cells
            .iter()
            .filter(|c| c.mode == Mode::Overlay)
            .map(|c| c.name.clone())
            .collect();
        pki.generate(&[l.underlay.gateway.to_string()], &agents, false)
            .context("making the lab's certificates")?;
        let argv = weft_testbed::ControllerCmd {
            weft: &bins.weft.display().to_string(),
            cert: &pki.server_cert(),
            key: &pki.server_key(),
            client_ca: &pki.ca(),
            listen: format!("{}:{}", l.underlay.gateway, topology::CONTROLLER_PORT),
            state_dir: &dir.join("controller"),
            overlay_cidr: o.cidr.to_string(),
            host_prefix: o.host_prefix,
        }
        .argv();
        let pid = state::spawn_in(
            &l.underlay.namespace,
            &argv,
            &[("WEFT_TOKEN", &st.token), ("WEFT_LOG", "info")],
            &log,
        )?;
        st.processes.push(ProcRecord {
            what: "controller".into(),
            namespace: l.underlay.namespace.clone(),
            pid,
            log: log.clone(),
        });
        st.save()?;
        wait_controller(&st, pid, &log)?;

        // 5. agents
        for c in l.cells.iter().filter(|c| c.mode == Mode::Overlay) {
            p.step(format!(
                "agent on {}: lease, VTEP weft.vtep (VXLAN vni {}, GBP), NAT{}",
                c.name,
                o.vni,
                if o.policy { ", policy" } else { "" }
            ));
            let cdir = st.cell_dir(&c.name);
            let log = cdir.join("agent.log");
            let argv: Vec<String> = vec![
                bins.weft.display().to_string(),
                "agent".into(),
                "--controller".into(),
                o.controller.clone(),
                "--underlay-ip".into(),
                c.underlay_ip.to_string(),
                "--host".into(),
                c.name.clone(),
                "--vni".into(),
                o.vni.to_string(),
                "--lease-file".into(),
                cdir.join("lease.json").display().to_string(),
                "--cni-data-dir".into(),
                cdir.join("cni").display().to_string(),
                "--resync".into(),
                "10".into(),
                "--policy".into(),
                if o.policy { "on" } else { "off" }.into(),
                "--ca".into(),
                pki.ca().display().to_string(),
                "--cert".into(),
                pki.agent_cert(&c.name).display().to_string(),
                "--key".into(),
                pki.agent_key(&c.name).display().to_string(),
                "--audit-log".into(),
                cdir.join(crate::audit::LAB_FILE).display().to_string(),
            ];
            let pid = state::spawn_in(&c.namespace, &argv, &[("WEFT_LOG", "info")], &log)?;
            st.processes.push(ProcRecord {
                what: format!("agent {}", c.name),
                namespace: c.namespace.clone(),
                pid,
                log: log.clone(),
            });
            st.save()?;
        }
        for c in l.cells.iter().filter(|c| c.mode == Mode::Overlay) {
            let lease = st.cell_dir(&c.name).join("lease.json");
            wait_for(
                &format!("agent on {} to hold a lease", c.name),
                || lease.exists(),
                || {
                    st.processes
                        .iter()
                        .find(|r| r.what == format!("agent {}", c.name))
                        .map(|r| (r.pid, r.log.clone()))
                },
            )?;
            if let Ok(hl) = weft_api::records::HostLease::read(&lease) {
                p.note(format!("{}: lease {}", c.name, hl.subnet));
            }
        }
    }

    // 6. containers
    for c in &l.containers {
        let cell = l.cell(&c.cell).context("container on an unknown cell")?;
        p.step(format!(
            "container {} (app {}) on {}: namespace {}, weft-cni ADD",
            c.name, c.app, cell.name, c.namespace
        ));
        weft_testbed::add_namespace(&c.namespace)?;
        let cdir = st.cell_dir(&cell.name);
        let conf = l.cni_conf(cell, &cdir);
        let netns_path = netns::named_path(&c.namespace).display().to_string();
        let cni_args = format!("IgnoreUnknown=1;WEFT_APP_ID={}", c.app);
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", c.id.as_str()),
            ("CNI_NETNS", netns_path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", cni_args.as_str()),
            ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
        ];
        let (ok, out, err) = state::run_in(
            &cell.namespace,
            &[bins.cni.display().to_string()],
            &env,
            serde_json::to_string(&conf)?.as_bytes(),
        )?;
        if !ok {
            bail!(
                "weft-cni ADD for {} on {} failed: {}{}",
                c.name,
                cell.name,
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        let plan = weft_api::records::attachments(&cdir.join("cni"))
            .into_iter()
            .find(|pl| pl.container_id() == c.id);
        let ip = plan.as_ref().and_then(|pl| {
            pl.addresses().into_iter().find_map(|a| match a {
                std::net::IpAddr::V4(v) => Some(v),
                _ => None,
            })
        });
        let host_veth = plan.as_ref().map(|pl| pl.host_veth().to_string());
        p.note(format!(
            "{}: eth0 {} <-> {} on {}",
            c.name,
            ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            host_veth.as_deref().unwrap_or("?"),
            cell.name
        ));
        st.containers.push(ContainerState {
            name: c.name.clone(),
            ip,
            host_veth,
        });
        st.save()?;
    }

    // 7. servers
    let mut servers: Vec<(String, String, Vec<String>)> = Vec::new();
    let serve = |name: &str, ports: &[u16]| -> Vec<String> {
        let mut v = vec![
            bins.weft.display().to_string(),
            "lab".into(),
            "serve".into(),
            "--name".into(),
            name.to_string(),
        ];
        for p in ports {
            v.push("--port".into());
            v.push(p.to_string());
        }
        v
    };
    if let Some(i) = &l.internet {
        if !i.serve.is_empty() {
            servers.push((
                "internet".into(),
                i.namespace.clone(),
                serve("internet", &i.serve),
            ));
        }
    }
    for c in l.cells.iter().filter(|c| !c.serve.is_empty()) {
        servers.push((
            c.name.clone(),
            c.namespace.clone(),
            serve(&c.name, &c.serve),
        ));
    }
    for c in &l.containers {
        if !c.serve.is_empty() {
            servers.push((
                c.name.clone(),
                c.namespace.clone(),
                serve(&c.name, &c.serve),
            ));
        } else if !c.command.is_empty() {
            servers.push((c.name.clone(), c.namespace.clone(), c.command.clone()));
        }
    }
    if !servers.is_empty() {
        p.step(format!(
            "servers: {}",
            servers
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        for (name, ns, argv) in servers {
            let log = logs.join(format!("{name}.log"));
            let pid = state::spawn_in(&ns, &argv, &[], &log)?;
            st.processes.push(ProcRecord {
                what: format!("server {name}"),
                namespace: ns,
                pid,
                log,
            });
        }
        st.save()?;
    }

    // 8. policies and convergence
    if let Some(o) = &l.overlay {
        let policies = t
            .policies
            .iter()
            .map(topology::policy_of)
            .collect::<Result<Vec<_>>>()?;
        if !policies.is_empty() {
            p.step(format!(
                "policies: {} through the controller's API",
                t.policies
                    .iter()
                    .map(|x| format!(
                        "{} -> {} {} {}",
                        x.from,
                        x.to,
                        x.protocol,
                        x.ports.as_deref().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            add_policies(&st, policies)?;
        }
        let mode = t
            .overlay
            .as_ref()
            .and_then(|o| weft_api::egress::EgressMode::parse(&o.egress))
            .unwrap_or_default();
        if mode != weft_api::egress::EgressMode::Allow || !t.egress.is_empty() {
            p.step(format!(
                "egress {}: {}",
                mode.as_str(),
                t.egress
                    .iter()
                    .map(|e| format!(
                        "{} -> {} {} {}",
                        e.from,
                        e.to,
                        e.protocol,
                        e.ports.as_deref().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            add_egress(&st, mode, &t.egress)?;
        }
        p.step("waiting until every cell routes to every other and enforces every policy");
        wait_converged(&st, o.policy)?;
    }
    st.complete = true;
    st.save()?;
    Ok(st)
}

pub fn add_policies(st: &State, policies: Vec<weft_api::model::Policy>) -> Result<()> {
    let c = state::client(st)?;
    block_in(&st.layout.underlay.namespace, move || {
        Box::pin(async move {
            c.create_policies(&policies).await?;
            Ok(())
        })
    })
}

/// Sets the egress mode and adds the `[[egress]]` rules through the controller's API.
pub fn add_egress(
    st: &State,
    mode: weft_api::egress::EgressMode,
    rules: &[topology::EgressRuleSpec],
) -> Result<()> {
    let c = state::client(st)?;
    let mut destinations = Vec::new();
    let mut policies = Vec::new();
    for r in rules {
        let d = r.spec().destination()?;
        policies.push(weft_api::egress::EgressPolicy::new(&r.from, &d.id));
        destinations.push(d);
    }
    block_in(&st.layout.underlay.namespace, move || {
        Box::pin(async move {
            c.set_egress_mode(mode).await?;
            if !destinations.is_empty() {
                c.put_destinations(&destinations).await?;
                c.create_egress_policies(&policies).await?;
            }
            Ok(())
        })
    })
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Waits for `done`, failing early (with its log) if the process `proc_of` names died.
fn wait_for(
    what: &str,
    mut done: impl FnMut() -> bool,
    proc_of: impl Fn() -> Option<(u32, PathBuf)>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if let Some((pid, log)) = proc_of() {
            if !state::alive(pid) {
                bail!(
                    "waiting for {what}: the process exited; its log:\n{}",
                    tail(&log)
                );
            }
            if start.elapsed() > LIVE {
                bail!("timed out waiting for {what}; log:\n{}", tail(&log));
            }
        } else if start.elapsed() > LIVE {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_controller(st: &State, pid: u32, log: &Path) -> Result<()> {
    let c = state::client(st)?;
    let ns = st.layout.underlay.namespace.clone();
    let log = log.to_path_buf();
    wait_for(
        "the controller to answer",
        || {
            let c = c.clone();
            block_in(&ns, move || {
                Box::pin(async move {
                    c.health().await?;
                    Ok(())
                })
            })
            .is_ok()
        },
        || Some((pid, log.clone())),
    )
}

/// The remote routes a cell should have: every other overlay cell's lease subnet.
fn mesh_done(st: &State) -> Result<bool> {
    let cells: Vec<&CellLayout> = st
        .layout
        .cells
        .iter()
        .filter(|c| c.mode == Mode::Overlay)
        .collect();
    let mut subnets = Vec::new();
    for c in &cells {
        let hl = weft_api::records::HostLease::read(&st.cell_dir(&c.name).join("lease.json"))?;
        subnets.push((c.name.clone(), hl.subnet));
    }
    let rt = runtime()?;
    for c in &cells {
        let routes = rt.block_on(async {
            let n = weft_testbed::netlink_in(&c.namespace)?;
            anyhow::Ok(n.routes(false).await?)
        })?;
        for (other, subnet) in &subnets {
            if *other != c.name && !routes.iter().any(|r| r.dst == IpNet::V4(*subnet)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Every policy's destination containers are in their cell's allow map, and every container
/// with an app has a tag.
fn policies_done(st: &State) -> Result<bool> {
    let l = &st.layout;
    // The sources' side: every policy's source container is in its cell's `tags` map (its
    // packets are marked), or the destination's element alone would not let it through.
    for pol in &st.topology.policies {
        for c in l.containers.iter().filter(|c| c.app == pol.from) {
            let Some(ip) = st.container(&c.name).and_then(|s| s.ip) else {
                continue;
            };
            let cell = l.cell(&c.cell).context("unknown cell")?;
            if cell.mode != Mode::Overlay {
                continue;
            }
            let text =
                nft_in(&cell.namespace, "list map inet weft-policy tags").unwrap_or_default();
            if !text.contains(&format!("{ip} :")) {
                return Ok(false);
            }
        }
    }
    for pol in &st.topology.policies {
        for c in l.containers.iter().filter(|c| c.app == pol.to) {
            let Some(ip) = st.container(&c.name).and_then(|s| s.ip) else {
                continue;
            };
            let cell = l.cell(&c.cell).context("unknown cell")?;
            let map = if pol.protocol == "icmp" {
                "allow_icmp"
            } else {
                "allow_ports"
            };
            let text = nft_in(&cell.namespace, &format!("list map inet weft-policy {map}"))
                .unwrap_or_default();
            if !text.contains(&ip.to_string()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Runs nft commands (text output) inside a namespace, through libnftables.
pub fn nft_in(ns: &str, cmd: &str) -> Result<String> {
    let cmd = cmd.to_string();
    Netns::named(ns)?.run(move || -> Result<String> {
        let mut n = weft_kernel::nft::Nft::new()?;
        Ok(n.run(&cmd)?)
    })?
}

fn wait_converged(st: &State, policy: bool) -> Result<()> {
    let start = Instant::now();
    loop {
        let mesh = mesh_done(st)?;
        let pol = !policy || policies_done(st)?;
        if mesh && pol {
            return Ok(());
        }
        if start.elapsed() > LIVE {
            let logs: Vec<String> = st
                .processes
                .iter()
                .filter(|r| r.what.starts_with("agent") || r.what == "controller")
                .map(|r| format!("--- {}:\n{}", r.what, tail(&r.log)))
                .collect();
            bail!(
                "the lab did not converge in {LIVE:?} (routes between cells: {}, policies enforced: {})\n{}",
                if mesh { "yes" } else { "no" },
                if pol { "yes" } else { "no" },
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the agents hold the policies now in the controller (after a policy change).
pub fn wait_policies(st: &State) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < LIVE {
        if policies_done(st)? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the agents did not apply the policies in {LIVE:?}")
}
