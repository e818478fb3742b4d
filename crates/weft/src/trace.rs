//! `weft trace SRC DST[:PORT]`: the path of a packet as seed 000's eleven steps, with the real
//! kernel objects at each (veth pair, mark rule and tag element, route to the VTEP, neighbour
//! and FDB entries, the destination's policy element or the rule that drops, the delivery
//! veth). With `--probe` it sends a real packet, traced by nftables (`meta nftrace set 1` in a
//! temporary table), and reports what the kernel did, rule by rule, so a drop is explained by
//! the rule that dropped it.
//!
//! In a lab (`--lab NAME`) every cell's kernel is visible, so both ends are shown. On a real
//! host (no `--lab`) the source must be a container of this host; for a destination on
//! another host, its side comes from the controller (`--controller`).
//!
//! The facts are read, never changed (except for the probe's temporary trace table, which is
//! always removed).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use weft_cni::records::Plan;
use weft_kernel::netns::{in_netns, Netns};
use weft_kernel::Netlink;

use crate::lab::probe::{self, Outcome};
use crate::lab::state::State;
use crate::lab::topology::Mode;
use crate::lab::up::{self, runtime};

#[derive(Args)]
pub struct TraceArgs {
    /// Source container: its lab name (app-b or app-b-0), IP, or container id
    src: String,
    /// Destination: container, app, cell, "internet" or IP, with an optional :PORT
    dst: String,
    /// The lab the containers are in (default: look on this host)
    #[arg(long)]
    lab: Option<String>,
    /// tcp, udp or icmp (default: tcp with a port, icmp without)
    #[arg(long)]
    protocol: Option<String>,
    /// Send a real packet and report, rule by rule, what the kernel did with it
    #[arg(long)]
    probe: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Where labs keep their records
    #[arg(long, env = "WEFT_LAB_DIR", default_value = crate::lab::state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// weft-cni's state directory on this host (without --lab)
    #[arg(long, default_value = weft_cni::records::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The agent's lease file on this host (without --lab)
    #[arg(long, default_value = weft_cni::records::DEFAULT_LEASE_FILE)]
    lease_file: PathBuf,
    /// Controller URL, for a destination on another host (without --lab)
    #[arg(long, env = "WEFT_CONTROLLER")]
    controller: Option<String>,
    /// Bearer token for the controller
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate of the controller (https)
    #[arg(long, env = "WEFT_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (this host's agent certificate reads the controller too)
    #[arg(long, env = "WEFT_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Client certificate key
    #[arg(long, env = "WEFT_KEY", requires = "cert")]
    key: Option<PathBuf>,
}

/// One host whose kernel trace can read: a lab cell (a namespace) or this host.
#[derive(Debug, Clone)]
struct Host {
    name: String,
    /// None: the calling process's namespace.
    ns: Option<String>,
    cni_dir: PathBuf,
    lease_file: PathBuf,
    mode: Mode,
    underlay_ip: Option<Ipv4Addr>,
}

/// A container as trace knows it.
#[derive(Debug, Clone)]
struct Ctr {
    name: String,
    ip: Ipv4Addr,
    app: Option<String>,
    netns: String,
    host_veth: String,
    ifname: String,
    host: Host,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: u8,
    pub title: String,
    /// The cell (host) whose kernel holds these objects.
    pub host: Option<String>,
    pub objects: Vec<String>,
    pub note: Option<String>,
    /// Not on this packet's path (e.g. the overlay steps for a same-cell destination), or
    /// not reached (after a drop).
    pub skipped: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// false when the decision is taken on a host this trace cannot see (then `allowed` is
    /// false too and `by` says where to look).
    pub known: bool,
    pub allowed: bool,
    /// The policy, map element or rule that decided.
    pub by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeEvent {
    pub host: String,
    /// The kernel's trace id: the same for every event of one packet.
    pub packet: u32,
    pub table: String,
    pub chain: String,
    pub kind: String,
    pub verdict: Option<String>,
    pub rule: Option<String>,
    pub mark: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub outcome: Outcome,
    pub events: Vec<ProbeEvent>,
    /// The rule (or chain policy) that dropped the probe, if one did.
    pub dropped_by: Option<ProbeEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub src: String,
    pub src_ip: Ipv4Addr,
    pub dst: String,
    pub dst_ip: Ipv4Addr,
    pub protocol: String,
    pub port: Option<u16>,
    /// "same cell", "across cells" or "outside the overlay".
    pub path: String,
    pub steps: Vec<Step>,
    pub decision: Decision,
    pub probe: Option<ProbeReport>,
}

/// Runs `f` in the host's namespace.
fn on<T: Send + 'static>(h: &Host, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match &h.ns {
        Some(ns) => Netns::named(ns)?.run(f)?,
        None => f(),
    }
}

/// The id of the fast path's program on `dev`'s tc ingress in the host's namespace, if one
/// is attached (weft-agent's handle and priority).
fn fastpath_filter(h: &Host, dev: &str) -> Option<u32> {
    let dev = dev.to_string();
    on(h, move || {
        let ifindex = nix::net::if_::if_nametoindex(dev.as_str())?;
        let hook = weft_kernel::bpf::TcIngress {
            ifindex,
            handle: weft_agent::fastpath::TC_HANDLE,
            priority: weft_agent::fastpath::TC_PRIORITY,
        };
        Ok(hook.query()?)
    })
    .ok()
    .flatten()
}

fn nft(h: &Host, cmd: &str) -> Result<String> {
    let cmd = cmd.to_string();
    on(h, move || {
        let mut n = weft_kernel::nft::Nft::new()?;
        Ok(n.run(&cmd)?)
    })
}

fn nft_handles(h: &Host, cmd: &str) -> Result<String> {
    let cmd = cmd.to_string();
    on(h, move || {
        let mut n = weft_kernel::nft::Nft::new()?;
        Ok(n.run_with_handles(&cmd)?)
    })
}

/// The kernel's own lookup: the element of `set` matching `key`, as nft prints it
/// (`get element`), or None when nothing matches.
fn element(h: &Host, table: &str, set: &str, key: &str) -> Option<String> {
    let out = nft(h, &format!("get element {table} {set} {{ {key} }}")).ok()?;
    let start = out.find("elements = {")? + "elements = {".len();
    let end = out[start..].find('}')? + start;
    Some(out[start..end].trim().to_string())
}

