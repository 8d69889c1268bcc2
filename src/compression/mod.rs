//! Edge compression of proxied responses (Brotli, zstd, gzip).
//!
//! This module owns three decisions and the encoder:
//! - which coding a request gets ([`CompressionPlan::negotiate`]): the
//!   client's `Accept-Encoding` with its q-values, `identity;q=0` and `*`,
//!   ties broken by the configured preference order (default br > zstd >
//!   gzip). The negotiated coding, not the raw header, is what the cache
//!   keys a compressed variant by, so each coding is compressed once per
//!   cache fill whatever browsers write in their headers;
//! - whether a response is compressed ([`CompressionPlan::eligible`]): only
//!   compressible types above `min_size`, never a response the origin
//!   encoded already, one with `Cache-Control: no-transform`, a 1xx, 204,
//!   206 or 304, or an answer to HEAD;
//! - the header changes a compressed body needs ([`apply_headers`]):
//!   `Content-Encoding`, `Vary: Accept-Encoding` merged, a strong `ETag` made
//!   weak (RFC 9110 §8.8.3: the bytes differ), `Content-Length` removed
//!   (the compressed length is not known until the end).
//!
//! [`Encoder`] compresses a body as it streams, flushing at each chunk the
//! origin sends (a streamed or long-polled answer is never held back), so its
//! memory is the coding's window and the chunk at hand, whatever the length.

mod edge;
mod encoder;

pub use edge::{CompressState, EdgeCompression};
pub use encoder::Encoder;

use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, VARY,
};
use pingora::http::ResponseHeader;

/// A content coding bext can produce (or `Identity`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coding {
    #[default]
    Identity,
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token (also the metric label and the cache variant).
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// A configured coding name; `x-gzip` is gzip (RFC 9110 §8.4.1.3).
    pub fn from_token(t: &str) -> Option<Coding> {
        if t.eq_ignore_ascii_case("br") {
            Some(Coding::Brotli)
        } else if t.eq_ignore_ascii_case("zstd") {
            Some(Coding::Zstd)
        } else if t.eq_ignore_ascii_case("gzip") || t.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else if t.eq_ignore_ascii_case("identity") {
            Some(Coding::Identity)
        } else {
            None
        }
    }
}

/// Compression levels per coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// 0..=11
    pub brotli: u32,
    /// 1..=19 (negative "fast" levels are not offered)
    pub zstd: i32,
    /// 1..=9
    pub gzip: u32,
}

impl Default for Levels {
    /// Chosen by `examples/compression_levels.rs` (README, "Compression"):
    /// the knee of bytes saved against CPU per response on a Phoenix page
    /// and a 200 KiB JSON answer.
    fn default() -> Levels {
        Levels {
            brotli: 4,
            zstd: 3,
            gzip: 5,
        }
    }
}

/// A `types` entry: `text/*`, `application/json`, or `application/*+json`
/// (any subtype ending in `+json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    /// `text/*`: the top-level type (lower case).
    Top(String),
    /// `application/*+json`: top-level type and subtype suffix.
    Suffix(String, String),
    /// `application/json`
    Exact(String),
}

impl TypePattern {
    pub fn parse(s: &str) -> Result<TypePattern, String> {
        let s = s.trim().to_ascii_lowercase();
        let (top, sub) = s.split_once('/').ok_or_else(|| {
            format!("\"{s}\" is not a media type (e.g. \"text/*\", \"application/json\")")
        })?;
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !token(top) {
            return Err(format!("\"{s}\": bad type \"{top}\""));
        }
        if sub == "*" {
            return Ok(TypePattern::Top(top.to_owned()));
        }
        if let Some(suffix) = sub.strip_prefix("*+") {
            if token(suffix) {
                return Ok(TypePattern::Suffix(top.to_owned(), format!("+{suffix}")));
            }
        }
        if token(sub) {
            Ok(TypePattern::Exact(s.clone()))
        } else {
            Err(format!("\"{s}\": bad subtype \"{sub}\""))
        }
    }

