//! The production in-memory [`Storage`] behind the edge cache: complete
//! responses only, held in one map under a byte budget with LRU eviction, and
//! the two indexes purges need (tag → entries, primary key → variants).
//!
//! The budget is enforced here, not by a Pingora eviction manager, so the
//! accounting cannot drift: an entry's weight is charged when it is committed
//! and refunded when it is removed, all under the same lock. Weights include
//! the body, the serialized header, the tags and a fixed per-entry overhead
//! (map, LRU and index bookkeeping), so `max_size` bounds the process's
//! cache memory, not just the bodies.
//!
//! Purge correctness for fills in flight: every request that may fill the
//! cache records the purge generation when it starts (`generation()`). A purge
//! bumps the generation, logs its selector and deletes what matches, under the
//! lock. A fill commits under the same lock and is dropped when a purge logged
//! after its start matches it. So once a purge has replied, no response that
//! was being fetched when it arrived can become visible. The log is bounded;
//! a fill older than the oldest logged purge is conservatively not stored.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType, PurgeOutcome, PurgeTarget};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, HitHandler, MissHandler, PurgeType, Storage};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::metrics::CacheMetrics;
use super::selector::Selector;

/// Bytes of bookkeeping per entry beyond what is counted exactly (map slots,
/// LRU node, Arcs, index vectors, allocator headers). Calibrated with
/// `cache::measure`, which compares the accounted weight with the RSS growth.
pub const ENTRY_OVERHEAD: usize = 768;
/// Purges remembered for fills in flight (count and total selector bytes).
const LOG_MAX_ENTRIES: usize = 4096;
const LOG_MAX_BYTES: usize = 4 << 20;

/// What the proxy knows about a fill that storage cannot derive from the key:
/// attached to the [`CacheMeta`] (as an extension) by the response policy.
#[derive(Debug, Clone)]
pub struct FillInfo {
    /// Purge generation when the request started.
    pub generation: u64,
    pub primary: HashBinary,
    /// Lower-cased Host (with port, as sent) and path, for prefix purges.
    pub host: Box<str>,
    pub path: Box<str>,
    pub tags: Box<[Box<str>]>,
}

impl FillInfo {
    fn bytes(&self) -> usize {
        // Each tag costs its bytes twice (entry and index key) plus a set in the index.
        self.host.len()
            + self.path.len()
            + self.tags.iter().map(|t| 2 * t.len() + 96).sum::<usize>()
    }
}

/// The header without its case-preserving name map. Every hit clones the
/// stored header twice (here and in Pingora's hit path) and the map doubles
/// that work; without it Pingora writes the standard names title-cased
/// (`Content-Type`) and others in lower case, which HTTP/1.1 allows.
///
/// Its index table also gets room for the headers a hit adds (Cache-Status,
/// Age, the request id, …): a clone keeps the table's size, so a hit never
/// rehashes it while it adds them (measured: ~420 instructions per hit on a
/// compressed entry, whose `Content-Encoding` and `Vary` filled the table).
/// The re-clone drops the spare entry slots `reserve` also made, so only the
/// 4-byte index slots are kept per stored response.
fn without_case(header: ResponseHeader) -> ResponseHeader {
    const HIT_HEADROOM: usize = 6;
    let mut parts = http::response::Parts::from(header);
    parts.headers.reserve(HIT_HEADROOM);
    parts.headers = parts.headers.clone();
    ResponseHeader::from(parts)
}

/// A response's cache metadata, kept parsed: rebuilding a [`CacheMeta`] from
/// it costs a header clone, where deserializing Pingora's format costs a zstd
/// decompression and a header parse on every hit.
struct StoredMeta {
    fresh_until: SystemTime,
    /// Admission or last revalidation: the reference point for `Age`.
    updated: SystemTime,
    swr: u32,
    sie: u32,
    variance: Option<HashBinary>,
    epoch_override: Option<SystemTime>,
    header: ResponseHeader,
}

