//! The metrics registry and the sub-registry each module registers its own
//! metrics in (linkerd2-proxy's pattern): a module gets a [`Sub`] with its
//! prefix and keeps the handles it registered; there are no global counter
//! statics. Names follow Prometheus conventions: `bext_<module>_<name>` in
//! base units. Registration happens once, when the plan is built; a duplicate
//! name is logged and the metric still works, unexported.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Request durations (seconds): OpenTelemetry's recommended HTTP buckets.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Options of the metric `bext_<subsystem>_<name>` (`bext_<name>` when
/// `subsystem` is empty): the one place bext's metric names are built, also
/// for metrics created before the registry (WAF, nodes) or with constant labels.
pub fn opts(subsystem: &str, name: &str, help: &str) -> Opts {
    let o = Opts::new(name, help).namespace("bext");
    if subsystem.is_empty() {
        o
    } else {
        o.subsystem(subsystem)
    }
}

/// One module's view of the registry: every name gets `bext_<prefix>_`.
#[derive(Clone)]
pub struct Sub {
    registry: Registry,
    prefix: &'static str,
}

impl Sub {
    pub fn new(registry: &Registry, prefix: &'static str) -> Sub {
        Sub {
            registry: registry.clone(),
            prefix,
        }
    }

    /// A detached registry: for unit tests and components built without telemetry.
    pub fn detached(prefix: &'static str) -> Sub {
        Sub::new(&Registry::new(), prefix)
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        opts(self.prefix, name, help)
    }

    fn register<C: Collector + Clone + 'static>(&self, c: C) -> C {
        if let Err(e) = self.registry.register(Box::new(c.clone())) {
            log::error!(
                "metrics: cannot register a bext_{} metric: {e}",
                self.prefix
            );
        }
        c
    }

    // Names, help texts and label names are constants of bext's code: an
    // invalid one is a bug that the first test run reports, not a runtime
    // condition, hence the `expect`s (plan build time, never a request path).

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(self.opts(name, help)).expect("valid counter"))
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(self.opts(name, help), labels).expect("valid counter"))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::with_opts(self.opts(name, help)).expect("valid gauge"))
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(self.opts(name, help), labels).expect("valid gauge"))
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid histogram"))
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets.to_vec());
        self.register(Histogram::with_opts(opts).expect("valid histogram"))
    }
}

/// The text exposition (format 0.0.4) of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let families = registry.gather();
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        log::error!("metrics: encoding failed: {e}");
    }
    out
}

/// `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