/// The elements of a set or map as nft prints them (one string per element).
fn elements(h: &Host, table: &str, set: &str, kind: &str) -> Vec<String> {
    let Ok(out) = nft(h, &format!("list {kind} {table} {set}")) else {
        return Vec::new();
    };
    let Some(start) = out.find("elements = {").map(|i| i + "elements = {".len()) else {
        return Vec::new();
    };
    let end = out[start..]
        .find('}')
        .map(|e| e + start)
        .unwrap_or(out.len());
    out[start..end]
        .split(',')
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|e| !e.is_empty())
        .collect()
}

fn number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The element of `allow_ports` an interval lookup would find for this key (nft 1.0.6's
/// `get element` cannot look up a single port in a concatenated interval map).
fn match_allow_ports(
    elems: &[String],
    mark: u32,
    ip: Ipv4Addr,
    proto: &str,
    port: u16,
) -> Option<String> {
    elems
        .iter()
        .find(|e| {
            let key = e.split(" counter").next().unwrap_or(e);
            let key = key.split(" : ").next().unwrap_or(key);
            let parts: Vec<&str> = key.split(" . ").map(str::trim).collect();
            let [m, a, p, r] = parts[..] else {
                return false;
            };
            let (lo, hi) = r.split_once('-').unwrap_or((r, r));
            number(m) == Some(mark)
                && a.parse::<Ipv4Addr>().ok() == Some(ip)
                && p == proto
                && lo.parse::<u16>().is_ok_and(|lo| lo <= port)
                && hi.parse::<u16>().is_ok_and(|hi| port <= hi)
        })
        .cloned()
}

/// The rule of `chain` whose text contains `needle`, with its handle.
fn rule(h: &Host, table: &str, chain: &str, needle: &str) -> Option<String> {
    let out = nft_handles(h, &format!("list chain {table} {chain}")).ok()?;
    out.lines()
        .map(str::trim)
        .find(|l| l.contains(needle))
        .map(|l| format!("{table} {chain}: {l}"))
}

/// The rule with this handle in `table chain`, as `nft -a` shows it.
fn rule_by_handle(h: &Host, table: &str, chain: &str, handle: u64) -> Option<String> {
    let out = nft_handles(h, &format!("list chain {table} {chain}")).ok()?;
    let tag = format!("# handle {handle}");
    out.lines()
        .map(str::trim)
        .find(|l| l.ends_with(&tag))
        .map(|l| l.to_string())
}

struct RouteInfo {
    text: String,
    dev: String,
    gateway: Option<IpAddr>,
}

/// The route the host would take to `ip` (longest prefix match over the main table).
fn route_to(h: &Host, ip: Ipv4Addr) -> Result<Option<RouteInfo>> {
    on(h, move || {
        runtime()?.block_on(async move {
            let n = Netlink::current()?;
            let routes = n.routes(false).await?;
            let links = n.links().await?;
            let best = routes
                .iter()
                .filter(|r| r.dst.contains(&IpAddr::V4(ip)))
                .max_by_key(|r| r.dst.prefix_len());
            Ok(best.map(|r| {
                let dev = r
                    .oif
                    .and_then(|i| links.iter().find(|l| l.index == i))
                    .map(|l| l.name.clone())
                    .unwrap_or_else(|| "?".into());
                let dst = if r.dst.prefix_len() == 0 {
                    "default".to_string()
                } else {
                    r.dst.to_string()
                };
                let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                RouteInfo {
                    text: format!("route {dst}{via} dev {dev}"),
                    dev,
                    gateway: r.gateway,
                }
            }))
        })
    })
}

/// (neighbour MAC of `gw` on `vtep`, FDB destination of that MAC).
fn vtep_entries(h: &Host, vtep: &str, gw: IpAddr) -> Result<(Option<String>, Option<IpAddr>)> {
    let vtep = vtep.to_string();
    on(h, move || {
        runtime()?.block_on(async move {
            let n = Netlink::current()?;
            let Some(l) = n.link_by_name(&vtep).await? else {
                return Ok((None, None));
            };
            let mac = n
                .neighbours(l.index)
                .await?
                .into_iter()
                .find(|x| x.ip == gw)
                .map(|x| x.mac);
            let dst = match mac {
                Some(m) => n
                    .fdb_entries(l.index)
                    .await?
                    .into_iter()
                    .find(|f| f.mac == m)
                    .map(|f| f.dst),
                None => None,
            };
            Ok((mac.map(|m| m.to_string()), dst))
        })
    })
}

fn containers_of(h: &Host) -> Vec<Ctr> {
    weft_cni::records::attachments(&h.cni_dir)
        .into_iter()
        .filter_map(|p: Plan| {
            let ip = p.addresses().into_iter().find_map(|a| match a {
                IpAddr::V4(v) => Some(v),
                _ => None,
            })?;
            Some(Ctr {
                name: p.container_id().to_string(),
                ip,
                app: p.app_id().map(str::to_string),
                netns: p.netns().to_string(),
                host_veth: p.host_veth().to_string(),
                ifname: p.ifname().to_string(),
                host: h.clone(),
            })
        })
        .collect()
}

fn policy_table(h: &Host) -> Option<String> {
    nft(h, "list table inet weft-policy").ok()
}

/// Is policy enforced on this host (the table's fingerprint says `enforce=true`)?
fn enforced(h: &Host) -> Option<bool> {
    let t = policy_table(h)?;
    Some(t.contains("enforce=true"))
}

fn split_port(s: &str) -> Result<(String, Option<u16>)> {
    match s.rsplit_once(':') {
        Some((a, p)) => {
            let port: u16 = p
                .parse()
                .map_err(|_| anyhow::anyhow!("destination {s:?}: {p:?} is not a port (1-65535)"))?;
            if port == 0 {
                bail!("destination {s:?}: port 0 is not a port");
            }
            Ok((a.to_string(), Some(port)))
        }
        None => Ok((s.to_string(), None)),
    }
}

/// Who the lab calls a container: its lab name (from the CNI container id `<lab>-<name>`).
fn lab_name_of(st: &State, id: &str) -> String {
    id.strip_prefix(&format!("{}-", st.layout.lab))
        .unwrap_or(id)
        .to_string()
}

struct World {
    hosts: Vec<Host>,
    lab: Option<State>,
}

impl World {
    fn containers(&self) -> Vec<Ctr> {
        let mut v: Vec<Ctr> = self.hosts.iter().flat_map(containers_of).collect();
        if let Some(st) = &self.lab {
            for c in &mut v {
                c.name = lab_name_of(st, &c.name);
                if c.app.is_none() {
                    c.app = st.layout.container(&c.name).map(|l| l.app.clone());
                }
            }
        }
        v
    }

    /// A container by lab name, app, IP or id (prefix).
    fn find(&self, what: &str) -> Option<Ctr> {
        let all = self.containers();
        if let Ok(ip) = what.parse::<Ipv4Addr>() {
            return all.into_iter().find(|c| c.ip == ip);
        }
        if let Some(c) = all.iter().find(|c| c.name == what) {
            return Some(c.clone());
        }
        if let Some(st) = &self.lab {
            if let Some(c) = st.layout.container(what) {
                return all.into_iter().find(|x| x.name == c.name);
            }
        }
        all.into_iter()
            .find(|c| c.name.starts_with(what) || c.app.as_deref() == Some(what))
    }

    /// The host holding the overlay subnet that contains `ip`.
    fn host_of_subnet(&self, ip: Ipv4Addr) -> Option<Host> {
        self.hosts
            .iter()
            .find(|h| {
                weft_cni::records::HostLease::read(&h.lease_file)
                    .is_ok_and(|l| l.subnet.contains(&ip))
            })
            .cloned()
    }
}

fn lab_world(st: State) -> World {
    let hosts = st
        .layout
        .cells
        .iter()
        .map(|c| {
            let dir = st.cell_dir(&c.name);
            Host {
                name: c.name.clone(),
                ns: Some(c.namespace.clone()),
                cni_dir: dir.join("cni"),
                lease_file: dir.join("lease.json"),
                mode: c.mode,
                underlay_ip: Some(c.underlay_ip),
            }
        })
        .collect();
    World {
        hosts,
        lab: Some(st),
    }
}

fn tag_of_mark(text: &str) -> Option<u32> {
    let v = text.rsplit(':').next()?.trim();
    let v = v.split_whitespace().next()?;
    match v.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

struct Ctx<'a> {
    world: &'a World,
    src: Ctr,
    dst_name: String,
    dst_ip: Ipv4Addr,
    dst: Option<Ctr>,
    protocol: String,
    port: Option<u16>,
    controller: Option<weft_api::Client>,
    controller_ns: Option<String>,
}

/// What the egress state says of a packet from `app` to `ip` outside the overlay: allowed by
/// a named rule, allowed by mode allow, or dropped by egress default deny.
pub fn egress_verdict(
    state: &weft_api::egress::EgressState,
    app: &str,
    ip: Ipv4Addr,
    protocol: &str,
    port: Option<u16>,
) -> (bool, String) {
    match weft_api::egress::allowing(
        &state.policies,
        &state.destinations,
        app,
        ip,
        protocol,
        port,
    ) {
        Some((d, i)) => {
            let r = &d.rules[i];
            (
                true,
                format!(
                    "egress rule {app} -> {} ({} {}{})",
                    d.name,
                    r.protocol.as_str(),
                    r.ips,
                    r.ports
                        .as_deref()
                        .map(|p| format!(" port {p}"))
                        .unwrap_or_default()
                ),
            )
        }
        None if state.mode == weft_api::egress::EgressMode::Allow => {
            (true, "egress mode allow: no rule needed".into())
        }
        None => (
            false,
            format!("egress default deny: no egress rule lets {app} reach {ip}"),
        ),
    }
}

fn step(n: u8, title: &str, host: Option<&Host>, objects: Vec<String>) -> Step {
    Step {
        step: n,
        title: title.into(),
        host: host.map(|h| h.name.clone()),
        objects,
        note: None,
        skipped: false,
    }
}

fn skipped(n: u8, title: &str, why: &str) -> Step {
    Step {
        step: n,
        title: title.into(),
        host: None,
        objects: Vec::new(),
        note: Some(why.into()),
        skipped: true,
    }
}

impl Ctx<'_> {
    fn app(&self, c: &Ctr) -> String {
        c.app.clone().unwrap_or_else(|| "(no app)".into())
    }

    /// The host holding the lease of the destination's subnet, from the controller.
    fn lease_holder(&self) -> Option<String> {
        let c = self.controller.clone()?;
        let ip = self.dst_ip;
        let fut = async move {
            let l = c.leases().await?;
            Ok::<_, anyhow::Error>(
                l.leases
                    .into_iter()
                    .find(|l| l.subnet.contains(&ip))
                    .map(|l| format!("host {} (underlay {})", l.host, l.underlay_ip)),
            )
        };
        match &self.controller_ns {
            Some(ns) => up::block_in(ns, move || Box::pin(fut)).ok().flatten(),
            None => runtime().ok()?.block_on(fut).ok().flatten(),
        }
    }

    /// The egress decision for the source app to the destination outside the overlay, from
    /// the controller's egress state: `(allowed, what decided)`; None if it does not answer.
    fn egress(&self) -> Option<(bool, String)> {
        let c = self.controller.clone()?;
        let fut = async move {
            let mode = c.egress_mode().await?.mode;
            let destinations = c.destinations().await?.destinations;
            let policies = c.egress_policies().await?.egress_policies;
            Ok::<_, anyhow::Error>(weft_api::egress::EgressState {
                mode,
                destinations,
                policies,
            })
        };
        let state = match &self.controller_ns {
            Some(ns) => up::block_in(ns, move || Box::pin(fut)).ok()?,
            None => runtime().ok()?.block_on(fut).ok()?,
        };
        Some(egress_verdict(
            &state,
            &self.app(&self.src),
            self.dst_ip,
            &self.protocol,
            self.port,
        ))
    }

    /// The controller's policies, if it answers.
    fn policies(&self) -> Option<Vec<weft_api::model::Policy>> {
        let c = self.controller.clone()?;
        let fut = async move { Ok::<_, anyhow::Error>(c.policies(None).await?.policies) };
        match &self.controller_ns {
            Some(ns) => up::block_in(ns, move || Box::pin(fut)).ok(),
            None => runtime().ok()?.block_on(fut).ok(),
        }
    }

    fn steps(&self) -> Result<(String, Vec<Step>, Decision)> {
        let src = &self.src;
        let sh = &src.host;
        let mut steps = Vec::new();
        let dst_desc = match &self.dst {
            Some(d) => format!("{} ({}, app {})", self.dst_ip, d.name, self.app(d)),
            None => format!("{} ({})", self.dst_ip, self.dst_name),
        };
        let port_txt = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        // 1
        let croute = {
            let ns = src.netns.clone();
            let dst_ip = self.dst_ip;
            let h = Host {
                ns: None,
                ..sh.clone()
            };
            let r = Netns::open(&ns)?
                .run(|| route_to(&h, dst_ip))??
                .map(|r| r.text);
            r.unwrap_or_else(|| "no route".into())
        };
        steps.push(step(
            1,
            &format!(
                "{} ({}, app {}) sends {} to {dst_desc}{port_txt}",
                src.name,
                src.ip,
                self.app(src),
                self.protocol
            ),
            Some(sh),
            vec![
                format!("netns {}", src.netns),
                format!("{} {}", src.ifname, src.ip),
                format!("{croute} (in the container)"),
            ],
        ));
        // 2
        steps.push(step(
            2,
            "the packet leaves the container through its veth",
            Some(sh),
            vec![format!(
                "veth {} (container) <-> {} (host {})",
                src.ifname, src.host_veth, sh.name
            )],
        ));
        // 3
        let mut src_mark = None;
        if sh.mode == Mode::Overlay {
            let mut objs = Vec::new();
            if let Some(r) = rule(sh, "inet weft-policy", "prerouting", "meta mark set") {
                objs.push(format!("rule {r}"));
            }
            match element(sh, "inet weft-policy", "tags", &src.ip.to_string()) {
                Some(e) => {
                    src_mark = tag_of_mark(&e);
                    objs.push(format!("element tags {{ {e} }}"));
                }
                None => objs.push(format!(
                    "no element for {} in map tags: the packet stays unmarked (mark 0)",
                    src.ip
                )),
            }
            let mut s = step(
                3,
                "the packet is marked with the source app's tag",
                Some(sh),
                objs,
            );
            s.note = Some(match src_mark {
                Some(m) => format!("mark {m:#06x} = tag {m} of app {}", self.app(src)),
                None => "no tag: the destination's policy will deny it".into(),
            });
            steps.push(s);
        } else {
            steps.push(skipped(
                3,
                "marking",
                "bridge mode: no overlay, no per-app mark",
            ));
        }
        // Where does the packet go from the source host?
        let route = route_to(sh, self.dst_ip)?;
        let rtext = route
            .as_ref()
            .map(|r| r.text.clone())
            .unwrap_or_else(|| "no route (the packet is dropped here)".into());
        let local = self.dst.as_ref().is_some_and(|d| d.host.name == sh.name);
        let via_vtep = route.as_ref().is_some_and(|r| r.dev == "weft.vtep");
        let (path, dst_host) = if local {
            ("same cell".to_string(), Some(sh.clone()))
        } else if via_vtep {
            (
                "across cells".to_string(),
                self.dst
                    .as_ref()
                    .map(|d| d.host.clone())
                    .or_else(|| self.world.host_of_subnet(self.dst_ip)),
            )
        } else {
            ("outside the overlay".to_string(), None)
        };
        let overlay_steps: [(u8, &str); 6] = [
            (4, "routed to the VTEP"),
            (
                5,
                "encapsulated: VXLAN to the destination cell's underlay IP",
            ),
            (6, "the underlay packet exits the cell"),
            (7, "it crosses the underlay"),
            (8, "it arrives at the destination cell"),
            (9, "decapsulated: the GBP field becomes the packet's mark"),
        ];
        let mut decision = Decision {
            known: true,
            allowed: true,
            by: String::new(),
        };
        match path.as_str() {
            "same cell" => {
                let title = match sh.mode {
                    Mode::Overlay => "routed on the same cell: no VTEP",
                    Mode::Bridge => "switched by the cell's bridge: no VTEP",
                };
                let mut s = step(4, title, Some(sh), vec![rtext]);
                s.note = Some("the destination is on this cell: steps 5-9 are not taken".into());
                steps.push(s);
                for (n, t) in &overlay_steps[1..] {
                    steps.push(skipped(*n, t, "same cell"));
                }
            }
            "outside the overlay" => {
                let mut objs = vec![rtext];
                let nat = if sh.mode == Mode::Overlay {
                    rule(sh, "ip weft-agent", "postrouting", "masquerade")
                } else {
                    nft(sh, "list tables")
                        .ok()
                        .and_then(|t| {
                            t.lines()
                                .map(|l| l.trim().trim_start_matches("table ").to_string())
                                .find(|l| l.starts_with("inet weft-"))
                        })
                        .and_then(|t| rule(sh, &t, "postrouting", "masquerade"))
                };
                if let Some(n) = &nat {
                    objs.push(format!("rule {n}"));
                }
                let mut s = step(
                    4,
                    "routed out of the cell (not an overlay destination)",
                    Some(sh),
                    objs,
                );
                s.note = Some(match (&nat, sh.underlay_ip) {
                    (Some(_), Some(u)) => format!("masqueraded: the destination sees {u}"),
                    (Some(_), None) => "masqueraded to the host's address".into(),
                    (None, _) => "no masquerade rule found".into(),
                });
                steps.push(s);
                for (n, t) in &overlay_steps[1..] {
                    steps.push(skipped(*n, t, "not an overlay destination"));
                }
                let egress = (sh.mode == Mode::Overlay).then(|| self.egress()).flatten();
                match egress {
                    Some((allowed, by)) => {
                        let mut s = step(
                            10,
                            "egress check (inet weft-egress, on the source cell)",
                            Some(sh),
                            vec![by.clone()],
                        );
                        s.note = Some(if allowed { "allowed" } else { "DROPPED" }.into());
                        steps.push(s);
                        decision.allowed = allowed;
                        decision.by = by;
                        if !allowed {
                            return Ok((path, steps, decision));
                        }
                    }
                    None => {
                        steps.push(skipped(
                            10,
                            "policy check",
                            "c2c policy applies between overlay addresses only",
                        ));
                        decision.by = "not c2c traffic: no policy applies".into();
                    }
                }
                steps.push(step(
                    11,
                    "leaves the cell towards its destination",
                    Some(sh),
                    vec![format!("{} -> {}", sh.name, dst_desc)],
                ));
                return Ok((path, steps, decision));
            }
            _ => {
                let gw = route.as_ref().and_then(|r| r.gateway);
                let mut objs = vec![rtext.clone()];
                steps.push(step(4, overlay_steps[0].1, Some(sh), objs.clone()));
                objs.clear();
                let (mac, under) = match gw {
                    Some(g) => vtep_entries(sh, "weft.vtep", g)?,
                    None => (None, None),
                };
                if let (Some(g), Some(m)) = (gw, &mac) {
                    objs.push(format!("neighbour {g} lladdr {m} dev weft.vtep PERMANENT"));
                } else {
                    objs.push("no neighbour entry for the remote VTEP".into());
                }
                match (&mac, under) {
                    (Some(m), Some(u)) => objs.push(format!("fdb {m} dst {u} dev weft.vtep")),
                    _ => objs.push("no FDB entry for the remote VTEP's MAC".into()),
                }
                if let Some(st) = &self.world.lab {
                    if let Some(o) = &st.layout.overlay {
                        objs.push(format!("weft.vtep: vxlan id {} dstport 4789 gbp", o.vni));
                    }
                }
                if let Some(id) = fastpath_filter(sh, &src.host_veth) {
                    objs.push(format!(
                        "fast path: weft_tx (BPF prog {id}, tc ingress of {}) encapsulates this \
                         connection's packets itself once conntrack holds it as established (TCP \
                         data, not SYN/FIN/RST): the same VXLAN-GBP packet, without the routing, \
                         nftables and weft.vtep above",
                        src.host_veth
                    ));
                }
                let mut s = step(5, overlay_steps[1].1, Some(sh), objs);
                s.note = src_mark.map(|m| format!("GBP group policy id {m:#06x} carries the tag"));
                steps.push(s);
                let uroute = match under {
                    Some(IpAddr::V4(u)) => route_to(sh, u)?.map(|r| r.text),
                    _ => None,
                };
                steps.push(step(
                    6,
                    overlay_steps[2].1,
                    Some(sh),
                    vec![format!(
                        "outer packet {} -> {} udp dport 4789; {}",
                        sh.underlay_ip
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "this host".into()),
                        under.map(|u| u.to_string()).unwrap_or_else(|| "?".into()),
                        uroute.unwrap_or_else(|| "no route to the remote underlay IP".into())
                    )],
                ));
                let underlay = match &self.world.lab {
                    Some(st) => format!(
                        "bridge {} in {} ({})",
                        st.layout.underlay.bridge,
                        st.layout.underlay.namespace,
                        st.layout.underlay.subnet
                    ),
                    None => "the underlay network".into(),
                };
                steps.push(step(7, overlay_steps[3].1, None, vec![underlay]));
                match &dst_host {
                    Some(dh) => {
                        let src_u = sh.underlay_ip.map(|u| u.to_string()).unwrap_or_default();
                        let mut objs = vec![format!(
                            "{} eth0 {}",
                            dh.name,
                            dh.underlay_ip.map(|u| u.to_string()).unwrap_or_default()
                        )];
                        let known = element(dh, "inet weft-policy", "cells", &src_u);
                        match &known {
                            Some(e) => objs.push(format!(
                                "element cells {{ {e} }}: VXLAN from a host holding a lease is accepted"
                            )),
                            None => {
                                if let Some(r) = rule(dh, "inet weft-policy", "input", "@cells") {
                                    objs.push(format!("rule {r}"));
                                }
                                objs.push(format!(
                                    "{src_u} is not in set cells: the VXLAN packet is dropped"
                                ));
                            }
                        }
                        // The inner source must lie in the sender's lease.
                        let bound = element(
                            dh,
                            "inet weft-policy",
                            "cell_subnets",
                            &format!("{src_u} . 0x{:08x}", u32::from(src.ip)),
                        );
                        match &bound {
                            Some(e) => objs.push(format!(
                                "element cell_subnets {{ {e} }}: the inner source {} lies in the sender's lease",
                                src.ip
                            )),
                            None if known.is_some() => objs.push(format!(
                                "no element of cell_subnets holds {src_u} . {}: the inner source is \
                                 not in the sender's lease, the VXLAN packet is dropped",
                                src.ip
                            )),
                            None => {}
                        }
                        steps.push(step(8, overlay_steps[4].1, Some(dh), objs));
                        if known.is_some() && bound.is_none() && policy_table(dh).is_some() {
                            decision = Decision {
                                known: true,
                                allowed: false,
                                by: format!(
                                    "{}: the inner source {} is not in the lease of {src_u} (rule in inet weft-policy input)",
                                    dh.name, src.ip
                                ),
                            };
                        }
                        if known.is_none() && policy_table(dh).is_some() {
                            decision = Decision {
                                known: true,
                                allowed: false,
                                by: format!(
                                    "{}: VXLAN from {src_u}, which holds no lease (rule in inet weft-policy input)",
                                    dh.name
                                ),
                            };
                        }
                        let mut objs = vec![format!("weft.vtep on {} decapsulates", dh.name)];
                        if let Some(id) = fastpath_filter(dh, "eth0") {
                            objs.push(format!(
                                "fast path: weft_rx (BPF prog {id}, tc ingress of eth0) \
                                 decapsulates established TCP data for a local container and \
                                 delivers it straight into its namespace; new connections go \
                                 through weft.vtep and step 10"
                            ));
                        }
                        let mut s = step(9, overlay_steps[5].1, Some(dh), objs);
                        s.note = src_mark.map(|m| format!("meta mark {m:#010x}"));
                        steps.push(s);
                    }
                    None => {
                        steps.push(skipped(
                            8,
                            overlay_steps[4].1,
                            "the destination host is not visible from here: run `weft trace` there",
                        ));
                        steps.push(skipped(9, overlay_steps[5].1, "on the destination host"));
                    }
                }
            }
        }
        // 10: policy on the destination host
        let dh = dst_host.clone();
        if decision.allowed {
            match (&dh, &self.dst) {
                (Some(dh), Some(d)) if dh.mode == Mode::Overlay => {
                    let mut objs = Vec::new();
                    let mark = src_mark.unwrap_or(0);
                    let key = match (self.protocol.as_str(), self.port) {
                        ("icmp", _) => format!("{mark:#010x} . {}", d.ip),
                        (p, Some(port)) => format!("{mark:#010x} . {} . {p} . {port}", d.ip),
                        (p, None) => format!("{mark:#010x} . {} . {p} . 0", d.ip),
                    };
                    let map = if self.protocol == "icmp" {
                        "allow_icmp"
                    } else {
                        "allow_ports"
                    };
                    let enforce = enforced(dh);
                    let found = match (self.protocol.as_str(), self.port) {
                        ("icmp", _) => element(dh, "inet weft-policy", map, &key),
                        (p, Some(port)) => match_allow_ports(
                            &elements(dh, "inet weft-policy", map, "map"),
                            mark,
                            d.ip,
                            p,
                            port,
                        ),
                        _ => None,
                    };
                    if let Some(r) = rule(dh, "inet weft-policy", "forward", &format!("@{map}")) {
                        objs.push(format!("rule {r}"));
                    }
                    match (&found, enforce) {
                        (_, None) => {
                            objs.push("no inet weft-policy table: nothing filters".into());
                            decision.by = format!("{}: no policy table", dh.name);
                        }
                        (Some(e), _) => {
                            objs.push(format!("element {map} {{ {e} }}"));
                            let named = self.policies().and_then(|ps| {
                                let proto = weft_api::model::Protocol::parse(&self.protocol)?;
                                weft_api::model::allowing(
                                    &ps,
                                    src.app.as_deref().unwrap_or(""),
                                    d.app.as_deref().unwrap_or(""),
                                    proto,
                                    self.port,
                                )
                                .map(|p| {
                                    let ports = p
                                        .destination
                                        .ports
                                        .map(|r| {
                                            if r.start == r.end {
                                                format!(" {}", r.start)
                                            } else {
                                                format!(" {}-{}", r.start, r.end)
                                            }
                                        })
                                        .unwrap_or_default();
                                    format!(
                                        "policy {} -> {} {}{ports}",
                                        p.source.id, p.destination.id, p.destination.protocol
                                    )
                                })
                            });
                            decision.by = match named {
                                Some(p) => format!("{p} (element {map} {{ {e} }} on {})", dh.name),
                                None => format!("element {map} {{ {e} }} on {}", dh.name),
                            };
                        }
                        (None, Some(false)) => {
                            objs.push(format!("no element matches {key}"));
                            objs.push(
                                "policy enforcement is off on this cell (lab setting): accepted"
                                    .into(),
                            );
                            decision.by = format!("{}: enforcement off", dh.name);
                        }
                        (None, Some(true)) => {
                            objs.push(format!("no element of {map} matches {{ {key} }}"));
                            let deny = rule(
                                dh,
                                "inet weft-policy",
                                "forward",
                                &format!("comment \"{}\"", weft_agent::policy::drops::DEFAULT_DENY),
                            );
                            if let Some(r) = &deny {
                                objs.push(format!("rule {r}"));
                            }
                            decision = Decision {
                                known: true,
                                allowed: false,
                                by: format!(
                                    "default deny on {}: no policy allows {} -> {} {}{}{}",
                                    dh.name,
                                    self.app(src),
                                    self.app(d),
                                    self.protocol,
                                    port_txt.replace(':', " "),
                                    deny.map(|r| format!(" ({r})")).unwrap_or_default()
                                ),
                            };
                        }
                    }
                    let mut s = step(
                        10,
                        "checked against policy: source tag . destination . protocol . port",
                        Some(dh),
                        objs,
                    );
                    s.note = Some(if decision.allowed {
                        "allowed".into()
                    } else {
                        "DENIED: dropped here".into()
                    });
                    steps.push(s);
                }
                (Some(dh), _) if dh.mode == Mode::Bridge => {
                    steps.push(skipped(10, "policy check", "bridge mode: no c2c policy"));
                    decision.by = "bridge mode: no policy".into();
                }
                _ => {
                    // A destination on a host we cannot see: it decides there. The
                    // controller says which host that is.
                    let holder = self.lease_holder();
                    steps.push(skipped(
                        10,
                        "checked against policy on the destination host",
                        &format!(
                            "on {}: run `weft trace` there to see its policy elements",
                            holder.as_deref().unwrap_or("the destination host")
                        ),
                    ));
                    decision = Decision {
                        known: false,
                        allowed: false,
                        by: format!(
                            "{} (not visible from here; `weft policy check {} <destination app> {}` shows what the controller allows)",
                            holder.as_deref().unwrap_or("the destination host"),
                            self.app(src),
                            self.port.map(|p| p.to_string()).unwrap_or_default()
                        ),
                    };
                }
            }
        } else {
            steps.push(skipped(10, "policy check", "dropped before (step 8)"));
        }
        // 11
        match (&dh, &self.dst) {
            (Some(dh), Some(d)) if decision.allowed => {
                let r = route_to(dh, d.ip)?
                    .map(|r| r.text)
                    .unwrap_or_else(|| "no route".into());
                steps.push(step(
                    11,
                    "delivered to the destination container's veth",
                    Some(dh),
                    vec![
                        r,
                        format!(
                            "veth {} (host {}) <-> {} (container {}, netns {})",
                            d.host_veth, dh.name, d.ifname, d.name, d.netns
                        ),
                    ],
                ));
            }
            _ if decision.known && !decision.allowed => {
                steps.push(skipped(11, "delivery", "not delivered: denied at step 10"));
            }
            _ => steps.push(skipped(
                11,
                "delivery",
                "on the destination host (not visible from here)",
            )),
        }
        Ok((path, steps, decision))
    }
}

