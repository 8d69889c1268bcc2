//! The protocol pass: one walk over the request head that checks it against
//! the grammar and the rules of RFC 9110 (semantics) and RFC 9112 (HTTP/1.1
//! messages), the way the OWASP CRS 920 / 921 families do with regexes, but
//! by parsing: the request line (method token, request-target form and
//! characters, version), then every header field once (names, empty values,
//! singleton fields sent twice, the syntax of the fields whose meaning a
//! server or a proxy acts on), then the checks that need several fields
//! (Host against the target, framing, Content-Type, ranges, Expect,
//! Upgrade, Connection).
//!
//! What reaches this pass: Pingora's HTTP/1 parser (httparse) has already
//! refused malformed request lines, header names that are not tokens, CR, LF,
//! NUL and other control bytes in field values, obs-fold, an unparseable or
//! differing Content-Length, a Transfer-Encoding whose last coding is not
//! `chunked`, and an absolute-form authority that differs from Host;
//! `limits::hygiene` refuses CL together with TE, repeated Content-Length,
//! bare-LF line endings, and `limits::sizes` bounds the number and size of
//! header fields (431). The checks below are kept anyway where they are
//! cheap (HTTP/2 and HTTP/3 heads take another road here), and say so.
//!
//! Every check is a single forward scan of one value, bounded by the head
//! size limits: nothing here backtracks or allocates per byte.

use http::request::Parts;
use http::{HeaderName, Method, Version};

use super::inspect::Pass;
use super::protocol;

/// The request line as received (HTTP/1 only): method, request-target (with
/// any fragment Pingora strips before the `Uri` is built) and version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLine<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: &'a [u8],
}

impl<'a> RequestLine<'a> {
    /// The first line of a raw HTTP/1 head; `None` when it is not three
    /// fields (the parser would not have let it through).
    pub(crate) fn parse(raw_head: &'a [u8]) -> Option<RequestLine<'a>> {
        let end = raw_head
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(raw_head.len());
        let line = raw_head[..end]
            .strip_suffix(b"\r")
            .unwrap_or(&raw_head[..end]);
        let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(RequestLine {
            method,
            target,
            version,
        })
    }
}

/// Singleton fields (RFC 9110: not list-valued): a second copy is read by one
/// parser and ignored or joined with a comma by the next (CRS 920620 for
/// Content-Type; Host and Authorization confusion for routing and auth).
/// Cookie is not here: HTTP/2 clients split it into one field per crumb.
fn singleton(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-type"
            | "content-length"
            | "content-range"
            | "authorization"
            | "proxy-authorization"
            | "range"
            | "if-range"
            | "if-modified-since"
            | "if-unmodified-since"
            | "max-forwards"
            | "origin"
            | "referer"
            | "user-agent"
            | "from"
    )
}

/// Fields whose grammar needs a value (a product, a media type, a range,
/// credentials, an origin, digits): an empty one is a malformed field, sent
/// by tools that template heads, never by a browser. List fields whose
/// grammar (`#`) allows an empty list (Accept, Connection, Expect, Upgrade)
/// and Referer (a partial-URI may be empty) are not here; Transfer-Encoding
/// is, although a list: an empty one leaves the framing to each parser's
/// guess. An empty Host is its own check (920250).
fn needs_value(name: &str) -> bool {
    matches!(
        name,
        "user-agent"
            | "content-type"
            | "content-length"
            | "transfer-encoding"
            | "range"
            | "if-range"
            | "content-range"
            | "origin"
            | "authorization"
    )
}

/// Connection options that name a field end to end semantics depend on:
/// a proxy that honours `Connection: X-Forwarded-For` (or Host,
/// Content-Length, Authorization, ...) deletes that field before forwarding
/// (hop-by-hop header abuse: dropped client-IP, auth or framing headers).
/// `HTTP2-Settings` belongs to the h2c upgrade (see `upgrade`).
fn end_to_end(option: &[u8]) -> bool {
    const NAMES: &[&[u8]] = &[
        b"host",
        b"content-length",
        b"content-type",
        b"authorization",
        b"proxy-authorization",
        b"cookie",
        b"forwarded",
        b"x-real-ip",
        b"x-csrf-token",
        b"origin",
        b"referer",
        b"http2-settings",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(option))
        || (option.len() > 12 && option[..12].eq_ignore_ascii_case(b"x-forwarded-"))
}

