//! The picture of a lab ([`Graph`]): as Graphviz DOT ([`dot`]) and as a self-contained SVG
//! ([`svg`]) laid out here, so `weft lab graph` needs no Graphviz. Pure functions, no I/O.
//!
//! What is drawn: the lab's name as the title; the underlay as a bus with its subnet, gateway
//! and the controller; the `internet` namespace as a cloud on the bus (or over the cells when
//! there is no underlay); each cell as a box hanging off the bus by its underlay IP, with its
//! mode, subnet, VTEP or bridge and a `masquerade` badge; its containers inside, one colour per
//! app (palette order = app-name order); and the app-level arrows: solid green when a policy
//! allows the traffic, dashed red (`✕ … denied`) when it is expected to be blocked.
//!
//! SVG layout: cells stand side by side under the bus, their containers stacked in a column.
//! An arrow leaves its source containers on the right, runs down a track in the cell's right
//! gutter, along a lane of its own under the cells, up a track in the destination cell's left
//! gutter and into the destination containers from the left, so arrows never hide under boxes,
//! also within one cell. Each edge of the model is one lane with one label: when an app has
//! several containers, the lane joins every source container to every destination container
//! (one arrowhead each). Edges naming an app without containers are listed under the legend.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

/// A lab, as drawn.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Graph {
    /// The lab's name, shown as the title.
    pub lab: String,
    /// None for a single-host lab without overlay.
    pub underlay: Option<Underlay>,
    /// The namespace standing in for the outside.
    pub internet: Option<Internet>,
    pub cells: Vec<Cell>,
    /// App-level arrows.
    pub edges: Vec<Edge>,
}

/// The network between the cells.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Underlay {
    pub namespace: String,
    pub subnet: String,
    pub gateway: String,
    /// E.g. `https://198.18.0.254:7070`.
    pub controller: Option<String>,
}

/// The `internet` namespace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Internet {
    pub namespace: String,
    pub ip: String,
}

/// A host of the lab.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    pub name: String,
    pub namespace: String,
    pub underlay_ip: Option<String>,
    /// `overlay` or `bridge`.
    pub mode: String,
    /// The cell's lease (overlay) or bridge subnet.
    pub subnet: Option<String>,
    /// E.g. `weft.vtep 10.255.1.0 vni 1` (overlay cells).
    pub vtep: Option<String>,
    /// E.g. `weft0 10.88.0.1/24` (bridge cells).
    pub bridge: Option<String>,
    pub masquerade: bool,
    pub containers: Vec<Container>,
}

/// A container of a cell.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Container {
    /// E.g. `app-a-0`.
    pub name: String,
    pub app: Option<String>,
    pub ip: Option<String>,
    pub tag: Option<u16>,
    /// The host-side veth's name.
    pub veth: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EdgeKind {
    Allowed,
    Denied,
}

/// Traffic from one app to another: allowed by a policy, or denied.
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub from_app: String,
    pub to_app: String,
    /// E.g. `tcp 8080`.
    pub label: String,
    pub kind: EdgeKind,
}

// ---------------------------------------------------------------------------------------------
// Shared by DOT and SVG
// ---------------------------------------------------------------------------------------------

const ALLOWED_COLOUR: &str = "#2e7d32";
const DENIED_COLOUR: &str = "#c62828";
const TEXT_COLOUR: &str = "#1e293b";
const MUTED_COLOUR: &str = "#64748b";

/// (fill, stroke) per app, given in app-name order; cycles past the end. No greens or reds:
/// those are the arrows'.
const PALETTE: [(&str, &str); 8] = [
    ("#dbeafe", "#1d4ed8"),
    ("#fef3c7", "#b45309"),
    ("#ede9fe", "#6d28d9"),
    ("#ccfbf1", "#0f766e"),
    ("#fce7f3", "#be185d"),
    ("#ffedd5", "#c2410c"),
    ("#e7e5e4", "#44403c"),
    ("#ecfccb", "#4d7c0f"),
];
/// (fill, stroke) of a container without an app.
const NO_APP_COLOURS: (&str, &str) = ("#f1f5f9", "#94a3b8");

type Colours<'a> = BTreeMap<&'a str, (&'static str, &'static str)>;

impl EdgeKind {
    fn word(&self) -> &'static str {
        match self {
            EdgeKind::Allowed => "allowed",
            EdgeKind::Denied => "denied",
        }
    }

    fn colour(&self) -> &'static str {
        match self {
            EdgeKind::Allowed => ALLOWED_COLOUR,
            EdgeKind::Denied => DENIED_COLOUR,
        }
    }
}

impl Edge {
    /// `app-b → app-a tcp 8080 allowed`: the tooltip.
    fn describe(&self) -> String {
        let mut s = format!("{} → {}", self.from_app, self.to_app);
        if !self.label.is_empty() {
            s = format!("{s} {}", self.label);
        }
        format!("{s} {}", self.kind.word())
    }

    /// The arrow's label: `app-b → app-a · tcp 8080`, denied ones `✕ … · denied`.
    fn caption(&self) -> String {
        let mut s = format!("{} → {}", self.from_app, self.to_app);
        if !self.label.is_empty() {
            s = format!("{s} · {}", self.label);
        }
        match self.kind {
            EdgeKind::Allowed => s,
            EdgeKind::Denied => format!("✕ {s} · denied"),
        }
    }
}

/// Every app with a container, in name order.
fn app_names(g: &Graph) -> BTreeSet<&str> {
    g.cells
        .iter()
        .flat_map(|c| &c.containers)
        .filter_map(|k| k.app.as_deref())
        .collect()
}

/// Each app's (fill, stroke): the palette, in the order of the names of the apps with
/// containers (an edge naming an app without containers does not shift the colours).
fn app_colours(g: &Graph) -> Colours<'_> {
    app_names(g)
        .into_iter()
        .enumerate()
        .map(|(i, app)| (app, PALETTE[i % PALETTE.len()]))
        .collect()
}

fn container_colours(k: &Container, colours: &Colours) -> (&'static str, &'static str) {
    k.app
        .as_deref()
        .and_then(|a| colours.get(a).copied())
        .unwrap_or(NO_APP_COLOURS)
}

/// Where each app's containers are: (cell index, container index), in drawing order.
fn instances(g: &Graph) -> BTreeMap<&str, Vec<(usize, usize)>> {
    let mut m: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for (ci, c) in g.cells.iter().enumerate() {
        for (ki, k) in c.containers.iter().enumerate() {
            if let Some(app) = &k.app {
                m.entry(app).or_default().push((ci, ki));
            }
        }
    }
    m
}

fn tag_text(tag: u16) -> String {
    format!("tag 0x{tag:04x} ({tag})")
}

/// What is said about a cell under its name: mode and subnet, VTEP or bridge, namespace.
fn cell_details(c: &Cell) -> Vec<String> {
    let mode = match (&c.subnet, c.mode.is_empty()) {
        (Some(s), false) => format!("{} · {s}", c.mode),
        (Some(s), true) => s.clone(),
        (None, _) => c.mode.clone(),
    };
    [Some(mode), c.vtep.clone(), c.bridge.clone()]
        .into_iter()
        .flatten()
        .chain((!c.namespace.is_empty()).then(|| format!("ns {}", c.namespace)))
        .filter(|s| !s.is_empty())
        .collect()
}

/// What is said about a container under its name: app, IP, tag, veth.
fn container_details(k: &Container) -> Vec<String> {
    vec![
        match &k.app {
            Some(a) => format!("app {a}"),
            None => "no app".into(),
        },
        k.ip.clone().unwrap_or_else(|| "no IP".into()),
    ]
    .into_iter()
    .chain(k.tag.map(tag_text))
    .chain(k.veth.as_ref().map(|v| format!("veth {v}")))
    .collect()
}

