//! `BextProxy`, the one [`ProxyHttp`] implementation every listener feeds. Its
//! phase methods stay thin: each calls the module that owns the concern
//! (routing, limits, WAF, cache, upstream selection, forwarded headers,
//! tunnels, telemetry) and turns the answer into Pingora calls. What the
//! modules decide is written into the request's [`Exchange`] record, which
//! `logging` hands to the telemetry sinks.
//!
//! ```text
//! early_request_filter   exchange (id, client once) → limits.early → trace context
//! request_filter         limits refusal | edge redirect | admin | route → limits, WAF, redirects,
//!                        maintenance, auth, static, coding
//! request_body_filter    limits (size, rate) → WAF (held body) → LiveView join peek
//! request_cache_filter … cache (enable, key, hit, admission, vary, stale)
//! upstream_peer          upstream pool (health, affinity, retries)
//! upstream_request_filter forwarded headers, request id, traceparent
//! upstream_response_*    node response head; compression (before the cache stores it)
//! response_filter        hop-by-hop, edge headers, affinity cookie, Cache-Status, route headers
//! logging                outcome → telemetry (metrics, access log, span)
//! ```

mod ctx;
pub mod forwarded;
mod hop_by_hop;
mod live;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use ipnet::IpNet;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

pub use ctx::Ctx;
use live::Live;

use crate::admin::{self, Endpoint};
use crate::auth::{AuthMetrics, Verdict};
use crate::cache::EdgeCache;
use crate::cluster::{LocalState, SharedState};
use crate::compression::{Coding, EdgeCompression};
use crate::config::diff::Snapshot;
use crate::config::Plan;
use crate::exchange::Client;
use crate::limits::Limits;
use crate::maintenance::{self, Maintenance};
use crate::redirect::{self, Decision};
use crate::respond::{self, request_id, ErrorPages};
use crate::routing::{request_host, Lookup, Route, RouteTarget};
use crate::static_files;
use crate::telemetry::registry::Sub;
use crate::telemetry::Telemetry;
use crate::tls::EdgePolicy;
use crate::upstream::{self as upstream, Upstreams};
use crate::waf;

/// Tunnels to nodes a reload in place removed are closed over this window.
const REMOVED_SPREAD: Duration = Duration::from_secs(5);

/// `Clone` shares every piece of state (fields are `Arc`s or immutable
/// values): the HTTP/3 sidecar runs a clone in its own `HttpProxy`, and both
/// must see the same pools, counters and caches. Keep new fields that way.
#[derive(Clone)]
pub struct BextProxy {
    /// What a config reload replaces in place (see [`live`]).
    live: Arc<ArcSwap<Live>>,
    /// One reload at a time.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// The current pools, for the services (health checks, the drain at
    /// stop, the scrape, the admin API); requests use their plan's
    /// (`Live::upstreams`), whose indices match its routes. A reload in
    /// place stores both.
    upstreams: Arc<ArcSwap<Upstreams>>,
    /// Bumped by a reload in place that changed the pools (health checks follow).
    pools_generation: Arc<tokio::sync::watch::Sender<u64>>,
    registry: prometheus::Registry,
    /// Pingora's per-request attempt bound, fixed at start (`ServerConf::max_retries`).
    max_attempts: usize,
    trusted_proxies: Arc<[IpNet]>,
    limits: Arc<Limits>,
    cache: EdgeCache,
    edge: EdgePolicy,
    /// The listeners' certificate store (a reload in place swaps its content).
    tls_certs: Option<Arc<ArcSwap<crate::tls::CertStore>>>,
    telemetry: Arc<Telemetry>,
    auth_metrics: AuthMetrics,
    /// `[cluster]`'s shared switches (set once at the composition root;
    /// unset, the single-node default).
    shared: Arc<std::sync::OnceLock<Arc<dyn SharedState>>>,
}