/// Longest Accept, Accept-Language or Accept-Charset value (see 920220).
const MAX_ACCEPT: usize = 1024;

/// What the field loop saw, for the checks that need several fields.
#[derive(Default)]
struct Seen<'a> {
    host: Option<&'a [u8]>,
    hosts: usize,
    content_type: Option<&'a [u8]>,
    content_types: usize,
    content_lengths: Vec<&'a [u8]>,
    transfer_encodings: Vec<&'a [u8]>,
    connection: Vec<&'a [u8]>,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    expect: Option<&'a [u8]>,
    upgrade: Option<&'a [u8]>,
}

/// The protocol pass over the head (see the module comment). `line` is the
/// raw request line for HTTP/1 requests, `None` otherwise.
pub(super) fn check(pass: &mut Pass, req: &Parts, line: Option<RequestLine>) {
    request_line(pass, req, line);
    let seen = fields(pass, req);
    host(pass, req, line, &seen);
    framing(pass, req, &seen);
    if let Some(ct) = seen.content_type {
        content_type(pass, req, ct, seen.content_types);
    }
    ranges(pass, &seen);
    expect(pass, req, &seen);
    upgrade(pass, req, &seen);
    connection(pass, &seen);
}

// ---- request line ----------------------------------------------------------

fn request_line(pass: &mut Pass, req: &Parts, line: Option<RequestLine>) {
    let method = req.method.as_str().as_bytes();
    // 920230 (CRS 920100, invalid request line): a method is a token (RFC
    // 9110 §9.1). httparse checks this on HTTP/1; an HTTP/2 `:method` is
    // only checked by `http::Method`, which takes any token too, so this is
    // a guard for the forms the parser let through.
    if method.is_empty() || !method.iter().copied().all(tchar) {
        pass.hit(920230, "method", b"", method, 0, false);
    }
    // 920230 (CRS 920430, version not allowed): HTTP/0.9 has no head at all
    // (no Host, no framing) and anything newer than 1.1 on an HTTP/1
    // connection is a probe of the parser; HTTP/2 and 3 arrive as such.
    if req.version == Version::HTTP_09 {
        pass.hit(920230, "version", b"", b"HTTP/0.9", 0, false);
    }
    if let Some(l) = line {
        if !matches!(l.version, b"HTTP/1.1" | b"HTTP/1.0") {
            pass.hit(920230, "version", b"", l.version, 0, false);
        }
        if l.method != method {
            pass.hit(920230, "method", b"", l.method, 0, false);
        }
    }
    let target: &[u8] = match line {
        Some(l) => l.target,
        // Without a raw line (HTTP/2, tests) the target is the path and query
        // of the `Uri`: `:scheme`/`:authority` are not a request-target form.
        None => req
            .uri
            .path_and_query()
            .map_or(b"/".as_slice(), |pq| pq.as_str().as_bytes()),
    };
    request_target(pass, &req.method, target, line.is_some());
}

