//! The controller: the operations of the API on top of a [`Store`], each in one transaction, plus
//! the background tasks (change feed, lease expiry, change-log pruning).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::leases::{self, Pool};
use crate::metrics::Metrics;
use crate::store::{Store, Tx, TxMode};
use crate::watch::Feed;
use crate::{apps, changelog, egress, instances, policies};
use weft_api::egress::{
    Destination, DestinationList, EgressMode, EgressPolicy, EgressPolicyList, EgressSettings,
};
use weft_api::model::{
    App, AppList, Change, Health, InstanceList, Lease, LeaseList, Policy, PolicyList,
    PolicyWriteResult, ReportedInstance, Snapshot, TagEntry, TagList,
};

/// Default interval of watch heartbeats: a watcher takes the controller for gone after 3 of
/// them without a word (15 s).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// What the controller hands out and how long leases live.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub pool: Pool,
    pub lease_ttl: Duration,
    /// After the controller starts, no lease expires for this long (default: one TTL), on
    /// any path: agents that could not renew while the controller was away get the time to
    /// come back before their subnets return to the pool.
    pub lease_grace: Duration,
    /// Interval of heartbeat lines on idle watch streams (announced in the stream).
    pub heartbeat: Duration,
    /// Most apps one host may claim.
    pub max_claims_per_host: usize,
}

/// Default of `--max-claims-per-host`: a host's /24 holds at most 254 containers.
pub const DEFAULT_MAX_CLAIMS_PER_HOST: usize = 256;

impl ControllerConfig {
    pub fn new(pool: Pool) -> Self {
        ControllerConfig {
            pool,
            lease_ttl: Duration::from_secs(300),
            lease_grace: Duration::from_secs(300),
            heartbeat: DEFAULT_HEARTBEAT,
            max_claims_per_host: DEFAULT_MAX_CLAIMS_PER_HOST,
        }
    }
}

/// When leases may expire: not at all during the grace after the controller started (or
/// after it was stalled), then those whose `expires_at` has passed. One rule for the sweep and
/// for acquisitions.
///
/// A controller that did not run for a while (frozen, its VM suspended) is to its agents what
/// a restarted one is: they could not renew meanwhile. So a gap of more than [`STALL`] between
/// two looks at the clock (taken every [`STALL_TICK`] by a task of its own, and by every
/// [`Expiry::cutoff`]) begins the grace again. A gap that only comes from a busy runtime
/// also does: that errs on keeping leases.
#[derive(Debug)]
pub struct Expiry {
    grace: Duration,
    state: std::sync::Mutex<ExpiryClock>,
}

#[derive(Debug)]
struct ExpiryClock {
    grace_from: Instant,
    seen: Instant,
    seen_wall: std::time::SystemTime,
}

/// A gap in the controller's running longer than this begins the lease grace again.
pub const STALL: Duration = Duration::from_secs(2);
/// How often the controller looks at the clock to notice it was stalled.
pub const STALL_TICK: Duration = Duration::from_millis(250);

impl Expiry {
    pub fn new(grace: Duration) -> Expiry {
        let now = Instant::now();
        Expiry {
            grace,
            state: std::sync::Mutex::new(ExpiryClock {
                grace_from: now,
                seen: now,
                seen_wall: std::time::SystemTime::now(),
            }),
        }
    }

    /// Looks at the clock; returns when the current grace began.
    fn observe(&self) -> Instant {
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        let Ok(mut c) = self.state.lock() else {
            return now;
        };
        // The monotonic clock misses a suspended VM's sleep; the wall clock sees it.
        let gap = (now - c.seen).max(wall.duration_since(c.seen_wall).unwrap_or_default());
        if gap > STALL && !self.grace.is_zero() {
            tracing::warn!(
                stalled = ?gap,
                grace = ?self.grace,
                "the controller did not run for a while (frozen or suspended?): no lease expires during the grace, so that hosts can renew"
            );
            c.grace_from = now;
        }
        c.seen = now;
        c.seen_wall = wall;
        c.grace_from
    }

    /// Leases that expired at or before the returned unix time may go now; `None` while the
    /// grace lasts.
    pub fn cutoff(&self) -> Option<i64> {
        (self.observe().elapsed() >= self.grace).then(leases::now)
    }
}

