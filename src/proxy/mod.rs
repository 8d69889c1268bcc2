//! `BextProxy`, the one [`ProxyHttp`] implementation every listener feeds. Its
//! phase methods stay thin: each calls the module that owns the concern
//! (routing, upstream selection, forwarded headers, tunnels, error pages) and
//! turns the answer into Pingora calls.

mod ctx;
pub mod error_page;
pub mod forwarded;
mod hop_by_hop;
pub mod request_id;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

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
use pingora::{Error, ErrorType, Result};

pub use ctx::Ctx;
use error_page::ErrorPages;
use forwarded::Arrival;

use crate::admin::{self, AdminAccess, Endpoint};
use crate::cache::EdgeCache;
use crate::config::Plan;
use crate::limits::Limits;
use crate::routing::{request_host, RouteTable, RouteTarget};
use crate::static_files;
use crate::tls::{self, EdgePolicy};
use crate::upstream::{self as upstream, Upstreams};
use crate::waf;

/// `Clone` shares every piece of state (fields are `Arc`s or immutable
/// values): the HTTP/3 sidecar runs a clone in its own `HttpProxy`, and both
/// must see the same pools, counters and caches. Keep new fields that way.
#[derive(Clone)]
pub struct BextProxy {
    routes: Arc<RouteTable>,
    upstreams: Arc<Upstreams>,
    trusted_proxies: Vec<IpNet>,
    client_timeout: Duration,
    pages: ErrorPages,
    admin: AdminAccess,
    limits: Arc<Limits>,
    waf: std::sync::Arc<crate::waf::Waf>,
    cache: EdgeCache,
    edge: EdgePolicy,
}

impl BextProxy {
    pub fn new(plan: Plan) -> BextProxy {
        let limits = Arc::new(Limits::new(
            plan.limits,
            plan.server.trusted_proxies.clone(),
        ));
        BextProxy {
            edge: EdgePolicy::new(plan.tls.as_ref()),
            upstreams: Arc::new(Upstreams::new(&plan.upstreams)),
            routes: Arc::new(plan.routes),
            trusted_proxies: plan.server.trusted_proxies,
            client_timeout: plan.server.client_timeout,
            pages: ErrorPages::new(plan.server.error_page),
            admin: plan.admin,
            limits,
            waf: plan.waf,
            cache: EdgeCache::new(plan.cache),
        }
    }

    /// The pools, shared with the health-check service.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.clone()
    }

    /// The limits, shared with the listener ([`crate::limits::LimitedApp`]).
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.clone()
    }

    /// Answers a `/__bext/*` request (or 404s it when the caller is not allowed).
    async fn admin_request(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let peer = Self::arrival(session).peer;
        if !self.admin.permits(peer, admin::authorization(session)) {
            return self
                .pages
                .respond(session, 404, ctx.request_id.as_ref())
                .await;
        }
        let req = session.req_header();
        match admin::endpoint(&req.method, req.uri.path()) {
            Endpoint::Waf => {
                let counts: serde_json::Map<String, serde_json::Value> = waf::COUNTERS
                    .snapshot()
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                    .collect();
                let mode = format!("{:?}", self.waf.mode()).to_lowercase();
                let body = serde_json::json!({ "mode": mode, "counters": counts });
                admin::respond_json(session, 200, &body, ctx.request_id.as_ref()).await
            }
            Endpoint::Health => {
                let body =
                    serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") });
                admin::respond_json(session, 200, &body, ctx.request_id.as_ref()).await
            }
            Endpoint::Upstreams => {
                upstream::admin::list(session, &self.upstreams, ctx.request_id.as_ref()).await
            }
            Endpoint::UpstreamNode => {
                upstream::admin::node_action(session, &self.upstreams, ctx.request_id.as_ref())
                    .await
            }
            Endpoint::Limits => {
                admin::respond_json(
                    session,
                    200,
                    &self.limits.to_json(),
                    ctx.request_id.as_ref(),
                )
                .await
            }
            Endpoint::CachePurge => {
                self.cache
                    .purge_request(session, ctx.request_id.as_ref())
                    .await
            }
            Endpoint::NotFound => {
                let body = admin::error_body("no such admin endpoint");
                admin::respond_json(session, 404, &body, ctx.request_id.as_ref()).await
            }
        }
    }

    fn arrival(session: &Session) -> Arrival {
        Arrival {
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_canonical()),
            scheme: tls::scheme(session),
            local_port: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
        }
    }
}

