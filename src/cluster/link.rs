//! Everything several nodes share besides purges, on one Redis: rate-limit
//! admissions, the maintenance and drain switches, health hints, and the
//! heartbeats `GET /__bext/cluster` lists. One background service; the
//! request path never touches it.
//!
//! Keys and channels (all under `key_prefix`):
//!
//! | name                | what                                                        |
//! |---------------------|-------------------------------------------------------------|
//! | `{p}rate` (channel) | each node's admissions of the last `sync_interval` (binary, `limits::shared`) |
//! | `{p}state` (hash)   | `["maintenance",SITE]` / `["drain",UPSTREAM,NODE]` → `1`/`0` |
//! | `{p}events` (channel) | `{"kind":"state"}` (re-read the hash), `{"kind":"hint",…}` |
//! | `{p}peers` (hash)   | instance → `{name, version, config_digest, seen_ms}`         |
//!
//! * **Rate limits** (approximate, never a round trip per request): every
//!   `sync_interval` the node drains its limiters' admission tables and
//!   publishes them in one `PUBLISH`; every node charges what the others
//!   admitted to its own sketch (`RateLimiter::charge`). Pub/sub rather
//!   than counters in keys: a count is only worth something for one period,
//!   so there is nothing to store, expire or read back, and a missed round
//!   is what Redis being away means anyway (limits local for that period).
//! * **Shared state**: an admin switch is applied here first (the same
//!   code the admin API runs), written to the hash, then announced; every
//!   node re-reads the hash on the announcement and on each (re)connect and
//!   applies what differs through the same functions. A switch made while
//!   Redis is away is kept and written when it returns, before the hash is
//!   read (so it is not undone by the older value there).
//! * **Health hints**: a node that sees a Phoenix node go unhealthy
//!   announces it; the others probe that pool at once (each still decides
//!   from its own probes).
//!
//! Redis away: every call has a timeout, the subscriber reconnects with
//! backoff (100 ms doubling to 5 s), rate rounds are dropped (counted) while
//! it is down, and state and failures are logged when the state changes,
//! not on every retry.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use serde::{Deserialize, Serialize};

use super::metrics::ClusterMetrics;
use super::redis_bus::{lock, now_ms, pause, random_token, Backoff};
use super::{Publication, PurgeBus, SharedState, StateChange};
use crate::config::cluster::ClusterPlan;
use crate::limits::shared::{decode, encode};
use crate::limits::Limits;
use crate::maintenance::Maintenance;
use crate::upstream::Upstreams;

/// Longest any one Redis call may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The subscriber pings this often: a half-open connection is noticed.
const PING_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// `GET /__bext/cluster` lists peers heard from within this.
pub(crate) const PEER_WINDOW: Duration = Duration::from_secs(10);
/// Heartbeats older than this are deleted from the hash.
const PEER_FORGET: Duration = Duration::from_secs(60);
/// At most this many heartbeats are read (a hostile writer cannot make a
/// node hold an unbounded list).
const MAX_PEERS: usize = 256;
/// Longest accepted value of the state hash or an event (bytes).
const MAX_ENTRY: usize = 4096;

/// What the service needs of the rest of bext (built at the composition root).
pub(crate) struct Parts {
    pub limits: Arc<Limits>,
    pub maintenance: Box<dyn Fn() -> Arc<Maintenance> + Send + Sync>,
    pub upstreams: Arc<ArcSwap<Upstreams>>,
    pub purges: Arc<dyn PurgeBus>,
    /// A digest of this node's config (peers compare them).
    pub config_digest: String,
}

/// One heartbeat in `{p}peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Heartbeat {
    name: String,
    version: String,
    config_digest: String,
    seen_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Event {
    /// The state hash changed: re-read it.
    State { from: String },
    /// `from` saw `node` of `upstream` go unhealthy.
    Hint {
        from: String,
        upstream: String,
        node: String,
    },
}

pub(crate) struct Link {
    client: redis::Client,
    node: String,
    redis_display: String,
    instance: String,
    /// The rate rounds' form of `instance` (own rounds are skipped).
    instance_bits: u64,
    sync_interval: Duration,
    rate_channel: String,
    events_channel: String,
    state_key: String,
    peers_key: String,
    parts: Parts,
    metrics: Arc<ClusterMetrics>,
    writer: ArcSwapOption<ConnectionManager>,
    /// The subscriber is connected (rounds and switches are only sent then).
    connected: AtomicBool,
    /// Switches made here that Redis has not stored yet (field → value);
    /// bounded by the config's sites and nodes: only known ones get here.
    pending: Mutex<BTreeMap<String, String>>,
    last_error: Mutex<Option<(String, u64)>>,
    peers: Mutex<Vec<Heartbeat>>,
    rounds: AtomicU64,
    round_failures: AtomicU64,
    /// Rate rounds are logged when they start or stop failing.
    rounds_failing: AtomicBool,
}

