//! The request metrics, after OpenTelemetry's HTTP server conventions:
//! `bext_http_server_request_duration_seconds` by method, route, status,
//! protocol version and cache status, and body bytes in and out per route.
//!
//! Cheap on the hot path: every route gets its series table when the plan is
//! built; a request finds its histogram by a packed integer key (method,
//! protocol, cache status, status code) under a read lock, with no label
//! strings built or hashed. Only the first request of a new combination
//! takes the write lock and formats the status code. Labels are bounded:
//! methods fold to the HTTP set plus `_OTHER`, routes are the configured
//! patterns, statuses are the 100–599 range (anything else is `_OTHER`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;
use std::time::Duration;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use super::registry::{Sub, DURATION_BUCKETS};
use crate::exchange::{CacheOutcome, Exchange, Protocol};

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

fn method_index(m: &http::Method) -> usize {
    METHODS[..9]
        .iter()
        .position(|k| *k == m.as_str())
        .unwrap_or(9)
}

/// The `cache_status` label: what the cache did, or `none` off cacheable routes.
fn cache_label(i: usize) -> &'static str {
    CacheOutcome::ALL.get(i).map_or("none", |c| c.as_str())
}

/// An identity hash for the packed keys (they are already well spread).
#[derive(Default)]
struct Packed(u64);

impl Hasher for Packed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SeriesMap = HashMap<u32, Histogram, BuildHasherDefault<Packed>>;

/// The series of one route.
struct RouteSeries {
    route: String,
    durations: RwLock<SeriesMap>,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

pub struct HttpMetrics {
    duration: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
}

/// The series of one route table (one plan): indexed by route index; the
/// last one is for requests no route matched (admin API, 404, refusals
/// before routing). A request records into the table of the plan it ran on,
/// so a reload in place never labels it with another plan's route.
pub struct RouteLabels {
    series: Vec<RouteSeries>,
    /// Route patterns by index, for spans and log lines.
    pub(super) names: Vec<std::sync::Arc<str>>,
}

impl std::fmt::Debug for RouteLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpMetrics")
    }
}

impl HttpMetrics {
    pub fn new(sub: &Sub) -> HttpMetrics {
        let duration = sub.histogram_vec(
            "request_duration_seconds",
            "Duration of HTTP server requests (for websockets: until the 101).",
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
                "network_protocol_version",
                "cache_status",
            ],
            DURATION_BUCKETS,
        );
        let bytes_in: IntCounterVec = sub.counter_vec(
            "request_body_bytes_total",
            "Request body bytes received from clients.",
            &["http_route"],
        );
        let bytes_out: IntCounterVec = sub.counter_vec(
            "response_body_bytes_total",
            "Response body bytes sent to clients.",
            &["http_route"],
        );
        HttpMetrics {
            duration,
            bytes_in,
            bytes_out,
        }
    }

    /// The series of a route table; `patterns` in `route_rules` order.
    pub fn route_labels(&self, patterns: &[String]) -> RouteLabels {
        let series = patterns
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(""))
            .map(|p| RouteSeries {
                route: p.to_string(),
                durations: RwLock::new(SeriesMap::default()),
                bytes_in: self.bytes_in.with_label_values(&[p]),
                bytes_out: self.bytes_out.with_label_values(&[p]),
            })
            .collect();
        let names = patterns
            .iter()
            .map(|p| std::sync::Arc::from(p.as_str()))
            .collect();
        RouteLabels { series, names }
    }

    /// Records one finished request.
    pub fn record(&self, x: &Exchange, method: &http::Method, labels: &RouteLabels) {
        let Some(series) = x
            .route
            .and_then(|i| labels.series.get(i))
            .or_else(|| labels.series.last())
        else {
            return;
        };
        let o = &x.outcome;
        let status = if (100..600).contains(&o.status) {
            o.status
        } else {
            0
        };
        let cache = o.cache.map_or(CacheOutcome::ALL.len(), |c| c.index());
        let key = (method_index(method) as u32)
            | ((x.client.protocol.index() as u32) << 4)
            | ((cache as u32) << 8)
            | (u32::from(status) << 12);
        let took: Duration = o.head_time.unwrap_or(o.duration);
        let seen = series.durations.read().is_ok_and(|m| match m.get(&key) {
            Some(h) => {
                h.observe(took.as_secs_f64());
                true
            }
            None => false,
        });
        if !seen {
            self.series(series, key, method, x.client.protocol, cache, status)
                .observe(took.as_secs_f64());
        }
        series.bytes_in.inc_by(o.bytes_in);
        series.bytes_out.inc_by(o.bytes_out);
    }

    /// The first request of a label combination: resolves and keeps its series.
    #[cold]
    fn series(
        &self,
        series: &RouteSeries,
        key: u32,
        method: &http::Method,
        protocol: Protocol,
        cache: usize,
        status: u16,
    ) -> Histogram {
        let status_text = if status == 0 {
            "_OTHER".to_string()
        } else {
            status.to_string()
        };
        let h = self.duration.with_label_values(&[
            METHODS[method_index(method)],
            &series.route,
            &status_text,
            protocol.version(),
            cache_label(cache),
        ]);
        if let Ok(mut m) = series.durations.write() {
            m.insert(key, h.clone());
        }
        h
    }
}
