//! The sinks of the per-request [`Exchange`] record: Prometheus metrics
//! (`http` here, and each module's own, registered in one registry), the
//! access log (`access_log`, a writer thread) and OpenTelemetry server spans
//! (`trace`, exported over OTLP/HTTP by a background task). `logging` calls
//! [`Telemetry::finish`] once per request; nothing here steers a request.
//! The writer thread and the exporter task start in [`TelemetryService`],
//! after Pingora has forked.

pub mod access_log;
mod http;
pub use http::RouteLabels;
pub mod registry;
mod service;
pub mod trace;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::http::HeaderValue;
use pingora::http::RequestHeader;
use prometheus::{IntCounter, Registry};

use crate::config::TelemetryPlan;
use crate::exchange::Exchange;
use access_log::{AccessEntry, AccessLog};
use registry::Sub;
use trace::{AttrValue, SpanEvent, SpanRecord, TraceContext, Tracer};

pub use registry::CONTENT_TYPE;
pub use service::{MetricsApp, TelemetryService};

/// Set by `bext reload` on the process it starts: how many reloads its
/// chain has seen (read back from the running process's environment).
pub const RELOADS_ENV: &str = "BEXT_RELOADS";

/// Counters kept by the sinks themselves, copied into the registry at scrape time.
struct SinkCounters {
    spans_dropped: IntCounter,
    spans_exported: IntCounter,
    log_dropped: IntCounter,
    log_written: IntCounter,
}

pub struct Telemetry {
    registry: Registry,
    http: http::HttpMetrics,
    access_log: Option<Arc<AccessLog>>,
    tracer: Option<Arc<Tracer>>,
    trace_query: bool,
    sinks: SinkCounters,
    /// One scrape at a time (the refresh steps write gauges).
    scraping: Mutex<()>,
    refreshers: Vec<Box<dyn Fn() + Send + Sync>>,
    /// `bext_reloads_total`.
    reloads: IntCounter,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    pub fn new(plan: &TelemetryPlan, registry: &Registry) -> Telemetry {
        let sub = Sub::new(registry, "http_server");
        let process = Sub::new(registry, "");
        let info = process.gauge_vec("build_info", "bext's version; always 1.", &["version"]);
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let start = process.gauge(
            "start_time_seconds",
            "When this bext process started (Unix time); changes on every restart, reload or upgrade.",
        );
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
        );
        let reloads = process.counter(
            "reloads_total",
            "Reloads and upgrades by `bext reload` since the first process of this chain (carried into each new process, so rate() and increase() count them).",
        );
        reloads.inc_by(
            std::env::var(RELOADS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        );
        let otel = Sub::new(registry, "otel");
        let log = Sub::new(registry, "access_log");
        Telemetry {
            reloads,
            registry: registry.clone(),
            http: http::HttpMetrics::new(&sub),
            access_log: plan.access_log.clone().map(|c| Arc::new(AccessLog::new(c))),
            tracer: plan.trace.clone().map(|c| Arc::new(Tracer::new(c))),
            trace_query: plan.trace_query,
            sinks: SinkCounters {
                spans_dropped: otel.counter(
                    "spans_dropped_total",
                    "Spans dropped: export queue full, collector slow, down or refusing.",
                ),
                spans_exported: otel
                    .counter("spans_exported_total", "Spans the OTLP collector accepted."),
                log_dropped: log.counter(
                    "lines_dropped_total",
                    "Access log lines dropped (writer behind, disk full or unwritable).",
                ),
                log_written: log.counter("lines_written_total", "Access log lines written."),
            },
            scraping: Mutex::new(()),
            refreshers: Vec::new(),
        }
    }

    /// Adds a step run before each scrape (modules' gauges read from state).
    pub fn on_scrape(&mut self, f: impl Fn() + Send + Sync + 'static) {
        self.refreshers.push(Box::new(f));
    }

