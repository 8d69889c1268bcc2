//! The user-facing shape of `bext.config.toml`: plain serde types that mirror the
//! file one to one. They are never used past `config`: `plan.rs` validates them
//! into the internal [`Plan`](super::Plan). Unknown keys are refused everywhere.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::limits::{LimitsSection, RateSection};
use super::units::{ByteSize, HumanDuration};
use super::upstream::{HealthSection, NodeEntry, StickySection};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    pub route_rules: Vec<RouteRule>,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub waf: crate::waf::config::WafSection,
    #[serde(default)]
    pub cache: CacheSection,
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub telemetry: super::telemetry::TelemetrySection,
    #[serde(default)]
    pub compression: super::compression::CompressionSection,
    /// `[sites."HOST"]`: settings for every route of one site (`*` for the
    /// routes without `host`).
    #[serde(default)]
    pub sites: BTreeMap<String, super::sites::SiteSection>,
    /// `[cluster]`: purges shared with other nodes through Redis.
    pub cluster: Option<super::cluster::ClusterSection>,
}

/// `[cache]`: the edge cache shared by every route with `cache = true`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub enabled: Option<bool>,
    pub max_size: Option<ByteSize>,
    pub max_object_size: Option<ByteSize>,
    pub expose_tags: Option<bool>,
    pub stale_while_revalidate: Option<HumanDuration>,
    pub stale_if_error: Option<HumanDuration>,
    pub lock_timeout: Option<HumanDuration>,
}

/// `[tls]`: HTTPS (HTTP/1.1 + HTTP/2) listeners, SNI certificates, HTTP/3, edge HTTPS.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Option<Vec<String>>,
    /// The default certificate (clients without SNI or with an unknown name).
    pub cert: Option<String>,
    pub key: Option<String>,
    #[serde(default)]
    pub certificates: Vec<TlsCertificateSection>,
    pub http3: Option<bool>,
    pub redirect_http: Option<bool>,
    pub redirect_status: Option<u16>,
    pub hsts: Option<String>,
}

/// `[[tls.certificates]]`: one certificate chosen by SNI for `hosts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificateSection {
    pub hosts: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// CIDRs allowed to call `/__bext/*` besides loopback.
    pub allow: Option<Vec<String>>,
    /// Bearer token; `"env:VAR"` reads it from the environment.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Vec<String>>,
    pub threads: Option<usize>,
    pub grace_period: Option<HumanDuration>,
    pub shutdown_timeout: Option<HumanDuration>,
    pub client_timeout: Option<HumanDuration>,
    pub trusted_proxies: Option<Vec<String>>,
    pub error_page: Option<String>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub keepalive_pool_size: Option<usize>,
    /// The host whose routes answer requests for a host no route names
    /// (default: those get `421 Misdirected Request`).
    pub default_site: Option<String>,
    /// Cleartext HTTP/2 (prior knowledge) on the plain listeners.
    pub h2c: Option<bool>,
    /// Where run-time switches (maintenance) are kept for the next process
    /// (default: next to `pid_file`, `NAME.state.json`).
    pub state_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub nodes: Vec<NodeEntry>,
    pub connect_timeout: Option<HumanDuration>,
    pub read_timeout: Option<HumanDuration>,
    pub write_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    // Multi-node keys, validated in `config/upstream.rs`.
    pub balance: Option<String>,
    pub hash_on: Option<String>,
    pub health: Option<HealthSection>,
    pub retries: Option<u32>,
    pub retry_non_idempotent: Option<bool>,
    pub sticky: Option<StickySection>,
    pub close_spread: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub pattern: String,
    pub host: Option<String>,
    pub proxy: Option<String>,
    /// `"static"`: serve files from `static_root` instead of proxying.
    pub render: Option<String>,
    /// Directory the URL path is mapped under; relative to the config file.
    pub static_root: Option<String>,
    pub cache: Option<bool>,
    pub cache_ttl: Option<HumanDuration>,
    pub websocket: Option<bool>,
    pub websocket_idle_timeout: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    /// Sticky affinity on this route (default: on when the upstream has `sticky`).
    pub sticky: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-route request rate per client IP (on top of `limits.rate`).
    pub rate: Option<RateSection>,
    /// Per-route request body limit (overrides `limits.max_body`).
    pub max_body: Option<ByteSize>,
    /// `false` turns the WAF off for this route.
    pub waf: Option<bool>,
    /// `false` sends this route's responses uncompressed (default: compressed
    /// when `[compression]` is on and the route proxies).
    pub compress: Option<bool>,
    /// The security-header preset (HSTS on TLS, nosniff, Referrer-Policy,
    /// X-Frame-Options), never overriding the response's own.
    pub security_headers: Option<bool>,
    /// `Permissions-Policy` added with the preset.
    pub permissions_policy: Option<String>,
    /// Response headers removed (e.g. `["server", "x-powered-by"]`).
    #[serde(default)]
    pub response_headers_remove: Vec<String>,
    /// Request headers set on the way to Phoenix.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// Request headers removed on the way to Phoenix.
    #[serde(default)]
    pub request_headers_remove: Vec<String>,
    /// Answer with a redirect to this template (`{path}`, `{query}`, `{host}`).
    pub redirect: Option<String>,
    /// The redirect's status (default 308).
    pub status: Option<u16>,
    /// `"add"`, `"remove"` or `"ignore"` (default).
    pub trailing_slash: Option<String>,
    /// Static routes: the file served for a directory path (`index.html`).
    pub index: Option<String>,
    /// Static routes: the file served for a missing page (single-page apps).
    pub fallback: Option<String>,
    /// Requests to this route under any other host name (www, an alias, the
    /// bare IP) are redirected to this one, path and query kept.
    pub canonical_host: Option<String>,
    /// Staging protection (overrides the site's `auth`).
    pub auth: Option<super::sites::AuthSection>,
}