fn field(change: &StateChange) -> (String, String) {
    let (key, on) = match change {
        StateChange::Maintenance { site, on } => (serde_json::json!(["maintenance", site]), *on),
        StateChange::Drain {
            upstream,
            node,
            drained,
        } => (serde_json::json!(["drain", upstream, node]), *drained),
    };
    (key.to_string(), if on { "1" } else { "0" }.to_string())
}

/// The inverse of [`field`]; `None` for what bext did not write.
fn parse_field(key: &[u8], value: &[u8]) -> Option<StateChange> {
    if key.len() > MAX_ENTRY {
        return None;
    }
    let on = match value {
        b"1" => true,
        b"0" => false,
        _ => return None,
    };
    let parts: Vec<String> = serde_json::from_slice(key).ok()?;
    match parts.as_slice() {
        [k, site] if k == "maintenance" => Some(StateChange::Maintenance {
            site: site.clone(),
            on,
        }),
        [k, upstream, node] if k == "drain" => Some(StateChange::Drain {
            upstream: upstream.clone(),
            node: node.clone(),
            drained: on,
        }),
        _ => None,
    }
}

impl Link {
    pub(crate) fn new(
        plan: &ClusterPlan,
        parts: Parts,
        metrics: Arc<ClusterMetrics>,
    ) -> anyhow::Result<Link> {
        let client = redis::Client::open(plan.redis_url.as_str())?;
        let instance = random_token();
        let p = &plan.key_prefix;
        Ok(Link {
            client,
            node: plan.node_name.clone(),
            redis_display: plan.redis_display(),
            instance_bits: u64::from_str_radix(&instance, 16).unwrap_or(0),
            instance,
            sync_interval: plan.sync_interval,
            rate_channel: format!("{p}rate"),
            events_channel: format!("{p}events"),
            state_key: format!("{p}state"),
            peers_key: format!("{p}peers"),
            parts,
            metrics,
            writer: ArcSwapOption::empty(),
            connected: AtomicBool::new(false),
            pending: Mutex::new(BTreeMap::new()),
            last_error: Mutex::new(None),
            peers: Mutex::new(Vec::new()),
            rounds: AtomicU64::new(0),
            round_failures: AtomicU64::new(0),
            rounds_failing: AtomicBool::new(false),
        })
    }

    fn failed(&self, what: &str, e: &str) {
        self.metrics.redis_errors.inc();
        *lock(&self.last_error) = Some((format!("{what}: {e}"), now_ms()));
    }

    /// Runs `f` on the command connection, bounded by [`CALL_TIMEOUT`].
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let Some(w) = self.writer.load_full() else {
            return Err("not started".into());
        };
        let r = match tokio::time::timeout(CALL_TIMEOUT, f((*w).clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {CALL_TIMEOUT:?}")),
        };
        if let Err(e) = &r {
            self.failed(what, e);
        }
        r
    }

    async fn announce(&self, event: &Event) -> Result<(), String> {
        let text = serde_json::to_string(event).map_err(|e| e.to_string())?;
        let ch = self.events_channel.clone();
        self.call("publish event", |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(ch)
                .arg(text)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Writes the pending switches and announces them.
    async fn flush_pending(&self) -> Result<(), String> {
        let batch: Vec<(String, String)> = lock(&self.pending)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let key = self.state_key.clone();
        let fields = batch.clone();
        self.call("write state", |mut c| async move {
            redis::cmd("HSET")
                .arg(key)
                .arg(fields)
                .query_async::<i64>(&mut c)
                .await
        })
        .await?;
        {
            let mut p = lock(&self.pending);
            for (k, v) in &batch {
                // A newer switch of the same field stays pending.
                if p.get(k) == Some(v) {
                    p.remove(k);
                }
            }
        }
        self.metrics.state_published.inc();
        self.announce(&Event::State {
            from: self.instance.clone(),
        })
        .await
    }

    /// Reads the state hash and applies what differs here.
    async fn read_state(&self) -> Result<(), String> {
        let key = self.state_key.clone();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .call("read state", |mut c| async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut c).await
            })
            .await?;
        for (k, v) in entries {
            match parse_field(&k, &v) {
                Some(change) => self.apply(change).await,
                None => log::debug!(
                    "cluster: ignored state field {:?}",
                    String::from_utf8_lossy(&k)
                ),
            }
        }
        Ok(())
    }

