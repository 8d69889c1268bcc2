//! Validation and compilation of the user config into the internal [`Plan`]:
//! resolved socket addresses, parsed CIDRs, compiled route patterns, loaded
//! error page, defaults applied. Every error names the key it is about.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::upstream::{compile_nodes, compile_policy, NodePlan, PoolPolicy};
use super::user::{
    AdminSection, CacheSection, RouteRule, ServerSection, UpstreamSection, UserConfig,
};
use super::{ConfigError, ConfigErrors};
use crate::admin::AdminAccess;
use crate::limits::LimitsPlan;
use crate::routing::{HostMatch, Pattern, Route, RouteTable, RouteTarget};
use crate::static_files::StaticRoot;
use crate::tls::TlsPlan;

/// The largest `server.error_page` we load: it is held in memory and sent on every 5xx.
const MAX_ERROR_PAGE: u64 = 1 << 20;

/// Everything the proxy needs, validated and compiled. Built once per (re)load.
#[derive(Debug)]
pub struct Plan {
    pub source: PathBuf,
    pub server: ServerPlan,
    pub upstreams: Vec<UpstreamPlan>,
    pub routes: RouteTable,
    pub admin: AdminAccess,
    pub limits: LimitsPlan,
    pub waf: std::sync::Arc<crate::waf::Waf>,
    pub cache: CachePlan,
    /// `[tls]`, when present: HTTPS listeners, certificates, HTTP/3, edge HTTPS.
    pub tls: Option<TlsPlan>,
    pub telemetry: super::TelemetryPlan,
    pub compression: crate::compression::CompressionPlan,
    /// The sites, in the order of their first route (`Route::site` indexes this).
    pub sites: Vec<crate::maintenance::SitePlan>,
    /// The config document as written, and a digest of the TLS files it
    /// names: what `config::diff` compares to decide whether a reload can
    /// be applied in place.
    pub doc: toml::Table,
    pub tls_digest: u64,
    /// `[cluster]`, when present: the Redis shared with other nodes.
    pub cluster: Option<super::cluster::ClusterPlan>,
}

/// `[cache]`, validated. See `crate::cache` for what each knob does.
#[derive(Debug, Clone)]
pub struct CachePlan {
    /// Global switch; `false` turns every route's `cache` off.
    pub enabled: bool,
    /// Budget for stored entries (bodies, headers, keys, tags), in bytes.
    pub max_size: u64,
    /// Larger responses stream through uncached.
    pub max_object_size: u64,
    /// Keep `Cache-Tag` / `Surrogate-Key` on responses sent to clients.
    pub expose_tags: bool,
    /// Used when the origin's Cache-Control has no `stale-while-revalidate`.
    pub stale_while_revalidate: Duration,
    /// Used when the origin's Cache-Control has no `stale-if-error`.
    pub stale_if_error: Duration,
    /// Longest a request waits for another request filling the same key.
    pub lock_timeout: Duration,
}

