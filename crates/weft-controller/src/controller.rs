//! The controller: the operations of the API on top of a [`Store`], each in one transaction, plus
//! the background tasks (change feed, lease expiry, change-log pruning).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::leases::{self, Pool};
use crate::metrics::Metrics;
use crate::model::{
    App, AppList, Change, Health, Lease, LeaseList, Policy, PolicyList, PolicyWriteResult, Snapshot,
};
use crate::store::{Store, Tx, TxMode};
use crate::watch::Feed;
use crate::{apps, changelog, policies};

/// What the controller hands out and how long leases live.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub pool: Pool,
    pub lease_ttl: Duration,
    /// Interval of heartbeat lines on idle watch streams.
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
            heartbeat: Duration::from_secs(15),
            max_claims_per_host: DEFAULT_MAX_CLAIMS_PER_HOST,
        }
    }
}

pub struct Controller {
    store: Arc<dyn Store>,
    config: ControllerConfig,
    pub(crate) feed: Feed,
    pub(crate) metrics: Metrics,
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
            config,
            feed,
            metrics: Metrics::default(),
            tasks: Vec::new(),
        };
        // The first sweep waits one lease TTL: after an outage of the controller, agents get a
        // full TTL to renew before their leases (and every other host's routes to them) go.
        let grace = ctl.config.lease_ttl;
        ctl.tasks.push(tokio::spawn(sweep(
            ctl.store.clone(),
            grace,
            ctl.sweep_interval(),
        )));
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

    pub async fn acquire_lease(&self, host: &str, underlay_ip: &str) -> Result<Lease> {
        let mut tx = self.write().await?;
        let lease = leases::acquire(
            &mut *tx,
            &self.config.pool,
            self.ttl_secs(),
            host,
            underlay_ip,
        )
        .await?;
        tx.commit().await?;
        Ok(lease)
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
        let mut tx = self.read().await?;
        let list = policies::list(&mut *tx, ids).await?;
        Ok(PolicyList {
            total_policies: Some(list.len()),
            policies: list,
        })
    }

    /// The whole state at one revision (one read transaction).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.read().await?;
        Ok(Snapshot {
            revision: changelog::revision(&mut *tx).await?,
            leases: leases::list(&mut *tx).await?,
            apps: apps::list(&mut *tx).await?,
            policies: policies::list(&mut *tx, None).await?,
        })
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

/// Returns expired leases to the pool and trims the change log, periodically.
async fn sweep(store: Arc<dyn Store>, grace: Duration, every: Duration) {
    let mut ticks = 0u64;
    tokio::time::sleep(grace.saturating_sub(every)).await;
    loop {
        tokio::time::sleep(every).await;
        ticks += 1;
        let result: Result<()> = async {
            let mut tx = store.begin(TxMode::Write).await?;
            let expired = leases::expire(&mut *tx, leases::now()).await?;
            apps::drop_orphan_claims(&mut *tx).await?;
            if ticks >= 64 {
                ticks = 0;
                changelog::prune(&mut *tx, changelog::RETAINED_CHANGES).await?;
            }
            tx.commit().await?;
            for e in &expired {
                if let crate::model::Event::LeaseDeleted { lease } = e {
                    tracing::info!(host = %lease.host, subnet = %lease.subnet, "lease expired");
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "lease expiry sweep failed");
        }
    }
}