impl StoredMeta {
    fn from_meta(meta: &CacheMeta) -> StoredMeta {
        StoredMeta {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            swr: meta.stale_while_revalidate_sec(),
            sie: meta.stale_if_error_sec(),
            variance: meta.variance(),
            epoch_override: meta.epoch_override(),
            header: without_case(meta.response_header_copy()),
        }
    }

    /// `created` is reported as the last update: nothing in bext reads the
    /// original admission time, and `Age` must count from the revalidation.
    fn to_meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.updated,
            self.swr,
            self.sie,
            self.header.clone(),
        );
        if let Some(v) = self.variance {
            m.set_variance(v);
        }
        if let Some(e) = self.epoch_override {
            m.set_epoch_override(e);
        }
        m
    }

    /// Heap bytes of the parsed header (its map, the case-preserving name
    /// map, allocator headers), calibrated with `cache::measure`.
    fn bytes(&self) -> usize {
        let fields: usize = self
            .header
            .headers
            .iter()
            .map(|(n, v)| 2 * (n.as_str().len() + v.len()) + 160)
            .sum();
        640 + fields
    }
}

/// One stored response.
struct Object {
    meta: StoredMeta,
    body: Bytes,
    info: Arc<FillInfo>,
    weight: usize,
}

struct Slot {
    obj: Arc<Object>,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<HashBinary, Slot>,
    lru: BTreeMap<u64, HashBinary>,
    tick: u64,
    used: usize,
    by_tag: HashMap<Box<str>, HashSet<HashBinary>>,
    by_primary: HashMap<HashBinary, Vec<HashBinary>>,
    log: VecDeque<(u64, Selector)>,
    log_bytes: usize,
    /// Purges with a generation at or below this were dropped from the log.
    log_floor: u64,
}

/// Counters for `bext check`-style reporting and the measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: usize,
    pub used_bytes: usize,
}

pub struct Store {
    inner: Mutex<Inner>,
    generation: AtomicU64,
    budget: usize,
    max_object: usize,
    /// Counters kept by the store itself (evictions happen only here); set
    /// by the proxy once its registry exists.
    metrics: std::sync::OnceLock<Arc<CacheMetrics>>,
}

impl Store {
    pub fn new(budget: usize, max_object: usize) -> Store {
        Store {
            inner: Mutex::new(Inner::default()),
            generation: AtomicU64::new(0),
            budget,
            max_object,
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Attaches the metrics the store counts into (once per plan).
    pub fn set_metrics(&self, metrics: Arc<CacheMetrics>) {
        metrics
            .budget_bytes
            .set(i64::try_from(self.budget).unwrap_or(i64::MAX));
        let _ = self.metrics.set(metrics);
    }

    /// Counts what the cache did for one request.
    pub fn count_request(&self, outcome: crate::exchange::CacheOutcome) {
        if let Some(m) = self.metrics.get() {
            m.request(outcome);
        }
    }

    /// Scrape time: entries and bytes held.
    pub fn refresh_metrics(&self) {
        if let Some(m) = self.metrics.get() {
            let s = self.stats();
            m.entries.set(i64::try_from(s.entries).unwrap_or(i64::MAX));
            m.used_bytes
                .set(i64::try_from(s.used_bytes).unwrap_or(i64::MAX));
        }
    }

    /// Leaked so Pingora's `&'static` storage requirement is met; one per plan.
    pub fn leak(budget: usize, max_object: usize) -> &'static Store {
        Box::leak(Box::new(Store::new(budget, max_object)))
    }

    pub fn max_object(&self) -> usize {
        self.max_object
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough maps; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The purge generation; a fill records it before going to the origin.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            entries: inner.entries.len(),
            used_bytes: inner.used,
        }
    }

