//! Walks the inspection points of a request — path, each query argument name
//! and value, user-data headers, cookies, and the body (form, JSON,
//! multipart, or raw text) — and runs the content rules on each canonical
//! value. Exclusions are applied per hit.

use std::borrow::Cow;

use http::request::Parts;

use super::body::{self, JsonError};
use super::confirm;
use super::exclusions::excluded;
use super::head::RequestLine;
use super::normalize::{canonical, Evasion};
use super::rules::{self, Category, Rule, Scope, S_FILENAME, S_HEADER, S_NAME, S_PATH, S_VALUE};
use super::{excerpt, phoenix, protocol, tokenize, upload, url, Hit, Verdict, Waf};

/// Headers never inspected for content: framing, negotiation, tokens and
/// values the browser produces itself. Cookie is split into pairs instead.
/// A `match` rather than a list scan: it runs for every header of every request.
fn skipped_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "connection"
            | "accept"
            | "accept-encoding"
            | "accept-language"
            | "authorization"
            | "cookie"
            | "upgrade"
            | "cache-control"
            | "pragma"
            | "origin"
            | "if-none-match"
            | "if-modified-since"
            | "if-match"
            | "if-unmodified-since"
            | "range"
            | "x-csrf-token"
            | "x-request-id"
            | "traceparent"
            | "tracestate"
            | "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-extensions"
            | "sec-websocket-protocol"
            | "sec-websocket-accept"
            | "sec-fetch-dest"
            | "sec-fetch-mode"
            | "sec-fetch-site"
            | "sec-fetch-user"
            | "sec-ch-ua"
            | "sec-ch-ua-mobile"
            | "sec-ch-ua-platform"
            | "access-control-request-method"
            | "access-control-request-headers"
            | "keep-alive"
            | "proxy-connection"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "dnt"
            | "te"
    )
}

/// What kind of inspection point a value came from.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Path,
    QueryName,
    QueryValue,
    Header,
    /// The Referer header: a URL the browser fills in. Command-injection
    /// rules do not apply to it (`;` is ordinary in URL paths, and no app
    /// hands its Referer to a shell); the XSS and SQL rules still do, since
    /// referers are reflected into pages and written to databases.
    Referer,
    CookieName,
    CookieValue,
    BodyName,
    BodyValue,
    Filename,
}

impl Kind {
    fn scope(self) -> Scope {
        match self {
            Kind::Path => S_PATH,
            Kind::QueryName | Kind::CookieName | Kind::BodyName => S_NAME,
            Kind::QueryValue | Kind::CookieValue | Kind::BodyValue => S_VALUE,
            Kind::Header | Kind::Referer => S_HEADER,
            Kind::Filename => S_FILENAME | S_VALUE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Path => "path",
            Kind::QueryName => "query-name",
            Kind::QueryValue => "query",
            Kind::Header | Kind::Referer => "header",
            Kind::CookieName => "cookie-name",
            Kind::CookieValue => "cookie",
            Kind::BodyName => "body-name",
            Kind::BodyValue => "body",
            Kind::Filename => "filename",
        }
    }

    fn plus_is_space(self) -> bool {
        matches!(
            self,
            Kind::QueryName | Kind::QueryValue | Kind::BodyName | Kind::BodyValue
        )
    }
}

/// The request-wide context of one inspection pass.
pub(super) struct Pass<'a> {
    pub waf: &'a Waf,
    pub path: &'a str,
    pub v: &'a mut Verdict,
    /// The Referer is missing or names another host (session fixation).
    pub foreign_referer: bool,
    /// The request declares a JSON body, where `\uXXXX` is ordinary
    /// escaping (CRS skips its Unicode-escape check for JSON requests too).
    pub json_body: bool,
    /// The request's Host (lower-case, with its port): a URL to the site's
    /// own address is not a forged request (see `url::forgery`).
    pub own_host: Vec<u8>,
    /// Set while a value is a page address the browser reported in
    /// Phoenix's protocol (see `phoenix`): the URL decisions skip it.
    pub page_address: bool,
}