impl Default for CachePlan {
    fn default() -> Self {
        CachePlan {
            enabled: true,
            max_size: 256 << 20,
            max_object_size: 8 << 20,
            expose_tags: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerPlan {
    pub listen: Vec<SocketAddr>,
    /// Worker threads; 0 in the file means one per core, resolved here.
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub client_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    /// Custom body for 502/503/504; the built-in page when `None`.
    pub error_page: Option<Bytes>,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub keepalive_pool_size: usize,
    /// Accept cleartext HTTP/2 (prior knowledge) on `listen`.
    pub h2c: bool,
    /// Run-time switches kept for the next process (`maintenance`).
    pub state_file: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamPlan {
    pub name: String,
    pub nodes: Vec<NodePlan>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    /// Balancing, health, retries, affinity (`config/upstream.rs`).
    pub policy: PoolPolicy,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(super) struct Errors<'a> {
    file: &'a Path,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    /// Problems found so far (to tell whether a section added any).
    pub(super) fn count(&self) -> usize {
        self.list.len()
    }

    pub(super) fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        });
    }
}

pub(super) fn compile(file: &Path, user: UserConfig) -> Result<Plan, ConfigErrors> {
    let mut errs = Errors { file, list: vec![] };
    let base = file.parent().unwrap_or(Path::new("."));
    let default_site = user.server.default_site.clone();
    let server = compile_server(&mut errs, base, user.server);
    let upstreams: Vec<UpstreamPlan> = user
        .upstreams
        .into_iter()
        .map(|(name, u)| compile_upstream(&mut errs, name, u))
        .collect();
    let admin = compile_admin(&mut errs, user.admin);
    let limits = super::limits::compile(user.limits, &user.route_rules, parse_cidr)
        .map_err(|list| list.into_iter().for_each(|(k, r)| errs.push(k, r)))
        .unwrap_or_default();
    let waf = compile_waf(&mut errs, user.waf);
    let cache = compile_cache(&mut errs, user.cache);
    let telemetry = super::telemetry::compile(&mut errs, base, user.telemetry);
    let compression = super::compression::compile(&mut errs, user.compression);
    let cluster = user
        .cluster
        .and_then(|c| super::cluster::compile(&mut errs, c));
    let tls = user
        .tls
        .and_then(|t| super::tls::compile(&mut errs, base, t, &server.listen));
    let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    if user.route_rules.is_empty() {
        errs.push(
            "route_rules",
            "no [[route_rules]]: every request would get 404; add at least `pattern = \"/*\"` with `proxy = ...`",
        );
    }
    let routes = user
        .route_rules
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| compile_route(&mut errs, base, &names, i, r))
        .collect::<Vec<Route>>();
    let mut routes = routes;
    let sites = super::sites::compile(&mut errs, base, user.sites, &mut routes);
    if let Some(site) = &default_site {
        let named = routes
            .iter()
            .any(|r| r.host.as_ref().is_some_and(|h| h.matches(site)));
        if !named {
            errs.push(
                "server.default_site",
                format!("no route has a `host` matching \"{site}\": name a configured site"),
            );
        }
    }
    for r in routes.iter().filter(|r| r.sticky == Some(true)) {
        if upstreams
            .get(r.upstream().unwrap_or(usize::MAX))
            .is_some_and(|u| u.policy.sticky.is_none())
        {
            errs.push(
                format!("route_rules[{}].sticky", r.index),
                "the upstream has no `sticky = { cookie, secret }` to use",
            );
        }
    }
    if errs.list.is_empty() {
        Ok(Plan {
            source: file.to_path_buf(),
            server,
            upstreams,
            routes: RouteTable::new(routes).with_default_site(default_site),
            admin,
            limits,
            waf: waf.ok_or_else(|| ConfigErrors(vec![]))?,
            cache,
            tls,
            telemetry,
            compression,
            sites,
            doc: toml::Table::new(),
            tls_digest: 0,
            cluster,
        })
    } else {
        Err(ConfigErrors(errs.list))
    }
}

fn compile_server(errs: &mut Errors, base: &Path, s: ServerSection) -> ServerPlan {
    let listen_text = s.listen.unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()]);
    if listen_text.is_empty() {
        errs.push("server.listen", "at least one listen address is required");
    }
    let listen = listen_text
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errs.push(
                    format!("server.listen[{i}]"),
                    format!(
                        "\"{a}\" is not an IP:port address (e.g. \"0.0.0.0:8080\", \"[::]:8080\")"
                    ),
                );
                None
            }
        })
        .collect();
    let trusted_proxies = compile_cidrs(errs, "server.trusted_proxies", s.trusted_proxies);
    let error_page = s
        .error_page
        .and_then(|p| read_page(errs, "server.error_page", base, &p));
    let threads = match s.threads.unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let pid_file = s.pid_file.unwrap_or_else(|| "/tmp/bext.pid".into());
    ServerPlan {
        listen,
        threads,
        grace_period: s.grace_period.map_or(Duration::from_secs(30), |d| d.0),
        shutdown_timeout: s.shutdown_timeout.map_or(Duration::from_secs(5), |d| d.0),
        client_timeout: s.client_timeout.map_or(Duration::from_secs(60), |d| d.0),
        trusted_proxies,
        error_page,
        upgrade_sock: s
            .upgrade_sock
            .unwrap_or_else(|| "/tmp/bext_upgrade.sock".into()),
        error_log: s.error_log,
        user: s.user,
        group: s.group,
        keepalive_pool_size: s.keepalive_pool_size.unwrap_or(128),
        h2c: s.h2c.unwrap_or(false),
        state_file: s
            .state_file
            .map(|f| base.join(f))
            .unwrap_or_else(|| Path::new(&pid_file).with_extension("state.json")),
        pid_file,
    }
}