/// The temporary table that sets `nftrace` on the probe's packets (before every other
/// chain: priority -400).
fn trace_table(name: &str, src: Ipv4Addr, dst: Ipv4Addr, proto: &str, port: Option<u16>) -> String {
    // Only the connection's first packet (a TCP SYN, an ICMP echo request): the path of one
    // packet, not of the whole exchange.
    let m = match (proto, port) {
        ("icmp", _) => " icmp type echo-request".to_string(),
        ("tcp", Some(port)) => format!(" tcp dport {port} tcp flags & (syn | ack) == syn"),
        (p, Some(port)) => format!(" {p} dport {port}"),
        (p, None) => format!(" meta l4proto {p}"),
    };
    format!(
        "table inet {name} {{\n  chain prerouting {{ type filter hook prerouting priority -400; policy accept;\n    ip saddr {src} ip daddr {dst}{m} meta nftrace set 1\n  }}\n}}\n"
    )
}

fn probe(ctx: &Ctx, hosts: &[Host]) -> Result<ProbeReport> {
    use weft_kernel::nftrace::{TraceListener, Verdict};
    let name = format!("weft-trace-{}", std::process::id());
    let table = trace_table(&name, ctx.src.ip, ctx.dst_ip, &ctx.protocol, ctx.port);
    struct Armed {
        host: Host,
        listener: TraceListener,
    }
    let mut armed: Vec<Armed> = Vec::new();
    let cleanup = |hs: &[Host]| {
        for h in hs {
            let _ = nft(h, &format!("delete table inet {name}"));
        }
    };
    let result = (|| -> Result<ProbeReport> {
        for h in hosts {
            nft(h, &table).with_context(|| format!("add the probe's trace table on {}", h.name))?;
            let listener = match &h.ns {
                Some(ns) => TraceListener::open_in(&weft_kernel::netns::Netns::open(
                    weft_kernel::netns::named_path(ns),
                )?)?,
                None => TraceListener::open()?,
            };
            armed.push(Armed {
                host: h.clone(),
                listener,
            });
        }
        let timeout = crate::lab::check::PROBE_TIMEOUT;
        let ns = ctx.src.netns.clone();
        let dst = ctx.dst_ip;
        let outcome = match (ctx.protocol.as_str(), ctx.port) {
            ("icmp", _) | (_, None) => in_netns(&ns, move || probe::ping_here(dst, timeout))?,
            (_, Some(port)) => in_netns(&ns, move || probe::tcp_here(dst, port, timeout))?,
        };
        let mut events = Vec::new();
        let mut dropped_by = None;
        for a in &mut armed {
            let evs = a.listener.recv(Duration::from_millis(300))?;
            for e in evs {
                if e.table == name {
                    continue;
                }
                let rule = e.rule_handle.and_then(|h| {
                    rule_by_handle(
                        &a.host,
                        &format!("{} {}", family_name(e.family), e.table),
                        &e.chain,
                        h,
                    )
                });
                let pe = ProbeEvent {
                    host: a.host.name.clone(),
                    packet: e.id,
                    table: format!("{} {}", family_name(e.family), e.table),
                    chain: e.chain.clone(),
                    kind: format!("{:?}", e.kind).to_lowercase(),
                    verdict: e.verdict.as_ref().map(|v| v.to_string()),
                    rule,
                    mark: e.mark,
                };
                if matches!(e.verdict, Some(Verdict::Drop)) && dropped_by.is_none() {
                    dropped_by = Some(pe.clone());
                }
                events.push(pe);
            }
        }
        Ok(ProbeReport {
            outcome,
            events,
            dropped_by,
        })
    })();
    cleanup(hosts);
    result
}

fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        7 => "bridge",
        10 => "ip6",
        5 => "netdev",
        _ => "?",
    }
}

pub fn trace(a: &TraceArgs) -> Result<Trace> {
    let (dst_s, port) = split_port(&a.dst)?;
    let protocol = match (&a.protocol, port) {
        (Some(p), _) => {
            if weft_api::model::Protocol::parse(p).is_none() {
                bail!("--protocol {p:?}: must be tcp, udp or icmp");
            }
            p.clone()
        }
        (None, Some(_)) => "tcp".into(),
        (None, None) => "icmp".into(),
    };
    if protocol != "icmp" && port.is_none() {
        bail!(
            "destination {:?}: {protocol} needs a port (DST:PORT)",
            a.dst
        );
    }
    let host_world = || World {
        hosts: vec![Host {
            name: "this host".into(),
            ns: None,
            cni_dir: a.data_dir.clone(),
            lease_file: a.lease_file.clone(),
            // A host with a lease runs overlay containers; without, bridge mode.
            mode: if a.lease_file.exists() {
                Mode::Overlay
            } else {
                Mode::Bridge
            },
            underlay_ip: None,
        }],
        lab: None,
    };
    // Without --lab: this host's containers; if the source is not one of them and exactly one
    // lab is up, that lab.
    let labs = crate::lab::state::labs(&a.state_dir);
    let world = match &a.lab {
        Some(lab) => lab_world(up::load(lab, &a.state_dir)?),
        None => {
            let w = host_world();
            match (w.find(&a.src), labs.as_slice()) {
                (None, [only]) => lab_world(up::load(only, &a.state_dir)?),
                _ => w,
            }
        }
    };
    let src = world.find(&a.src).with_context(|| {
        format!(
            "source {:?}: no such container{}",
            a.src,
            match (&world.lab, labs.len()) {
                (Some(st), _) => format!(" in lab {}", st.layout.lab),
                (None, 0) => format!(" on this host (weft-cni state in {})", a.data_dir.display()),
                (None, _) => format!(
                    " on this host (weft-cni state in {}); labs that are up: {} (--lab NAME)",
                    a.data_dir.display(),
                    labs.join(", ")
                ),
            }
        )
    })?;
    let dst = world.find(&dst_s);
    let dst_ip = match (&dst, dst_s.parse::<Ipv4Addr>(), &world.lab) {
        (Some(d), _, _) => d.ip,
        (None, Ok(ip), _) => ip,
        (None, Err(_), Some(st)) => st.layout.address_of(st, &dst_s).with_context(|| {
            format!(
                "destination {dst_s:?}: not a container, app, cell, \"internet\" or IP of lab {}",
                st.layout.lab
            )
        })?,
        (None, Err(_), None) => {
            bail!("destination {dst_s:?}: not a container of this host or an IPv4 address")
        }
    };
    let (controller, controller_ns) = match &world.lab {
        Some(st) => (
            up::client(st).ok(),
            Some(st.layout.underlay.namespace.clone()),
        ),
        None => match &a.controller {
            Some(u) => {
                let mut b = weft_api::Client::builder(u.clone());
                if let Some(t) = &a.token {
                    b = b.token(t.clone());
                }
                if let Some(ca) = &a.ca {
                    b = b.ca(ca.clone());
                }
                if let (Some(c), Some(k)) = (&a.cert, &a.key) {
                    b = b.identity(c.clone(), k.clone());
                }
                (b.build().ok(), None)
            }
            None => (None, None),
        },
    };
    let ctx = Ctx {
        world: &world,
        src,
        dst_name: dst_s.clone(),
        dst_ip,
        dst,
        protocol: protocol.clone(),
        port,
        controller,
        controller_ns,
    };
    let (path, steps, decision) = ctx.steps()?;
    let probe = if a.probe {
        let mut hosts = vec![ctx.src.host.clone()];
        if let Some(d) = &ctx.dst {
            if d.host.name != ctx.src.host.name {
                hosts.push(d.host.clone());
            }
        }
        Some(probe(&ctx, &hosts)?)
    } else {
        None
    };
    Ok(Trace {
        src: ctx.src.name.clone(),
        src_ip: ctx.src.ip,
        dst: ctx.dst.as_ref().map(|d| d.name.clone()).unwrap_or(dst_s),
        dst_ip,
        protocol,
        port,
        path,
        steps,
        decision,
        probe,
    })
}

