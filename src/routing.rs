//! The compiled route table: `host` + path pattern → [`Route`]. First match wins,
//! in config order. Matching allocates nothing; it runs on every request.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::static_files::StaticRoot;

/// Index of an upstream pool in the plan (`Plan::upstreams[id]`).
pub type UpstreamId = usize;

/// What answers the requests of a route.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// `proxy = "NAME"`: forwarded to that upstream pool.
    Proxy(UpstreamId),
    /// `render = "static"`: files under `static_root`, answered in `request_filter`.
    Static(Arc<StaticRoot>),
    /// `redirect = "https://example.com{path}{query}"`: answered with a
    /// redirect in `request_filter`.
    Redirect(Arc<crate::redirect::RedirectRule>),
}

/// A path pattern from `route_rules[].pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `/*`: every path.
    Any,
    /// `/live/*`: `/live` itself and everything below `/live/`. Holds `/live`.
    Prefix(String),
    /// `/health`: exactly that path.
    Exact(String),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        if !s.starts_with('/') {
            return Err(format!("pattern \"{s}\" must start with \"/\""));
        }
        if s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!(
                "pattern \"{s}\" contains whitespace or control characters"
            ));
        }
        if s == "/*" {
            return Ok(Pattern::Any);
        }
        if let Some(prefix) = s.strip_suffix("/*") {
            if prefix.contains('*') {
                return Err(format!(
                    "pattern \"{s}\": only a trailing \"/*\" wildcard is supported"
                ));
            }
            return Ok(Pattern::Prefix(prefix.to_string()));
        }
        if s.contains('*') {
            return Err(format!(
                "pattern \"{s}\": only a trailing \"/*\" wildcard is supported"
            ));
        }
        Ok(Pattern::Exact(s.to_string()))
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(p) => path == p,
            Pattern::Prefix(p) => match path.strip_prefix(p.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
        }
    }
}

/// A `host` from a route rule: exact (`example.com`) or a wildcard (`*.example.com`,
/// one or more labels). Stored lower-case; compared case-insensitively, port ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// Holds the suffix including the dot: `.example.com`.
    Wildcard(String),
}

impl HostMatch {
    pub fn parse(s: &str) -> Result<HostMatch, String> {
        let lower = s.trim().to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if let Some(suffix) = lower.strip_prefix("*.") {
            if valid(suffix) {
                return Ok(HostMatch::Wildcard(format!(".{suffix}")));
            }
        } else if valid(&lower) {
            return Ok(HostMatch::Exact(lower));
        }
        Err(format!(
            "host \"{s}\" is not a host name (expected e.g. \"example.com\" or \"*.example.com\", no port)"
        ))
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// The host a request is for: its `Host` header, or the URI authority (HTTP/2, absolute-form).
pub fn request_host(req: &pingora::http::RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// The site a route belongs to, as `bext check` and `[sites."NAME"]` name
/// it: its host (`example.com`, `*.example.com`), or `*` without one.
pub fn site_name(host: Option<&HostMatch>) -> String {
    match host {
        None => "*".to_owned(),
        Some(HostMatch::Exact(h)) => h.clone(),
        Some(HostMatch::Wildcard(suffix)) => format!("*{suffix}"),
    }
}

/// One compiled route rule.
#[derive(Debug)]
pub struct Route {
    /// Position in the config (`route_rules[index]`), for logs and metrics.
    pub index: usize,
    /// The pattern as the user wrote it.
    pub pattern_text: String,
    pub pattern: Pattern,
    pub host: Option<HostMatch>,
    pub target: RouteTarget,
    pub cache: bool,
    /// Overrides the origin's freshness lifetime for cacheable responses.
    pub cache_ttl: Option<Duration>,
    pub websocket: bool,
    pub websocket_idle_timeout: Duration,
    /// Overrides the upstream's `read_timeout` for this route.
    pub upstream_read_timeout: Option<Duration>,
    /// `sticky = true|false` on the rule; `None` follows the upstream's `sticky`.
    pub sticky: Option<bool>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The WAF inspects requests on this route (`waf = false` turns it off).
    pub waf: bool,
    /// Proxied responses may be compressed (`compress = false` turns it off;
    /// never on websocket or static routes).
    pub compress: bool,
    /// Security preset, response headers removed, request headers set/removed.
    pub header_policy: crate::header_policy::HeaderPolicy,
    /// `trailing_slash = "add" | "remove"`: GET/HEAD redirected to the canonical path.
    pub trailing_slash: crate::redirect::TrailingSlash,
    /// `canonical_host`: other host names of the route get a 308 to this one.
    pub canonical_host: Option<String>,
    /// Index of the route's site (`Plan::sites`, [`site_name`]).
    pub site: usize,
    /// Staging protection: the route's `auth`, else its site's.
    pub auth: Option<Arc<crate::auth::AuthPlan>>,
}

impl Route {
    /// The upstream pool, or `None` for a static route (which never proxies).
    pub fn upstream(&self) -> Option<UpstreamId> {
        match self.target {
            RouteTarget::Proxy(id) => Some(id),
            RouteTarget::Static(_) | RouteTarget::Redirect(_) => None,
        }
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(h) = &self.host {
            match host {
                Some(host) if h.matches(host) => {}
                _ => return false,
            }
        }
        self.pattern.matches(path)
    }
}

/// Routes in config order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    /// `server.default_site`: the host whose routes answer requests for a
    /// host no route names.
    default_site: Option<String>,
}

/// What the routes say about a request.
pub enum Lookup<'a> {
    Route(&'a Arc<Route>),
    /// The host is one of the configured sites, but no route matches the path.
    NoRoute,
    /// No route is for this host (and there is no `default_site`): 421.
    UnknownHost,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        RouteTable {
            routes: routes.into_iter().map(Arc::new).collect(),
            default_site: None,
        }
    }

    pub fn with_default_site(mut self, site: Option<String>) -> RouteTable {
        self.default_site = site;
        self
    }

    /// The first route matching `host` (the request's Host, may carry a port) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(host, path))
    }