    /// Applies one shared switch through the admin API's own functions.
    async fn apply(&self, change: StateChange) {
        match change {
            StateChange::Maintenance { site, on } => {
                let m = (self.parts.maintenance)();
                if m.is_on(&site).is_some_and(|now| now != on) {
                    match m.switch(&site, on).await {
                        Ok(warning) => {
                            self.metrics.state_applied.inc();
                            log::warn!(
                                "maintenance {} for site \"{site}\" (from the cluster)",
                                if on { "on" } else { "off" }
                            );
                            if let Some(w) = warning {
                                log::error!("maintenance: {w}");
                            }
                        }
                        Err(_) => log::debug!("cluster: no site {site:?} here"),
                    }
                }
            }
            StateChange::Drain {
                upstream,
                node,
                drained,
            } => {
                let ups = self.parts.upstreams.load();
                let changed = ups
                    .by_name(&upstream)
                    .and_then(|p| p.set_drained(&node, drained));
                if changed == Some(true) {
                    self.metrics.state_applied.inc();
                    log::info!(
                        "upstream {upstream} node {node} {} (from the cluster)",
                        if drained { "drained" } else { "undrained" }
                    );
                }
            }
        }
    }

    async fn on_message(&self, msg: redis::Msg) {
        let channel = msg.get_channel_name();
        if channel == self.rate_channel {
            match decode(msg.get_payload_bytes()) {
                Some((from, _)) if from == self.instance_bits => {}
                Some((_, sections)) => {
                    let n = self.parts.limits.charge_remote(&sections);
                    self.metrics.rate_charged.inc_by(n);
                }
                None => {
                    self.metrics.bad_entries.inc();
                    log::debug!("cluster: ignored a malformed rate round");
                }
            }
            return;
        }
        let payload = msg.get_payload_bytes();
        let event: Option<Event> = (payload.len() <= MAX_ENTRY)
            .then(|| serde_json::from_slice(payload).ok())
            .flatten();
        match event {
            Some(Event::State { .. }) => {
                if let Err(e) = self.read_state().await {
                    log::warn!("cluster: cannot read the shared state: {e}");
                }
            }
            Some(Event::Hint { from, .. }) if from == self.instance => {}
            Some(Event::Hint { upstream, node, .. }) => {
                self.metrics.hints_received.inc();
                let ups = self.parts.upstreams.load();
                if let Some(pool) = ups.by_name(&upstream) {
                    if pool.node_by_id(&node).is_some() {
                        log::info!(
                            "upstream {upstream} node {node}: another edge saw it fail; probing now"
                        );
                        pool.probe_now();
                    }
                }
            }
            None => {
                self.metrics.bad_entries.inc();
                log::debug!("cluster: ignored a malformed event");
            }
        }
    }

    fn set_connected(&self, up: bool) {
        let was = self.connected.swap(up, Ordering::AcqRel);
        self.metrics.events_connected.set(i64::from(up));
        if up && !was {
            log::info!(
                "cluster: node {} sharing rate limits, maintenance and drain state through {}",
                self.node,
                self.redis_display
            );
        }
    }

