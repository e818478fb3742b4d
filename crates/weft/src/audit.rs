//! `weft audit`: the audit log an agent writes (`weft agent --audit-log FILE`), for one host
//! (`--file`) or every overlay cell of a lab (`--lab NAME`, where `lab up` has each agent
//! write `<lab dir>/cells/<cell>/audit.log`). A table for people, `--json` for scripts.
//!
//! The files are read as untrusted: at most the last [`MAX_READ`] bytes of each, a line that
//! is not a record is skipped and counted (said on standard error), never fatal.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use weft_agent::audit::Record;

use crate::lab::state::{lab_dir, State, DEFAULT_STATE_DIR};
use crate::lab::topology::Mode;

/// The most read of one file (its end: the newest lines).
const MAX_READ: u64 = 16 << 20;
/// The audit log's file name in a lab cell's directory.
pub const LAB_FILE: &str = "audit.log";

#[derive(Args)]
pub struct AuditArgs {
    /// An agent's audit log (its --audit-log FILE)
    #[arg(long, conflicts_with = "lab", required_unless_present = "lab")]
    file: Option<PathBuf>,
    /// Every overlay cell of this lab
    #[arg(long)]
    lab: Option<String>,
    /// Where labs keep their records
    #[arg(long, env = "WEFT_LAB_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Only this verdict: deny or accept
    #[arg(long, value_parser = ["deny", "accept"])]
    verdict: Option<String>,
    /// Only records with this app at either end
    #[arg(long)]
    app: Option<String>,
    /// The newest N records only
    #[arg(long)]
    last: Option<usize>,
    /// Print JSON (an array of records, each with its host)
    #[arg(long)]
    json: bool,
}

/// A record and the host whose agent wrote it.
#[derive(Debug, Serialize)]
struct Hosted {
    host: String,
    #[serde(flatten)]
    record: Record,
}

/// The last `MAX_READ` bytes of `path`, from the first whole line.
fn tail(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(MAX_READ);
    f.seek(SeekFrom::Start(from))?;
    let mut b = Vec::new();
    f.take(MAX_READ).read_to_end(&mut b)?;
    let mut s = String::from_utf8_lossy(&b).into_owned();
    if from > 0 {
        // The first line is cut.
        s = s
            .split_once('\n')
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
    }
    Ok(s)
}

/// Pure: the records in `text`, and how many lines were not records.
fn parse(text: &str) -> (Vec<Record>, usize) {
    let mut bad = 0;
    let recs = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str::<Record>(l) {
            Ok(r) => Some(r),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (recs, bad)
}

fn end(e: &weft_agent::audit::Endpoint) -> String {
    let mut s = e.app.clone().unwrap_or_else(|| "?".into());
    if let Some(i) = &e.instance {
        s += &format!("/{}", &i[..i.len().min(12)]);
    }
    format!("{s} {}", e.ip)
}

pub fn run(a: AuditArgs) -> Result<std::process::ExitCode> {
    let files: Vec<(String, PathBuf)> = match (&a.file, &a.lab) {
        (Some(f), _) => vec![("-".to_string(), f.clone())],
        (None, Some(lab)) => {
            let st =
                State::load(&lab_dir(&a.state_dir, lab)).with_context(|| format!("lab {lab}"))?;
            st.topology
                .cells
                .iter()
                .filter(|c| c.mode == Mode::Overlay)
                .map(|c| (c.name.clone(), st.cell_dir(&c.name).join(LAB_FILE)))
                .collect()
        }
        (None, None) => bail!("give --file or --lab"),
    };
    let mut all = Vec::new();
    for (host, path) in files {
        if a.lab.is_some() && !path.exists() {
            continue; // a cell whose agent has written nothing yet
        }
        let (recs, bad) = parse(&tail(&path)?);
        if bad > 0 {
            eprintln!(
                "weft audit: {}: {bad} lines are not audit records, skipped",
                path.display()
            );
        }
        all.extend(recs.into_iter().map(|record| Hosted {
            host: host.clone(),
            record,
        }));
    }
    all.retain(|h| {
        let r = &h.record;
        a.verdict.as_ref().is_none_or(|v| *v == r.verdict)
            && a.app.as_ref().is_none_or(|app| {
                r.src.app.as_ref() == Some(app) || r.dst.app.as_ref() == Some(app)
            })
    });
    // RFC 3339 UTC with fixed digits: text order is time order.
    all.sort_by(|x, y| x.record.time.cmp(&y.record.time));
    if let Some(n) = a.last {
        all.drain(..all.len().saturating_sub(n));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|h| {
            let r = &h.record;
            let mut row = vec![
                r.time.clone(),
                r.verdict.clone(),
                end(&r.src),
                end(&r.dst),
                r.proto.clone(),
                r.port.map(|p| p.to_string()).unwrap_or_default(),
                r.rule.clone(),
            ];
            if a.lab.is_some() {
                row.insert(1, h.host.clone());
            }
            row
        })
        .collect();
    let mut head = vec![
        "TIME",
        "VERDICT",
        "SOURCE",
        "DESTINATION",
        "PROTO",
        "PORT",
        "RULE",
    ];
    if a.lab.is_some() {
        head.insert(1, "HOST");
    }
    crate::table::print("", &head, &rows);
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_skipped_and_counted() {
        let good = r#"{"time":"2026-12-02T16:00:00.000Z","src":{"app":"b","ip":"10.255.1.2"},"dst":{"app":"a","instance":"c1","ip":"10.255.2.3"},"proto":"tcp","port":8080,"verdict":"deny","rule":"default deny"}"#;
        let text = format!("{good}\nnot json\n{{\"time\":1}}\n\n{good}\n");
        let (recs, bad) = parse(&text);
        assert_eq!((recs.len(), bad), (2, 2));
        assert_eq!(recs[0].dst.instance.as_deref(), Some("c1"));
        assert_eq!(end(&recs[0].src), "b 10.255.1.2");
        assert_eq!(end(&recs[0].dst), "a/c1 10.255.2.3");
    }

    #[test]
    fn only_the_tail_of_a_big_file_is_read() {
        let dir = tempfile_dir();
        let p = dir.join("audit.log");
        let line = "x".repeat(1023) + "\n";
        let n = (MAX_READ / 1024) as usize + 10;
        std::fs::write(&p, line.repeat(n)).unwrap();
        let t = tail(&p).unwrap();
        assert!(t.len() as u64 <= MAX_READ);
        assert!(t.lines().all(|l| l.len() == 1023), "whole lines only");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-audit-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
