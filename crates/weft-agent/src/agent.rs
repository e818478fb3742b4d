//! The agent's loop (a reconcile loop in the kube-rs sense): the desired state comes from the
//! controller (our lease, everybody's leases), the kernel is compared with it and only the
//! difference is applied. Restarting the agent, or losing the controller for a while, changes
//! nothing in the kernel; when the controller comes back the watch resumes and the agent
//! catches up.
//!
//! The loop never waits on the controller: the watch runs in its own task (it notices a
//! silent controller by its heartbeats and reconnects by itself), and lease renewals and app
//! claims run in tasks of their own, each request bounded by `--request-timeout`, their
//! results coming back to the loop as [`Done`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;
use tokio::sync::mpsc;
use weft_api::client::WatchOptions;
use weft_api::model::{Lease, Policy, WatchMessage};
use weft_api::records::{self, HostLease};
use weft_api::Client;
use weft_kernel::link::VxlanSpec;
use weft_kernel::{MacAddr, Netlink};

use crate::args::{AgentArgs, PolicyMode};
use crate::controller::{client, renew_or_reacquire, spawn_watch, Done, FromWatch, Renewal};
use crate::retry::{retry_unanswered, unanswered, with_retry};
use crate::sync::{Desired, Taken};
use crate::tables::{egress, PolicySync};
use crate::underlay::{find_underlay, Underlay};
use crate::{fastpath, local, nat, placement, policy, remote, vtep};

mod datapath;

/// The running agent's state.
struct Agent {
    args: AgentArgs,
    host: String,
    nl: Netlink,
    underlay: Underlay,
    client: Client,
    overlay: Ipv4Net,
    lease: Lease,
    vtep_index: u32,
    /// What the controller says: leases, apps, policies (see [`sync`](crate::sync)).
    desired: Desired,
    /// App id → tag, for the apps of this host's containers.
    tags: BTreeMap<String, u16>,
    /// This host's overlay containers, as last read from weft-cni's records (read once per
    /// local change or resync, not once per watch message).
    containers: Vec<policy::LocalContainer>,
    /// The policy elements this process last applied, and the retry after a failure.
    policy: PolicySync,
    /// The egress layout and elements this process last applied.
    egress_applied: Option<(egress::Layout, egress::Elements)>,
    /// Names for the metrics endpoint, refreshed at every policy sync.
    view: std::sync::Arc<std::sync::Mutex<crate::metrics::View>>,
    /// The fast path's programs and maps, when it runs.
    fastpath: Option<fastpath::FastPath>,
    /// Where calls that run off the loop send their results.
    done: mpsc::UnboundedSender<Done>,
    /// A renewal is under way (at most one at a time).
    renewing: bool,
    /// A claim set is on its way to the controller (at most one at a time).
    claiming: bool,
    /// The claim set the controller holds for this host, as far as the agent knows: what it
    /// last took, none after a lost lease took them; `None` after a failed request (it may
    /// or may not have been applied: send it again). At start it is taken to be empty, so a
    /// host restarted with no containers sends nothing (see `claim_local_apps`).
    claimed: Option<Vec<String>>,
    /// Begins anew when a lost lease took this host's claims: answers to claim sets sent
    /// before do not count.
    claims_epoch: u64,
    /// The audit log's reader, with `--audit-log`.
    audit: Option<crate::audit::Audit>,
    /// The DNS server, with `--dns`.
    dns: Option<crate::dns::Dns>,
    /// Reports this host's containers to the controller (placement), off the loop.
    placement: placement::Reporter,
}

/// The file next to the lease file where the agent publishes the tags of local apps.
pub fn tags_file(lease_file: &std::path::Path) -> PathBuf {
    lease_file.with_file_name("tags.json")
}