    /// One subscriber session: subscribe, catch up on the state, then
    /// handle messages until the connection fails.
    async fn session(&self, shutdown: &mut ShutdownWatch) -> Result<(), String> {
        let ps = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| format!("no connection in {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = ps.split();
        let channels = [self.rate_channel.as_str(), self.events_channel.as_str()];
        tokio::time::timeout(CALL_TIMEOUT, sink.subscribe(&channels))
            .await
            .map_err(|_| "subscribe timed out".to_string())?
            .map_err(|e| e.to_string())?;
        // Subscribed first: a change made between the read and the
        // subscription is announced to us.
        self.flush_pending().await?;
        self.read_state().await?;
        self.set_connected(true);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = stream.next() => match m {
                    Some(m) => self.on_message(m).await,
                    None => return Err("the subscription connection closed".into()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err(format!("no answer to PING in {CALL_TIMEOUT:?}")),
                    }
                    // A switch that failed to publish meanwhile is retried.
                    if !lock(&self.pending).is_empty() {
                        self.flush_pending().await?;
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    async fn subscribe(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Backoff::new();
        loop {
            let started = Instant::now();
            let result = self.session(&mut shutdown).await;
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = result {
                self.failed("subscribe", &e);
                if self.connected.load(Ordering::Acquire) {
                    log::warn!(
                        "cluster: lost Redis at {} ({e}); rate limits are local and switches stay on this node until it returns",
                        self.redis_display
                    );
                } else if backoff.is_first() {
                    log::warn!(
                        "cluster: Redis at {} unavailable: {e}; rate limits are local",
                        self.redis_display
                    );
                }
            }
            self.set_connected(false);
            // A session that ran a while was a good connection: start over.
            if started.elapsed() > Duration::from_secs(10) {
                backoff.reset();
            }
            if !pause(backoff.next(), &mut shutdown).await {
                return;
            }
        }
    }

    /// One rate round: this period's admissions to the other nodes.
    async fn rate_round(&self) {
        let (sections, untracked) = self.parts.limits.take_admissions();
        self.metrics.rate_untracked.inc_by(untracked);
        if sections.is_empty() {
            return;
        }
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.metrics.rate_rounds.inc();
        let result = if self.connected.load(Ordering::Acquire) {
            let wire = encode(self.instance_bits, &sections);
            let ch = self.rate_channel.clone();
            let t = Instant::now();
            let r = self
                .call("publish rate round", |mut c| async move {
                    redis::cmd("PUBLISH")
                        .arg(ch)
                        .arg(wire)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
            self.metrics.rate_sync.observe(t.elapsed().as_secs_f64());
            r.map(|_| ())
        } else {
            Err("Redis unavailable".into())
        };
        let failing = result.is_err();
        if failing {
            self.round_failures.fetch_add(1, Ordering::Relaxed);
            self.metrics.rate_failures.inc();
        }
        if self.rounds_failing.swap(failing, Ordering::Relaxed) != failing {
            match result {
                Err(e) => log::warn!(
                    "cluster: rate-limit admissions not shared ({e}); limits are local until Redis answers"
                ),
                Ok(()) => log::info!("cluster: rate-limit admissions shared again"),
            }
        }
    }

    /// Publishes a hint for every node that went unhealthy since the last look.
    async fn hints(&self, seen: &mut HashMap<(String, String), bool>) {
        let ups = self.parts.upstreams.load();
        let mut down = vec![];
        for pool in ups.pools() {
            for n in pool.nodes() {
                let healthy = n.is_healthy();
                let key = (pool.name.clone(), n.id.clone());
                if seen.insert(key, healthy) == Some(true) && !healthy {
                    down.push((pool.name.clone(), n.id.clone()));
                }
            }
        }
        // Bounded by the config's nodes: forget those a reload removed.
        seen.retain(|(p, id), _| ups.by_name(p).is_some_and(|p| p.node_by_id(id).is_some()));
        if !self.connected.load(Ordering::Acquire) {
            return;
        }
        for (upstream, node) in down {
            let hint = Event::Hint {
                from: self.instance.clone(),
                upstream,
                node,
            };
            if self.announce(&hint).await.is_ok() {
                self.metrics.hints_published.inc();
            }
        }
    }

    async fn ticks(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.rate_round().await;
            self.hints(&mut seen).await;
        }
    }

    async fn heartbeat(&self) -> Result<(), String> {
        let me = Heartbeat {
            name: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_digest: self.parts.config_digest.clone(),
            seen_ms: now_ms(),
        };
        let text = serde_json::to_string(&me).map_err(|e| e.to_string())?;
        let (key, instance) = (self.peers_key.clone(), self.instance.clone());
        let forget = PEER_FORGET.as_millis() as u64;
        let all: Vec<(String, Vec<u8>)> = self
            .call("heartbeat", |mut c| async move {
                let (all,): (Vec<(String, Vec<u8>)>,) = redis::pipe()
                    .cmd("HSET")
                    .arg(&key)
                    .arg(&instance)
                    .arg(text)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(forget)
                    .ignore()
                    .cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut c)
                    .await?;
                Ok(all)
            })
            .await?;
        let now = now_ms();
        let mut peers = vec![];
        let mut stale = vec![];
        for (id, value) in all.into_iter().take(MAX_PEERS) {
            let beat: Option<Heartbeat> = (value.len() <= MAX_ENTRY)
                .then(|| serde_json::from_slice(&value).ok())
                .flatten();
            match beat {
                Some(b) if now.saturating_sub(b.seen_ms) > forget => stale.push(id),
                None => stale.push(id),
                Some(_) if id == self.instance => {}
                Some(b) => peers.push(b),
            }
        }
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        let window = PEER_WINDOW.as_millis() as u64;
        self.metrics.peers.set(
            peers
                .iter()
                .filter(|p| now.saturating_sub(p.seen_ms) <= window)
                .count() as i64,
        );
        *lock(&self.peers) = peers;
        if !stale.is_empty() {
            let key = self.peers_key.clone();
            self.call("forget peers", |mut c| async move {
                redis::cmd("HDEL")
                    .arg(key)
                    .arg(stale)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await?;
        }
        Ok(())
    }

    async fn heartbeats(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Only while connected: the subscriber owns reconnecting.
            if self.connected.load(Ordering::Acquire) {
                if let Err(e) = self.heartbeat().await {
                    log::debug!("cluster: heartbeat failed: {e}");
                }
            }
        }
    }

    pub(crate) async fn run(&self, shutdown: ShutdownWatch) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(m) => self.writer.store(Some(Arc::new(m))),
            Err(e) => {
                log::error!("cluster: cannot set up the Redis connection: {e}; nothing is shared but purges");
                return;
            }
        }
        tokio::join!(
            self.subscribe(shutdown.clone()),
            self.ticks(shutdown.clone()),
            self.heartbeats(shutdown)
        );
    }
}

#[async_trait]
impl SharedState for Link {
    async fn publish(&self, change: StateChange) -> Option<Publication> {
        let (k, v) = field(&change);
        lock(&self.pending).insert(k, v);
        if !self.connected.load(Ordering::Acquire) {
            return Some(Publication::Unavailable);
        }
        match self.flush_pending().await {
            Ok(()) => Some(Publication::Published),
            Err(e) => {
                log::warn!(
                    "cluster: sharing a switch failed: {e}; kept to share when Redis answers"
                );
                Some(Publication::Unavailable)
            }
        }
    }

    fn status(&self) -> serde_json::Value {
        let now = now_ms();
        let window = PEER_WINDOW.as_millis() as u64;
        let peers: Vec<serde_json::Value> = lock(&self.peers)
            .iter()
            .filter(|p| now.saturating_sub(p.seen_ms) <= window)
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "version": p.version,
                    "config_digest": p.config_digest,
                    "same_config": p.config_digest == self.parts.config_digest,
                    "last_seen_ms_ago": now.saturating_sub(p.seen_ms),
                })
            })
            .collect();
        let last_error = lock(&self.last_error)
            .clone()
            .map(|(e, at)| serde_json::json!({ "error": e, "ms_ago": now.saturating_sub(at) }));
        let connected = self.connected.load(Ordering::Acquire);
        serde_json::json!({
            "node": self.node,
            "version": env!("CARGO_PKG_VERSION"),
            "config_digest": self.parts.config_digest,
            "redis": {
                "url": self.redis_display,
                "state": if connected { "connected" } else { "unavailable" },
                "last_error": last_error,
            },
            "peers": peers,
            "peer_window_secs": PEER_WINDOW.as_secs(),
            "purge_stream": self.parts.purges.status(),
            "rate_sync": {
                "interval_ms": self.sync_interval.as_millis() as u64,
                "rounds": self.rounds.load(Ordering::Relaxed),
                "failures": self.round_failures.load(Ordering::Relaxed),
            },
            "pending_switches": lock(&self.pending).len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_fields_round_trip_and_foreign_ones_are_ignored() {
        let changes = [
            StateChange::Maintenance {
                site: "*.example.com".into(),
                on: true,
            },
            StateChange::Drain {
                upstream: "app".into(),
                node: "n:1/x".into(),
                drained: false,
            },
        ];
        for c in changes {
            let (k, v) = field(&c);
            assert_eq!(parse_field(k.as_bytes(), v.as_bytes()), Some(c));
        }
        assert_eq!(parse_field(b"[\"maintenance\",\"x\"]", b"yes"), None);
        assert_eq!(parse_field(b"maintenance:x", b"1"), None);
        assert_eq!(parse_field(b"[\"drain\",\"a\"]", b"1"), None);
    }

    #[test]
    fn events_have_a_stable_wire_form() {
        let e = Event::Hint {
            from: "i".into(),
            upstream: "app".into(),
            node: "n1".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"kind":"hint","from":"i","upstream":"app","node":"n1"}"#
        );
        assert!(serde_json::from_slice::<Event>(br#"{"kind":"boom"}"#).is_err());
    }
}