impl Pass<'_> {
    pub fn hit(
        &mut self,
        rule_id: u32,
        kind: &str,
        name: &[u8],
        text: &[u8],
        at: usize,
        redact: bool,
    ) {
        let Some(rule) = rules::by_id(rule_id) else {
            return;
        };
        self.hit_rule(rule, kind, name, text, at, redact);
    }

    fn hit_rule(
        &mut self,
        rule: &'static Rule,
        kind: &str,
        name: &[u8],
        text: &[u8],
        at: usize,
        redact: bool,
    ) {
        let arg = (!name.is_empty()).then_some(name);
        if excluded(&self.waf.plan.exclusions, self.path, rule, arg) {
            return;
        }
        let location = if name.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}:{}", excerpt(name, 0, false))
        };
        self.v.add(Hit {
            rule,
            location,
            excerpt: excerpt(text, at, redact),
        });
    }

    /// Runs the content rules on one value. `name` is the argument name the
    /// value belongs to (for exclusions and logs).
    pub fn value(&mut self, kind: Kind, name: &[u8], raw: &[u8]) {
        if raw.is_empty() {
            return;
        }
        let (text, ev) = canonical(raw, kind.plus_is_space());
        self.evasion(kind, name, &ev, &text);
        if matches!(kind, Kind::QueryName | Kind::QueryValue) && super::head::split_line(&text) {
            self.hit(921100, kind.label(), name, &text, 0, false);
        }
        let redact = matches!(kind, Kind::CookieValue);
        let scope = kind.scope();
        let waf = self.waf;
        self.run(&waf.all, scope, kind, name, &text, redact);
        if scope & S_VALUE != 0 {
            self.urls(kind, name, &text, redact);
        }
        // Command injection by tokenization: values, names and headers,
        // never the Referer (see `Kind::Referer`) or the path (`;` is
        // ordinary in paths; the regex rules cover path-shaped commands).
        if scope & (S_VALUE | S_NAME | S_HEADER) != 0 && !matches!(kind, Kind::Referer) {
            if let Some(at) = super::shell::find(&waf.commands, &text) {
                self.hit(932100, kind.label(), name, &text, at, redact);
            }
        }
        // Like CRS 942100 / 941100: arguments, their names, cookies, and
        // the two headers apps reflect or store (User-Agent, Referer).
        if scope & (S_VALUE | S_NAME) != 0
            || (scope & S_HEADER != 0 && matches!(name, b"user-agent" | b"referer"))
        {
            self.tokens(kind, name, &text, redact);
        }
        if !matches!(kind, Kind::Referer)
            && text
                .iter()
                .any(|b| matches!(b, b'\'' | b'"' | b'\\' | b'^'))
        {
            let cmd: Vec<u8> = text
                .iter()
                .copied()
                .filter(|b| !matches!(b, b'\'' | b'"' | b'\\' | b'^'))
                .collect();
            self.run(&waf.rce, scope, kind, name, &cmd, redact);
        }
        if body::find(&text, b"/*").is_some() {
            let plain = strip_comments(&text);
            self.run(&waf.all, scope, kind, name, &plain, redact);
        }
    }

    /// RFI and SSRF: decisions about where a URL value points, made on the
    /// parsed URL (`url`). Values without `:` or `/` cannot be one.
    fn urls(&mut self, kind: Kind, name: &[u8], text: &[u8], redact: bool) {
        if self.page_address || !text.iter().any(|&b| b == b':' || b == b'/') {
            return;
        }
        let Some(u) = url::parse(text, true) else {
            return;
        };
        if url::remote_include(&u) {
            self.hit(931010, kind.label(), name, text, 0, redact);
        }
        if url::forgery(&u, &self.own_host) {
            self.hit(934020, kind.label(), name, text, 0, redact);
        }
    }

    /// SQLi and XSS by tokenization (`tokenize`).
    fn tokens(&mut self, kind: Kind, name: &[u8], text: &[u8], redact: bool) {
        if !self.waf.plan.tokenizers {
            return;
        }
        if tokenize::sqli(text).is_some() {
            self.hit(942110, kind.label(), name, text, 0, redact);
        }
        if tokenize::xss(text) {
            self.hit(941070, kind.label(), name, text, 0, redact);
        }
    }

    fn run(
        &mut self,
        set: &super::RuleSet,
        scope: Scope,
        kind: Kind,
        name: &[u8],
        text: &[u8],
        redact: bool,
    ) {
        let matches = set.set.matches(text);
        if !matches.matched_any() {
            return;
        }
        for i in matches.iter() {
            let Some((rule, re)) = set.rules.get(i) else {
                continue;
            };
            if rule.scope & scope == 0
                || (matches!(kind, Kind::Referer) && rule.category == Category::Rce)
                || self.v.hits.iter().any(|h| h.rule.id == rule.id)
                || !confirm::holds(rule.id, scope, text)
            {
                continue;
            }
            let at = re.find(text).map_or(0, |m| m.start());
            self.hit_rule(rule, kind.label(), name, text, at, redact);
        }
    }

    fn evasion(&mut self, kind: Kind, name: &[u8], ev: &Evasion, text: &[u8]) {
        let label = kind.label();
        if ev.null_byte && !matches!(kind, Kind::Filename) {
            self.hit(920040, label, name, text, 0, false);
        }
        if (ev.fullwidth && ev.percent_u) || ev.overlong {
            self.hit(920060, label, name, text, 0, false);
        }
        if ev.double_encoded && matches!(kind, Kind::Path | Kind::QueryValue | Kind::QueryName) {
            self.hit(920170, label, name, text, 0, false);
        }
        if ev.broken_utf8 && matches!(kind, Kind::Path | Kind::QueryValue | Kind::QueryName) {
            self.hit(920055, label, name, text, 0, false);
        } else if ev.broken_utf8 && matches!(kind, Kind::BodyValue | Kind::BodyName) {
            self.hit(920050, label, name, text, 0, false);
        }
        if ev.bad_percent && matches!(kind, Kind::QueryName | Kind::BodyName) {
            self.hit(920150, label, name, text, 0, false);
        }
        if matches!(kind, Kind::QueryName | Kind::BodyName | Kind::Path)
            && text.iter().any(|&b| b == b'\r' || b == b'\n')
        {
            self.hit(920030, label, name, text, 0, false);
        }
    }

    /// Query-string or form arguments.
    pub fn args(&mut self, data: &[u8], name_kind: Kind, value_kind: Kind, count: &mut usize) {
        for (n, val) in body::form_pairs(data) {
            *count += 1;
            if *count > self.waf.plan.max_args {
                self.hit(920140, "args", b"", b"", 0, false);
                return;
            }
            let (name, _) = canonical(n, true);
            self.value(name_kind, &name, n);
            protocol::session_name(self, &name);
            self.value(value_kind, &name, val);
            if !self.json_body && has_unicode_escape(val) {
                self.hit(920200, value_kind.label(), &name, val, 0, false);
            }
            protocol::include_param(self, &name, val);
        }
    }
}

