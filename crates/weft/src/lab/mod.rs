//! `weft lab`: the seeds' topologies built on one machine, in namespaces, from a TOML file
//! (see [`topology`] for the format and `examples/` for the seed labs).
//!
//! | command            | what it does |
//! |--------------------|--------------|
//! | `lab up FILE`      | builds the lab: underlay, internet, cells, controller, agents, containers (through weft-cni), servers, policies ([`up`]) |
//! | `lab check LAB`    | the seed's expected outcome, with real traffic ([`check`]) |
//! | `lab status [LAB]` | what is up: namespaces, processes, containers |
//! | `lab graph LAB`    | the picture, SVG or DOT ([`graph`]) |
//! | `lab down LAB`     | removes everything the lab made, also after a killed `up` |
//!
//! LAB is the lab's TOML file or its name.

pub mod check;
pub mod down;
pub mod graph;
pub mod picture;
pub mod state;
pub mod topology;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use state::State;
use topology::Topology;
use up::Progress;

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
    /// Where labs keep their records, logs and daemons' state
    #[arg(long, global = true, env = "WEFT_LAB_DIR", default_value = state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Print JSON (for scripts)
    #[arg(long, global = true)]
    json: bool,
}

/// A lab named by its file or its name; `--name` renames a file's lab (two copies side by side).
#[derive(Args, Clone)]
pub struct Which {
    /// The lab's TOML file, or the name of a lab that is up
    lab: String,
    /// Use this name instead of the one in the file
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build a lab from a TOML file (see examples/)
    Up {
        /// The lab's TOML file
        file: PathBuf,
        /// Use this name instead of the one in the file
        #[arg(long)]
        name: Option<String>,
        /// No progress lines
        #[arg(long, short)]
        quiet: bool,
    },
    /// Remove everything a lab made (also after a killed `up`)
    Down {
        #[command(flatten)]
        which: Which,
        #[arg(long, short)]
        quiet: bool,
    },
    /// What is up: namespaces, processes, containers
    Status {
        /// The lab's file or name (default: every lab that is up)
        lab: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Verify the lab's checks (the seed's expected outcome) with real traffic
    Check {
        #[command(flatten)]
        which: Which,
    },
    /// Draw the lab: underlay, cells, VTEPs, containers, policies (SVG or DOT)
    Graph {
        #[command(flatten)]
        which: Which,
        /// svg or dot (default: from the output file's extension, else svg)
        #[arg(long)]
        format: Option<String>,
        /// Write here instead of stdout
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// weft's built-in server (what `lab up` runs in containers)
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
}

impl Which {
    /// The lab's name: from the file (renamed by --name) or as given.
    pub fn lab_name(&self) -> Result<String> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let p = Path::new(&self.lab);
        if p.is_file() {
            return Ok(Topology::load(p)?.name);
        }
        if self.lab.ends_with(".toml") {
            bail!("{}: no such lab file", self.lab);
        }
        Ok(self.lab.clone())
    }
}