    /// The text exposition of every metric.
    pub fn scrape(&self) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        for f in &self.refreshers {
            f();
        }
        if let Some(t) = &self.tracer {
            catch_up(&self.sinks.spans_dropped, t.dropped());
            catch_up(&self.sinks.spans_exported, t.exported());
        }
        if let Some(l) = &self.access_log {
            catch_up(&self.sinks.log_dropped, l.dropped());
            catch_up(&self.sinks.log_written, l.written());
        }
        registry::render(&self.registry)
    }

    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
    }

    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.as_ref()
    }

    /// `early_request_filter`: the request's trace context, when tracing is on.
    pub fn trace_context(&self, req: &RequestHeader) -> Option<TraceContext> {
        let tracer = self.tracer.as_ref()?;
        // Constant names skip parsing the name per request; tracestate is
        // only ever used with a traceparent.
        static TRACEPARENT: ::http::HeaderName = ::http::HeaderName::from_static("traceparent");
        static TRACESTATE: ::http::HeaderName = ::http::HeaderName::from_static("tracestate");
        let parent = req.headers.get(&TRACEPARENT).map(HeaderValue::as_bytes);
        let state = parent
            .and(req.headers.get(&TRACESTATE))
            .map(HeaderValue::as_bytes);
        Some(TraceContext::from_request(
            parent,
            state,
            tracer.config().sample_ratio,
        ))
    }

    /// `logging`: hands the finished record to every sink.
    /// A reload applied in place (handoffs are counted by the new process,
    /// from [`RELOADS_ENV`]).
    pub fn reloaded(&self) {
        self.reloads.inc();
    }

    /// `bext_reloads_total` now: a handoff's new process continues from it.
    pub fn reloads_total(&self) -> u64 {
        self.reloads.get()
    }

    /// The labels of a route table (`patterns` in `route_rules` order).
    pub fn route_labels(&self, patterns: &[String]) -> RouteLabels {
        self.http.route_labels(patterns)
    }

    /// Records a finished request; `labels` of the plan it ran on.
    pub fn finish(
        &self,
        x: &Exchange,
        req: &RequestHeader,
        trace: Option<&TraceContext>,
        labels: &RouteLabels,
    ) {
        self.http.record(x, &req.method, labels);
        let shared_route = x.route.and_then(|i| labels.names.get(i));
        let route = shared_route.map(|r| &**r);
        if let Some(log) = &self.access_log {
            log.record(&entry(x, req, route, trace.map(|t| t.trace_id)));
        }
        if let (Some(tracer), Some(ctx)) = (&self.tracer, trace) {
            if ctx.sampled {
                tracer.submit(span(x, req, shared_route, ctx, self.trace_query));
            }
        }
    }
}

/// Brings a registry counter up to a sink's own (monotonic) count.
fn catch_up(counter: &IntCounter, now: u64) {
    let seen = counter.get();
    if now > seen {
        counter.inc_by(now - seen);
    }
}

/// `upstream_request_filter`: the trace context for Phoenix, with bext's
/// span as the parent.
pub fn inject(req: &mut RequestHeader, trace: &TraceContext) -> pingora::Result<()> {
    req.insert_header("traceparent", trace.traceparent())?;
    match &trace.tracestate {
        Some(state) => req.insert_header("tracestate", state.clone())?,
        None => {
            req.remove_header("tracestate");
        }
    }
    Ok(())
}

fn header(req: &RequestHeader, name: ::http::header::HeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn host(req: &RequestHeader) -> &str {
    host_or_authority(header(req, ::http::header::HOST), req)
}

/// The `Host` header, else the request target's authority (h2/h3), else "".
fn host_or_authority<'a>(host: Option<&'a str>, req: &'a RequestHeader) -> &'a str {
    host.or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

fn entry<'a>(
    x: &'a Exchange,
    req: &'a RequestHeader,
    route: Option<&'a str>,
    trace_id: Option<[u8; 16]>,
) -> AccessEntry<'a> {
    let o = &x.outcome;
    // One pass over the headers instead of three hashed lookups.
    let (mut host_h, mut user_agent, mut referer) = (None, None, None);
    for (name, value) in &req.headers {
        let slot = if name == ::http::header::HOST {
            &mut host_h
        } else if name == ::http::header::USER_AGENT {
            &mut user_agent
        } else if name == ::http::header::REFERER {
            &mut referer
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = value.to_str().ok();
        }
    }
    let host = host_or_authority(host_h, req);
    AccessEntry {
        time: x.started_at,
        request_id: x.id.to_str().unwrap_or("-"),
        client_ip: x.client.ip,
        method: req.method.as_str(),
        host,
        path: req.uri.path(),
        query: req.uri.query(),
        protocol: x.client.protocol.as_http(),
        status: o.status,
        bytes_sent: o.bytes_out,
        bytes_received: o.bytes_in,
        waf_score: o.waf.score,
        duration: o.duration,
        route,
        upstream_node: o.upstream.node_id.as_deref(),
        upstream_addr: o.upstream.addr,
        upstream_time: o.upstream.response_time,
        cache: o.cache.map(|c| c.as_str()),
        waf: o.waf.action.map(|a| a.as_str()),
        waf_rules: o.waf.rules.as_deref(),
        limit: o.limit,
        trace_id,
        user_agent,
        referer,
    }
}