/// A literal `\uXXXX` in a url-encoded argument (JSON bodies may use them).
/// Checked on the url-decoded bytes: the canonical form has already turned
/// the escape into the character it hides.
fn has_unicode_escape(raw: &[u8]) -> bool {
    if !raw.contains(&b'\\') && !raw.contains(&b'%') {
        return false;
    }
    let v = super::normalize::url_decoded(raw, true);
    v.windows(6).any(|w| {
        w[0] == b'\\' && matches!(w[1], b'u' | b'U') && w[2..].iter().all(u8::is_ascii_hexdigit)
    })
}

fn strip_comments(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(b"/*") {
            match body::find(&s[i + 2..], b"*/") {
                Some(end) => {
                    out.push(b' ');
                    i += end + 4;
                    continue;
                }
                None => break,
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

pub(super) fn has_body(req: &Parts) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn is_json_request(req: &Parts) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .map(|h| {
            let ct = h.as_bytes();
            let end = ct.iter().position(|&b| b == b';').unwrap_or(ct.len());
            let mime = ct[..end].trim_ascii().to_ascii_lowercase();
            mime == b"application/json"
                || mime.ends_with(b"+json")
                || mime == b"application/x-ndjson"
        })
        .unwrap_or(false)
}

/// Runs `f` with a [`Pass`] over `req`: the canonical path (for exclusions
/// and path-scoped rules) and the referer check are computed once here.
fn with_pass(waf: &Waf, req: &Parts, v: &mut Verdict, f: impl FnOnce(&mut Pass)) {
    let (decoded_path, _) = canonical(req.uri.path().as_bytes(), false);
    let path_text = String::from_utf8_lossy(&decoded_path);
    let mut pass = Pass {
        waf,
        path: &path_text,
        v,
        foreign_referer: protocol::foreign_referer(req),
        json_body: is_json_request(req),
        own_host: req
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes().trim_ascii().to_ascii_lowercase())
            .or_else(|| {
                req.uri
                    .authority()
                    .map(|a| a.as_str().to_ascii_lowercase().into_bytes())
            })
            .unwrap_or_default(),
        page_address: false,
    };
    f(&mut pass);
}

pub(super) fn head(waf: &Waf, req: &Parts, line: Option<RequestLine>, v: &mut Verdict) {
    with_pass(waf, req, v, |pass| head_values(pass, req, line));
}

fn head_values(pass: &mut Pass, req: &Parts, line: Option<RequestLine>) {
    protocol::head(pass, req, line);
    pass.value(Kind::Path, b"", req.uri.path().as_bytes());
    if let Some(q) = req.uri.query() {
        let mut count = 0;
        pass.args(q.as_bytes(), Kind::QueryName, Kind::QueryValue, &mut count);
    }
    for (name, value) in &req.headers {
        let n = name.as_str();
        if n == "cookie" {
            for pair in value.as_bytes().split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                let (cn, cv) = match pair.iter().position(|&b| b == b'=') {
                    Some(i) => (&pair[..i], &pair[i + 1..]),
                    None => (pair, &b""[..]),
                };
                pass.value(Kind::CookieName, cn, cn);
                pass.value(Kind::CookieValue, cn, cv);
            }
            continue;
        }
        if skipped_header(n) {
            continue;
        }
        let kind = if n == "referer" {
            Kind::Referer
        } else {
            Kind::Header
        };
        pass.value(kind, n.as_bytes(), value.as_bytes());
        if upload::is_filename_header(n) {
            upload::filename(pass, n.as_bytes(), value.as_bytes());
        }
    }
}

