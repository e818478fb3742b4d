//! The lab as Graphviz DOT.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::model::*;

/// A DOT double-quoted string: `"`, `\` and line breaks escaped.
pub(super) fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for ch in s.chars() {
        match ch {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => {}
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A DOT label of several lines.
pub(super) fn label(lines: &[String]) -> String {
    let quoted: Vec<String> = lines.iter().map(|l| quote(l)).collect();
    let inner: Vec<&str> = quoted.iter().map(|q| &q[1..q.len() - 1]).collect();
    format!("\"{}\"", inner.join("\\n"))
}

/// The lab as Graphviz DOT: a cluster per cell with a node for the cell's own namespace and one
/// per container, the underlay and the internet as nodes, and an arrow from each container of
/// an edge's source app to each of its destination app (allowed: solid green; denied: dashed
/// red, `✕ … denied`). An app without containers is a dashed placeholder node.
pub fn dot(g: &Graph) -> String {
    let colours = app_colours(g);
    let mut out = String::new();
    let title = if g.lab.is_empty() { "weft lab" } else { &g.lab };
    let _ = writeln!(out, "digraph {} {{", quote(&format!("weft lab {}", g.lab)));
    let _ = writeln!(
        out,
        "  graph [label={}, labelloc=t, fontsize=20, fontname=\"sans-serif\", compound=true, rankdir=TB, nodesep=0.4, ranksep=0.6];",
        quote(title)
    );
    out.push_str("  node [fontname=\"sans-serif\", fontsize=11, shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\"];\n");
    out.push_str("  edge [fontname=\"sans-serif\", fontsize=10];\n");
    dot_underlay_and_internet(&mut out, g);
    for (ci, c) in g.cells.iter().enumerate() {
        dot_cell(&mut out, ci, c, &colours);
    }
    dot_cell_links(&mut out, g);
    dot_edges(&mut out, g);
    out.push_str("}\n");
    out
}

pub(super) fn dot_underlay_and_internet(out: &mut String, g: &Graph) {
    if let Some(u) = &g.underlay {
        let mut lines = vec![underlay_caption(u)];
        lines.extend(u.controller.iter().map(|c| format!("controller {c}")));
        let _ = writeln!(
            out,
            "  \"underlay\" [label={}, shape=box, style=filled, fillcolor=\"#334155\", fontcolor=\"#ffffff\"];",
            label(&lines)
        );
    }
    if let Some(i) = &g.internet {
        let mut lines = vec!["internet".to_string(), i.ip.clone()];
        if !i.namespace.is_empty() {
            lines.push(format!("ns {}", i.namespace));
        }
        let _ = writeln!(
            out,
            "  \"internet\" [label={}, shape=ellipse, style=filled, fillcolor=\"#e0f2fe\", color=\"#0369a1\"];",
            label(&lines)
        );
        if g.underlay.is_some() {
            out.push_str("  \"internet\" -> \"underlay\" [dir=none, color=\"#0369a1\"];\n");
        }
    }
}

pub(super) fn dot_cell(out: &mut String, ci: usize, c: &Cell, colours: &Colours) {
    let mut header = vec![c.name.clone()];
    header.extend(cell_details(c));
    if c.masquerade {
        header.push("masquerade".into());
    }
    let _ = writeln!(out, "  subgraph \"cluster_cell_{ci}\" {{");
    let _ = writeln!(
        out,
        "    label={}; fontsize=12; labeljust=l; style=\"rounded,filled\"; fillcolor=\"#f8fafc\"; color=\"#64748b\";",
        label(&header)
    );
    let mut host = vec![c.name.clone()];
    host.extend(c.underlay_ip.clone());
    let _ = writeln!(
        out,
        "    \"cell_{ci}\" [label={}, shape=box, style=filled, fillcolor=\"#e2e8f0\"];",
        label(&host)
    );
    for (ki, k) in c.containers.iter().enumerate() {
        let (fill, stroke) = container_colours(k, colours);
        let mut lines = vec![k.name.clone()];
        lines.extend(container_details(k));
        let _ = writeln!(
            out,
            "    \"ctr_{ci}_{ki}\" [label={}, fillcolor=\"{fill}\", color=\"{stroke}\"];",
            label(&lines)
        );
        let _ = writeln!(
            out,
            "    \"cell_{ci}\" -> \"ctr_{ci}_{ki}\" [dir=none, style=dotted, color=\"#94a3b8\"];"
        );
    }
    out.push_str("  }\n");
}

pub(super) fn dot_cell_links(out: &mut String, g: &Graph) {
    for (ci, c) in g.cells.iter().enumerate() {
        if g.underlay.is_some() {
            let ip = c.underlay_ip.as_deref().unwrap_or("");
            let _ = writeln!(
                out,
                "  \"underlay\" -> \"cell_{ci}\" [dir=none, label={}, color=\"#334155\"];",
                quote(ip)
            );
        } else if g.internet.is_some() {
            let _ = writeln!(
                out,
                "  \"internet\" -> \"cell_{ci}\" [dir=none, color=\"#0369a1\"];"
            );
        }
    }
}

pub(super) fn dot_edges(out: &mut String, g: &Graph) {
    let inst = instances(g);
    let node_ids = |app: &str| -> Vec<String> {
        match inst.get(app) {
            Some(v) => v.iter().map(|(c, k)| format!("ctr_{c}_{k}")).collect(),
            None => vec![format!("app {app}")],
        }
    };
    let mut placeholders = BTreeSet::new();
    for e in &g.edges {
        for app in [&e.from_app, &e.to_app] {
            if !inst.contains_key(app.as_str()) && placeholders.insert(app.as_str()) {
                let _ = writeln!(
                    out,
                    "  {} [label={}, style=dashed, color=\"#94a3b8\"];",
                    quote(&format!("app {app}")),
                    label(&[app.clone(), "(no containers)".into()])
                );
            }
        }
        let style = match e.kind {
            EdgeKind::Allowed => "solid",
            EdgeKind::Denied => "dashed",
        };
        let colour = e.kind.colour();
        let text = match e.kind {
            EdgeKind::Allowed => e.label.clone(),
            EdgeKind::Denied => format!("✕ {} denied", e.label).replace("  ", " "),
        };
        for from in node_ids(&e.from_app) {
            for to in node_ids(&e.to_app) {
                let _ = writeln!(
                    out,
                    "  {} -> {} [label={}, tooltip={}, style={style}, color=\"{colour}\", fontcolor=\"{colour}\", penwidth=1.6];",
                    quote(&from),
                    quote(&to),
                    quote(&text),
                    quote(&e.describe())
                );
            }
        }
    }
}