impl Agent {
    /// Keeps the tags of this host's apps (dropping those no container runs any more),
    /// publishes app → tag for `weft containers` (and, later, for marking), and, off the loop,
    /// sends the controller this host's claim set: exactly the apps its containers run (its
    /// placement; the controller gives each a tag and drops the claims of apps no longer
    /// run). The set is sent only when it differs from the one the controller last took (or
    /// after a lost lease took the claims with it), one request at a time, bounded by
    /// `--request-timeout`. A host restarted with no containers left keeps its old claims
    /// until it next runs one or its lease goes.
    fn claim_local_apps(&mut self) -> Result<()> {
        let apps: Vec<String> = self
            .containers
            .iter()
            .filter_map(|c| c.app.clone())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        let tags: BTreeMap<String, u16> = self
            .tags
            .iter()
            .filter(|(app, _)| apps.contains(*app))
            .map(|(app, tag)| (app.clone(), *tag))
            .collect();
        self.publish_tags(tags)?;
        if self.claimed.as_ref() == Some(&apps) || self.claiming {
            return Ok(());
        }
        self.claiming = true;
        let client = self.client.clone();
        let host = self.host.clone();
        let epoch = self.claims_epoch;
        let done = self.done.clone();
        tokio::spawn(async move {
            let result = client.set_claims(&host, &apps).await;
            let _ = done.send(Done::Claims {
                epoch,
                apps,
                result,
            });
        });
        Ok(())
    }