fn span(
    x: &Exchange,
    req: &RequestHeader,
    route: Option<&Arc<str>>,
    ctx: &TraceContext,
    with_query: bool,
) -> SpanRecord {
    let o = &x.outcome;
    let method = req.method.as_str();
    let name = match route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    let end = x.started_at + o.duration;
    let mut a: Vec<(&'static str, AttrValue)> = Vec::with_capacity(16);
    a.push(("http.request.method", AttrValue::Str(method.to_string())));
    if let Some(r) = route {
        a.push(("http.route", AttrValue::Shared(r.clone())));
    }
    a.push(("url.path", AttrValue::Str(req.uri.path().to_string())));
    if let (true, Some(q)) = (with_query, req.uri.query()) {
        a.push(("url.query", AttrValue::Str(q.to_string())));
    }
    a.push(("url.scheme", AttrValue::StaticStr(x.client.scheme())));
    if o.status > 0 {
        a.push((
            "http.response.status_code",
            AttrValue::Int(i64::from(o.status)),
        ));
    }
    if let Some(ip) = x.client.ip {
        a.push(("client.address", AttrValue::Ip(ip)));
    }
    if let Some(peer) = x.client.peer {
        a.push(("network.peer.address", AttrValue::Ip(peer.ip())));
    }
    let h = host(req);
    if !h.is_empty() {
        a.push((
            "server.address",
            AttrValue::Str(crate::routing::strip_port(h).to_string()),
        ));
    }
    if let Some(port) = x.client.local_port {
        a.push(("server.port", AttrValue::Int(i64::from(port))));
    }
    a.push((
        "network.protocol.version",
        AttrValue::StaticStr(x.client.protocol.version()),
    ));
    if let Some(ua) = header(req, ::http::header::USER_AGENT) {
        a.push(("user_agent.original", AttrValue::Str(ua.to_string())));
    }
    a.push((
        "http.request.id",
        AttrValue::Str(x.id.to_str().unwrap_or("-").to_string()),
    ));
    let mut events = Vec::new();
    let at = |d: Option<Duration>| d.map_or(end, |d| x.started_at + d);
    if let Some(limit) = o.limit {
        events.push(SpanEvent {
            name: "bext.limit",
            time: end,
            attributes: vec![("bext.limit.reason", AttrValue::StaticStr(limit))],
        });
    }
    if let Some(action) = o.waf.action {
        let mut attrs = vec![
            ("bext.waf.action", AttrValue::StaticStr(action.as_str())),
            ("bext.waf.score", AttrValue::Int(i64::from(o.waf.score))),
        ];
        if let Some(rules) = &o.waf.rules {
            attrs.push(("bext.waf.rules", AttrValue::Str(rules.to_string())));
        }
        if let Some(c) = o.waf.category {
            attrs.push(("bext.waf.category", AttrValue::StaticStr(c)));
        }
        events.push(SpanEvent {
            name: "bext.waf",
            time: end,
            attributes: attrs,
        });
    }
    if let Some(c) = o.cache {
        events.push(SpanEvent {
            name: "bext.cache",
            time: end,
            attributes: vec![("bext.cache.status", AttrValue::StaticStr(c.as_str()))],
        });
    }
    let u = &o.upstream;
    if let Some(node) = &u.node_id {
        let mut attrs = vec![
            ("bext.upstream.node", AttrValue::Str(node.to_string())),
            (
                "bext.upstream.attempts",
                AttrValue::Int(i64::from(u.attempts)),
            ),
        ];
        if let Some(addr) = u.addr {
            attrs.push(("server.address", AttrValue::Ip(addr.ip())));
            attrs.push(("server.port", AttrValue::Int(i64::from(addr.port()))));
        }
        if let Some(s) = u.status {
            attrs.push(("http.response.status_code", AttrValue::Int(i64::from(s))));
        }
        events.push(SpanEvent {
            name: "bext.upstream",
            time: at(u
                .attempt_start
                .map(|t| t.saturating_duration_since(x.start))),
            attributes: attrs,
        });
        if u.retries() > 0 {
            events.push(SpanEvent {
                name: "bext.retry",
                time: end,
                attributes: vec![
                    (
                        "bext.upstream.retries",
                        AttrValue::Int(i64::from(u.retries())),
                    ),
                    (
                        "bext.upstream.connect_failures",
                        AttrValue::Int(i64::from(u.connect_failures)),
                    ),
                ],
            });
        }
    }
    if let Some(e) = &o.error {
        a.push(("error.type", AttrValue::Str(e.to_string())));
    }
    SpanRecord {
        context: ctx.clone(),
        name,
        start: x.started_at,
        end,
        attributes: a,
        events,
        error: o.status >= 500,
    }
}
