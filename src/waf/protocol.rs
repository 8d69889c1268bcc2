//! Checks on the shape of the request rather than its content: the method
//! allow list, the lists the protocol pass (`head`) consults (restricted
//! headers, scanner User-Agents, allowed Content-Types and charsets),
//! restricted file extensions, multipart part headers, session-id
//! parameters and include-style parameters.

use aho_corasick::AhoCorasick;
use http::request::Parts;
use http::HeaderName;

use super::body::{param, Part};
use super::inspect::Pass;

/// Request Content-Types bext lets through (media type, lower case).
const ALLOWED_TYPES: &[&[u8]] = &[
    b"application/x-www-form-urlencoded",
    b"multipart/form-data",
    b"multipart/related",
    b"application/json",
    b"application/x-ndjson",
    b"application/xml",
    b"text/xml",
    b"application/soap+xml",
    b"application/csp-report",
    b"application/octet-stream",
    b"application/graphql",
    b"text/plain",
    b"multipart/mixed",
];

const ALLOWED_CHARSETS: &[&[u8]] = &[
    b"utf-8",
    b"utf8",
    b"iso-8859-1",
    b"iso-8859-15",
    b"windows-1252",
    b"us-ascii",
];

/// Headers a client has no business sending to a Phoenix app through bext.
static RESTRICTED_HEADERS: [HeaderName; 9] = [
    HeaderName::from_static("proxy"),
    HeaderName::from_static("lock-token"),
    http::header::CONTENT_ENCODING,
    HeaderName::from_static("if"),
    HeaderName::from_static("request-range"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-middleware-subrequest"),
];

/// File extensions refused in the path (backups, databases, server configs).
const RESTRICTED_EXT: &[&str] = &[
    "asa",
    "asax",
    "ascx",
    "backup",
    "bak",
    "bat",
    "cdx",
    "cer",
    "cfg",
    "cmd",
    "config",
    "conf",
    "cs",
    "csproj",
    "csr",
    "dat",
    "db",
    "dbf",
    "dll",
    "dos",
    "htr",
    "htw",
    "ida",
    "idc",
    "idq",
    "inc",
    "ini",
    "key",
    "licx",
    "lnk",
    "log",
    "mdb",
    "old",
    "pass",
    "pdb",
    "pol",
    "printer",
    "pwd",
    "rdb",
    "resources",
    "resx",
    "sql",
    "swp",
    "sys",
    "vb",
    "vbs",
    "vbproj",
    "vsdisco",
    "webinfo",
    "xsd",
    "xsx",
    "sqlite",
    "sqlite3",
    "kdbx",
    "pem",
];

/// One automaton for all of [`SCANNERS`] (built with the [`super::Waf`]):
/// every request with a User-Agent is checked, and one case-insensitive pass
/// beats lower-casing it and searching for each name in turn.
pub(super) fn scanner_matcher() -> Result<AhoCorasick, aho_corasick::BuildError> {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(SCANNERS)
}

/// Lower-case substrings of security-scanner User-Agents.
const SCANNERS: &[&str] = &[
    "nessus",
    "nikto",
    "sqlmap",
    "nmap",
    "masscan",
    "zgrab",
    "acunetix",
    "w3af",
    "dirbuster",
    "gobuster",
    "wpscan",
    "havij",
    "netsparker",
    "openvas",
    "arachni",
    "nuclei",
    "ffuf",
    "wfuzz",
    "burpsuite",
    "jaeles",
    "whatweb",
    "zmeu",
    "morfeus",
    "paros",
    "webinspect",
    "appscan",
    "skipfish",
    "commix",
    "dirsearch",
    "feroxbuster",
    "xsstrike",
    "joomscan",
    "sqlninja",
    "fimap",
    "httpx - open-source",
    "interactsh",
    "qualys",
    "vega/",
    "webshag",
    "nessus",
    "brutus",
    "bsqlbf",
    "mysqloit",
    "pangolin",
    "cgichk",
    "sf-sec",
];

/// Parameter names that carry a session id in frameworks that accept one
/// from the URL (session fixation).
const SESSION_NAMES: &[&str] = &[
    "jsessionid",
    "phpsessid",
    "phpsession",
    "aspsessionid",
    "asp.net_sessionid",
    "sessionid",
    "session_id",
    "session-id",
    "sessid",
    "sid",
    "connect.sid",
    "cfid",
    "cftoken",
    "cfsid",
    "jwsession",
    "meteor_login_token",
    "cakephp",
    "zend_session_id",
    "laravel_session",
    "ci_session",
    "_session_id",
    "rack.session",
    "symfony",
    "sess_id",
    "phpsessionid",
    "jsessid",
    "wpsessid",
    "bbsessionhash",
    "sesskey",
    "play_session",
    "next-auth.session-token",
    "express.sid",
    "koa.sess",
    "flask_session",
    "beaker.session.id",
];

// Names are `HeaderName`s: a lookup by &str parses the name first, and the
// head checks run on every request.
fn header<K: http::header::AsHeaderName>(req: &Parts, name: K) -> Option<&[u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

fn host_of(url: &[u8]) -> &[u8] {
    let rest = url
        .iter()
        .position(|&b| b == b':')
        .and_then(|i| url[i..].strip_prefix(b"://"))
        .unwrap_or(url);
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#' | b':'))
        .unwrap_or(rest.len());
    &rest[..end]
}

pub(super) fn foreign_referer(req: &Parts) -> bool {
    let Some(r) = header(req, http::header::REFERER) else {
        return true;
    };
    let host = header(req, http::header::HOST).map(|h| {
        let end = h.iter().position(|&b| b == b':').unwrap_or(h.len());
        &h[..end]
    });
    match host {
        Some(h) => !host_of(r).eq_ignore_ascii_case(h),
        None => true,
    }
}

/// The checks on the request head: the method allow list, the protocol pass
/// (`head`: request line, header fields, framing, ranges, ...), a body
/// without a type where one is required, and restricted file extensions.
pub(super) fn head(pass: &mut Pass, req: &Parts, line: Option<super::head::RequestLine>) {
    let method = req.method.as_str();
    if !pass.waf.plan.allowed_methods.iter().any(|m| m == method) {
        pass.hit(911010, "method", b"", method.as_bytes(), 0, false);
    }
    super::head::check(pass, req, line);
    // A PUT or PATCH with a sized body and no type at all: the body is a
    // representation (or a patch document, RFC 5789) whose media type
    // the server must know, and no parser on the way (Plug.Parsers
    // included) can read it, so its content escapes every parsed check.
    // POST is left alone: webhooks and simple clients post raw bytes
    // without a type, and bext still inspects such a body as text. So is
    // a chunked body, which is how tools stream bytes (`curl -T -`).
    if !req.headers.contains_key(http::header::CONTENT_TYPE)
        && super::inspect::has_body(req)
        && matches!(req.method, http::Method::PUT | http::Method::PATCH)
        && !req.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        pass.hit(920210, "header", b"content-type", b"", 0, false)
    }
    // CRS 920500: an editor's backup or working copy (`index.php~`,
    // `config.yml~/`) is served as plain text by servers that do not map
    // the extension, source and secrets included. On the decoded path.
    let backup = pass.path.split('/').any(|seg| {
        seg.strip_suffix('~')
            .and_then(|s| s.rsplit_once('.'))
            .is_some_and(|(_, ext)| !ext.is_empty() && !ext.contains('~'))
    });
    if backup {
        pass.hit(920100, "path", b"", pass.path.as_bytes(), 0, false);
    }
    let path = req.uri.path();
    let last = path.rsplit('/').next().unwrap_or("");
    if let Some((_, ext)) = last.rsplit_once('.') {
        if RESTRICTED_EXT.iter().any(|e| e.eq_ignore_ascii_case(ext)) {
            pass.hit(920100, "path", b"", path.as_bytes(), 0, false);
        }
    }
}

/// Whether `name` is one of [`RESTRICTED_HEADERS`] (920090).
pub(super) fn restricted_header(name: &HeaderName) -> bool {
    RESTRICTED_HEADERS.contains(name)
}

/// The scanner name of the automaton's pattern `i`.
pub(super) fn scanner_name(i: usize) -> &'static str {
    SCANNERS.get(i).copied().unwrap_or("")
}

