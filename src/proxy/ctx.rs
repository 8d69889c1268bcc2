//! Per-request state: the [`Exchange`] record the telemetry reads, and the
//! working state of each module, filled in as the phases run.

use std::sync::Arc;

use crate::exchange::Exchange;
use crate::limits::LimitsCtx;
use crate::routing::Route;
use crate::telemetry::trace::TraceContext;
use crate::upstream::RequestState;

#[derive(Debug, Default)]
pub struct Ctx {
    /// What happened, for the access log, metrics and the span.
    pub exchange: Exchange,
    pub route: Option<Arc<Route>>,
    /// Node lease, retries, affinity and tunnel of this request (`upstream`).
    pub upstream: RequestState,
    /// Client identity and counters of the flood/abuse limits.
    pub limits: LimitsCtx,
    /// Web application firewall state (verdict, held-back body).
    pub waf: crate::waf::phase::WafState,
    /// Edge cache state for this request.
    pub cache: crate::cache::CacheCtx,
    /// W3C trace context (only when tracing is configured).
    pub trace: Option<TraceContext>,
    /// Negotiated coding and the response's encoder.
    pub compress: crate::compression::CompressState,
    /// The plan this request runs on, for its whole life (a reload in place
    /// swaps the proxy's, never this one).
    pub live: Option<Arc<super::live::Live>>,
}