    /// Removes every entry `sel` matches and remembers `sel` for fills in
    /// flight. Returns the number of entries removed.
    pub fn purge(&self, sel: Selector) -> usize {
        // Removed entries are freed after the lock is released: dropping
        // thousands of bodies should not stall concurrent lookups.
        let mut removed = Vec::new();
        let mut inner = self.lock();
        let gen = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let victims: Vec<HashBinary> = match &sel {
            Selector::All => inner.entries.keys().copied().collect(),
            Selector::Tags(tags) => {
                let mut v = HashSet::new();
                for t in tags.iter() {
                    if let Some(set) = inner.by_tag.get(t.as_ref()) {
                        v.extend(set.iter().copied());
                    }
                }
                v.into_iter().collect()
            }
            Selector::Primaries(ps) => ps
                .iter()
                .filter_map(|p| inner.by_primary.get(p))
                .flatten()
                .copied()
                .collect(),
            Selector::Prefix { .. } => inner
                .entries
                .iter()
                .filter(|(_, s)| sel.matches(&s.obj.info))
                .map(|(k, _)| *k)
                .collect(),
        };
        removed.reserve(victims.len());
        for k in &victims {
            removed.extend(inner.remove(k));
        }
        inner.log_bytes += sel.bytes();
        inner.log.push_back((gen, sel));
        while inner.log.len() > LOG_MAX_ENTRIES || inner.log_bytes > LOG_MAX_BYTES {
            match inner.log.pop_front() {
                Some((g, s)) => {
                    inner.log_bytes -= s.bytes();
                    inner.log_floor = g;
                }
                None => break,
            }
        }
        drop(inner);
        if let Some(m) = self.metrics.get() {
            m.purges.inc();
            m.purged_entries.inc_by(removed.len() as u64);
        }
        removed.len()
    }

    /// Whether a purge logged after `info.generation` covers this fill.
    fn purged_since(inner: &Inner, info: &FillInfo) -> bool {
        if info.generation < inner.log_floor {
            return true;
        }
        inner
            .log
            .iter()
            .rev()
            .take_while(|(g, _)| *g > info.generation)
            .any(|(_, s)| s.matches(info))
    }

    fn commit(&self, key: HashBinary, obj: Object) -> bool {
        let mut inner = self.lock();
        if Self::purged_since(&inner, &obj.info) {
            return false;
        }
        inner.remove(&key);
        let mut evicted = 0u64;
        while inner.used + obj.weight > self.budget {
            let Some((_, oldest)) = inner.lru.pop_first() else {
                break;
            };
            inner.remove(&oldest);
            evicted += 1;
        }
        if let Some(m) = self.metrics.get() {
            m.stored.inc();
            m.evicted.inc_by(evicted);
        }
        inner.tick += 1;
        let tick = inner.tick;
        for t in obj.info.tags.iter() {
            inner.by_tag.entry(t.clone()).or_default().insert(key);
        }
        inner
            .by_primary
            .entry(obj.info.primary)
            .or_default()
            .push(key);
        inner.used += obj.weight;
        inner.lru.insert(tick, key);
        inner.entries.insert(
            key,
            Slot {
                obj: Arc::new(obj),
                tick,
            },
        );
        true
    }
}

impl Inner {
    /// Unlinks an entry; the caller decides where its memory is freed.
    fn remove(&mut self, key: &HashBinary) -> Option<Arc<Object>> {
        let slot = self.entries.remove(key)?;
        self.lru.remove(&slot.tick);
        self.used -= slot.obj.weight;
        for t in slot.obj.info.tags.iter() {
            if let Some(set) = self.by_tag.get_mut(t.as_ref()) {
                set.remove(key);
                if set.is_empty() {
                    self.by_tag.remove(t.as_ref());
                }
            }
        }
        let primary = slot.obj.info.primary;
        if let Some(v) = self.by_primary.get_mut(&primary) {
            v.retain(|k| k != key);
            if v.is_empty() {
                self.by_primary.remove(&primary);
            }
        }
        Some(slot.obj)
    }

    fn touch(&mut self, key: &HashBinary) -> Option<Arc<Object>> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.entries.get_mut(key)?;
        self.lru.remove(&slot.tick);
        slot.tick = tick;
        self.lru.insert(tick, *key);
        Some(slot.obj.clone())
    }
}

fn storage_error(msg: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, msg)
}

