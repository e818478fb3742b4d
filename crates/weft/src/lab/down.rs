//! `weft lab down`: take a lab away again, also one whose `up` was killed halfway (the
//! namespace prefix names what is the lab's when the record is gone).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use weft_kernel::netns;

use super::state::{self, State};
use super::topology;
use super::up::Progress;

/// What `down` removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Removed {
    pub lab: String,
    pub processes: usize,
    pub namespaces: Vec<String>,
    pub state_dir: Option<PathBuf>,
}

/// Takes the lab down: stops its processes, deletes its namespaces (with every link, route
/// and nftables table in them) and its directory. Works on a half-built lab and on one
/// without a record (by the namespace prefix).
pub fn down(lab: &str, state_dir: &Path, p: &mut Progress) -> Result<Removed> {
    topology::validate_name("lab name", lab, 16)?;
    let dir = state::lab_dir(state_dir, lab);
    let layout = State::load(&dir).ok().map(|s| s.layout);
    let namespaces = state::existing_namespaces(lab, layout.as_ref());
    p.step(format!(
        "stopping the processes in {} namespaces of lab {lab}",
        namespaces.len()
    ));
    let processes = state::stop_processes(&namespaces, Duration::from_secs(3));
    p.step(format!("deleting namespaces: {}", namespaces.join(" ")));
    let mut errors = Vec::new();
    // Containers first, cells next, the underlay last (reverse of creation).
    for ns in namespaces.iter().rev() {
        if let Err(e) = netns::del_named(ns) {
            errors.push(format!("{ns}: {e}"));
        }
    }
    let had_dir = dir.exists();
    if had_dir {
        p.step(format!("removing {}", dir.display()));
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    if !errors.is_empty() {
        bail!("could not delete: {}", errors.join("; "));
    }
    Ok(Removed {
        lab: lab.to_string(),
        processes,
        namespaces,
        state_dir: had_dir.then_some(dir),
    })
}
