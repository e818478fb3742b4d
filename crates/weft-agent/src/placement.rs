//! Placement: the agent tells the controller which containers this host runs (container id,
//! app, instance index, overlay address), from weft-cni's attachment records, so that internal
//! DNS can answer `APP.apps.internal` and the controller can send each host what it needs.
//!
//! The report is the complete set (`PUT /v1/hosts/{host}/containers`). A [`Reporter`] task of
//! its own sends it off the agent's loop: whenever the set changes (the loop hands it every
//! local change, within milliseconds of a CNI ADD or DEL through the records watch), again
//! every resync interval (a controller that lost it, e.g. restored from a backup, gets it back),
//! and at once when asked (the lease was lost and the controller dropped the host's instances
//! with it). One request at a time, each bounded by the client's `--request-timeout`; a
//! failed one is retried with a backoff, and a newer set replaces one not yet sent.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::sync::{watch, Notify};
use weft_api::model::ReportedInstance;
use weft_api::Client;
use weft_cni::records::{self, Plan};

/// First wait after a failed report; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What this host reports, from its attachment records: overlay containers that name an app
/// and whose address is inside `subnet` (this host's lease; the controller refuses others, e.g.
/// containers left on the subnet of an earlier lease), one per container id, by id. A
/// container without an app cannot be named by DNS and is left out.
pub fn report(plans: &[Plan], subnet: Ipv4Net) -> Vec<ReportedInstance> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<ReportedInstance> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Overlay(o) => Some(o),
            Plan::Bridge(_) => None,
        })
        .filter(|o| subnet.contains(&o.ip))
        .filter_map(|o| {
            let app = o.app_id.clone()?;
            seen.insert(o.container_id.clone())
                .then(|| ReportedInstance {
                    id: o.container_id.clone(),
                    app,
                    index: None,
                    ip: o.ip,
                })
        })
        .collect();
    out.sort();
    out
}

/// The task that reports this host's containers; dropping it ends the task.
pub struct Reporter {
    desired: watch::Sender<Option<Vec<ReportedInstance>>>,
    resend: Arc<Notify>,
}

impl Reporter {
    /// Starts reporting for `host` through `client`, again every `every`. Nothing is sent
    /// before the first [`Reporter::update`].
    pub fn start(client: Client, host: String, every: Duration) -> Reporter {
        let (desired, rx) = watch::channel(None);
        let resend = Arc::new(Notify::new());
        tokio::spawn(run(client, host, rx, resend.clone(), every));
        Reporter { desired, resend }
    }

    /// Reads the records under `cni_data_dir` and hands the set to the task (sent when it
    /// differs from what the controller last took).
    pub fn update(&self, cni_data_dir: &Path, subnet: Ipv4Net) {
        let set = report(&records::attachments(cni_data_dir), subnet);
        self.desired.send_if_modified(|cur| {
            if cur.as_ref() == Some(&set) {
                return false;
            }
            *cur = Some(set);
            true
        });
    }

    /// The controller no longer has this host's report (its lease went): send it again now.
    pub fn resend(&self) {
        self.resend.notify_one();
    }
}

async fn run(
    client: Client,
    host: String,
    mut desired: watch::Receiver<Option<Vec<ReportedInstance>>>,
    resend: Arc<Notify>,
    every: Duration,
) {
    // What the controller last took from this task (None: unknown, send).
    let mut taken: Option<Vec<ReportedInstance>> = None;
    let mut retry = RETRY_MIN;
    loop {
        let want = desired.borrow_and_update().clone();
        let mut failed = false;
        if let Some(want) = want.filter(|w| taken.as_ref() != Some(w)) {
            match client.set_containers(&host, &want).await {
                Ok(_) => {
                    tracing::debug!(containers = want.len(), "placement reported");
                    taken = Some(want);
                    retry = RETRY_MIN;
                }
                Err(e) => {
                    tracing::warn!(error = %e, containers = want.len(), retry = ?retry, "reporting this host's containers failed; retrying");
                    taken = None;
                    failed = true;
                }
            }
        }
        let wait = if failed {
            let w = retry;
            retry = (retry * 2).min(RETRY_MAX);
            w
        } else {
            every
        };
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
                if failed {
                    // Not faster than the backoff against a failing controller.
                    tokio::time::sleep(wait).await;
                }
            }
            _ = resend.notified() => taken = None,
            _ = tokio::time::sleep(wait) => taken = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_cni::records::OverlayPlan;

    fn overlay(id: &str, app: Option<&str>, ip: &str) -> Plan {
        let json = serde_json::json!({
            "network": "ov", "container_id": id, "ifname": "eth0", "netns": "/x",
            "host_veth": "v", "host_alias": "a", "host_mac": "02:00:00:00:00:01",
            "container_mac": "02:00:00:00:00:02", "ip": ip, "subnet": "10.255.1.0/24",
            "mtu": 1450, "app_id": app, "port_mappings": [],
        });
        Plan::Overlay(serde_json::from_value::<OverlayPlan>(json).unwrap())
    }

    #[test]
    fn reports_overlay_containers_with_an_app_inside_the_lease_once() {
        let subnet: Ipv4Net = "10.255.1.0/24".parse().unwrap();
        let plans = vec![
            overlay("b", Some("web"), "10.255.1.3"),
            overlay("a", Some("db"), "10.255.1.2"),
            // No app: DNS cannot name it.
            overlay("c", None, "10.255.1.4"),
            // On an earlier lease's subnet: the controller would refuse the whole set.
            overlay("d", Some("web"), "10.255.9.2"),
            // A second attachment of the same container.
            overlay("a", Some("db"), "10.255.1.5"),
        ];
        let got = report(&plans, subnet);
        let ids: Vec<(&str, &str, String)> = got
            .iter()
            .map(|r| (r.id.as_str(), r.app.as_str(), r.ip.to_string()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("a", "db", "10.255.1.2".to_string()),
                ("b", "web", "10.255.1.3".to_string())
            ]
        );
        assert!(report(&[], subnet).is_empty());
    }
}