pub(super) fn body(waf: &Waf, req: &Parts, data: &[u8], truncated: bool, v: &mut Verdict) {
    if data.is_empty() {
        return;
    }
    with_pass(waf, req, v, |pass| body_values(pass, req, data, truncated));
}

fn body_values(pass: &mut Pass, req: &Parts, data: &[u8], truncated: bool) {
    let ct = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|h| h.as_bytes())
        .unwrap_or(b"");
    let mime: Cow<'_, [u8]> = {
        let end = ct.iter().position(|&b| b == b';').unwrap_or(ct.len());
        Cow::Owned(ct[..end].trim_ascii().to_ascii_lowercase())
    };
    let mime = &*mime;
    if mime == b"application/x-www-form-urlencoded" {
        let mut count = 0;
        pass.args(data, Kind::BodyName, Kind::BodyValue, &mut count);
    } else if mime == b"application/json"
        || mime.ends_with(b"+json")
        || mime == b"application/x-ndjson"
    {
        json(pass, data, truncated);
    } else if mime.starts_with(b"multipart/") {
        multipart(pass, ct, data, truncated);
    } else if mime.ends_with(b"xml") {
        xml(pass, data);
    } else if !is_binary(mime, data) {
        pass.value(Kind::BodyValue, b"", data);
    }
}

/// Binary uploads (files, images, archives) are not text to scan: their bytes
/// trip the protocol and injection rules by chance. A declared binary type, or
/// no type with NUL bytes near the start, is passed uninspected (ModSecurity
/// likewise only parses the body types it knows).
fn is_binary(mime: &[u8], data: &[u8]) -> bool {
    const BINARY_PREFIXES: [&[u8]; 6] = [
        b"application/octet-stream",
        b"image/",
        b"audio/",
        b"video/",
        b"font/",
        b"application/zip",
    ];
    if BINARY_PREFIXES.iter().any(|p| mime.starts_with(p))
        || mime == b"application/pdf"
        || mime == b"application/gzip"
    {
        return true;
    }
    mime.is_empty() && data[..data.len().min(1024)].contains(&0)
}