pub struct Controller {
    store: Arc<dyn Store>,
    config: ControllerConfig,
    expiry: Arc<Expiry>,
    pub(crate) feed: Feed,
    /// The latest snapshot built for watchers, shared by all that start meanwhile.
    pub(crate) snapshots: crate::watch::SnapshotCache,
    pub(crate) metrics: Arc<Metrics>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Controller {
    /// Checks the store against the configuration and starts the background tasks.
    pub async fn start(store: Arc<dyn Store>, config: ControllerConfig) -> Result<Arc<Controller>> {
        {
            let mut tx = store.begin(TxMode::Read).await?;
            leases::check_pool(&mut *tx, &config.pool).await?;
        }
        let feed = Feed::start(store.clone()).await?;
        let mut ctl = Controller {
            store,
            expiry: Arc::new(Expiry::new(config.lease_grace)),
            config,
            feed,
            snapshots: Default::default(),
            metrics: Arc::new(Metrics::default()),
            tasks: Vec::new(),
        };
        if !ctl.config.lease_grace.is_zero() {
            tracing::info!(
                grace = ?ctl.config.lease_grace,
                "no lease expires during the grace after start: hosts that could not renew meanwhile get the time to come back"
            );
        }
        ctl.tasks.push(tokio::spawn(sweep(
            ctl.store.clone(),
            ctl.expiry.clone(),
            ctl.metrics.clone(),
            ctl.sweep_interval(),
        )));
        let expiry = ctl.expiry.clone();
        ctl.tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(STALL_TICK).await;
                expiry.observe();
            }
        }));
        Ok(Arc::new(ctl))
    }

    fn sweep_interval(&self) -> Duration {
        (self.config.lease_ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The revision of the last change this controller has passed to its watchers.
    pub fn broadcast_revision(&self) -> i64 {
        self.feed.latest()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn ttl_secs(&self) -> i64 {
        self.config.lease_ttl.as_secs().max(1) as i64
    }

    async fn write(&self) -> Result<Box<dyn Tx + '_>> {
        self.store.begin(TxMode::Write).await
    }

    async fn read(&self) -> Result<Box<dyn Tx + '_>> {
        self.store.begin(TxMode::Read).await
    }

    /// Gives `host` a lease (see [`leases::acquire`]); `subnet` is the one it held before,
    /// if it knows.
    pub async fn acquire_lease(
        &self,
        host: &str,
        underlay_ip: &str,
        subnet: Option<ipnet::Ipv4Net>,
    ) -> Result<Lease> {
        let mut tx = self.write().await?;
        let acquired = leases::acquire(
            &mut *tx,
            &leases::Acquire {
                pool: &self.config.pool,
                ttl_secs: self.ttl_secs(),
                expire_before: self.expiry.cutoff(),
            },
            host,
            underlay_ip,
            subnet,
        )
        .await?;
        tx.commit().await?;
        record_expired(&self.metrics, &acquired.expired);
        if let Some(wanted) = subnet.filter(|w| *w != acquired.lease.subnet) {
            tracing::warn!(
                host,
                wanted = %wanted,
                given = %acquired.lease.subnet,
                "host asked for its previous subnet, which is taken; it gets another"
            );
        }
        Ok(acquired.lease)
    }

    pub async fn renew_lease(&self, host: &str) -> Result<Lease> {
        let mut tx = self.write().await?;
        let lease = leases::renew(&mut *tx, &self.config.pool, self.ttl_secs(), host).await?;
        tx.commit().await?;
        Ok(lease)
    }

    pub async fn release_lease(&self, host: &str) -> Result<Option<Lease>> {
        let mut tx = self.write().await?;
        let lease = leases::release(&mut *tx, host).await?;
        tx.commit().await?;
        Ok(lease)
    }

    pub async fn leases(&self) -> Result<LeaseList> {
        let mut tx = self.read().await?;
        Ok(LeaseList {
            overlay: self.config.pool.overlay(),
            host_prefix: self.config.pool.host_prefix(),
            pool_size: self.config.pool.size(),
            leases: leases::list(&mut *tx).await?,
        })
    }

    pub async fn apps(&self) -> Result<AppList> {
        let mut tx = self.read().await?;
        Ok(AppList {
            apps: apps::list(&mut *tx).await?,
        })
    }

    pub async fn app(&self, id: &str) -> Result<App> {
        let mut tx = self.read().await?;
        apps::get(&mut *tx, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {id:?} does not exist")))
    }

    /// `host` claims one app (see [`apps::claim`]).
    pub async fn claim_app(&self, host: &str, id: &str) -> Result<App> {
        let mut tx = self.write().await?;
        let app = apps::claim(&mut *tx, host, id, self.config.max_claims_per_host).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Drops `host`'s claim; returns the app if another host claims it or a policy names it.
    pub async fn unclaim_app(&self, host: &str, id: &str) -> Result<Option<App>> {
        let mut tx = self.write().await?;
        let app = apps::unclaim(&mut *tx, host, id).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Makes `ids` exactly the apps `host` claims (see [`apps::set_claims`]).
    pub async fn set_claims(&self, host: &str, ids: &[String]) -> Result<AppList> {
        let mut tx = self.write().await?;
        let apps = apps::set_claims(&mut *tx, host, ids, self.config.max_claims_per_host).await?;
        tx.commit().await?;
        Ok(AppList { apps })
    }

    /// The apps `host` claims.
    pub async fn claims(&self, host: &str) -> Result<AppList> {
        let mut tx = self.read().await?;
        let ids: Vec<String> = apps::claims_of(&mut *tx, host).await?.into_iter().collect();
        let mut found = apps::get_many(&mut *tx, &ids).await?;
        Ok(AppList {
            apps: ids.iter().filter_map(|id| found.remove(id)).collect(),
        })
    }

    /// Makes `reported` exactly the instances `host` runs (see [`instances::set`]).
    pub async fn set_containers(
        &self,
        host: &str,
        reported: &[ReportedInstance],
    ) -> Result<InstanceList> {
        let mut tx = self.write().await?;
        let list = instances::set(&mut *tx, host, reported).await?;
        tx.commit().await?;
        Ok(InstanceList { instances: list })
    }

    /// The instances `host` reported.
    pub async fn containers(&self, host: &str) -> Result<InstanceList> {
        let mut tx = self.read().await?;
        Ok(InstanceList {
            instances: instances::of_host(&mut *tx, host).await?,
        })
    }

    /// Every running instance, or those of `app`.
    pub async fn instances(&self, app: Option<&str>) -> Result<InstanceList> {
        let mut tx = self.read().await?;
        Ok(InstanceList {
            instances: instances::list(&mut *tx, app).await?,
        })
    }

    pub async fn create_policies(&self, list: &[Policy]) -> Result<PolicyWriteResult> {
        let mut tx = self.write().await?;
        let changed = policies::create(&mut *tx, list).await?;
        let revision = changelog::revision(&mut *tx).await?;
        tx.commit().await?;
        Ok(PolicyWriteResult { changed, revision })
    }

    pub async fn delete_policies(&self, list: &[Policy]) -> Result<PolicyWriteResult> {
        let mut tx = self.write().await?;
        let changed = policies::delete(&mut *tx, list).await?;
        let revision = changelog::revision(&mut *tx).await?;
        tx.commit().await?;
        Ok(PolicyWriteResult { changed, revision })
    }

    pub async fn policies(&self, ids: Option<&[String]>) -> Result<PolicyList> {
        self.policies_where(&ids.map(policies::Filter::naming).unwrap_or_default())
            .await
    }

    /// The policies `filter` selects (CF's `id`, `source_id`, `dest_id`).
    pub async fn policies_where(&self, filter: &policies::Filter) -> Result<PolicyList> {
        let mut tx = self.read().await?;
        let list = policies::list(&mut *tx, filter).await?;
        Ok(PolicyList {
            total_policies: Some(list.len()),
            policies: list,
        })
    }

    /// The network-wide egress mode.
    pub async fn egress_mode(&self) -> Result<EgressSettings> {
        let mut tx = self.read().await?;
        Ok(EgressSettings {
            mode: egress::mode(&mut *tx).await?,
        })
    }

    pub async fn set_egress_mode(&self, mode: EgressMode) -> Result<EgressSettings> {
        let mut tx = self.write().await?;
        egress::set_mode(&mut *tx, mode).await?;
        tx.commit().await?;
        Ok(EgressSettings { mode })
    }

    pub async fn destinations(&self) -> Result<DestinationList> {
        let mut tx = self.read().await?;
        Ok(DestinationList {
            destinations: egress::list_destinations(&mut *tx).await?,
        })
    }

    /// Creates or replaces destinations; replies with them as stored (ids given).
    pub async fn put_destinations(&self, list: &[Destination]) -> Result<DestinationList> {
        let mut tx = self.write().await?;
        egress::put_destinations(&mut *tx, list).await?;
        tx.commit().await?;
        Ok(DestinationList {
            destinations: list.to_vec(),
        })
    }

    pub async fn delete_destination(&self, id: &str) -> Result<Destination> {
        let mut tx = self.write().await?;
        let d = egress::delete_destination(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(d)
    }

    pub async fn egress_policies(&self) -> Result<EgressPolicyList> {
        let mut tx = self.read().await?;
        let list = egress::list_policies(&mut *tx).await?;
        Ok(EgressPolicyList {
            total_egress_policies: Some(list.len()),
            egress_policies: list,
        })
    }

    pub async fn create_egress_policies(&self, list: &[EgressPolicy]) -> Result<PolicyWriteResult> {
        let mut tx = self.write().await?;
        let changed = egress::create_policies(&mut *tx, list).await?;
        let revision = changelog::revision(&mut *tx).await?;
        tx.commit().await?;
        Ok(PolicyWriteResult { changed, revision })
    }

    pub async fn delete_egress_policies(&self, list: &[EgressPolicy]) -> Result<PolicyWriteResult> {
        let mut tx = self.write().await?;
        let changed = egress::delete_policies(&mut *tx, list).await?;
        let revision = changelog::revision(&mut *tx).await?;
        tx.commit().await?;
        Ok(PolicyWriteResult { changed, revision })
    }

    /// Every app's tag, as Cloud Foundry's policy server lists them.
    pub async fn tags(&self) -> Result<TagList> {
        let apps = self.apps().await?;
        Ok(TagList {
            tags: apps
                .apps
                .iter()
                .map(|a| TagEntry::app(&a.id, a.tag))
                .collect(),
        })
    }

    /// The whole state at one revision (one read transaction).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.read().await?;
        Ok(Snapshot {
            revision: changelog::revision(&mut *tx).await?,
            leases: leases::list(&mut *tx).await?,
            apps: apps::list(&mut *tx).await?,
            policies: policies::list(&mut *tx, &policies::Filter::default()).await?,
            instances: instances::list(&mut *tx, None).await?,
            egress: egress::state(&mut *tx).await?,
        })
    }

    /// The whole state at one revision and every host's claims, in one read transaction
    /// (what per-host watch streams are cut from).
    pub async fn snapshot_with_claims(
        &self,
    ) -> Result<(
        Snapshot,
        std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    )> {
        let mut tx = self.read().await?;
        let snap = Snapshot {
            revision: changelog::revision(&mut *tx).await?,
            leases: leases::list(&mut *tx).await?,
            apps: apps::list(&mut *tx).await?,
            policies: policies::list(&mut *tx, &policies::Filter::default()).await?,
            instances: instances::list(&mut *tx, None).await?,
            egress: egress::state(&mut *tx).await?,
        };
        let claims = apps::all_claims(&mut *tx).await?;
        Ok((snap, claims))
    }

    /// `(revision, floor)`: the latest revision and the newest one no longer replayable.
    pub async fn log_bounds(&self) -> Result<(i64, i64)> {
        let mut tx = self.read().await?;
        Ok((
            changelog::revision(&mut *tx).await?,
            changelog::floor(&mut *tx).await?,
        ))
    }

    pub async fn changes_after(&self, revision: i64, limit: i64) -> Result<Vec<Change>> {
        let mut tx = self.read().await?;
        changelog::after(&mut *tx, revision, limit).await
    }

    pub async fn health(&self) -> Result<Health> {
        let mut tx = self.read().await?;
        Ok(Health {
            status: "ok".into(),
            store: self.store.backend().into(),
            revision: changelog::revision(&mut *tx).await?,
        })
    }

    /// (leases, apps, policies, revision) for the metrics page.
    pub async fn counts(&self) -> Result<(i64, i64, i64, i64)> {
        let mut tx = self.read().await?;
        Ok((
            leases::count(&mut *tx).await?,
            apps::count(&mut *tx).await?,
            policies::count(&mut *tx).await?,
            changelog::revision(&mut *tx).await?,
        ))
    }
}

/// Logs and counts leases that expired (nothing expires silently).
fn record_expired(metrics: &Metrics, expired: &[Lease]) {
    for lease in expired {
        metrics.leases_expired.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            host = %lease.host,
            subnet = %lease.subnet,
            underlay_ip = %lease.underlay_ip,
            expired_at = lease.expires_at,
            "lease expired; its subnet is back in the pool"
        );
    }
}

/// Returns expired leases to the pool (after the grace) and trims the change log, periodically.
async fn sweep(store: Arc<dyn Store>, expiry: Arc<Expiry>, metrics: Arc<Metrics>, every: Duration) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(every).await;
        ticks += 1;
        let result: Result<Vec<Lease>> = async {
            let mut tx = store.begin(TxMode::Write).await?;
            // Nothing expires during the grace: neither leases nor the claims of hosts without
            // one (claims from before migration 2 have host ""; running agents re-send theirs
            // within the grace).
            let expired = match expiry.cutoff() {
                Some(cutoff) => {
                    let expired = leases::expire(&mut *tx, cutoff).await?;
                    apps::drop_orphan_claims(&mut *tx).await?;
                    expired
                }
                None => Vec::new(),
            };
            if ticks >= 64 {
                ticks = 0;
                changelog::prune(&mut *tx, changelog::RETAINED_CHANGES).await?;
            }
            tx.commit().await?;
            Ok(expired)
        }
        .await;
        match result {
            Ok(expired) => record_expired(&metrics, &expired),
            Err(e) => tracing::warn!(error = %e, "lease expiry sweep failed"),
        }
    }
}
