//! A lab's topology file (TOML) and the layout derived from it: every namespace, address and
//! name the lab will have, computed without touching the kernel (pure, unit-tested).
//!
//! ```toml
//! name = "c2c"                       # [a-z0-9-], at most 16 characters
//! description = "seed 000: AppB on cell1 reaches AppA on cell2"
//!
//! [underlay]                         # the network between the cells (optional)
//! subnet = "198.18.0.0/24"           # cells get .1, .2, ...; the underlay namespace the last
//!
//! [overlay]                          # for cells in overlay mode (optional)
//! cidr = "10.255.0.0/16"
//! host_prefix = 24
//! vni = 1
//! policy = true                      # default deny between apps (false: everything passes)
//! egress = "allow"                   # or "deny": apps reach outside only what [[egress]] allows
//!
//! [internet]                         # a namespace standing in for the outside (optional)
//! ip = "203.0.113.2"
//! serve = [80]                       # weft's built-in server listens here
//!
//! [[cells]]
//! name = "cell1"
//! mode = "overlay"                   # or "bridge"
//! subnet = "10.88.0.0/24"            # bridge mode only
//! masquerade = true                  # bridge mode only (overlay cells always masquerade)
//! serve = [8000]                     # the built-in server on the cell itself
//!
//! [[apps]]
//! name = "app-a"
//! cells = ["cell2"]                  # one instance per entry: app-a-0 on cell2
//! serve = [8080]                     # built-in server ports, or:
//! command = ["python3", "-m", "http.server", "8080"]
//!
//! [[policies]]
//! from = "app-b"
//! to = "app-a"
//! protocol = "tcp"                   # tcp, udp or icmp
//! ports = "8080"                     # a port or a range "8000-8100"
//!
//! [[egress]]                         # overlay apps to outside the overlay (`weft egress add`)
//! from = "db"
//! to = "203.0.113.0/24"              # a CIDR, an address or a range A-B
//! protocol = "tcp"                   # tcp, udp, icmp or all (default)
//! ports = "80"                       # tcp and udp: a port or a range (default every port)
//!
//! [[checks]]                         # what `weft lab check` verifies (the seed's outcome)
//! from = "app-b"                     # an app (its first instance), an instance "app-b-0",
//! to = "app-a"                       #   a cell, "internet", or an IP
//! port = 8080                        # TCP connect + request; without a port: ping
//! expect = "allow"                   # or "deny"
//! sees = "cell1"                     # optional: the server must see this as the source
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Every lab namespace is `wl-<lab>.<thing>`: the dot cannot appear in a lab name, so one
/// lab's prefix never matches another's.
pub const NS_PREFIX: &str = "wl-";
pub const DEFAULT_UNDERLAY: &str = "198.18.0.0/24";
pub const DEFAULT_OVERLAY: &str = "10.255.0.0/16";
pub const DEFAULT_BRIDGE_SUBNET: &str = "10.88.0.0/24";
pub const CONTROLLER_PORT: u16 = 7070;
/// The internet namespace's link to the underlay namespace is a /24 of this range; the
/// internet namespace takes the configured address, the underlay side `.1`.
pub const DEFAULT_INTERNET_IP: &str = "203.0.113.2";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub underlay: Option<UnderlaySpec>,
    #[serde(default)]
    pub overlay: Option<OverlaySpec>,
    #[serde(default)]
    pub internet: Option<InternetSpec>,
    #[serde(default)]
    pub cells: Vec<CellSpec>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
    #[serde(default)]
    pub egress: Vec<EgressRuleSpec>,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

/// One `[[egress]]` rule: what `weft egress add FROM TO --protocol --ports` makes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRuleSpec {
    pub from: String,
    pub to: String,
    #[serde(default = "default_egress_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub ports: Option<String>,
}

fn default_egress_protocol() -> String {
    "all".into()
}

