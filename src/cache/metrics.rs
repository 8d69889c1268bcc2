//! The cache's own metrics: what the cache did for each request (hit, stale,
//! revalidated, miss, bypass), fills stored and refused, evictions, purges
//! and purged entries, and the entries and bytes held against the budget
//! (read from the store at scrape time).

use prometheus::{IntCounter, IntGauge};

use crate::exchange::CacheOutcome;
use crate::telemetry::registry::Sub;

pub struct CacheMetrics {
    /// Indexed by `CacheOutcome::index()`.
    requests: Vec<IntCounter>,
    pub stored: IntCounter,
    pub evicted: IntCounter,
    pub purges: IntCounter,
    pub purged_entries: IntCounter,
    pub entries: IntGauge,
    pub used_bytes: IntGauge,
    pub budget_bytes: IntGauge,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheMetrics")
    }
}

impl CacheMetrics {
    pub fn new(sub: &Sub) -> CacheMetrics {
        let requests = sub.counter_vec(
            "requests_total",
            "Requests on cacheable routes, by what the cache did (hit, stale, revalidated, miss, bypass).",
            &["cache_status"],
        );
        CacheMetrics {
            requests: CacheOutcome::ALL
                .iter()
                .map(|o| requests.with_label_values(&[o.as_str()]))
                .collect(),
            stored: sub.counter("stored_total", "Responses stored in the cache."),
            evicted: sub.counter(
                "evicted_total",
                "Entries evicted to stay within cache.max_size.",
            ),
            purges: sub.counter("purges_total", "Purge requests applied."),
            purged_entries: sub.counter("purged_entries_total", "Entries removed by purges."),
            entries: sub.gauge("entries", "Entries in the cache now."),
            used_bytes: sub.gauge("used_bytes", "Bytes the cache holds now."),
            budget_bytes: sub.gauge("budget_bytes", "cache.max_size in bytes."),
        }
    }

    pub fn request(&self, outcome: CacheOutcome) {
        if let Some(c) = self.requests.get(outcome.index()) {
            c.inc();
        }
    }
}