    fn matches(&self, top: &str, sub: &str) -> bool {
        match self {
            TypePattern::Top(t) => t.eq_ignore_ascii_case(top),
            TypePattern::Suffix(t, suffix) => {
                t.eq_ignore_ascii_case(top)
                    && sub.len() > suffix.len()
                    && sub[sub.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
            TypePattern::Exact(full) => {
                full.len() == top.len() + 1 + sub.len()
                    && full[..top.len()].eq_ignore_ascii_case(top)
                    && full[top.len() + 1..].eq_ignore_ascii_case(sub)
            }
        }
    }
}

/// The default compressible types: text, and the structured-text types a
/// Phoenix app sends (JSON APIs, JS, source maps, SVG, XML feeds, manifests)
/// plus wasm. Images, video, fonts in WOFF2 and archives are compressed already.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "application/x-ndjson",
    "application/graphql-response+json",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "font/ttf",
    "font/otf",
];

/// `[compression]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionPlan {
    /// Global switch (`enabled = false` turns every route's off).
    pub enabled: bool,
    /// Codings offered, most preferred first (never `Identity`).
    pub prefer: Vec<Coding>,
    pub types: Vec<TypePattern>,
    /// Responses with a known length below this stay identity.
    pub min_size: u64,
    pub levels: Levels,
}

impl Default for CompressionPlan {
    fn default() -> CompressionPlan {
        CompressionPlan {
            enabled: true,
            prefer: vec![Coding::Brotli, Coding::Zstd, Coding::Gzip],
            types: DEFAULT_TYPES
                .iter()
                .filter_map(|t| TypePattern::parse(t).ok())
                .collect(),
            min_size: 1024,
            levels: Levels::default(),
        }
    }
}

/// `Accept-Encoding` items looked at: a real browser sends 4 or 5; a header
/// of thousands is an attack and is not worth parsing past this.
const MAX_ITEMS: usize = 32;

/// What an `Accept-Encoding` says of the codings bext produces: the weight
/// of each (in thousandths, `None` when not mentioned) and of `*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Weights {
    q: [Option<u16>; 3],
    star: Option<u16>,
}

impl Weights {
    /// Adds one header value's items; false once [`MAX_ITEMS`] items were
    /// seen across the values (the rest is not looked at).
    fn add(&mut self, value: &[u8], items: &mut usize) -> bool {
        // Bytes, not `str`: header values are visible ASCII or they match
        // nothing here anyway.
        for item in value.split(|&b| b == b',') {
            *items += 1;
            if *items > MAX_ITEMS {
                return false;
            }
            let mut parts = item.split(|&b| b == b';');
            let name = parts.next().unwrap_or_default().trim_ascii();
            let slot = match name.len() {
                1 if name == b"*" => &mut self.star,
                2 if name.eq_ignore_ascii_case(b"br") => &mut self.q[0],
                4 if name.eq_ignore_ascii_case(b"zstd") => &mut self.q[1],
                4 if name.eq_ignore_ascii_case(b"gzip") => &mut self.q[2],
                6 if name.eq_ignore_ascii_case(b"x-gzip") => &mut self.q[2],
                _ => continue,
            };
            let mut weight = Some(1000);
            for p in parts {
                let p = p.trim_ascii();
                if p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=") {
                    weight = qvalue(&p[2..]);
                }
            }
            let Some(weight) = weight else { continue };
            // A repeated coding keeps its highest weight.
            *slot = Some(slot.map_or(weight, |w: u16| w.max(weight)));
        }
        true
    }

    /// The preferred coding among those with the highest weight.
    fn pick(&self, prefer: &[Coding]) -> Coding {
        let mut best = (0u16, Coding::Identity);
        for &c in prefer {
            let i = match c {
                Coding::Brotli => 0,
                Coding::Zstd => 1,
                Coding::Gzip => 2,
                Coding::Identity => continue,
            };
            let w = self.q[i].or(self.star).unwrap_or(0);
            // Strictly greater: among equal weights the earlier (preferred) wins.
            if w > best.0 {
                best = (w, c);
            }
        }
        best.1
    }
}

/// The last `Accept-Encoding` value each thread parsed, with its weights.
/// Browsers repeat theirs byte for byte, so a hit costs one comparison;
/// the configuration is not part of the memo (weights do not depend on it).
mod memo {
    use std::cell::RefCell;

    use super::Weights;

    /// Longer values are parsed every time (browsers send ~25 bytes).
    const MAX: usize = 64;

    struct Last {
        len: usize,
        value: [u8; MAX],
        weights: Weights,
    }

    thread_local! {
        static LAST: RefCell<Last> = const {
            RefCell::new(Last { len: usize::MAX, value: [0; MAX], weights: Weights { q: [None; 3], star: None } })
        };
    }

