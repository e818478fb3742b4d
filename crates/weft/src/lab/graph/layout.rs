//! The SVG's geometry: sizes of text and boxes, where cells, containers, arrow tracks, lanes,
//! labels and the legend go. Pure arithmetic, nothing drawn.

use std::collections::{BTreeMap, BTreeSet};

use super::model::*;

pub(super) const MARGIN: f64 = 28.0;
/// Between two cells.
pub(super) const CELL_GAP: f64 = 44.0;
/// Inside a cell, around its header.
pub(super) const CELL_PAD: f64 = 14.0;
/// Between two arrows' tracks in a gutter.
pub(super) const TRACK: f64 = 9.0;
/// From a container to the first track beside it.
pub(super) const GUTTER_PAD: f64 = 14.0;
/// Between two containers of a cell.
pub(super) const CTR_GAP: f64 = 12.0;
/// Between two arrows' lanes under the cells.
pub(super) const LANE: f64 = 28.0;
pub(super) const MIN_CTR_W: f64 = 150.0;
pub(super) const MIN_CELL_W: f64 = 190.0;
pub(super) const BUS_H: f64 = 26.0;
/// From the bus to the top of the cells.
pub(super) const LINK_H: f64 = 48.0;
pub(super) const LEGEND_ROW: f64 = 24.0;
pub(super) const NOTE_ROW: f64 = 18.0;
pub(super) const BADGE: &str = "masquerade";

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rect {
    pub(super) x: f64,
    pub(super) y: f64,
    pub(super) w: f64,
    pub(super) h: f64,
}

impl Rect {
    pub(super) fn right(&self) -> f64 {
        self.x + self.w
    }
    pub(super) fn bottom(&self) -> f64 {
        self.y + self.h
    }
    pub(super) fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
}

/// A line of text, with an estimate of its width (no font metrics here: generous averages).
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub(super) text: String,
    pub(super) size: f64,
    pub(super) bold: bool,
    pub(super) fill: &'static str,
}

impl Line {
    pub(super) fn new(text: impl Into<String>, size: f64) -> Self {
        Line {
            text: text.into(),
            size,
            bold: false,
            fill: TEXT_COLOUR,
        }
    }
    pub(super) fn bold(mut self) -> Self {
        self.bold = true;
        self
    }
    pub(super) fn fill(mut self, fill: &'static str) -> Self {
        self.fill = fill;
        self
    }
    pub(super) fn width(&self) -> f64 {
        text_width(&self.text, self.size, self.bold)
    }
    pub(super) fn height(&self) -> f64 {
        self.size + 4.0
    }
}

pub(super) fn text_width(s: &str, size: f64, bold: bool) -> f64 {
    s.chars().count() as f64 * size * if bold { 0.6 } else { 0.56 }
}

pub(super) fn lines_width(lines: &[Line]) -> f64 {
    lines.iter().map(Line::width).fold(0.0, f64::max)
}

pub(super) fn lines_height(lines: &[Line]) -> f64 {
    lines.iter().map(Line::height).sum()
}

