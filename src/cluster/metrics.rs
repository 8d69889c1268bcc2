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
                "Failed Redis calls (connect, publish, read)",
            ),
            lag: sub.histogram(
                "purge_propagation_seconds",
                "From a purge's publication on another node to its application here",
                LAG_BUCKETS,
            ),
        }
    }
}