    pub(super) fn weights(value: &[u8]) -> Weights {
        let parse = |v: &[u8]| {
            let mut w = Weights::default();
            w.add(v, &mut 0);
            w
        };
        if value.len() > MAX {
            return parse(value);
        }
        LAST.with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return parse(value);
            };
            if last.len == value.len() && last.value[..value.len()] == *value {
                return last.weights;
            }
            let w = parse(value);
            last.value[..value.len()].copy_from_slice(value);
            last.len = value.len();
            last.weights = w;
            w
        })
    }
}

/// q-value in thousandths (RFC 9110 §12.4.2: at most three decimals); None
/// when malformed (the item is then ignored).
pub(crate) fn qvalue(s: &[u8]) -> Option<u16> {
    let s = s.trim_ascii();
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac.iter().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

impl CompressionPlan {
    /// The coding for a request with these headers (`Identity` when the
    /// client accepts none of the configured ones, or none at all).
    pub fn negotiate(&self, headers: &HeaderMap) -> Coding {
        if !self.enabled || self.prefer.is_empty() {
            return Coding::Identity;
        }
        let mut values = headers.get_all(ACCEPT_ENCODING).iter();
        let Some(first) = values.next() else {
            return Coding::Identity;
        };
        let weights = match values.next() {
            // The common case: one header, and a browser sends the same one
            // on every request, so its weights are remembered per thread.
            None => memo::weights(first.as_bytes()),
            Some(second) => {
                let mut w = Weights::default();
                let mut items = 0usize;
                for v in [first, second].into_iter().chain(values) {
                    if !w.add(v.as_bytes(), &mut items) {
                        break;
                    }
                }
                w
            }
        };
        weights.pick(&self.prefer)
    }

    /// Whether this response would be compressed for a client that asks:
    /// then its representation depends on `Accept-Encoding`, compressed or not.
    pub fn eligible(&self, method: &http::Method, resp: &ResponseHeader) -> bool {
        let status = resp.status.as_u16();
        if *method == http::Method::HEAD || status < 200 || matches!(status, 204 | 206 | 304) {
            return false;
        }
        let h = &resp.headers;
        let encoded = h.get_all(CONTENT_ENCODING).iter().any(|v| {
            v.to_str().map_or(true, |s| {
                s.split(',')
                    .any(|c| !c.trim().eq_ignore_ascii_case("identity") && !c.trim().is_empty())
            })
        });
        if encoded || h.contains_key(CONTENT_RANGE) {
            return false;
        }
        let no_transform = h.get_all(CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            })
        });
        if no_transform {
            return false;
        }
        if content_length(resp).is_some_and(|n| n < self.min_size) {
            return false;
        }
        let Some(ct) = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let mime = ct.split(';').next().unwrap_or("").trim();
        let Some((top, sub)) = mime.split_once('/') else {
            return false;
        };
        self.types.iter().any(|t| t.matches(top.trim(), sub.trim()))
    }
}

/// The head of a response bext compresses with `coding`.
pub fn apply_headers(resp: &mut ResponseHeader, coding: Coding) -> pingora::Result<()> {
    resp.insert_header(CONTENT_ENCODING, coding.as_str())?;
    resp.remove_header(&CONTENT_LENGTH);
    add_vary(resp)?;
    if let Some(etag) = resp.headers.get(ETAG) {
        let b = etag.as_bytes();
        if !b.starts_with(b"W/") {
            let mut weak = Vec::with_capacity(b.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(b);
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                resp.insert_header(ETAG, v)?;
            }
        }
    }
    Ok(())
}

/// Adds `Vary: Accept-Encoding` unless the response varies on it (or on `*`) already.
pub fn add_vary(resp: &mut ResponseHeader) -> pingora::Result<()> {
    let varies = resp.headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|n| {
                let n = n.trim();
                n == "*" || n.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !varies {
        resp.append_header(VARY, HeaderValue::from_static("Accept-Encoding"))?;
    }
    Ok(())
}

/// The response's `Content-Length`, when it has a valid one.
pub fn content_length(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a response head says its body is content-coded (other than identity).
pub fn content_coding(resp: &ResponseHeader) -> Option<&str> {
    let v = resp.headers.get(CONTENT_ENCODING)?.to_str().ok()?.trim();
    (!v.is_empty() && !v.eq_ignore_ascii_case("identity")).then_some(v)
}

#[cfg(test)]
mod tests;
