//! The agent's loop (a reconcile loop in the kube-rs sense): the desired state comes from the
//! controller (our lease, everybody's leases), the kernel is compared with it and only the
//! difference is applied. Restarting the agent, or losing the controller for a while, changes
//! nothing in the kernel; when the controller comes back the watch resumes and the agent
//! catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::FutureExt;
use ipnet::Ipv4Net;
use weft_cni::lease::HostLease;
use weft_controller::model::{Event, Lease, Policy, WatchMessage};
use weft_controller::Client;
use weft_kernel::link::VxlanSpec;
use weft_kernel::{MacAddr, Netlink};

use crate::args::{AgentArgs, FastpathMode, PolicyMode};
use crate::{fastpath, local, nat, policy, remote, vtep};

/// Where this host meets the underlay.
struct Underlay {
    ip: Ipv4Addr,
    dev: u32,
    /// The interface's name (the policy table accepts VXLAN on it only).
    name: String,
    mtu: u32,
}

async fn find_underlay(nl: &Netlink, args: &AgentArgs) -> Result<Underlay> {
    if let Some(name) = &args.underlay_dev {
        let l = nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("--underlay-dev: no interface {name}"))?;
        let ip = match args.underlay_ip {
            Some(ip) => ip,
            None => nl
                .addresses(l.index)
                .await?
                .into_iter()
                .find_map(|a| match a.addr() {
                    IpAddr::V4(v4) => Some(v4),
                    _ => None,
                })
                .ok_or_else(|| anyhow!("--underlay-dev: {name} has no IPv4 address"))?,
        };
        return Ok(Underlay {
            ip,
            dev: l.index,
            name: l.name,
            mtu: l.mtu,
        });
    }
    let ip = args
        .underlay_ip
        .ok_or_else(|| anyhow!("give --underlay-ip or --underlay-dev"))?;
    for l in nl.links().await? {
        if nl
            .addresses(l.index)
            .await?
            .iter()
            .any(|a| a.addr() == IpAddr::V4(ip))
        {
            return Ok(Underlay {
                ip,
                dev: l.index,
                name: l.name,
                mtu: l.mtu,
            });
        }
    }
    bail!("--underlay-ip: no interface holds {ip}")
}

fn client(args: &AgentArgs) -> Result<Client> {
    let mut b = Client::builder(args.controller.clone());
    if let Some(ca) = &args.ca {
        b = b.ca(ca.clone());
    }
    if let (Some(c), Some(k)) = (&args.cert, &args.key) {
        b = b.identity(c.clone(), k.clone());
    }
    if let Some(t) = &args.token {
        b = b.token(t.clone());
    }
    Ok(b.build()?)
}

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
    leases: BTreeMap<String, Lease>,
    /// App id → tag, for the apps of this host's containers.
    tags: BTreeMap<String, u16>,
    /// This host's overlay containers, as last read from weft-cni's records (read once per
    /// local change or resync, not once per watch message).
    containers: Vec<policy::LocalContainer>,
    /// Every app's tag, as the controller publishes them.
    apps: BTreeMap<String, u16>,
    policies: BTreeSet<Policy>,
    /// The policy elements this process last applied (None until the first sync).
    applied: Option<policy::Elements>,
    /// Names for the metrics endpoint, refreshed at every policy sync.
    view: std::sync::Arc<std::sync::Mutex<crate::metrics::View>>,
    /// The fast path's programs and maps, when it runs.
    fastpath: Option<fastpath::FastPath>,
    /// Whether the controller's snapshot has arrived. Until then the kernel keeps enforcing
    /// what an earlier run of the agent applied: a restart must not open or close anything.
    have_snapshot: bool,
}

/// The file next to the lease file where the agent publishes the tags of local apps.
pub fn tags_file(lease_file: &std::path::Path) -> PathBuf {
    lease_file.with_file_name("tags.json")
}

impl Agent {
    /// Claims the apps of this host's containers at the controller (which gives each a tag):
    /// the claim set is exactly the apps this host runs, so apps it no longer runs are
    /// dropped. Sent when it changes (a host restarted with no containers left keeps its old
    /// claims until it next runs one or its lease goes). Publishes app → tag for `weft containers` (and, later, for marking).
    async fn claim_local_apps(&mut self) -> Result<()> {
        let apps: Vec<String> = self
            .containers
            .iter()
            .filter_map(|c| c.app.clone())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        // Unchanged since the last claim set the controller took: nothing to send. (A lost
        // lease takes the claims with it: `renew` forgets `tags` before claiming again.)
        if apps.iter().eq(self.tags.keys()) {
            return Ok(());
        }
        let claimed = self.client.set_claims(&self.host, &apps).await?;
        let tags: BTreeMap<String, u16> = claimed.apps.into_iter().map(|a| (a.id, a.tag)).collect();
        if tags != self.tags {
            self.tags = tags;
            let bytes = serde_json::to_vec_pretty(&self.tags)?;
            weft_cni::store::write_atomic(&tags_file(&self.args.lease_file), &bytes)
                .map_err(|e| anyhow!("writing tags: {e}"))?;
        }
        Ok(())
    }

