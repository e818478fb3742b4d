//! The dataflow, hop by hop: seed 000's eleven steps of a packet from a container to its
//! destination, each with the kernel objects that decide it, and the verdict.
//!
//! 1-2 the source container and its veth; 3 the mark (the source app's tag); 4 the route out
//! of the cell; 5-9 across the underlay (VTEP, neighbour and FDB, the cell's acceptance of
//! the VXLAN packet, decapsulation); 10 the destination's policy; 11 delivery.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;
use serde::Serialize;
use weft_kernel::netns::Netns;
use weft_kernel::nft::{Family, Table, Value};

use super::kernel::{self, RouteInfo};
use super::world::{Controller, Ctr, Host, World};
use crate::lab::topology::Mode;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: u8,
    pub title: String,
    /// The cell (host) whose kernel holds these objects.
    pub host: Option<String>,
    pub objects: Vec<String>,
    pub note: Option<String>,
    /// Not on this packet's path (e.g. the overlay steps for a same-cell destination), or
    /// not reached (after a drop).
    pub skipped: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// false when the decision is taken on a host this trace cannot see (then `allowed` is
    /// false too and `by` says where to look).
    pub known: bool,
    pub allowed: bool,
    /// The policy, map element or rule that decided.
    pub by: String,
}

impl Decision {
    fn denied(by: String) -> Decision {
        Decision {
            known: true,
            allowed: false,
            by,
        }
    }
}

/// What the egress state says of a packet from `app` to `ip` outside the overlay: allowed by
/// a named rule, allowed by mode allow, or dropped by egress default deny.
pub fn egress_verdict(
    state: &weft_api::egress::EgressState,
    app: &str,
    ip: Ipv4Addr,
    protocol: &str,
    port: Option<u16>,
) -> (bool, String) {
    match state.allowing(app, ip, protocol, port) {
        Some((d, i)) => {
            let r = &d.rules[i];
            (
                true,
                format!(
                    "egress rule {app} -> {} ({} {}{})",
                    d.name,
                    r.protocol.as_str(),
                    r.ips,
                    r.ports
                        .as_deref()
                        .map(|p| format!(" port {p}"))
                        .unwrap_or_default()
                ),
            )
        }
        None if state.mode == weft_api::egress::EgressMode::Allow => {
            (true, "egress mode allow: no rule needed".into())
        }
        None => (
            false,
            format!("egress default deny: no egress rule lets {app} reach {ip}"),
        ),
    }
}

fn step(n: u8, title: &str, host: Option<&Host>, objects: Vec<String>) -> Step {
    Step {
        step: n,
        title: title.into(),
        host: host.map(|h| h.name.clone()),
        objects,
        note: None,
        skipped: false,
    }
}

fn skipped(n: u8, title: &str, why: &str) -> Step {
    Step {
        step: n,
        title: title.into(),
        host: None,
        objects: Vec::new(),
        note: Some(why.into()),
        skipped: true,
    }
}

/// Steps 4 to 9, the overlay's part of the path.
const OVERLAY_STEPS: [(u8, &str); 6] = [
    (4, "routed to the VTEP"),
    (
        5,
        "encapsulated: VXLAN to the destination cell's underlay IP",
    ),
    (6, "the underlay packet exits the cell"),
    (7, "it crosses the underlay"),
    (8, "it arrives at the destination cell"),
    (9, "decapsulated: the GBP field becomes the packet's mark"),
];

const VTEP: &str = "weft.vtep";

/// One trace's question: this packet, from this container, to that destination.
pub struct Ctx<'a> {
    pub world: &'a World,
    pub src: Ctr,
    pub dst_name: String,
    pub dst_ip: Ipv4Addr,
    pub dst: Option<Ctr>,
    pub protocol: String,
    pub port: Option<u16>,
    pub controller: Controller,
}

/// What the steps found along the way.
pub struct Path {
    /// "same cell", "across cells" or "outside the overlay".
    pub kind: String,
    pub steps: Vec<Step>,
    pub decision: Decision,
}

