//! The purge bus on a Redis Stream, `{key_prefix}purges`:
//!
//! * publish: `XADD key MAXLEN ~ 10000 * node NAME body JSON time MS instance
//!   TOKEN` (the token: this process, whose reader skips its own) on the
//!   shared [`ConnectionManager`], bounded by a timeout; when Redis is away
//!   the purge goes to a bounded queue that the service flushes, in order,
//!   once Redis answers again (a full queue folds into one purge of
//!   everything: other nodes lose cache, never a purge);
//! * apply: `XREAD BLOCK` from the last applied id on its own connection (a
//!   blocking read would stall every other command on a shared one), after
//!   checking with `XINFO STREAM` that nothing after that id was lost
//!   (`stream::Cursor`); when something was, the whole cache is emptied.
//!
//! Every failure backs off (100 ms doubling to 5 s) and is logged when the
//! connection state changes, not on every retry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, RedisResult, Value};
use tokio::sync::Notify;

use super::metrics::ClusterMetrics;
use super::stream::{Cursor, EntryId, Gap, StreamInfo};
use super::{Publication, PurgeBus};
use crate::cache::selector::Selector;
use crate::cache::storage::Store;
use crate::config::cluster::ClusterPlan;

/// `MAXLEN ~` of the stream: bounds Redis memory under a purge flood.
const STREAM_MAXLEN: u64 = 10_000;
/// Purges waiting for Redis; past this they fold into one `all`.
const QUEUE_MAX: usize = 1_000;
/// Longest the purge API waits on Redis before answering `unavailable`.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
/// `XREAD BLOCK`: how long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries applied per read.
const BATCH: usize = 256;
/// The reader starts this far before the process started: re-applying a
/// purge costs a refill, missing one serves a stale page.
const START_MARGIN_MS: u64 = 5_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) struct RedisBus {
    client: redis::Client,
    stream: String,
    /// `{prefix}epoch`: changes when Redis loses its data (`stream::Cursor`).
    epoch_key: String,
    node: String,
    redis_display: String,
    store: &'static Store,
    /// The publishing connection, created when the service starts.
    writer: ArcSwapOption<ConnectionManager>,
    /// The reader's view of Redis: publishes are only tried while it is up.
    connected: AtomicBool,
    queue: Mutex<VecDeque<String>>,
    /// Wakes the flusher (a purge queued, or Redis back).
    wake: Notify,
    /// Tags this process's entries, so its reader skips them (node names
    /// are the operator's and may repeat; this is random per process).
    instance: String,
    start: EntryId,
    metrics: Arc<ClusterMetrics>,
    /// The last entry applied here and its publication-to-application lag
    /// (`GET /__bext/cluster`).
    last_applied: Mutex<Option<(String, u64)>>,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }
    /// No failure since the last reset (the first is worth a log line).
    pub(super) fn is_first(&self) -> bool {
        self.0 == BACKOFF_MIN
    }
    pub(super) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }
    pub(super) fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Sleeps `d`; false when the server is shutting down.
pub(super) async fn pause(d: Duration, shutdown: &mut ShutdownWatch) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.changed() => false,
    }
}

impl RedisBus {
    pub(super) fn new(
        plan: &ClusterPlan,
        store: &'static Store,
        metrics: Arc<ClusterMetrics>,
    ) -> anyhow::Result<RedisBus> {
        // Parses only: no connection before the service runs.
        let client = redis::Client::open(plan.redis_url.as_str())?;
        Ok(RedisBus {
            client,
            stream: format!("{}purges", plan.key_prefix),
            epoch_key: format!("{}epoch", plan.key_prefix),
            node: plan.node_name.clone(),
            redis_display: plan.redis_display(),
            store,
            writer: ArcSwapOption::empty(),
            connected: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            instance: random_token(),
            start: EntryId {
                ms: now_ms().saturating_sub(START_MARGIN_MS),
                seq: 0,
            },
            metrics,
            last_applied: Mutex::new(None),
        })
    }

    async fn xadd(&self, conn: &mut ConnectionManager, wire: &str) -> RedisResult<()> {
        let id: String = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("node")
            .arg(&self.node)
            .arg("body")
            .arg(wire)
            .arg("time")
            .arg(now_ms())
            .arg("instance")
            .arg(&self.instance)
            .query_async(conn)
            .await?;
        log::debug!("cluster: published purge {id}");
        self.metrics.published.inc();
        Ok(())
    }

    /// One publish attempt, bounded by [`PUBLISH_TIMEOUT`].
    async fn try_publish(&self, wire: &str) -> Result<(), String> {
        let Some(writer) = self.writer.load_full() else {
            return Err("not started".into());
        };
        let mut conn = (*writer).clone();
        let t = std::time::Instant::now();
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.xadd(&mut conn, wire)).await {
            Ok(Ok(())) => {
                self.metrics.publish.observe(t.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Err(e)) => {
                self.metrics.redis_errors.inc();
                Err(e.to_string())
            }
            Err(_) => {
                self.metrics.redis_errors.inc();
                Err(format!("no answer in {PUBLISH_TIMEOUT:?}"))
            }
        }
    }