/// XML: text nodes and attribute values are inspected (like ModSecurity's
/// `XML:/*`), element and attribute names are not.
fn xml(pass: &mut Pass, data: &[u8]) {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'<' {
            let end = data[i..]
                .iter()
                .position(|&b| b == b'>')
                .map_or(data.len(), |e| i + e);
            let mut rest = &data[i..end];
            while let Some(q) = rest.iter().position(|&b| b == b'"' || b == b'\'') {
                let quote = rest[q];
                let after = &rest[q + 1..];
                let close = after
                    .iter()
                    .position(|&b| b == quote)
                    .unwrap_or(after.len());
                pass.value(Kind::BodyValue, b"xml-attr", &after[..close]);
                rest = after.get(close + 1..).unwrap_or(b"");
            }
            i = end + 1;
        } else {
            let end = data[i..]
                .iter()
                .position(|&b| b == b'<')
                .map_or(data.len(), |e| i + e);
            pass.value(Kind::BodyValue, b"xml-text", data[i..end].trim_ascii());
            i = end;
        }
    }
}

/// JSON: every string (keys and values, any depth) is inspected; the body
/// limit bounds the work, so there is no argument-count limit here. A
/// Phoenix long-poll body is NDJSON, one channel frame a line: each line is
/// walked with what its frame head says (see `phoenix`).
fn json(pass: &mut Pass, data: &[u8], truncated: bool) {
    if phoenix::is_longpoll(pass.path) {
        let mut res = Ok(());
        for line in data.split(|&b| b == b'\n') {
            let r = json_doc(pass, line, phoenix::frame(line));
            if res.is_ok() {
                res = r;
            }
        }
        json_error(pass, res, truncated);
    } else {
        let res = json_doc(pass, data, phoenix::Frame::default());
        json_error(pass, res, truncated);
    }
}

fn json_doc(pass: &mut Pass, data: &[u8], frame: phoenix::Frame) -> Result<(), JsonError> {
    let depth = pass.waf.plan.max_json_depth;
    let mut strings = vec![];
    let res = body::json_strings(data, depth, |s| strings.push(s));
    let mut key: &[u8] = b"";
    for s in strings {
        if s.is_key {
            key = s.raw;
            pass.value(Kind::BodyName, s.raw, s.raw);
            protocol::session_name(pass, &canonical(s.raw, false).0);
        } else {
            pass.page_address = phoenix::is_page_address(frame, s.depth, key);
            pass.value(Kind::BodyValue, key, s.raw);
            pass.page_address = false;
            if phoenix::is_form_value(frame, s.depth, key, s.raw) {
                let mut count = 0;
                pass.args(s.raw, Kind::BodyName, Kind::BodyValue, &mut count);
            }
        }
    }
    res
}

fn json_error(pass: &mut Pass, res: Result<(), JsonError>, truncated: bool) {
    match res {
        Err(JsonError::TooDeep) => {
            pass.hit(920120, "body", b"", b"json nesting too deep", 0, false)
        }
        Err(JsonError::Unterminated) if !truncated => {
            pass.hit(920120, "body", b"", b"unterminated json string", 0, false)
        }
        _ => {}
    }
}

fn multipart(pass: &mut Pass, ct: &[u8], data: &[u8], truncated: bool) {
    let Some(boundary) = body::boundary(ct) else {
        pass.hit(920120, "body", b"", b"multipart without boundary", 0, false);
        return;
    };
    let max = pass.waf.plan.max_args;
    match body::multipart(data, boundary, max) {
        Ok(parts) => {
            for part in parts {
                protocol::part_headers(pass, &part);
                pass.value(Kind::BodyName, part.name, part.name);
                protocol::session_name(pass, &canonical(part.name, false).0);
                if let Some(f) = part.filename {
                    pass.value(Kind::Filename, part.name, f);
                    upload::filename(pass, part.name, f);
                } else {
                    pass.value(Kind::BodyValue, part.name, part.body);
                }
            }
        }
        Err(body::MultipartError::TooManyParts) => pass.hit(920140, "body", b"", b"", 0, false),
        Err(body::MultipartError::Unterminated) if truncated => {}
        Err(e) => {
            let what = format!("{e:?}");
            pass.hit(920120, "body", b"", what.as_bytes(), 0, false);
        }
    }
}