impl BextProxy {
    pub fn new(plan: Plan) -> BextProxy {
        let snapshot = Snapshot::of(&plan);
        // One registry; each module registers its own metrics in it.
        let registry = prometheus::Registry::new();
        let limits = Arc::new(Limits::new(
            plan.limits,
            plan.server.trusted_proxies.clone(),
            &registry,
            plan.cluster.is_some(),
        ));
        let upstreams = Arc::new(Upstreams::new(&plan.upstreams));
        upstreams.register_metrics(&registry);
        let cache = EdgeCache::new(plan.cache);
        cache.register_metrics(&registry);
        plan.waf.register_metrics(&registry);
        let compression =
            EdgeCompression::new(plan.compression, &Sub::new(&registry, "compression"));
        let patterns = plan.routes.patterns();
        let auth_metrics = AuthMetrics::new(&Sub::new(&registry, "auth"));
        let maintenance = Maintenance::new(
            plan.sites,
            Some(plan.server.state_file.clone()),
            &plan.source,
        );
        for note in maintenance.restore() {
            log::warn!("maintenance: {note}");
        }
        let mut telemetry = Telemetry::new(&plan.telemetry, &registry);
        let labels = telemetry.route_labels(&patterns);
        let upstreams = Arc::new(ArcSwap::new(upstreams));
        let (pools, store) = (upstreams.clone(), cache.store());
        let suppressed = Sub::new(&registry, "log").counter(
            "lines_suppressed_total",
            "Log lines not written because one place logged more than 10 a second",
        );
        telemetry.on_scrape(move || {
            pools.load().refresh_metrics();
            store.refresh_metrics();
            let (now, seen) = (crate::logging::suppressed_total(), suppressed.get());
            if now > seen {
                suppressed.inc_by(now - seen);
            }
        });
        let live = Live {
            snapshot,
            routes: plan.routes,
            client_timeout: plan.server.client_timeout,
            pages: ErrorPages::new(plan.server.error_page),
            admin: plan.admin,
            waf: plan.waf,
            compression,
            maintenance: Arc::new(maintenance),
            labels,
            upstreams: upstreams.load_full(),
        };
        BextProxy {
            live: Arc::new(ArcSwap::from_pointee(live)),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
            edge: EdgePolicy::new(plan.tls.as_ref()),
            tls_certs: plan.tls.as_ref().map(|t| t.certs.clone()),
            upstreams,
            pools_generation: Arc::new(tokio::sync::watch::Sender::new(0)),
            max_attempts: Upstreams::max_attempts(&plan.upstreams),
            registry,
            trusted_proxies: plan.server.trusted_proxies.into(),
            limits,
            cache,
            telemetry: Arc::new(telemetry),
            auth_metrics,
            shared: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// `[cluster]`: shares maintenance and drain switches made here.
    pub fn set_shared_state(&self, shared: Arc<dyn SharedState>) {
        if self.shared.set(shared).is_err() {
            log::error!("cluster: shared state already attached; keeping the first");
        }
    }

    fn shared_state(&self) -> &dyn SharedState {
        match self.shared.get() {
            Some(s) => s.as_ref(),
            None => &LocalState,
        }
    }

    /// `POST /__bext/reload` (`{"config": PATH}`, the file the caller checked):
    /// re-reads this process's config file and, when `config::diff` says it
    /// can, swaps the new plan in. Answers 200 with what changed, 409 when a
    /// new process is needed (the caller then does the socket handoff), 422
    /// with the errors of a broken config (nothing changes).
    async fn reload_in_place(&self, session: &mut Session) -> (u16, serde_json::Value) {
        #[derive(serde::Deserialize)]
        struct Request {
            config: std::path::PathBuf,
        }
        let _one = self.reloading.lock().await;
        let asked: Request = match admin::read_body(session)
            .await
            .map(|b| serde_json::from_slice(&b))
        {
            Ok(Ok(r)) => r,
            _ => return (400, admin::error_body("expected {\"config\": \"PATH\"}")),
        };
        let current = self.live.load_full();
        let source = current.snapshot.source.clone();
        let asked = std::fs::canonicalize(&asked.config).unwrap_or(asked.config);
        if asked != source {
            let why = format!(
                "this process runs {}, not {}",
                source.display(),
                asked.display()
            );
            return (
                409,
                serde_json::json!({ "reloaded": false, "handoff": why }),
            );
        }
        // Reading and compiling the config does file I/O (certificates,
        // static roots, pages): off the event loop.
        let loaded = tokio::task::spawn_blocking(move || crate::config::load(&source)).await;
        let plan = match loaded {
            Ok(Ok(plan)) => plan,
            Ok(Err(errors)) => {
                let list: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
                return (
                    422,
                    serde_json::json!({ "reloaded": false, "errors": list }),
                );
            }
            Err(e) => return (500, admin::error_body(&format!("config load failed: {e}"))),
        };
        match crate::config::diff::compare(&current.snapshot, &Snapshot::of(&plan)) {
            crate::config::diff::Change::Handoff(why) => (
                409,
                serde_json::json!({ "reloaded": false, "handoff": why, "reloads": self.telemetry.reloads_total() }),
            ),
            crate::config::diff::Change::InPlace(_)
                if Upstreams::max_attempts(&plan.upstreams) > self.max_attempts =>
            {
                let why = "an upstream's retries exceed what this process allows per request";
                let n = self.telemetry.reloads_total();
                (
                    409,
                    serde_json::json!({ "reloaded": false, "handoff": why, "reloads": n }),
                )
            }
            crate::config::diff::Change::InPlace(changed) => {
                if let (Some(slot), Some(tls)) = (&self.tls_certs, &plan.tls) {
                    slot.store(tls.certs.load_full());
                }
                self.limits.update(plan.limits.clone());
                let (pools, gone) = self.upstreams.load().next(&plan.upstreams, &self.registry);
                let pools = Arc::new(pools);
                let next = current.next(plan, &self.telemetry, pools.clone());
                self.live.store(Arc::new(next));
                self.upstreams.store(pools);
                self.pools_generation.send_modify(|g| *g += 1);
                self.telemetry.reloaded();
                if !gone.is_empty() {
                    // Tunnels to removed nodes end with 1001, spread like a drain.
                    let sets: Vec<_> = gone.iter().map(|n| n.tunnels.clone()).collect();
                    tokio::spawn(async move {
                        crate::upstream::tunnels::close_all_of(&sets, REMOVED_SPREAD).await;
                    });
                }
                log::info!(
                    "config reloaded in place ({})",
                    if changed.is_empty() {
                        "no setting changed; files re-read".to_string()
                    } else {
                        changed.join(", ")
                    }
                );
                (
                    200,
                    serde_json::json!({ "reloaded": "in_place", "changed": changed }),
                )
            }
        }
    }

    /// The plan this request runs on (taken once, in `early_request_filter`).
    fn live(&self, ctx: &Ctx) -> Arc<Live> {
        ctx.live.clone().unwrap_or_else(|| self.live.load_full())
    }

    /// The pools, shared with the health-check service.
    pub fn upstreams(&self) -> Arc<ArcSwap<Upstreams>> {
        self.upstreams.clone()
    }

    /// Changes when a reload in place replaces the pools.
    pub fn pools_generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pools_generation.subscribe()
    }

    /// The limits, shared with the listener ([`crate::limits::LimitedApp`]).
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.clone()
    }

