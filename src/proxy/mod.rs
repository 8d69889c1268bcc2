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
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

pub use ctx::Ctx;
use error_page::ErrorPages;
use forwarded::Arrival;

use crate::admin::{self, AdminAccess, Endpoint};
use crate::config::Plan;
use crate::routing::{request_host, RouteTable};
use crate::tls::{self, EdgePolicy};
use crate::upstream::Pool;

/// `Clone` shares every piece of state (fields are `Arc`s or immutable
/// values): the HTTP/3 sidecar runs a clone in its own `HttpProxy`, and both
/// must see the same pools, counters and caches. Keep new fields that way.
#[derive(Clone)]
pub struct BextProxy {
    routes: Arc<RouteTable>,
    pools: Arc<[Pool]>,
    trusted_proxies: Vec<IpNet>,
    client_timeout: Duration,
    pages: ErrorPages,
    admin: AdminAccess,
    edge: EdgePolicy,
}

impl BextProxy {
    pub fn new(plan: Plan) -> BextProxy {
        BextProxy {
            edge: EdgePolicy::new(plan.tls.as_ref()),
            pools: plan.upstreams.iter().map(Pool::new).collect(),
            routes: Arc::new(plan.routes),
            trusted_proxies: plan.server.trusted_proxies,
            client_timeout: plan.server.client_timeout,
            pages: ErrorPages::new(plan.server.error_page),
            admin: plan.admin,
        }
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
            Endpoint::Health => {
                let body =
                    serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") });
                admin::respond_json(session, 200, &body, ctx.request_id.as_ref()).await
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

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
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
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let node = self
            .pools
            .get(route.upstream)
            .and_then(Pool::select)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no node available"))?;
        ctx.node = Some(node.addr);
        Ok(node.peer(tunnel::peer_requirements(route, ctx.websocket)))
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

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = error_page::status_for(e);
        // Pingora 0.9 closes the client connection after a failed proxy attempt
        // whatever this hook returns, so the page must say `Connection: close`
        // rather than promise a keep-alive the client would then find dead.
        session.set_keepalive(None);
        if code > 0 && session.response_written().is_none() {
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
