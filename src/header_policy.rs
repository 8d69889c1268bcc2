//! Leaf: a route's header policy, applied by the proxy's phases: the
//! security-header preset (`security_headers = true`), response headers
//! removed (`response_headers_remove`, e.g. `server`, `x-powered-by`), and
//! request headers set or removed on the way to Phoenix (`request_headers`,
//! `request_headers_remove`). The preset only fills in what the response
//! lacks: Phoenix's `put_secure_browser_headers` (or a CSP the app sets)
//! always wins.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// HSTS of the preset when `[tls] hsts` does not set one: one year.
const HSTS: &str = "max-age=31536000";

#[derive(Debug, Clone, Default)]
pub struct HeaderPolicy {
    /// The security-header preset.
    pub security: bool,
    /// `Permissions-Policy` added with the preset (when the response has none).
    pub permissions_policy: Option<HeaderValue>,
    /// Response headers removed before the client sees them.
    pub response_remove: Vec<HeaderName>,
    /// Request headers set (replacing the client's) on the way to Phoenix.
    pub request_set: Vec<(HeaderName, HeaderValue)>,
    /// Request headers removed on the way to Phoenix.
    pub request_remove: Vec<HeaderName>,
}

static STS: HeaderName = HeaderName::from_static("strict-transport-security");
static NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");
static REFERRER: HeaderName = HeaderName::from_static("referrer-policy");
static FRAME: HeaderName = HeaderName::from_static("x-frame-options");
static CSP: HeaderName = HeaderName::from_static("content-security-policy");
static PERMISSIONS: HeaderName = HeaderName::from_static("permissions-policy");

impl HeaderPolicy {
    /// Nothing to do on this route (the common case: one branch per request).
    pub fn is_empty(&self) -> bool {
        !self.security
            && self.response_remove.is_empty()
            && self.request_set.is_empty()
            && self.request_remove.is_empty()
    }

    /// `upstream_request_filter`.
    pub fn apply_request(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        for name in &self.request_remove {
            req.remove_header(name);
        }
        for (name, value) in &self.request_set {
            req.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    /// `response_filter` (also on cache hits). `tls`: the client connection is HTTPS.
    pub fn apply_response(&self, resp: &mut ResponseHeader, tls: bool) -> pingora::Result<()> {
        for name in &self.response_remove {
            resp.remove_header(name);
        }
        if !self.security {
            return Ok(());
        }
        let mut set_absent = |name: &HeaderName, value: HeaderValue| {
            if resp.headers.contains_key(name) {
                return Ok(());
            }
            resp.insert_header(name.clone(), value)
        };
        if tls {
            set_absent(&STS, HeaderValue::from_static(HSTS))?;
        }
        set_absent(&NOSNIFF, HeaderValue::from_static("nosniff"))?;
        set_absent(
            &REFERRER,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        )?;
        if let Some(p) = &self.permissions_policy {
            set_absent(&PERMISSIONS, p.clone())?;
        }
        // CSP `frame-ancestors` supersedes X-Frame-Options (and may allow
        // framing that SAMEORIGIN would forbid).
        let frame_ancestors = resp.headers.get_all(&CSP).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("frame-ancestors"))
        });
        if !frame_ancestors && !resp.headers.contains_key(&FRAME) {
            resp.insert_header(FRAME.clone(), HeaderValue::from_static("SAMEORIGIN"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn preset() -> HeaderPolicy {
        HeaderPolicy {
            security: true,
            permissions_policy: Some(HeaderValue::from_static("camera=()")),
            response_remove: vec![
                HeaderName::from_static("server"),
                HeaderName::from_static("x-powered-by"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_preset_fills_in_what_is_missing() {
        let mut r = resp(&[("server", "Cowboy"), ("x-powered-by", "Elixir")]);
        preset().apply_response(&mut r, true).unwrap();
        let h = &r.headers;
        assert_eq!(h["strict-transport-security"], HSTS);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
        assert_eq!(h["x-frame-options"], "SAMEORIGIN");
        assert_eq!(h["permissions-policy"], "camera=()");
        assert!(h.get("server").is_none() && h.get("x-powered-by").is_none());
        // No HSTS over plain HTTP.
        let mut r = resp(&[]);
        preset().apply_response(&mut r, false).unwrap();
        assert!(r.headers.get("strict-transport-security").is_none());
    }

    #[test]
    fn phoenix_headers_are_never_overridden() {
        let mut r = resp(&[
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("strict-transport-security", "max-age=60"),
        ]);
        preset().apply_response(&mut r, true).unwrap();
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        assert_eq!(r.headers["strict-transport-security"], "max-age=60");
        assert_eq!(r.headers.get_all("x-frame-options").iter().count(), 1);
        // A CSP with frame-ancestors means no X-Frame-Options.
        let mut r = resp(&[(
            "content-security-policy",
            "default-src 'self'; Frame-Ancestors https://a.test",
        )]);
        preset().apply_response(&mut r, true).unwrap();
        assert!(r.headers.get("x-frame-options").is_none());
    }

    #[test]
    fn request_headers_are_set_and_removed() {
        let p = HeaderPolicy {
            request_set: vec![(
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("staging"),
            )],
            request_remove: vec![HeaderName::from_static("x-debug")],
            ..Default::default()
        };
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("x-env", "prod").unwrap();
        r.insert_header("x-debug", "1").unwrap();
        p.apply_request(&mut r).unwrap();
        assert_eq!(r.headers["x-env"], "staging");
        assert!(r.headers.get("x-debug").is_none());
        assert!(HeaderPolicy::default().is_empty() && !p.is_empty());
    }
}
