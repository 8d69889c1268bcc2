//! Per-request state, filled in as the phases run.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::routing::Route;

#[derive(Debug, Default)]
pub struct Ctx {
    pub request_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    /// The request is forwarded as a websocket handshake.
    pub websocket: bool,
    /// The node chosen for this request (the last one, after retries).
    pub node: Option<SocketAddr>,
    /// Edge cache state for this request.
    pub cache: crate::cache::CacheCtx,
}