    /// The current maintenance switches (they change with a reload in
    /// place), re-read from the state file by a service.
    pub fn maintenance(&self) -> impl Fn() -> Arc<Maintenance> + Send + Sync + 'static {
        let live = self.live.clone();
        move || live.load().maintenance.clone()
    }

    /// The edge cache, for the cluster's purge bus (composition root).
    pub fn cache(&self) -> EdgeCache {
        self.cache.clone()
    }

    /// The telemetry sinks, whose background work runs as services.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Maintenance, then staging protection: true when bext answered (the
    /// maintenance page, 401, a token visit's redirect, 429).
    async fn gate(&self, session: &mut Session, ctx: &Ctx, route: &Route) -> Result<bool> {
        let live = self.live(ctx);
        let id = Some(&ctx.exchange.id);
        if let Some(page) = live.maintenance.active(route.site) {
            // The team (admin.allow, loopback, the admin token) sees the site.
            if !live
                .admin
                .permits(ctx.exchange.client.ip, admin::authorization(session))
            {
                live.pages.maintenance(session, page, id).await?;
                return Ok(true);
            }
        }
        let Some(auth) = &route.auth else {
            return Ok(false);
        };
        let verdict = auth
            .check(session.req_header(), ctx.exchange.client.secure)
            .await;
        self.auth_metrics.count(&verdict);
        match verdict {
            Verdict::Pass => return Ok(false),
            Verdict::Challenge(v) | Verdict::Denied(v) => {
                let extra = [(http::header::WWW_AUTHENTICATE, v)];
                live.pages.respond_with(session, 401, id, &extra).await?;
            }
            Verdict::Visit { location, cookie } => {
                respond::redirect_with(session, 303, &location, Some(cookie), id).await?;
            }
            Verdict::Busy => respond::refusal(session, 429, Some(1), id).await?,
        }
        Ok(true)
    }

    /// Answers a `/__bext/*` request (or 404s it when the caller is not allowed).
    async fn admin_request(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let live = self.live(ctx);
        let id = Some(&ctx.exchange.id);
        if !live
            .admin
            .permits(ctx.exchange.client.peer_ip(), admin::authorization(session))
        {
            return live.pages.respond(session, 404, id).await;
        }
        let req = session.req_header();
        match admin::endpoint(&req.method, req.uri.path()) {
            Endpoint::Waf => respond::json(session, 200, &live.waf.to_json(), id).await,
            Endpoint::Health => {
                let body =
                    serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") });
                respond::json(session, 200, &body, id).await
            }
            Endpoint::Metrics => {
                let body = Bytes::from(self.telemetry.scrape());
                respond::text(session, 200, crate::telemetry::CONTENT_TYPE, body, id).await
            }
            Endpoint::Upstreams => upstream::admin::list(session, &self.upstreams.load(), id).await,
            Endpoint::UpstreamNode => {
                let pools = self.upstreams.load_full();
                upstream::admin::node_action(session, &pools, self.shared_state(), id).await
            }
            Endpoint::Limits => respond::json(session, 200, &self.limits.to_json(), id).await,
            Endpoint::CachePurge => self.cache.purge_request(session, id).await,
            Endpoint::Maintenance => {
                maintenance::admin(session, &live.maintenance, self.shared_state(), id).await
            }
            Endpoint::Cluster => {
                respond::json(session, 200, &self.shared_state().status(), id).await
            }
            Endpoint::Reload => {
                let (status, body) = self.reload_in_place(session).await;
                respond::json(session, status, &body, id).await
            }
            Endpoint::NotFound => {
                let body = admin::error_body("no such admin endpoint");
                respond::json(session, 404, &body, id).await
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for BextProxy {
    // Boxed: the request future holds the context twice (Pingora moves it
    // between its stages), and an upgraded websocket holds that future for the
    // tunnel's whole life; a pointer there instead of ~1.2 KiB each.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::default()
    }

    /// No downstream modules: Pingora's default adds a (disabled) compression
    /// module whose per-request context costs CPU for nothing.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        // The id and the client first: every answer, refusals included, carries the id.
        let req = session.req_header();
        ctx.exchange.id = request_id::from_client(req.headers.get(request_id::HEADER));
        ctx.exchange.client = Client::of(session, &self.trusted_proxies);
        ctx.live = Some(self.live.load_full());
        self.limits
            .early(session, ctx.exchange.client.ip, &mut ctx.limits);
        ctx.trace = self.telemetry.trace_context(session.req_header());
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let live = self.live(ctx);
        let id = Some(&ctx.exchange.id);
        if self.limits.respond_early(session, &ctx.limits, id).await? {
            return Ok(true);
        }
        if self.edge.redirect_plain(session, &live.admin, id).await? {
            return Ok(true);
        }
        let req = session.req_header();
        if admin::is_admin_path(req.uri.path()) {
            self.admin_request(session, ctx).await?;
            return Ok(true);
        }
        let route = match live.routes.lookup(request_host(req), req.uri.path()) {
            Lookup::Route(r) => r.clone(),
            Lookup::NoRoute => {
                live.pages.respond(session, 404, id).await?;
                return Ok(true);
            }
            Lookup::UnknownHost => {
                live.pages.respond(session, 421, id).await?;
                return Ok(true);
            }
        };
        ctx.exchange.route = Some(route.index);
        ctx.exchange.outcome.websocket = tunnel::admit(session, &route, live.client_timeout);
        let websocket = ctx.exchange.outcome.websocket;
        ctx.route = Some(route.clone());
        let id = Some(&ctx.exchange.id);
        if self
            .limits
            .admit_route(session, route.index, websocket, &mut ctx.limits, id)
            .await?
        {
            return Ok(true);
        }
        if waf::phase::on_request(&live.waf, route.waf, session, &mut ctx.waf, id).await? {
            return Ok(true);
        }
        let rule = match &route.target {
            RouteTarget::Redirect(rule) => Some(&**rule),
            _ => None,
        };
        let decision = redirect::decide(
            route.canonical_host.as_deref(),
            route.trailing_slash,
            rule,
            ctx.exchange.client.scheme(),
            session.req_header(),
        );
        match decision {
            Decision::Pass => {}
            Decision::Redirect(status, location) => {
                respond::redirect(session, status, &location, id).await?;
                return Ok(true);
            }
            Decision::Invalid => {
                live.pages.respond(session, 400, id).await?;
                return Ok(true);
            }
        }
        if self.gate(session, ctx, &route).await? {
            return Ok(true);
        }
        if let RouteTarget::Static(root) = &route.target {
            let extras = static_files::Extras {
                route_headers: &route.response_headers,
                request_id: id,
            };
            static_files::serve(session, root, extras, &live.pages).await?;
            return Ok(true);
        }
        live.compression.on_request(
            route.compress,
            &session.req_header().headers,
            &mut ctx.compress,
        );
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let live = self.live(ctx);
        if ctx.exchange.outcome.websocket {
            // Client → node frames of an open tunnel: peeked at, never held.
            ctx.upstream
                .tunnel_data(body.as_deref(), ctx.exchange.client.ip);
        }
        // Size limits see every chunk as it arrives; the WAF may then hold it back.
        self.limits
            .body_chunk(body.as_ref(), end_of_stream, &mut ctx.limits)?;
        waf::phase::on_body(&live.waf, session, body, end_of_stream, &mut ctx.waf)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let scheme = ctx.exchange.client.scheme();
        self.cache
            .enable(session, &mut ctx.cache, ctx.route.as_deref(), scheme);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<CacheKey> {
        Ok(EdgeCache::key(session, &ctx.cache))
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<ForcedFreshness>> {
        EdgeCache::on_hit(&mut ctx.cache, is_fresh);
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        let foreign_coding = ctx.compress.unstorable();
        Ok(self
            .cache
            .admission(session, resp, &mut ctx.cache, foreign_coding))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        EdgeCache::variance(meta, req, ctx.compress.variant())
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        EdgeCache::serve_stale(&mut ctx.cache, error)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        // Static routes are answered in request_filter and never get here.
        let upstream = route.upstream().ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "static route reached upstream_peer",
            )
        })?;
        let websocket = ctx.exchange.outcome.websocket;
        let request = upstream::PeerRequest {
            req: session.req_header(),
            upstream,
            route_sticky: route.sticky,
            websocket,
            // The real client (after trusted proxies), as the limits see it:
            // `balance = "hash"` and the affinity fallback spread by it.
            client_ip: ctx.exchange.client.ip,
            requirements: tunnel::peer_requirements(route, websocket),
        };
        let live = self.live(ctx);
        live.upstreams.peer(&mut ctx.upstream, request)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream.connected(ctx.exchange.outcome.websocket, fd);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _p: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        ctx.upstream.connect_failed(e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let e = e.more_context(format!("Peer: {peer}"));
        ctx.upstream.proxy_failed(session, e, client_reused)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let live = self.live(ctx);
        ctx.upstream.response_head(session, resp)?;
        let method = &session.req_header().method;
        live.compression
            .on_response_head(method, resp, &mut ctx.compress)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        let live = self.live(ctx);
        live.compression
            .on_body(body, end_of_stream, &mut ctx.compress)?;
        Ok(None)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        forwarded::apply(
            upstream_request,
            &ctx.exchange.client,
            &self.trusted_proxies,
        )?;
        upstream_request.insert_header(request_id::HEADER, ctx.exchange.id.clone())?;
        if let Some(trace) = &ctx.trace {
            crate::telemetry::inject(upstream_request, trace)?;
        }
        EdgeCache::scrub_upstream(upstream_request, &ctx.cache);
        if let Some(route) = &ctx.route {
            if !route.header_policy.is_empty() {
                route.header_policy.apply_request(upstream_request)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        hop_by_hop::strip_response(resp);
        self.edge.decorate(session, resp)?;
        let longpoll = session.req_header().uri.path().ends_with("/longpoll");
        ctx.upstream
            .response(resp, ctx.exchange.client.secure, longpoll)?;
        self.cache.finish_response(session, resp, &ctx.cache)?;
        if let Some(route) = &ctx.route {
            for (name, value) in &route.response_headers {
                resp.insert_header(name.clone(), value.clone())?;
            }
            if !route.header_policy.is_empty() {
                route
                    .header_policy
                    .apply_response(resp, ctx.exchange.client.secure)?;
            }
        }
        resp.insert_header(request_id::HEADER, ctx.exchange.id.clone())?;
        if resp.status.as_u16() == 101 {
            // A tunnel's request "ends" at the 101; its lifetime is measured apart.
            ctx.exchange.outcome.head_time = Some(ctx.exchange.elapsed());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            if ctx.exchange.outcome.websocket {
                ctx.upstream.tunnel_end(body);
            } else {
                ctx.upstream.response_done();
            }
        } else if ctx.exchange.outcome.websocket {
            ctx.upstream.tunnel_from_node(body.as_deref());
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let live = self.live(ctx);
        let code = respond::status_for(e);
        // Pingora 0.9 closes the client connection after a failed proxy attempt
        // whatever this hook returns, so the page must say `Connection: close`
        // rather than promise a keep-alive the client would then find dead.
        session.set_keepalive(None);
        let id = Some(&ctx.exchange.id);
        if ctx.waf.blocked() && session.response_written().is_none() {
            if let Err(write_err) = respond::forbidden(session, id).await {
                log::debug!("could not send the waf 403 page: {write_err}");
            }
        } else if code > 0 && session.response_written().is_none() {
            if let Err(write_err) = live.pages.respond(session, code, id).await {
                log::debug!("could not send the {code} page: {write_err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Failures caused by the client (gone, malformed, refused by a limit or
    /// the WAF) are in the access log and the metrics; Pingora's ERROR line
    /// is kept for failures of bext or of a node.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        client_fault(error)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let duration = ctx.exchange.elapsed();
        let outcome = &mut ctx.exchange.outcome;
        outcome.duration = duration;
        let written = session.response_written();
        outcome.status = written.map_or(0, |r| r.status.as_u16());
        // As sent: compressed here, or stored compressed and served from the cache.
        outcome.encoding = written
            .and_then(crate::compression::content_coding)
            .and_then(Coding::from_token)
            .map(Coding::as_str);
        outcome.bytes_in = session.body_bytes_read() as u64;
        outcome.bytes_out = session.body_bytes_sent() as u64;
        outcome.limit = ctx.limits.refused();
        outcome.waf = ctx.waf.outcome();
        outcome.cache = self.cache.outcome(session, &ctx.cache);
        outcome.upstream = ctx.upstream.finish(ctx.exchange.client.ip);
        if let Some(e) = e {
            if !client_fault(e) {
                log::warn!(
                    "request_id={} route={} node={} status={} error={e}",
                    ctx.exchange.id.to_str().unwrap_or("-"),
                    ctx.route.as_ref().map_or("-", |r| r.pattern_text.as_str()),
                    outcome.upstream.node_id.as_deref().unwrap_or("-"),
                    outcome.status,
                );
            }
            outcome.error = Some(e.etype().as_str().into());
        }
        let live = self.live(ctx);
        self.telemetry.finish(
            &ctx.exchange,
            session.req_header(),
            ctx.trace.as_ref(),
            &live.labels,
        );
    }
}

/// The client caused it: its connection failed or it sent something bext
/// refused with a 4xx.
fn client_fault(e: &Error) -> bool {
    match e.etype() {
        ErrorType::HTTPStatus(code) => (400..500).contains(code),
        _ => *e.esource() == ErrorSource::Downstream,
    }
}