pub fn load_topology(file: &Path, name: Option<&str>) -> Result<Topology> {
    let mut t = Topology::load(file)?;
    if let Some(n) = name {
        t.name = n.to_string();
    }
    Ok(t)
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run(a: LabArgs) -> Result<ExitCode> {
    match a.command {
        LabCommand::Up { file, name, quiet } => {
            let t = load_topology(&file, name.as_deref())?;
            let mut p = Progress::for_topology(quiet || a.json, &t);
            let st = match up::up(&t, Some(file.clone()), &a.state_dir, &mut p) {
                Ok(st) => st,
                Err(e) => {
                    return Err(e.context(format!(
                        "lab {0} is half built: `weft lab down {0}` removes what was made",
                        t.name
                    )))
                }
            };
            if a.json {
                print_json(&status_of(&st))?;
            } else {
                print_status(&status_of(&st));
                println!(
                    "\nlab {} is up. Next: `weft lab check {}`, `weft trace SRC DST:PORT --lab {}`, `weft lab graph {} -o {}.svg`, `weft lab down {}`",
                    st.layout.lab,
                    file.display(),
                    st.layout.lab,
                    st.layout.lab,
                    st.layout.lab,
                    st.layout.lab
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { which, quiet } => {
            let lab = which.lab_name()?;
            let mut p = Progress::new(quiet || a.json, 3);
            let r = down::down(&lab, &a.state_dir, &mut p)?;
            if a.json {
                print_json(&r)?;
            } else if r.namespaces.is_empty() && r.state_dir.is_none() {
                println!("lab {lab} was not up: nothing to remove");
            } else {
                println!(
                    "lab {lab} is down: {} processes stopped, {} namespaces deleted",
                    r.processes,
                    r.namespaces.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { lab, name } => {
            let labs = match lab {
                Some(l) => vec![Which { lab: l, name }.lab_name()?],
                None => state::labs(&a.state_dir),
            };
            let mut all = Vec::new();
            for l in &labs {
                all.push(status_of(&state::load(l, &a.state_dir)?));
            }
            if a.json {
                print_json(&all)?;
            } else if all.is_empty() {
                println!("no lab is up (records in {})", a.state_dir.display());
            } else {
                for s in &all {
                    print_status(s);
                    println!();
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Check { which } => {
            let st = state::load(&which.lab_name()?, &a.state_dir)?;
            if st.topology.checks.is_empty() {
                bail!("lab {} has no [[checks]] in its file", st.layout.lab);
            }
            let results = check::run_all(&st)?;
            let ok = results.iter().all(|r| r.pass);
            if a.json {
                print_json(&results)?;
            } else {
                for r in &results {
                    println!("{}", r.line());
                }
                println!(
                    "{} of {} checks passed",
                    results.iter().filter(|r| r.pass).count(),
                    results.len()
                );
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LabCommand::Graph {
            which,
            format,
            output,
        } => {
            let st = state::load(&which.lab_name()?, &a.state_dir)?;
            let fmt = match (
                format.as_deref(),
                output.as_ref().and_then(|o| o.extension()),
            ) {
                (Some(f), _) => f.to_string(),
                (None, Some(e)) => e.to_string_lossy().to_string(),
                (None, None) => "svg".into(),
            };
            let g = picture::graph_of(&st)?;
            let text = match fmt.as_str() {
                "svg" => graph::svg(&g),
                "dot" | "gv" => graph::dot(&g),
                "json" => serde_json::to_string_pretty(&g)?,
                other => bail!("--format {other:?}: must be svg, dot or json"),
            };
            match output {
                Some(o) => {
                    std::fs::write(&o, text).with_context(|| format!("write {}", o.display()))?;
                    eprintln!("wrote {}", o.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Serve { name, ports } => {
            crate::reach::serve(&name, &ports)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LabStatus {
    pub lab: String,
    pub file: Option<PathBuf>,
    pub complete: bool,
    pub namespaces: Vec<NsStatus>,
    pub processes: Vec<ProcStatus>,
    pub cells: Vec<CellStatus>,
    pub containers: Vec<ContainerStatus>,
}

#[derive(Debug, Serialize)]
pub struct NsStatus {
    pub name: String,
    pub exists: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcStatus {
    pub what: String,
    pub namespace: String,
    pub pid: u32,
    pub running: bool,
    pub log: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct CellStatus {
    pub name: String,
    pub namespace: String,
    pub mode: String,
    pub underlay_ip: String,
    pub subnet: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub app: String,
    pub cell: String,
    pub namespace: String,
    pub ip: Option<String>,
    pub host_veth: Option<String>,
    pub tag: Option<u16>,
}

/// The tags the cell's agent published (app -> tag).
pub fn tags_of(st: &State, cell: &str) -> std::collections::BTreeMap<String, u16> {
    let f = weft_agent::agent::tags_file(&st.cell_dir(cell).join("lease.json"));
    std::fs::read(f)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// A cell's subnet: its lease (overlay) or its bridge subnet.
pub fn subnet_of(st: &State, cell: &topology::CellLayout) -> Option<String> {
    match cell.mode {
        topology::Mode::Overlay => {
            weft_api::records::HostLease::read(&st.cell_dir(&cell.name).join("lease.json"))
                .ok()
                .map(|l| l.subnet.to_string())
        }
        topology::Mode::Bridge => cell.bridge_subnet.map(|s| s.to_string()),
    }
}

pub fn status_of(st: &State) -> LabStatus {
    let l = &st.layout;
    LabStatus {
        lab: l.lab.clone(),
        file: st.file.clone(),
        complete: st.complete,
        namespaces: l
            .namespaces()
            .into_iter()
            .map(|n| NsStatus {
                exists: weft_kernel::netns::named_path(&n).exists(),
                name: n,
            })
            .collect(),
        processes: st
            .processes
            .iter()
            .map(|p| ProcStatus {
                what: p.what.clone(),
                namespace: p.namespace.clone(),
                pid: p.pid,
                running: state::alive(p.pid),
                log: p.log.clone(),
            })
            .collect(),
        cells: l
            .cells
            .iter()
            .map(|c| CellStatus {
                name: c.name.clone(),
                namespace: c.namespace.clone(),
                mode: c.mode.as_str().into(),
                underlay_ip: c.underlay_ip.to_string(),
                subnet: subnet_of(st, c),
            })
            .collect(),
        containers: l
            .containers
            .iter()
            .map(|c| {
                let s = st.container(&c.name);
                ContainerStatus {
                    name: c.name.clone(),
                    app: c.app.clone(),
                    cell: c.cell.clone(),
                    namespace: c.namespace.clone(),
                    ip: s.and_then(|s| s.ip).map(|i| i.to_string()),
                    host_veth: s.and_then(|s| s.host_veth.clone()),
                    tag: tags_of(st, &c.cell).get(&c.app).copied(),
                }
            })
            .collect(),
    }
}

fn table(head: &[&str], rows: Vec<Vec<String>>) {
    crate::table::print("  ", head, &rows);
}

pub fn print_status(s: &LabStatus) {
    let present = s.namespaces.iter().filter(|n| n.exists).count();
    println!(
        "lab {}{}: {}, {present}/{} namespaces",
        s.lab,
        s.file
            .as_ref()
            .map(|f| format!(" ({})", f.display()))
            .unwrap_or_default(),
        if s.complete {
            "up"
        } else {
            "INCOMPLETE (up did not finish)"
        },
        s.namespaces.len()
    );
    table(
        &["CELL", "MODE", "UNDERLAY IP", "SUBNET", "NAMESPACE"],
        s.cells
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.mode.clone(),
                    c.underlay_ip.clone(),
                    c.subnet.clone().unwrap_or_else(|| "-".into()),
                    c.namespace.clone(),
                ]
            })
            .collect(),
    );
    if !s.containers.is_empty() {
        println!();
        table(
            &[
                "CONTAINER",
                "APP",
                "TAG",
                "CELL",
                "IP",
                "HOST VETH",
                "NAMESPACE",
            ],
            s.containers
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.app.clone(),
                        c.tag.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                        c.cell.clone(),
                        c.ip.clone().unwrap_or_else(|| "-".into()),
                        c.host_veth.clone().unwrap_or_else(|| "-".into()),
                        c.namespace.clone(),
                    ]
                })
                .collect(),
        );
    }
    if !s.processes.is_empty() {
        println!();
        table(
            &["PROCESS", "PID", "STATE", "NAMESPACE", "LOG"],
            s.processes
                .iter()
                .map(|p| {
                    vec![
                        p.what.clone(),
                        p.pid.to_string(),
                        if p.running { "running" } else { "EXITED" }.into(),
                        p.namespace.clone(),
                        p.log.display().to_string(),
                    ]
                })
                .collect(),
        );
    }
}
