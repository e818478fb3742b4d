//! The picture's content: a running lab as [`graph::Graph`] (what [`graph`] draws).
//! Policies come from the controller when it answers (what is enforced now), else from the
//! lab file; denied arrows are the lab's `deny` checks.

use std::collections::BTreeSet;

use anyhow::Result;

use super::graph::{self, Edge, EdgeKind, Graph};
use super::state;
use super::state::State;
use super::topology::{Expect, Mode};

/// (from app, to app, label) of every policy in force.
fn policies(st: &State) -> Vec<(String, String, String)> {
    let live = state::client(st).ok().and_then(|c| {
        crate::rt::block_in(&st.layout.underlay.namespace, move || {
            Box::pin(async move { Ok(c.policies(None).await?) })
        })
        .ok()
    });
    match live {
        Some(list) => list
            .policies
            .iter()
            .map(|p| {
                let ports = match p.destination.ports {
                    Some(r) if r.start == r.end => format!(" {}", r.start),
                    Some(r) => format!(" {}-{}", r.start, r.end),
                    None => String::new(),
                };
                (
                    p.source.id.clone(),
                    p.destination.id.clone(),
                    format!("{}{ports}", p.destination.protocol),
                )
            })
            .collect(),
        None => st
            .topology
            .policies
            .iter()
            .map(|p| {
                (
                    p.from.clone(),
                    p.to.clone(),
                    format!("{} {}", p.protocol, p.ports.as_deref().unwrap_or(""))
                        .trim()
                        .to_string(),
                )
            })
            .collect(),
    }
}

pub fn graph_of(st: &State) -> Result<Graph> {
    let l = &st.layout;
    let mut g = Graph {
        lab: l.lab.clone(),
        underlay: Some(graph::Underlay {
            namespace: l.underlay.namespace.clone(),
            subnet: l.underlay.subnet.to_string(),
            gateway: l.underlay.gateway.to_string(),
            controller: l.overlay.as_ref().map(|o| o.controller.clone()),
        }),
        internet: l.internet.as_ref().map(|i| graph::Internet {
            namespace: i.namespace.clone(),
            ip: i.ip.to_string(),
        }),
        cells: Vec::new(),
        edges: Vec::new(),
    };
    for c in &l.cells {
        let subnet = super::subnet_of(st, c);
        let tags = super::tags_of(st, &c.name);
        let vtep = match (c.mode, &l.overlay, &subnet) {
            (Mode::Overlay, Some(o), _) => {
                let lease =
                    weft_api::records::HostLease::read(&st.cell_dir(&c.name).join("lease.json"))
                        .ok();
                Some(format!(
                    "{} {} vni {}",
                    lease
                        .as_ref()
                        .map(|x| x.vtep.as_str())
                        .unwrap_or("weft.vtep"),
                    lease
                        .as_ref()
                        .map(|x| x.subnet.network().to_string())
                        .unwrap_or_else(|| "?".into()),
                    o.vni
                ))
            }
            _ => None,
        };
        let bridge = match (c.mode, c.bridge_subnet) {
            (Mode::Bridge, Some(s)) => Some(format!(
                "weft0 {}/{}",
                s.hosts().next().map(|h| h.to_string()).unwrap_or_default(),
                s.prefix_len()
            )),
            _ => None,
        };
        g.cells.push(graph::Cell {
            name: c.name.clone(),
            namespace: c.namespace.clone(),
            underlay_ip: Some(c.underlay_ip.to_string()),
            mode: c.mode.as_str().into(),
            subnet,
            vtep,
            bridge,
            masquerade: c.masquerade,
            containers: l
                .containers
                .iter()
                .filter(|k| k.cell == c.name)
                .map(|k| {
                    let s = st.container(&k.name);
                    graph::Container {
                        name: k.name.clone(),
                        app: Some(k.app.clone()),
                        ip: s.and_then(|s| s.ip).map(|i| i.to_string()),
                        tag: tags.get(&k.app).copied(),
                        veth: s.and_then(|s| s.host_veth.clone()),
                    }
                })
                .collect(),
        });
    }
    let apps: BTreeSet<&str> = l.containers.iter().map(|c| c.app.as_str()).collect();
    for (from, to, label) in policies(st) {
        if apps.contains(from.as_str()) && apps.contains(to.as_str()) {
            g.edges.push(Edge {
                from_app: from,
                to_app: to,
                label,
                kind: EdgeKind::Allowed,
            });
        }
    }
    // Denied arrows: the lab's deny checks between apps.
    for c in st
        .topology
        .checks
        .iter()
        .filter(|c| c.expect == Expect::Deny)
    {
        let (Some(from), Some(to)) = (l.container(&c.from), l.container(&c.to)) else {
            continue;
        };
        let label = match c.port {
            Some(p) => format!("tcp {p}"),
            None => "icmp".into(),
        };
        if !g
            .edges
            .iter()
            .any(|e| e.from_app == from.app && e.to_app == to.app && e.label == label)
        {
            g.edges.push(Edge {
                from_app: from.app.clone(),
                to_app: to.app.clone(),
                label,
                kind: EdgeKind::Denied,
            });
        }
    }
    Ok(g)
}