impl Ctx<'_> {
    fn dst_desc(&self) -> String {
        match &self.dst {
            Some(d) => format!("{} ({}, app {})", self.dst_ip, d.name, d.app_name()),
            None => format!("{} ({})", self.dst_ip, self.dst_name),
        }
    }

    fn port_txt(&self) -> String {
        self.port.map(|p| format!(":{p}")).unwrap_or_default()
    }

    /// The eleven steps and the verdict.
    pub fn steps(&self) -> Result<Path> {
        let sh = &self.src.host;
        let mut steps = self.leaving()?;
        let src_mark = self.marking(&mut steps);
        let route = kernel::route_to(sh, self.dst_ip)?;
        let local = self.dst.as_ref().is_some_and(|d| d.host.name == sh.name);
        let via_vtep = route.as_ref().is_some_and(|r| r.dev == VTEP);
        let rtext = route
            .as_ref()
            .map(|r| r.text.clone())
            .unwrap_or_else(|| "no route (the packet is dropped here)".into());
        let mut decision = Decision {
            known: true,
            allowed: true,
            by: String::new(),
        };
        let (kind, dst_host) = if local {
            self.same_cell(&mut steps, rtext);
            ("same cell", Some(sh.clone()))
        } else if via_vtep {
            let dst_host = self
                .dst
                .as_ref()
                .map(|d| d.host.clone())
                .or_else(|| self.world.host_of_subnet(self.dst_ip));
            if let Some(d) = self.across(&mut steps, route.as_ref(), dst_host.as_ref(), src_mark)? {
                decision = d;
            }
            ("across cells", dst_host)
        } else {
            let decision = match self.outside(&mut steps, rtext) {
                Some((allowed, by)) => Decision {
                    allowed,
                    by,
                    ..decision
                },
                None => Decision {
                    by: "not c2c traffic: no policy applies".into(),
                    ..decision
                },
            };
            return Ok(Path {
                kind: "outside the overlay".into(),
                steps,
                decision,
            });
        };
        if decision.allowed {
            decision = self.policy(&mut steps, dst_host.as_ref(), src_mark);
        } else {
            steps.push(skipped(10, "policy check", "dropped before (step 8)"));
        }
        steps.push(self.delivery(dst_host.as_ref(), &decision)?);
        Ok(Path {
            kind: kind.into(),
            steps,
            decision,
        })
    }

    /// 1-2: the container sends, the packet leaves through its veth.
    fn leaving(&self) -> Result<Vec<Step>> {
        let src = &self.src;
        let sh = &src.host;
        let dst_ip = self.dst_ip;
        let croute = Netns::open(&src.netns)?
            .run(move || kernel::route_here(dst_ip))??
            .map(|r| r.text)
            .unwrap_or_else(|| "no route".into());
        Ok(vec![
            step(
                1,
                &format!(
                    "{} ({}, app {}) sends {} to {}{}",
                    src.name,
                    src.ip,
                    src.app_name(),
                    self.protocol,
                    self.dst_desc(),
                    self.port_txt()
                ),
                Some(sh),
                vec![
                    format!("netns {}", src.netns),
                    format!("{} {}", src.ifname, src.ip),
                    format!("{croute} (in the container)"),
                ],
            ),
            step(
                2,
                "the packet leaves the container through its veth",
                Some(sh),
                vec![format!(
                    "veth {} (container) <-> {} (host {})",
                    src.ifname, src.host_veth, sh.name
                )],
            ),
        ])
    }

    /// 3: the source app's tag becomes the packet's mark (overlay cells). Returns the mark.
    fn marking(&self, steps: &mut Vec<Step>) -> Option<u32> {
        let src = &self.src;
        let sh = &src.host;
        if sh.mode != Mode::Overlay {
            steps.push(skipped(
                3,
                "marking",
                "bridge mode: no overlay, no per-app mark",
            ));
            return None;
        }
        let table = kernel::policy_table(sh);
        let mut objs = Vec::new();
        let mut src_mark = None;
        if let Some(r) = table
            .as_ref()
            .and_then(|t| kernel::rule(t, "prerouting", "meta mark set"))
        {
            objs.push(format!("rule {r}"));
        }
        let tag = table
            .as_ref()
            .and_then(|t| kernel::lookup(t, "tags", &Value::from(src.ip)));
        match tag {
            Some(e) => {
                src_mark = e.value.as_ref().and_then(Value::as_int).map(|m| m as u32);
                objs.push(format!("element tags {{ {e} }}"));
            }
            None => objs.push(format!(
                "no element for {} in map tags: the packet stays unmarked (mark 0)",
                src.ip
            )),
        }
        let mut s = step(
            3,
            "the packet is marked with the source app's tag",
            Some(sh),
            objs,
        );
        s.note = Some(match src_mark {
            Some(m) => format!("mark {m:#06x} = tag {m} of app {}", src.app_name()),
            None => "no tag: the destination's policy will deny it".into(),
        });
        steps.push(s);
        src_mark
    }

    /// 4 on the same cell: no VTEP, steps 5-9 not taken.
    fn same_cell(&self, steps: &mut Vec<Step>, rtext: String) {
        let sh = &self.src.host;
        let title = match sh.mode {
            Mode::Overlay => "routed on the same cell: no VTEP",
            Mode::Bridge => "switched by the cell's bridge: no VTEP",
        };
        let mut s = step(4, title, Some(sh), vec![rtext]);
        s.note = Some("the destination is on this cell: steps 5-9 are not taken".into());
        steps.push(s);
        for (n, t) in &OVERLAY_STEPS[1..] {
            steps.push(skipped(*n, t, "same cell"));
        }
    }

    /// The egress decision for the source app to the destination outside the overlay, from
    /// the controller's egress state: `(allowed, what decided)`; None if it does not answer.
    fn egress(&self) -> Option<(bool, String)> {
        let state = self.controller.egress()?;
        Some(egress_verdict(
            &state,
            self.src.app.as_deref().unwrap_or_default(),
            self.dst_ip,
            &self.protocol,
            self.port,
        ))
    }

    /// 4-11 for a destination outside the overlay: masqueraded out of the cell, after the
    /// egress check on an overlay cell. Returns the egress decision, if the controller gave
    /// one.
    fn outside(&self, steps: &mut Vec<Step>, rtext: String) -> Option<(bool, String)> {
        let sh = &self.src.host;
        let mut objs = vec![rtext];
        let nat = if sh.mode == Mode::Overlay {
            kernel::table(sh, Family::Ip, weft_agent::nat::TABLE)
                .and_then(|t| kernel::rule(&t, "postrouting", "masquerade"))
        } else {
            kernel::tables(sh, Family::Inet)
                .into_iter()
                .find(|t| t.starts_with("weft-"))
                .and_then(|t| kernel::table(sh, Family::Inet, &t))
                .and_then(|t| kernel::rule(&t, "postrouting", "masquerade"))
        };
        if let Some(n) = &nat {
            objs.push(format!("rule {n}"));
        }
        let mut s = step(
            4,
            "routed out of the cell (not an overlay destination)",
            Some(sh),
            objs,
        );
        s.note = Some(match (&nat, sh.underlay_ip) {
            (Some(_), Some(u)) => format!("masqueraded: the destination sees {u}"),
            (Some(_), None) => "masqueraded to the host's address".into(),
            (None, _) => "no masquerade rule found".into(),
        });
        steps.push(s);
        for (n, t) in &OVERLAY_STEPS[1..] {
            steps.push(skipped(*n, t, "not an overlay destination"));
        }
        let egress = (sh.mode == Mode::Overlay).then(|| self.egress()).flatten();
        match &egress {
            Some((allowed, by)) => {
                let mut s = step(
                    10,
                    "egress check (inet weft-egress, on the source cell)",
                    Some(sh),
                    vec![by.clone()],
                );
                s.note = Some(if *allowed { "allowed" } else { "DROPPED" }.into());
                steps.push(s);
                if !allowed {
                    return egress;
                }
            }
            None => steps.push(skipped(
                10,
                "policy check",
                "c2c policy applies between overlay addresses only",
            )),
        }
        steps.push(step(
            11,
            "leaves the cell towards its destination",
            Some(sh),
            vec![format!("{} -> {}", sh.name, self.dst_desc())],
        ));
        egress
    }

    /// 4-9 across cells: VTEP, neighbour and FDB, the underlay, the destination cell's
    /// acceptance, decapsulation. Returns a deny when the destination cell drops the VXLAN
    /// packet.
    fn across(
        &self,
        steps: &mut Vec<Step>,
        route: Option<&RouteInfo>,
        dst_host: Option<&Host>,
        src_mark: Option<u32>,
    ) -> Result<Option<Decision>> {
        let src = &self.src;
        let sh = &src.host;
        let rtext = route.map(|r| r.text.clone()).unwrap_or_default();
        steps.push(step(4, OVERLAY_STEPS[0].1, Some(sh), vec![rtext]));
        let gw = route.and_then(|r| r.gateway);
        let (mac, under) = match gw {
            Some(g) => kernel::vtep_entries(sh, VTEP, g)?,
            None => (None, None),
        };
        let mut objs = Vec::new();
        if let (Some(g), Some(m)) = (gw, &mac) {
            objs.push(format!("neighbour {g} lladdr {m} dev {VTEP} PERMANENT"));
        } else {
            objs.push("no neighbour entry for the remote VTEP".into());
        }
        match (&mac, under) {
            (Some(m), Some(u)) => objs.push(format!("fdb {m} dst {u} dev {VTEP}")),
            _ => objs.push("no FDB entry for the remote VTEP's MAC".into()),
        }
        if let Some(o) = self
            .world
            .lab
            .as_ref()
            .and_then(|st| st.layout.overlay.as_ref())
        {
            objs.push(format!("{VTEP}: vxlan id {} dstport 4789 gbp", o.vni));
        }
        if let Some(id) = kernel::fastpath_filter(sh, &src.host_veth) {
            objs.push(format!(
                "fast path: weft_tx (BPF prog {id}, tc ingress of {}) encapsulates this \
                 connection's packets itself once conntrack holds it as established (TCP \
                 data, not SYN/FIN/RST): the same VXLAN-GBP packet, without the routing, \
                 nftables and {VTEP} above",
                src.host_veth
            ));
        }
        let mut s = step(5, OVERLAY_STEPS[1].1, Some(sh), objs);
        s.note = src_mark.map(|m| format!("GBP group policy id {m:#06x} carries the tag"));
        steps.push(s);
        let uroute = match under {
            Some(IpAddr::V4(u)) => kernel::route_to(sh, u)?.map(|r| r.text),
            _ => None,
        };
        steps.push(step(
            6,
            OVERLAY_STEPS[2].1,
            Some(sh),
            vec![format!(
                "outer packet {} -> {} udp dport 4789; {}",
                sh.underlay_ip
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "this host".into()),
                under.map(|u| u.to_string()).unwrap_or_else(|| "?".into()),
                uroute.unwrap_or_else(|| "no route to the remote underlay IP".into())
            )],
        ));
        let underlay = match &self.world.lab {
            Some(st) => format!(
                "bridge {} in {} ({})",
                st.layout.underlay.bridge, st.layout.underlay.namespace, st.layout.underlay.subnet
            ),
            None => "the underlay network".into(),
        };
        steps.push(step(7, OVERLAY_STEPS[3].1, None, vec![underlay]));
        let Some(dh) = dst_host else {
            steps.push(skipped(
                8,
                OVERLAY_STEPS[4].1,
                "the destination host is not visible from here: run `weft trace` there",
            ));
            steps.push(skipped(9, OVERLAY_STEPS[5].1, "on the destination host"));
            return Ok(None);
        };
        let (arrival, decision) = self.arrival(dh);
        steps.push(arrival);
        let mut objs = vec![format!("{VTEP} on {} decapsulates", dh.name)];
        if let Some(id) = kernel::fastpath_filter(dh, "eth0") {
            objs.push(format!(
                "fast path: weft_rx (BPF prog {id}, tc ingress of eth0) \
                 decapsulates established TCP data for a local container and \
                 delivers it straight into its namespace; new connections go \
                 through {VTEP} and step 10"
            ));
        }
        let mut s = step(9, OVERLAY_STEPS[5].1, Some(dh), objs);
        s.note = src_mark.map(|m| format!("meta mark {m:#010x}"));
        steps.push(s);
        Ok(decision)
    }

    /// 8: does the destination cell accept VXLAN from the source cell (a cell holding a
    /// lease), with an inner source inside the sender's lease?
    fn arrival(&self, dh: &Host) -> (Step, Option<Decision>) {
        let src = &self.src;
        let src_u = src
            .host
            .underlay_ip
            .map(|u| u.to_string())
            .unwrap_or_default();
        let mut objs = vec![format!(
            "{} eth0 {}",
            dh.name,
            dh.underlay_ip.map(|u| u.to_string()).unwrap_or_default()
        )];
        let table = kernel::policy_table(dh);
        let t = table.as_ref();
        let known = t.and_then(|t| kernel::lookup(t, "cells", &Value::literal(&src_u)));
        match known {
            Some(e) => objs.push(format!(
                "element cells {{ {e} }}: VXLAN from a host holding a lease is accepted"
            )),
            None => {
                if let Some(r) = t.and_then(|t| kernel::rule(t, "input", "@cells")) {
                    objs.push(format!("rule {r}"));
                }
                objs.push(format!(
                    "{src_u} is not in set cells: the VXLAN packet is dropped"
                ));
            }
        }
        // The inner source must lie in the sender's lease.
        let inner = Value::concat([Value::literal(&src_u), Value::from(u32::from(src.ip))]);
        let bound = t.and_then(|t| kernel::lookup(t, "cell_subnets", &inner));
        match bound {
            Some(e) => objs.push(format!(
                "element cell_subnets {{ {e} }}: the inner source {} lies in the sender's lease",
                src.ip
            )),
            None if known.is_some() => objs.push(format!(
                "no element of cell_subnets holds {src_u} . {}: the inner source is \
                 not in the sender's lease, the VXLAN packet is dropped",
                src.ip
            )),
            None => {}
        }
        let decision = match (t, known, bound) {
            (None, _, _) => None,
            (Some(_), None, _) => Some(Decision::denied(format!(
                "{}: VXLAN from {src_u}, which holds no lease (rule in inet weft-policy input)",
                dh.name
            ))),
            (Some(_), Some(_), None) => Some(Decision::denied(format!(
                "{}: the inner source {} is not in the lease of {src_u} (rule in inet weft-policy input)",
                dh.name, src.ip
            ))),
            (Some(_), Some(_), Some(_)) => None,
        };
        (step(8, OVERLAY_STEPS[4].1, Some(dh), objs), decision)
    }

    /// 10: the destination's policy (overlay cells), or where it is decided.
    fn policy(
        &self,
        steps: &mut Vec<Step>,
        dst_host: Option<&Host>,
        src_mark: Option<u32>,
    ) -> Decision {
        let src = &self.src;
        match (dst_host, &self.dst) {
            (Some(dh), Some(d)) if dh.mode == Mode::Overlay => {
                let table = kernel::policy_table(dh);
                let (s, decision) = self.policy_check(dh, d, table.as_ref(), src_mark.unwrap_or(0));
                steps.push(s);
                decision
            }
            (Some(dh), _) if dh.mode == Mode::Bridge => {
                steps.push(skipped(10, "policy check", "bridge mode: no c2c policy"));
                Decision {
                    known: true,
                    allowed: true,
                    by: "bridge mode: no policy".into(),
                }
            }
            _ => {
                // A destination on a host we cannot see: it decides there. The
                // controller says which host that is.
                let holder = self.controller.lease_holder(self.dst_ip);
                let holder = holder.as_deref().unwrap_or("the destination host");
                steps.push(skipped(
                    10,
                    "checked against policy on the destination host",
                    &format!("on {holder}: run `weft trace` there to see its policy elements"),
                ));
                Decision {
                    known: false,
                    allowed: false,
                    by: format!(
                        "{holder} (not visible from here; `weft policy check {} <destination app> {}` shows what the controller allows)",
                        src.app_name(),
                        self.port.map(|p| p.to_string()).unwrap_or_default()
                    ),
                }
            }
        }
    }

    /// 10 on a visible overlay cell: the element of `allow_ports` / `allow_icmp` the
    /// kernel's lookup finds, the policy behind it, or the rule that drops.
    fn policy_check(
        &self,
        dh: &Host,
        d: &Ctr,
        table: Option<&Table>,
        mark: u32,
    ) -> (Step, Decision) {
        let src = &self.src;
        let mut objs = Vec::new();
        let (map, key) = match (self.protocol.as_str(), self.port) {
            ("icmp", _) => (
                "allow_icmp",
                Value::concat([Value::from(mark), Value::from(d.ip)]),
            ),
            (p, port) => (
                "allow_ports",
                Value::concat([
                    Value::from(mark),
                    Value::from(d.ip),
                    Value::literal(p),
                    Value::from(port.unwrap_or(0)),
                ]),
            ),
        };
        let found = table.and_then(|t| kernel::lookup(t, map, &key));
        if let Some(r) = table.and_then(|t| kernel::rule(t, "forward", &format!("@{map}"))) {
            objs.push(format!("rule {r}"));
        }
        let mut decision = Decision {
            known: true,
            allowed: true,
            by: String::new(),
        };
        match (found, kernel::enforced(table)) {
            (_, None) => {
                objs.push("no inet weft-policy table: nothing filters".into());
                decision.by = format!("{}: no policy table", dh.name);
            }
            (Some(e), _) => {
                objs.push(format!("element {map} {{ {e} }}"));
                decision.by = match self.allowing_policy(d) {
                    Some(p) => format!("{p} (element {map} {{ {e} }} on {})", dh.name),
                    None => format!("element {map} {{ {e} }} on {}", dh.name),
                };
            }
            (None, Some(false)) => {
                objs.push(format!("no element matches {key}"));
                objs.push("policy enforcement is off on this cell (lab setting): accepted".into());
                decision.by = format!("{}: enforcement off", dh.name);
            }
            (None, Some(true)) => {
                objs.push(format!("no element of {map} matches {{ {key} }}"));
                let deny = table.and_then(|t| {
                    kernel::rule_by_comment(t, weft_agent::policy::drops::DEFAULT_DENY)
                });
                if let Some(r) = &deny {
                    objs.push(format!("rule {r}"));
                }
                decision = Decision::denied(format!(
                    "default deny on {}: no policy allows {} -> {} {}{}{}",
                    dh.name,
                    src.app_name(),
                    d.app_name(),
                    self.protocol,
                    self.port_txt().replace(':', " "),
                    deny.map(|r| format!(" ({r})")).unwrap_or_default()
                ));
            }
        }
        let mut s = step(
            10,
            "checked against policy: source tag . destination . protocol . port",
            Some(dh),
            objs,
        );
        s.note = Some(if decision.allowed {
            "allowed".into()
        } else {
            "DENIED: dropped here".into()
        });
        (s, decision)
    }

    /// The controller's policy that allows this flow, named (`policy a -> b tcp 80`).
    fn allowing_policy(&self, d: &Ctr) -> Option<String> {
        let ps = self.controller.policies()?;
        let proto = weft_api::model::Protocol::parse(&self.protocol)?;
        let p = weft_api::model::allowing(
            &ps,
            self.src.app.as_deref().unwrap_or(""),
            d.app.as_deref().unwrap_or(""),
            proto,
            self.port,
        )?;
        let ports = p
            .destination
            .ports
            .map(|r| {
                if r.start == r.end {
                    format!(" {}", r.start)
                } else {
                    format!(" {}-{}", r.start, r.end)
                }
            })
            .unwrap_or_default();
        Some(format!(
            "policy {} -> {} {}{ports}",
            p.source.id, p.destination.id, p.destination.protocol
        ))
    }

    /// 11: delivered into the destination container, or why not.
    fn delivery(&self, dst_host: Option<&Host>, decision: &Decision) -> Result<Step> {
        Ok(match (dst_host, &self.dst) {
            (Some(dh), Some(d)) if decision.allowed => {
                let r = kernel::route_to(dh, d.ip)?
                    .map(|r| r.text)
                    .unwrap_or_else(|| "no route".into());
                step(
                    11,
                    "delivered to the destination container's veth",
                    Some(dh),
                    vec![
                        r,
                        format!(
                            "veth {} (host {}) <-> {} (container {}, netns {})",
                            d.host_veth, dh.name, d.ifname, d.name, d.netns
                        ),
                    ],
                )
            }
            _ if decision.known && !decision.allowed => {
                skipped(11, "delivery", "not delivered: denied at step 10")
            }
            _ => skipped(
                11,
                "delivery",
                "on the destination host (not visible from here)",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::egress::*;

    #[test]
    fn egress_verdict_names_the_rule() {
        let mut state = EgressState {
            mode: EgressMode::Deny,
            destinations: vec![Destination {
                id: "web".into(),
                name: "web".into(),
                description: String::new(),
                rules: vec![DestinationRule::new(
                    EgressProtocol::Tcp,
                    "203.0.113.0/24",
                    Some("80"),
                )],
            }],
            policies: vec![EgressPolicy::new("db", "web")],
        };
        let ip: Ipv4Addr = "203.0.113.2".parse().unwrap();
        let (ok, by) = egress_verdict(&state, "db", ip, "tcp", Some(80));
        assert!(ok);
        assert_eq!(by, "egress rule db -> web (tcp 203.0.113.0/24 port 80)");
        let (ok, by) = egress_verdict(&state, "db", ip, "tcp", Some(81));
        assert!(!ok && by.starts_with("egress default deny"), "{by}");
        state.mode = EgressMode::Allow;
        assert!(egress_verdict(&state, "db", ip, "tcp", Some(81)).0);
    }
}
