//! Metrics of the upstream pools, owned per node: requests, failures,
//! connect errors and response time of each node; its health, drain state,
//! in-flight requests and open tunnels (read from the node's state at scrape
//! time); LiveView sockets, channel joins and reconnects seen on its tunnels,
//! and tunnel lifetimes. Every series carries `upstream` and `node` (names
//! from the config, so the set is bounded) as constant labels, so a request
//! touches its node's handles directly: no label lookup per request.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

use crate::telemetry::registry::{self, DURATION_BUCKETS};

/// Tunnel lifetimes: from a second (a failed LiveView mount) to a day.
const TUNNEL_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];

/// `Clone` shares the series: a node kept across a reload in place keeps counting in them.
#[derive(Clone)]
pub struct NodeMetrics {
    pub requests: IntCounter,
    pub failures: IntCounter,
    pub connect_errors: IntCounter,
    pub duration: Histogram,
    pub healthy: IntGauge,
    pub draining: IntGauge,
    pub in_flight: IntGauge,
    pub tunnels: IntGauge,
    pub liveview_sockets: IntGauge,
    pub liveview_joins: IntCounter,
    pub channel_joins: IntCounter,
    pub liveview_reconnects: IntCounter,
    pub tunnel_duration: Histogram,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeMetrics")
    }
}

struct Labels<'a> {
    upstream: &'a str,
    node: &'a str,
}

impl Labels<'_> {
    fn opts(&self, subsystem: &str, name: &str, help: &str) -> Opts {
        registry::opts(subsystem, name, help)
            .const_label("upstream", self.upstream)
            .const_label("node", self.node)
    }

    // Names and help are constants and the labels come from a validated
    // config (pool names and node ids), so construction cannot fail.
    fn counter(&self, subsystem: &str, name: &str, help: &str) -> IntCounter {
        IntCounter::with_opts(self.opts(subsystem, name, help)).expect("valid counter")
    }

    fn gauge(&self, subsystem: &str, name: &str, help: &str) -> IntGauge {
        IntGauge::with_opts(self.opts(subsystem, name, help)).expect("valid gauge")
    }

    fn histogram(&self, subsystem: &str, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::from(self.opts(subsystem, name, help)).buckets(buckets.to_vec());
        Histogram::with_opts(opts).expect("valid histogram")
    }
}

impl NodeMetrics {
    pub fn new(upstream: &str, node: &str) -> NodeMetrics {
        let l = Labels { upstream, node };
        NodeMetrics {
            requests: l.counter(
                "upstream",
                "requests_total",
                "Requests sent to the node (every attempt).",
            ),
            failures: l.counter(
                "upstream",
                "failures_total",
                "Attempts the node failed after connecting (reset, timeout, bad response).",
            ),
            connect_errors: l.counter(
                "upstream",
                "connect_errors_total",
                "Failed connects to the node.",
            ),
            duration: l.histogram(
                "upstream",
                "request_duration_seconds",
                "Time from sending a request to the node to its response head.",
                DURATION_BUCKETS,
            ),
            healthy: l.gauge(
                "upstream",
                "node_healthy",
                "1 when the node passes its health checks.",
            ),
            draining: l.gauge(
                "upstream",
                "node_draining",
                "1 when the node is drained (no new clients).",
            ),
            in_flight: l.gauge(
                "upstream",
                "in_flight_requests",
                "Requests at the node now.",
            ),
            tunnels: l.gauge(
                "upstream",
                "tunnels_open",
                "Websocket tunnels open to the node.",
            ),
            liveview_sockets: l.gauge(
                "liveview",
                "sockets_open",
                "Open websocket tunnels that joined at least one LiveView (lv:*) topic.",
            ),
            liveview_joins: l.counter(
                "liveview",
                "joins_total",
                "LiveView joins (phx_join on an lv:* topic).",
            ),
            channel_joins: l.counter(
                "liveview",
                "channel_joins_total",
                "Phoenix channel joins of any topic (LiveView included).",
            ),
            liveview_reconnects: l.counter(
                "liveview",
                "reconnects_total",
                "LiveView joins from a client whose previous tunnel closed within the last 10 s.",
            ),
            tunnel_duration: l.histogram(
                "websocket",
                "tunnel_duration_seconds",
                "Lifetime of websocket tunnels through the node.",
                TUNNEL_BUCKETS,
            ),
        }
    }

    pub fn register(&self, registry: &Registry) {
        for c in self.collectors() {
            if let Err(e) = registry.register(c) {
                log::error!("metrics: cannot register a node metric: {e}");
            }
        }
    }

    /// A node removed by a reload in place: its series leave the scrape.
    pub fn unregister(&self, registry: &Registry) {
        for c in self.collectors() {
            let _ = registry.unregister(c);
        }
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.failures.clone()),
            Box::new(self.connect_errors.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.healthy.clone()),
            Box::new(self.draining.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.tunnels.clone()),
            Box::new(self.liveview_sockets.clone()),
            Box::new(self.liveview_joins.clone()),
            Box::new(self.channel_joins.clone()),
            Box::new(self.liveview_reconnects.clone()),
            Box::new(self.tunnel_duration.clone()),
        ]
    }
}

/// Per pool: retries.
#[derive(Clone)]
pub struct PoolMetrics {
    pub retries: IntCounter,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolMetrics")
    }
}

impl PoolMetrics {
    pub fn new(upstream: &str) -> PoolMetrics {
        let opts = registry::opts(
            "upstream",
            "retries_total",
            "Requests sent again to another node (or connection) after a failure.",
        )
        .const_label("upstream", upstream);
        PoolMetrics {
            retries: IntCounter::with_opts(opts).expect("valid counter"),
        }
    }

    pub fn register(&self, registry: &Registry) {
        if let Err(e) = registry.register(Box::new(self.retries.clone())) {
            log::error!("metrics: cannot register a pool metric: {e}");
        }
    }
}
