//! The tag-addressable edge cache: what the proxy phases call.
//!
//! * `storage` — bounded in-memory [`pingora::cache::Storage`] with LRU
//!   eviction, the tag and URL indexes, and the purge generation log;
//! * `key` — scheme + Host + path + normalized query, and `Vary`;
//! * `policy` — RFC 9111 storability and freshness;
//! * `tags` — `Cache-Tag` / `Surrogate-Key` parsing and stripping;
//! * `selector` — what a purge matches (HTTP, CLI and the cluster's stream);
//! * `purge` — the `/__bext/cache/purge` API; `cli` — `bext cache purge`;
//! * `status` — the `Cache-Status` header.
//!
//! This module owns no socket and decides nothing about routing: the proxy
//! hands it the route and the session at each phase.

pub mod cli;
pub mod key;
#[cfg(test)]
mod measure;
pub mod metrics;
pub mod policy;
pub mod purge;
pub mod selector;
pub mod status;
pub mod storage;
pub mod tags;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::predictor::Predictor;
use pingora::cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource};

use crate::cluster::{LocalBus, PurgeBus};
use crate::config::CachePlan;
use crate::exchange::CacheOutcome;
use crate::routing::Route;
use crate::telemetry::registry::Sub;
use key::KeyParts;
use policy::Refusal;
use storage::{FillInfo, Store};

/// Per-request cache state (a field of the proxy's `Ctx`).
#[derive(Debug, Default)]
pub struct CacheCtx {
    /// The route caches: the response gets `Cache-Status`.
    pub route_cacheable: bool,
    /// Why the cache was not consulted for this request (`method`).
    pub bypass: Option<&'static str>,
    pub ttl_override: Option<Duration>,
    /// Purge generation when the request started (see `storage`).
    pub generation: u64,
    pub key: Option<KeyParts>,
    /// A stored entry was found: `Some(is_fresh)`.
    pub found: Option<bool>,
    /// The storage decision for the upstream response.
    pub stored: Option<Result<(), Refusal>>,
    /// A stale entry is being served because the upstream failed.
    pub upstream_error: bool,
}

/// Request headers never forwarded on cacheable requests: some frameworks
/// route by them, and they are not part of the key (cache poisoning).
const UNKEYED_OVERRIDES: [http::HeaderName; 2] = [
    http::HeaderName::from_static("x-original-url"),
    http::HeaderName::from_static("x-rewrite-url"),
];

#[derive(Clone)]
pub struct EdgeCache {
    store: &'static Store,
    lock: &'static CacheKeyLockImpl,
    /// Remembers keys whose responses were not storable (Phoenix's private
    /// pages), so later requests for them skip the cache lock and lookup
    /// ("hit-for-pass"). A bounded LRU: 16 × 4096 keys.
    predictor: &'static Predictor<PREDICTOR_SHARDS>,
    plan: CachePlan,
    /// Set once at the composition root (before the server runs); shared
    /// by every clone (the HTTP/3 sidecar's too).
    wiring: Arc<Wiring>,
}

/// What the composition root attaches after the proxy is built.
#[derive(Default)]
struct Wiring {
    /// Where accepted purges go besides this node (none: a single node).
    bus: OnceLock<Arc<dyn PurgeBus>>,
    /// The proxy's registry, for the purge bus's metrics.
    registry: OnceLock<prometheus::Registry>,
}

const PREDICTOR_SHARDS: usize = 16;
const PREDICTOR_SHARD_CAPACITY: usize = 4096;

