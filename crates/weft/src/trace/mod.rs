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

//!
//! The parts: [`world`] (which hosts, containers and leases exist: records and the
//! controller), [`kernel`] (what each host's kernel holds, through weft-kernel's typed
//! readers), [`steps`] (the hop-by-hop verdicts) and [`probe`] (the real packet).

mod kernel;
mod probe;
mod steps;
mod world;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

pub use probe::ProbeReport;
use steps::Ctx;
pub use steps::{Decision, Step};
use world::{Controller, World};

use crate::lab::state;

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
    #[arg(long, default_value = weft_api::records::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The agent's lease file on this host (without --lab)
    #[arg(long, default_value = weft_api::records::DEFAULT_LEASE_FILE)]
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
    let host_world = || World::this_host(a.data_dir.clone(), a.lease_file.clone());
    // Without --lab: this host's containers; if the source is not one of them and exactly one
    // lab is up, that lab.
    let labs = state::labs(&a.state_dir);
    let world = match &a.lab {
        Some(lab) => World::lab(state::load(lab, &a.state_dir)?),
        None => {
            let w = host_world();
            match (w.find(&a.src), labs.as_slice()) {
                (None, [only]) => World::lab(state::load(only, &a.state_dir)?),
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
    let controller = match (&world.lab, &a.controller) {
        (Some(_), _) => world.lab_controller(),
        (None, Some(u)) => {
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
            Controller {
                client: b.build().ok(),
                ns: None,
            }
        }
        (None, None) => Controller::none(),
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
    };
    let path = ctx.steps()?;
    let probe = if a.probe {
        let mut hosts = vec![ctx.src.host.clone()];
        if let Some(d) = &ctx.dst {
            if d.host.name != ctx.src.host.name {
                hosts.push(d.host.clone());
            }
        }
        Some(probe::probe(&ctx, &hosts)?)
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
        path: path.kind,
        steps: path.steps,
        decision: path.decision,
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
    use super::*;

    #[test]
    fn ports_are_checked() {
        assert_eq!(
            split_port("app-a:8080").unwrap(),
            ("app-a".into(), Some(8080))
        );
        assert_eq!(split_port("10.0.0.1").unwrap(), ("10.0.0.1".into(), None));
        assert!(split_port("a:x").is_err());
        assert!(split_port("a:0").is_err());
    }
}
