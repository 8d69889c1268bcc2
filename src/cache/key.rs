//! The cache key: method class + scheme + Host + path + normalized query, and
//! the `Vary` secondary key. Headers that are not part of the key never change
//! which entry a request gets, so unkeyed headers (`X-Forwarded-Host`,
//! `X-Original-URL`, ...) cannot poison what other clients receive.

use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::{CacheKey, CacheMeta, VarianceBuilder};
use pingora::http::RequestHeader;

/// Most `Vary` header names honoured; responses varying on more are not stored.
pub const MAX_VARY: usize = 8;

/// The parts of a request that select a cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    pub scheme: &'static str,
    /// Lower-cased; the port is kept as sent (a different port may render
    /// different absolute links, so it must not share an entry).
    pub host: String,
    pub path: String,
    /// Normalized: empty parameters dropped, stable-sorted by name.
    pub query: String,
}

impl KeyParts {
    pub fn from_request(req: &RequestHeader, scheme: &'static str) -> KeyParts {
        let host = crate::routing::request_host(req).unwrap_or("");
        KeyParts {
            scheme,
            host: host.to_ascii_lowercase(),
            path: req.uri.path().to_string(),
            query: normalize_query(req.uri.query().unwrap_or("")),
        }
    }

    /// Parses `https://host/path?q` (a purge-by-URL target).
    pub fn from_url(url: &str) -> Result<KeyParts, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("\"{url}\" is not a URL (expected https://host/path?query)"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            _ => return Err(format!("\"{url}\" must start with http:// or https://")),
        };
        let host = uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .ok_or_else(|| format!("\"{url}\" has no host"))?;
        Ok(KeyParts {
            scheme,
            host,
            path: if uri.path().is_empty() {
                "/".into()
            } else {
                uri.path().to_string()
            },
            query: normalize_query(uri.query().unwrap_or("")),
        })
    }

    /// HEAD shares GET's entries (served from them), so the method class is
    /// always GET: only GET and HEAD are ever looked up.
    pub fn primary(&self) -> String {
        format!(
            "GET\n{}\n{}\n{}?{}",
            self.scheme, self.host, self.path, self.query
        )
    }

    pub fn cache_key(&self) -> CacheKey {
        let mut key = CacheKey::new(self.primary(), "");
        // Pingora hashes the primary key (blake2b) again at every use: the
        // predictor, the lock, the lookup and the fill. Once is enough.
        let bin = key.primary_bin();
        key.set_primary_bin_override(bin);
        key
    }

    pub fn primary_hash(&self) -> HashBinary {
        self.cache_key().primary_bin()
    }

    /// The same resource under the other scheme: purge-by-URL removes both, so
    /// an application purging its public https URL also clears plain-http entries.
    pub fn with_scheme(&self, scheme: &'static str) -> KeyParts {
        KeyParts {
            scheme,
            ..self.clone()
        }
    }
}

/// `b=2&&a=1&a=0` → `a=1&a=0&b=2`: empty parameters dropped, stable sort by
/// name so repeated parameters keep their relative order (it can matter).
pub fn normalize_query(q: &str) -> String {
    let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_by_key(|p| p.split('=').next().unwrap_or(""));
    params.join("&")
}

/// The `Vary` header names of a stored response, lower-cased; `None` when it
/// varies on `*` or on more than [`MAX_VARY`] headers (such responses are not stored).
pub fn vary_names(headers: &http::HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for v in headers.get_all(http::header::VARY) {
        let text = v.to_str().ok()?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let lower = name.to_ascii_lowercase();
            if !names.contains(&lower) {
                names.push(lower);
            }
        }
    }
    (names.len() <= MAX_VARY).then_some(names)
}

/// The secondary key for a request against a stored response's `Vary`.
/// `accept_encoding`, when given, stands for the request's `Accept-Encoding`
/// (the coding bext negotiated), so clients that get the same coding share
/// one variant.
pub fn variance(
    meta: &CacheMeta,
    req: &RequestHeader,
    accept_encoding: Option<&str>,
) -> Option<HashBinary> {
    // The common case on compressing routes, on every hit: a response that
    // varies on Accept-Encoding alone. Its variants are the few codings, so
    // their hashes are worked out once (the same value the general path
    // gives) instead of parsing `Vary` and hashing per request.
    if let Some(coding) = accept_encoding {
        let mut vary = meta.headers().get_all(http::header::VARY).iter();
        if let (Some(v), None) = (vary.next(), vary.next()) {
            if v.as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"accept-encoding")
            {
                if let Some(h) = coding_variance(coding) {
                    return Some(h);
                }
            }
        }
    }
    let names = vary_names(meta.headers())?;
    if names.is_empty() {
        return None;
    }
    let mut b = VarianceBuilder::new();
    for name in names {
        let value: Vec<u8> = if name == "accept-encoding" {
            accept_encoding.map_or_else(
                || accept_encoding_class(req).into_bytes(),
                |c| c.as_bytes().to_vec(),
            )
        } else {
            let mut v = Vec::new();
            for (i, h) in req.headers.get_all(name.as_str()).iter().enumerate() {
                if i > 0 {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(h.as_bytes());
            }
            v
        };
        b.add_owned_name_value(name, value);
    }
    b.finalize()
}

