//! The lab as a self-contained SVG 1.1 picture, drawn from the [`super::layout`].

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::layout::*;
use super::model::*;

/// Text for XML: the five special characters escaped, characters XML 1.0 forbids dropped.
pub(super) fn esc(s: &str) -> String {
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
pub(super) struct Ids(BTreeSet<String>);

impl Ids {
    pub(super) fn make(&mut self, prefix: &str, name: &str) -> String {
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

pub(super) fn text(out: &mut String, x: f64, y: f64, line: &Line, anchor: &str) {
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
pub(super) fn text_block(out: &mut String, x: f64, top: f64, lines: &[Line], anchor: &str) {
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

pub(super) fn svg_open(out: &mut String, g: &Graph, l: &Layout) {
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

pub(super) fn draw_controller_and_internet(out: &mut String, l: &Layout) {
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

pub(super) fn line(out: &mut String, a: (f64, f64), b: (f64, f64), stroke: &str, width: f64) {
    let _ = writeln!(
        out,
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>",
        a.0, a.1, b.0, b.1
    );
}

/// A cloud in `r`: a pill and three bumps, outlined together (strokes first, fills over them).
pub(super) fn cloud(out: &mut String, r: &Rect) {
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

pub(super) fn draw_bus(out: &mut String, g: &Graph, l: &Layout) {
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

pub(super) fn draw_cell(out: &mut String, c: &Cell, b: &CellBox, colours: &Colours, ids: &mut Ids) {
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

pub(super) fn draw_badge(out: &mut String, x: f64, y: f64) {
    let w = badge_width();
    let _ = writeln!(
        out,
        "<g class=\"badge masquerade\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"17\" rx=\"8.5\" fill=\"#fff7ed\" stroke=\"#c2410c\"/>"
    );
    let t = Line::new(BADGE, 10.0).bold().fill("#c2410c");
    text(out, x + w / 2.0, y + 12.5, &t, "middle");
    out.push_str("</g>\n");
}

pub(super) fn draw_container(
    out: &mut String,
    k: &Container,
    r: &Rect,
    colours: &Colours,
    ids: &mut Ids,
) {
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
pub(super) fn rounded_path(points: &[(f64, f64)], radius: f64) -> String {
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

pub(super) fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// The point `by` away from `from` towards `to`.
pub(super) fn towards(from: (f64, f64), to: (f64, f64), by: f64) -> (f64, f64) {
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
pub(super) fn route_segments(r: &Route) -> Vec<(String, bool)> {
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

pub(super) fn draw_route(out: &mut String, e: &Edge, r: &Route, ids: &mut Ids) {
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

/// An edge's label just above its lane, on a white ground, drawn after all the arrows so that
/// no track crosses it.
pub(super) fn draw_edge_label(out: &mut String, e: &Edge, r: &Route) {
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

pub(super) fn draw_legend(out: &mut String, l: &Layout, colours: &Colours) {
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

pub(super) fn draw_notes(out: &mut String, g: &Graph, l: &Layout) {
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