/// 920240: the request-target must be in the form the method calls for (RFC
/// 9112 §3.2) and hold only what a URI may (RFC 3986).
fn request_target(pass: &mut Pass, method: &Method, t: &[u8], raw: bool) {
    let bad = |pass: &mut Pass, why: &[u8]| pass.hit(920240, "target", b"", why, 0, false);
    // 920242 (CRS 920610): a fragment is never part of a request-target
    // (RFC 9112 §3.2); servers that keep it disagree with those that strip
    // it about the path (a rule sees `/a`, the app `/a#/../admin`). Pingora
    // strips it before anything is forwarded, so behind bext that evasion
    // does not land: a warning, for the non-browser client it reveals.
    let frag = t.iter().position(|&b| b == b'#');
    if frag.is_some() {
        pass.hit(920242, "target", b"", t, 0, false);
    }
    let t = &t[..frag.unwrap_or(t.len())];
    // Bytes that are not UTF-8 reach Phoenix verbatim while every rule saw a
    // lossy copy (Pingora keeps both): the same class as broken UTF-8 in the
    // decoded path (920055).
    if raw && std::str::from_utf8(t).is_err() {
        pass.hit(920055, "target", b"", t, 0, false);
    }
    // 920245 (CRS 920220, URL encoding abuse): a `%` that does not start a
    // percent-encoded octet; decoders differ on what it means.
    if let Some(i) = bad_percent(t) {
        pass.hit(920245, "target", b"", t, i, false);
    }
    let path = if t == b"*" {
        // asterisk-form is for a server-wide OPTIONS only (§3.2.4).
        if method != Method::OPTIONS {
            bad(pass, t);
        }
        return;
    } else if t.first() == Some(&b'/') {
        t
    } else if let Some(rest) = absolute_form(t) {
        match rest {
            Ok(path) => path,
            Err(()) => {
                // An absolute-form target that is not an http(s) URI with a
                // host and a path (CRS 920100's grammar): a forward-proxy
                // request (`GET http://other`, `GET ftp://...`) or userinfo
                // meant to make two parsers pick different hosts. bext is
                // not a forward proxy.
                bad(pass, t);
                return;
            }
        }
    } else {
        // authority-form belongs to CONNECT (§3.2.3), refused anyway; any
        // other shape here is no request-target at all.
        if method != Method::CONNECT {
            bad(pass, t);
        }
        return;
    };
    let path = &path[..path.iter().position(|&b| b == b'?').unwrap_or(path.len())];
    // A backslash is not a URI character; browsers turn it into `/`, and
    // servers that do the same behind a rule that did not (IIS, some
    // routers) see a different path (traversal and access-rule bypass).
    if path.contains(&b'\\') {
        bad(pass, path);
    }
}

/// For an absolute-form target (`scheme://...`): `Ok(path-and-query)` when it
/// is an `http`/`https` URI with a non-empty host, no userinfo, and a path
/// starting with `/`; `Err` when it is absolute-form but not that; `None`
/// when it is not absolute-form at all.
fn absolute_form(t: &[u8]) -> Option<Result<&[u8], ()>> {
    let colon = t.iter().position(|&b| b == b':')?;
    let scheme = &t[..colon];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let rest = t[colon..].strip_prefix(b"://")?;
    if !scheme_ok {
        return None;
    }
    let http = scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if !http || authority.is_empty() || authority.contains(&b'@') || path.first() != Some(&b'/') {
        return Some(Err(()));
    }
    Some(Ok(path))
}

/// The offset of the first `%` not followed by two hex digits.
pub(super) fn bad_percent(s: &[u8]) -> Option<usize> {
    s.iter().enumerate().find_map(|(i, &b)| {
        let ok = b != b'%'
            || s.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        (!ok).then_some(i)
    })
}

// ---- header fields ---------------------------------------------------------