#[async_trait]
impl ProxyHttp for BextProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// No downstream modules: Pingora's default adds a (disabled) compression
    /// module whose per-request context costs CPU for nothing.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        self.limits.early(session, &mut ctx.limits);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if self.limits.respond_early(session, &mut ctx.limits).await? {
            return Ok(true);
        }
        let req = session.req_header();
        ctx.request_id = Some(request_id::from_client(req.headers.get(request_id::HEADER)));
        if self.edge.redirect_plain(session, &self.admin).await? {
            return Ok(true);
        }
        let req = session.req_header();
        if admin::is_admin_path(req.uri.path()) {
            self.admin_request(session, ctx).await?;
            return Ok(true);
        }
        let Some(route) = self.routes.find(request_host(req), req.uri.path()).cloned() else {
            self.pages
                .respond(session, 404, ctx.request_id.as_ref())
                .await?;
            return Ok(true);
        };
        ctx.websocket = tunnel::admit(session, &route, self.client_timeout);
        let waf_on = route.waf;
        ctx.route = Some(route.clone());
        if self
            .limits
            .admit_route(session, route.index, ctx.websocket, &mut ctx.limits)
            .await?
        {
            return Ok(true);
        }
        let id = ctx.request_id.as_ref();
        if waf::phase::on_request(&self.waf, waf_on, session, &mut ctx.waf, id).await? {
            return Ok(true);
        }
        if let RouteTarget::Static(root) = &route.target {
            let extras = static_files::Extras {
                route_headers: &route.response_headers,
                request_id: ctx.request_id.as_ref(),
            };
            static_files::serve(session, root, extras, &self.pages).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Size limits see every chunk as it arrives; the WAF may then hold it back.
        self.limits
            .body_chunk(body.as_ref(), end_of_stream, &mut ctx.limits)?;
        let id = ctx.request_id.as_ref();
        waf::phase::on_body(&self.waf, session, body, end_of_stream, &mut ctx.waf, id)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let scheme = Self::arrival(session).scheme;
        self.cache
            .enable(session, &mut ctx.cache, ctx.route.as_deref(), scheme);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        Ok(EdgeCache::key(session, &ctx.cache))
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        EdgeCache::on_hit(&mut ctx.cache, is_fresh);
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(self.cache.admission(session, resp, &mut ctx.cache))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        EdgeCache::variance(meta, req)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        EdgeCache::serve_stale(&mut ctx.cache, error)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
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
        let request = upstream::PeerRequest {
            req: session.req_header(),
            upstream,
            route_sticky: route.sticky,
            websocket: ctx.websocket,
            client_ip: Self::arrival(session).peer,
            requirements: tunnel::peer_requirements(route, ctx.websocket),
        };
        let peer = self.upstreams.peer(&mut ctx.upstream, request)?;
        ctx.node = ctx.upstream.node_addr();
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream.connected(ctx.websocket, fd);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _p: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        ctx.upstream.connect_failed(e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let e = e.more_context(format!("Peer: {peer}"));
        ctx.upstream.proxy_failed(session, e, client_reused)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream.response_head(session, resp)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forwarded::apply(
            upstream_request,
            Self::arrival(session),
            &self.trusted_proxies,
        )?;
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header(request_id::HEADER, id.clone())?;
        }
        EdgeCache::scrub_upstream(upstream_request, &ctx.cache);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        hop_by_hop::strip_response(resp);
        self.edge.decorate(session, resp)?;
        ctx.upstream.response(resp, tls::is_secure(session))?;
        self.cache.finish_response(session, resp, &ctx.cache)?;
        if let Some(route) = &ctx.route {
            for (name, value) in &route.response_headers {
                resp.insert_header(name.clone(), value.clone())?;
            }
        }
        if let Some(id) = &ctx.request_id {
            resp.insert_header(request_id::HEADER, id.clone())?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            if ctx.websocket {
                ctx.upstream.tunnel_end(body);
            } else {
                ctx.upstream.response_done();
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = error_page::status_for(e);
        // Pingora 0.9 closes the client connection after a failed proxy attempt
        // whatever this hook returns, so the page must say `Connection: close`
        // rather than promise a keep-alive the client would then find dead.
        session.set_keepalive(None);
        if ctx.waf.blocked() && session.response_written().is_none() {
            let id = ctx.request_id.as_ref();
            if let Err(write_err) = waf::phase::respond_blocked(session, id).await {
                log::debug!("could not send the waf 403 page: {write_err}");
            }
        } else if code > 0 && session.response_written().is_none() {
            if let Err(write_err) = self
                .pages
                .respond(session, code, ctx.request_id.as_ref())
                .await
            {
                log::debug!("could not send the {code} page: {write_err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.upstream.finish();
        let Some(e) = e else { return };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        log::warn!(
            "request_id={} route={} node={} status={} error={}",
            ctx.request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            ctx.route.as_ref().map_or("-", |r| r.pattern_text.as_str()),
            ctx.node.map_or_else(|| "-".to_string(), |n| n.to_string()),
            status,
            e
        );
    }
}