/// `underlay 198.18.0.0/24 · gw 198.18.0.254 · ns lab-u`.
fn underlay_caption(u: &Underlay) -> String {
    let mut s = "underlay".to_string();
    for (prefix, v) in [("", &u.subnet), ("gw ", &u.gateway), ("ns ", &u.namespace)] {
        if !v.is_empty() {
            s = format!("{s} · {prefix}{v}");
        }
    }
    s.replacen("underlay · ", "underlay ", 1)
}

// ---------------------------------------------------------------------------------------------
// DOT
// ---------------------------------------------------------------------------------------------

/// A DOT double-quoted string: `"`, `\` and line breaks escaped.
fn quote(s: &str) -> String {
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
fn label(lines: &[String]) -> String {
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

fn dot_underlay_and_internet(out: &mut String, g: &Graph) {
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

fn dot_cell(out: &mut String, ci: usize, c: &Cell, colours: &Colours) {
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

fn dot_cell_links(out: &mut String, g: &Graph) {
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

fn dot_edges(out: &mut String, g: &Graph) {
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

// ---------------------------------------------------------------------------------------------
// SVG: geometry
// ---------------------------------------------------------------------------------------------

const MARGIN: f64 = 28.0;
/// Between two cells.
const CELL_GAP: f64 = 44.0;
/// Inside a cell, around its header.
const CELL_PAD: f64 = 14.0;
/// Between two arrows' tracks in a gutter.
const TRACK: f64 = 9.0;
/// From a container to the first track beside it.
const GUTTER_PAD: f64 = 14.0;
/// Between two containers of a cell.
const CTR_GAP: f64 = 12.0;
/// Between two arrows' lanes under the cells.
const LANE: f64 = 28.0;
const MIN_CTR_W: f64 = 150.0;
const MIN_CELL_W: f64 = 190.0;
const BUS_H: f64 = 26.0;
/// From the bus to the top of the cells.
const LINK_H: f64 = 48.0;
const LEGEND_ROW: f64 = 24.0;
const NOTE_ROW: f64 = 18.0;
const BADGE: &str = "masquerade";

#[derive(Debug, Clone, Copy, Default)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn right(&self) -> f64 {
        self.x + self.w
    }
    fn bottom(&self) -> f64 {
        self.y + self.h
    }
    fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
}

/// A line of text, with an estimate of its width (no font metrics here: generous averages).
#[derive(Debug, Clone)]
struct Line {
    text: String,
    size: f64,
    bold: bool,
    fill: &'static str,
}

impl Line {
    fn new(text: impl Into<String>, size: f64) -> Self {
        Line {
            text: text.into(),
            size,
            bold: false,
            fill: TEXT_COLOUR,
        }
    }
    fn bold(mut self) -> Self {
        self.bold = true;
        self
    }
    fn fill(mut self, fill: &'static str) -> Self {
        self.fill = fill;
        self
    }
    fn width(&self) -> f64 {
        text_width(&self.text, self.size, self.bold)
    }
    fn height(&self) -> f64 {
        self.size + 4.0
    }
}

fn text_width(s: &str, size: f64, bold: bool) -> f64 {
    s.chars().count() as f64 * size * if bold { 0.6 } else { 0.56 }
}

fn lines_width(lines: &[Line]) -> f64 {
    lines.iter().map(Line::width).fold(0.0, f64::max)
}

fn lines_height(lines: &[Line]) -> f64 {
    lines.iter().map(Line::height).sum()
}

fn cell_header(c: &Cell) -> Vec<Line> {
    let mut v = vec![Line::new(&c.name, 15.0).bold()];
    v.extend(cell_details(c).into_iter().enumerate().map(|(i, s)| {
        let last = i > 0 && s.starts_with("ns ");
        if last {
            Line::new(s, 10.5).fill(MUTED_COLOUR)
        } else {
            Line::new(s, 12.0)
        }
    }));
    v
}

fn container_lines(k: &Container, stroke: &'static str) -> Vec<Line> {
    let mut v = vec![Line::new(&k.name, 13.0).bold()];
    for (i, s) in container_details(k).into_iter().enumerate() {
        v.push(match i {
            0 => Line::new(s, 11.0).fill(stroke),
            1 => Line::new(s, 12.0),
            _ => Line::new(s, 10.5).fill(MUTED_COLOUR),
        });
    }
    v
}

fn controller_lines(u: &Underlay) -> Option<Vec<Line>> {
    let url = u.controller.as_ref()?;
    Some(vec![
        Line::new("controller", 12.0).bold(),
        Line::new(url, 11.0),
    ])
}

fn internet_lines(i: &Internet) -> Vec<Line> {
    let mut v = vec![
        Line::new("internet", 13.0).bold().fill("#075985"),
        Line::new(&i.ip, 12.0),
    ];
    if !i.namespace.is_empty() {
        v.push(Line::new(format!("ns {}", i.namespace), 10.5).fill(MUTED_COLOUR));
    }
    v
}

/// An edge of the model that can be drawn: its source and destination containers, as
/// (cell, container) indices. Its index among the plans is its lane (0 nearest the cells).
struct Plan {
    edge: usize,
    src: Vec<(usize, usize)>,
    dst: Vec<(usize, usize)>,
}

impl Plan {
    fn src_cells(&self) -> BTreeSet<usize> {
        self.src.iter().map(|&(c, _)| c).collect()
    }
    fn dst_cells(&self) -> BTreeSet<usize> {
        self.dst.iter().map(|&(c, _)| c).collect()
    }
    /// How many cells apart its ends are.
    fn span(&self) -> usize {
        let all: Vec<usize> = self.src_cells().union(&self.dst_cells()).copied().collect();
        all.last().unwrap_or(&0) - all.first().unwrap_or(&0)
    }
}

/// The edges that can be drawn, short spans first (their lanes nearest the cells, fewer
/// crossings), and the indices of those that cannot (an app without containers).
fn plan_edges(g: &Graph) -> (Vec<Plan>, Vec<usize>) {
    let inst = instances(g);
    let mut plans = Vec::new();
    let mut unplaced = Vec::new();
    for (i, e) in g.edges.iter().enumerate() {
        match (inst.get(e.from_app.as_str()), inst.get(e.to_app.as_str())) {
            (Some(src), Some(dst)) => plans.push(Plan {
                edge: i,
                src: src.clone(),
                dst: dst.clone(),
            }),
            _ => unplaced.push(i),
        }
    }
    plans.sort_by_key(|p| (p.span(), p.edge));
    (plans, unplaced)
}

/// The tracks in each cell's gutters, as plan indices, nearest the containers first.
struct Gutters {
    left: Vec<Vec<usize>>,
    right: Vec<Vec<usize>>,
}

/// Orders the tracks so that a lane never crosses another track of the same gutter: in the
/// right (outgoing) gutter, arrows heading left are inside, shallow lanes first, then arrows
/// heading right, deep lanes first; the left (incoming) gutter mirrors it.
fn gutters(plans: &[Plan], cells: usize) -> Gutters {
    let mut gut = Gutters {
        left: vec![Vec::new(); cells],
        right: vec![Vec::new(); cells],
    };
    for c in 0..cells {
        let (leftward, rightward): (Vec<usize>, Vec<usize>) = (0..plans.len())
            .filter(|&p| plans[p].src_cells().contains(&c))
            .partition(|&p| plans[p].dst_cells().iter().all(|&d| d <= c));
        gut.right[c] = leftward
            .into_iter()
            .chain(rightward.into_iter().rev())
            .collect();
        let (from_right, from_left): (Vec<usize>, Vec<usize>) = (0..plans.len())
            .filter(|&p| plans[p].dst_cells().contains(&c))
            .partition(|&p| plans[p].src_cells().iter().all(|&s| s >= c));
        gut.left[c] = from_right
            .into_iter()
            .chain(from_left.into_iter().rev())
            .collect();
    }
    gut
}

fn gutter_width(tracks: usize) -> f64 {
    match tracks {
        0 => CELL_PAD,
        n => GUTTER_PAD + (n - 1) as f64 * TRACK + CELL_PAD,
    }
}

/// A cell as placed: its box, header lines, and its containers' boxes.
struct CellBox {
    rect: Rect,
    header: Vec<Line>,
    ctrs: Vec<Rect>,
}

/// A vertical track of an arrow in a cell's gutter, with the containers it meets (y of each).
struct Track {
    x: f64,
    /// x of the containers' side it meets.
    side_x: f64,
    ports: Vec<f64>,
    outgoing: bool,
}

/// An edge as placed: its tracks, its lane and where its label goes.
struct Route {
    edge: usize,
    lane_y: f64,
    tracks: Vec<Track>,
    label_x: f64,
}

impl Route {
    fn x_range(&self) -> (f64, f64) {
        let xs = self.tracks.iter().map(|t| t.x);
        (
            xs.clone().fold(f64::INFINITY, f64::min),
            xs.fold(f64::NEG_INFINITY, f64::max),
        )
    }
}

struct LegendItem {
    x: f64,
    row: usize,
    what: LegendWhat,
}

enum LegendWhat {
    Arrow(EdgeKind),
    App(String),
}

/// Everything placed.
struct Layout {
    width: f64,
    height: f64,
    controller: Option<(Rect, Vec<Line>)>,
    internet: Option<(Rect, Vec<Line>)>,
    bus: Option<Rect>,
    cells: Vec<CellBox>,
    routes: Vec<Route>,
    legend_y: f64,
    legend: Vec<LegendItem>,
    notes_y: f64,
    unplaced: Vec<usize>,
}

/// Sizes that do not depend on where things go.
struct Sizes {
    ctr_w: f64,
    ctr_h: f64,
    header_h: f64,
    body_h: f64,
    cell_w: Vec<f64>,
    /// Left gutter width of each cell.
    left_w: Vec<f64>,
}

fn measure(g: &Graph, gut: &Gutters, colours: &Colours) -> Sizes {
    let ctr_lines: Vec<Vec<Line>> = g
        .cells
        .iter()
        .flat_map(|c| &c.containers)
        .map(|k| container_lines(k, container_colours(k, colours).1))
        .collect();
    let ctr_w = ctr_lines
        .iter()
        .map(|l| lines_width(l) + 22.0)
        .fold(MIN_CTR_W, f64::max);
    let ctr_h = ctr_lines
        .iter()
        .map(|l| lines_height(l) + 14.0)
        .fold(56.0, f64::max);
    let headers: Vec<Vec<Line>> = g.cells.iter().map(cell_header).collect();
    let header_h = headers
        .iter()
        .map(|h| lines_height(h) + 18.0)
        .fold(0.0, f64::max);
    let most = g
        .cells
        .iter()
        .map(|c| c.containers.len())
        .max()
        .unwrap_or(0);
    let body_h = match (most, g.cells.len()) {
        (_, 0) => 0.0,
        (0, _) => 34.0,
        (n, _) => n as f64 * (ctr_h + CTR_GAP) + 2.0,
    };
    let mut cell_w = Vec::new();
    let mut left_w = Vec::new();
    for (i, c) in g.cells.iter().enumerate() {
        let badge = if c.masquerade {
            badge_width() + 12.0
        } else {
            0.0
        };
        let header_w = headers[i]
            .iter()
            .enumerate()
            .map(|(j, l)| l.width() + if j == 0 { badge } else { 0.0 })
            .fold(0.0, f64::max)
            + 2.0 * CELL_PAD;
        let (lw, rw) = (
            gutter_width(gut.left[i].len()),
            gutter_width(gut.right[i].len()),
        );
        let body_w = lw + ctr_w + rw;
        let w = body_w.max(header_w).max(MIN_CELL_W);
        cell_w.push(w);
        left_w.push(lw + (w - body_w) / 2.0);
    }
    Sizes {
        ctr_w,
        ctr_h,
        header_h,
        body_h,
        cell_w,
        left_w,
    }
}

fn badge_width() -> f64 {
    text_width(BADGE, 10.0, true) + 14.0
}

fn cloud_size(lines: &[Line]) -> (f64, f64) {
    (lines_width(lines) + 64.0, lines_height(lines) + 34.0)
}

fn layout(g: &Graph, colours: &Colours) -> Layout {
    let (plans, unplaced) = plan_edges(g);
    let gut = gutters(&plans, g.cells.len());
    let sizes = measure(g, &gut, colours);

    let row_w =
        sizes.cell_w.iter().sum::<f64>() + CELL_GAP * g.cells.len().saturating_sub(1) as f64;
    let controller = g.underlay.as_ref().and_then(controller_lines);
    let internet = g.internet.as_ref().map(internet_lines);
    let ctrl_w = controller.as_ref().map_or(0.0, |l| lines_width(l) + 24.0);
    let inet = internet.as_ref().map(|l| cloud_size(l));
    let top_w = ctrl_w + inet.map_or(0.0, |s| s.0) + 60.0;
    let bus_w = g
        .underlay
        .as_ref()
        .map_or(0.0, |u| text_width(&underlay_caption(u), 12.0, true) + 40.0);
    let title_w = text_width(&g.lab, 20.0, true).max(text_width(&subtitle(g), 12.0, false));
    let notes_w = unplaced
        .iter()
        .map(|&i| text_width(&note(&g.edges[i]), 12.0, false))
        .fold(0.0, f64::max);
    let width = [row_w, top_w, bus_w, title_w, notes_w, 320.0]
        .into_iter()
        .fold(0.0, f64::max)
        + 2.0 * MARGIN;

    // Top to bottom: title, controller and internet, bus, cells, lanes, legend, notes.
    let mut y = 76.0;
    let row_x = (width - row_w) / 2.0;
    let top_h = [
        controller.as_ref().map(|l| lines_height(l) + 16.0),
        inet.map(|s| s.1),
    ]
    .into_iter()
    .flatten()
    .fold(0.0, f64::max);
    let controller = controller.map(|l| {
        let r = Rect {
            x: MARGIN,
            y: y + top_h - lines_height(&l) - 16.0,
            w: ctrl_w,
            h: lines_height(&l) + 16.0,
        };
        (r, l)
    });
    let internet = internet.map(|l| {
        let (w, h) = cloud_size(&l);
        let x = if g.underlay.is_some() || g.cells.is_empty() {
            width - MARGIN - w
        } else {
            row_x + row_w / 2.0 - w / 2.0
        };
        let r = Rect {
            x,
            y: y + top_h - h,
            w,
            h,
        };
        (r, l)
    });
    if top_h > 0.0 {
        y += top_h + if g.underlay.is_some() { 28.0 } else { 44.0 };
    }
    let bus = g.underlay.as_ref().map(|_| {
        let r = Rect {
            x: MARGIN,
            y,
            w: width - 2.0 * MARGIN,
            h: BUS_H,
        };
        y += BUS_H + LINK_H;
        r
    });
    let cells = place_cells(g, &sizes, row_x, y);
    let cells_bottom = y + sizes.header_h + sizes.body_h;
    let lanes_top = cells_bottom + 34.0;
    let routes = place_routes(g, &plans, &gut, &cells, lanes_top, width);
    let mut y = match plans.len() {
        0 => cells_bottom + 36.0,
        n => lanes_top + (n - 1) as f64 * LANE + 40.0,
    };
    let legend = legend_items(colours, width);
    let legend_y = y;
    y += (legend.iter().map(|i| i.row).max().unwrap_or(0) + 1) as f64 * LEGEND_ROW;
    let notes_y = y + 6.0;
    if !unplaced.is_empty() {
        y = notes_y + (unplaced.len() + 1) as f64 * NOTE_ROW;
    }
    Layout {
        width,
        height: y + MARGIN - 8.0,
        controller,
        internet,
        bus,
        cells,
        routes,
        legend_y,
        legend,
        notes_y,
        unplaced,
    }
}

fn place_cells(g: &Graph, sizes: &Sizes, row_x: f64, top: f64) -> Vec<CellBox> {
    let mut x = row_x;
    let mut cells = Vec::new();
    for (i, c) in g.cells.iter().enumerate() {
        let rect = Rect {
            x,
            y: top,
            w: sizes.cell_w[i],
            h: sizes.header_h + sizes.body_h,
        };
        let ctrs = (0..c.containers.len())
            .map(|k| Rect {
                x: x + sizes.left_w[i],
                y: top + sizes.header_h + k as f64 * (sizes.ctr_h + CTR_GAP),
                w: sizes.ctr_w,
                h: sizes.ctr_h,
            })
            .collect();
        cells.push(CellBox {
            rect,
            header: cell_header(c),
            ctrs,
        });
        x += sizes.cell_w[i] + CELL_GAP;
    }
    cells
}

/// The y of each arrow's end on each container side: keyed by (cell, container, outgoing),
/// the plans meeting that side, the outermost track on top (fewer crossings).
fn ports(plans: &[Plan], gut: &Gutters) -> BTreeMap<(usize, usize, bool), Vec<usize>> {
    let mut m: BTreeMap<(usize, usize, bool), Vec<usize>> = BTreeMap::new();
    for (c, tracks) in gut.right.iter().enumerate() {
        for &p in tracks.iter().rev() {
            for &(_, k) in plans[p].src.iter().filter(|&&(pc, _)| pc == c) {
                m.entry((c, k, true)).or_default().push(p);
            }
        }
    }
    for (c, tracks) in gut.left.iter().enumerate() {
        for &p in tracks.iter().rev() {
            for &(_, k) in plans[p].dst.iter().filter(|&&(pc, _)| pc == c) {
                m.entry((c, k, false)).or_default().push(p);
            }
        }
    }
    m
}

fn place_routes(
    g: &Graph,
    plans: &[Plan],
    gut: &Gutters,
    cells: &[CellBox],
    lanes_top: f64,
    width: f64,
) -> Vec<Route> {
    let ports = ports(plans, gut);
    let port_y = |c: usize, k: usize, outgoing: bool, p: usize| -> f64 {
        let at = &ports[&(c, k, outgoing)];
        let j = at.iter().position(|&q| q == p).unwrap_or(0);
        let r = cells[c].ctrs[k];
        r.y + r.h * (j + 1) as f64 / (at.len() + 1) as f64
    };
    let track = |p: usize, c: usize, outgoing: bool| -> Track {
        let (list, ends) = if outgoing {
            (&gut.right[c], &plans[p].src)
        } else {
            (&gut.left[c], &plans[p].dst)
        };
        let i = list.iter().position(|&q| q == p).unwrap_or(0) as f64;
        let col = cells[c].ctrs[0];
        let (x, side_x) = if outgoing {
            (col.right() + GUTTER_PAD + i * TRACK, col.right())
        } else {
            (col.x - GUTTER_PAD - i * TRACK, col.x)
        };
        let ports = ends
            .iter()
            .filter(|&&(ec, _)| ec == c)
            .map(|&(_, k)| port_y(c, k, outgoing, p))
            .collect();
        Track {
            x,
            side_x,
            ports,
            outgoing,
        }
    };
    let mut routes: Vec<Route> = plans
        .iter()
        .enumerate()
        .map(|(p, plan)| {
            let tracks = plan
                .src_cells()
                .into_iter()
                .map(|c| track(p, c, true))
                .chain(plan.dst_cells().into_iter().map(|c| track(p, c, false)))
                .collect();
            Route {
                edge: plan.edge,
                lane_y: lanes_top + p as f64 * LANE,
                tracks,
                label_x: 0.0,
            }
        })
        .collect();
    for i in 0..routes.len() {
        let w = caption_line(&g.edges[routes[i].edge]).width();
        routes[i].label_x = label_x(&routes, i, w, width);
    }
    routes
}

/// Where a lane's label goes (its centre): over the lane if there is room between the tracks
/// crossing the label's band (its own and deeper lanes'), else as little beside the lane and
/// over as few tracks as can be.
fn label_x(routes: &[Route], i: usize, label_w: f64, width: f64) -> f64 {
    let (lo, hi) = routes[i].x_range();
    let mid = (lo + hi) / 2.0;
    let half = label_w / 2.0 + 4.0;
    let tracks: Vec<f64> = routes[i..]
        .iter()
        .flat_map(|r| r.tracks.iter().map(|t| t.x))
        .collect();
    let (min_c, max_c) = (MARGIN + half, (width - MARGIN - half).max(MARGIN + half));
    let candidates = tracks
        .iter()
        .flat_map(|&x| [x - half, x + half])
        .chain([mid, lo + half, hi - half])
        .map(|c| c.clamp(min_c, max_c));
    let cost = |c: f64| {
        let outside = (lo - (c - half)).max(0.0) + ((c + half) - hi).max(0.0);
        let crossed = tracks
            .iter()
            .filter(|&&x| (x - c).abs() < half - 0.5)
            .count();
        (outside + 60.0 * crossed as f64, (c - mid).abs())
    };
    candidates
        .map(|c| (cost(c), c))
        .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
        .map_or(mid, |(_, c)| c)
}

/// The legend's items: the two kinds of arrow and the apps' colours, on one row if they fit,
/// else the arrows on a row and the apps on rows of their own.
fn legend_items(colours: &Colours, width: f64) -> Vec<LegendItem> {
    let arrows = [EdgeKind::Allowed, EdgeKind::Denied].map(LegendWhat::Arrow);
    let apps: Vec<LegendWhat> = colours
        .keys()
        .map(|a| LegendWhat::App(a.to_string()))
        .collect();
    let all_w: f64 = arrows
        .iter()
        .chain(&apps)
        .map(|w| legend_item_width(w) + 22.0)
        .sum();
    let one_row = MARGIN + all_w - 22.0 <= width - MARGIN;
    let (mut x, mut row) = (MARGIN, 0);
    let mut items = Vec::new();
    for (i, what) in arrows.into_iter().chain(apps).enumerate() {
        let w = legend_item_width(&what);
        let new_row = (i == 2 && !one_row) || (x > MARGIN && x + w > width - MARGIN);
        if new_row {
            x = MARGIN;
            row += 1;
        }
        items.push(LegendItem { x, row, what });
        x += w + 22.0;
    }
    items
}

fn legend_text(what: &LegendWhat) -> String {
    match what {
        LegendWhat::Arrow(EdgeKind::Allowed) => "allowed by a policy".into(),
        LegendWhat::Arrow(EdgeKind::Denied) => "✕ denied (expected blocked)".into(),
        LegendWhat::App(a) => a.clone(),
    }
}

fn legend_item_width(what: &LegendWhat) -> f64 {
    let sample = match what {
        LegendWhat::Arrow(_) => 40.0,
        LegendWhat::App(_) => 18.0,
    };
    sample + 6.0 + text_width(&legend_text(what), 12.0, false)
}

/// `app-x → app-y tcp 80 allowed: no container of app-y`.
fn note(e: &Edge) -> String {
    format!("{}: no container of this app in the lab", e.describe())
}

fn subtitle(g: &Graph) -> String {
    let ctrs: usize = g.cells.iter().map(|c| c.containers.len()).sum();
    let allowed = g
        .edges
        .iter()
        .filter(|e| e.kind == EdgeKind::Allowed)
        .count();
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "weft lab · {} · {} · {} allowed · {} denied",
        plural(g.cells.len(), "cell"),
        plural(ctrs, "container"),
        allowed,
        g.edges.len() - allowed
    )
}

// ---------------------------------------------------------------------------------------------
// SVG: drawing
// ---------------------------------------------------------------------------------------------

/// Text for XML: the five special characters escaped, characters XML 1.0 forbids dropped.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' => o.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// Unique element ids made of the characters ids may hold.
#[derive(Default)]
struct Ids(BTreeSet<String>);

impl Ids {
    fn make(&mut self, prefix: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{prefix}-{clean}");
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

fn text(out: &mut String, x: f64, y: f64, line: &Line, anchor: &str) {
    let weight = if line.bold {
        " font-weight=\"bold\""
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{}\"{weight} fill=\"{}\" text-anchor=\"{anchor}\">{}</text>",
        line.size,
        line.fill,
        esc(&line.text)
    );
}

/// Lines one under the other from `top`, left-aligned at `x` (or centred on it).
fn text_block(out: &mut String, x: f64, top: f64, lines: &[Line], anchor: &str) {
    let mut y = top;
    for l in lines {
        y += l.size;
        text(out, x, y, l, anchor);
        y += 4.0;
    }
}

/// The lab as a self-contained SVG 1.1 picture (see the module's documentation).
pub fn svg(g: &Graph) -> String {
    let colours = app_colours(g);
    let l = layout(g, &colours);
    let mut out = String::new();
    let mut ids = Ids::default();
    svg_open(&mut out, g, &l);
    draw_controller_and_internet(&mut out, &l);
    draw_bus(&mut out, g, &l);
    for (i, c) in g.cells.iter().enumerate() {
        draw_cell(&mut out, c, &l.cells[i], &colours, &mut ids);
    }
    for r in &l.routes {
        draw_route(&mut out, &g.edges[r.edge], r, &mut ids);
    }
    for r in &l.routes {
        draw_edge_label(&mut out, &g.edges[r.edge], r);
    }
    draw_legend(&mut out, &l, &colours);
    draw_notes(&mut out, g, &l);
    out.push_str("</svg>\n");
    out
}

fn svg_open(out: &mut String, g: &Graph, l: &Layout) {
    let (w, h) = (l.width.ceil(), l.height.ceil());
    let _ = writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">"
    );
    let _ = writeln!(
        out,
        "<title>{}</title>",
        esc(&format!("weft lab {}", g.lab))
    );
    out.push_str("<style type=\"text/css\">g.edge:hover path { stroke-width: 3; } g.container:hover rect { stroke-width: 2.5; }</style>\n");
    out.push_str("<defs>\n");
    for kind in [EdgeKind::Allowed, EdgeKind::Denied] {
        let _ = writeln!(
            out,
            "<marker id=\"arrow-{}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"10\" markerHeight=\"9\" markerUnits=\"userSpaceOnUse\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{}\"/></marker>",
            kind.word(),
            kind.colour()
        );
    }
    out.push_str("</defs>\n");
    let _ = writeln!(
        out,
        "<rect class=\"background\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>"
    );
    let title = if g.lab.is_empty() { "weft lab" } else { &g.lab };
    text(out, MARGIN, 34.0, &Line::new(title, 20.0).bold(), "start");
    text(
        out,
        MARGIN,
        54.0,
        &Line::new(subtitle(g), 12.0).fill(MUTED_COLOUR),
        "start",
    );
}

fn draw_controller_and_internet(out: &mut String, l: &Layout) {
    if let (Some((r, lines)), Some(bus)) = (&l.controller, &l.bus) {
        out.push_str("<g class=\"controller\">\n");
        line(out, (r.cx(), r.bottom()), (r.cx(), bus.y), "#334155", 2.0);
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"6\" fill=\"#f1f5f9\" stroke=\"#334155\" stroke-width=\"1.5\"/>",
            r.x, r.y, r.w, r.h
        );
        text_block(out, r.cx(), r.y + 7.0, lines, "middle");
        out.push_str("</g>\n");
    }
    let Some((r, lines)) = &l.internet else {
        return;
    };
    out.push_str("<g class=\"internet\" id=\"internet\">\n");
    match &l.bus {
        Some(bus) => line(out, (r.cx(), r.bottom()), (r.cx(), bus.y), "#0369a1", 2.0),
        None => {
            for c in &l.cells {
                line(
                    out,
                    (r.cx(), r.bottom()),
                    (c.rect.cx(), c.rect.y),
                    "#0369a1",
                    2.0,
                );
            }
        }
    }
    cloud(out, r);
    text_block(out, r.cx(), r.y + 26.0, lines, "middle");
    out.push_str("</g>\n");
}

fn line(out: &mut String, a: (f64, f64), b: (f64, f64), stroke: &str, width: f64) {
    let _ = writeln!(
        out,
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>",
        a.0, a.1, b.0, b.1
    );
}

/// A cloud in `r`: a pill and three bumps, outlined together (strokes first, fills over them).
fn cloud(out: &mut String, r: &Rect) {
    let (x, y, w, h) = (r.x, r.y, r.w, r.h);
    let pill = format!(
        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"{:.1}\"",
        y + h * 0.3,
        h * 0.7,
        h * 0.3
    );
    let bumps = [(0.3, 0.36, 0.28), (0.56, 0.27, 0.27), (0.78, 0.42, 0.2)].map(|(fx, fy, fr)| {
        format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\"",
            x + w * fx,
            y + h * fy,
            h * fr
        )
    });
    for shape in std::iter::once(&pill).chain(&bumps) {
        let _ = writeln!(
            out,
            "{shape} fill=\"#0369a1\" stroke=\"#0369a1\" stroke-width=\"3\"/>"
        );
    }
    for shape in std::iter::once(&pill).chain(&bumps) {
        let _ = writeln!(out, "{shape} fill=\"#e0f2fe\"/>");
    }
}

fn draw_bus(out: &mut String, g: &Graph, l: &Layout) {
    let (Some(u), Some(bus)) = (&g.underlay, &l.bus) else {
        return;
    };
    out.push_str("<g class=\"underlay\" id=\"underlay\">\n");
    for (c, b) in g.cells.iter().zip(&l.cells) {
        let x = b.rect.cx();
        line(out, (x, bus.bottom()), (x, b.rect.y), "#334155", 2.0);
        if let Some(ip) = &c.underlay_ip {
            let t = Line::new(ip, 11.5).bold().fill("#334155");
            text(out, x + 7.0, bus.bottom() + LINK_H / 2.0 + 4.0, &t, "start");
        }
    }
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"5\" fill=\"#334155\"/>",
        bus.x, bus.y, bus.w, bus.h
    );
    let caption = Line::new(underlay_caption(u), 12.0).bold().fill("#ffffff");
    text(out, bus.x + 12.0, bus.y + 17.5, &caption, "start");
    out.push_str("</g>\n");
}

fn draw_cell(out: &mut String, c: &Cell, b: &CellBox, colours: &Colours, ids: &mut Ids) {
    let r = &b.rect;
    let _ = writeln!(
        out,
        "<g class=\"cell\" id=\"{}\">",
        ids.make("cell", &c.name)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"12\" fill=\"#f8fafc\" stroke=\"#64748b\" stroke-width=\"1.5\"/>",
        r.x, r.y, r.w, r.h
    );
    text_block(out, r.x + CELL_PAD, r.y + 10.0, &b.header, "start");
    let sep = b
        .ctrs
        .first()
        .map_or(r.y + lines_height(&b.header) + 16.0, |k| k.y - 8.0);
    line(out, (r.x, sep), (r.right(), sep), "#cbd5e1", 1.0);
    if c.masquerade {
        draw_badge(out, r.right() - CELL_PAD - badge_width(), r.y + 11.0);
    }
    if c.containers.is_empty() {
        let t = Line::new("no containers", 11.0).fill(MUTED_COLOUR);
        text(out, r.cx(), sep + 22.0, &t, "middle");
    }
    for (k, kr) in c.containers.iter().zip(&b.ctrs) {
        draw_container(out, k, kr, colours, ids);
    }
    out.push_str("</g>\n");
}

fn draw_badge(out: &mut String, x: f64, y: f64) {
    let w = badge_width();
    let _ = writeln!(
        out,
        "<g class=\"badge masquerade\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"17\" rx=\"8.5\" fill=\"#fff7ed\" stroke=\"#c2410c\"/>"
    );
    let t = Line::new(BADGE, 10.0).bold().fill("#c2410c");
    text(out, x + w / 2.0, y + 12.5, &t, "middle");
    out.push_str("</g>\n");
}

fn draw_container(out: &mut String, k: &Container, r: &Rect, colours: &Colours, ids: &mut Ids) {
    let (fill, stroke) = container_colours(k, colours);
    let _ = writeln!(
        out,
        "<g class=\"container\" id=\"{}\">",
        ids.make("ctr", &k.name)
    );
    let mut tip = vec![k.name.clone()];
    tip.extend(container_details(k));
    let _ = writeln!(out, "<title>{}</title>", esc(&tip.join(" · ")));
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"8\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"/>",
        r.x, r.y, r.w, r.h
    );
    text_block(
        out,
        r.x + 11.0,
        r.y + 6.0,
        &container_lines(k, stroke),
        "start",
    );
    out.push_str("</g>\n");
}