/// One pass over the header fields: the per-field checks, and what the
/// cross-field checks need.
fn fields<'a>(pass: &mut Pass, req: &'a Parts) -> Seen<'a> {
    let mut seen = Seen::default();
    let mut singletons: Vec<&HeaderName> = Vec::new();
    for (name, value) in &req.headers {
        let n = name.as_str();
        let v = value.as_bytes().trim_ascii();
        // 920280 (CRS 920620 and its siblings): a singleton field twice.
        // Reported once per name; the list holds at most the names above.
        if singleton(n) && n != "content-type" {
            if singletons.contains(&name) {
                pass.hit(920280, "header", n.as_bytes(), v, 0, false);
            } else {
                singletons.push(name);
            }
        }
        // 920285 (CRS 920330, empty User-Agent, and its kind): an empty
        // value where the field's grammar needs one.
        if v.is_empty() && needs_value(n) {
            pass.hit(920285, "header", n.as_bytes(), b"", 0, false);
        }
        match n {
            "host" => {
                seen.hosts += 1;
                seen.host.get_or_insert(v);
            }
            "content-type" => {
                seen.content_types += 1;
                seen.content_type.get_or_insert(v);
            }
            "content-length" => seen.content_lengths.push(v),
            "transfer-encoding" => seen.transfer_encodings.push(v),
            "connection" => seen.connection.push(v),
            "range" => seen.range = Some(v),
            "if-range" => seen.if_range = Some(v),
            "expect" => seen.expect = Some(v),
            "upgrade" => seen.upgrade = Some(v),
            "user-agent" => {
                if let Some(m) = pass.waf.scanners.find(v) {
                    let s = protocol::scanner_name(m.pattern().as_usize());
                    pass.hit(913010, "header", b"user-agent", s.as_bytes(), 0, false);
                }
            }
            // 920275 (CRS 920450 lists Content-Range): a request may carry
            // one only to describe a partial body (resumable PUT uploads use
            // it); a value that is not a byte range is aimed at the parser
            // of whatever handles partial content.
            "content-range" if !v.is_empty() && !content_range_ok(v) => {
                pass.hit(920275, "header", b"content-range", v, 0, false)
            }
            // 920220 (CRS 920520, CVE-2022-21907): browsers send a handful of
            // codings; past 100 bytes, or outside `coding[;q=qvalue]`, the
            // header is a probe of the server's parser.
            "accept-encoding" if v.len() > 100 || !accept_encoding_ok(v) => {
                pass.hit(920220, "header", b"accept-encoding", v, 0, false)
            }
            // 920220: the other negotiation headers are parsed by the app
            // itself (Phoenix's `accepts/2`, gettext's locale pick); a
            // browser's are a few hundred bytes, and past 1 KiB they are a
            // parser DoS (Rails CVE-2019-5419 is one of that kind).
            "accept" | "accept-language" | "accept-charset" if v.len() > MAX_ACCEPT => {
                pass.hit(920220, "header", n.as_bytes(), v, 0, false)
            }
            // 920190 (CRS 920600): an Accept charset the response filters
            // would not understand.
            "accept" if protocol::bad_accept_charset(v) => {
                pass.hit(920190, "header", b"accept", v, 0, false)
            }
            // 921060 (CRS 921250): `$Version=1` opens an RFC 2109 cookie
            // header, which no browser sends; parsers that honour it read
            // quoted values across `;` (cookie smuggling).
            "cookie" if v.len() >= 8 && v[..8].eq_ignore_ascii_case(b"$version") => {
                pass.hit(921060, "header", b"cookie", b"$version", 0, false)
            }
            _ => {}
        }
        if protocol::restricted_header(name) {
            pass.hit(920090, "header", n.as_bytes(), n.as_bytes(), 0, false);
        }
    }
    seen
}

// ---- Host --------------------------------------------------------------------

/// 920250 (CRS 920280, 920290; RFC 9112 §3.2, RFC 9110 §7.2): an HTTP/1.1
/// request has exactly one Host, a valid `uri-host [":" port]`, naming the
/// same authority as an absolute-form target or HTTP/2 `:authority`. Host
/// decides routing, cache keys and the links an app builds (host header
/// injection, cache poisoning).
fn host(pass: &mut Pass, req: &Parts, line: Option<RequestLine>, seen: &Seen) {
    let bad = |pass: &mut Pass, v: &[u8]| pass.hit(920250, "header", b"host", v, 0, false);
    match seen.host {
        None if req.version == Version::HTTP_11 => bad(pass, b"(missing)"),
        None => {}
        Some(h) if h.is_empty() || !authority_ok(h) => bad(pass, h),
        Some(h) => {
            // The authority the target names: a well-formed absolute-form
            // line (a malformed one is 920240's), else HTTP/2's `:authority`.
            let target_authority = line
                .filter(|l| matches!(absolute_form(l.target), Some(Ok(_))))
                .map(|l| authority_of(l.target))
                .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
            if target_authority.is_some_and(|a| !same_authority(a, h)) {
                bad(pass, h);
            }
        }
    }
    if seen.hosts > 1 {
        bad(pass, b"(repeated)");
    }
}

/// The authority of an absolute-form target (`http://AUTHORITY/...`).
fn authority_of(t: &[u8]) -> &[u8] {
    let start = t.windows(3).position(|w| w == b"://").map_or(0, |i| i + 3);
    let rest = &t[start..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Host names compare case-insensitively; a default port may be written or
/// left out (`a.test` = `a.test:80` for http). Only that much normalization:
/// anything else that differs is another authority.
fn same_authority(a: &[u8], b: &[u8]) -> bool {
    fn strip(x: &[u8]) -> &[u8] {
        x.strip_suffix(b":80")
            .or_else(|| x.strip_suffix(b":443"))
            .unwrap_or(x)
    }
    strip(a).eq_ignore_ascii_case(strip(b))
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2-3): an IP-literal in brackets, or
/// a reg-name of unreserved, percent-encoded and sub-delim characters (an
/// IPv4 address is one); the port is digits up to 65535. A `/`, `@`, space,
/// second `:` or quote is a second URL part smuggled into the field.
pub(super) fn authority_ok(h: &[u8]) -> bool {
    // The port, once the host part before it is known to be valid.
    let port: Option<&[u8]> = if let Some(rest) = h.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let lit = &rest[..close];
        let ip_literal = !lit.is_empty()
            && lit
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'));
        match &rest[close + 1..] {
            _ if !ip_literal => return false,
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        }
    } else {
        let (host, port) = match h.iter().position(|&b| b == b':') {
            Some(i) => (&h[..i], Some(&h[i + 1..])),
            None => (h, None),
        };
        let reg_name = !host.is_empty()
            && bad_percent(host).is_none()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || reg_name_char(b));
        if !reg_name {
            return false;
        }
        port
    };
    match port {
        None | Some([]) => true,
        Some(p) => {
            p.len() <= 5
                && p.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .is_some_and(|n| n <= 65535)
        }
    }
}