/// A page file (`server.error_page`, `maintenance_page`), relative to the
/// config file, at most 1 MiB.
pub(super) fn read_page(errs: &mut Errors, key: &str, base: &Path, p: &str) -> Option<Bytes> {
    let path = base.join(p);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_ERROR_PAGE => {
            errs.push(key, format!("{} is larger than 1 MiB", path.display()));
            None
        }
        _ => match std::fs::read(&path) {
            Ok(b) => Some(Bytes::from(b)),
            Err(e) => {
                errs.push(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        },
    }
}

fn compile_waf(
    errs: &mut Errors,
    w: crate::waf::config::WafSection,
) -> Option<std::sync::Arc<crate::waf::Waf>> {
    let plan = match crate::waf::config::compile(w) {
        Ok(p) => p,
        Err(list) => {
            for (k, r) in list {
                errs.push(k, r);
            }
            return None;
        }
    };
    match crate::waf::Waf::new(plan) {
        Ok(w) => Some(std::sync::Arc::new(w)),
        Err(e) => {
            errs.push("waf", e.to_string());
            None
        }
    }
}

fn compile_cache(errs: &mut Errors, c: CacheSection) -> CachePlan {
    let d = CachePlan::default();
    let plan = CachePlan {
        enabled: c.enabled.unwrap_or(d.enabled),
        max_size: c.max_size.map_or(d.max_size, |b| b.0),
        max_object_size: c.max_object_size.map_or(d.max_object_size, |b| b.0),
        expose_tags: c.expose_tags.unwrap_or(d.expose_tags),
        stale_while_revalidate: c
            .stale_while_revalidate
            .map_or(d.stale_while_revalidate, |v| v.0),
        stale_if_error: c.stale_if_error.map_or(d.stale_if_error, |v| v.0),
        lock_timeout: c.lock_timeout.map_or(d.lock_timeout, |v| v.0),
    };
    // The cache keeps whole bodies in memory; a budget below 64 KiB is a typo.
    if plan.max_size < 64 * 1024 {
        errs.push("cache.max_size", "must be at least 64KiB");
    }
    if plan.max_object_size == 0 || plan.max_object_size > plan.max_size {
        errs.push(
            "cache.max_object_size",
            format!(
                "must be between 1B and cache.max_size ({} bytes)",
                plan.max_size
            ),
        );
    }
    if plan.lock_timeout.is_zero() {
        errs.push("cache.lock_timeout", "must be greater than 0s");
    }
    for (key, v) in [
        ("cache.stale_while_revalidate", plan.stale_while_revalidate),
        ("cache.stale_if_error", plan.stale_if_error),
    ] {
        if v.as_secs() > u64::from(u32::MAX) {
            errs.push(key, "too long");
        }
    }
    plan
}

fn compile_cidrs(errs: &mut Errors, key: &str, list: Option<Vec<String>>) -> Vec<IpNet> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match parse_cidr(c) {
            Ok(n) => Some(n),
            Err(e) => {
                errs.push(format!("{key}[{i}]"), e);
                None
            }
        })
        .collect()
}

fn compile_admin(errs: &mut Errors, a: AdminSection) -> AdminAccess {
    let allow = compile_cidrs(errs, "admin.allow", a.allow);
    let token = a.token.and_then(|t| match resolve_secret(&t) {
        Ok(t) if t.len() >= 16 => Some(t),
        Ok(_) => {
            errs.push("admin.token", "too short: use at least 16 characters");
            None
        }
        Err(e) => {
            errs.push("admin.token", e);
            None
        }
    });
    AdminAccess { allow, token }
}

