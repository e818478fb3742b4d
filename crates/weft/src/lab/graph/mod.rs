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

mod dot;
mod layout;
mod model;
mod svg;

pub use dot::dot;
pub use model::{Cell, Container, Edge, EdgeKind, Graph, Internet, Underlay};
pub use svg::svg;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::layout::*;
    use super::model::*;
    use super::svg::*;
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