pub fn print(t: &Trace) {
    let port = t.port.map(|p| format!(":{p}")).unwrap_or_default();
    println!(
        "trace {} ({}) -> {} ({}{port}) {}, {}",
        t.src, t.src_ip, t.dst, t.dst_ip, t.protocol, t.path
    );
    for s in &t.steps {
        let host = s
            .host
            .as_ref()
            .map(|h| format!(" [{h}]"))
            .unwrap_or_default();
        if s.skipped {
            println!(
                " {:>2}. {} -- skipped: {}",
                s.step,
                s.title,
                s.note.as_deref().unwrap_or("")
            );
            continue;
        }
        println!(" {:>2}. {}{host}", s.step, s.title);
        for o in &s.objects {
            println!("       {o}");
        }
        if let Some(n) = &s.note {
            println!("       => {n}");
        }
    }
    println!(
        "verdict: {} by {}",
        match (t.decision.known, t.decision.allowed) {
            (false, _) => "DECIDED ELSEWHERE",
            (true, true) => "ALLOWED",
            (true, false) => "DENIED",
        },
        t.decision.by
    );
    if let Some(p) = &t.probe {
        println!("probe: {}", p.outcome.text());
        // Each host's path once: a retransmitted SYN repeats the same events.
        let mut seen: Vec<String> = Vec::new();
        let mut shown = Vec::new();
        for e in &p.events {
            let k = format!(
                "{} {} {} {} {:?} {:?}",
                e.host, e.table, e.chain, e.kind, e.verdict, e.rule
            );
            if !seen.contains(&k) {
                seen.push(k);
                shown.push(e);
            }
        }
        println!(
            "  nftables trace of the probe's first packet ({} events), rule by rule:",
            p.events.len()
        );
        for e in shown {
            println!(
                "  [{}] {} {} {}{}{}",
                e.host,
                e.table,
                e.chain,
                e.kind,
                e.verdict
                    .as_ref()
                    .map(|v| format!(" -> {v}"))
                    .unwrap_or_default(),
                e.rule
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
        match &p.dropped_by {
            Some(d) => println!(
                "dropped by: [{}] {} {}: {}",
                d.host,
                d.table,
                d.chain,
                d.rule.as_deref().unwrap_or("the chain's policy")
            ),
            None if p.outcome.reached() => println!("delivered: no rule dropped it"),
            None if p
                .events
                .iter()
                .all(|e| e.host == t.steps[0].host.clone().unwrap_or_default())
                && !t.decision.known =>
            {
                println!("no nftables rule dropped it on this host: look on the destination host")
            }
            None => println!("no nftables rule dropped it (lost elsewhere: routing, no listener)"),
        }
    }
}

pub fn run(a: TraceArgs) -> Result<ExitCode> {
    let t = trace(&a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        print(&t);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {

    #[test]
    fn egress_verdict_names_the_rule() {
        use weft_api::egress::*;
        let mut state = EgressState {
            mode: EgressMode::Deny,
            destinations: vec![Destination {
                id: "web".into(),
                name: "web".into(),
                description: String::new(),
                rules: vec![DestinationRule {
                    protocol: EgressProtocol::Tcp,
                    ips: "203.0.113.0/24".into(),
                    ports: Some("80".into()),
                    description: String::new(),
                }],
            }],
            policies: vec![EgressPolicy::new("db", "web")],
        };
        let ip: std::net::Ipv4Addr = "203.0.113.2".parse().unwrap();
        let (ok, by) = super::egress_verdict(&state, "db", ip, "tcp", Some(80));
        assert!(ok);
        assert_eq!(by, "egress rule db -> web (tcp 203.0.113.0/24 port 80)");
        let (ok, by) = super::egress_verdict(&state, "db", ip, "tcp", Some(81));
        assert!(!ok && by.starts_with("egress default deny"), "{by}");
        state.mode = EgressMode::Allow;
        assert!(super::egress_verdict(&state, "db", ip, "tcp", Some(81)).0);
    }

    use super::*;

    #[test]
    fn allow_ports_lookup() {
        let e = vec![
            "0x00000002 . 10.255.0.1 . tcp . 8080 counter packets 2 bytes 120 : accept".to_string(),
            "0x00000003 . 10.255.0.1 . tcp . 8000-8100 : accept".to_string(),
        ];
        let ip = "10.255.0.1".parse().unwrap();
        assert_eq!(
            match_allow_ports(&e, 2, ip, "tcp", 8080),
            Some(e[0].clone())
        );
        assert_eq!(match_allow_ports(&e, 2, ip, "tcp", 9090), None);
        assert_eq!(match_allow_ports(&e, 2, ip, "udp", 8080), None);
        assert_eq!(
            match_allow_ports(&e, 3, ip, "tcp", 8050),
            Some(e[1].clone())
        );
        assert_eq!(match_allow_ports(&e, 3, ip, "tcp", 8101), None);
        assert_eq!(
            match_allow_ports(&e, 3, "10.255.0.2".parse().unwrap(), "tcp", 8050),
            None
        );
    }

    #[test]
    fn ports_and_marks() {
        assert_eq!(
            split_port("app-a:8080").unwrap(),
            ("app-a".into(), Some(8080))
        );
        assert_eq!(split_port("10.0.0.1").unwrap(), ("10.0.0.1".into(), None));
        assert!(split_port("a:x").is_err());
        assert!(split_port("a:0").is_err());
        assert_eq!(tag_of_mark("10.255.1.2 : 0x0000000b"), Some(11));
        assert_eq!(tag_of_mark("10.255.1.2 : 7"), Some(7));
    }

    #[test]
    fn trace_table_matches_only_the_probe() {
        let t = trace_table(
            "weft-trace-1",
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "tcp",
            Some(80),
        );
        assert!(t.contains(
            "ip saddr 10.0.0.1 ip daddr 10.0.0.2 tcp dport 80 tcp flags & (syn | ack) == syn meta nftrace set 1"
        ));
        assert!(t.contains("priority -400"));
    }
}
