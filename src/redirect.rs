//! The redirects a route answers with, decided per request by [`decide`]:
//! `canonical_host`, `trailing_slash`, and `redirect` rules. A
//! `redirect = "https://example.com{path}{query}"`
//! template is parsed once into pieces; per request it is filled with the
//! request's path, query and (only on routes that match a configured `host`)
//! host. What the request contributes can never move the redirect to another
//! site: the path's leading slashes are collapsed to one (no `//evil.com`),
//! `{host}` is only allowed where the route's host rule already vetted it,
//! and the result must be a valid header value (no CR/LF).

use pingora::http::RequestHeader;

use crate::routing::{request_host, strip_port};

/// What a route's redirect settings say about one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Pass,
    /// Answer with this status and `Location`.
    Redirect(u16, String),
    /// A redirect rule would produce an invalid `Location`: 400.
    Invalid,
}

/// The first of, in order: the canonical host (308), the trailing-slash
/// policy (308), the route's redirect rule.
pub fn decide(
    canonical_host: Option<&str>,
    slash: TrailingSlash,
    rule: Option<&RedirectRule>,
    scheme: &str,
    req: &RequestHeader,
) -> Decision {
    let host = request_host(req);
    if let Some(c) = canonical_host {
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(location) = canonical(c, scheme, host, pq) {
            return Decision::Redirect(308, location);
        }
    }
    if let Some(to) = slash.target(&req.method, req.uri.path()) {
        let location = match req.uri.query() {
            Some(q) => format!("{to}?{q}"),
            None => to,
        };
        return Decision::Redirect(308, location);
    }
    match rule {
        Some(r) => match r.location(req.uri.path(), req.uri.query(), host.unwrap_or("")) {
            Some(location) => Decision::Redirect(r.status, location),
            None => Decision::Invalid,
        },
        None => Decision::Pass,
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Path,
    /// `?` and the query, or nothing when there is none.
    Query,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectRule {
    pieces: Vec<Piece>,
    pub status: u16,
}

/// Redirect statuses a rule may use (308 by default: method and body kept).
pub const STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

impl RedirectRule {
    /// `host_vetted`: the route matches only configured hosts, so `{host}`
    /// is one of them.
    pub fn parse(template: &str, status: u16, host_vetted: bool) -> Result<RedirectRule, String> {
        if !STATUSES.contains(&status) {
            return Err(format!(
                "status {status} is not a redirect (301, 302, 303, 307, 308)"
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            if i > 0 {
                pieces.push(Piece::Lit(rest[..i].to_owned()));
            }
            let Some(end) = rest[i..].find('}') else {
                return Err(format!("unclosed `{{` in \"{template}\""));
            };
            let piece = match &rest[i + 1..i + end] {
                "path" => Piece::Path,
                "query" => Piece::Query,
                "host" if host_vetted => Piece::Host,
                "host" => {
                    return Err(
                        "{host} is only allowed on a route with `host = ...`: otherwise any Host header a client sends would become the redirect's target".to_owned(),
                    )
                }
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}: use {{path}}, {{query}} or {{host}}"
                    ))
                }
            };
            pieces.push(piece);
            rest = &rest[i + end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_owned()));
        }
        let start = match pieces.first() {
            Some(Piece::Lit(l)) => l.as_str(),
            Some(Piece::Path) => "/",
            _ => "",
        };
        let lower = start.to_ascii_lowercase();
        let absolute = lower.starts_with("https://") || lower.starts_with("http://");
        if !(absolute || (start.starts_with('/') && !start.starts_with("//"))) {
            return Err(format!(
                "\"{template}\" must start with https://, http:// or a single `/` (a path on this site)"
            ));
        }
        if absolute {
            let after = &start[start.find("//").map_or(0, |i| i + 2)..];
            if after.is_empty() && !matches!(pieces.get(1), Some(Piece::Host)) {
                return Err(format!("\"{template}\" has no host after the scheme"));
            }
        }
        if template.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("control characters or spaces in the template".to_owned());
        }
        Ok(RedirectRule { pieces, status })
    }

    /// The `Location` for a request; None if it would not be a valid header.
    pub fn location(&self, path: &str, query: Option<&str>, host: &str) -> Option<String> {
        let mut out = String::with_capacity(64 + path.len());
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Path => out.push_str(&single_leading_slash(path)),
                Piece::Query => {
                    if let Some(q) = query.filter(|q| !q.is_empty()) {
                        out.push('?');
                        out.push_str(q);
                    }
                }
                Piece::Host => out.push_str(host_only(host)?),
            }
        }
        let valid = out.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80);
        valid.then_some(out)
    }
}