/// A path through `points`, its corners rounded with radius up to `radius`.
fn rounded_path(points: &[(f64, f64)], radius: f64) -> String {
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for &p in points {
        if pts.last() != Some(&p) {
            pts.push(p);
        }
    }
    let Some(&(x0, y0)) = pts.first() else {
        return String::new();
    };
    let mut d = format!("M{x0:.1},{y0:.1}");
    for w in pts.windows(3) {
        let (a, b, c) = (w[0], w[1], w[2]);
        let r = radius.min(dist(a, b) / 2.0).min(dist(b, c) / 2.0);
        let (p, q) = (towards(b, a, r), towards(b, c, r));
        let _ = write!(
            d,
            " L{:.1},{:.1} Q{:.1},{:.1} {:.1},{:.1}",
            p.0, p.1, b.0, b.1, q.0, q.1
        );
    }
    if let Some(&(x, y)) = pts.last().filter(|_| pts.len() > 1) {
        let _ = write!(d, " L{x:.1},{y:.1}");
    }
    d
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// The point `by` away from `from` towards `to`.
fn towards(from: (f64, f64), to: (f64, f64), by: f64) -> (f64, f64) {
    let d = dist(from, to);
    if d == 0.0 {
        return from;
    }
    (
        from.0 + (to.0 - from.0) * by / d,
        from.1 + (to.1 - from.1) * by / d,
    )
}

/// The segments of a route: (path data, whether it ends in an arrowhead). One container at
/// each end: a single rounded path; more: each track, each container's stub and the lane.
fn route_segments(r: &Route) -> Vec<(String, bool)> {
    let single = r.tracks.len() == 2 && r.tracks.iter().all(|t| t.ports.len() == 1);
    if single {
        let (s, d) = (&r.tracks[0], &r.tracks[1]);
        let pts = [
            (s.side_x, s.ports[0]),
            (s.x, s.ports[0]),
            (s.x, r.lane_y),
            (d.x, r.lane_y),
            (d.x, d.ports[0]),
            (d.side_x, d.ports[0]),
        ];
        return vec![(rounded_path(&pts, 8.0), true)];
    }
    let (lo, hi) = r.x_range();
    let mut segs = vec![(rounded_path(&[(lo, r.lane_y), (hi, r.lane_y)], 0.0), false)];
    for t in &r.tracks {
        let top = t.ports.iter().copied().fold(f64::INFINITY, f64::min);
        segs.push((rounded_path(&[(t.x, top), (t.x, r.lane_y)], 0.0), false));
        for &y in &t.ports {
            let stub = if t.outgoing {
                ([(t.side_x, y), (t.x, y)], false)
            } else {
                ([(t.x, y), (t.side_x, y)], true)
            };
            segs.push((rounded_path(&stub.0, 0.0), stub.1));
        }
    }
    segs
}

fn draw_route(out: &mut String, e: &Edge, r: &Route, ids: &mut Ids) {
    let kind = e.kind.word();
    let colour = e.kind.colour();
    let dash = match e.kind {
        EdgeKind::Allowed => "",
        EdgeKind::Denied => " stroke-dasharray=\"6 4\"",
    };
    let id = ids.make("edge", &format!("{}-{}-{}", e.from_app, e.to_app, e.label));
    let _ = writeln!(out, "<g class=\"edge {kind}\" id=\"{id}\">");
    let _ = writeln!(out, "<title>{}</title>", esc(&e.describe()));
    for (d, arrow) in route_segments(r) {
        let marker = if arrow {
            format!(" marker-end=\"url(#arrow-{kind})\"")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<path class=\"edge {kind}\" d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.7\"{dash}{marker}/>"
        );
    }
    for t in r.tracks.iter().filter(|t| t.outgoing) {
        for &y in &t.ports {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>",
                t.side_x
            );
        }
    }
    if r.tracks.len() > 2 || r.tracks.iter().any(|t| t.ports.len() > 1) {
        for t in &r.tracks {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
                t.x, r.lane_y
            );
        }
    }
    out.push_str("</g>\n");
}