    fn enqueue(&self, wire: String) {
        let mut q = lock(&self.queue);
        if q.len() >= QUEUE_MAX {
            // Dropping any one purge would leave other nodes stale; one
            // purge of everything covers all of them.
            self.metrics.dropped.inc_by(q.len() as u64);
            log::warn!(
                "cluster: {} purges queued while Redis is unavailable; replaced by one purge of everything",
                q.len()
            );
            q.clear();
            q.push_back(Selector::All.to_wire());
        }
        q.push_back(wire);
        self.metrics.queue_length.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    fn queue_is_empty(&self) -> bool {
        lock(&self.queue).is_empty()
    }

    /// Publishes the queue in order while Redis answers.
    async fn flush(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Backoff::new();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                // Also retried on a clock: the reader may be up before a wake.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            while self.connected.load(Ordering::Acquire) {
                let Some(front) = lock(&self.queue).front().cloned() else {
                    break;
                };
                match self.try_publish(&front).await {
                    Ok(()) => {
                        backoff.reset();
                        let mut q = lock(&self.queue);
                        // The queue may have been folded meanwhile.
                        if q.front() == Some(&front) {
                            q.pop_front();
                        }
                        self.metrics.queue_length.set(q.len() as i64);
                        if q.is_empty() {
                            log::info!("cluster: queued purges published");
                        }
                    }
                    Err(e) => {
                        log::warn!("cluster: publishing a queued purge failed: {e}");
                        if !pause(backoff.next(), &mut shutdown).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn connect_reader(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            // A blocking read answers within BLOCK; past that Redis is stuck.
            .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    fn set_connected(&self, up: bool) {
        let was = self.connected.swap(up, Ordering::AcqRel);
        self.metrics.connected.set(i64::from(up));
        if up && !was {
            log::info!(
                "cluster: node {} reading purges from {} ({})",
                self.node,
                self.redis_display,
                self.stream
            );
            self.wake.notify_one();
        }
    }

    /// `XINFO STREAM`; `None` when there is no such stream.
    async fn stream_info(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> RedisResult<Option<StreamInfo>> {
        let reply: RedisResult<Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.stream)
            .query_async(conn)
            .await;
        match reply {
            Ok(v) => Ok(Some(parse_info(&v))),
            Err(e) if e.to_string().contains("no such key") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Empties the cache when the stream cannot prove this node saw every purge.
    /// The epoch key's value, set to a new token if there is none (new on
    /// every call: a node that set the old epoch must see the change too).
    async fn epoch(&self, conn: &mut MultiplexedConnection) -> RedisResult<String> {
        let (epoch,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&self.epoch_key)
            .arg(random_token())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&self.epoch_key)
            .query_async(conn)
            .await?;
        Ok(epoch)
    }

    async fn check(
        &self,
        conn: &mut MultiplexedConnection,
        cursor: &mut Cursor,
    ) -> RedisResult<()> {
        let info = self.stream_info(conn).await?;
        if let Some(gap) = cursor.check(info.as_ref()) {
            self.reset(gap);
        }
        Ok(())
    }

    fn reset(&self, gap: Gap) {
        let n = self.store.purge(Selector::All);
        self.metrics.resets.inc();
        log::warn!(
            "cluster: {}; emptied the cache ({n} entries) rather than serve what may have been purged",
            gap.as_str()
        );
    }

    fn apply(&self, entry: &StreamId) {
        let field = |k: &str| {
            entry
                .map
                .get(k)
                .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok())
        };
        // Already applied here, before it was published.
        if field("instance").is_some_and(|i| i == self.instance.as_bytes()) {
            return;
        }
        let decoded = match field("body") {
            Some(body) => Selector::from_wire(&body),
            None => Err("no body".into()),
        };
        match decoded {
            Ok(sel) => {
                self.store.purge(sel);
                self.metrics.applied.inc();
                let sent = field("time")
                    .and_then(|t| String::from_utf8(t).ok())
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(sent) = sent {
                    let lag = now_ms().saturating_sub(sent);
                    self.metrics.lag.observe(lag as f64 / 1000.0);
                    *lock(&self.last_applied) = Some((entry.id.clone(), lag));
                }
            }
            Err(e) => {
                self.metrics.bad_entries.inc();
                log::warn!(
                    "cluster: ignored purge stream entry {} from {:?}: {e}",
                    entry.id,
                    field("node").map(|n| String::from_utf8_lossy(&n).into_owned())
                );
            }
        }
    }

    /// Reads and applies until the connection fails.
    async fn read(&self, conn: &mut MultiplexedConnection, cursor: &mut Cursor) -> RedisResult<()> {
        // After every (re)connect: is this the Redis we were reading, and
        // were entries lost while we were away?
        let epoch = self.epoch(conn).await?;
        if let Some(gap) = cursor.check_epoch(&epoch) {
            self.reset(gap);
        }
        self.check(conn, cursor).await?;
        self.set_connected(true);
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(cursor.last.to_string())
                .query_async(conn)
                .await?;
            let entries: Vec<StreamId> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            if entries.is_empty() {
                continue;
            }
            // Before applying: a gap behind these entries resets the cache.
            self.check(conn, cursor).await?;
            for e in &entries {
                match EntryId::parse(&e.id) {
                    Some(id) => {
                        self.apply(e);
                        cursor.advance(id);
                    }
                    None => {
                        self.metrics.bad_entries.inc();
                        log::warn!("cluster: purge stream entry with a bad id {:?}", e.id);
                    }
                }
            }
        }
    }

    async fn follow(&self, mut shutdown: ShutdownWatch) {
        let mut cursor = Cursor::starting_at(self.start);
        let mut backoff = Backoff::new();
        loop {
            let result = match self.connect_reader().await {
                Ok(mut conn) => {
                    backoff.reset();
                    tokio::select! {
                        r = self.read(&mut conn, &mut cursor) => r,
                        _ = shutdown.changed() => return,
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.metrics.redis_errors.inc();
                if self.connected.load(Ordering::Acquire) {
                    log::warn!(
                        "cluster: lost Redis at {} ({e}); purging locally and queueing until it returns",
                        self.redis_display
                    );
                } else {
                    log::warn!("cluster: Redis at {} unavailable: {e}", self.redis_display);
                }
                self.set_connected(false);
            }
            if !pause(backoff.next(), &mut shutdown).await {
                return;
            }
        }
    }
}

/// A random token (std's randomly seeded hash keys, which differ on every
/// call, the time and the pid).
pub(super) fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The fields of an `XINFO STREAM` reply (RESP2 pairs or a RESP3 map).
fn parse_info(v: &Value) -> StreamInfo {
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    let text = |v: &Value| redis::from_redis_value_ref::<String>(v).ok();
    let mut info = StreamInfo::default();
    for (k, v) in pairs {
        match text(k).as_deref() {
            Some("length") => info.length = redis::from_redis_value_ref::<u64>(v).unwrap_or(0),
            Some("last-generated-id") => {
                info.last_generated = text(v).and_then(|s| EntryId::parse(&s)).unwrap_or_default();
            }
            Some("max-deleted-entry-id") => {
                info.max_deleted = text(v).and_then(|s| EntryId::parse(&s));
            }
            Some("entries-added") => {
                info.entries_added = redis::from_redis_value_ref::<u64>(v).ok();
            }
            Some("first-entry") => {
                if let Value::Array(e) = v {
                    info.first_entry = e.first().and_then(text).and_then(|s| EntryId::parse(&s));
                }
            }
            _ => {}
        }
    }
    info
}

#[async_trait]
impl PurgeBus for RedisBus {
    async fn publish(&self, sel: &Selector) -> Option<Publication> {
        let wire = sel.to_wire();
        // Only straight to Redis when it is up and nothing is waiting:
        // with Redis away, each purge would otherwise wait for a timeout.
        if self.connected.load(Ordering::Acquire) && self.queue_is_empty() {
            match self.try_publish(&wire).await {
                Ok(()) => return Some(Publication::Published),
                Err(e) => log::warn!("cluster: publishing a purge failed: {e}; queued"),
            }
        }
        self.enqueue(wire);
        Some(Publication::Unavailable)
    }

    async fn run(&self, shutdown: ShutdownWatch) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(PUBLISH_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(m) => self.writer.store(Some(Arc::new(m))),
            Err(e) => {
                log::error!("cluster: cannot set up the Redis publisher: {e}; purges stay local");
                return;
            }
        }
        tokio::join!(self.follow(shutdown.clone()), self.flush(shutdown));
    }

    fn status(&self) -> serde_json::Value {
        let last = lock(&self.last_applied).clone();
        serde_json::json!({
            "stream": self.stream,
            "connected": self.connected.load(Ordering::Acquire),
            "queued": lock(&self.queue).len(),
            "last_applied": last.as_ref().map(|(id, _)| id.clone()),
            "last_lag_ms": last.map(|(_, lag)| lag),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xinfo_replies_are_read_in_both_protocols() {
        let fields = vec![
            (bulk("length"), Value::Int(2)),
            (bulk("last-generated-id"), bulk("20-1")),
            (bulk("max-deleted-entry-id"), bulk("10-0")),
            (bulk("entries-added"), Value::Int(7)),
            (
                bulk("first-entry"),
                Value::Array(vec![bulk("15-0"), Value::Array(vec![])]),
            ),
        ];
        let want = StreamInfo {
            length: 2,
            last_generated: EntryId { ms: 20, seq: 1 },
            max_deleted: Some(EntryId { ms: 10, seq: 0 }),
            entries_added: Some(7),
            first_entry: Some(EntryId { ms: 15, seq: 0 }),
        };
        let flat: Vec<Value> = fields
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect();
        assert_eq!(parse_info(&Value::Array(flat)), want);
        assert_eq!(parse_info(&Value::Map(fields)), want);
        assert_eq!(parse_info(&Value::Nil), StreamInfo::default());
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let mut b = Backoff::new();
        let seq: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert_eq!(seq[0], BACKOFF_MIN);
        assert_eq!(seq[1], BACKOFF_MIN * 2);
        assert_eq!(*seq.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }
}