/// A secret value: `"env:VAR"` reads the environment variable VAR (so secrets
/// stay out of config files); anything else is the literal secret.
pub fn resolve_secret(value: &str) -> Result<String, String> {
    match value.strip_prefix("env:") {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!("environment variable {var} is not set")),
        },
        None => Ok(value.to_string()),
    }
}

/// `10.0.0.0/8`, `::1/128`, or a bare IP (a /32 or /128).
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("\"{s}\" is not a CIDR or IP address (e.g. \"10.0.0.0/8\")"))
}

fn compile_upstream(errs: &mut Errors, name: String, u: UpstreamSection) -> UpstreamPlan {
    let key = format!("upstreams.{name}");
    if u.nodes.is_empty() {
        errs.push(
            format!("{key}.nodes"),
            "at least one node address is required",
        );
    }
    let nodes = compile_nodes(&key, &u.nodes, resolve_node, &mut |k, r| errs.push(k, r));
    let policy = compile_policy(&key, &u, resolve_secret, &mut |k, r| errs.push(k, r));
    UpstreamPlan {
        name,
        nodes,
        connect_timeout: u.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
        read_timeout: u.read_timeout.map_or(Duration::from_secs(30), |d| d.0),
        write_timeout: u.write_timeout.map_or(Duration::from_secs(30), |d| d.0),
        idle_timeout: u.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
        policy,
    }
}

/// Node addresses are resolved once, here: resolving per request would block the
/// async runtime on DNS. Host names take their first address.
fn resolve_node(a: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = a.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!(
            "\"{a}\" is not HOST:PORT (e.g. \"127.0.0.1:4000\")"
        ));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "\"{a}\" is not HOST:PORT (e.g. \"127.0.0.1:4000\")"
        ));
    }
    match a.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("\"{a}\" resolved to no address")),
        Err(e) => Err(format!("cannot resolve \"{a}\": {e}")),
    }
}

fn compile_route(
    errs: &mut Errors,
    base: &Path,
    upstreams: &[&str],
    i: usize,
    r: RouteRule,
) -> Option<Route> {
    let key = format!("route_rules[{i}]");
    let before = errs.list.len();
    let pattern = Pattern::parse(&r.pattern)
        .map_err(|e| errs.push(format!("{key}.pattern"), e))
        .ok();
    let host = match r.host.as_deref().map(HostMatch::parse) {
        Some(Err(e)) => {
            errs.push(format!("{key}.host"), e);
            None
        }
        Some(Ok(h)) => Some(h),
        None => None,
    };
    let target = compile_target(errs, &key, base, upstreams, &r);
    let websocket = r.websocket.unwrap_or(false);
    if websocket && r.cache == Some(true) {
        errs.push(
            format!("{key}.cache"),
            "a websocket route is never cached; remove `cache = true` or set `websocket = false`",
        );
    }
    if r.cache_ttl.is_some() && (websocket || r.cache == Some(false)) {
        errs.push(
            format!("{key}.cache_ttl"),
            "this route is never cached (cache = false or websocket = true)",
        );
    }
    if r.cache_ttl
        .is_some_and(|t| t.0.as_secs() > u64::from(u32::MAX))
    {
        errs.push(format!("{key}.cache_ttl"), "too long");
    }
    let mut response_headers = Vec::with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        let n = HeaderName::from_bytes(name.as_bytes());
        let v = HeaderValue::from_str(value);
        match (n, v) {
            (Ok(n), Ok(v)) => response_headers.push((n, v)),
            (Err(_), _) => errs.push(
                format!("{key}.headers.{name}"),
                "not a valid HTTP header name",
            ),
            (_, Err(_)) => errs.push(
                format!("{key}.headers.{name}"),
                "value contains characters not allowed in an HTTP header",
            ),
        }
    }
    let header_policy = compile_header_policy(errs, &key, &r);
    let canonical_host = r.canonical_host.as_ref().and_then(|h| {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            errs.push(
                format!("{key}.canonical_host"),
                format!(
                    "\"{h}\" is not a host name (e.g. \"example.com\", no scheme, port or path)"
                ),
            );
        }
        ok.then(|| h.to_ascii_lowercase())
    });
    let trailing_slash = match r
        .trailing_slash
        .as_deref()
        .map(crate::redirect::TrailingSlash::parse)
    {
        None => Default::default(),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            errs.push(format!("{key}.trailing_slash"), e);
            Default::default()
        }
    };
    if !header_policy.is_empty() && matches!(target, Some(RouteTarget::Static(_))) {
        errs.push(
            format!("{key}.security_headers"),
            "security_headers and the request/response header lists apply to proxied routes only; use `headers` on a static route",
        );
    }
    let auth = r
        .auth
        .and_then(|a| super::sites::compile_auth(errs, &format!("{key}.auth"), a));
    if errs.list.len() != before {
        return None;
    }
    let compress =
        r.compress.unwrap_or(true) && !websocket && matches!(target, Some(RouteTarget::Proxy(_)));
    Some(Route {
        index: i,
        pattern_text: r.pattern,
        pattern: pattern?,
        host,
        cache: r.cache.unwrap_or(true)
            && !websocket
            && matches!(target, Some(RouteTarget::Proxy(_))),
        target: target?,
        cache_ttl: r.cache_ttl.map(|d| d.0),
        websocket,
        websocket_idle_timeout: r
            .websocket_idle_timeout
            .map_or(Duration::from_secs(300), |d| d.0),
        upstream_read_timeout: r.timeout.map(|d| d.0),
        sticky: r.sticky,
        response_headers,
        waf: r.waf.unwrap_or(true),
        compress,
        header_policy,
        trailing_slash,
        canonical_host,
        site: 0,
        auth,
    })
}