#[async_trait]
impl Storage for Store {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(obj) = self.lock().touch(&key.combined_bin()) else {
            return Ok(None);
        };
        let meta = obj.meta.to_meta();
        let end = obj.body.len();
        Ok(Some((
            meta,
            Box::new(Hit {
                obj,
                start: 0,
                end,
                done: false,
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        // Without the policy's fill info (generation, tags) an entry could not
        // be purged correctly, so such a fill is streamed but never stored.
        let info = meta.extensions().get::<Arc<FillInfo>>().cloned();
        let capacity = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .unwrap_or(0)
            .min(self.max_object);
        Ok(Box::new(Fill {
            store: self,
            key: key.combined_bin(),
            meta: StoredMeta::from_meta(meta),
            body: BytesMut::with_capacity(capacity),
            info,
            oversize: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key = target.key().combined_bin();
        let removed = self.lock().remove(&key);
        Ok(if removed.is_some() {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let stored = StoredMeta::from_meta(meta);
        let k = key.combined_bin();
        let mut inner = self.lock();
        let Some(old) = inner.entries.get(&k).map(|s| s.obj.clone()) else {
            return Ok(false);
        };
        // A revalidation that started before a matching purge must not revive the entry.
        if let Some(info) = meta.extensions().get::<Arc<FillInfo>>() {
            if Self::purged_since(&inner, info) {
                inner.remove(&k);
                return Ok(false);
            }
        }
        let weight = old.weight - old.meta.bytes() + stored.bytes();
        let obj = Object {
            meta: stored,
            body: old.body.clone(),
            info: old.info.clone(),
            weight,
        };
        inner.used = inner.used - old.weight + weight;
        if let Some(slot) = inner.entries.get_mut(&k) {
            slot.obj = Arc::new(obj);
        }
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Reads one stored body; supports single ranges.
struct Hit {
    obj: Arc<Object>,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.obj.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.obj.body.len();
        if start >= len {
            return Err(storage_error("seek start out of range"));
        }
        self.start = start;
        self.end = end.map_or(len, |e| e.min(len)).max(start);
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Buffers one response body; committed to the store on `finish`.
struct Fill {
    store: &'static Store,
    key: HashBinary,
    meta: StoredMeta,
    body: BytesMut,
    info: Option<Arc<FillInfo>>,
    /// The body outgrew `max_object_size`: keep streaming, store nothing.
    oversize: bool,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        // Never fail here: an error would abort the client's response. An
        // oversize body is dropped and the response keeps streaming.
        if self.oversize {
            return Ok(());
        }
        if self.body.len() + data.len() > self.store.max_object {
            self.oversize = true;
            self.body = BytesMut::new();
            return Ok(());
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Some(info) = self.info else {
            return Err(storage_error("fill without policy info is not stored"));
        };
        // Not storing is an expected outcome here, not a storage failure (an
        // error would be logged as a warning per response): report nothing stored.
        if self.oversize {
            log::debug!("response larger than cache.max_object_size; streamed, not stored");
            return Ok(MissFinishType::Created(0));
        }
        let body = self.body.freeze();
        let size = body.len();
        let mut meta = self.meta;
        // A body that arrived without a length (chunked: compressed by bext,
        // or streamed by Phoenix) is complete now: hits send it with its
        // `Content-Length` in one write instead of as chunks.
        if !meta
            .header
            .headers
            .contains_key(http::header::CONTENT_LENGTH)
        {
            meta.header.remove_header(&http::header::TRANSFER_ENCODING);
            if meta
                .header
                .insert_header(http::header::CONTENT_LENGTH, size)
                .is_err()
            {
                return Err(storage_error("could not set the stored Content-Length"));
            }
        }
        let weight = size + meta.bytes() + info.bytes() + ENTRY_OVERHEAD;
        if weight > self.store.budget {
            return Err(storage_error("response larger than cache.max_size"));
        }
        let obj = Object {
            meta,
            body,
            info,
            weight,
        };
        if !self.store.commit(self.key, obj) {
            log::debug!("purged while being fetched; not stored");
            return Ok(MissFinishType::Created(0));
        }
        Ok(MissFinishType::Created(size))
    }
}