    /// Reads when the client certificate expires: a warning under 30 days, an error once
    /// expired, and the metric `weft_agent_certificate_expiry_seconds`.
    fn check_certificate(&self) {
        let Some(cert) = &self.args.cert else {
            return;
        };
        match weft_controller::tls::not_after(cert) {
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
        let desired = remote::plan(self.leases.values(), &self.host);
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
        let mut leases_changed = false;
        let mut anything = false;
        for msg in batch {
            match msg {
                WatchMessage::Snapshot(s) => {
                    if self.have_snapshot {
                        // A new snapshot means the watch reconnected, perhaps after the
                        // controller was away: renew now rather than at the next tick.
                        self.renew().await?;
                    }
                    self.leases = s.leases.into_iter().map(|l| (l.host.clone(), l)).collect();
                    self.apps = s.apps.into_iter().map(|a| (a.id, a.tag)).collect();
                    self.policies = s.policies.iter().map(Policy::untagged).collect();
                    self.have_snapshot = true;
                    leases_changed = true;
                }
                WatchMessage::Change(c) => match c.event {
                    Event::LeasePut { lease } => {
                        self.leases.insert(lease.host.clone(), lease);
                        leases_changed = true;
                    }
                    Event::LeaseDeleted { lease } => {
                        if self.leases.get(&lease.host).map(|l| l.subnet) == Some(lease.subnet) {
                            self.leases.remove(&lease.host);
                        }
                        leases_changed = true;
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
                },
                WatchMessage::Heartbeat { .. } => continue,
            }
            anything = true;
        }
        if !anything {
            return Ok(());
        }
        if leases_changed {
            // Our own lease as the controller sees it: if it moved (expired and re-acquired
            // elsewhere), follow.
            if let Some(mine) = self.leases.get(&self.host).cloned() {
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
        if let Err(e) = self.claim_local_apps().await {
            tracing::warn!(error = %format!("{e:#}"), "claiming local apps failed; the next resync retries");
        }
        if let Err(e) = self.sync_policy(verify) {
            tracing::warn!(error = %format!("{e:#}"), "policy sync failed; the next resync retries");
        }
        self.sync_fastpath().await;
    }

    fn layout(&self) -> policy::Layout {
        self.args.layout(self.overlay, &self.underlay)
    }

    /// Makes the policy table match the policies, tags, local containers and remote cells.
    fn sync_policy(&mut self, verify: bool) -> Result<()> {
        if !self.have_snapshot {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let containers = &self.containers;
        let mut tags = self.apps.clone();
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), *v)));
        let cells = remote::plan(self.leases.values(), &self.host);
        let policies: Vec<Policy> = self.policies.iter().cloned().collect();
        let new = policy::elements(&policies, &tags, containers, &cells);
        if let Ok(mut v) = self.view.lock() {
            v.apps_by_tag = tags.iter().map(|(app, t)| (*t, app.clone())).collect();
            v.app_of_ip = containers
                .iter()
                .filter_map(|c| c.app.clone().map(|a| (c.ip, a)))
                .collect();
            v.remote_cells = cells.len();
            v.policies = policies.len();
        }
        if self.applied.as_ref() == Some(&new) && !verify {
            return Ok(());
        }
        let mut nft = weft_kernel::nft::Nft::new()?;
        let wrote = match policy::apply(
            &mut nft,
            &self.layout(),
            self.applied.as_ref(),
            &new,
            verify,
        ) {
            Ok(w) => w,
            Err(e) => {
                // The kernel keeps what it had (the transaction is atomic), which may not be
                // what we think (someone changed the table): refill all of it next time.
                self.applied = None;
                return Err(e).context("applying policy");
            }
        };
        if wrote {
            tracing::info!(
                elements = new.len(),
                policies = policies.len(),
                took_us = started.elapsed().as_micros() as u64,
                "policy applied"
            );
        }
        self.applied = Some(new);
        Ok(())
    }

    /// Loads the fast path (or, with `--fastpath off`, removes one an earlier run left).
    async fn start_fastpath(&mut self) -> Result<()> {
        if self.args.fastpath == FastpathMode::Off {
            let mut ifs = vec![self.underlay.dev];
            for c in local::overlay_containers(&self.args.cni_data_dir) {
                if let Ok(Some(l)) = self.nl.link_by_name(&c.host_ifname).await {
                    ifs.push(l.index);
                }
            }
            fastpath::detach_all(ifs);
            return Ok(());
        }
        let loaded = fastpath::FastPath::load().and_then(|fp| {
            weft_kernel::sysctl::set(fastpath::BE_LIBERAL, "1")
                .with_context(|| format!("setting {}", fastpath::BE_LIBERAL))?;
            Ok(fp)
        });
        match loaded {
            Ok(fp) => {
                tracing::info!(
                    "fast path loaded; it attaches once the controller's snapshot is in"
                );
                if let Ok(mut v) = self.view.lock() {
                    v.fastpath = Some(fp.stats.clone());
                }
                self.fastpath = Some(fp);
            }
            Err(e) if self.args.fastpath == FastpathMode::On => {
                return Err(e.context("--fastpath on"))
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "running without the fast path (kernel path only)")
            }
        }
        Ok(())
    }