    /// Takes `tags` as this host's app tags; rewrites the tags file when they changed.
    fn publish_tags(&mut self, tags: BTreeMap<String, u16>) -> Result<()> {
        if tags != self.tags {
            self.tags = tags;
            let bytes = serde_json::to_vec_pretty(&self.tags)?;
            let path = tags_file(&self.args.lease_file);
            records::write_atomic(&path, &bytes)
                .map_err(|e| anyhow!("writing tags: write {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Reads when the client certificate expires: a warning under 30 days, an error once
    /// expired, and the metric `weft_agent_certificate_expiry_seconds`.
    fn check_certificate(&self) {
        let Some(cert) = &self.args.cert else {
            return;
        };
        match weft_api::tls::not_after(cert) {
            Ok(not_after) => {
                let left = not_after - unix_now();
                let days = left / 86_400;
                if left <= 0 {
                    tracing::error!(cert = %cert.display(), "the client certificate has expired: the controller will refuse this agent");
                } else if days < CERT_WARN_DAYS && WARNED_DAYS.swap(days, Ordering::Relaxed) != days
                {
                    // Once a day, not at every resync.
                    tracing::warn!(cert = %cert.display(), days, "the client certificate expires soon: replace the file (it is re-read, no restart needed)");
                }
                if let Ok(mut v) = self.view.lock() {
                    v.cert_not_after = Some(not_after);
                }
            }
            Err(e) => {
                tracing::warn!(cert = %cert.display(), error = %format!("{e:#}"), "cannot read the client certificate's expiry")
            }
        }
    }

    /// Starts a renewal of our lease off the loop, unless one is under way.
    fn start_renewal(&mut self) {
        if self.renewing {
            return;
        }
        self.renewing = true;
        let client = self.client.clone();
        let host = self.host.clone();
        let underlay_ip = self.underlay.ip.to_string();
        let subnet = self.lease.subnet;
        let done = self.done.clone();
        tokio::spawn(async move {
            let r = renew_or_reacquire(&client, &host, &underlay_ip, subnet).await;
            let _ = done.send(Done::Lease(r));
        });
    }

    /// Takes in what a call off the loop came back with.
    async fn on_done(&mut self, done: Done) {
        match done {
            Done::Lease(r) => {
                self.renewing = false;
                let mut reclaim = false;
                let lease = match r {
                    Ok(Renewal::Renewed(l)) => l,
                    Ok(Renewal::Reacquired(l)) => {
                        if l.subnet == self.lease.subnet {
                            tracing::info!(subnet = %l.subnet, "lease acquired again, same subnet");
                        } else {
                            tracing::warn!(old = %self.lease.subnet, new = %l.subnet, "lease acquired again with another subnet: containers on the old one lose their routes");
                        }
                        // The lost lease took this host's app claims with it (and maybe
                        // their tags): forget them, so that local containers carry no tag
                        // until the claim set, sent again now, is answered.
                        self.claims_epoch += 1;
                        self.claimed = Some(Vec::new());
                        self.tags.clear();
                        reclaim = true;
                        // And its reported containers.
                        self.placement.resend();
                        l
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lease renewal failed; will retry");
                        return;
                    }
                };
                let moved = lease.subnet != self.lease.subnet;
                self.lease = lease;
                if moved {
                    if let Err(e) = self.ensure_local().await {
                        tracing::warn!(error = %format!("{e:#}"), "setting up the new subnet failed; the next resync retries");
                    }
                }
                if reclaim {
                    self.placement
                        .update(&self.args.cni_data_dir, self.lease.subnet);
                    if let Err(e) = self.claim_local_apps() {
                        tracing::warn!(error = %format!("{e:#}"), "claiming local apps failed; the next resync retries");
                    }
                    if let Err(e) = self.sync_policy(false) {
                        tracing::warn!(error = %format!("{e:#}"), "policy sync failed; retrying with backoff");
                    }
                    self.sync_fastpath().await;
                }
            }
            Done::Claims {
                epoch,
                apps,
                result,
            } => {
                self.claiming = false;
                match result {
                    Ok(list) if epoch == self.claims_epoch => {
                        self.claimed = Some(apps);
                        // The tags of the apps still running here (a container may have gone
                        // while the request ran); apps that came meanwhile are sent next.
                        let local: BTreeSet<&String> = self
                            .containers
                            .iter()
                            .filter_map(|c| c.app.as_ref())
                            .collect();
                        let tags: BTreeMap<String, u16> = list
                            .apps
                            .into_iter()
                            .filter(|a| local.contains(&a.id))
                            .map(|a| (a.id, a.tag))
                            .collect();
                        if let Err(e) = self.publish_tags(tags) {
                            tracing::warn!(error = %format!("{e:#}"), "publishing tags failed");
                        }
                        if let Err(e) = self.claim_local_apps() {
                            tracing::warn!(error = %format!("{e:#}"), "publishing tags failed");
                        }
                    }
                    // The lease was lost (and its claims with it) while this set was on its
                    // way: send it again.
                    Ok(_) => {
                        if let Err(e) = self.claim_local_apps() {
                            tracing::warn!(error = %format!("{e:#}"), "publishing tags failed");
                        }
                    }
                    // The next local change or resync tries again, not at once.
                    Err(e) => {
                        if epoch == self.claims_epoch {
                            self.claimed = None;
                        }
                        tracing::warn!(error = %e, apps = apps.len(), "claiming this host's apps failed; the next resync retries")
                    }
                }
                if let Err(e) = self.sync_policy(false) {
                    tracing::warn!(error = %format!("{e:#}"), "policy sync failed; retrying with backoff");
                }
                self.sync_fastpath().await;
            }
        }
    }

    /// Sets up (or adopts) the VTEP and NAT for our lease and writes the lease file.
    async fn ensure_local(&mut self) -> Result<()> {
        let mac: MacAddr = self
            .lease
            .vtep_mac
            .parse()
            .map_err(|_| anyhow!("lease has a bad VTEP MAC {:?}", self.lease.vtep_mac))?;
        let spec = VxlanSpec {
            name: self.args.vtep.clone(),
            vni: self.args.vni,
            port: self.args.vxlan_port,
            local: self.underlay.ip,
            dev: Some(self.underlay.dev),
            mtu: self
                .underlay
                .mtu
                .saturating_sub(vtep::VXLAN_OVERHEAD)
                .max(68),
            mac,
        };
        let link = vtep::ensure(
            &self.nl,
            &spec,
            vtep::vtep_address(self.lease.subnet, self.overlay),
        )
        .await
        .context("setting up the VTEP")?;
        self.vtep_index = link.index;
        nat::ensure(self.overlay, &self.args.vtep).context("setting up NAT")?;
        weft_kernel::sysctl::set("net.ipv4.ip_forward", "1")?;
        let hl = HostLease {
            host: self.host.clone(),
            subnet: self.lease.subnet,
            overlay: self.overlay,
            vtep: self.args.vtep.clone(),
            mtu: spec.mtu,
        };
        hl.write(&self.args.lease_file)
            .map_err(|e| anyhow!("writing {}: {e}", self.args.lease_file.display()))?;
        Ok(())
    }

    /// Makes the VTEP's remote entries match the leases we know.
    async fn reconcile(&mut self) -> Result<()> {
        let desired = remote::plan(self.desired.leases.values(), &self.host);
        let observed = remote::observe(&self.nl, self.vtep_index).await?;
        let diff = remote::Diff::between(&desired, &observed);
        if !diff.is_empty() {
            remote::apply(&self.nl, self.vtep_index, &diff).await?;
        }
        Ok(())
    }

    /// Applies a batch of watch messages (everything that had already arrived): the state is
    /// updated message by message, the kernel once for the whole batch — a request that
    /// creates 10,000 policies becomes one transaction, not 10,000.
    async fn on_messages(&mut self, batch: Vec<WatchMessage>) -> Result<()> {
        let Taken {
            anything,
            leases_changed,
            instances_changed,
        } = self.desired.take(batch);
        if instances_changed {
            if let Some(d) = &self.dns {
                d.update(crate::dns::zone::from_placement(
                    self.desired.instances.values(),
                ));
            }
            if let Some(a) = &self.audit {
                a.set_instances(self.desired.instances.values());
            }
        }
        if !anything {
            return Ok(());
        }
        if leases_changed {
            // Our own lease as the controller sees it: if it moved (expired and re-acquired
            // elsewhere), follow.
            if let Some(mine) = self.desired.leases.get(&self.host).cloned() {
                if mine.subnet != self.lease.subnet || mine.vtep_mac != self.lease.vtep_mac {
                    self.lease = mine;
                    self.ensure_local().await?;
                }
            }
            self.reconcile().await?;
        }
        let policy = self.sync_policy(false);
        self.sync_fastpath().await;
        policy
    }

    /// Re-reads this host's containers, claims their apps and syncs the policy table (`verify`:
    /// also checks the table's structure, see [`policy::apply`]); errors are logged (the next
    /// local change or resync retries).
    async fn refresh_local(&mut self, verify: bool) {
        self.check_certificate();
        self.containers = local::overlay_containers(&self.args.cni_data_dir);
        self.placement
            .update(&self.args.cni_data_dir, self.lease.subnet);
        if let Err(e) = self.claim_local_apps() {
            tracing::warn!(error = %format!("{e:#}"), "claiming local apps failed; the next resync retries");
        }
        if let Err(e) = self.sync_policy(verify) {
            tracing::warn!(error = %format!("{e:#}"), "policy sync failed; retrying with backoff");
        }
        self.sync_fastpath().await;
    }

    fn layout(&self) -> policy::Layout {
        self.args.layout(self.overlay, &self.underlay)
    }

    /// A policy transaction failed a while ago: try again (the fence before the controller's
    /// snapshot, the whole table after it, its structure checked).
    fn retry_policy(&mut self) {
        if self.desired.have_snapshot {
            if let Err(e) = self.sync_policy(true) {
                tracing::warn!(error = %format!("{e:#}"), failures = self.policy.failures(), "policy sync failed again; retrying with backoff");
            }
        } else {
            let args = self.args.clone();
            args.fence(self.overlay, &self.underlay, &mut self.policy);
        }
    }

    /// Makes the policy table match the policies, tags, local containers and remote cells.
    fn sync_policy(&mut self, verify: bool) -> Result<()> {
        if !self.desired.have_snapshot {
            return Ok(());
        }
        self.sync_egress(verify);
        let started = std::time::Instant::now();
        let containers = &self.containers;
        let mut tags = self.desired.apps.clone();
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), *v)));
        let cells = remote::plan(self.desired.leases.values(), &self.host);
        let policies: Vec<Policy> = self.desired.policies.iter().cloned().collect();
        let new = policy::elements(&policies, &tags, containers, &cells);
        if let Some(a) = &self.audit {
            a.update(
                &tags,
                containers,
                &policies,
                self.args.policy == PolicyMode::On,
            );
        }
        if let Ok(mut v) = self.view.lock() {
            v.apps_by_tag = tags.iter().map(|(app, t)| (*t, app.clone())).collect();
            v.app_of_ip = containers
                .iter()
                .filter_map(|c| c.app.clone().map(|a| (c.ip, a)))
                .collect();
            v.remote_cells = cells.len();
            v.policies = policies.len();
        }
        if self.policy.is_current(&new, verify) {
            return Ok(());
        }
        let elements = new.len();
        // A failed transaction leaves the kernel's table as it was (the fence or the last
        // policy applied) and is retried with backoff (see `PolicySync`).
        let layout = self.layout();
        let wrote = weft_kernel::nft::Nft::new()
            .and_then(|mut nft| self.policy.sync(&mut nft, &layout, new, verify))
            .context("applying policy")?;
        if wrote {
            tracing::info!(
                elements,
                policies = policies.len(),
                took_us = started.elapsed().as_micros() as u64,
                "policy applied"
            );
        }
        Ok(())
    }