/// unreserved (but letters and digits), `%` and sub-delims (RFC 3986 §2).
fn reg_name_char(b: u8) -> bool {
    matches!(
        b,
        b'-' | b'.'
            | b'_'
            | b'~'
            | b'%'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
    )
}

// ---- framing -------------------------------------------------------------------

/// Message framing (RFC 9112 §6): the body length must be read the same way
/// by bext, Phoenix and anything in between (request smuggling).
fn framing(pass: &mut Pass, req: &Parts, seen: &Seen) {
    let te = !seen.transfer_encodings.is_empty();
    let cls = &seen.content_lengths;
    // 920020 (CRS 920160, 920181): Content-Length is `1*DIGIT`, once; never
    // with Transfer-Encoding. (Pingora and `hygiene` answer 400 to most of
    // these on HTTP/1; this is the guard for the heads that skip them.)
    let cl_bad = cls.len() > 1
        || cls
            .iter()
            .any(|v| v.is_empty() || !v.iter().all(u8::is_ascii_digit));
    if (te && !cls.is_empty()) || cl_bad {
        let v = cls.first().copied().unwrap_or(b"");
        pass.hit(920020, "header", b"content-length", v, 0, false);
    }
    // 920260 (RFC 9112 §6.1, 7): a request's only transfer coding that any
    // server on the way must decode is `chunked`, applied once and last.
    // Stacked codings (`gzip, chunked`), unknown ones, parameters, a second
    // Transfer-Encoding field or `chunked` twice are read differently by
    // each parser (TE.TE desync).
    if te {
        let mut codings = seen
            .transfer_encodings
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty());
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !only_chunked || seen.transfer_encodings.len() > 1 {
            let v = seen.transfer_encodings.first().copied().unwrap_or(b"");
            pass.hit(920260, "header", b"transfer-encoding", v, 0, false);
        }
    }
    // 920010 (CRS 920170, 920171): GET and HEAD have no defined body
    // semantics (RFC 9110 §9.3.1-2); a body there is smuggled past servers
    // that do not expect one.
    let cl_positive = cls.iter().any(|v| v.iter().any(|&b| b != b'0'));
    if matches!(req.method, Method::GET | Method::HEAD) && (te || cl_positive) {
        let m = req.method.as_str().as_bytes();
        pass.hit(920010, "method", b"", m, 0, false);
    }
    // 920265 (CRS 920180, a warning there too): an HTTP/1.x POST with
    // neither Content-Length nor Transfer-Encoding (RFC 9110 §8.6: a client
    // SHOULD send a length). The body is empty by RFC 9112 §6.3, so this
    // only adds to the score: old and hand-rolled clients do it.
    if req.method == Method::POST
        && cls.is_empty()
        && !te
        && matches!(req.version, Version::HTTP_10 | Version::HTTP_11)
    {
        pass.hit(920265, "method", b"", b"POST", 0, false);
    }
}

// ---- Content-Type ----------------------------------------------------------------