fn caption_line(e: &Edge) -> Line {
    Line::new(e.caption(), 11.0).bold().fill(e.kind.colour())
}

/// An edge's label just above its lane, on a white ground, drawn after all the arrows so that
/// no track crosses it.
fn draw_edge_label(out: &mut String, e: &Edge, r: &Route) {
    let t = caption_line(e);
    let w = t.width() + 8.0;
    let _ = writeln!(out, "<g class=\"edge-label {}\">", e.kind.word());
    let _ = writeln!(out, "<title>{}</title>", esc(&e.describe()));
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"15\" rx=\"3\" fill=\"#ffffff\" fill-opacity=\"0.92\"/>",
        r.label_x - w / 2.0,
        r.lane_y - 17.0
    );
    text(out, r.label_x, r.lane_y - 5.5, &t, "middle");
    out.push_str("</g>\n");
}

fn draw_legend(out: &mut String, l: &Layout, colours: &Colours) {
    out.push_str("<g class=\"legend\">\n");
    for item in &l.legend {
        let y = l.legend_y + item.row as f64 * LEGEND_ROW;
        let x = item.x;
        let sample_w = match &item.what {
            LegendWhat::Arrow(kind) => {
                let dash = match kind {
                    EdgeKind::Allowed => "",
                    EdgeKind::Denied => " stroke-dasharray=\"6 4\"",
                };
                let _ = writeln!(
                    out,
                    "<path d=\"M{x:.1},{:.1} L{:.1},{:.1}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.7\"{dash} marker-end=\"url(#arrow-{})\"/>",
                    y + 8.0,
                    x + 40.0,
                    y + 8.0,
                    kind.colour(),
                    kind.word()
                );
                40.0
            }
            LegendWhat::App(app) => {
                let (fill, stroke) = colours.get(app.as_str()).copied().unwrap_or(NO_APP_COLOURS);
                let _ = writeln!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"18\" height=\"14\" rx=\"3\" fill=\"{fill}\" stroke=\"{stroke}\"/>",
                    y + 1.0
                );
                18.0
            }
        };
        let t = Line::new(legend_text(&item.what), 12.0).fill(TEXT_COLOUR);
        text(out, x + sample_w + 6.0, y + 12.0, &t, "start");
    }
    out.push_str("</g>\n");
}