    async fn leave(&mut self) -> Result<()> {
        self.client
            .release_lease(&self.host)
            .await
            .context("releasing the lease")?;
        if let Some(l) = self.nl.link_by_name(&self.args.vtep).await? {
            self.nl.del_link(l.index).await?;
        }
        nat::remove()?;
        let _ = std::fs::remove_file(&self.args.lease_file);
        tracing::info!("left the overlay");
        Ok(())
    }
}

impl AgentArgs {
    /// The policy table's structure on this host.
    fn layout(&self, overlay: Ipv4Net, underlay: &Underlay) -> policy::Layout {
        policy::Layout {
            overlay,
            vxlan_port: self.vxlan_port,
            vtep: self.vtep.clone(),
            underlay: underlay.name.clone(),
            enforce: self.policy == PolicyMode::On,
            audit: self.audit_log.as_ref().map(|_| crate::audit::Rules {
                group: self.audit_group,
                rate: self.audit_rate,
                accepted: self.audit_accepted,
            }),
        }
    }

    /// Until the controller's snapshot arrives: a host without a policy table gets one that
    /// fences its containers (no policy, no cell: nothing from other apps reaches them, no
    /// VXLAN is taken), with the containers weft-cni recorded (anti-spoofing). A table an
    /// earlier run left stays as it is. Failures are logged, counted and retried with
    /// backoff (`sync`), until a table is in place.
    fn fence(&self, overlay: Ipv4Net, underlay: &Underlay, sync: &mut PolicySync) {
        let containers = local::overlay_containers(&self.cni_data_dir);
        let known = policy::elements(&[], &BTreeMap::new(), &containers, &[]);
        let layout = self.layout(overlay, underlay);
        let written =
            weft_kernel::nft::Nft::new().and_then(|mut nft| sync.fence(&mut nft, &layout, &known));
        match written {
            Ok(true) => tracing::info!(
                %overlay,
                "no policy table: written without policies or cells until the controller answers"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "writing the fencing policy table failed"),
        }
        match weft_kernel::nft::Nft::new().and_then(|mut nft| egress::fence(&mut nft, overlay)) {
            Ok(true) => tracing::info!(
                %overlay,
                "no egress table: written in deny mode until the controller answers"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "writing the fencing egress table failed"),
        }
    }

