//! The watch-to-state reducer: what the controller says (a snapshot, then changes, as the
//! watch delivers them) folded into the agent's desired state. Pure: the loop applies the
//! state to the kernel afterwards, once per batch (see `Agent::on_messages`).

use std::collections::{BTreeMap, BTreeSet};

use weft_api::egress::EgressState;
use weft_api::model::{Event, Instance, Lease, Policy, WatchMessage};

/// What the controller says this host should enforce.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Every host's lease, by host.
    pub leases: BTreeMap<String, Lease>,
    /// Every app's tag, as the controller publishes them.
    pub apps: BTreeMap<String, u16>,
    /// Every policy (without tags: they are the apps').
    pub policies: BTreeSet<Policy>,
    /// Every host's running instances (placement), by (host, container id): DNS answers and
    /// audit names; nothing in this host's tables depends on them.
    pub instances: BTreeMap<(String, String), Instance>,
    /// Egress mode, destinations and egress policies.
    pub egress: EgressState,
    /// Whether the controller's snapshot has arrived. Until then the kernel keeps enforcing
    /// what an earlier run of the agent applied: a restart must not open or close anything.
    pub have_snapshot: bool,
}

/// What a batch changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Anything but heartbeats.
    pub anything: bool,
    /// A lease came, went or changed (the VTEP's remote entries follow).
    pub leases_changed: bool,
    /// The placement changed (DNS and the audit log's names follow; the kernel does not).
    pub instances_changed: bool,
}

impl Desired {
    /// Takes a batch of watch messages in, message by message.
    pub fn take(&mut self, batch: Vec<WatchMessage>) -> Taken {
        let mut t = Taken::default();
        for msg in batch {
            match msg {
                WatchMessage::Snapshot(s) => {
                    self.instances = s
                        .instances
                        .into_iter()
                        .map(|i| ((i.host.clone(), i.id.clone()), i))
                        .collect();
                    t.instances_changed = true;
                    self.leases = s.leases.into_iter().map(|l| (l.host.clone(), l)).collect();
                    self.apps = s.apps.into_iter().map(|a| (a.id, a.tag)).collect();
                    self.policies = s.policies.iter().map(Policy::untagged).collect();
                    self.egress = s.egress;
                    self.have_snapshot = true;
                    t.leases_changed = true;
                }
                WatchMessage::Change(c) => match c.event {
                    Event::LeasePut { lease } => {
                        self.leases.insert(lease.host.clone(), lease);
                        t.leases_changed = true;
                    }
                    Event::LeaseDeleted { lease } => {
                        if self.leases.get(&lease.host).map(|l| l.subnet) == Some(lease.subnet) {
                            self.leases.remove(&lease.host);
                        }
                        t.leases_changed = true;
                    }
                    Event::AppPut { app } => {
                        self.apps.insert(app.id, app.tag);
                    }
                    Event::AppDeleted { app } => {
                        self.apps.remove(&app.id);
                    }
                    Event::PolicyCreated { policy } => {
                        self.policies.insert(policy.untagged());
                    }
                    Event::PolicyDeleted { policy } => {
                        self.policies.remove(&policy.untagged());
                    }
                    // Placement: nothing in this host's tables depends on it.
                    Event::InstancePut { instance } => {
                        self.instances
                            .insert((instance.host.clone(), instance.id.clone()), instance);
                        t.instances_changed = true;
                        continue;
                    }
                    Event::InstanceDeleted { instance } => {
                        self.instances
                            .remove(&(instance.host.clone(), instance.id.clone()));
                        t.instances_changed = true;
                        continue;
                    }
                    e @ (Event::EgressModeSet { .. }
                    | Event::DestinationPut { .. }
                    | Event::DestinationDeleted { .. }
                    | Event::EgressPolicyCreated { .. }
                    | Event::EgressPolicyDeleted { .. }) => {
                        self.egress.apply(&e);
                    }
                },
                WatchMessage::Heartbeat { .. } => continue,
            }
            t.anything = true;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::model::{Change, Snapshot};

    fn lease(host: &str, subnet: &str) -> Lease {
        Lease {
            host: host.into(),
            underlay_ip: "198.18.0.2".parse().unwrap(),
            subnet: subnet.parse().unwrap(),
            vtep_mac: "ee:ee:0a:ff:02:00".into(),
            acquired_at: 0,
            expires_at: 0,
        }
    }

    fn change(event: Event) -> WatchMessage {
        WatchMessage::Change(Change { revision: 2, event })
    }

    #[test]
    fn a_snapshot_then_changes_fold_into_the_desired_state() {
        let mut d = Desired::default();
        let t = d.take(vec![WatchMessage::Snapshot(Snapshot {
            revision: 1,
            leases: vec![lease("cell2", "10.255.2.0/24")],
            apps: vec![],
            policies: vec![],
            instances: vec![],
            egress: Default::default(),
        })]);
        assert_eq!(
            t,
            Taken {
                anything: true,
                leases_changed: true,
                instances_changed: true,
            }
        );
        assert!(d.have_snapshot);
        // The deletion of an older lease of cell2 (another subnet) keeps the current one.
        let t = d.take(vec![change(Event::LeaseDeleted {
            lease: lease("cell2", "10.255.9.0/24"),
        })]);
        assert!(t.leases_changed);
        assert_eq!(d.leases.len(), 1);
        let t = d.take(vec![
            change(Event::LeaseDeleted {
                lease: lease("cell2", "10.255.2.0/24"),
            }),
            change(Event::PolicyCreated {
                policy: Policy::new("web", "api", weft_api::model::Protocol::Icmp, None),
            }),
        ]);
        assert!(t.anything && t.leases_changed);
        assert!(d.leases.is_empty());
        assert_eq!(d.policies.len(), 1);
        // Egress changes fold into the egress state.
        let t = d.take(vec![change(Event::EgressModeSet {
            mode: weft_api::egress::EgressMode::Deny,
        })]);
        assert!(t.anything && !t.leases_changed);
        assert_eq!(d.egress.mode, weft_api::egress::EgressMode::Deny);
        // Heartbeats change nothing: the kernel is not touched for them.
        let before = d.clone();
        let t = d.take(vec![WatchMessage::Heartbeat {
            revision: 3,
            interval_ms: None,
        }]);
        assert_eq!((t, &d), (Taken::default(), &before));
    }
}