impl EgressRuleSpec {
    /// The CLI's spec for this rule (one home for naming and validating it).
    pub fn spec(&self) -> crate::egress::EgressSpec {
        crate::egress::EgressSpec {
            from: self.from.clone(),
            to: self.to.clone(),
            protocol: self.protocol.clone(),
            ports: self.ports.clone(),
            name: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnderlaySpec {
    pub subnet: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverlaySpec {
    #[serde(default = "default_overlay")]
    pub cidr: String,
    #[serde(default = "default_host_prefix")]
    pub host_prefix: u8,
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "yes")]
    pub policy: bool,
    /// The network-wide egress mode: "allow" (default) or "deny".
    #[serde(default = "default_egress")]
    pub egress: String,
}

fn default_egress() -> String {
    "allow".into()
}

fn default_overlay() -> String {
    DEFAULT_OVERLAY.into()
}
fn default_host_prefix() -> u8 {
    24
}
fn default_vni() -> u32 {
    1
}
fn yes() -> bool {
    true
}

impl Default for OverlaySpec {
    fn default() -> Self {
        OverlaySpec {
            cidr: default_overlay(),
            host_prefix: default_host_prefix(),
            vni: default_vni(),
            policy: true,
            egress: default_egress(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InternetSpec {
    #[serde(default = "default_internet_ip")]
    pub ip: String,
    #[serde(default)]
    pub serve: Vec<u16>,
}

fn default_internet_ip() -> String {
    DEFAULT_INTERNET_IP.into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Overlay,
    Bridge,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Overlay => "overlay",
            Mode::Bridge => "bridge",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    pub name: String,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default = "yes")]
    pub masquerade: bool,
    #[serde(default)]
    pub serve: Vec<u16>,
}

fn default_mode() -> Mode {
    Mode::Overlay
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    pub cells: Vec<String>,
    #[serde(default)]
    pub serve: Vec<u16>,
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub from: String,
    pub to: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub ports: Option<String>,
}

fn default_protocol() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub port: Option<u16>,
    pub expect: Expect,
    #[serde(default)]
    pub sees: Option<String>,
}

impl Topology {
    pub fn parse(text: &str, origin: &str) -> Result<Topology> {
        let t: Topology = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(t)
    }

    pub fn load(path: &Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read lab file {}", path.display()))?;
        Topology::parse(&text, &path.display().to_string())
    }

    pub fn has_overlay(&self) -> bool {
        self.cells.iter().any(|c| c.mode == Mode::Overlay)
    }

    pub fn overlay(&self) -> OverlaySpec {
        self.overlay.clone().unwrap_or_default()
    }
}

/// A lab, a cell or an app name: `[a-z0-9][a-z0-9-]*`, at most `max` characters.
pub fn validate_name(field: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("{field} {name:?}: must be 1-{max} characters of a-z, 0-9 and '-', starting with a letter or digit");
    }
    Ok(())
}

fn parse_net(field: &str, s: &str) -> Result<Ipv4Net> {
    let n: Ipv4Net = s
        .parse()
        .map_err(|_| anyhow::anyhow!("{field} {s:?}: not an IPv4 CIDR (like 10.0.0.0/24)"))?;
    if n.network() != n.addr() {
        bail!(
            "{field} {s:?}: has host bits set (the network is {})",
            n.trunc()
        );
    }
    Ok(n)
}

/// Where a lab's things are: every name and address, derived from the topology.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layout {
    pub lab: String,
    pub underlay: UnderlayLayout,
    pub internet: Option<InternetLayout>,
    pub overlay: Option<OverlayLayout>,
    pub cells: Vec<CellLayout>,
    pub containers: Vec<ContainerLayout>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnderlayLayout {
    pub namespace: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InternetLayout {
    pub namespace: String,
    pub ip: Ipv4Addr,
    /// The underlay namespace's end of the link to the internet namespace.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub serve: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OverlayLayout {
    pub cidr: Ipv4Net,
    pub host_prefix: u8,
    pub vni: u32,
    pub policy: bool,
    /// `https://<underlay gateway>:7070`, served from the underlay namespace.
    pub controller: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CellLayout {
    pub name: String,
    pub namespace: String,
    pub mode: Mode,
    pub underlay_ip: Ipv4Addr,
    /// The underlay namespace's end of this cell's link (`u<n>`); the cell's is `eth0`.
    pub uplink: String,
    /// Bridge mode: the bridge subnet (the overlay subnet comes from the lease).
    pub bridge_subnet: Option<Ipv4Net>,
    pub masquerade: bool,
    pub serve: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerLayout {
    /// `<app>-<i>`: also the lab's name for the container in checks and traces.
    pub name: String,
    pub app: String,
    pub cell: String,
    pub namespace: String,
    /// The CNI container id.
    pub id: String,
    pub serve: Vec<u16>,
    pub command: Vec<String>,
}

impl Layout {
    pub fn cell(&self, name: &str) -> Option<&CellLayout> {
        self.cells.iter().find(|c| c.name == name)
    }

    /// Every namespace of the lab, in the order they are made.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.underlay.namespace.clone()];
        v.extend(self.internet.iter().map(|i| i.namespace.clone()));
        v.extend(self.cells.iter().map(|c| c.namespace.clone()));
        v.extend(self.containers.iter().map(|c| c.namespace.clone()));
        v
    }
}

/// The namespace prefix of a lab (`wl-<lab>.`).
pub fn ns_prefix(lab: &str) -> String {
    format!("{NS_PREFIX}{lab}.")
}

/// Checks the topology and derives its layout; every error names the field.
pub fn layout(t: &Topology) -> Result<Layout> {
    validate_name("name", &t.name, 16)?;
    if t.cells.is_empty() {
        bail!("cells: a lab needs at least one cell");
    }
    let prefix = ns_prefix(&t.name);
    let underlay_net = parse_net(
        "underlay.subnet",
        t.underlay
            .as_ref()
            .map(|u| u.subnet.as_str())
            .unwrap_or(DEFAULT_UNDERLAY),
    )?;
    let hosts: Vec<Ipv4Addr> = underlay_net.hosts().collect();
    if hosts.len() < t.cells.len() + 1 {
        bail!(
            "underlay.subnet {underlay_net}: too small for {} cells and the underlay gateway",
            t.cells.len()
        );
    }
    let gateway = *hosts.last().context("underlay.subnet: no host addresses")?;
    let underlay = UnderlayLayout {
        namespace: format!("{prefix}underlay"),
        bridge: "br0".into(),
        subnet: underlay_net,
        gateway,
    };
    let overlay = if t.has_overlay() {
        let o = t.overlay();
        let cidr = parse_net("overlay.cidr", &o.cidr)?;
        if o.host_prefix <= cidr.prefix_len() || o.host_prefix > 30 {
            bail!(
                "overlay.host_prefix {}: must be longer than the overlay's /{} and at most 30",
                o.host_prefix,
                cidr.prefix_len()
            );
        }
        if cidr.contains(&underlay_net.network()) || underlay_net.contains(&cidr.network()) {
            bail!("overlay.cidr {cidr}: overlaps underlay.subnet {underlay_net}");
        }
        if o.vni == 0 || o.vni > 0xff_ffff {
            bail!("overlay.vni {}: must be 1-16777215", o.vni);
        }
        Some(OverlayLayout {
            cidr,
            host_prefix: o.host_prefix,
            vni: o.vni,
            policy: o.policy,
            controller: format!("https://{gateway}:{CONTROLLER_PORT}"),
        })
    } else {
        if t.overlay.is_some() {
            bail!("overlay: set, but no cell has mode = \"overlay\"");
        }
        None
    };
    let internet = match &t.internet {
        None => None,
        Some(i) => {
            let ip: Ipv4Addr =
                i.ip.parse()
                    .map_err(|_| anyhow::anyhow!("internet.ip {:?}: not an IPv4 address", i.ip))?;
            let net = Ipv4Net::new(ip, 24).context("internet.ip")?.trunc();
            let gw = net
                .hosts()
                .find(|h| *h != ip)
                .context("internet.ip: no room for a gateway")?;
            if net.contains(&underlay_net.network()) || underlay_net.contains(&ip) {
                bail!("internet.ip {ip}: its /24 overlaps underlay.subnet {underlay_net}");
            }
            if let Some(o) = &overlay {
                if o.cidr.contains(&ip) {
                    bail!("internet.ip {ip}: inside overlay.cidr {}", o.cidr);
                }
            }
            Some(InternetLayout {
                namespace: format!("{prefix}internet"),
                ip,
                gateway: gw,
                prefix: 24,
                serve: i.serve.clone(),
            })
        }
    };
    let mut names: BTreeSet<String> = ["underlay", "internet"].map(String::from).into();
    let mut cells = Vec::new();
    for (i, c) in t.cells.iter().enumerate() {
        let field = format!("cells[{i}].name");
        validate_name(&field, &c.name, 24)?;
        if !names.insert(c.name.clone()) {
            bail!("{field} {:?}: used twice (or reserved)", c.name);
        }
        let bridge_subnet = match (c.mode, &c.subnet) {
            (Mode::Bridge, s) => {
                let s = s.as_deref().unwrap_or(DEFAULT_BRIDGE_SUBNET);
                let n = parse_net(&format!("cells[{i}].subnet"), s)?;
                if n.prefix_len() > 30 {
                    bail!("cells[{i}].subnet {n}: too small (at most /30)");
                }
                Some(n)
            }
            (Mode::Overlay, Some(_)) => bail!(
                "cells[{i}].subnet: only for mode = \"bridge\" (an overlay cell's subnet is its lease)"
            ),
            (Mode::Overlay, None) => None,
        };
        cells.push(CellLayout {
            name: c.name.clone(),
            namespace: format!("{prefix}{}", c.name),
            mode: c.mode,
            underlay_ip: hosts[i],
            uplink: format!("u{}", i + 1),
            bridge_subnet,
            masquerade: c.masquerade || c.mode == Mode::Overlay,
            serve: c.serve.clone(),
        });
    }
    let mut containers = Vec::new();
    let mut apps = BTreeSet::new();
    for (i, a) in t.apps.iter().enumerate() {
        let field = format!("apps[{i}].name");
        validate_name(&field, &a.name, 24)?;
        if !apps.insert(a.name.clone()) || names.contains(&a.name) {
            bail!("{field} {:?}: used twice (or also a cell name)", a.name);
        }
        if a.cells.is_empty() {
            bail!(
                "apps[{i}].cells: name at least one cell to run {} on",
                a.name
            );
        }
        if !a.serve.is_empty() && !a.command.is_empty() {
            bail!("apps[{i}]: give serve or command, not both");
        }
        for (k, cell) in a.cells.iter().enumerate() {
            if !cells.iter().any(|c| c.name == *cell) {
                bail!("apps[{i}].cells[{k}] {cell:?}: no such cell");
            }
            let name = format!("{}-{k}", a.name);
            if !names.insert(name.clone()) {
                bail!("apps[{i}]: instance name {name:?} is also the name of a cell");
            }
            containers.push(ContainerLayout {
                namespace: format!("{prefix}{name}"),
                id: format!("{}-{name}", t.name),
                name,
                app: a.name.clone(),
                cell: cell.clone(),
                serve: a.serve.clone(),
                command: a.command.clone(),
            });
        }
    }
    for (i, p) in t.policies.iter().enumerate() {
        for (f, app) in [("from", &p.from), ("to", &p.to)] {
            if !apps.contains(app) {
                bail!("policies[{i}].{f} {app:?}: no such app");
            }
        }
        policy_of(p).with_context(|| format!("policies[{i}]"))?;
        if overlay.is_none() {
            bail!("policies[{i}]: policies need cells in overlay mode");
        }
    }
    if let Some(o) = &t.overlay {
        if weft_api::egress::EgressMode::parse(&o.egress).is_none() {
            bail!(
                "overlay.egress {:?}: must be \"allow\" or \"deny\"",
                o.egress
            );
        }
    }
    for (i, e) in t.egress.iter().enumerate() {
        if !apps.contains(&e.from) {
            bail!("egress[{i}].from {:?}: no such app", e.from);
        }
        e.spec()
            .destination()
            .with_context(|| format!("egress[{i}]"))?;
        if overlay.is_none() {
            bail!("egress[{i}]: egress rules need cells in overlay mode");
        }
    }
    let layout = Layout {
        lab: t.name.clone(),
        underlay,
        internet,
        overlay,
        cells,
        containers,
    };
    for (i, c) in t.checks.iter().enumerate() {
        for (f, v) in [("from", &c.from), ("to", &c.to)] {
            if v.parse::<Ipv4Addr>().is_err() && !layout.knows(v) {
                bail!("checks[{i}].{f} {v:?}: not an app, container, cell, \"internet\" or IPv4 address of this lab");
            }
        }
        if let Some(s) = &c.sees {
            if s.parse::<Ipv4Addr>().is_err() && !layout.knows(s) {
                bail!("checks[{i}].sees {s:?}: not an app, container, cell, \"internet\" or IPv4 address of this lab");
            }
            if c.port.is_none() {
                bail!("checks[{i}].sees: needs a port (the server reports who it sees)");
            }
        }
    }
    Ok(layout)
}

impl Layout {
    /// Is `name` an app, a container, a cell or "internet" of this lab?
    pub fn knows(&self, name: &str) -> bool {
        (name == "internet" && self.internet.is_some())
            || self.cell(name).is_some()
            || self
                .containers
                .iter()
                .any(|c| c.name == name || c.app == name)
    }

    /// The container called `name`, or the first instance of the app `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerLayout> {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .or_else(|| self.containers.iter().find(|c| c.app == name))
    }

    /// The weft-cni network config of a cell, as a runtime would pass it.
    pub fn cni_conf(&self, cell: &CellLayout, dir: &Path) -> serde_json::Value {
        let data = dir.join("cni").display().to_string();
        match cell.mode {
            Mode::Overlay => serde_json::json!({
                "cniVersion": "1.1.0",
                "name": format!("{}-overlay", self.lab),
                "type": "weft-cni",
                "mode": "overlay",
                "leaseFile": dir.join("lease.json").display().to_string(),
                "dataDir": data,
            }),
            Mode::Bridge => {
                // `layout` gives every bridge cell its subnet (DEFAULT_BRIDGE_SUBNET if unset).
                let subnet = cell
                    .bridge_subnet
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| DEFAULT_BRIDGE_SUBNET.to_string());
                serde_json::json!({
                    "cniVersion": "1.1.0",
                    "name": format!("{}-bridge", self.lab),
                    "type": "weft-cni",
                    "bridge": "weft0",
                    "ipMasq": cell.masquerade,
                    "dataDir": data,
                    "ipam": { "ranges": [[{ "subnet": subnet }]] },
                })
            }
        }
    }
}

/// The controller policy a topology policy stands for.
pub fn policy_of(p: &PolicySpec) -> Result<weft_api::model::Policy> {
    use weft_api::model::{Policy, Protocol};
    let protocol = Protocol::parse(&p.protocol)
        .with_context(|| format!("protocol {:?}: must be tcp, udp or icmp", p.protocol))?;
    let ports = match (&p.ports, protocol) {
        (None, Protocol::Icmp) => None,
        (Some(_), Protocol::Icmp) => bail!("ports: icmp has no ports"),
        (None, _) => bail!("ports: required for {protocol}"),
        (Some(s), _) => Some(crate::policy::parse_ports(s).context("ports")?),
    };
    Ok(Policy::new(&p.from, &p.to, protocol, ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C2C: &str = include_str!("../../../../examples/c2c.toml");
    const VETH: &str = include_str!("../../../../examples/veth.toml");
    const BRIDGE: &str = include_str!("../../../../examples/bridge-nat.toml");

    #[test]
    fn examples_lay_out() {
        for (name, text) in [("c2c", C2C), ("veth", VETH), ("bridge-nat", BRIDGE)] {
            let t = Topology::parse(text, name).unwrap();
            let l = layout(&t).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(l.lab, t.name);
            for ns in l.namespaces() {
                assert!(ns.starts_with(&ns_prefix(&t.name)), "{ns}");
            }
        }
    }

    #[test]
    fn c2c_layout() {
        let l = layout(&Topology::parse(C2C, "c2c").unwrap()).unwrap();
        assert_eq!(l.underlay.gateway.to_string(), "198.18.0.254");
        assert_eq!(l.cells[0].underlay_ip.to_string(), "198.18.0.1");
        assert_eq!(l.cells[1].underlay_ip.to_string(), "198.18.0.2");
        assert_eq!(
            l.overlay.as_ref().unwrap().controller,
            "https://198.18.0.254:7070"
        );
        let b = l.container("app-b").unwrap();
        assert_eq!((b.name.as_str(), b.cell.as_str()), ("app-b-0", "cell1"));
        assert_eq!(b.namespace, "wl-c2c.app-b-0");
    }

    fn err(text: &str) -> String {
        match Topology::parse(text, "t").and_then(|t| layout(&t)) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn egress_rules_parse_and_errors_name_the_field() {
        let cells = "name=\"x\"\n[overlay]\negress=\"deny\"\n[[cells]]\nname=\"a\"\nmode=\"overlay\"\n[[apps]]\nname=\"db\"\ncells=[\"a\"]\n";
        let ok = Topology::parse(
            &format!(
            "{cells}[[egress]]\nfrom=\"db\"\nto=\"203.0.113.0/24\"\nprotocol=\"tcp\"\nports=\"80\""
        ),
            "t",
        )
        .unwrap();
        layout(&ok).unwrap();
        assert_eq!(ok.overlay.as_ref().unwrap().egress, "deny");
        let d = ok.egress[0].spec().destination().unwrap();
        assert_eq!(d.rules[0].ports.as_deref(), Some("80"));
        assert!(
            err(&format!("{cells}[[egress]]\nfrom=\"web\"\nto=\"1.1.1.1\""))
                .contains("egress[0].from")
        );
        assert!(err(&format!(
            "{cells}[[egress]]\nfrom=\"db\"\nto=\"1.1.1.1/40\""
        ))
        .contains("egress[0]"));
        assert!(err(&cells.replace("deny", "maybe")).contains("overlay.egress"));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("name = \"Bad_Name\"\n[[cells]]\nname=\"a\"").contains("name \"Bad_Name\""));
        assert!(err("name = \"x\"").contains("cells"));
        assert!(err("name = \"x\"\nbogus = 1\n[[cells]]\nname=\"a\"").contains("bogus"));
        assert!(
            err("name=\"x\"\n[underlay]\nsubnet=\"10.0.0.1/24\"\n[[cells]]\nname=\"a\"")
                .contains("underlay.subnet")
        );
        assert!(
            err("name=\"x\"\n[[cells]]\nname=\"a\"\n[[cells]]\nname=\"a\"")
                .contains("cells[1].name")
        );
        assert!(
            err("name=\"x\"\n[[cells]]\nname=\"a\"\n[[apps]]\nname=\"w\"\ncells=[\"b\"]")
                .contains("apps[0].cells[0]")
        );
        assert!(err(
            "name=\"x\"\n[[cells]]\nname=\"a\"\n[[apps]]\nname=\"w\"\ncells=[\"a\"]\n[[policies]]\nfrom=\"w\"\nto=\"v\"\nports=\"80\""
        )
        .contains("policies[0].to"));
        assert!(err(
            "name=\"x\"\n[[cells]]\nname=\"a\"\n[[apps]]\nname=\"w\"\ncells=[\"a\"]\n[[policies]]\nfrom=\"w\"\nto=\"w\"\nports=\"80-x\""
        )
        .contains("ports"));
        assert!(err("name=\"x\"\n[[cells]]\nname=\"a\"\n[[checks]]\nfrom=\"a\"\nto=\"nope\"\nexpect=\"allow\"")
            .contains("checks[0].to"));
        assert!(
            err("name=\"x\"\n[overlay]\ncidr=\"198.18.0.0/16\"\n[[cells]]\nname=\"a\"")
                .contains("overlaps")
        );
        assert!(
            err("name=\"x\"\n[[cells]]\nname=\"a\"\nmode=\"bridge\"\nsubnet=\"10.1.0.0/31\"")
                .contains("cells[0].subnet")
        );
    }
}