    /// Runs the agent until SIGINT or SIGTERM.
    pub async fn run(self) -> Result<()> {
        self.check()?;
        let nl = Netlink::current()?;
        let underlay =
            retry_unanswered("finding the underlay", || find_underlay(&nl, &self)).await?;
        // A host that held a lease before (the lease file is there) is fenced before the
        // controller is asked anything: it may be down for a while.
        let failures = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut policy_sync = PolicySync::new(failures.clone());
        if let Ok(hl) = HostLease::read(&self.lease_file) {
            self.fence(hl.overlay, &underlay, &mut policy_sync);
        }
        // The controller takes the host from the certificate: use that name, and refuse a
        // --host it would refuse.
        let cert_host = match &self.cert {
            Some(c) => weft_api::tls::host_of_file(c)?,
            None => None,
        };
        let host = match (&self.host, cert_host) {
            (Some(h), Some(c)) if *h != c => bail!(
                "--host {h:?} but the client certificate {} is host {c:?}'s: the controller lets it act only as {c:?}",
                self.cert.as_deref().unwrap_or_else(|| std::path::Path::new("")).display()
            ),
            (_, None) if self.cert.is_some() && self.token.is_none() => bail!(
                "the client certificate {} names no host (no URI SAN urn:weft:host:NAME): the \
                 controller would refuse its lease; issue one with `weft certs --agent NAME`",
                self.cert.as_deref().unwrap_or_else(|| std::path::Path::new("")).display()
            ),
            (Some(h), _) => h.clone(),
            (None, Some(c)) => c,
            (None, None) => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .context("reading the host name (or give --host)")?,
        };
        let client = client(&self)?;
        tracing::info!(%host, underlay = %underlay.ip, controller = %self.controller, "agent starting");
        let (overlay, host_prefix) =
            with_retry("asking the controller for the overlay", || async {
                let list = client.leases().await?;
                Ok((list.overlay, list.host_prefix))
            })
            .await;
        // The subnet this host held before (e.g. its lease expired while the controller was
        // away): asking for it keeps its containers' addresses when it is free.
        let previous = HostLease::read(&self.lease_file)
            .ok()
            .filter(|l| l.host == host && l.overlay == overlay)
            .map(|l| l.subnet)
            .filter(|s| s.prefix_len() == host_prefix && overlay.contains(s));
        let uip = underlay.ip.to_string();
        let lease = with_retry("acquiring a lease", || async {
            Ok(client
                .acquire_lease_preferring(&host, &uip, previous)
                .await?)
        })
        .await;
        match previous {
            Some(p) if p != lease.subnet => {
                tracing::warn!(previous = %p, subnet = %lease.subnet, "lease held, but not on the subnet this host had before (it is taken): containers on the old one lose their routes")
            }
            _ => tracing::info!(subnet = %lease.subnet, "lease held"),
        }
        let audit = match (&self.audit_log, self.layout(overlay, &underlay).audit) {
            (Some(out), Some(rules)) => Some(crate::audit::Audit::start(
                &rules,
                out,
                self.cni_data_dir.clone(),
            )?),
            _ => None,
        };
        let (done, mut done_rx) = mpsc::unbounded_channel();
        let placement = placement::Reporter::start(
            client.clone(),
            host.clone(),
            Duration::from_secs(self.resync.max(1)),
        );
        let mut agent = Agent {
            args: self.clone(),
            host,
            nl,
            underlay,
            client: client.clone(),
            overlay,
            lease,
            vtep_index: 0,
            desired: Desired::default(),
            tags: BTreeMap::new(),
            containers: Vec::new(),
            policy: policy_sync,
            egress_applied: None,
            view: Default::default(),
            fastpath: None,
            done,
            renewing: false,
            claiming: false,
            claimed: Some(Vec::new()),
            claims_epoch: 0,
            audit,
            dns: None,
            placement,
        };
        let watch = client.watch_resuming_with(
            None,
            WatchOptions {
                max_line: self.watch_max_line,
                backoff_max: Duration::from_secs_f64(self.reconnect_max),
                ..WatchOptions::default()
            },
        );
        if let Ok(mut v) = agent.view.lock() {
            v.watch = Some(watch.stats());
            v.policy_apply_failures = failures;
            v.audit = agent.audit.as_ref().map(|a| a.stats.clone());
        }
        if let Some(addr) = self.metrics_listen {
            let view = agent.view.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(addr, view).await {
                    tracing::warn!(%addr, error = %e, "metrics endpoint failed");
                }
            });
        }
        // The kernel's answers are bounded (weft_kernel::REQUEST_TIMEOUT): one that did not
        // come is asked for again; any other failure stops the agent.
        while let Err(e) = agent.ensure_local().await {
            if !unanswered(&e) {
                return Err(e);
            }
            tracing::warn!(error = %format!("{e:#}"), "setting up the VTEP and NAT failed; retrying");
        }
        if self.dns {
            let dns = retry_unanswered("starting the DNS server", || {
                crate::dns::Dns::start(&agent.nl, &self.dns_resolv_conf)
            })
            .await?;
            if let Ok(mut v) = agent.view.lock() {
                v.dns = Some(dns.stats.clone());
            }
            agent.dns = Some(dns);
        }
        // Watch the container records before the first read (the watch also signals once
        // when it is in place), so a container added meanwhile is not left to the resync.
        let mut local_changes = local::watch(self.cni_data_dir.clone());
        agent.start_fastpath().await?;
        // Read the local containers and claim their apps; the policy table waits for the
        // controller's snapshot (sync_policy does nothing before it).
        self.fence(overlay, &agent.underlay, &mut agent.policy);
        agent.refresh_local(false).await;

        let ttl = (agent.lease.expires_at - unix_now()).max(3) as u64;
        let mut renew = tokio::time::interval(Duration::from_secs((ttl / 3).max(1)));
        renew.tick().await;
        let mut resync = tokio::time::interval(Duration::from_secs(self.resync.max(1)));
        resync.tick().await;
        let mut watch = spawn_watch(watch);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let retry = agent.policy.retry_at().map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(first) = watch.recv() => {
                    // Take whatever else has already arrived, without waiting.
                    let mut batch = Vec::new();
                    let mut reconnected = false;
                    let mut next = Some(first);
                    while let Some(item) = next {
                        match item {
                            FromWatch::Message(m) => batch.push(m),
                            FromWatch::Reconnected => reconnected = true,
                            FromWatch::Failed(e) => {
                                return Err(e).context("watching the controller");
                            }
                        }
                        next = watch.try_recv().ok();
                    }
                    if reconnected {
                        // The controller may have been away: renew now, not at the next tick.
                        agent.start_renewal();
                    }
                    if let Err(e) = agent.on_messages(batch).await {
                        tracing::warn!(error = %format!("{e:#}"), "applying a change failed; the next resync retries");
                    }
                }
                Some(done) = done_rx.recv() => agent.on_done(done).await,
                Some(()) = local_changes.recv() => agent.refresh_local(false).await,
                _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {
                    agent.retry_policy();
                }
                _ = renew.tick() => agent.start_renewal(),
                _ = resync.tick() => {
                    if let Err(e) = agent.reconcile().await {
                        tracing::warn!(error = %format!("{e:#}"), "resync failed");
                    }
                    agent.refresh_local(true).await;
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        if let Some(mut fp) = agent.fastpath.take() {
            // Stale maps must not outlive the agent: connections go on through the kernel path.
            fp.detach();
            tracing::info!("fast path detached");
        }
        if self.release_on_exit {
            agent.leave().await?;
        } else {
            tracing::info!("agent stopped; the VTEP, routes and NAT stay in place");
        }
        Ok(())
    }
}

/// Warn this many days before the client certificate expires.
const CERT_WARN_DAYS: i64 = 30;
/// The days left at the last expiry warning.
static WARNED_DAYS: AtomicI64 = AtomicI64::new(-1);

/// Unix seconds.
pub use weft_api::model::unix_now;
