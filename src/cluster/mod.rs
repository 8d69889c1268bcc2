//! What several bext nodes share, and what stays per node. Shared: purges
//! (a [`PurgeBus`]), rate-limit admissions (approximately), the maintenance
//! and drain switches and health hints (a [`SharedState`]), heartbeats.
//! Per node: cache contents, connection caps, node health decisions.
//!
//! * [`LocalBus`], [`LocalState`] — the single-node defaults (no
//!   `[cluster]`): publish nothing, run nothing, and the admin API answers
//!   as it always did;
//! * `redis_bus` — purges on a Redis Stream (`XADD` / `XREAD BLOCK`), with a
//!   bounded queue for purges accepted while Redis is away;
//! * `stream` — the rules that decide when a node missed purges and must
//!   empty its cache;
//! * `link` — rate rounds, shared switches, health hints and heartbeats
//!   (pub/sub, one hash each), and `GET /__bext/cluster`;
//! * `metrics` — `bext_cluster_*`.
//!
//! Built at the composition root (`server.rs`) before Pingora forks; no
//! connection is made until the background services start.

mod link;
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

    /// Where this node is in the purge stream (`GET /__bext/cluster`).
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
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

/// A switch made through this node's admin API, for every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    Maintenance {
        site: String,
        on: bool,
    },
    Drain {
        upstream: String,
        node: String,
        drained: bool,
    },
}

/// Carries maintenance and drain switches between nodes.
#[async_trait]
pub trait SharedState: Send + Sync {
    /// Hands a switch already applied here to the others, bounded in time.
    /// `None`: there are no others (single node).
    async fn publish(&self, change: StateChange) -> Option<Publication>;

    /// `GET /__bext/cluster`.
    fn status(&self) -> serde_json::Value;
}

/// The single-node shared state: nothing to share.
pub struct LocalState;

#[async_trait]
impl SharedState for LocalState {
    async fn publish(&self, _change: StateChange) -> Option<Publication> {
        None
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "cluster": "off" })
    }
}

/// The Redis-backed pieces of `[cluster]`: the purge bus, and the link
/// (rate rounds, switches, hints, heartbeats) with its service. Makes no
/// connection until the services run; `registry` gets the metrics.
pub struct Redis {
    pub purges: Arc<dyn PurgeBus>,
    pub state: Arc<dyn SharedState>,
    link: Arc<link::Link>,
}

/// What the link needs of the rest of bext.
pub struct Wiring {
    pub limits: Arc<crate::limits::Limits>,
    pub maintenance: Box<dyn Fn() -> Arc<crate::maintenance::Maintenance> + Send + Sync>,
    pub upstreams: Arc<arc_swap::ArcSwap<crate::upstream::Upstreams>>,
    pub config_digest: String,
}

pub fn redis(
    plan: &ClusterPlan,
    store: &'static Store,
    registry: &prometheus::Registry,
    wiring: Wiring,
) -> anyhow::Result<Redis> {
    if plan.redis_url.starts_with("rediss://") {
        // rustls needs a process-wide provider; bext's is ring. Sets a
        // static only: safe before the fork.
        pingora::tls::install_default_crypto_provider();
    }
    let metrics = Arc::new(metrics::ClusterMetrics::new(&Sub::new(registry, "cluster")));
    let purges: Arc<dyn PurgeBus> =
        Arc::new(redis_bus::RedisBus::new(plan, store, metrics.clone())?);
    let parts = link::Parts {
        limits: wiring.limits,
        maintenance: wiring.maintenance,
        upstreams: wiring.upstreams,
        purges: purges.clone(),
        config_digest: wiring.config_digest,
    };
    let link = Arc::new(link::Link::new(plan, parts, metrics)?);
    Ok(Redis {
        purges,
        state: link.clone(),
        link,
    })
}

impl Redis {
    /// The link's background service (rate rounds, switches, hints, heartbeats).
    pub fn link_service(&self) -> LinkService {
        LinkService(self.link.clone())
    }
}

/// Runs the link as a Pingora background service (after the fork for `-d`).
pub struct LinkService(Arc<link::Link>);

#[async_trait]
impl BackgroundService for LinkService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await
    }
}

/// A digest of a config document (FNV-1a of its TOML text), so nodes can
/// tell whether they run the same settings without showing them. The node's
/// own name is left out: it is the one setting meant to differ.
pub fn config_digest(doc: &toml::Table) -> String {
    let mut doc = doc.clone();
    if let Some(toml::Value::Table(c)) = doc.get_mut("cluster") {
        c.remove("node_name");
    }
    let text = toml::to_string(&doc).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Runs a bus as a Pingora background service (after the fork for `-d`).
pub struct PurgeBusService(pub Arc<dyn PurgeBus>);

#[async_trait]
impl BackgroundService for PurgeBusService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await
    }
}
