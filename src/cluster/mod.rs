//! What several bext nodes share. Today: purges. A purge accepted by any node
//! is applied there and handed to a [`PurgeBus`], whose background service
//! applies the other nodes' purges here.
//!
//! * [`LocalBus`] — the single-node default (no `[cluster]`): publishes
//!   nothing, runs nothing, and the purge API answers as it always did;
//! * `redis_bus` — the Redis Stream version (`XADD` / `XREAD BLOCK`), with a
//!   bounded queue for purges accepted while Redis is away;
//! * `stream` — the rules that decide when a node missed purges and must
//!   empty its cache;
//! * `metrics` — `bext_cluster_*`.
//!
//! Built at the composition root (`server.rs`) before Pingora forks; no
//! connection is made until the background service starts.

pub(crate) mod metrics;
mod redis_bus;
pub(crate) mod stream;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cache::selector::Selector;
use crate::cache::storage::Store;
use crate::config::cluster::ClusterPlan;
use crate::telemetry::registry::Sub;

/// What became of a purge beyond this node (the purge API's `"cluster"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publication {
    /// Appended to the stream: every node applies it.
    Published,
    /// Redis could not be reached: queued, published when it returns.
    Unavailable,
}

impl Publication {
    pub fn as_str(self) -> &'static str {
        match self {
            Publication::Published => "published",
            Publication::Unavailable => "unavailable",
        }
    }
}

/// Carries purges between nodes.
#[async_trait]
pub trait PurgeBus: Send + Sync {
    /// Hands a purge already applied on this node to the others; bounded
    /// in time (never waits long on the network). `None`: there are no
    /// others (single node).
    async fn publish(&self, sel: &Selector) -> Option<Publication>;

    /// Applies the other nodes' purges to this node's cache until
    /// `shutdown` (a background service's body).
    async fn run(&self, shutdown: ShutdownWatch);
}

/// The single-node bus.
pub struct LocalBus;

#[async_trait]
impl PurgeBus for LocalBus {
    async fn publish(&self, _sel: &Selector) -> Option<Publication> {
        None
    }

    async fn run(&self, _shutdown: ShutdownWatch) {}
}

/// The Redis purge bus for `[cluster]`. Makes no connection until
/// [`PurgeBus::run`]; `registry` gets its metrics.
pub fn redis_purge_bus(
    plan: &ClusterPlan,
    store: &'static Store,
    registry: &prometheus::Registry,
) -> anyhow::Result<Arc<dyn PurgeBus>> {
    if plan.redis_url.starts_with("rediss://") {
        // rustls needs a process-wide provider; bext's is ring. Sets a
        // static only: safe before the fork.
        pingora::tls::install_default_crypto_provider();
    }
    let metrics = metrics::ClusterMetrics::new(&Sub::new(registry, "cluster"));
    let bus = redis_bus::RedisBus::new(plan, store, metrics)?;
    Ok(Arc::new(bus))
}

/// Runs a bus as a Pingora background service (after the fork for `-d`).
pub struct PurgeBusService(pub Arc<dyn PurgeBus>);

#[async_trait]
impl BackgroundService for PurgeBusService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await
    }
}