fn compile_header_policy(
    errs: &mut Errors,
    key: &str,
    r: &RouteRule,
) -> crate::header_policy::HeaderPolicy {
    let mut p = crate::header_policy::HeaderPolicy {
        security: r.security_headers.unwrap_or(false),
        ..Default::default()
    };
    let name = |errs: &mut Errors, k: String, n: &str| match HeaderName::from_bytes(n.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push(k, format!("\"{n}\" is not a valid HTTP header name"));
            None
        }
    };
    if let Some(v) = &r.permissions_policy {
        if !p.security {
            errs.push(
                format!("{key}.permissions_policy"),
                "is added with the security preset: set `security_headers = true` too",
            );
        }
        match HeaderValue::from_str(v) {
            Ok(v) => p.permissions_policy = Some(v),
            Err(_) => errs.push(
                format!("{key}.permissions_policy"),
                "value contains characters not allowed in an HTTP header",
            ),
        }
    }
    for (i, n) in r.response_headers_remove.iter().enumerate() {
        if let Some(n) = name(errs, format!("{key}.response_headers_remove[{i}]"), n) {
            p.response_remove.push(n);
        }
    }
    for (i, n) in r.request_headers_remove.iter().enumerate() {
        if let Some(n) = name(errs, format!("{key}.request_headers_remove[{i}]"), n) {
            p.request_remove.push(n);
        }
    }
    for (n, v) in &r.request_headers {
        let k = format!("{key}.request_headers.{n}");
        let Some(hn) = name(errs, k.clone(), n) else {
            continue;
        };
        // Framing and routing headers are bext's to set.
        if [
            http::header::HOST,
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
            http::header::CONNECTION,
        ]
        .contains(&hn)
        {
            errs.push(k, "bext sets this header itself; it cannot be configured");
            continue;
        }
        match HeaderValue::from_str(v) {
            Ok(v) => p.request_set.push((hn, v)),
            Err(_) => errs.push(k, "value contains characters not allowed in an HTTP header"),
        }
    }
    p
}

