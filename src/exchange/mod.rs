//! Leaf: the record of one request. The proxy creates it when the request
//! head has arrived (id, start time, the client computed once); the phases
//! write what the modules decided into its [`Outcome`] instead of logging or
//! counting inline; `logging` hands the finished record to the telemetry
//! sinks (metrics, access log, span). Telemetry reads it and never steers a
//! request. Imports none of bext's features.

pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

pub use client::{Client, Protocol};

/// One request, from its head to its last byte.
#[derive(Debug)]
pub struct Exchange {
    /// `X-Request-Id`: the client's when sane, otherwise minted. Set before
    /// any refusal, so every answer carries it.
    pub id: HeaderValue,
    pub start: Instant,
    pub started_at: SystemTime,
    pub client: Client,
    /// Position of the matched route rule in `route_rules`.
    pub route: Option<usize>,
    pub outcome: Outcome,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            id: HeaderValue::from_static("-"),
            start: Instant::now(),
            started_at: SystemTime::now(),
            client: Client::default(),
            route: None,
            outcome: Outcome::default(),
        }
    }
}

impl Exchange {
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// What happened to the request, filled in by the phases.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The limit that refused the request (`rate`, `body_size`, ...).
    pub limit: Option<&'static str>,
    pub waf: WafOutcome,
    pub cache: Option<CacheOutcome>,
    pub upstream: UpstreamOutcome,
    /// The request was forwarded as a websocket handshake.
    pub websocket: bool,
    /// Answered by bext itself (admin, static, redirect, error page) rather
    /// than by a node or the cache.
    pub local: bool,
    /// Content coding bext applied to the response (none today).
    pub encoding: Option<&'static str>,
    /// When the response head went out, for responses whose body is not
    /// part of the request's duration (a websocket 101 and its tunnel).
    pub head_time: Option<Duration>,
    /// From the head's arrival to the end of the exchange (set in `logging`).
    pub duration: Duration,
    /// Status sent to the client (0: nothing was sent).
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// A failure ended the request (upstream error, client gone); a short text.
    pub error: Option<Box<str>>,
}

/// What the WAF made of the request.
#[derive(Debug, Default, Clone)]
pub struct WafOutcome {
    /// The request was inspected (WAF on for the route).
    pub inspected: bool,
    pub action: Option<WafAction>,
    pub score: u32,
    /// Category of the first matched rule (a bounded set of names).
    pub category: Option<&'static str>,
    /// Matched rule ids, comma-separated (only set on a match).
    pub rules: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WafAction {
    Block,
    Detect,
}

impl WafAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WafAction::Block => "block",
            WafAction::Detect => "detect",
        }
    }
}

/// The cache's part in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served fresh from the cache.
    Hit,
    /// Served stale (stale-while-revalidate or stale-if-error).
    Stale,
    /// Revalidated with a 304 from the node.
    Revalidated,
    /// Looked up, not found (or expired): forwarded.
    Miss,
    /// Cacheable route, but the request cannot use the cache (method, upgrade).
    Bypass,
}

impl CacheOutcome {
    pub const ALL: [CacheOutcome; 5] = [
        CacheOutcome::Hit,
        CacheOutcome::Stale,
        CacheOutcome::Revalidated,
        CacheOutcome::Miss,
        CacheOutcome::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Revalidated => "revalidated",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Bypass => "bypass",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The upstream side: which node answered, after how many attempts, how fast.
#[derive(Debug, Default, Clone)]
pub struct UpstreamOutcome {
    /// Pool and node index of the last attempt.
    pub pool: Option<usize>,
    pub node: Option<usize>,
    pub node_id: Option<Arc<str>>,
    pub addr: Option<SocketAddr>,
    pub attempts: u32,
    /// Failed connects over all attempts.
    pub connect_failures: u32,
    /// When the last attempt started (`upstream_peer`).
    pub attempt_start: Option<Instant>,
    /// Time from the last attempt's start to the node's response head.
    pub response_time: Option<Duration>,
    /// The node answered with this status (before any retry decision).
    pub status: Option<u16>,
}

impl UpstreamOutcome {
    /// Retries: attempts after the first.
    pub fn retries(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }
}
