//! The cluster's metrics (`bext_cluster_*`), registered once per process.

use prometheus::{Histogram, IntCounter, IntGauge};

use crate::telemetry::registry::Sub;

/// Purge propagation (publish on one node → applied on another), seconds.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub(crate) struct ClusterMetrics {
    pub published: IntCounter,
    pub applied: IntCounter,
    pub queue_length: IntGauge,
    pub dropped: IntCounter,
    pub connected: IntGauge,
    pub resets: IntCounter,
    pub bad_entries: IntCounter,
    pub redis_errors: IntCounter,
    pub lag: Histogram,
    pub publish: Histogram,
    pub rate_rounds: IntCounter,
    pub rate_failures: IntCounter,
    pub rate_charged: IntCounter,
    pub rate_untracked: IntCounter,
    pub rate_sync: Histogram,
    pub state_published: IntCounter,
    pub state_applied: IntCounter,
    pub hints_published: IntCounter,
    pub hints_received: IntCounter,
    pub events_connected: IntGauge,
    pub peers: IntGauge,
}

impl ClusterMetrics {
    pub fn new(sub: &Sub) -> ClusterMetrics {
        ClusterMetrics {
            published: sub.counter(
                "purges_published_total",
                "Purges accepted here and appended to the cluster's purge stream",
            ),
            applied: sub.counter(
                "purges_applied_total",
                "Purges from other nodes applied from the purge stream",
            ),
            queue_length: sub.gauge(
                "purge_queue_length",
                "Purges accepted while Redis was unavailable, waiting to be published",
            ),
            dropped: sub.counter(
                "purge_queue_dropped_total",
                "Queued purges folded into one purge of everything because the queue was full",
            ),
            connected: sub.gauge(
                "redis_connected",
                "1 while the purge stream reader is connected to Redis",
            ),
            resets: sub.counter(
                "cache_resets_total",
                "Whole-cache purges because this node could not prove it saw every purge",
            ),
            bad_entries: sub.counter(
                "bad_entries_total",
                "Purge stream entries ignored because they could not be decoded",
            ),
            redis_errors: sub.counter(
                "redis_errors_total",
                "Failed Redis calls (connect, publish, read, subscribe, state, heartbeat)",
            ),
            lag: sub.histogram(
                "purge_propagation_seconds",
                "From a purge's publication on another node to its application here",
                LAG_BUCKETS,
            ),
            publish: sub.histogram(
                "purge_publish_seconds",
                "Appending a purge accepted here to the purge stream (XADD round trip)",
                LAG_BUCKETS,
            ),
            rate_rounds: sub.counter(
                "rate_sync_rounds_total",
                "Sync periods in which this node had rate-limit admissions to share",
            ),
            rate_failures: sub.counter(
                "rate_sync_failures_total",
                "Sync periods whose admissions were not shared (Redis unavailable or failing)",
            ),
            rate_charged: sub.counter(
                "rate_remote_requests_total",
                "Requests admitted by other nodes and charged to this node's rate limiters",
            ),
            rate_untracked: sub.counter(
                "rate_untracked_total",
                "Admissions not shared because this period's bounded client table was full",
            ),
            rate_sync: sub.histogram(
                "rate_sync_seconds",
                "Publishing one sync period's admissions (PUBLISH round trip)",
                LAG_BUCKETS,
            ),
            state_published: sub.counter(
                "state_published_total",
                "Maintenance and drain switches made here and written to the shared state",
            ),
            state_applied: sub.counter(
                "state_updates_applied_total",
                "Maintenance and drain switches made on other nodes and applied here",
            ),
            hints_published: sub.counter(
                "health_hints_published_total",
                "Upstream nodes this node saw go unhealthy, announced to the others",
            ),
            hints_received: sub.counter(
                "health_hints_received_total",
                "Health hints from other nodes that made this node probe at once",
            ),
            events_connected: sub.gauge(
                "events_connected",
                "1 while the subscriber for rate rounds, switches and hints is connected to Redis",
            ),
            peers: sub.gauge(
                "peers",
                "Other bext nodes whose heartbeat was seen in the last 10 seconds",
            ),
        }
    }
}