/// Content-Type allow list and charset check (request or multipart part).
/// The allow lists only matter when there is a `body` for the type to
/// describe: a bodiless request is parsed by nothing, and an empty header
/// is no type at all. A second media type hidden in the parameters is
/// checked regardless: it is aimed at the parsers of whatever reads the
/// header.
pub(super) fn content_type(pass: &mut Pass, ct: &[u8], kind: &str, name: &[u8], body: bool) {
    let end = ct.iter().position(|&b| b == b';').unwrap_or(ct.len());
    let mime = ct[..end].trim_ascii().to_ascii_lowercase();
    let vendor_json = mime.starts_with(b"application/vnd.") && mime.ends_with(b"+json");
    let typed_body = body && !mime.is_empty();
    if kind == "header" && typed_body && !ALLOWED_TYPES.contains(&mime.as_slice()) && !vendor_json {
        pass.hit(920070, kind, name, ct, 0, false);
    }
    let params = ct[end..].to_ascii_lowercase();
    if kind == "header"
        && [&b"application/"[..], b"text/"]
            .iter()
            .any(|t| super::body::find(&params, t).is_some())
    {
        pass.hit(921050, kind, name, ct, 0, false);
    }
    if !typed_body {
        return;
    }
    if super::body::find(&params, b"charset")
        .is_some_and(|i| super::body::find(&params[i + 7..], b"charset").is_some())
    {
        let id = if kind == "header" { 920080 } else { 922010 };
        pass.hit(id, kind, name, ct, 0, false);
    }
    if let Some(cs) = param(&ct[end..], b"charset") {
        let cs: Vec<u8> = cs
            .iter()
            .filter(|&&b| b != b'\'' && b != b'"')
            .map(u8::to_ascii_lowercase)
            .collect();
        if !ALLOWED_CHARSETS.contains(&cs.as_slice()) {
            let id = if kind == "header" { 920080 } else { 922010 };
            pass.hit(id, kind, name, ct, 0, false);
        }
    }
}

