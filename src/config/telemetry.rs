//! `[telemetry]`: the scrape listener, the access log and OTLP traces,
//! validated into a [`TelemetryPlan`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use super::plan::{resolve_secret, Errors};
use crate::telemetry::access_log::{AccessLogConfig, Format, Target};
use crate::telemetry::trace::{tls_client, validate_endpoint, TraceConfig};

/// Query parameters whose values the access log never shows.
pub const DEFAULT_REDACT: [&str; 5] = ["password", "token", "_csrf_token", "code", "secret"];

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// A separate listener that serves only `GET /metrics`.
    pub metrics_listen: Option<String>,
    /// `stdout`, `stderr`, `off`, or a file path.
    pub access_log: Option<String>,
    /// `json` (default) or `combined` (nginx's).
    pub access_log_format: Option<String>,
    /// Query parameter names redacted in the access log (replaces the default list).
    pub redact_query: Option<Vec<String>>,
    /// OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` or
    /// `https://otlp.example.com`.
    pub otlp_endpoint: Option<String>,
    /// PEM file of the CA(s) an https collector's certificate is checked
    /// against (default: the system's roots).
    pub otlp_ca: Option<String>,
    /// Extra headers on export requests; values may be `env:VAR`.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    pub service_name: Option<String>,
    /// Share of new traces recorded (a sampled `traceparent` is always honoured).
    pub sample_ratio: Option<f64>,
    /// Put the query string into spans (`url.query`).
    pub trace_query: Option<bool>,
}

/// `[telemetry]`, validated.
#[derive(Debug, Clone, Default)]
pub struct TelemetryPlan {
    pub metrics_listen: Option<SocketAddr>,
    pub access_log: Option<AccessLogConfig>,
    pub trace: Option<TraceConfig>,
    pub trace_query: bool,
}

pub(super) fn compile(errs: &mut Errors, base: &Path, t: TelemetrySection) -> TelemetryPlan {
    let metrics_listen = t
        .metrics_listen
        .and_then(|a| match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errs.push(
                    "telemetry.metrics_listen",
                    format!("\"{a}\" is not an address:port (e.g. \"127.0.0.1:9145\")"),
                );
                None
            }
        });
    let format = match t.access_log_format.as_deref() {
        None | Some("json") => Format::Json,
        Some("combined") => Format::Combined,
        Some(other) => {
            errs.push(
                "telemetry.access_log_format",
                format!("\"{other}\" is not one of json, combined"),
            );
            Format::Json
        }
    };
    let target = match t.access_log.as_deref() {
        None | Some("off") => None,
        Some("stdout") => Some(Target::Stdout),
        Some("stderr") => Some(Target::Stderr),
        Some("") => {
            errs.push(
                "telemetry.access_log",
                "empty: use stdout, stderr, off or a file path",
            );
            None
        }
        Some(path) => Some(Target::File(base.join(path))),
    };
    let redact = t
        .redact_query
        .unwrap_or_else(|| DEFAULT_REDACT.iter().map(|s| s.to_string()).collect());
    let access_log = target.map(|target| AccessLogConfig {
        target,
        format,
        redact,
        buffer_bytes: 8 << 20,
    });
    let sample_ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        errs.push("telemetry.sample_ratio", "must be between 0.0 and 1.0");
    }
    let mut headers = Vec::new();
    for (name, value) in &t.otlp_headers {
        let key = format!("telemetry.otlp_headers.{name}");
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            errs.push(key, "not a valid header name");
            continue;
        };
        match resolve_secret(value).map(|v| HeaderValue::from_str(&v)) {
            Ok(Ok(v)) => headers.push((name, v)),
            Ok(Err(_)) => errs.push(key, "not a valid header value"),
            Err(e) => errs.push(key, e),
        }
    }
    let endpoint_missing = t.otlp_endpoint.is_none();
    let trace = t.otlp_endpoint.and_then(|e| {
        let uri = match e.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                errs.push(
                    "telemetry.otlp_endpoint",
                    format!("\"{e}\" is not a URL (e.g. \"http://127.0.0.1:4318\")"),
                );
                return None;
            }
        };
        let https = match validate_endpoint(&uri) {
            Ok(https) => https,
            Err(why) => {
                errs.push("telemetry.otlp_endpoint", why);
                return None;
            }
        };
        let ca = t.otlp_ca.as_deref().map(|p| base.join(p));
        let tls = match (https, ca) {
            (true, ca) => match tls_client(ca.as_deref()) {
                Ok(tls) => Some(tls),
                Err(why) => {
                    let key = if t.otlp_ca.is_some() {
                        "telemetry.otlp_ca"
                    } else {
                        "telemetry.otlp_endpoint"
                    };
                    errs.push(key, why);
                    return None;
                }
            },
            (false, Some(_)) => {
                errs.push(
                    "telemetry.otlp_ca",
                    "set, but otlp_endpoint is http:// (a CA file is only used for https)",
                );
                None
            }
            (false, None) => None,
        };
        Some(TraceConfig {
            endpoint: uri,
            headers: headers.clone(),
            service_name: t.service_name.clone().unwrap_or_else(|| "bext".into()),
            sample_ratio: sample_ratio.clamp(0.0, 1.0),
            queue: 4096,
            batch: 512,
            export_timeout: Duration::from_secs(5),
            tls,
        })
    });
    if endpoint_missing
        && (t.service_name.is_some() || !t.otlp_headers.is_empty() || t.otlp_ca.is_some())
    {
        errs.push(
            "telemetry.otlp_endpoint",
            "service_name / otlp_headers / otlp_ca are set but there is no otlp_endpoint to send traces to",
        );
    }
    TelemetryPlan {
        metrics_listen,
        access_log,
        trace,
        trace_query: t.trace_query.unwrap_or(false),
    }
}