    /// Makes the fast path's maps match the local containers and remote cells, and attaches
    /// its programs (after the controller's snapshot, like the policy table). Errors are
    /// logged: the kernel path carries everything meanwhile.
    async fn sync_fastpath(&mut self) {
        if self.fastpath.is_none() || !self.have_snapshot {
            return;
        }
        let Ok(vtep_mac) = self.lease.vtep_mac.parse::<MacAddr>() else {
            return;
        };
        let links: BTreeMap<String, weft_kernel::link::Link> = match self.nl.links().await {
            Ok(ls) => ls.into_iter().map(|l| (l.name.clone(), l)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing links for the fast path failed");
                return;
            }
        };
        let attached: Vec<fastpath::Attached<'_>> = self
            .containers
            .iter()
            .filter_map(|c| {
                let l = links.get(&c.host_ifname)?;
                Some(fastpath::Attached {
                    container: c,
                    ifindex: l.index,
                    host_mac: l.mac?,
                })
            })
            .collect();
        let veths = attached.iter().map(|a| a.ifindex).collect();
        let mut tags = self.apps.clone();
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), *v)));
        let config = fastpath::Config {
            underlay_ip: self.underlay.ip,
            underlay_ifindex: self.underlay.dev,
            vni: self.args.vni,
            port: self.args.vxlan_port,
            vtep_mac,
        };
        let remotes = remote::plan(self.leases.values(), &self.host);
        let desired = fastpath::desired(config, &attached, &tags, &remotes);
        if let Some(fp) = self.fastpath.as_mut() {
            match fp.apply(&desired, &veths) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    changes = n,
                    endpoints = desired.endpoints.len(),
                    remotes = desired.remotes.len(),
                    "fast path maps updated"
                ),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "fast path sync failed; the next resync retries")
                }
            }
        }
    }

    async fn renew(&mut self) -> Result<()> {
        match self.client.renew_lease(&self.host).await {
            Ok(l) => {
                let moved = l.subnet != self.lease.subnet;
                self.lease = l;
                if moved {
                    self.ensure_local().await?;
                }
            }
            Err(e) if e.status() == Some(404) => {
                tracing::warn!("lease lost; acquiring a new one");
                self.lease = self
                    .client
                    .acquire_lease(&self.host, &self.underlay.ip.to_string())
                    .await?;
                self.ensure_local().await?;
                // The lost lease took this host's app claims with it.
                self.tags.clear();
                if let Err(e) = self.claim_local_apps().await {
                    tracing::warn!(error = %format!("{e:#}"), "claiming local apps failed; the next resync retries");
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; will retry"),
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

/// Retries `f` with backoff until it succeeds (the controller may not be up yet).
async fn with_retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The kernel did not answer one of the requests behind `e` in time: asking again may work.
fn unanswered(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<weft_kernel::Error>()
            .is_some_and(weft_kernel::Error::is_timeout)
    })
}

/// Runs `f` again while it fails only because the kernel did not answer in time.
async fn retry_unanswered<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    loop {
        match f().await {
            Err(e) if unanswered(&e) => {
                tracing::warn!(error = %format!("{e:#}"), "{what} failed; retrying")
            }
            r => return r,
        }
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
        }
    }

    /// Until the controller's snapshot arrives: a host without a policy table gets one that
    /// fences its containers (no policy, no cell: nothing from other apps reaches them, no
    /// VXLAN is taken), with the containers weft-cni recorded (anti-spoofing). A table an
    /// earlier run left stays as it is. Failures are logged: the first sync writes the table.
    fn fence(&self, overlay: Ipv4Net, underlay: &Underlay) {
        let containers = local::overlay_containers(&self.cni_data_dir);
        let known = policy::elements(&[], &BTreeMap::new(), &containers, &[]);
        let written = weft_kernel::nft::Nft::new()
            .and_then(|mut nft| policy::fence(&mut nft, &self.layout(overlay, underlay), &known));
        match written {
            Ok(true) => tracing::info!(
                %overlay,
                "no policy table: written without policies or cells until the controller answers"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "writing the fencing policy table failed"),
        }
    }

    /// Runs the agent until SIGINT or SIGTERM.
    pub async fn run(self) -> Result<()> {
        let nl = Netlink::current()?;
        let underlay =
            retry_unanswered("finding the underlay", || find_underlay(&nl, &self)).await?;
        // A host that held a lease before (the lease file is there) is fenced before the
        // controller is asked anything: it may be down for a while.
        if let Ok(hl) = HostLease::read(&self.lease_file) {
            self.fence(hl.overlay, &underlay);
        }
        // The controller takes the host from the certificate: use that name, and refuse a
        // --host it would refuse.
        let cert_host = match &self.cert {
            Some(c) => weft_controller::tls::host_of_file(c)?,
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
        let overlay = with_retry("asking the controller for the overlay", || async {
            Ok(client.leases().await?.overlay)
        })
        .await;
        let uip = underlay.ip.to_string();
        let lease = with_retry("acquiring a lease", || async {
            Ok(client.acquire_lease(&host, &uip).await?)
        })
        .await;
        tracing::info!(subnet = %lease.subnet, "lease held");
        let mut agent = Agent {
            args: self.clone(),
            host,
            nl,
            underlay,
            client: client.clone(),
            overlay,
            lease,
            vtep_index: 0,
            leases: BTreeMap::new(),
            tags: BTreeMap::new(),
            containers: Vec::new(),
            apps: BTreeMap::new(),
            policies: BTreeSet::new(),
            applied: None,
            have_snapshot: false,
            view: Default::default(),
            fastpath: None,
        };
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
        // Watch the container records before the first read (the watch also signals once
        // when it is in place), so a container added meanwhile is not left to the resync.
        let mut local_changes = local::watch(self.cni_data_dir.clone());
        agent.start_fastpath().await?;
        // Read the local containers and claim their apps; the policy table waits for the
        // controller's snapshot (sync_policy does nothing before it).
        self.fence(overlay, &agent.underlay);
        agent.refresh_local(false).await;

        let ttl = (agent.lease.expires_at - now()).max(3) as u64;
        let mut renew = tokio::time::interval(Duration::from_secs((ttl / 3).max(1)));
        renew.tick().await;
        let mut resync = tokio::time::interval(Duration::from_secs(self.resync.max(1)));
        resync.tick().await;
        let mut watch = client.watch_resuming(None);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                msg = watch.next() => {
                    let mut batch = vec![msg.context("watching the controller")?];
                    // Take whatever else has already arrived, without waiting.
                    while let Some(next) = watch.next().now_or_never() {
                        batch.push(next.context("watching the controller")?);
                    }
                    if let Err(e) = agent.on_messages(batch).await {
                        tracing::warn!(error = %format!("{e:#}"), "applying a change failed; the next resync retries");
                    }
                }
                Some(()) = local_changes.recv() => agent.refresh_local(false).await,
                _ = renew.tick() => agent.renew().await?,
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

fn now() -> i64 {
    unix_now()
}

/// Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> anyhow::Error {
        anyhow::Error::new(weft_kernel::Error::Timeout {
            op: "get link weft.vtep".into(),
            after: Duration::from_secs(10),
        })
        .context("setting up the VTEP")
    }

    /// A step whose kernel request went unanswered is made again; any other failure is
    /// returned at once (the agent stops with it).
    #[tokio::test]
    async fn unanswered_kernel_requests_are_retried_other_errors_are_not() {
        assert!(unanswered(&timeout()));
        let mut calls = 0;
        let r = retry_unanswered("setting up", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(timeout())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.expect("third attempt"), 3);

        let mut calls = 0;
        let r: Result<()> = retry_unanswered("setting up", || {
            calls += 1;
            async {
                Err(anyhow!(weft_kernel::Error::Invalid(
                    "no such device".into()
                )))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        assert!(!unanswered(&r.unwrap_err()));
    }
}