/// Content-Type on the request: the media-type grammar always (the header is
/// handed to body parsers whatever the method), then the allow lists when
/// there is a body for it to describe (`protocol::content_type`).
fn content_type(pass: &mut Pass, req: &Parts, ct: &[u8], copies: usize) {
    // 920270 (CRS 920470): not `type/subtype *(; name=value)` (RFC 9110
    // §8.3.1). OGNL in the type (Struts, CVE-2017-5638), a second header
    // glued on with a comma, or unbalanced quotes all fail the grammar.
    if !ct.is_empty() && !media_type_ok(ct) {
        pass.hit(920270, "header", b"content-type", ct, 0, false);
    }
    let body = super::inspect::has_body(req);
    // 920280 (CRS 920620): two Content-Types for one body; Apache joins
    // them, nginx keeps the first, Plug the last. Without a body there is
    // nothing for them to disagree about.
    if copies > 1 && body {
        pass.hit(920280, "header", b"content-type", ct, 0, false);
    }
    protocol::content_type(pass, ct, "header", b"content-type", body);
}

/// `token "/" token *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] )`.
/// Unquoted parameter values may also hold `'()+,./:=?@#`, which RFC 2046
/// boundaries use and clients leave unquoted; `{}<>[]\"` and non-ASCII may
/// not. Whitespace around `=` is tolerated (no parser reads it otherwise).
pub(super) fn media_type_ok(s: &[u8]) -> bool {
    let mut i = 0;
    let token = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(|&b| tchar(b)) {
            *i += 1;
        }
        *i > start
    };
    let ows = |i: &mut usize| {
        while s.get(*i).is_some_and(|&b| b == b' ' || b == b'\t') {
            *i += 1;
        }
    };
    if !token(&mut i) || s.get(i) != Some(&b'/') {
        return false;
    }
    i += 1;
    if !token(&mut i) {
        return false;
    }
    loop {
        ows(&mut i);
        match s.get(i) {
            None => return true,
            Some(b';') => i += 1,
            Some(_) => return false,
        }
        ows(&mut i);
        if matches!(s.get(i), None | Some(b';')) {
            continue; // an empty parameter is allowed
        }
        if !token(&mut i) {
            return false;
        }
        ows(&mut i);
        if s.get(i) != Some(&b'=') {
            return false;
        }
        i += 1;
        ows(&mut i);
        if s.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match s.get(i) {
                    None => return false,
                    Some(b'"') => break,
                    Some(b'\\') => i += 2,
                    Some(_) => i += 1,
                }
            }
            i += 1;
        } else {
            let start = i;
            while s.get(i).is_some_and(|&b| {
                tchar(b) || matches!(b, b'(' | b')' | b',' | b'/' | b':' | b'=' | b'?' | b'@')
            }) {
                i += 1;
            }
            if i == start {
                return false;
            }
        }
    }
}

// ---- ranges ------------------------------------------------------------------------

/// 920160 (CRS 920190, 920200): Range and If-Range per RFC 9110 §13.1.5 and
/// §14.2. An invalid range set, a descending range, more than two
/// overlapping ranges or many ranges (range-amplification DoS, Apache
/// CVE-2011-3192), an If-Range without a Range or with a weak tag. One rule,
/// a warning: browsers and media players never send these, but a server
/// ignores a bad Range rather than act on it, so it only adds to the score.
fn ranges(pass: &mut Pass, seen: &Seen) {
    if let Some(r) = seen.range {
        if !range_ok(r) {
            pass.hit(920160, "header", b"range", r, 0, false);
        }
    }
    if let Some(ir) = seen.if_range {
        let weak = ir.len() >= 2 && ir[..2].eq_ignore_ascii_case(b"w/");
        if seen.range.is_none() || weak || !if_range_ok(ir) {
            pass.hit(920160, "header", b"if-range", ir, 0, false);
        }
    }
}

/// Most ranges a Range header may list (browsers and players send one, PDF
/// readers a few dozen at most).
const MAX_RANGES: usize = 64;

