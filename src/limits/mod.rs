//! Flood and abuse absorption: per-client request rates, connection and
//! websocket caps, size limits, slow-client deadlines and protocol hygiene.
//! Owns every decision; the proxy phases only call in:
//!
//! | where                              | what                                        |
//! |------------------------------------|---------------------------------------------|
//! | [`LimitedApp`] (listener)          | connection caps, head deadline, head budget |
//! | `early_request_filter` → [`Limits::early`] | hygiene 400, 414/431, global rate 429 |
//! | `request_filter` → [`Limits::respond_early`], [`Limits::admit_route`] | answer the above; route rate, 413 by Content-Length, websocket cap |
//! | `request_body_filter` → [`Limits::body_chunk`] | streamed 413, minimum body rate (408) |
//!
//! Every per-client table is a fixed-size sketch (see `rate.rs`, `conns.rs`):
//! memory does not depend on how many addresses talk to bext. Rejections are
//! counted per reason ([`Limits::counters`], `GET /__bext/limits`) and logged
//! at most once a second.
//!
//! With `[cluster]` the rate limiters also record what they admit
//! (`shared.rs`); the cluster's sync task takes those counts
//! ([`Limits::take_admissions`]) and hands back the other nodes'
//! ([`Limits::charge_remote`]). The request path never waits on it.

pub mod client_key;
mod conns;
pub mod hygiene;
pub mod metrics;
mod rate;
pub(crate) mod shared;
pub mod sizes;
mod stream;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ipnet::IpNet;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use client_key::ClientKey;
use conns::{listed, ConnLimiter, Permit};
use metrics::LimitMetrics;
pub(crate) use metrics::Listener;
use rate::{Decision, RateLimiter};
use sizes::HeadLimits;

use crate::respond;
use crate::telemetry::registry::Sub;

pub use stream::LimitedApp;

/// `rate = { requests, per, burst }`: `requests` per `per` sustained, up to
/// `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

/// Limits of one route rule (index = position in `route_rules`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLimits {
    pub rate: Option<RateSpec>,
    pub max_body: Option<u64>,
}

/// `[limits]`, validated. `0` disables a connection cap or the body rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsPlan {
    pub rate: Option<RateSpec>,
    pub allow: Vec<IpNet>,
    pub ipv6_prefix: u8,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_websockets_per_ip: usize,
    pub max_request_target: u64,
    pub max_header_line: u64,
    pub max_headers_size: u64,
    pub max_headers: usize,
    pub max_body: u64,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub min_body_rate: u64,
    pub body_rate_grace: Duration,
    pub min_send_rate: Option<u64>,
    pub routes: Vec<RouteLimits>,
}

impl Default for LimitsPlan {
    fn default() -> Self {
        LimitsPlan {
            rate: None,
            allow: Vec::new(),
            ipv6_prefix: 64,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            max_websockets_per_ip: 100,
            max_request_target: 8 << 10,
            max_header_line: 8 << 10,
            max_headers_size: 64 << 10,
            max_headers: 100,
            max_body: 100 << 20,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(90),
            min_body_rate: 1 << 10,
            body_rate_grace: Duration::from_secs(10),
            min_send_rate: None,
            routes: Vec::new(),
        }
    }
}

/// Why a request or connection was refused; also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Rate,
    RouteRate,
    Connections,
    Websockets,
    Target,
    Headers,
    Body,
    SlowBody,
    Framing,
}

impl Reason {
    const ALL: [Reason; 9] = [
        Reason::Rate,
        Reason::RouteRate,
        Reason::Connections,
        Reason::Websockets,
        Reason::Target,
        Reason::Headers,
        Reason::Body,
        Reason::SlowBody,
        Reason::Framing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rate => "rate",
            Reason::RouteRate => "route_rate",
            Reason::Connections => "connections",
            Reason::Websockets => "websockets",
            Reason::Target => "request_target",
            Reason::Headers => "headers",
            Reason::Body => "body_size",
            Reason::SlowBody => "slow_body",
            Reason::Framing => "framing",
        }
    }
}

/// A refusal decided in `early_request_filter`, answered in `request_filter`.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    status: u16,
    retry_after: Option<u32>,
}

/// Per-request limits state (a field of the proxy's `Ctx`).
#[derive(Debug, Default)]
pub struct LimitsCtx {
    client: Option<IpAddr>,
    /// The limit that refused this request, for its record.
    refused: Option<Reason>,
    key: Option<ClientKey>,
    exempt: bool,
    verdict: Option<Verdict>,
    body_limit: u64,
    body_seen: u64,
    body_started: Option<Instant>,
    websocket: Option<Permit>,
}

