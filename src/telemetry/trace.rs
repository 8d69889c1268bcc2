//! OpenTelemetry server spans for proxied requests, exported over OTLP/HTTP.
//!
//! This module owns three things:
//! - the W3C Trace Context of a request ([`TraceContext`]): parsing the
//!   client's `traceparent`/`tracestate` (hostile input is ignored, never an
//!   error), parent-based + trace-id-ratio sampling, fresh ids, and the
//!   `traceparent` bext sends to Phoenix so its spans join the trace;
//! - the finished-span record bext fills in per request ([`SpanRecord`]);
//! - the exporter ([`Tracer`]): a bounded queue that `submit` pushes to from
//!   the request threads, and one async loop ([`Tracer::run`]) that encodes
//!   batches as `ExportTraceServiceRequest` protobuf (`opentelemetry-proto`
//!   messages + `prost`) and POSTs them to `{endpoint}/v1/traces` over a
//!   kept-alive hyper HTTP/1 connection, plain or TLS (rustls, the same
//!   ring-backed stack as bext's listeners; the collector's certificate is
//!   verified against the system's roots or a configured CA file).
//!
//! The opentelemetry SDK's BatchSpanProcessor is deliberately not used: it
//! runs its own thread, hides its drop counter, and allocates per attribute
//! through the tracer API. Here a span is one plain struct moved into a
//! queue, and `dropped()`/`exported()` feed bext's own metrics.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, SpanFlags, Status};
use pingora::tls::{
    load_ca_file_into_store, load_platform_certs_incl_env_into_store, ClientConfig, RootCertStore,
    ServerName, TlsConnector,
};
use prost::Message;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Spans waiting less than a full batch are sent at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A collector that is down would otherwise log one line per second.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Version 00 is exactly 55 bytes; future versions may append fields, but
/// nothing legitimate comes near this, and it bounds the work on junk.
const MAX_TRACEPARENT_LEN: usize = 256;
/// W3C: vendors SHOULD propagate at least 512 characters and 32 members;
/// bext passes through only what fits and drops the rest whole rather than
/// truncating (truncation would need to know which members matter).
const MAX_TRACESTATE_LEN: usize = 512;
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// A success answer is an (often empty) ExportTraceServiceResponse; anything
/// larger is not worth buffering.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
const OTLP_PATH: &str = "/v1/traces";
const USER_AGENT_VALUE: &str = concat!("bext/", env!("CARGO_PKG_VERSION"));
/// Only used if building a header from hex digits ever failed (it cannot):
/// all-zero ids make Phoenix start its own trace instead of joining a bogus one.
const INVALID_TRACEPARENT: &str = "00-00000000000000000000000000000000-0000000000000000-00";
const HEX: &[u8; 16] = b"0123456789abcdef";

#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// e.g. `http://127.0.0.1:4318`; if its path is "" or "/", "/v1/traces"
    /// is appended; otherwise used as is.
    pub endpoint: http::Uri,
    /// Extra headers, e.g. authorization.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Resource attribute `service.name`.
    pub service_name: String,
    /// 0.0..=1.0, for root traces only (parent-based).
    pub sample_ratio: f64,
    /// Max spans waiting (default 4096).
    pub queue: usize,
    /// Max spans per export request (default 512).
    pub batch: usize,
    /// Per POST (default 5 s).
    pub export_timeout: Duration,
    /// For an `https://` endpoint (built by [`tls_client`]); None for http.
    pub tls: Option<Arc<ClientConfig>>,
}

/// The rustls client an `https://` endpoint is reached with: the roots are
/// the PEM certificates in `ca_file` when one is given (a private CA), else
/// the system's (honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`, as curl does).
/// Only HTTP/1.1 is offered in ALPN: it is all the exporter speaks.
pub fn tls_client(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    pingora::tls::install_default_crypto_provider();
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            load_ca_file_into_store(path, &mut roots)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if roots.is_empty() {
                return Err(format!(
                    "{}: no PEM certificate in the file",
                    path.display()
                ));
            }
        }
        None => {
            load_platform_certs_incl_env_into_store(&mut roots)
                .map_err(|e| format!("loading the system's CA certificates: {e}"))?;
            if roots.is_empty() {
                return Err("the system has no CA certificates (install ca-certificates, or set telemetry.otlp_ca to the collector's CA file)".to_owned());
            }
        }
    }
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Checks an OTLP endpoint before a [`Tracer`] is built from it (`Tracer::new`
/// cannot fail): `http://` or `https://` with a host. Ok(true) for https.
pub fn validate_endpoint(uri: &http::Uri) -> Result<bool, String> {
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) => {
            return Err(format!(
                "OTLP endpoint scheme `{s}` is not supported: use http:// or https://, e.g. http://127.0.0.1:4318"
            ))
        }
        None => {
            return Err(format!(
                "OTLP endpoint `{uri}` needs a scheme and a host, e.g. http://127.0.0.1:4318"
            ))
        }
    };
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(https),
        _ => Err(format!(
            "OTLP endpoint `{uri}` has no host, e.g. http://127.0.0.1:4318"
        )),
    }
}

/// The W3C trace context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// bext's own span (fresh random).
    pub span_id: [u8; 8],
    /// The client's span, when a valid traceparent came in.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
    /// Passed through when valid (≤ 512 bytes, ≤ 32 list members), else dropped.
    pub tracestate: Option<http::HeaderValue>,
}