fn range_ok(r: &[u8]) -> bool {
    let Some(eq) = r.iter().position(|&b| b == b'=') else {
        return false;
    };
    let unit = r[..eq].trim_ascii();
    if unit.is_empty() || !unit.iter().copied().all(tchar) {
        return false;
    }
    let bytes = unit.eq_ignore_ascii_case(b"bytes");
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut count = 0;
    for spec in r[eq + 1..].split(|&b| b == b',') {
        let spec = spec.trim_ascii();
        if spec.is_empty() {
            continue; // empty list elements are allowed (RFC 9110 §5.6.1)
        }
        count += 1;
        if count > MAX_RANGES {
            return false;
        }
        if !bytes {
            // other-range: any visible characters but `,` (the unit is the
            // server's business, which ignores units it does not know).
            if !spec.iter().all(|&b| b.is_ascii_graphic()) {
                return false;
            }
            continue;
        }
        let Some(dash) = spec.iter().position(|&b| b == b'-') else {
            return false;
        };
        let (first, last) = (&spec[..dash], &spec[dash + 1..]);
        let num = |s: &[u8]| -> Option<u64> {
            if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(s).ok()?.parse().ok()
        };
        match (first.is_empty(), last.is_empty()) {
            (true, true) => return false,
            (true, false) => {
                if num(last).is_none() {
                    return false;
                }
            }
            (false, true) => match num(first) {
                Some(a) => spans.push((a, u64::MAX)),
                None => return false,
            },
            (false, false) => match (num(first), num(last)) {
                (Some(a), Some(b)) if a <= b => spans.push((a, b)),
                _ => return false,
            },
        }
    }
    if count == 0 {
        return false;
    }
    // More than two overlapping ranges (RFC 9110 §14.2): sorted by start,
    // count the ranges that begin before the previous one ended.
    spans.sort_unstable();
    let mut overlaps = 0;
    let mut end = None::<u64>;
    for &(a, b) in &spans {
        if end.is_some_and(|e| a <= e) {
            overlaps += 1;
        }
        end = Some(end.map_or(b, |e| e.max(b)));
    }
    overlaps < 2
}

/// An entity tag (`"..."`) or an HTTP-date (letters, digits, spaces, `,`
/// `:` `-`).
fn if_range_ok(v: &[u8]) -> bool {
    if let Some(inner) = v.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
        return !inner.contains(&b'"');
    }
    v.iter().any(u8::is_ascii_digit)
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b',' | b':' | b'-'))
}

