//! Each host gets what it needs (issue 19 item 1): a watch that names its host (`?host=NAME`;
//! with a certificate only the certificate's host, else 403) is sent every
//! lease (routes to every other host), every instance (internal DNS answers for any app), the
//! policies whose destination runs on the host, and the tags of those policies' sources and of
//! the host's own apps, and the whole egress state (mode, destinations, egress policies). A
//! host with no containers receives leases, instances and the egress state only.
//!
//! The apps that run on a host are the apps it claims and the apps of the containers it
//! reports (placement). When that set changes (an `instance_put` or `instance_deleted` of the
//! host changes it), the stream sends a fresh filtered snapshot, which replaces what the
//! watcher had; between such changes each change is passed on or left out by [`HostView`].
//! A filtered stream begins with a snapshot cut from the shared snapshot in memory, or resumes
//! (`since`) with the changes this host's view lets through, unless its own instances changed
//! meanwhile (then a fresh cut; see `watch`).
//!
//! The agent does not ask for a cut stream yet: a change of the apps a host runs comes as a
//! fresh snapshot mid-stream, which agents count (and tests assert on) as a snapshot; sending
//! it as changes instead is the next step.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use weft_api::model::{Change, Event, Snapshot};

/// Policy indexes by destination app, built once per shared snapshot.
pub type ByDestination = HashMap<String, Vec<usize>>;

/// Indexes `snap`'s policies by destination app.
pub fn by_destination(snap: &Snapshot) -> ByDestination {
    let mut out: ByDestination = HashMap::new();
    for (i, p) in snap.policies.iter().enumerate() {
        out.entry(p.destination.id.clone()).or_default().push(i);
    }
    out
}

/// What a host has been sent, to decide about each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    host: String,
    /// The apps the host claims (as of its snapshot).
    claims: BTreeSet<String>,
    /// The host's instances: container id → app.
    instances: BTreeMap<String, String>,
    /// The apps that run on the host: claims and instances' apps.
    local: BTreeSet<String>,
    /// The apps whose tags the host is sent: its own and its policies' sources.
    apps: BTreeSet<String>,
}

/// What to do with one change on a filtered stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Send,
    Skip,
    /// The apps that run on the host changed: send a fresh filtered snapshot instead.
    Resnapshot,
    /// Send the change, after the tag of this app (a policy source the host did not know).
    SendAfterApp(String),
}

impl HostView {
    /// The view of `host` and its filtered snapshot, from a whole snapshot, its policies by
    /// destination and the apps the host claims.
    pub fn new(
        host: &str,
        snap: &Snapshot,
        by_dest: &ByDestination,
        claims: BTreeSet<String>,
    ) -> (HostView, Snapshot) {
        let instances: BTreeMap<String, String> = snap
            .instances
            .iter()
            .filter(|i| i.host == host)
            .map(|i| (i.id.clone(), i.app.clone()))
            .collect();
        let local: BTreeSet<String> = claims
            .iter()
            .cloned()
            .chain(instances.values().cloned())
            .collect();
        let mut idx: Vec<usize> = local
            .iter()
            .filter_map(|app| by_dest.get(app))
            .flatten()
            .copied()
            .collect();
        idx.sort_unstable();
        let policies: Vec<_> = idx.iter().map(|i| snap.policies[*i].clone()).collect();
        let apps: BTreeSet<String> = local
            .iter()
            .cloned()
            .chain(policies.iter().map(|p| p.source.id.clone()))
            .collect();
        let filtered = Snapshot {
            revision: snap.revision,
            leases: snap.leases.clone(),
            apps: snap
                .apps
                .iter()
                .filter(|a| apps.contains(&a.id))
                .cloned()
                .collect(),
            policies,
            instances: snap.instances.clone(),
            egress: snap.egress.clone(),
        };
        let view = HostView {
            host: host.to_string(),
            claims,
            instances,
            local,
            apps,
        };
        (view, filtered)
    }

    fn local_now(&self) -> BTreeSet<String> {
        self.claims
            .iter()
            .cloned()
            .chain(self.instances.values().cloned())
            .collect()
    }