/// `//evil.com/x` → `/evil.com/x` (and `/\\evil.com` → `/evil.com`, which
/// browsers also read as a network location): a path never becomes one.
pub(crate) fn single_leading_slash(path: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = path.trim_start_matches(['/', '\\']);
    if path.len() - trimmed.len() <= 1 && !path.starts_with('\\') {
        return std::borrow::Cow::Borrowed(path);
    }
    std::borrow::Cow::Owned(format!("/{trimmed}"))
}

/// The host name of a Host header (port dropped); None unless it is a plain
/// host name or IP literal.
fn host_only(host: &str) -> Option<&str> {
    let name = strip_port(host);
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    ok.then_some(name)
}

/// `canonical_host`: the `Location` for a request that reached the route
/// under another name, or None when it used the canonical one. The port the
/// client used is kept; the target host comes from the config only.
fn canonical(
    canonical: &str,
    scheme: &str,
    host: Option<&str>,
    path_and_query: &str,
) -> Option<String> {
    let host = host.unwrap_or("");
    let name = strip_port(host);
    let port = host[name.len()..]
        .strip_prefix(':')
        .filter(|p| !p.is_empty());
    if name.eq_ignore_ascii_case(canonical) {
        return None;
    }
    let mut out = format!("{scheme}://{canonical}");
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    out.push_str(path_and_query);
    out.bytes().all(|b| b.is_ascii_graphic()).then_some(out)
}

/// `trailing_slash` of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrailingSlash {
    #[default]
    Ignore,
    /// `/posts` → `/posts/` (paths whose last segment has a `.`, files, are left alone).
    Add,
    /// `/posts/` → `/posts`.
    Remove,
}

impl TrailingSlash {
    pub fn parse(s: &str) -> Result<TrailingSlash, String> {
        match s {
            "ignore" => Ok(TrailingSlash::Ignore),
            "add" => Ok(TrailingSlash::Add),
            "remove" => Ok(TrailingSlash::Remove),
            other => Err(format!("\"{other}\" is not one of add, remove, ignore")),
        }
    }

