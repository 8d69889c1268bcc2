//! The WAF's own metrics: inspections, matches by category and action, and
//! bodies over the inspection limit. Created with the WAF (one per plan) and
//! registered into the proxy's registry; `GET /__bext/waf` reads the same
//! counters, so the admin JSON and the scrape never disagree.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::rules::Category;
use crate::exchange::WafAction;

/// `Clone` shares the counters (a reload in place keeps counting in them).
#[derive(Clone)]
pub struct WafMetrics {
    inspected: IntCounter,
    body_over_limit: IntCounter,
    matches: IntCounterVec,
    /// `[category][action]`, resolved once so a match costs one atomic add.
    by_category: Vec<[IntCounter; 2]>,
}

impl std::fmt::Debug for WafMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WafMetrics")
    }
}

fn opts(name: &str, help: &str) -> Opts {
    crate::telemetry::registry::opts("waf", name, help)
}

impl WafMetrics {
    pub fn new() -> WafMetrics {
        // Constant names and labels: these cannot fail (see telemetry::registry).
        let inspected =
            IntCounter::with_opts(opts("inspections_total", "Requests the WAF inspected."))
                .expect("valid counter");
        let body_over_limit = IntCounter::with_opts(opts(
            "body_over_limit_total",
            "Request bodies larger than waf.inspect_body_limit.",
        ))
        .expect("valid counter");
        let matches = IntCounterVec::new(
            opts(
                "matches_total",
                "Requests whose score reached the threshold, by category of the first matched rule and action (block or detect).",
            ),
            &["category", "action"],
        )
        .expect("valid counter");
        let by_category = Category::ALL
            .iter()
            .map(|c| {
                [
                    matches.with_label_values(&[c.name(), "block"]),
                    matches.with_label_values(&[c.name(), "detect"]),
                ]
            })
            .collect();
        WafMetrics {
            inspected,
            body_over_limit,
            matches,
            by_category,
        }
    }

    pub fn register(&self, registry: &Registry) {
        let all: [Box<dyn Collector>; 3] = [
            Box::new(self.inspected.clone()),
            Box::new(self.body_over_limit.clone()),
            Box::new(self.matches.clone()),
        ];
        for c in all {
            if let Err(e) = registry.register(c) {
                log::error!("metrics: cannot register a WAF metric: {e}");
            }
        }
    }

    pub fn inspected(&self) {
        self.inspected.inc();
    }

    pub fn body_over_limit(&self) {
        self.body_over_limit.inc();
    }

    pub fn matched(&self, category: Category, action: WafAction) {
        let i = Category::ALL
            .iter()
            .position(|c| *c == category)
            .unwrap_or(0);
        let a = match action {
            WafAction::Block => 0,
            WafAction::Detect => 1,
        };
        if let Some(c) = self.by_category.get(i) {
            c[a].inc();
        }
    }

    /// `{inspected, blocked, detected, body_over_limit}` for the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        let blocked: u64 = self.by_category.iter().map(|c| c[0].get()).sum();
        let detected: u64 = self.by_category.iter().map(|c| c[1].get()).sum();
        serde_json::json!({
            "inspected": self.inspected.get(),
            "blocked": blocked,
            "detected": detected,
            "body_over_limit": self.body_over_limit.get(),
        })
    }
}

impl Default for WafMetrics {
    fn default() -> Self {
        WafMetrics::new()
    }
}