impl LimitsCtx {
    /// The limit that refused the request (its metric label), if one did.
    pub fn refused(&self) -> Option<&'static str> {
        self.refused.map(Reason::as_str)
    }
}

/// The runtime side of the limits, shared by the listener and the proxy.
pub struct Limits {
    /// What a reload in place replaces (the counters and open-connection
    /// tallies below stay).
    live: arc_swap::ArcSwap<LimitsLive>,
    trusted: Vec<IpNet>,
    conns: ConnLimiter,
    websockets: ConnLimiter,
    pub metrics: LimitMetrics,
    last_log_sec: AtomicU64,
    /// `[cluster]`: rate limiters record admissions for the sync.
    shared: bool,
}

/// The settings side of the limits and the rate sketches that go with them.
pub(crate) struct LimitsLive {
    pub(crate) plan: LimitsPlan,
    head: HeadLimits,
    rate: Option<Arc<RateLimiter>>,
    route_rates: Vec<Option<Arc<RateLimiter>>>,
}

impl LimitsLive {
    /// `old`'s sketches are kept where the spec is the same (the global rate;
    /// a route's rate at the same position), so a client over its limit
    /// stays over it across a reload.
    fn new(plan: LimitsPlan, old: Option<&LimitsLive>, shared: bool) -> LimitsLive {
        let keep = |spec: Option<RateSpec>,
                    old: Option<(Option<RateSpec>, &Option<Arc<RateLimiter>>)>| {
            let spec = spec?;
            match old {
                Some((Some(o), Some(l))) if o == spec => Some(l.clone()),
                _ => Some(Arc::new(RateLimiter::new(spec, shared))),
            }
        };
        let rate = keep(plan.rate, old.map(|o| (o.plan.rate, &o.rate)));
        let route_rates = plan
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let prev =
                    old.and_then(|o| Some((o.plan.routes.get(i)?.rate, o.route_rates.get(i)?)));
                keep(r.rate, prev)
            })
            .collect();
        LimitsLive {
            head: HeadLimits {
                max_request_target: usize_of(plan.max_request_target),
                max_header_line: usize_of(plan.max_header_line),
                max_headers_size: usize_of(plan.max_headers_size),
                max_headers: plan.max_headers,
            },
            rate,
            route_rates,
            plan,
        }
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("plan", &self.live.load().plan)
            .finish()
    }
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Limits {
    /// `shared`: `[cluster]` is on (rate limits are synced with other nodes).
    pub fn new(
        plan: LimitsPlan,
        trusted_proxies: Vec<IpNet>,
        registry: &prometheus::Registry,
        shared: bool,
    ) -> Limits {
        Limits {
            conns: ConnLimiter::new(plan.max_connections, plan.max_connections_per_ip),
            websockets: ConnLimiter::new(0, plan.max_websockets_per_ip),
            metrics: LimitMetrics::new(
                &Sub::new(registry, "limits"),
                &Sub::new(registry, "client_connections"),
            ),
            last_log_sec: AtomicU64::new(0),
            trusted: trusted_proxies,
            live: arc_swap::ArcSwap::from_pointee(LimitsLive::new(plan, None, shared)),
            shared,
        }
    }

    /// A reload in place: new settings, the same counters, connection
    /// tallies and (where the spec is unchanged) rate sketches.
    pub fn update(&self, plan: LimitsPlan) {
        self.conns
            .set_caps(plan.max_connections, plan.max_connections_per_ip);
        self.websockets.set_caps(0, plan.max_websockets_per_ip);
        let next = LimitsLive::new(plan, Some(&self.live.load()), self.shared);
        self.live.store(Arc::new(next));
    }

    /// The current settings (the connection layer's deadlines).
    pub(crate) fn settings(&self) -> arc_swap::Guard<Arc<LimitsLive>> {
        self.live.load()
    }

    /// The rate limiters with their cluster ids (0: `[limits] rate`,
    /// i + 1: route rule i).
    fn limiters(live: &LimitsLive) -> impl Iterator<Item = (u16, &RateLimiter)> {
        let global = live.rate.as_deref().map(|l| (0, l));
        let routes = live.route_rates.iter().enumerate().filter_map(|(i, l)| {
            let id = u16::try_from(i + 1).ok()?;
            Some((id, l.as_deref()?))
        });
        global.into_iter().chain(routes)
    }

    /// `[cluster]`: every rate limiter's admissions since the last call, and
    /// how many admissions did not fit the bounded tables (background task).
    pub(crate) fn take_admissions(&self) -> (Vec<shared::Section>, u64) {
        let live = self.live.load();
        let mut untracked = 0;
        let sections = Self::limiters(&live)
            .map(|(limiter, l)| {
                let mut counts = Vec::new();
                untracked += l.drain_admissions(&mut counts);
                shared::Section {
                    limiter,
                    spec: l.fingerprint(),
                    counts,
                }
            })
            .filter(|s| !s.counts.is_empty())
            .collect();
        (sections, untracked)
    }

    /// `[cluster]`: charges what another node admitted to the same limiter
    /// (same id and spec) here; returns the requests charged.
    pub(crate) fn charge_remote(&self, sections: &[shared::Section]) -> u64 {
        let live = self.live.load();
        let mut charged = 0;
        for (id, l) in Self::limiters(&live) {
            let spec = l.fingerprint();
            for s in sections
                .iter()
                .filter(|s| s.limiter == id && s.spec == spec)
            {
                for &(hash, count) in &s.counts {
                    l.charge(hash, count);
                    charged += u64::from(count);
                }
            }
        }
        charged
    }

    /// Rejections so far, per reason (the `bext_limits_rejected_total` metric).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        Reason::ALL
            .iter()
            .map(|r| (r.as_str(), self.metrics.rejected_count(*r)))
            .collect()
    }

    /// Connections currently open through the listener.
    pub fn open_connections(&self) -> usize {
        self.conns.open()
    }

    /// Counts a rejection and logs it, at most one line per second.
    fn record(&self, reason: Reason, client: Option<IpAddr>, status: u16) {
        self.metrics.rejected(reason);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_log_sec.load(Ordering::Relaxed);
        if now != last
            && self
                .last_log_sec
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "limits: refused client={} reason={} status={status} (logged at most once a second; totals at /__bext/limits)",
                client.map_or_else(|| "-".to_string(), |c| c.to_string()),
                reason.as_str()
            );
        }
    }

    /// Records a refusal of the request `ctx` belongs to.
    fn refuse(&self, reason: Reason, ctx: &mut LimitsCtx, status: u16) {
        ctx.refused = Some(reason);
        self.record(reason, ctx.client, status);
    }

    fn exempt(&self, plan: &LimitsPlan, ip: IpAddr) -> bool {
        listed(ip, &plan.allow)
    }

    /// Called for every accepted connection, before anything is read.
    pub(crate) fn admit_connection(
        &self,
        peer: Option<IpAddr>,
        listener: Listener,
    ) -> Result<Permit, ()> {
        let live = self.live.load();
        let plan = &live.plan;
        let exempt = peer.is_none_or(|ip| self.exempt(plan, ip) || listed(ip, &self.trusted));
        let key = peer.map(|ip| ClientKey::new(ip, plan.ipv6_prefix));
        self.conns.acquire(key, exempt).map_err(|_| {
            self.metrics.connection_refused(listener);
            self.record(Reason::Connections, peer, 503);
        })
    }

    /// `early_request_filter`: keys the client (its real address, worked out
    /// once per request by the caller), ends the head deadline, and decides
    /// refusals that do not depend on the route.
    pub fn early(&self, session: &mut Session, client: Option<IpAddr>, ctx: &mut LimitsCtx) {
        stream::headers_complete(session.stream());
        let live = self.live.load();
        let plan = &live.plan;
        if let Some(rate) = plan.min_send_rate {
            session.set_min_send_rate(Some(usize_of(rate)));
        }
        ctx.client = client;
        ctx.key = ctx.client.map(|ip| ClientKey::new(ip, plan.ipv6_prefix));
        ctx.exempt = ctx.client.is_some_and(|ip| self.exempt(plan, ip));
        ctx.body_limit = plan.max_body;
        let raw = session.as_http1().map(|h1| h1.get_headers_raw_bytes());
        let req = session.req_header();
        let refusal = if let Some(why) = hygiene::check(req, raw.as_ref()) {
            log::debug!("limits: refused framing: {why}");
            Some((Reason::Framing, 400, None))
        } else if let Some(o) = sizes::check_head(req, &live.head) {
            log::debug!("limits: refused head: {}", o.what);
            let reason = if o.status == 414 {
                Reason::Target
            } else {
                Reason::Headers
            };
            Some((reason, o.status, None))
        } else {
            self.check_rate(live.rate.as_deref(), ctx)
                .map(|retry| (Reason::Rate, 429, Some(retry)))
        };
        if let Some((reason, status, retry_after)) = refusal {
            ctx.verdict = Some(Verdict {
                status,
                retry_after,
            });
            self.refuse(reason, ctx, status);
        }
    }

    fn check_rate(&self, limiter: Option<&RateLimiter>, ctx: &LimitsCtx) -> Option<u32> {
        let (limiter, key) = (limiter?, ctx.key?);
        if ctx.exempt {
            return None;
        }
        match limiter.check(key) {
            Decision::Allow => None,
            Decision::Deny { retry_after_secs } => Some(retry_after_secs),
        }
    }

    /// `request_filter`, first thing: answers a refusal decided in [`Self::early`].
    /// `Ok(true)` means a response was sent.
    pub async fn respond_early(
        &self,
        session: &mut Session,
        ctx: &LimitsCtx,
        request_id: Option<&http::HeaderValue>,
    ) -> Result<bool> {
        match ctx.verdict {
            Some(v) => respond::refusal(session, v.status, v.retry_after, request_id)
                .await
                .map(|_| true),
            None => Ok(false),
        }
    }

    /// `request_filter`, once the route is known: the route's rate, its body
    /// limit against `Content-Length`, and the websocket cap.
    pub async fn admit_route(
        &self,
        session: &mut Session,
        route_index: usize,
        websocket: bool,
        ctx: &mut LimitsCtx,
        request_id: Option<&http::HeaderValue>,
    ) -> Result<bool> {
        let live = self.live.load();
        let route = live.plan.routes.get(route_index);
        if let Some(max) = route.and_then(|r| r.max_body) {
            ctx.body_limit = max;
        }
        let limiter = live.route_rates.get(route_index).and_then(Option::as_deref);
        if let Some(retry) = self.check_rate(limiter, ctx) {
            self.refuse(Reason::RouteRate, ctx, 429);
            return respond::refusal(session, 429, Some(retry), request_id)
                .await
                .map(|_| true);
        }
        let declared = sizes::content_length(session.req_header());
        if declared.is_some_and(|len| len > ctx.body_limit) {
            self.refuse(Reason::Body, ctx, 413);
            return respond::refusal(session, 413, None, request_id)
                .await
                .map(|_| true);
        }
        if declared.is_some_and(|len| len > 0)
            || session
                .req_header()
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            ctx.body_started = Some(Instant::now());
        }
        if websocket {
            // Tunnel traffic also flows through request_body_filter: it is
            // not a request body and max_body must not cut it.
            ctx.body_limit = u64::MAX;
            match self.websockets.acquire(ctx.key, ctx.exempt) {
                Ok(permit) => ctx.websocket = Some(permit),
                Err(_) => {
                    self.refuse(Reason::Websockets, ctx, 429);
                    return respond::refusal(session, 429, Some(1), request_id)
                        .await
                        .map(|_| true);
                }
            }
        }
        Ok(false)
    }

    /// `request_body_filter`: the streamed body against the route's limit and
    /// the minimum body rate. The body is never buffered here.
    pub fn body_chunk(
        &self,
        body: Option<&Bytes>,
        end_of_stream: bool,
        ctx: &mut LimitsCtx,
    ) -> Result<()> {
        ctx.body_seen += body.map_or(0, |b| b.len() as u64);
        if ctx.body_seen > ctx.body_limit {
            self.refuse(Reason::Body, ctx, 413);
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body larger than max_body",
            );
        }
        let live = self.live.load();
        let plan = &live.plan;
        if end_of_stream || plan.min_body_rate == 0 {
            return Ok(());
        }
        let Some(started) = ctx.body_started else {
            return Ok(());
        };
        let elapsed = started.elapsed();
        if let Some(measured) = elapsed.checked_sub(plan.body_rate_grace) {
            let floor = plan.min_body_rate as f64 * measured.as_secs_f64();
            if (ctx.body_seen as f64) < floor {
                self.refuse(Reason::SlowBody, ctx, 408);
                return Error::e_explain(
                    ErrorType::HTTPStatus(408),
                    "request body slower than limits.min_body_rate",
                );
            }
        }
        Ok(())
    }

    /// Rejection totals as JSON, for the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        let rejected: serde_json::Map<String, serde_json::Value> = self
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let live = self.live.load();
        serde_json::json!({
            "rejected": rejected,
            "open_connections": self.open_connections(),
            "sketch_bytes": RateLimiter::memory_bytes()
                * (usize::from(live.rate.is_some()) + live.route_rates.iter().flatten().count()),
        })
    }
}