impl TraceContext {
    /// Parent-based sampling: a valid incoming traceparent's sampled flag
    /// decides; otherwise a fresh trace id and TraceIdRatioBased(sample_ratio)
    /// on it. Hostile input (garbage, version ff, unknown version with wrong
    /// length, all-zero trace or span id, uppercase hex, wrong separators,
    /// oversize) is ignored and a fresh trace started; never an error, never a
    /// panic. Future versions (01..fe) are parsed per the W3C spec (first 55
    /// chars, extra must start with '-').
    pub fn from_request(
        traceparent: Option<&[u8]>,
        tracestate: Option<&[u8]>,
        sample_ratio: f64,
    ) -> TraceContext {
        if let Some((trace_id, parent, flags)) = traceparent.and_then(parse_traceparent) {
            // Equal ids would make the span its own parent in every backend.
            let span_id = loop {
                let id = random_span_id();
                if id != parent {
                    break id;
                }
            };
            return TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                sampled: flags & 0x01 != 0,
                tracestate: tracestate.and_then(parse_tracestate),
            };
        }
        // W3C: a vendor that could not parse traceparent must not use
        // tracestate either, so it is dropped with the broken parent.
        let trace_id = random_trace_id();
        TraceContext {
            trace_id,
            span_id: random_span_id(),
            parent_span_id: None,
            sampled: ratio_sampled(&trace_id, sample_ratio),
            tracestate: None,
        }
    }

    /// `00-{trace}-{span_id}-{flags}` for the upstream request (bext's span as parent).
    pub fn traceparent(&self) -> http::HeaderValue {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id, &mut buf[3..35]);
        buf[35] = b'-';
        write_hex(&self.span_id, &mut buf[36..52]);
        buf[52] = b'-';
        // Only the sampled bit is defined (level 1); other bits must be 0.
        buf[53] = b'0';
        buf[54] = if self.sampled { b'1' } else { b'0' };
        HeaderValue::from_bytes(&buf)
            .unwrap_or_else(|_| HeaderValue::from_static(INVALID_TRACEPARENT))
    }

    /// Lowercase hex, ASCII (the access log's writer hexes the raw id itself).
    #[cfg(test)]
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        write_hex(&self.trace_id, &mut out);
        out
    }
}

pub(crate) fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

/// Lowercase hex digit only: W3C defines HEXDIGLC, and accepting uppercase
/// would let two spellings of one id split a trace in some backends.
fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (hex_nibble(pair[0])? << 4) | hex_nibble(pair[1])?;
    }
    Some(out)
}