    /// The path this request should be redirected to, if any. Only for GET
    /// and HEAD: a form POST must never turn into a redirect.
    pub fn target(self, method: &http::Method, path: &str) -> Option<String> {
        if *method != http::Method::GET && *method != http::Method::HEAD {
            return None;
        }
        let new = match self {
            TrailingSlash::Ignore => return None,
            TrailingSlash::Add => {
                let last = path.rsplit('/').next().unwrap_or("");
                if path.ends_with('/') || last.contains('.') {
                    return None;
                }
                format!("{path}/")
            }
            TrailingSlash::Remove => {
                let trimmed = path.trim_end_matches('/');
                if trimmed.len() == path.len() || path == "/" {
                    return None;
                }
                if trimmed.is_empty() {
                    "/".to_owned()
                } else {
                    trimmed.to_owned()
                }
            }
        };
        Some(single_leading_slash(&new).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_and_never_leave_the_site() {
        let r = RedirectRule::parse("https://example.com{path}{query}", 308, false).unwrap();
        assert_eq!(
            r.location("/a/b", Some("x=1"), "www.example.com").unwrap(),
            "https://example.com/a/b?x=1"
        );
        assert_eq!(r.location("/", None, "x").unwrap(), "https://example.com/");
        // A path that looks like a network location stays a path.
        assert_eq!(
            r.location("//evil.com/x", None, "x").unwrap(),
            "https://example.com/evil.com/x"
        );
        let rel = RedirectRule::parse("{path}", 301, false).unwrap();
        assert_eq!(rel.location("//evil.com", None, "h").unwrap(), "/evil.com");
        assert_eq!(
            rel.location("/\\\\evil.com", None, "h").unwrap(),
            "/evil.com"
        );
        let host = RedirectRule::parse("https://{host}/new{path}", 302, true).unwrap();
        assert_eq!(
            host.location("/p", None, "Shop.Example.com:8080").unwrap(),
            "https://Shop.Example.com/new/p"
        );
        assert_eq!(host.location("/p", None, "evil.com/x?"), None);
    }

    #[test]
    fn bad_templates_are_refused() {
        for (t, host) in [
            ("example.com{path}", false),
            ("//example.com{path}", false),
            ("https://{host}{path}", false),
            ("https://example.com{pth}", false),
            ("https://example.com{path", false),
            ("https://", false),
            ("https://example.com/\r\nx", false),
            ("javascript:alert(1)", false),
        ] {
            assert!(RedirectRule::parse(t, 308, host).is_err(), "{t:?}");
        }
        assert!(RedirectRule::parse("https://example.com", 200, false).is_err());
    }

    #[test]
    fn decide_takes_the_canonical_host_first_then_slashes_then_the_rule() {
        let mut req = RequestHeader::build("GET", b"/docs/?x=1", None).unwrap();
        req.insert_header("host", "www.a.test").unwrap();
        let rule = RedirectRule::parse("/moved{path}", 302, false).unwrap();
        let d = |c, s, r| decide(c, s, r, "https", &req);
        assert_eq!(
            d(Some("a.test"), TrailingSlash::Remove, Some(&rule)),
            Decision::Redirect(308, "https://a.test/docs/?x=1".into())
        );
        assert_eq!(
            d(Some("www.a.test"), TrailingSlash::Remove, Some(&rule)),
            Decision::Redirect(308, "/docs?x=1".into())
        );
        assert_eq!(
            d(None, TrailingSlash::Ignore, Some(&rule)),
            Decision::Redirect(302, "/moved/docs/".into())
        );
        assert_eq!(d(None, TrailingSlash::Ignore, None), Decision::Pass);
    }

    #[test]
    fn canonical_hosts() {
        let c = |h: Option<&str>, pq: &str| canonical("example.com", "https", h, pq);
        assert_eq!(c(Some("example.com"), "/a"), None);
        assert_eq!(c(Some("EXAMPLE.com:8443"), "/a"), None);
        assert_eq!(
            c(Some("www.example.com"), "/a?b=1").as_deref(),
            Some("https://example.com/a?b=1")
        );
        assert_eq!(
            c(Some("www.example.com:8443"), "/").as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(
            c(Some("203.0.113.5"), "//evil.com").as_deref(),
            Some("https://example.com//evil.com")
        );
        assert_eq!(c(None, "/").as_deref(), Some("https://example.com/"));
        assert_eq!(
            c(Some("[::1]:8080"), "/").as_deref(),
            Some("https://example.com:8080/")
        );
    }

    #[test]
    fn trailing_slashes() {
        let get = http::Method::GET;
        assert_eq!(
            TrailingSlash::Add.target(&get, "/posts").as_deref(),
            Some("/posts/")
        );
        assert_eq!(TrailingSlash::Add.target(&get, "/posts/"), None);
        assert_eq!(TrailingSlash::Add.target(&get, "/assets/app.js"), None);
        assert_eq!(
            TrailingSlash::Remove.target(&get, "/posts/").as_deref(),
            Some("/posts")
        );
        assert_eq!(
            TrailingSlash::Remove.target(&get, "/posts//").as_deref(),
            Some("/posts")
        );
        assert_eq!(TrailingSlash::Remove.target(&get, "/"), None);
        assert_eq!(
            TrailingSlash::Remove.target(&get, "//").as_deref(),
            Some("/")
        );
        assert_eq!(
            TrailingSlash::Remove.target(&get, "//evil.com/").as_deref(),
            Some("/evil.com")
        );
        assert_eq!(
            TrailingSlash::Remove.target(&http::Method::POST, "/posts/"),
            None
        );
        assert_eq!(TrailingSlash::Ignore.target(&get, "/posts/"), None);
    }
}
