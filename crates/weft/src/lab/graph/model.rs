//! The graph model: what a lab picture holds (cells, containers, underlay, internet, the
//! app-level edges), and what DOT and SVG say alike about it (colours, captions, details).

use std::collections::{BTreeMap, BTreeSet};

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

pub(super) const ALLOWED_COLOUR: &str = "#2e7d32";
pub(super) const DENIED_COLOUR: &str = "#c62828";
pub(super) const TEXT_COLOUR: &str = "#1e293b";
pub(super) const MUTED_COLOUR: &str = "#64748b";

/// (fill, stroke) per app, given in app-name order; cycles past the end. No greens or reds:
/// those are the arrows'.
pub(super) const PALETTE: [(&str, &str); 8] = [
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
pub(super) const NO_APP_COLOURS: (&str, &str) = ("#f1f5f9", "#94a3b8");

pub(super) type Colours<'a> = BTreeMap<&'a str, (&'static str, &'static str)>;

impl EdgeKind {
    pub(super) fn word(&self) -> &'static str {
        match self {
            EdgeKind::Allowed => "allowed",
            EdgeKind::Denied => "denied",
        }
    }

    pub(super) fn colour(&self) -> &'static str {
        match self {
            EdgeKind::Allowed => ALLOWED_COLOUR,
            EdgeKind::Denied => DENIED_COLOUR,
        }
    }
}

impl Edge {
    /// `app-b → app-a tcp 8080 allowed`: the tooltip.
    pub(super) fn describe(&self) -> String {
        let mut s = format!("{} → {}", self.from_app, self.to_app);
        if !self.label.is_empty() {
            s = format!("{s} {}", self.label);
        }
        format!("{s} {}", self.kind.word())
    }

    /// The arrow's label: `app-b → app-a · tcp 8080`, denied ones `✕ … · denied`.
    pub(super) fn caption(&self) -> String {
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
pub(super) fn app_names(g: &Graph) -> BTreeSet<&str> {
    g.cells
        .iter()
        .flat_map(|c| &c.containers)
        .filter_map(|k| k.app.as_deref())
        .collect()
}

/// Each app's (fill, stroke): the palette, in the order of the names of the apps with
/// containers (an edge naming an app without containers does not shift the colours).
pub(super) fn app_colours(g: &Graph) -> Colours<'_> {
    app_names(g)
        .into_iter()
        .enumerate()
        .map(|(i, app)| (app, PALETTE[i % PALETTE.len()]))
        .collect()
}

pub(super) fn container_colours(k: &Container, colours: &Colours) -> (&'static str, &'static str) {
    k.app
        .as_deref()
        .and_then(|a| colours.get(a).copied())
        .unwrap_or(NO_APP_COLOURS)
}

/// Where each app's containers are: (cell index, container index), in drawing order.
pub(super) fn instances(g: &Graph) -> BTreeMap<&str, Vec<(usize, usize)>> {
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

pub(super) fn tag_text(tag: u16) -> String {
    format!("tag 0x{tag:04x} ({tag})")
}

/// What is said about a cell under its name: mode and subnet, VTEP or bridge, namespace.
pub(super) fn cell_details(c: &Cell) -> Vec<String> {
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
pub(super) fn container_details(k: &Container) -> Vec<String> {
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
pub(super) fn underlay_caption(u: &Underlay) -> String {
    let mut s = "underlay".to_string();
    for (prefix, v) in [("", &u.subnet), ("gw ", &u.gateway), ("ns ", &u.namespace)] {
        if !v.is_empty() {
            s = format!("{s} · {prefix}{v}");
        }
    }
    s.replacen("underlay · ", "underlay ", 1)
}