pub(super) fn cell_header(c: &Cell) -> Vec<Line> {
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

pub(super) fn container_lines(k: &Container, stroke: &'static str) -> Vec<Line> {
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

pub(super) fn controller_lines(u: &Underlay) -> Option<Vec<Line>> {
    let url = u.controller.as_ref()?;
    Some(vec![
        Line::new("controller", 12.0).bold(),
        Line::new(url, 11.0),
    ])
}

pub(super) fn internet_lines(i: &Internet) -> Vec<Line> {
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
pub(super) struct Plan {
    pub(super) edge: usize,
    pub(super) src: Vec<(usize, usize)>,
    pub(super) dst: Vec<(usize, usize)>,
}

impl Plan {
    pub(super) fn src_cells(&self) -> BTreeSet<usize> {
        self.src.iter().map(|&(c, _)| c).collect()
    }
    pub(super) fn dst_cells(&self) -> BTreeSet<usize> {
        self.dst.iter().map(|&(c, _)| c).collect()
    }
    /// How many cells apart its ends are.
    pub(super) fn span(&self) -> usize {
        let all: Vec<usize> = self.src_cells().union(&self.dst_cells()).copied().collect();
        all.last().unwrap_or(&0) - all.first().unwrap_or(&0)
    }
}

/// The edges that can be drawn, short spans first (their lanes nearest the cells, fewer
/// crossings), and the indices of those that cannot (an app without containers).
pub(super) fn plan_edges(g: &Graph) -> (Vec<Plan>, Vec<usize>) {
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
pub(super) struct Gutters {
    pub(super) left: Vec<Vec<usize>>,
    pub(super) right: Vec<Vec<usize>>,
}

/// Orders the tracks so that a lane never crosses another track of the same gutter: in the
/// right (outgoing) gutter, arrows heading left are inside, shallow lanes first, then arrows
/// heading right, deep lanes first; the left (incoming) gutter mirrors it.
pub(super) fn gutters(plans: &[Plan], cells: usize) -> Gutters {
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

pub(super) fn gutter_width(tracks: usize) -> f64 {
    match tracks {
        0 => CELL_PAD,
        n => GUTTER_PAD + (n - 1) as f64 * TRACK + CELL_PAD,
    }
}

/// A cell as placed: its box, header lines, and its containers' boxes.
pub(super) struct CellBox {
    pub(super) rect: Rect,
    pub(super) header: Vec<Line>,
    pub(super) ctrs: Vec<Rect>,
}

/// A vertical track of an arrow in a cell's gutter, with the containers it meets (y of each).
pub(super) struct Track {
    pub(super) x: f64,
    /// x of the containers' side it meets.
    pub(super) side_x: f64,
    pub(super) ports: Vec<f64>,
    pub(super) outgoing: bool,
}

/// An edge as placed: its tracks, its lane and where its label goes.
pub(super) struct Route {
    pub(super) edge: usize,
    pub(super) lane_y: f64,
    pub(super) tracks: Vec<Track>,
    pub(super) label_x: f64,
}

impl Route {
    pub(super) fn x_range(&self) -> (f64, f64) {
        let xs = self.tracks.iter().map(|t| t.x);
        (
            xs.clone().fold(f64::INFINITY, f64::min),
            xs.fold(f64::NEG_INFINITY, f64::max),
        )
    }
}

pub(super) struct LegendItem {
    pub(super) x: f64,
    pub(super) row: usize,
    pub(super) what: LegendWhat,
}

pub(super) enum LegendWhat {
    Arrow(EdgeKind),
    App(String),
}

/// Everything placed.
pub(super) struct Layout {
    pub(super) width: f64,
    pub(super) height: f64,
    pub(super) controller: Option<(Rect, Vec<Line>)>,
    pub(super) internet: Option<(Rect, Vec<Line>)>,
    pub(super) bus: Option<Rect>,
    pub(super) cells: Vec<CellBox>,
    pub(super) routes: Vec<Route>,
    pub(super) legend_y: f64,
    pub(super) legend: Vec<LegendItem>,
    pub(super) notes_y: f64,
    pub(super) unplaced: Vec<usize>,
}

/// Sizes that do not depend on where things go.
pub(super) struct Sizes {
    pub(super) ctr_w: f64,
    pub(super) ctr_h: f64,
    pub(super) header_h: f64,
    pub(super) body_h: f64,
    pub(super) cell_w: Vec<f64>,
    /// Left gutter width of each cell.
    pub(super) left_w: Vec<f64>,
}

pub(super) fn measure(g: &Graph, gut: &Gutters, colours: &Colours) -> Sizes {
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

pub(super) fn badge_width() -> f64 {
    text_width(BADGE, 10.0, true) + 14.0
}

pub(super) fn cloud_size(lines: &[Line]) -> (f64, f64) {
    (lines_width(lines) + 64.0, lines_height(lines) + 34.0)
}

pub(super) fn layout(g: &Graph, colours: &Colours) -> Layout {
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

pub(super) fn place_cells(g: &Graph, sizes: &Sizes, row_x: f64, top: f64) -> Vec<CellBox> {
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
pub(super) fn ports(plans: &[Plan], gut: &Gutters) -> BTreeMap<(usize, usize, bool), Vec<usize>> {
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

pub(super) fn place_routes(
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
pub(super) fn label_x(routes: &[Route], i: usize, label_w: f64, width: f64) -> f64 {
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
pub(super) fn legend_items(colours: &Colours, width: f64) -> Vec<LegendItem> {
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

pub(super) fn legend_text(what: &LegendWhat) -> String {
    match what {
        LegendWhat::Arrow(EdgeKind::Allowed) => "allowed by a policy".into(),
        LegendWhat::Arrow(EdgeKind::Denied) => "✕ denied (expected blocked)".into(),
        LegendWhat::App(a) => a.clone(),
    }
}

pub(super) fn legend_item_width(what: &LegendWhat) -> f64 {
    let sample = match what {
        LegendWhat::Arrow(_) => 40.0,
        LegendWhat::App(_) => 18.0,
    };
    sample + 6.0 + text_width(&legend_text(what), 12.0, false)
}

/// `app-x → app-y tcp 80 allowed: no container of app-y`.
pub(super) fn note(e: &Edge) -> String {
    format!("{}: no container of this app in the lab", e.describe())
}

pub(super) fn subtitle(g: &Graph) -> String {
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

pub(super) fn caption_line(e: &Edge) -> Line {
    Line::new(e.caption(), 11.0).bold().fill(e.kind.colour())
}
