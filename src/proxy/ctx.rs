//! Per-request state, filled in as the phases run.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::limits::LimitsCtx;
use crate::routing::Route;
use crate::upstream::RequestState;

#[derive(Debug, Default)]
pub struct Ctx {
    pub request_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    /// The request is forwarded as a websocket handshake.
    pub websocket: bool,
    /// The node chosen for this request (the last one, after retries).
    pub node: Option<SocketAddr>,
    /// Node lease, retries, affinity and tunnel of this request (`upstream`).
    pub upstream: RequestState,
    /// Client identity and counters of the flood/abuse limits.
    pub limits: LimitsCtx,
    /// Web application firewall state (verdict, held-back body).
    pub waf: crate::waf::phase::WafState,
}