/// A route either proxies (`proxy`) or serves files (`render = "static"` with
/// `static_root`), never both.
fn compile_target(
    errs: &mut Errors,
    key: &str,
    base: &Path,
    upstreams: &[&str],
    r: &RouteRule,
) -> Option<RouteTarget> {
    if r.status.is_some() && r.redirect.is_none() {
        errs.push(format!("{key}.status"), "only used with `redirect = ...`");
    }
    if let Some(template) = &r.redirect {
        if r.proxy.is_some() || r.render.is_some() {
            errs.push(
                format!("{key}.redirect"),
                "a redirect route neither proxies nor renders: remove `proxy` / `render`",
            );
            return None;
        }
        return match crate::redirect::RedirectRule::parse(
            template,
            r.status.unwrap_or(308),
            r.host.is_some(),
        ) {
            Ok(rule) => Some(RouteTarget::Redirect(Arc::new(rule))),
            Err(e) => {
                let k = if e.starts_with("status") {
                    "status"
                } else {
                    "redirect"
                };
                errs.push(format!("{key}.{k}"), e);
                None
            }
        };
    }
    match (r.proxy.as_deref(), r.render.as_deref()) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{key}.render"),
                "a route either proxies or renders: remove `proxy` or `render`",
            );
            None
        }
        (None, None) => {
            errs.push(
                format!("{key}.proxy"),
                "missing: every route must name an upstream with `proxy = \"NAME\"`, \
                 serve files with `render = \"static\"` or redirect with `redirect = \"URL\"`",
            );
            None
        }
        (Some(name), None) => {
            for (k, set) in [
                ("static_root", r.static_root.is_some()),
                ("index", r.index.is_some()),
                ("fallback", r.fallback.is_some()),
            ] {
                if set {
                    errs.push(
                        format!("{key}.{k}"),
                        "only used with `render = \"static\"`; remove it from a proxy route",
                    );
                }
            }
            compile_upstream_ref(errs, key, upstreams, name).map(RouteTarget::Proxy)
        }
        (None, Some("static")) => compile_static(errs, key, base, r).map(RouteTarget::Static),
        (None, Some(other)) => {
            errs.push(
                format!("{key}.render"),
                format!("unknown renderer \"{other}\": only \"static\" is supported"),
            );
            None
        }
    }
}

fn compile_upstream_ref(
    errs: &mut Errors,
    key: &str,
    upstreams: &[&str],
    name: &str,
) -> Option<usize> {
    let found = upstreams.iter().position(|u| *u == name);
    if found.is_none() {
        errs.push(
            format!("{key}.proxy"),
            format!(
                "unknown upstream \"{name}\" (defined: {})",
                if upstreams.is_empty() {
                    "none".to_string()
                } else {
                    upstreams.join(", ")
                }
            ),
        );
    }
    found
}

/// `static_root` must be an existing directory (relative to the config file).
/// Keys that only mean something when proxying are refused rather than
/// silently ignored.
fn compile_static(
    errs: &mut Errors,
    key: &str,
    base: &Path,
    r: &RouteRule,
) -> Option<Arc<StaticRoot>> {
    let proxy_only = [
        ("websocket", r.websocket == Some(true)),
        ("cache", r.cache == Some(true)),
        ("timeout", r.timeout.is_some()),
        ("websocket_idle_timeout", r.websocket_idle_timeout.is_some()),
    ];
    for (name, set) in proxy_only {
        if set {
            errs.push(
                format!("{key}.{name}"),
                "not used by a `render = \"static\"` route (files are served from disk); remove it",
            );
        }
    }
    let Some(dir) = r.static_root.as_deref() else {
        errs.push(
            format!("{key}.static_root"),
            "missing: a `render = \"static\"` route needs `static_root = \"DIR\"` (e.g. \"priv/static\")",
        );
        return None;
    };
    match StaticRoot::open(&base.join(dir)) {
        Ok(root) => match root.with_site(r.index.as_deref(), r.fallback.as_deref()) {
            Ok(root) => Some(Arc::new(root)),
            Err((k, e)) => {
                errs.push(format!("{key}.{k}"), e);
                None
            }
        },
        Err(e) => {
            errs.push(format!("{key}.static_root"), e);
            None
        }
    }
}