/// The variance of a response that varies on `Accept-Encoding` only, for
/// each coding bext negotiates.
fn coding_variance(coding: &str) -> Option<HashBinary> {
    static TABLE: std::sync::LazyLock<[(&str, HashBinary); 4]> = std::sync::LazyLock::new(|| {
        ["identity", "br", "zstd", "gzip"].map(|c| {
            let mut b = VarianceBuilder::new();
            b.add_owned_name_value("accept-encoding".to_owned(), c.as_bytes().to_vec());
            // A builder with one name always finalizes to Some.
            (c, b.finalize().unwrap_or_default())
        })
    });
    TABLE.iter().find(|(c, _)| *c == coding).map(|(_, h)| *h)
}

/// Accept-Encoding reduced to the codings that matter (so `gzip, deflate, br`
/// and `br, gzip` share a variant instead of fragmenting the cache).
fn accept_encoding_class(req: &RequestHeader) -> String {
    let mut found: Vec<&'static str> = Vec::new();
    for h in req.headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(text) = h.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let known = match coding.as_str() {
                "br" => "br",
                "gzip" | "x-gzip" => "gzip",
                "zstd" => "zstd",
                "deflate" => "deflate",
                _ => continue,
            };
            if !refused && !found.contains(&known) {
                found.push(known);
            }
        }
    }
    found.sort_unstable();
    found.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        r
    }

    #[test]
    fn hosts_never_share_and_case_does_not_matter() {
        let a = KeyParts::from_request(&req("/p", "a.test"), "http");
        let b = KeyParts::from_request(&req("/p", "b.test"), "http");
        let a2 = KeyParts::from_request(&req("/p", "A.Test"), "http");
        assert_ne!(a.primary_hash(), b.primary_hash());
        assert_eq!(a.primary_hash(), a2.primary_hash());
        let port = KeyParts::from_request(&req("/p", "a.test:8080"), "http");
        assert_ne!(a.primary_hash(), port.primary_hash());
        assert_ne!(a.primary_hash(), a.with_scheme("https").primary_hash());
    }

    #[test]
    fn query_is_normalized() {
        assert_eq!(normalize_query("b=2&&a=1&a=0"), "a=1&a=0&b=2");
        let x = KeyParts::from_request(&req("/p?b=1&a=2", "h"), "http");
        let y = KeyParts::from_request(&req("/p?a=2&b=1&", "h"), "http");
        assert_eq!(x.primary_hash(), y.primary_hash());
        let z = KeyParts::from_request(&req("/p?a=3&b=1", "h"), "http");
        assert_ne!(x.primary_hash(), z.primary_hash());
    }

    #[test]
    fn url_parts_match_request_parts() {
        let u = KeyParts::from_url("http://A.test:8080/x?b=1&a=2").unwrap();
        let r = KeyParts::from_request(&req("/x?a=2&b=1", "a.test:8080"), "http");
        assert_eq!(u, r);
        assert!(KeyParts::from_url("/relative").is_err());
        assert!(KeyParts::from_url("ftp://h/x").is_err());
    }

    #[test]
    fn the_accept_encoding_fast_path_agrees_with_the_general_one() {
        let meta = |vary: &[&str]| {
            let mut h = pingora::http::ResponseHeader::build(200, None).unwrap();
            for v in vary {
                h.append_header("vary", *v).unwrap();
            }
            let now = std::time::SystemTime::now();
            CacheMeta::new(now, now, 0, 0, h)
        };
        let fast = meta(&[" Accept-Encoding "]);
        // Two values naming the same header take the general path.
        let slow = meta(&["Accept-Encoding", "accept-encoding"]);
        let r = req("/p", "a.test");
        let mut seen = Vec::new();
        for coding in ["identity", "br", "zstd", "gzip"] {
            let f = variance(&fast, &r, Some(coding));
            assert!(f.is_some());
            assert_eq!(f, variance(&slow, &r, Some(coding)), "{coding}");
            assert!(!seen.contains(&f));
            seen.push(f);
        }
    }

    #[test]
    fn vary_star_and_too_many_are_refused() {
        let mut h = http::HeaderMap::new();
        h.insert("vary", "Accept-Encoding, Accept-Language".parse().unwrap());
        assert_eq!(
            vary_names(&h).unwrap(),
            vec!["accept-encoding", "accept-language"]
        );
        h.insert("vary", "*".parse().unwrap());
        assert!(vary_names(&h).is_none());
        h.insert("vary", "a,b,c,d,e,f,g,h,i".parse().unwrap());
        assert!(vary_names(&h).is_none());
    }

    #[test]
    fn accept_encoding_classes() {
        let mut r = req("/", "h");
        r.insert_header("accept-encoding", "gzip, deflate, br;q=0")
            .unwrap();
        assert_eq!(accept_encoding_class(&r), "deflate,gzip");
        r.insert_header("accept-encoding", "br, gzip").unwrap();
        assert_eq!(accept_encoding_class(&r), "br,gzip");
    }
}