impl EdgeCache {
    /// Storage and lock are leaked: Pingora needs `&'static` ones. One per plan.
    pub fn new(plan: CachePlan) -> EdgeCache {
        let store = Store::leak(
            usize::try_from(plan.max_size).unwrap_or(usize::MAX),
            usize::try_from(plan.max_object_size).unwrap_or(usize::MAX),
        );
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(plan.lock_timeout));
        let predictor: &'static Predictor<PREDICTOR_SHARDS> =
            Box::leak(Box::new(Predictor::new(PREDICTOR_SHARD_CAPACITY, None)));
        EdgeCache {
            store,
            lock,
            predictor,
            plan,
            wiring: Arc::default(),
        }
    }

    /// Attaches the purge bus (once, before the server runs).
    pub fn set_purge_bus(&self, bus: Arc<dyn PurgeBus>) {
        if self.wiring.bus.set(bus).is_err() {
            log::error!("cache: a purge bus was already attached; keeping the first");
        }
    }

    /// The registry the cache's metrics are in (set by `register_metrics`).
    pub fn metrics_registry(&self) -> Option<prometheus::Registry> {
        self.wiring.registry.get().cloned()
    }

    pub fn store(&self) -> &'static Store {
        self.store
    }

    /// Registers the cache's metrics in the proxy's registry.
    pub fn register_metrics(&self, registry: &prometheus::Registry) {
        let m = Arc::new(metrics::CacheMetrics::new(&Sub::new(registry, "cache")));
        self.store.set_metrics(m);
        let _ = self.wiring.registry.set(registry.clone());
    }

    /// `logging`: what the cache did for this request (its record and metric).
    pub fn outcome(&self, session: &Session, ctx: &CacheCtx) -> Option<CacheOutcome> {
        if !ctx.route_cacheable {
            return None;
        }
        let outcome = if ctx.bypass.is_some() {
            CacheOutcome::Bypass
        } else {
            match session.cache.phase() {
                CachePhase::Hit => CacheOutcome::Hit,
                CachePhase::Stale | CachePhase::StaleUpdating => CacheOutcome::Stale,
                CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
                    CacheOutcome::Revalidated
                }
                CachePhase::Miss | CachePhase::Expired => CacheOutcome::Miss,
                // Known-uncacheable keys (Phoenix's private pages) and
                // disabled lookups pass by the cache.
                _ => CacheOutcome::Bypass,
            }
        };
        self.store.count_request(outcome);
        Some(outcome)
    }

    /// `request_cache_filter`: enables the cache for GET/HEAD on cacheable routes.
    pub fn enable(
        &self,
        session: &mut Session,
        ctx: &mut CacheCtx,
        route: Option<&Route>,
        scheme: &'static str,
    ) {
        let Some(route) = route else { return };
        if !self.plan.enabled || !route.cache || route.websocket {
            return;
        }
        ctx.route_cacheable = true;
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            ctx.bypass = Some("method");
            return;
        }
        if session.is_upgrade_req() {
            ctx.bypass = Some("bypass");
            return;
        }
        ctx.ttl_override = route.cache_ttl;
        ctx.generation = self.store.generation();
        ctx.key = Some(KeyParts::from_request(req, scheme));
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.plan.lock_timeout);
        session.cache.enable(
            self.store,
            None,
            Some(self.predictor),
            Some(self.lock),
            Some(overrides),
        );
    }

    /// `cache_key_callback`.
    pub fn key(session: &Session, ctx: &CacheCtx) -> CacheKey {
        match &ctx.key {
            Some(k) => k.cache_key(),
            None => KeyParts::from_request(session.req_header(), "http").cache_key(),
        }
    }

    /// `cache_hit_filter`: records what the lookup found. Purge correctness
    /// does not depend on this hook (see `storage`), so it never forces a miss.
    pub fn on_hit(ctx: &mut CacheCtx, is_fresh: bool) {
        ctx.found = Some(is_fresh);
    }

    /// `response_cache_filter`.
    pub fn admission(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut CacheCtx,
        foreign_coding: bool,
    ) -> RespCacheable {
        // The origin's body is in a coding other than the one this request's
        // variant is keyed by (compression): other clients of the variant
        // might not decode it.
        let decision = if foreign_coding {
            Err(Refusal::Encoding)
        } else {
            policy::decide(session.req_header(), resp, ctx.ttl_override, &self.plan)
        };
        match (decision, &ctx.key) {
            (Ok((mut meta, tags)), Some(parts)) => {
                let info = FillInfo {
                    generation: ctx.generation,
                    primary: parts.primary_hash(),
                    host: parts.host.clone().into_boxed_str(),
                    path: parts.path.clone().into_boxed_str(),
                    tags: tags.into_boxed_slice(),
                };
                meta.extensions_mut().insert(Arc::new(info));
                ctx.stored = Some(Ok(()));
                RespCacheable::Cacheable(meta)
            }
            (Ok(_), None) => RespCacheable::Uncacheable(NoCacheReason::InternalError),
            (Err(r), _) => {
                ctx.stored = Some(Err(r));
                RespCacheable::Uncacheable(NoCacheReason::Custom(r.as_str()))
            }
        }
    }

    /// `cache_vary_filter`. `accept_encoding` is the request's negotiated
    /// coding on a compressing route: the variant a stored response that
    /// varies on `Accept-Encoding` is kept under.
    pub fn variance(
        meta: &CacheMeta,
        req: &RequestHeader,
        accept_encoding: Option<&str>,
    ) -> Option<HashBinary> {
        key::variance(meta, req, accept_encoding)
    }

    /// `should_serve_stale`: stale-while-revalidate whenever the entry's window
    /// allows (Pingora checks it), stale-if-error for any failure not caused
    /// by the client, including "no healthy node".
    pub fn serve_stale(ctx: &mut CacheCtx, error: Option<&Error>) -> bool {
        match error {
            None => true,
            Some(e) if *e.esource() == ErrorSource::Downstream => false,
            Some(_) => {
                ctx.upstream_error = true;
                true
            }
        }
    }

    /// `upstream_request_filter`: drops unkeyed routing overrides.
    pub fn scrub_upstream(req: &mut RequestHeader, ctx: &CacheCtx) {
        if ctx.key.is_some() {
            for h in &UNKEYED_OVERRIDES {
                req.remove_header(h);
            }
        }
    }

    /// `response_filter`: strips tags, adds `Cache-Status`.
    pub fn finish_response(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &CacheCtx,
    ) -> pingora::Result<()> {
        let cache = &session.cache;
        let phase = cache.phase();
        // A hit is served from a stored header, stored without tags (see
        // `policy::decide`); everything else comes from the upstream.
        let from_store = matches!(
            phase,
            CachePhase::Hit | CachePhase::Stale | CachePhase::StaleUpdating
        );
        if !self.plan.expose_tags && !from_store {
            tags::strip(resp);
        }
        if !ctx.route_cacheable {
            return Ok(());
        }
        // The key is only certain to be set in these phases (`cache_key()` panics otherwise).
        let keyed = matches!(phase, CachePhase::Miss | CachePhase::Expired);
        let observed = status::Observed {
            phase,
            meta: cache.maybe_cache_meta(),
            vary_lookup: keyed && cache.cache_key().variance_bin().is_some(),
            status: resp.status.as_u16(),
        };
        resp.insert_header(status::HEADER, status::render(&observed, ctx))?;
        Ok(())
    }

    /// `POST /__bext/cache/purge` (already authorized).
    pub async fn purge_request(
        &self,
        session: &mut Session,
        request_id: Option<&http::HeaderValue>,
    ) -> pingora::Result<()> {
        let bus: &dyn PurgeBus = match self.wiring.bus.get() {
            Some(b) => b.as_ref(),
            None => &LocalBus,
        };
        purge::handle(session, self.store, bus, request_id).await
    }
}