pub(super) fn part_headers(pass: &mut Pass, part: &Part) {
    for (n, v) in &part.headers {
        if n.eq_ignore_ascii_case(b"content-disposition") && confusing_disposition(v) {
            pass.hit(920180, "body", part.name, v, 0, false);
        }
        if n.is_empty() || !n.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-') {
            pass.hit(922030, "body", part.name, n, 0, false);
        } else if n.eq_ignore_ascii_case(b"content-transfer-encoding") {
            pass.hit(922020, "body", part.name, v, 0, false);
        } else if n.eq_ignore_ascii_case(b"content-type") {
            content_type(pass, v, "body", part.name, true);
        }
    }
    if part
        .name
        .iter()
        .chain(part.filename.unwrap_or(b""))
        .any(|&b| matches!(b, b'"' | b';' | b'\\' | b'\''))
    {
        pass.hit(920180, "body", part.name, part.name, 0, false);
    }
    if part.name.eq_ignore_ascii_case(b"_charset_") {
        let cs = part.body.trim_ascii().to_ascii_lowercase();
        if !ALLOWED_CHARSETS.contains(&cs.as_slice()) {
            pass.hit(922010, "body", part.name, part.body, 0, false);
        }
    }
}

/// An Accept header naming a charset outside the allowed list.
pub(super) fn bad_accept_charset(a: &[u8]) -> bool {
    let lower = a.to_ascii_lowercase();
    lower.split(|&b| b == b';' || b == b',').any(|item| {
        let item = item.trim_ascii();
        match item.strip_prefix(b"charset=") {
            Some(cs) => {
                let cs: Vec<u8> = cs
                    .iter()
                    .copied()
                    .filter(|&b| b != b'"' && b != b'\'')
                    .collect();
                !ALLOWED_CHARSETS.contains(&cs.as_slice())
            }
            None => false,
        }
    })
}

/// Quoted parameter values holding `;`, `\\` or `'`, or unbalanced quotes:
/// parsers disagree on these (multipart bypass). A `=` inside quotes is
/// not one of them: parsers split a parameter at its first `=`, before the
/// quoted value starts (`filename="a=b.txt"` is read the same everywhere).
fn confusing_disposition(v: &[u8]) -> bool {
    let mut inside = false;
    for (i, &b) in v.iter().enumerate() {
        match b {
            b'"' => inside = !inside,
            // `&auml;` is an HTML entity, not a parameter separator.
            b';' if inside && is_entity_end(&v[..i]) => {}
            b';' | b'\\' | b'\'' if inside => return true,
            _ => {}
        }
    }
    inside
}

fn is_entity_end(before: &[u8]) -> bool {
    let word = before
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'#')
        .count();
    word > 0 && word <= 8 && before.len() > word && before[before.len() - word - 1] == b'&'
}

/// A URL given to a parameter whose name says it is a local path or include.
pub(super) fn include_param(pass: &mut Pass, name: &[u8], raw: &[u8]) {
    let n = String::from_utf8_lossy(name);
    let looks_local = [
        "path", "dir", "root", "include", "file", "template", "basedir",
    ]
    .iter()
    .any(|w| n.contains(w));
    if !looks_local {
        return;
    }
    let (v, _) = super::normalize::canonical(raw, true);
    let v = v.trim_ascii_start();
    if [
        &b"http://"[..],
        b"https://",
        b"ftp://",
        b"ftps://",
        b"file://",
    ]
    .iter()
    .any(|s| v.starts_with(s))
    {
        pass.hit(931040, "query", name, raw, 0, false);
    }
}

/// A session-id parameter name, with the Referer missing or foreign.
pub(super) fn session_name(pass: &mut Pass, canonical_name: &[u8]) {
    if !pass.foreign_referer {
        return;
    }
    let n = std::str::from_utf8(canonical_name).unwrap_or("");
    // Framework cookies are namespaced (`next-auth.session-token`); a bare
    // `session_token` is as often an app's own form or API token.
    let generic = n != "session"
        && (n.ends_with("_session")
            || n.ends_with(".session")
            || n.ends_with(".session_token")
            || n.ends_with(".session-token")
            || n.ends_with("sessionid"));
    if SESSION_NAMES.contains(&n) || generic {
        pass.hit(943010, "arg", canonical_name, canonical_name, 0, false);
    }
}