/// `range-unit SP (first-last / "*") "/" (length / "*")` (RFC 9110 §14.4),
/// first <= last. The length is not compared with the range: clients of
/// resumable-upload APIs disagree on an inclusive or exclusive end.
fn content_range_ok(v: &[u8]) -> bool {
    let Some(sp) = v.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (unit, rest) = (&v[..sp], v[sp + 1..].trim_ascii());
    if unit.is_empty() || !unit.iter().copied().all(tchar) {
        return false;
    }
    let Some(slash) = rest.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (range, len) = (&rest[..slash], &rest[slash + 1..]);
    let digits = |s: &[u8]| !s.is_empty() && s.len() <= 19 && s.iter().all(u8::is_ascii_digit);
    if !(len == b"*" || digits(len)) {
        return false;
    }
    if range == b"*" {
        return len != b"*";
    }
    let Some(dash) = range.iter().position(|&b| b == b'-') else {
        return false;
    };
    let (a, b) = (&range[..dash], &range[dash + 1..]);
    if !digits(a) || !digits(b) {
        return false;
    }
    let n = |s: &[u8]| {
        std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    matches!((n(a), n(b)), (Some(a), Some(b)) if a <= b)
}

/// `#( coding [ OWS ";" OWS "q=" qvalue ] )` (RFC 9110 §12.5.3).
fn accept_encoding_ok(v: &[u8]) -> bool {
    v.split(|&b| b == b',').all(|item| {
        let item = item.trim_ascii();
        let (coding, weight) = match item.iter().position(|&b| b == b';') {
            Some(i) => (item[..i].trim_ascii(), Some(item[i + 1..].trim_ascii())),
            None => (item, None),
        };
        if item.is_empty() {
            return true;
        }
        if coding.is_empty() || !coding.iter().copied().all(tchar) {
            return false;
        }
        match weight {
            None => true,
            Some(w) => {
                let q = w
                    .strip_prefix(b"q=")
                    .or_else(|| w.strip_prefix(b"Q="))
                    .unwrap_or(b"x");
                qvalue_ok(q)
            }
        }
    })
}

/// `0[.ddd]` or `1[.000]`, as the compression negotiation reads weights
/// (which also allows surrounding whitespace; the grammar does not).
fn qvalue_ok(q: &[u8]) -> bool {
    q.trim_ascii().len() == q.len() && crate::compression::qvalue(q).is_some()
}

// ---- Expect, Upgrade, Connection ------------------------------------------------

/// 921070 (RFC 9110 §10.1.1): `100-continue` is the only expectation, and
/// only for a request with content. Anything else (`y 100-continue`, a
/// folded or listed value), or 100-continue with no body, is how
/// expectation-based desyncs make a proxy and a server disagree on whether
/// a body follows.
fn expect(pass: &mut Pass, req: &Parts, seen: &Seen) {
    let Some(e) = seen.expect else { return };
    if e.is_empty() {
        return; // an empty list expects nothing
    }
    if !e.eq_ignore_ascii_case(b"100-continue") || !super::inspect::has_body(req) {
        pass.hit(921070, "header", b"expect", e, 0, false);
    }
}

/// 921080: the only protocol a Phoenix app upgrades to is WebSocket, over a
/// GET (RFC 6455 §4.1). `h2c` through a reverse proxy opens an HTTP/2
/// connection the proxy no longer inspects or routes (h2c smuggling; RFC
/// 9113 §3.1 retired the upgrade); other tokens have no handler.
fn upgrade(pass: &mut Pass, req: &Parts, seen: &Seen) {
    let Some(u) = seen.upgrade else { return };
    let websocket_only = u
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .all(|p| p.eq_ignore_ascii_case(b"websocket"));
    if !u.is_empty() && (!websocket_only || req.method != Method::GET) {
        pass.hit(921080, "header", b"upgrade", u, 0, false);
    }
}

/// Connection (RFC 9110 §7.6.1): a list of option tokens.
fn connection(pass: &mut Pass, seen: &Seen) {
    if seen.connection.is_empty() {
        return;
    }
    let options: Vec<&[u8]> = seen
        .connection
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|o| !o.is_empty())
        .take(64)
        .collect();
    let first = seen.connection.first().copied().unwrap_or(b"");
    // 920110 (CRS 920210): keep-alive and close together, an option twice,
    // or several Connection fields: broken or hand-built clients.
    let has = |w: &[u8]| options.iter().any(|o| o.eq_ignore_ascii_case(w));
    let repeated = options
        .iter()
        .enumerate()
        .any(|(i, o)| options[..i].iter().any(|p| p.eq_ignore_ascii_case(o)));
    let not_token = options.iter().any(|o| !o.iter().copied().all(tchar));
    if (has(b"keep-alive") && has(b"close")) || repeated || not_token || seen.connection.len() > 1 {
        pass.hit(920110, "header", b"connection", first, 0, false);
    }
    // 921090: hop-by-hop header abuse (see `end_to_end`).
    if let Some(o) = options.iter().find(|o| end_to_end(o)) {
        pass.hit(921090, "header", b"connection", o, 0, false);
    }
}

/// 921100 (CRS 921130, 921160): a query argument holding a CR or LF
/// followed by a header field (`Name:` value, any token as the name) or an
/// HTTP version (a status or request line). Apps reflect query parameters
/// into redirects and headers (`Location: /?lang=...`), so this is response
/// splitting and header injection whatever the header is called; text
/// areas, where a line may start with "Note:", post their forms in a body.
/// One forward scan: each CR/LF looks only at the token right after it.
/// A name must start with a letter (see below).
pub(super) fn split_line(text: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = text[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
        let mut j = i + off + 1;
        while text.get(j).is_some_and(|&b| b == b' ' || b == b'\t') {
            j += 1;
        }
        let rest = &text[j..];
        if rest.len() > 5 && rest[..5].eq_ignore_ascii_case(b"http/") && rest[5].is_ascii_digit() {
            return true;
        }
        // A field name is a token; every registered one starts with a
        // letter, which keeps a time ("at\n12:00") from reading as one.
        let name = if rest.first().is_some_and(u8::is_ascii_alphabetic) {
            rest.iter().take_while(|&&b| tchar(b)).count()
        } else {
            0
        };
        let mut k = j + name;
        while text.get(k).is_some_and(|&b| b == b' ' || b == b'\t') {
            k += 1;
        }
        if name > 0 && text.get(k) == Some(&b':') {
            k += 1;
            while text.get(k).is_some_and(|&b| b == b' ' || b == b'\t') {
                k += 1;
            }
            if text.get(k).is_some_and(|b| !b.is_ascii_whitespace()) {
                return true;
            }
        }
        i = j.max(i + off + 1);
    }
    false
}

/// `tchar` (RFC 9110 §5.6.2).
pub(super) fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}