    /// Whether (and how) `change` goes to this host; updates the view.
    pub fn on_change(&mut self, change: &Change) -> Verdict {
        match &change.event {
            Event::LeasePut { .. } | Event::LeaseDeleted { .. } => Verdict::Send,
            // The egress state goes whole to every host (as in its snapshot): small, and a
            // host enforces only the rules of the apps it runs.
            Event::EgressModeSet { .. }
            | Event::DestinationPut { .. }
            | Event::DestinationDeleted { .. }
            | Event::EgressPolicyCreated { .. }
            | Event::EgressPolicyDeleted { .. } => Verdict::Send,
            Event::InstancePut { instance } | Event::InstanceDeleted { instance }
                if instance.host == self.host =>
            {
                if matches!(change.event, Event::InstancePut { .. }) {
                    self.instances
                        .insert(instance.id.clone(), instance.app.clone());
                } else {
                    self.instances.remove(&instance.id);
                }
                if self.local_now() != self.local {
                    Verdict::Resnapshot
                } else {
                    Verdict::Send
                }
            }
            Event::InstancePut { .. } | Event::InstanceDeleted { .. } => Verdict::Send,
            Event::AppPut { app } | Event::AppDeleted { app } => {
                if self.apps.contains(&app.id) {
                    Verdict::Send
                } else {
                    Verdict::Skip
                }
            }
            Event::PolicyCreated { policy } => {
                if !self.local.contains(&policy.destination.id) {
                    Verdict::Skip
                } else if self.apps.insert(policy.source.id.clone()) {
                    Verdict::SendAfterApp(policy.source.id.clone())
                } else {
                    Verdict::Send
                }
            }
            Event::PolicyDeleted { policy } => {
                if self.local.contains(&policy.destination.id) {
                    Verdict::Send
                } else {
                    Verdict::Skip
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::model::{App, Instance, Lease, Policy, Protocol};

    fn app(id: &str, tag: u16) -> App {
        App {
            id: id.into(),
            tag,
            claimed: true,
        }
    }

    fn instance(host: &str, id: &str, app: &str) -> Instance {
        Instance {
            host: host.into(),
            id: id.into(),
            app: app.into(),
            index: None,
            ip: "10.255.1.2".parse().unwrap(),
        }
    }

    fn lease(host: &str) -> Lease {
        Lease {
            host: host.into(),
            underlay_ip: "192.0.2.1".parse().unwrap(),
            subnet: "10.255.1.0/24".parse().unwrap(),
            vtep_mac: "ee:ee:0a:ff:01:00".into(),
            acquired_at: 0,
            expires_at: 0,
        }
    }

    fn change(event: Event) -> Change {
        Change { revision: 9, event }
    }

    fn snap() -> Snapshot {
        Snapshot {
            revision: 5,
            leases: vec![lease("h1"), lease("h2")],
            apps: vec![app("web", 1), app("api", 2), app("db", 3), app("batch", 4)],
            policies: vec![
                Policy::new("web", "api", Protocol::Icmp, None),
                Policy::new("api", "db", Protocol::Icmp, None),
                Policy::new("batch", "db", Protocol::Icmp, None),
            ],
            instances: vec![instance("h1", "c1", "api"), instance("h2", "c2", "db")],
            egress: Default::default(),
        }
    }

    #[test]
    fn a_host_gets_its_destinations_policies_and_their_sources_tags() {
        let s = snap();
        let idx = by_destination(&s);
        // h1 runs api (an instance) and claims nothing else.
        let (_, f) = HostView::new("h1", &s, &idx, BTreeSet::new());
        assert_eq!(f.leases.len(), 2, "every lease");
        assert_eq!(f.instances.len(), 2, "every instance (DNS)");
        assert_eq!(f.policies, vec![s.policies[0].clone()]);
        let ids: Vec<&str> = f.apps.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, vec!["web", "api"]);
        // h2 runs db: two policies, three tags.
        let (_, f) = HostView::new("h2", &s, &idx, BTreeSet::new());
        assert_eq!(f.policies, s.policies[1..].to_vec());
        let ids: Vec<&str> = f.apps.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, vec!["api", "db", "batch"]);
        // A host with no containers: leases and instances only.
        let (_, f) = HostView::new("h3", &s, &idx, BTreeSet::new());
        assert!(f.policies.is_empty() && f.apps.is_empty());
        assert_eq!(f.leases.len(), 2);
        // A claimed app counts as running there.
        let (_, f) = HostView::new("h3", &s, &idx, ["api".to_string()].into());
        assert_eq!(f.policies, vec![s.policies[0].clone()]);
    }

    #[test]
    fn changes_are_passed_left_out_or_trigger_a_snapshot() {
        let s = snap();
        let idx = by_destination(&s);
        let (mut v, _) = HostView::new("h1", &s, &idx, BTreeSet::new());
        use Verdict::*;
        assert_eq!(
            v.on_change(&change(Event::LeasePut { lease: lease("h9") })),
            Send
        );
        // Policies: to a local destination only; an unknown source's tag first.
        let to_api = Policy::new("batch", "api", Protocol::Icmp, None);
        assert_eq!(
            v.on_change(&change(Event::PolicyCreated {
                policy: to_api.clone()
            })),
            SendAfterApp("batch".into())
        );
        assert_eq!(
            v.on_change(&change(Event::PolicyCreated {
                policy: Policy::new("web", "api", Protocol::Tcp, None)
            })),
            Send,
            "web's tag is known"
        );
        assert_eq!(
            v.on_change(&change(Event::PolicyCreated {
                policy: Policy::new("web", "db", Protocol::Icmp, None)
            })),
            Skip
        );
        assert_eq!(
            v.on_change(&change(Event::PolicyDeleted { policy: to_api })),
            Send
        );
        // Tags: of known apps only.
        assert_eq!(
            v.on_change(&change(Event::AppPut { app: app("web", 7) })),
            Send
        );
        assert_eq!(
            v.on_change(&change(Event::AppPut { app: app("x", 8) })),
            Skip
        );
        // Other hosts' instances pass (DNS); ours pass unless the set of local apps changes.
        assert_eq!(
            v.on_change(&change(Event::InstancePut {
                instance: instance("h2", "c9", "x")
            })),
            Send
        );
        assert_eq!(
            v.on_change(&change(Event::InstancePut {
                instance: instance("h1", "c3", "api")
            })),
            Send,
            "a second api container"
        );
        assert_eq!(
            v.on_change(&change(Event::InstancePut {
                instance: instance("h1", "c4", "db")
            })),
            Resnapshot
        );
        // After the snapshot the view is rebuilt; the same change on it is just sent.
        let (mut v, _) = HostView::new("h1", &s, &idx, BTreeSet::new());
        assert_eq!(
            v.on_change(&change(Event::InstanceDeleted {
                instance: instance("h1", "c1", "api")
            })),
            Resnapshot,
            "api no longer runs here"
        );
    }
}