    /// [`find`](Self::find), telling a path no route serves from a host no
    /// route is for; the latter goes to `default_site` when one is set.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Lookup<'_> {
        if let Some(r) = self.find(host, path) {
            return Lookup::Route(r);
        }
        let known = self.routes.iter().any(|r| match (&r.host, host) {
            (None, _) => true,
            (Some(h), Some(host)) => h.matches(host),
            (Some(_), None) => false,
        });
        if known {
            return Lookup::NoRoute;
        }
        match &self.default_site {
            Some(site) => self
                .find(Some(site), path)
                .map_or(Lookup::NoRoute, Lookup::Route),
            None => Lookup::UnknownHost,
        }
    }

    /// The configured hosts (sites) and how many routes each has; `*` for
    /// routes that answer any host.
    pub fn sites(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for r in &self.routes {
            let name = site_name(r.host.as_ref());
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, n)) => *n += 1,
                None => out.push((name, 1)),
            }
        }
        out
    }

    /// The route patterns in config order (metric labels).
    pub fn patterns(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.pattern_text.clone()).collect()
    }

    pub fn default_site(&self) -> Option<&str> {
        self.default_site.as_deref()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(index: usize, pattern: &str, host: Option<&str>) -> Route {
        Route {
            index,
            pattern_text: pattern.into(),
            pattern: Pattern::parse(pattern).unwrap(),
            host: host.map(|h| HostMatch::parse(h).unwrap()),
            target: RouteTarget::Proxy(0),
            cache: true,
            cache_ttl: None,
            websocket: false,
            websocket_idle_timeout: Duration::from_secs(300),
            upstream_read_timeout: None,
            sticky: None,
            response_headers: vec![],
            waf: true,
            compress: true,
            header_policy: Default::default(),
            trailing_slash: Default::default(),
            canonical_host: None,
            site: 0,
            auth: None,
        }
    }

    #[test]
    fn prefix_matches_itself_and_below_but_not_siblings() {
        let p = Pattern::parse("/live/*").unwrap();
        assert!(p.matches("/live"));
        assert!(p.matches("/live/websocket"));
        assert!(!p.matches("/liveview"));
        assert!(!p.matches("/"));
    }

    #[test]
    fn first_match_wins_and_no_match_is_none() {
        let t = RouteTable::new(vec![route(0, "/live/*", None), route(1, "/health", None)]);
        assert_eq!(t.find(None, "/live/websocket").unwrap().index, 0);
        assert_eq!(t.find(None, "/health").unwrap().index, 1);
        assert!(t.find(None, "/health/x").is_none());
        let t = RouteTable::new(vec![route(0, "/*", None), route(1, "/live/*", None)]);
        assert_eq!(t.find(None, "/live/websocket").unwrap().index, 0);
    }

    #[test]
    fn host_rules_ignore_case_and_port() {
        let t = RouteTable::new(vec![
            route(0, "/*", Some("a.example.com")),
            route(1, "/*", Some("*.example.com")),
        ]);
        assert_eq!(t.find(Some("A.Example.COM:8443"), "/").unwrap().index, 0);
        assert_eq!(t.find(Some("b.example.com"), "/").unwrap().index, 1);
        assert!(t.find(Some("example.com"), "/").is_none());
        assert!(t.find(None, "/").is_none());
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::parse("live/*").is_err());
        assert!(Pattern::parse("/a/*/b").is_err());
        assert!(Pattern::parse("/a*").is_err());
        assert!(HostMatch::parse("example.com:80").is_err());
    }

    #[test]
    fn strip_port_handles_ipv6() {
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