/// RFC 9110 field values carry no leading/trailing whitespace; a proxy may
/// still hand us some.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `(trace_id, parent_id, flags)` of a valid traceparent, per W3C Trace
/// Context: version 00 is exactly 55 bytes; a higher version (01..fe) is
/// parsed by its first 55 bytes when what follows starts with '-'.
fn parse_traceparent(raw: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let v = trim_ows(raw);
    if v.len() < 55 || v.len() > MAX_TRACEPARENT_LEN {
        return None;
    }
    let [version] = parse_hex::<1>(&v[0..2])?;
    match version {
        0xff => return None,
        0x00 if v.len() != 55 => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = parse_hex::<16>(&v[3..35])?;
    let parent = parse_hex::<8>(&v[36..52])?;
    let [flags] = parse_hex::<1>(&v[53..55])?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

/// The tracestate to pass on, or None when it is empty, too big, or any
/// member is malformed (W3C: an invalid tracestate is discarded whole).
fn parse_tracestate(raw: &[u8]) -> Option<HeaderValue> {
    let v = trim_ows(raw);
    if v.is_empty() || v.len() > MAX_TRACESTATE_LEN {
        return None;
    }
    let mut keys: [&[u8]; MAX_TRACESTATE_MEMBERS] = [&[]; MAX_TRACESTATE_MEMBERS];
    let mut members = 0;
    for member in v.split(|&b| b == b',') {
        let member = trim_ows(member);
        // Empty list members are allowed and carry nothing.
        if member.is_empty() {
            continue;
        }
        if members == MAX_TRACESTATE_MEMBERS {
            return None;
        }
        let eq = member.iter().position(|&b| b == b'=')?;
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !valid_tracestate_key(key) || !valid_tracestate_value(value) {
            return None;
        }
        // Duplicate keys are invalid per spec.
        if keys[..members].contains(&key) {
            return None;
        }
        keys[members] = key;
        members += 1;
    }
    if members == 0 {
        return None;
    }
    HeaderValue::from_bytes(v).ok()
}

fn tracestate_key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// `simple-key = lcalpha 0*255(keychar)`, or
/// `tenant-id "@" system-id` with `tenant-id = (lcalpha / DIGIT) 0*240(keychar)`
/// and `system-id = lcalpha 0*13(keychar)`.
fn valid_tracestate_key(key: &[u8]) -> bool {
    let part = |s: &[u8], max: usize, digit_first: bool| match s.split_first() {
        Some((&first, rest)) => {
            s.len() <= max
                && (first.is_ascii_lowercase() || (digit_first && first.is_ascii_digit()))
                && rest.iter().all(|&c| tracestate_key_char(c))
        }
        None => false,
    };
    match key.iter().position(|&b| b == b'@') {
        Some(at) => part(&key[..at], 241, true) && part(&key[at + 1..], 14, false),
        None => part(key, 256, false),
    }
}

/// `value = 0*255(chr) nblk-chr`: printable ASCII without ',' and '=', not
/// ending in a space.
fn valid_tracestate_value(value: &[u8]) -> bool {
    let nblk = |c: u8| matches!(c, 0x21..=0x7e) && c != b',' && c != b'=';
    match value.split_last() {
        Some((&last, rest)) => {
            value.len() <= 256 && nblk(last) && rest.iter().all(|&c| c == b' ' || nblk(c))
        }
        None => false,
    }
}

/// OpenTelemetry's TraceIdRatioBased: the low 8 bytes of the trace id
/// against the ratio, so every service sampling the same trace id with the
/// same ratio decides alike.
fn ratio_sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    // 63 bits, as the reference SDKs do, so the threshold fits a u64 exactly.
    let x = u64::from_be_bytes(low) >> 1;
    let threshold = (ratio * (1u64 << 63) as f64) as u64;
    x < threshold
}

// Ids come from a per-thread splitmix64: no lock, no syscall, no `rand`
// dependency. They need to be unique, not unpredictable; seeding from std's
// RandomState (randomly keyed per process), the clock, the thread id and a
// counter keeps threads and restarts apart.
thread_local! {
    static RNG: Cell<u64> = Cell::new(rng_seed());
}

fn rng_seed() -> u64 {
    static SEEDS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    std::thread::current().id().hash(&mut h);
    h.write_u64(SEEDS.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn next_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// All-zero ids are invalid in W3C and OTLP.
fn random_span_id() -> [u8; 8] {
    loop {
        let v = next_u64();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

fn random_trace_id() -> [u8; 16] {
    loop {
        let (hi, lo) = (next_u64(), next_u64());
        if hi | lo != 0 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&hi.to_be_bytes());
            id[8..].copy_from_slice(&lo.to_be_bytes());
            return id;
        }
    }
}

/// Attribute values bext uses.
#[derive(Debug, Clone)]
pub enum AttrValue {
    Str(String),
    StaticStr(&'static str),
    /// Shared with the plan (route patterns): no copy per span.
    Shared(std::sync::Arc<str>),
    /// Formatted by the exporter, off the request path.
    Ip(std::net::IpAddr),
    Int(i64),
    Bool(bool),
}

#[derive(Debug, Clone)]
pub struct SpanEvent {
    pub name: &'static str,
    pub time: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
}

/// One finished server span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub context: TraceContext,
    /// "GET /live/*" (method + route pattern) per semconv.
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub events: Vec<SpanEvent>,
    /// Status ERROR (bext sets it for 5xx); otherwise UNSET.
    pub error: bool,
}

/// Where the exporter connects and what it asks for, worked out once.
#[derive(Debug)]
struct Target {
    /// Host for the TCP connect, without IPv6 brackets.
    connect_host: String,
    port: u16,
    host_header: HeaderValue,
    /// Origin-form request target, e.g. `/v1/traces`.
    path: String,
    /// For log lines.
    url: String,
    /// For https: the handshake's connector and the name the collector's
    /// certificate must carry.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

fn target(uri: &http::Uri, tls: Option<&Arc<ClientConfig>>) -> Result<Target, String> {
    let https = validate_endpoint(uri)?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("OTLP endpoint `{uri}` has no host"))?;
    let host = authority.host();
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = match (https, tls) {
        (false, _) => None,
        (true, None) => {
            return Err(format!(
                "OTLP endpoint `{uri}` is https but no TLS client was configured"
            ))
        }
        (true, Some(cfg)) => {
            let name = ServerName::try_from(connect_host.clone()).map_err(|e| {
                format!("OTLP endpoint `{uri}`: `{connect_host}` is not a TLS server name: {e}")
            })?;
            Some((cfg.clone(), name))
        }
    };
    let host_header = HeaderValue::from_str(authority.as_str())
        .map_err(|e| format!("OTLP endpoint `{uri}`: bad host: {e}"))?;
    let path = match uri.path() {
        "" | "/" => match uri.query() {
            Some(q) => format!("{OTLP_PATH}?{q}"),
            None => OTLP_PATH.to_owned(),
        },
        _ => uri
            .path_and_query()
            .map_or_else(|| OTLP_PATH.to_owned(), |pq| pq.as_str().to_owned()),
    };
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{}{path}", authority.as_str());
    Ok(Target {
        connect_host,
        port,
        host_header,
        path,
        url,
        tls,
    })
}

/// The exporter: a bounded span queue and the loop that drains it.
/// Send + Sync, shared in an Arc between the request path (`submit`) and
/// the background service (`run`).
pub struct Tracer {
    cfg: TraceConfig,
    /// Err when the endpoint is unusable: every export then fails (counted
    /// and logged) instead of `new` failing, since the config layer already
    /// ran `validate_endpoint`.
    target: Result<Target, String>,
    resource: Resource,
    queue_cap: usize,
    batch: usize,
    queue: Mutex<VecDeque<SpanRecord>>,
    /// Rung by `submit` when a full batch is waiting, so a busy proxy does
    /// not hold spans for the whole flush interval.
    batch_ready: Notify,
    dropped: AtomicU64,
    exported: AtomicU64,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("endpoint", &self.cfg.endpoint)
            .field("dropped", &self.dropped())
            .field("exported", &self.exported())
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// No task started here: [`Tracer::run`] is the exporter.
    pub fn new(cfg: TraceConfig) -> Tracer {
        let queue_cap = cfg.queue;
        // A batch larger than the queue would never fill; 0 would never send.
        let batch = cfg.batch.clamp(1, queue_cap.max(1));
        let resource = Resource {
            attributes: vec![
                kv("service.name", AttrValue::Str(cfg.service_name.clone())),
                kv(
                    "service.version",
                    AttrValue::StaticStr(env!("CARGO_PKG_VERSION")),
                ),
                kv("telemetry.sdk.name", AttrValue::StaticStr("bext")),
                kv("telemetry.sdk.language", AttrValue::StaticStr("rust")),
                kv(
                    "telemetry.sdk.version",
                    AttrValue::StaticStr(env!("CARGO_PKG_VERSION")),
                ),
            ],
            ..Default::default()
        };
        Tracer {
            target: target(&cfg.endpoint, cfg.tls.as_ref()),
            resource,
            queue_cap,
            batch,
            // Grows on demand up to `queue_cap`: an idle or lightly loaded
            // proxy does not pay for a full queue.
            queue: Mutex::new(VecDeque::new()),
            batch_ready: Notify::new(),
            dropped: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            cfg,
        }
    }

    pub fn config(&self) -> &TraceConfig {
        &self.cfg
    }

    /// Non-blocking: queues the span; when the queue is full the span is
    /// dropped and counted. Never allocates without bound.
    pub fn submit(&self, span: SpanRecord) {
        if !span.context.sampled {
            return;
        }
        let waiting = {
            let mut q = self.lock_queue();
            if q.len() >= self.queue_cap {
                drop(q);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            q.push_back(span);
            q.len()
        };
        // Only the crossing wakes the exporter; past it the exporter sees a
        // full batch on its own after each export.
        if waiting == self.batch {
            self.batch_ready.notify_one();
        }
    }

    /// Spans dropped: queue full + spans in failed/timed-out exports.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted (2xx, less any it reported rejected).
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// The exporter loop; run it on a tokio runtime (bext runs it inside a
    /// Pingora BackgroundService). Sends a batch when `batch` spans are
    /// waiting or every 1 s (whichever first); one POST in flight at a time,
    /// each bounded by export_timeout; failures are logged with `log::warn!`
    /// at most once a minute. Returns after a final flush attempt, bounded by
    /// export_timeout from the moment `shutdown` changes to true (or its
    /// sender is dropped, which means nobody can ask any more). Spans still
    /// queued then are counted dropped. Run one loop per Tracer.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut exporter = Exporter {
            conn: None,
            warn: WarnLimit::default(),
        };
        let mut next_flush = Instant::now() + FLUSH_INTERVAL;
        let mut stop_at = if *shutdown.borrow_and_update() {
            Some(Instant::now())
        } else {
            None
        };
        while stop_at.is_none() {
            if self.waiting() < self.batch {
                tokio::select! {
                    _ = self.batch_ready.notified() => {}
                    _ = tokio::time::sleep_until(next_flush) => {}
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow_and_update() {
                            stop_at = Some(Instant::now());
                        }
                        continue;
                    }
                }
            }
            let now = Instant::now();
            let flush_due = now >= next_flush;
            if flush_due {
                next_flush = now + FLUSH_INTERVAL;
            }
            if !flush_due && self.waiting() < self.batch {
                continue;
            }
            let batch = self.take_batch();
            if batch.is_empty() {
                continue;
            }
            let export = self.export(&mut exporter, batch, now + self.cfg.export_timeout);
            tokio::pin!(export);
            tokio::select! {
                _ = &mut export => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow_and_update() {
                        stop_at = Some(Instant::now());
                    }
                    // Started before the shutdown, so its own timeout ends
                    // before the final flush's deadline.
                    export.await;
                }
            }
        }

        let deadline = stop_at.unwrap_or_else(Instant::now) + self.cfg.export_timeout;
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                self.count_dropped(batch.len());
                break;
            }
            self.export(&mut exporter, batch, deadline).await;
        }
        let left = std::mem::take(&mut *self.lock_queue());
        self.count_dropped(left.len());
    }

    fn lock_queue(&self) -> MutexGuard<'_, VecDeque<SpanRecord>> {
        // A panic while holding this lock cannot leave the deque broken
        // (push/drain only), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting(&self) -> usize {
        self.lock_queue().len()
    }

    fn take_batch(&self) -> Vec<SpanRecord> {
        let mut q = self.lock_queue();
        let n = q.len().min(self.batch);
        q.drain(..n).collect()
    }

    fn count_dropped(&self, n: usize) {
        if n > 0 {
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// One POST of one batch, ended at `deadline` whatever happens.
    async fn export(&self, ex: &mut Exporter, batch: Vec<SpanRecord>, deadline: Instant) {
        let n = batch.len();
        let body = self.encode(batch);
        let target = match &self.target {
            Ok(t) => t,
            Err(e) => {
                self.count_dropped(n);
                ex.warn
                    .failed(|| format!("OTLP export disabled: {e}; {n} spans dropped"));
                return;
            }
        };
        let result = tokio::time::timeout_at(deadline, self.post(ex, target, body)).await;
        match result {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(n as u64);
                self.exported
                    .fetch_add(n as u64 - rejected, Ordering::Relaxed);
                if rejected > 0 {
                    self.dropped.fetch_add(rejected, Ordering::Relaxed);
                    ex.warn.failed(|| {
                        format!(
                            "OTLP collector at {} rejected {rejected} of {n} spans",
                            target.url
                        )
                    });
                } else {
                    ex.warn.recovered(&target.url);
                }
            }
            Ok(Err(e)) => {
                ex.conn = None;
                self.count_dropped(n);
                ex.warn.failed(|| {
                    format!(
                        "OTLP export to {} failed: {e}; {n} spans dropped",
                        target.url
                    )
                });
            }
            Err(_) => {
                // The connection may be wedged mid-response: never reuse it.
                ex.conn = None;
                self.count_dropped(n);
                ex.warn.failed(|| {
                    format!(
                        "OTLP export to {} timed out after {:?}; {n} spans dropped",
                        target.url, self.cfg.export_timeout
                    )
                });
            }
        }
    }

    /// POSTs the body; Ok(spans the collector reported rejected).
    async fn post(&self, ex: &mut Exporter, target: &Target, body: Bytes) -> Result<u64, String> {
        // One retry, only when a kept-alive connection turned out closed
        // before the request went out: the collector cannot have seen it, so
        // there is no risk of a duplicate.
        for _ in 0..2 {
            let reused = match &ex.conn {
                Some(c) if !c.sender.is_closed() => true,
                _ => {
                    ex.conn = Some(Conn::open(target).await?);
                    false
                }
            };
            let Some(conn) = ex.conn.as_mut() else {
                return Err("no connection".to_owned());
            };
            if conn.sender.ready().await.is_err() {
                ex.conn = None;
                if reused {
                    continue;
                }
                return Err("connection closed".to_owned());
            }
            let req = self.request(target, body.clone())?;
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return self.response(ex, resp).await,
                Err(mut e) => {
                    ex.conn = None;
                    if reused && e.take_message().is_some() {
                        continue;
                    }
                    return Err(e.into_error().to_string());
                }
            }
        }
        Err("connection closed".to_owned())
    }

    fn request(&self, target: &Target, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(target.path.as_str())
            .body(Full::new(body))
            .map_err(|e| format!("bad OTLP request: {e}"))?;
        let headers = req.headers_mut();
        headers.insert(HOST, target.host_header.clone());
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (name, value) in &self.cfg.headers {
            // These describe the body and connection hyper writes; a
            // configured copy would only make the request invalid.
            if [HOST, CONTENT_TYPE, CONTENT_LENGTH, TRANSFER_ENCODING].contains(name) {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        Ok(req)
    }

    async fn response(&self, ex: &mut Exporter, resp: Response<Incoming>) -> Result<u64, String> {
        let status = resp.status();
        // Read to the end so the connection can carry the next export.
        let body = match Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
        {
            Ok(b) => Some(b.to_bytes()),
            Err(_) => {
                ex.conn = None;
                None
            }
        };
        if !status.is_success() {
            return Err(format!("collector answered {status}"));
        }
        // Partial success: the collector took the request but refused some
        // spans; those are dropped as far as bext's counters go.
        let rejected = body
            .and_then(|b| ExportTraceServiceResponse::decode(b).ok())
            .and_then(|r| r.partial_success)
            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
        Ok(rejected)
    }

    /// The `ExportTraceServiceRequest` of one batch. The three wrapper
    /// messages are framed by hand around spans prost encoded one by one:
    /// prost sizes every nested message again at each level it is nested
    /// in, which made the wrappers cost as much as the spans. The bytes are
    /// what `request.encode_to_vec()` gives (a test decodes them).
    fn encode(&self, batch: Vec<SpanRecord>) -> Bytes {
        use prost::encoding::{encode_key, encode_varint, message, WireType};
        let mut scope_spans = Vec::with_capacity(batch.len() * 512);
        message::encode(
            1,
            &InstrumentationScope {
                name: "bext".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            },
            &mut scope_spans,
        );
        for rec in batch {
            message::encode(2, &proto_span(rec), &mut scope_spans);
        }
        let mut resource_spans = Vec::with_capacity(scope_spans.len() + 256);
        message::encode(1, &self.resource, &mut resource_spans);
        encode_key(2, WireType::LengthDelimited, &mut resource_spans);
        encode_varint(scope_spans.len() as u64, &mut resource_spans);
        resource_spans.extend_from_slice(&scope_spans);
        let mut request = Vec::with_capacity(resource_spans.len() + 16);
        encode_key(1, WireType::LengthDelimited, &mut request);
        encode_varint(resource_spans.len() as u64, &mut request);
        request.extend_from_slice(&resource_spans);
        Bytes::from(request)
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kv(key: &str, value: AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s),
        AttrValue::StaticStr(s) => any_value::Value::StringValue(s.to_owned()),
        AttrValue::Shared(s) => any_value::Value::StringValue(s.to_string()),
        AttrValue::Ip(ip) => any_value::Value::StringValue(ip.to_string()),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn proto_span(rec: SpanRecord) -> Span {
    let start = unix_nanos(rec.start);
    let end = unix_nanos(rec.end).max(start);
    let ctx = rec.context;
    // As the SDK does: the W3C trace flags in bits 0-7, plus "whether the
    // parent is remote is known" and, for a client-supplied parent, "it is".
    let mut flags = u32::from(ctx.sampled) | SpanFlags::ContextHasIsRemoteMask as u32;
    if ctx.parent_span_id.is_some() {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    Span {
        trace_id: ctx.trace_id.to_vec(),
        span_id: ctx.span_id.to_vec(),
        trace_state: ctx
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        parent_span_id: ctx.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name: rec.name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: rec.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
        events: rec
            .events
            .into_iter()
            .map(|e| Event {
                time_unix_nano: unix_nanos(e.time),
                name: e.name.to_owned(),
                attributes: e.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
                dropped_attributes_count: 0,
            })
            .collect(),
        status: rec.error.then(|| Status {
            message: String::new(),
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

/// State of one `run` loop.
struct Exporter {
    conn: Option<Conn>,
    warn: WarnLimit,
}

/// A kept-alive HTTP/1 connection to the collector. Its driver task is
/// aborted when the connection is dropped (after a failure or timeout), so a
/// collector that never answers cannot pile up connections.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    async fn open(target: &Target) -> Result<Conn, String> {
        let stream = tokio::net::TcpStream::connect((target.connect_host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Small request/response pairs: don't wait on Nagle.
        let _ = stream.set_nodelay(true);
        match &target.tls {
            None => Self::handshake(stream).await,
            Some((cfg, name)) => {
                let tls = TlsConnector::from(cfg.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Self::handshake(tls).await
            }
        }
    }

    async fn handshake<S>(io: S) -> Result<Conn, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("OTLP collector connection ended: {e}");
            }
        });
        Ok(Conn { sender, task })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// At most one warning a minute, telling how many failures it stood for,
/// and one info line when exports work again.
#[derive(Default)]
struct WarnLimit {
    last: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl WarnLimit {
    fn failed(&mut self, message: impl FnOnce() -> String) {
        self.failing = true;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!(
                "{} ({} more failed exports in the last minute were not logged)",
                message(),
                self.suppressed
            );
        } else {
            log::warn!("{}", message());
        }
        self.last = Some(now);
        self.suppressed = 0;
    }

    fn recovered(&mut self, url: &str) {
        if self.failing {
            self.failing = false;
            log::info!("OTLP export to {url} works again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use std::sync::Arc;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn tp(s: &str) -> TraceContext {
        TraceContext::from_request(Some(s.as_bytes()), None, 1.0)
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn assert_joined(ctx: &TraceContext, sampled: bool) {
        assert_eq!(hex_of(&ctx.trace_id), TRACE);
        assert_eq!(
            ctx.parent_span_id.map(|p| hex_of(&p)).as_deref(),
            Some(SPAN)
        );
        assert_ne!(ctx.parent_span_id, Some(ctx.span_id));
        assert_ne!(ctx.span_id, [0; 8]);
        assert_eq!(ctx.sampled, sampled);
    }

    fn assert_fresh(input: &[u8]) {
        for (ratio, sampled) in [(0.0, false), (1.0, true)] {
            let ctx = TraceContext::from_request(Some(input), Some(b"congo=t61rcWkgMzE"), ratio);
            assert_eq!(
                ctx.parent_span_id,
                None,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_ne!(hex_of(&ctx.trace_id), TRACE, "{input:?}");
            assert_ne!(ctx.trace_id, [0; 16]);
            assert_ne!(ctx.span_id, [0; 8]);
            assert_eq!(ctx.sampled, sampled, "{input:?}");
            assert_eq!(ctx.tracestate, None, "{input:?}");
        }
    }

    #[test]
    fn valid_traceparents_are_continued() {
        assert_joined(&tp(&format!("00-{TRACE}-{SPAN}-01")), true);
        // The parent's decision wins over the ratio both ways.
        let unsampled = format!("00-{TRACE}-{SPAN}-00");
        let ctx = TraceContext::from_request(Some(unsampled.as_bytes()), None, 1.0);
        assert_joined(&ctx, false);
        let sampled = format!("00-{TRACE}-{SPAN}-01");
        let ctx = TraceContext::from_request(Some(sampled.as_bytes()), None, 0.0);
        assert_joined(&ctx, true);
        // Unknown flag bits are fine; only bit 0 decides.
        assert_joined(&tp(&format!("00-{TRACE}-{SPAN}-03")), true);
        assert_joined(&tp(&format!("00-{TRACE}-{SPAN}-fe")), false);
        // Whitespace around the field value.
        assert_joined(&tp(&format!(" 00-{TRACE}-{SPAN}-01\t")), true);
        // Future versions: first 55 bytes, then '-' and anything.
        assert_joined(&tp(&format!("01-{TRACE}-{SPAN}-01-extra")), true);
        assert_joined(&tp(&format!("fe-{TRACE}-{SPAN}-01")), true);
        assert_joined(
            &tp(&format!("cc-{TRACE}-{SPAN}-00-what-the-future-holds")),
            false,
        );
    }

    #[test]
    fn hostile_traceparents_start_a_fresh_trace() {
        let long = format!("01-{TRACE}-{SPAN}-01-{}", "x".repeat(300));
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"garbage".to_vec(),
            b"\xff\xfe\x00".to_vec(),
            format!("ff-{TRACE}-{SPAN}-01").into(),
            format!("00-{}-{SPAN}-01", "0".repeat(32)).into(),
            format!("00-{TRACE}-{}-01", "0".repeat(16)).into(),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()).into(),
            format!("00-{TRACE}-{}-01", SPAN.to_uppercase()).into(),
            format!("0A-{TRACE}-{SPAN}-01").into(),
            format!("00-{TRACE}-{SPAN}-0A").into(),
            format!("00-{TRACE}-{SPAN}-1").into(),
            format!("00-{TRACE}-{SPAN}-011").into(),
            format!("00-{TRACE}-{SPAN}-01-extra").into(),
            format!("00-{TRACE}-{SPAN}-01-").into(),
            format!("00-{}-{SPAN}-01", &TRACE[..31]).into(),
            format!("00-{TRACE}0-{SPAN}-01").into(),
            format!("00_{TRACE}_{SPAN}_01").into(),
            format!("00-{TRACE}-{SPAN}.01").into(),
            format!("00 {TRACE} {SPAN} 01").into(),
            format!("01-{TRACE}-{SPAN}-01extra").into(),
            format!("01-{TRACE}-{SPAN}-0").into(),
            format!("0-{TRACE}-{SPAN}-01").into(),
            format!("00-{TRACE}-{SPAN}-é1").into(),
            format!("00-{}é-{SPAN}-01", &TRACE[..30]).into(),
            format!("00-{TRACE}-{}g-01", &SPAN[..15]).into(),
            format!("00-{TRACE}-{SPAN}-01\r\n").into(),
            format!("00-{TRACE}-{SPAN}-01").repeat(2).into(),
            long.into(),
        ];
        for case in cases {
            assert_fresh(&case);
        }
        let ctx = TraceContext::from_request(None, None, 1.0);
        assert!(ctx.sampled && ctx.parent_span_id.is_none());
        assert!(!TraceContext::from_request(None, None, 0.0).sampled);
        assert!(!TraceContext::from_request(None, None, f64::NAN).sampled);
        assert!(TraceContext::from_request(None, None, 7.0).sampled);
        assert!(!TraceContext::from_request(None, None, -1.0).sampled);
    }

    #[test]
    fn tracestate_is_passed_through_only_when_valid() {
        let parent = format!("00-{TRACE}-{SPAN}-01");
        let ts = |s: &[u8]| {
            TraceContext::from_request(Some(parent.as_bytes()), Some(s), 1.0)
                .tracestate
                .map(|v| v.as_bytes().to_vec())
        };
        let keep = |s: &str| assert_eq!(ts(s.as_bytes()).as_deref(), Some(s.as_bytes()), "{s}");
        let drop = |s: &[u8]| assert_eq!(ts(s), None, "{}", String::from_utf8_lossy(s));
        keep("congo=t61rcWkgMzE");
        keep("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        keep("rojo=1, ,congo=2,");
        keep("tenant1@vendor=x y~z");
        keep("a*b/c_d-e=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~");
        let max: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        keep(&max.join(","));
        let fits = format!("k={}", "v".repeat(254));
        keep(&fits);
        assert_eq!(ts(b" congo=1 ").as_deref(), Some(&b"congo=1"[..]));

        let oversize = (0..60)
            .map(|i| format!("key{i:02}=value"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(oversize.len() > MAX_TRACESTATE_LEN);
        drop(oversize.as_bytes());
        let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        drop(too_many.join(",").as_bytes());
        drop(b"");
        drop(b" , ");
        drop(b"Congo=1");
        drop(b"1congo=1");
        drop(b"congo");
        drop(b"congo=");
        drop(b"congo=a,congo=b");
        drop(b"congo=a\x7f");
        drop(b"congo=a=b");
        drop(b"co ngo=a");
        drop(b"@vendor=a");
        drop(b"tenant@=a");
        drop(b"tenant@1vendor=a");
        drop(b"tenant@vendorvendorvend=a");
        drop(b"congo=\xc3\xa9");
        drop(b"congo=a\tb");
        drop(format!("k={}", "v".repeat(257)).as_bytes());
        // No tracestate without a valid traceparent (W3C).
        let ctx = TraceContext::from_request(Some(b"junk"), Some(b"congo=1"), 1.0);
        assert_eq!(ctx.tracestate, None);
    }

    #[test]
    fn outgoing_traceparent_names_bexts_span() {
        let ctx = tp(&format!("00-{TRACE}-{SPAN}-01"));
        let header = ctx.traceparent();
        let expect = format!("00-{TRACE}-{}-01", hex_of(&ctx.span_id));
        assert_eq!(header.to_str().unwrap(), expect);
        // And bext's header parses back as the same trace with bext as parent.
        let next = TraceContext::from_request(Some(header.as_bytes()), None, 0.0);
        assert_eq!(next.trace_id, ctx.trace_id);
        assert_eq!(next.parent_span_id, Some(ctx.span_id));
        assert!(next.sampled);

        let unsampled = tp(&format!("00-{TRACE}-{SPAN}-00"));
        assert!(unsampled.traceparent().to_str().unwrap().ends_with("-00"));
        assert_eq!(&ctx.trace_id_hex(), TRACE.as_bytes());
        let fresh = TraceContext::from_request(None, None, 1.0);
        assert_eq!(
            fresh.trace_id_hex().to_vec(),
            hex_of(&fresh.trace_id).into_bytes()
        );
    }

    #[test]
    fn ratio_sampling_roughly_respects_the_ratio() {
        let n = 10_000;
        let sampled = (0..n)
            .filter(|_| TraceContext::from_request(None, None, 0.25).sampled)
            .count();
        let share = sampled as f64 / n as f64;
        assert!((0.2..0.3).contains(&share), "{share}");
    }

    #[test]
    fn ids_are_distinct_across_threads() {
        let ids: Vec<[u8; 16]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).map(|_| random_trace_id()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn endpoints() {
        let ok = |s: &str| validate_endpoint(&s.parse().unwrap());
        assert_eq!(ok("http://127.0.0.1:4318"), Ok(false));
        assert_eq!(ok("http://collector/otlp/v1/traces"), Ok(false));
        assert_eq!(ok("HTTPS://collector:4318"), Ok(true));
        assert!(ok("grpc://collector:4317")
            .unwrap_err()
            .contains("not supported"));
        assert!(ok("/v1/traces").is_err());
        assert!(ok("collector:4318").is_err());

        let t = |s: &str| target(&s.parse().unwrap(), None).unwrap();
        let a = t("http://127.0.0.1:4318");
        assert_eq!(
            (a.connect_host.as_str(), a.port, a.path.as_str()),
            ("127.0.0.1", 4318, "/v1/traces")
        );
        assert_eq!(a.host_header, "127.0.0.1:4318");
        assert_eq!(t("http://c:4318/").path, "/v1/traces");
        assert_eq!(t("http://c/custom/traces?x=1").path, "/custom/traces?x=1");
        let v6 = t("http://[::1]:4318");
        assert_eq!((v6.connect_host.as_str(), v6.port), ("::1", 4318));
        assert_eq!(t("http://collector").port, 80);
        assert!(t("http://collector").tls.is_none());
        // https needs the TLS client the config layer builds; 443 by default.
        assert!(target(&"https://collector".parse().unwrap(), None).is_err());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let ck = rcgen::generate_simple_self_signed(vec!["collector".to_owned()]).unwrap();
        std::fs::write(&ca, ck.cert.pem()).unwrap();
        let tls = tls_client(Some(&ca)).unwrap();
        let s = target(&"https://collector".parse().unwrap(), Some(&tls)).unwrap();
        assert_eq!(
            (s.port, s.url.as_str()),
            (443, "https://collector/v1/traces")
        );
        assert!(s.tls.is_some());
        let ip = target(&"https://[::1]:4318".parse().unwrap(), Some(&tls)).unwrap();
        assert!(ip.tls.is_some());
    }

    #[test]
    fn ca_file_errors_name_the_file_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = tls_client(Some(&missing)).unwrap_err();
        assert!(
            e.contains("missing.pem") && e.contains("No such file"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_client(Some(&empty)).unwrap_err();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    fn config(endpoint: &str, queue: usize, batch: usize, timeout: Duration) -> TraceConfig {
        TraceConfig {
            endpoint: endpoint.parse().unwrap(),
            headers: vec![],
            service_name: "svc".into(),
            sample_ratio: 1.0,
            queue,
            batch,
            export_timeout: timeout,
            tls: None,
        }
    }

    fn span(sampled: bool, error: bool) -> SpanRecord {
        let mut context = TraceContext::from_request(
            Some(format!("00-{TRACE}-{SPAN}-01").as_bytes()),
            Some(b"congo=1"),
            1.0,
        );
        context.sampled = sampled;
        let start = SystemTime::now();
        SpanRecord {
            context,
            name: "GET /live/*".into(),
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![
                ("http.request.method", AttrValue::StaticStr("GET")),
                ("http.response.status_code", AttrValue::Int(503)),
                ("url.path", AttrValue::Str("/live/x".into())),
                ("bext.cache.hit", AttrValue::Bool(false)),
            ],
            events: vec![SpanEvent {
                name: "upstream.retry",
                time: start,
                attributes: vec![("attempt", AttrValue::Int(2))],
            }],
            error,
        }
    }

    #[test]
    fn encodes_the_otlp_data_model() {
        let tracer = Tracer::new(config(
            "http://127.0.0.1:4318",
            10,
            10,
            Duration::from_secs(1),
        ));
        let rec = span(true, true);
        let ctx = rec.context.clone();
        let root = SpanRecord {
            context: TraceContext::from_request(None, None, 1.0),
            error: false,
            ..span(true, false)
        };
        let bytes = tracer.encode(vec![rec, root]);
        let req = ExportTraceServiceRequest::decode(bytes).unwrap();
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        let get = |k: &str| {
            attrs
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            get("service.name"),
            Some(any_value::Value::StringValue("svc".into()))
        );
        assert_eq!(
            get("telemetry.sdk.name"),
            Some(any_value::Value::StringValue("bext".into()))
        );
        assert!(get("service.version").is_some());
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "bext");
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, ctx.trace_id);
        assert_eq!(s.span_id, ctx.span_id);
        assert_eq!(s.parent_span_id, ctx.parent_span_id.unwrap());
        assert_eq!(s.trace_state, "congo=1");
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 3_000_000);
        assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(s.attributes.len(), 4);
        assert_eq!(
            s.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(503))
        );
        assert_eq!(
            s.attributes[3].value.as_ref().unwrap().value,
            Some(any_value::Value::BoolValue(false))
        );
        assert_eq!(s.events[0].name, "upstream.retry");
        assert_eq!(s.events[0].attributes[0].key, "attempt");
        let root = &rs.scope_spans[0].spans[1];
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.flags, 0x101);
        assert!(root.status.is_none());
        assert!(root.trace_state.is_empty());
    }

    #[test]
    fn tracer_is_shareable_and_run_is_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let tracer = Tracer::new(config("http://127.0.0.1:1", 1, 1, Duration::from_secs(1)));
        send_sync(&tracer);
        let (_tx, rx) = watch::channel(false);
        send(tracer.run(rx));
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let tracer = Tracer::new(config(
            "http://127.0.0.1:1",
            10,
            512,
            Duration::from_secs(1),
        ));
        for _ in 0..100 {
            tracer.submit(span(true, false));
        }
        assert_eq!(tracer.dropped(), 90);
        assert_eq!(tracer.waiting(), 10);
        // Unsampled spans are ignored, not queued or counted.
        tracer.submit(span(false, false));
        assert_eq!(tracer.dropped(), 90);
        let empty = Tracer::new(config("http://127.0.0.1:1", 0, 512, Duration::from_secs(1)));
        empty.submit(span(true, false));
        assert_eq!(empty.dropped(), 1);
    }

    /// Runs the exporter against `endpoint` until `dropped()` reaches `want`
    /// (or 10 s pass), submitting while it runs; returns the tracer.
    fn run_against(endpoint: &str, timeout: Duration, want: u64) -> Arc<Tracer> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tracer = Arc::new(Tracer::new(config(endpoint, 100, 5, timeout)));
        let (tx, rx) = watch::channel(false);
        let runner = {
            let tracer = tracer.clone();
            rt.spawn(async move { tracer.run(rx).await })
        };
        let begin = std::time::Instant::now();
        let mut slowest = Duration::ZERO;
        while tracer.dropped() < want && begin.elapsed() < Duration::from_secs(10) {
            let t = std::time::Instant::now();
            for _ in 0..5 {
                tracer.submit(span(true, false));
            }
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Loose on purpose: a blocked submit would take export_timeout.
        assert!(
            slowest < Duration::from_millis(100),
            "submit took {slowest:?}"
        );
        assert!(tracer.dropped() >= want, "dropped {}", tracer.dropped());
        tx.send(true).unwrap();
        let stopped = std::time::Instant::now();
        rt.block_on(runner).unwrap();
        // Final flush bounded by export_timeout (plus scheduling slack).
        assert!(
            stopped.elapsed() < timeout + Duration::from_secs(1),
            "{:?}",
            stopped.elapsed()
        );
        assert_eq!(tracer.exported(), 0);
        assert_eq!(tracer.waiting(), 0);
        tracer
    }

    #[test]
    fn refused_connections_drop_spans() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        run_against(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_millis(200),
            20,
        );
    }

    #[test]
    fn silent_collector_times_out_and_drops_spans() {
        // A listener that never accepts: the kernel completes the handshake
        // and buffers the request, and no answer ever comes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        run_against(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_millis(200),
            10,
        );
        drop(listener);
    }

    #[test]
    fn shutdown_before_start_returns_promptly() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tracer = Tracer::new(config("https://nope", 10, 5, Duration::from_millis(100)));
        tracer.submit(span(true, false));
        let (tx, rx) = watch::channel(true);
        rt.block_on(tracer.run(rx));
        drop(tx);
        assert_eq!(tracer.dropped(), 1);
        // A dropped sender also ends the loop.
        let (tx, rx) = watch::channel(false);
        drop(tx);
        rt.block_on(tracer.run(rx));
    }
}