fn draw_notes(out: &mut String, g: &Graph, l: &Layout) {
    if l.unplaced.is_empty() {
        return;
    }
    out.push_str("<g class=\"notes\">\n");
    let head = Line::new("Not drawn (an app without containers):", 12.0)
        .bold()
        .fill(MUTED_COLOUR);
    text(out, MARGIN, l.notes_y + 12.0, &head, "start");
    for (i, &e) in l.unplaced.iter().enumerate() {
        let edge = &g.edges[e];
        let _ = writeln!(out, "<g class=\"edge {} unplaced\">", edge.kind.word());
        let t = Line::new(note(edge), 12.0).fill(edge.kind.colour());
        text(
            out,
            MARGIN + 12.0,
            l.notes_y + 12.0 + (i + 1) as f64 * NOTE_ROW,
            &t,
            "start",
        );
        out.push_str("</g>\n");
    }
    out.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(name: &str, app: &str, ip: &str, tag: u16) -> Container {
        Container {
            name: name.into(),
            app: Some(app.into()),
            ip: Some(ip.into()),
            tag: Some(tag),
            veth: None,
        }
    }

    fn edge(from: &str, to: &str, label: &str, kind: EdgeKind) -> Edge {
        Edge {
            from_app: from.into(),
            to_app: to.into(),
            label: label.into(),
            kind,
        }
    }

    fn overlay_cell(n: usize, containers: Vec<Container>) -> Cell {
        Cell {
            name: format!("cell{n}"),
            namespace: format!("seed-000-cell{n}"),
            underlay_ip: Some(format!("198.18.0.{n}")),
            mode: "overlay".into(),
            subnet: Some(format!("10.255.{n}.0/24")),
            vtep: Some(format!("weft.vtep 10.255.{n}.0 vni 1")),
            bridge: None,
            masquerade: false,
            containers,
        }
    }

    fn underlay() -> Option<Underlay> {
        Some(Underlay {
            namespace: "seed-000-underlay".into(),
            subnet: "198.18.0.0/24".into(),
            gateway: "198.18.0.254".into(),
            controller: Some("https://198.18.0.254:7070".into()),
        })
    }

    fn internet() -> Option<Internet> {
        Some(Internet {
            namespace: "seed-000-internet".into(),
            ip: "203.0.113.2".into(),
        })
    }

    /// The seed-000 lab: two overlay cells, three apps, one allowed and two denied arrows.
    fn seed_000() -> Graph {
        Graph {
            lab: "seed-000".into(),
            underlay: underlay(),
            internet: internet(),
            cells: vec![
                overlay_cell(1, vec![ctr("app-b-0", "app-b", "10.255.1.2", 2)]),
                overlay_cell(
                    2,
                    vec![
                        ctr("app-a-0", "app-a", "10.255.2.2", 1),
                        ctr("app-c-0", "app-c", "10.255.2.3", 3),
                    ],
                ),
            ],
            edges: vec![
                edge("app-b", "app-a", "tcp 8080", EdgeKind::Allowed),
                edge("app-c", "app-a", "tcp 8080", EdgeKind::Denied),
                edge("app-b", "app-a", "tcp 9090", EdgeKind::Denied),
            ],
        }
    }

    /// One bridge host without underlay, masquerading, no arrows.
    fn bridge_host() -> Graph {
        Graph {
            lab: "bridge-host".into(),
            underlay: None,
            internet: internet(),
            cells: vec![Cell {
                name: "host".into(),
                namespace: "bridge-host-host".into(),
                underlay_ip: None,
                mode: "bridge".into(),
                subnet: Some("10.88.0.0/24".into()),
                vtep: None,
                bridge: Some("weft0 10.88.0.1/24".into()),
                masquerade: true,
                containers: vec![
                    Container {
                        veth: Some("weft3a9f01c2".into()),
                        ..ctr("web-0", "web", "10.88.0.2", 11)
                    },
                    Container {
                        veth: Some("weft77b0e4d1".into()),
                        ..ctr("db-0", "db", "10.88.0.3", 12)
                    },
                ],
            }],
            edges: vec![],
        }
    }

    /// Four cells of three containers, apps spread over cells, six arrows.
    fn four_cells() -> Graph {
        let apps = ["front", "api", "cache", "db", "batch", "auth"];
        let mut cells = Vec::new();
        for c in 1..=4usize {
            let containers = (0..3)
                .map(|k| {
                    let n = (c - 1) * 3 + k;
                    let app = apps[n % apps.len()];
                    ctr(
                        &format!("{app}-{}", n / apps.len()),
                        app,
                        &format!("10.255.{c}.{}", k + 2),
                        (n % apps.len() + 1) as u16,
                    )
                })
                .collect();
            cells.push(Cell {
                masquerade: c == 4,
                ..overlay_cell(c, containers)
            });
        }
        Graph {
            lab: "four-cells".into(),
            underlay: underlay(),
            internet: internet(),
            cells,
            edges: vec![
                edge("front", "api", "tcp 8080", EdgeKind::Allowed),
                edge("api", "db", "tcp 5432", EdgeKind::Allowed),
                edge("api", "cache", "tcp 6379", EdgeKind::Allowed),
                edge("front", "db", "tcp 5432", EdgeKind::Denied),
                edge("batch", "auth", "tcp 443", EdgeKind::Allowed),
                edge("auth", "front", "icmp", EdgeKind::Denied),
            ],
        }
    }

    /// Checks that `xml` is well-formed enough for our output: balanced tags, quoted unique
    /// attributes, known entities only, one root element.
    fn well_formed(xml: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        while let Some(i) = rest.find('<') {
            check_text(&rest[..i])?;
            if stack.is_empty() && !rest[..i].trim().is_empty() {
                return Err(format!("text outside the root: {:?}", &rest[..i]));
            }
            rest = &rest[i..];
            let skip = [("<?", "?>"), ("<!--", "-->"), ("<!", ">")]
                .into_iter()
                .find(|(open, _)| rest.starts_with(open));
            if let Some((_, close)) = skip {
                let end = rest.find(close).ok_or("unterminated declaration")?;
                rest = &rest[end + close.len()..];
                continue;
            }
            let end = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name.trim() => continue,
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            }
            let (body, closed) = match tag.strip_suffix('/') {
                Some(b) => (b, true),
                None => (tag, false),
            };
            let name = check_tag(body)?;
            if stack.is_empty() {
                roots += 1;
            }
            if !closed {
                stack.push(name);
            }
        }
        check_text(rest)?;
        match (stack.is_empty(), roots, rest.trim().is_empty()) {
            (true, 1, true) => Ok(()),
            _ => Err(format!("unclosed {stack:?} or {roots} roots")),
        }
    }

    /// A start tag's name, after checking its attributes.
    fn check_tag(body: &str) -> Result<String, String> {
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        let name_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c));
        if name.is_empty() || !name_ok {
            return Err(format!("bad tag name {name:?}"));
        }
        let mut attrs = &body[name_end..];
        let mut seen = BTreeSet::new();
        while !attrs.trim().is_empty() {
            let a = attrs.trim_start();
            let eq = a.find("=\"").ok_or(format!("bad attribute in <{body}>"))?;
            let key = &a[..eq];
            if key.is_empty() || key.contains(char::is_whitespace) || !seen.insert(key) {
                return Err(format!("bad or repeated attribute {key:?} in <{name}>"));
            }
            let v_end = a[eq + 2..].find('"').ok_or("unterminated attribute")?;
            let value = &a[eq + 2..eq + 2 + v_end];
            if value.contains('<') {
                return Err(format!("'<' in attribute {key}"));
            }
            check_text(value)?;
            attrs = &a[eq + 3 + v_end..];
            if !attrs.is_empty() && !attrs.starts_with(char::is_whitespace) {
                return Err(format!("no space after attribute {key}"));
            }
        }
        Ok(name.to_string())
    }

    /// Every `&` starts a known entity or a character reference.
    fn check_text(s: &str) -> Result<(), String> {
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            rest = &rest[i + 1..];
            let end = rest.find(';').ok_or("& without ;")?;
            let ent = &rest[..end];
            let known = ["amp", "lt", "gt", "quot", "apos"].contains(&ent)
                || (ent.starts_with('#') && ent.len() > 1);
            if !known {
                return Err(format!("unknown entity &{ent};"));
            }
        }
        Ok(())
    }

    /// Every name, IP and app of `g` appears in `text`.
    fn assert_mentions_everything(g: &Graph, text: &str) {
        for c in &g.cells {
            assert!(text.contains(&c.name), "cell {}", c.name);
            for k in &c.containers {
                assert!(text.contains(&k.name), "container {}", k.name);
                assert!(text.contains(k.ip.as_deref().unwrap()), "ip of {}", k.name);
            }
        }
        for e in &g.edges {
            assert!(text.contains(&e.from_app) && text.contains(&e.to_app));
            assert!(text.contains(&e.label), "label {}", e.label);
        }
    }

    /// DOT braces and quotes balance.
    fn dot_balanced(dot: &str) -> bool {
        let (mut depth, mut in_str, mut escaped) = (0i32, false, false);
        for ch in dot.chars() {
            match (in_str, escaped, ch) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => in_str = !in_str,
                (false, _, '{') => depth += 1,
                (false, _, '}') => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                return false;
            }
        }
        depth == 0 && !in_str
    }

    #[test]
    fn the_three_labs_draw_everything_well_formed() {
        for g in [seed_000(), bridge_host(), four_cells()] {
            let s = svg(&g);
            well_formed(&s).unwrap_or_else(|e| panic!("{}: {e}", g.lab));
            assert_mentions_everything(&g, &s);
            assert!(s.contains(&g.lab));
            let d = dot(&g);
            assert!(dot_balanced(&d), "{}: {d}", g.lab);
            assert_mentions_everything(&g, &d);
        }
    }

    #[test]
    fn seed_000_has_its_arrows_classes_and_tooltips() {
        let g = seed_000();
        let s = svg(&g);
        assert_eq!(s.matches("<g class=\"edge allowed\"").count(), 1);
        assert_eq!(s.matches("<g class=\"edge denied\"").count(), 2);
        assert!(s.contains("<path class=\"edge allowed\""));
        assert!(s.contains("<path class=\"edge denied\""));
        assert!(s.contains("<title>app-b → app-a tcp 8080 allowed</title>"));
        assert!(s.contains("<title>app-c → app-a tcp 8080 denied</title>"));
        assert!(s.contains("<title>app-b → app-a tcp 9090 denied</title>"));
        assert!(s.contains("✕ app-b → app-a · tcp 9090 · denied"));
        assert!(s.contains("marker-end=\"url(#arrow-allowed)\""));
        assert!(s.contains("<marker id=\"arrow-denied\""));
        for id in [
            "cell-cell1",
            "cell-cell2",
            "ctr-app-a-0",
            "ctr-app-b-0",
            "ctr-app-c-0",
        ] {
            assert!(s.contains(&format!("id=\"{id}\"")), "{id}");
        }
        for t in [
            "198.18.0.0/24",
            "198.18.0.254",
            "https://198.18.0.254:7070",
            "203.0.113.2",
        ] {
            assert!(s.contains(t), "{t}");
        }
        assert!(s.contains("198.18.0.1") && s.contains("198.18.0.2"));
        assert!(s.contains("weft.vtep 10.255.1.0 vni 1"));
        assert!(s.contains("tag 0x0002 (2)"));
        assert!(s.contains("font-family=\"sans-serif\"") && s.contains("viewBox=\"0 0 "));
        assert!(!s.contains("masquerade"));

        let d = dot(&g);
        assert_eq!(d.matches("style=dashed, color=\"#c62828\"").count(), 2);
        assert_eq!(d.matches("style=solid, color=\"#2e7d32\"").count(), 1);
        assert!(d.contains("✕ tcp 9090 denied"));
        assert!(d.contains("subgraph \"cluster_cell_1\""));
    }

    #[test]
    fn bridge_host_has_no_bus_and_a_badge() {
        let s = svg(&bridge_host());
        assert!(!s.contains("id=\"underlay\""));
        assert!(s.contains("id=\"internet\""));
        assert!(s.contains("class=\"badge masquerade\""));
        assert!(s.contains("weft0 10.88.0.1/24") && s.contains("veth weft3a9f01c2"));
        assert!(s.contains("tag 0x000b (11)"));
        assert!(!s.contains("<path class=\"edge"));
        let d = dot(&bridge_host());
        assert!(d.contains("\"internet\" -> \"cell_0\""));
        assert!(d.contains("masquerade"));
    }

    #[test]
    fn an_app_keeps_its_colour_across_cells() {
        let g = four_cells();
        let s = svg(&g);
        let fill_of = |id: &str| {
            let at = s.find(&format!("id=\"{id}\"")).unwrap();
            let rest = &s[at..];
            let f = rest.find("fill=\"").unwrap() + 6;
            rest[f..f + 7].to_string()
        };
        // front-0 is in cell1, front-1 in cell3.
        assert_eq!(fill_of("ctr-front-0"), fill_of("ctr-front-1"));
        assert_ne!(fill_of("ctr-front-0"), fill_of("ctr-api-0"));
        assert_eq!(s.matches("<g class=\"edge ").count(), 6);
    }

    #[test]
    fn every_destination_container_gets_an_arrowhead() {
        let g = four_cells();
        let inst = instances(&g);
        let heads: usize = g.edges.iter().map(|e| inst[e.to_app.as_str()].len()).sum();
        let s = svg(&g);
        assert_eq!(s.matches("marker-end=\"url(#arrow-").count(), heads + 2);
        let d = dot(&g);
        let arrows: usize = g
            .edges
            .iter()
            .map(|e| inst[e.from_app.as_str()].len() * inst[e.to_app.as_str()].len())
            .sum();
        assert_eq!(d.matches(", tooltip=").count(), arrows);
    }

    #[test]
    fn names_are_escaped() {
        let mut g = seed_000();
        g.lab = "lab <&> \"q\" 'a'".into();
        g.cells[0].name = "c<&>".into();
        g.cells[0].containers[0].name = "x<&>\"'y".into();
        g.cells[0].containers[0].app = Some("a<&>".into());
        g.edges
            .push(edge("a<&>", "app-a", "tcp \"1\"\n", EdgeKind::Allowed));
        let s = svg(&g);
        well_formed(&s).unwrap();
        assert!(s.contains("x&lt;&amp;&gt;&quot;&apos;y"));
        assert!(s.contains("lab &lt;&amp;&gt; &quot;q&quot; &apos;a&apos;"));
        assert!(!s.contains("c<&>") && !s.contains("x<&>"));
        assert!(s.contains("id=\"ctr-x_____y\""));
        let d = dot(&g);
        assert!(dot_balanced(&d));
        assert!(d.contains("x<&>\\\"'y") && d.contains("tcp \\\"1\\\"\\n"));
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(esc("a\u{1}b\tc"), "a\u{fffd}b c");
    }

    #[test]
    fn empty_graph_draws() {
        let g = Graph::default();
        let s = svg(&g);
        well_formed(&s).unwrap();
        assert!(s.contains("weft lab"));
        let d = dot(&g);
        assert!(d.starts_with("digraph") && dot_balanced(&d));
    }

    #[test]
    fn edges_of_apps_without_containers_are_listed() {
        let mut g = seed_000();
        g.edges
            .push(edge("ghost", "app-a", "udp 53", EdgeKind::Allowed));
        let s = svg(&g);
        well_formed(&s).unwrap();
        assert!(s.contains("ghost → app-a udp 53 allowed: no container"));
        assert!(dot(&g).contains("\"app ghost\" -> \"ctr_1_0\""));
    }

    #[test]
    fn same_cell_arrows_leave_the_box() {
        let mut g = bridge_host();
        g.edges
            .push(edge("web", "db", "tcp 5432", EdgeKind::Allowed));
        g.edges.push(edge("db", "db", "tcp 1", EdgeKind::Denied));
        let s = svg(&g);
        well_formed(&s).unwrap();
        let l = layout(&g, &app_colours(&g));
        let cell = l.cells[0].rect;
        for r in &l.routes {
            assert!(r.lane_y > cell.bottom());
            for t in &r.tracks {
                let ctr = l.cells[0].ctrs[0];
                assert!(t.x < ctr.x || t.x > ctr.right());
                assert!(t.x > cell.x && t.x < cell.right());
            }
        }
    }

    #[test]
    fn size_grows_with_content() {
        let small = layout(&seed_000(), &app_colours(&seed_000()));
        let big = layout(&four_cells(), &app_colours(&four_cells()));
        assert!(big.width > small.width && big.height > small.height);
        for l in [&small, &big] {
            let last = l.cells.last().unwrap().rect;
            assert!(last.right() <= l.width - MARGIN + 0.01);
            for w in l.cells.windows(2) {
                assert!(w[0].rect.right() < w[1].rect.x);
            }
        }
    }
}
