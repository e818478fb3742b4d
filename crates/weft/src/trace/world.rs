//! What exists, as trace sees it: the hosts whose kernels it can read (a lab's cells, or
//! this host), their containers (weft-cni's attachment records), their leases (the agents'
//! lease files) and, for what it cannot see, the controller (leases and policies).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use weft_api::records::Plan;

use crate::lab::state::{self, State};
use crate::lab::topology::Mode;
use crate::rt::{block_in, runtime};

/// One host whose kernel trace can read: a lab cell (a namespace) or this host.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// None: the calling process's namespace.
    pub ns: Option<String>,
    pub cni_dir: PathBuf,
    pub lease_file: PathBuf,
    pub mode: Mode,
    pub underlay_ip: Option<Ipv4Addr>,
}

/// A container as trace knows it.
#[derive(Debug, Clone)]
pub struct Ctr {
    pub name: String,
    pub ip: Ipv4Addr,
    pub app: Option<String>,
    pub netns: String,
    pub host_veth: String,
    pub ifname: String,
    pub host: Host,
}

impl Ctr {
    /// Its app, for people.
    pub fn app_name(&self) -> String {
        self.app.clone().unwrap_or_else(|| "(no app)".into())
    }
}

/// The hosts trace can see, and the lab they belong to (if any).
pub struct World {
    pub hosts: Vec<Host>,
    pub lab: Option<State>,
}

/// The containers weft-cni attached on `h` (its attachment records).
fn containers_of(h: &Host) -> Vec<Ctr> {
    weft_api::records::attachments(&h.cni_dir)
        .into_iter()
        .filter_map(|p: Plan| {
            let ip = p.addresses().into_iter().find_map(|a| match a {
                IpAddr::V4(v) => Some(v),
                _ => None,
            })?;
            Some(Ctr {
                name: p.container_id().to_string(),
                ip,
                app: p.app_id().map(str::to_string),
                netns: p.netns().to_string(),
                host_veth: p.host_veth().to_string(),
                ifname: p.ifname().to_string(),
                host: h.clone(),
            })
        })
        .collect()
}

/// Who the lab calls a container: its lab name (from the CNI container id `<lab>-<name>`).
fn lab_name_of(st: &State, id: &str) -> String {
    id.strip_prefix(&format!("{}-", st.layout.lab))
        .unwrap_or(id)
        .to_string()
}

impl World {
    /// Every cell of a lab that is up.
    pub fn lab(st: State) -> World {
        let hosts = st
            .layout
            .cells
            .iter()
            .map(|c| {
                let dir = st.cell_dir(&c.name);
                Host {
                    name: c.name.clone(),
                    ns: Some(c.namespace.clone()),
                    cni_dir: dir.join("cni"),
                    lease_file: dir.join("lease.json"),
                    mode: c.mode,
                    underlay_ip: Some(c.underlay_ip),
                }
            })
            .collect();
        World {
            hosts,
            lab: Some(st),
        }
    }

    /// This host alone, from weft-cni's state and the agent's lease file.
    pub fn this_host(cni_dir: PathBuf, lease_file: PathBuf) -> World {
        // A host with a lease runs overlay containers; without, bridge mode.
        let mode = if lease_file.exists() {
            Mode::Overlay
        } else {
            Mode::Bridge
        };
        World {
            hosts: vec![Host {
                name: "this host".into(),
                ns: None,
                cni_dir,
                lease_file,
                mode,
                underlay_ip: None,
            }],
            lab: None,
        }
    }

    pub fn containers(&self) -> Vec<Ctr> {
        let mut v: Vec<Ctr> = self.hosts.iter().flat_map(containers_of).collect();
        if let Some(st) = &self.lab {
            for c in &mut v {
                c.name = lab_name_of(st, &c.name);
                if c.app.is_none() {
                    c.app = st.layout.container(&c.name).map(|l| l.app.clone());
                }
            }
        }
        v
    }

    /// A container by lab name, app, IP or id (prefix).
    pub fn find(&self, what: &str) -> Option<Ctr> {
        let all = self.containers();
        if let Ok(ip) = what.parse::<Ipv4Addr>() {
            return all.into_iter().find(|c| c.ip == ip);
        }
        if let Some(c) = all.iter().find(|c| c.name == what) {
            return Some(c.clone());
        }
        if let Some(st) = &self.lab {
            if let Some(c) = st.layout.container(what) {
                return all.into_iter().find(|x| x.name == c.name);
            }
        }
        all.into_iter()
            .find(|c| c.name.starts_with(what) || c.app.as_deref() == Some(what))
    }

    /// The host holding the overlay subnet that contains `ip`.
    pub fn host_of_subnet(&self, ip: Ipv4Addr) -> Option<Host> {
        self.hosts
            .iter()
            .find(|h| {
                weft_api::records::HostLease::read(&h.lease_file)
                    .is_ok_and(|l| l.subnet.contains(&ip))
            })
            .cloned()
    }

    /// The lab's controller (reached from inside its underlay namespace).
    pub fn lab_controller(&self) -> Controller {
        match &self.lab {
            Some(st) => Controller {
                client: state::client(st).ok(),
                ns: Some(st.layout.underlay.namespace.clone()),
            },
            None => Controller::none(),
        }
    }
}

/// The controller, for what trace cannot see from here: who holds a lease, which policy
/// allows a flow. Every question answers `None` when there is no controller or it does not
/// answer.
pub struct Controller {
    pub client: Option<weft_api::Client>,
    /// The namespace to reach it from (a lab's underlay); None: this one.
    pub ns: Option<String>,
}

impl Controller {
    pub fn none() -> Controller {
        Controller {
            client: None,
            ns: None,
        }
    }

    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(
                weft_api::Client,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>>>>
            + Send
            + 'static,
    ) -> Option<T> {
        let c = self.client.clone()?;
        match &self.ns {
            Some(ns) => block_in(ns, move || f(c)).ok(),
            None => runtime().ok()?.block_on(f(c)).ok(),
        }
    }

    /// The host holding the lease of the subnet that holds `ip`.
    pub fn lease_holder(&self, ip: Ipv4Addr) -> Option<String> {
        self.ask(move |c| {
            Box::pin(async move {
                let l = c.leases().await?;
                Ok(l.leases
                    .into_iter()
                    .find(|l| l.subnet.contains(&ip))
                    .map(|l| format!("host {} (underlay {})", l.host, l.underlay_ip)))
            })
        })
        .flatten()
    }

    /// The controller's policies.
    pub fn policies(&self) -> Option<Vec<weft_api::model::Policy>> {
        self.ask(|c| Box::pin(async move { Ok(c.policies(None).await?.policies) }))
    }

    /// The controller's egress state: mode, destinations and egress policies.
    pub fn egress(&self) -> Option<weft_api::egress::EgressState> {
        self.ask(|c| {
            Box::pin(async move {
                let mode = c.egress_mode().await?.mode;
                let destinations = c.destinations().await?.destinations;
                let policies = c.egress_policies().await?.egress_policies;
                Ok(weft_api::egress::EgressState {
                    mode,
                    destinations,
                    policies,
                })
            })
        })
    }
}
