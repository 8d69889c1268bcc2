//! The HTTP decisions for one file, made from request headers and the file's
//! size and mtime: which precompressed encoding the client takes, the strong
//! ETag, conditional requests (304) and a single byte range (206/416). Pure:
//! no I/O, so every rule is unit-tested here.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{ACCEPT_ENCODING, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};
use http::{HeaderMap, Method};

/// A precompressed variant: `FILE.br`, `FILE.zst` or `FILE.gz` next to `FILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    /// In order of preference: brotli is smallest, zstd next.
    pub const ALL: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    /// The file name suffix of the variant.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => ".br",
            Encoding::Zstd => ".zst",
            Encoding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Which encodings the client accepts (`Accept-Encoding`, q > 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    br: bool,
    zstd: bool,
    gzip: bool,
}

impl Accepted {
    pub fn from_headers(headers: &HeaderMap) -> Accepted {
        let (mut br, mut zstd, mut gzip, mut any) = (None, None, None, None);
        for value in headers.get_all(ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let ok = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .next_back()
                    .is_none_or(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
                match name.as_str() {
                    "br" => br = Some(ok),
                    "zstd" => zstd = Some(ok),
                    "gzip" | "x-gzip" => gzip = Some(ok),
                    "*" => any = Some(ok),
                    _ => {}
                }
            }
        }
        // A named coding overrides `*`, whichever comes first.
        Accepted {
            br: br.or(any).unwrap_or(false),
            zstd: zstd.or(any).unwrap_or(false),
            gzip: gzip.or(any).unwrap_or(false),
        }
    }

    pub fn accepts(self, e: Encoding) -> bool {
        match e {
            Encoding::Br => self.br,
            Encoding::Zstd => self.zstd,
            Encoding::Gzip => self.gzip,
        }
    }
}

/// The validators of one representation (the plain file or one variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// A strong ETag with its quotes: size and mtime (to the nanosecond) of
    /// the file sent, plus its encoding so that a variant never shares a tag
    /// with different bytes.
    pub etag: String,
    pub modified: SystemTime,
}

impl Validators {
    pub fn new(len: u64, modified: SystemTime, encoding: Option<Encoding>) -> Validators {
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        let suffix = encoding.map_or(String::new(), |e| format!("-{}", e.token()));
        Validators {
            etag: format!(
                "\"{len:x}-{:x}.{:x}{suffix}\"",
                since.as_secs(),
                since.subsec_nanos()
            ),
            modified,
        }
    }

    /// `Last-Modified` value (HTTP dates have whole seconds).
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }

    fn modified_secs(&self) -> u64 {
        self.modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// What to send for a GET or HEAD of an existing file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    NotModified,
    Full,
    /// Inclusive byte positions, as in `Content-Range`.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn decide(method: &Method, headers: &HeaderMap, len: u64, v: &Validators) -> Reply {
    if not_modified(headers, v) {
        return Reply::NotModified;
    }
    // Range is defined for GET only; HEAD and an If-Range that no longer
    // matches get the whole representation.
    if method != Method::GET || !if_range_holds(headers, v) {
        return Reply::Full;
    }
    let Some(range) = headers.get(RANGE).and_then(|r| r.to_str().ok()) else {
        return Reply::Full;
    };
    match parse_range(range, len) {
        RangeSpec::Ignore => Reply::Full,
        RangeSpec::Unsatisfiable => Reply::Unsatisfiable,
        RangeSpec::Bytes(start, end) => Reply::Partial { start, end },
    }
}

/// If-None-Match (weak comparison) wins over If-Modified-Since, as RFC 9110 says.
fn not_modified(headers: &HeaderMap, v: &Validators) -> bool {
    let mut tags = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .peekable();
    if tags.peek().is_some() {
        let ours = v.etag.as_str();
        return tags.flat_map(|h| h.split(',')).any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == ours
        });
    }
    headers
        .get(IF_MODIFIED_SINCE)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| httpdate::parse_http_date(h).ok())
        .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|since| v.modified_secs() <= since.as_secs())
}

/// If-Range: the range applies only to the representation the client already
/// has part of (strong ETag match, or the exact Last-Modified date).
fn if_range_holds(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(cond) = headers.get(IF_RANGE).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let cond = cond.trim();
    if cond.starts_with('"') {
        return cond == v.etag;
    }
    if cond.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(cond)
        .ok()
        .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_secs() == v.modified_secs())
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Not a single `bytes=` range we understand: send the whole file (allowed
    /// by RFC 9110 for syntax we ignore and for multiple ranges).
    Ignore,
    Unsatisfiable,
    Bytes(u64, u64),
}

fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some((unit, spec)) = value.split_once('=') else {
        return RangeSpec::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if first.is_empty() {
        // `bytes=-N`: the last N bytes.
        return match number(last) {
            None => RangeSpec::Ignore,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if len == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(len.saturating_sub(n), len - 1),
        };
    }
    let Some(start) = number(first) else {
        return RangeSpec::Ignore;
    };
    let end = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(e) if e >= start => Some(e),
            _ => return RangeSpec::Ignore,
        }
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(start, end.map_or(len - 1, |e| e.min(len - 1)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    fn validators() -> Validators {
        Validators::new(1000, UNIX_EPOCH + Duration::new(1_700_000_000, 5), None)
    }

    #[test]
    fn accept_encoding_honours_q_zero_and_wildcard() {
        let a = Accepted::from_headers(&headers(&[("accept-encoding", "gzip, deflate, br")]));
        assert!(a.accepts(Encoding::Br) && a.accepts(Encoding::Gzip));
        let a = Accepted::from_headers(&headers(&[("accept-encoding", "br;q=0, gzip;q=0.5")]));
        assert!(!a.accepts(Encoding::Br) && a.accepts(Encoding::Gzip));
        let a = Accepted::from_headers(&headers(&[("accept-encoding", "*;q=1, gzip;q=0")]));
        assert!(a.accepts(Encoding::Br) && !a.accepts(Encoding::Gzip));
        let a = Accepted::from_headers(&headers(&[("accept-encoding", "identity")]));
        assert_eq!(a, Accepted::default());
        assert_eq!(
            Accepted::from_headers(&HeaderMap::new()),
            Accepted::default()
        );
    }

    #[test]
    fn etag_is_strong_and_differs_per_size_mtime_and_encoding() {
        let v = validators();
        assert!(v.etag.starts_with('"') && v.etag.ends_with('"'));
        let t = v.modified;
        assert_ne!(v.etag, Validators::new(1001, t, None).etag);
        assert_ne!(
            v.etag,
            Validators::new(1000, t + Duration::from_nanos(1), None).etag
        );
        assert_ne!(v.etag, Validators::new(1000, t, Some(Encoding::Gzip)).etag);
    }

    #[test]
    fn if_none_match_gives_304_and_overrides_if_modified_since() {
        let v = validators();
        let get = Method::GET;
        let tag = v.etag.clone();
        let h = headers(&[("if-none-match", &format!("\"x\", W/{tag}"))]);
        assert_eq!(decide(&get, &h, 1000, &v), Reply::NotModified);
        let h = headers(&[("if-none-match", "*")]);
        assert_eq!(decide(&get, &h, 1000, &v), Reply::NotModified);
        let later = httpdate::fmt_http_date(v.modified + Duration::from_secs(60));
        let h = headers(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", &later),
        ]);
        assert_eq!(decide(&get, &h, 1000, &v), Reply::Full);
    }

    #[test]
    fn if_modified_since_compares_whole_seconds() {
        let v = validators();
        let same = v.last_modified();
        let h = headers(&[("if-modified-since", &same)]);
        assert_eq!(decide(&Method::HEAD, &h, 1000, &v), Reply::NotModified);
        let earlier = httpdate::fmt_http_date(v.modified - Duration::from_secs(1));
        let h = headers(&[("if-modified-since", &earlier)]);
        assert_eq!(decide(&Method::GET, &h, 1000, &v), Reply::Full);
        let h = headers(&[("if-modified-since", "yesterday")]);
        assert_eq!(decide(&Method::GET, &h, 1000, &v), Reply::Full);
    }

    #[test]
    fn single_ranges_are_resolved_against_the_length() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeSpec::Bytes(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), RangeSpec::Bytes(900, 999));
        assert_eq!(
            parse_range("bytes=900-5000", 1000),
            RangeSpec::Bytes(900, 999)
        );
        assert_eq!(parse_range("bytes=-100", 1000), RangeSpec::Bytes(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), RangeSpec::Bytes(0, 999));
        assert_eq!(parse_range("Bytes = 5-5", 1000), RangeSpec::Bytes(5, 5));
    }

    #[test]
    fn unsatisfiable_and_unsupported_ranges() {
        assert_eq!(parse_range("bytes=1000-", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=a-b", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=+1-2", 1000), RangeSpec::Ignore);
    }

    #[test]
    fn range_applies_to_get_only_and_respects_if_range() {
        let v = validators();
        let h = headers(&[("range", "bytes=0-9")]);
        let part = Reply::Partial { start: 0, end: 9 };
        assert_eq!(decide(&Method::GET, &h, 1000, &v), part);
        assert_eq!(decide(&Method::HEAD, &h, 1000, &v), Reply::Full);
        let h = headers(&[("range", "bytes=0-9"), ("if-range", &v.etag)]);
        assert_eq!(decide(&Method::GET, &h, 1000, &v), part);
        let h = headers(&[("range", "bytes=0-9"), ("if-range", "\"stale\"")]);
        assert_eq!(decide(&Method::GET, &h, 1000, &v), Reply::Full);
        let h = headers(&[("range", "bytes=0-9"), ("if-range", &v.last_modified())]);
        assert_eq!(decide(&Method::GET, &h, 1000, &v), part);
        let h = headers(&[("range", "bytes=2000-")]);
        assert_eq!(decide(&Method::GET, &h, 1000, &v), Reply::Unsatisfiable);
    }
}
