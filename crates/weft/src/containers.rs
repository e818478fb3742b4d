//! `weft containers`: this host's containers as weft-cni recorded them — the thing seed 000
//! promises ("you'll learn how to view an app's networking namespace one day").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use weft_api::records::Plan;

#[derive(Args)]
pub struct ContainersArgs {
    /// weft-cni's state directory (dataDir)
    #[arg(long, default_value = weft_api::records::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The agent's lease file (its directory holds the app tags the agent published)
    #[arg(long, default_value = weft_api::records::DEFAULT_LEASE_FILE)]
    lease_file: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    container_id: String,
    network: String,
    mode: &'static str,
    netns: String,
    ifname: String,
    host_ifname: String,
    ips: Vec<String>,
    app: Option<String>,
    tag: Option<u16>,
}

pub fn run(a: ContainersArgs) -> Result<ExitCode> {
    let tags: BTreeMap<String, u16> = std::fs::read(weft_agent::agent::tags_file(&a.lease_file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let rows: Vec<Row> = weft_api::records::attachments(&a.data_dir)
        .iter()
        .map(|p| Row {
            container_id: p.container_id().to_string(),
            network: p.network().to_string(),
            mode: match p {
                Plan::Bridge(_) => "bridge",
                Plan::Overlay(_) => "overlay",
            },
            netns: p.netns().to_string(),
            ifname: p.ifname().to_string(),
            host_ifname: p.host_veth().to_string(),
            ips: p.addresses().iter().map(|i| i.to_string()).collect(),
            app: p.app_id().map(str::to_string),
            tag: p.app_id().and_then(|id| tags.get(id).copied()),
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                short(&r.container_id),
                r.network.clone(),
                r.mode.to_string(),
                r.netns.clone(),
                format!("{} <-> {}", r.ifname, r.host_ifname),
                r.ips.join(","),
                r.app.clone().unwrap_or_else(|| "-".into()),
                r.tag.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = [
        "CONTAINER",
        "NETWORK",
        "MODE",
        "NETNS",
        "IF <-> HOST IF",
        "IP",
        "APP",
        "TAG",
    ];
    crate::table::print("", &head, &table);
    Ok(ExitCode::SUCCESS)
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}
