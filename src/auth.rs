//! Staging protection: `auth` on a route or a site keeps it private until it
//! is public. This module owns the compiled rule ([`AuthPlan`]), the check of
//! one request ([`AuthPlan::check`], which returns a [`Verdict`]; the phase
//! writes the answer) and `bext hash-password`.
//!
//! Two modes:
//! - **basic**: `user:HASH` entries (argon2id PHC strings or bcrypt); only
//!   hashes are accepted. A password check costs tens of milliseconds of CPU
//!   and argon2's memory, so checks run off the event loop, a few at a time,
//!   with a bounded queue (beyond it: 429), and a verified `Authorization`
//!   value is remembered (bounded, for a few minutes) so a browser's every
//!   request, asset and websocket does not pay the check again.
//! - **token**: a shared secret sent as `Authorization: Bearer …`, in a
//!   configured header, or — for browsers, whose LiveView websocket cannot
//!   send a custom header — by visiting any page once with
//!   `?bext_token=…`: bext answers with a redirect to the same URL without the
//!   token and a signed, expiring `_bext_auth` cookie that later requests
//!   (websocket upgrades and long-poll included) carry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::routing::Pattern;

/// The cookie a token visit sets.
pub const COOKIE: &str = "_bext_auth";
/// The query parameter of a token visit.
pub const VISIT_PARAM: &str = "bext_token";
/// Shortest token accepted in the config: a shared secret on the internet.
pub const MIN_TOKEN_LEN: usize = 16;

/// How long a verified `Authorization` value is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Remembered values per rule (the map is keyed by client input).
const VERIFIED_MAX: usize = 4096;
/// Password checks waiting for a slot before new ones are refused with 429.
const MAX_WAITING: usize = 64;

/// `auth` compiled from the config, with the state its checks share.
#[derive(Debug)]
pub struct AuthPlan {
    mode: Mode,
    realm: String,
    exempt: Vec<Pattern>,
    cookie_ttl: Duration,
    /// `WWW-Authenticate` of a 401, built once.
    challenge: HeaderValue,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    checks: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
}

#[derive(Debug)]
enum Mode {
    Basic(Vec<Credential>),
    Token {
        token: Vec<u8>,
        header: Option<HeaderName>,
        /// `?bext_token=` visits set the cookie (`cookie = false` turns it off).
        visit: bool,
        /// HMAC key of the cookie, derived from the token (a new token
        /// invalidates every cookie).
        key: [u8; 32],
    },
}

#[derive(Debug, Clone)]
struct Credential {
    user: String,
    hash: String,
}

/// What `auth` says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// 401: no credentials. The value is the `WWW-Authenticate` header.
    Challenge(HeaderValue),
    /// 401: credentials given and wrong (counted as a failure).
    Denied(HeaderValue),
    /// A token visit: 303 to `location` (the URL without the token) with this `Set-Cookie`.
    Visit {
        location: String,
        cookie: HeaderValue,
    },
    /// Too many password checks in flight: 429, try again shortly.
    Busy,
}

/// `bext_auth_requests_total{result}`: requests on protected routes by
/// verdict (`denied` counts failed logins: the brute-force signal).
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    by_result: [prometheus::IntCounter; 5],
}

impl AuthMetrics {
    pub fn new(sub: &crate::telemetry::registry::Sub) -> AuthMetrics {
        let v = sub.counter_vec(
            "requests_total",
            "Requests on routes with `auth`, by result (pass, challenge, denied, visit, busy)",
            &["result"],
        );
        let c = |l: &str| v.with_label_values(&[l]);
        AuthMetrics {
            by_result: [
                c("pass"),
                c("challenge"),
                c("denied"),
                c("visit"),
                c("busy"),
            ],
        }
    }

    pub fn count(&self, v: &Verdict) {
        let i = match v {
            Verdict::Pass => 0,
            Verdict::Challenge(_) => 1,
            Verdict::Denied(_) => 2,
            Verdict::Visit { .. } => 3,
            Verdict::Busy => 4,
        };
        self.by_result[i].inc();
    }
}

/// The user-facing settings, already read from the config file.
pub struct AuthSettings {
    pub basic: Option<Vec<String>>,
    pub token: Option<String>,
    pub header: Option<String>,
    pub cookie: Option<bool>,
    pub cookie_ttl: Option<Duration>,
    pub realm: Option<String>,
    pub exempt: Vec<String>,
}

impl AuthPlan {
    /// Compiles `auth`; errors are `(key below auth, reason)`. `token` is
    /// already resolved (`env:VAR`).
    pub fn compile(s: AuthSettings) -> Result<AuthPlan, (&'static str, String)> {
        let realm = s.realm.unwrap_or_else(|| "bext".to_owned());
        if realm.is_empty() || realm.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            return Err((
                "realm",
                "must be non-empty printable text without quotes or backslashes".into(),
            ));
        }
        let exempt = s
            .exempt
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("exempt", e))?;
        let cookie_ttl = s.cookie_ttl.unwrap_or(Duration::from_secs(12 * 3600));
        if cookie_ttl < Duration::from_secs(60) || cookie_ttl > Duration::from_secs(400 * 86400) {
            return Err(("cookie_ttl", "must be between 1m and 400d".into()));
        }
        let mode = match (s.basic, s.token) {
            (Some(_), Some(_)) => {
                return Err((
                    "basic",
                    "use either `basic` or `token`, not both (one rule, one way in)".into(),
                ))
            }
            (None, None) => {
                return Err((
                    "basic",
                    "missing: `basic = [\"user:HASH\"]` or `token = \"env:VAR\"`".into(),
                ))
            }
            (Some(list), None) => {
                for key in [
                    ("header", s.header.is_some()),
                    ("cookie", s.cookie.is_some()),
                ] {
                    if key.1 {
                        return Err((key.0, "only used with `token`".into()));
                    }
                }
                Mode::Basic(compile_basic(list)?)
            }
            (None, Some(token)) => {
                if token.len() < MIN_TOKEN_LEN {
                    return Err((
                        "token",
                        format!("too short: at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 24`)"),
                    ));
                }
                if HeaderValue::from_str(&token).is_err() {
                    return Err((
                        "token",
                        "must be printable ASCII (it travels in a header)".into(),
                    ));
                }
                let header = match s.header {
                    None => None,
                    Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                        Ok(n) if n != http::header::AUTHORIZATION && n != http::header::COOKIE => Some(n),
                        _ => {
                            return Err((
                                "header",
                                format!("\"{h}\" is not a header name bext can read a token from (Authorization: Bearer is always accepted)"),
                            ))
                        }
                    },
                };
                let key: [u8; 32] = Sha256::new()
                    .chain_update(b"bext-auth-cookie-v1\0")
                    .chain_update(token.as_bytes())
                    .finalize()
                    .into();
                Mode::Token {
                    token: token.into_bytes(),
                    header,
                    visit: s.cookie.unwrap_or(true),
                    key,
                }
            }
        };
        let challenge = match &mode {
            Mode::Basic(_) => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
            Mode::Token { .. } => format!("Bearer realm=\"{realm}\""),
        };
        let challenge = HeaderValue::from_str(&challenge)
            .map_err(|_| ("realm", "not a header value".to_owned()))?;
        let slots = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        Ok(AuthPlan {
            mode,
            realm,
            exempt,
            cookie_ttl,
            challenge,
            verified: Mutex::new(HashMap::new()),
            checks: Arc::new(tokio::sync::Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// `auth: basic` or `auth: token`, for `bext check`.
    pub fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Basic(_) => "auth: basic",
            Mode::Token { .. } => "auth: token",
        }
    }

    /// The token header, which is removed before the request goes to Phoenix.
    pub fn token_header(&self) -> Option<&HeaderName> {
        match &self.mode {
            Mode::Token { header, .. } => header.as_ref(),
            Mode::Basic(_) => None,
        }
    }

    /// Whether `req` may pass. `secure`: the client came over TLS (the cookie
    /// is then `Secure`).
    pub async fn check(&self, req: &pingora::http::RequestHeader, secure: bool) -> Verdict {
        if self.exempt.iter().any(|p| p.matches(req.uri.path())) {
            return Verdict::Pass;
        }
        match &self.mode {
            Mode::Basic(creds) => self.check_basic(creds, req).await,
            Mode::Token {
                token,
                header,
                visit,
                key,
            } => self.check_token(token, header.as_ref(), *visit, key, req, secure),
        }
    }

    async fn check_basic(
        &self,
        creds: &[Credential],
        req: &pingora::http::RequestHeader,
    ) -> Verdict {
        let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
            return Verdict::Challenge(self.challenge.clone());
        };
        let Some((user, password)) = basic_credentials(value.as_bytes()) else {
            return Verdict::Denied(self.challenge.clone());
        };
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if self.remembered(&digest) {
            return Verdict::Pass;
        }
        // An unknown user is checked against a real hash all the same, so the
        // answer takes as long as for a known one (no user enumeration).
        let (known, hash) = match creds.iter().find(|c| c.user == user) {
            Some(c) => (true, c.hash.clone()),
            None => (false, creds[0].hash.clone()),
        };
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Verdict::Busy;
        }
        let permit = self.checks.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(permit) = permit else {
            return Verdict::Busy;
        };
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&password, &hash)
        })
        .await
        .unwrap_or(false);
        if ok && known {
            self.remember(digest);
            Verdict::Pass
        } else {
            Verdict::Denied(self.challenge.clone())
        }
    }

    fn check_token(
        &self,
        token: &[u8],
        header: Option<&HeaderName>,
        visit: bool,
        key: &[u8; 32],
        req: &pingora::http::RequestHeader,
        secure: bool,
    ) -> Verdict {
        let headers = &req.headers;
        let mut offered = false;
        if let Some(v) = headers.get(http::header::AUTHORIZATION) {
            if let Some(given) = strip_scheme(v.as_bytes(), b"bearer") {
                if constant_time_eq(given, token) {
                    return Verdict::Pass;
                }
                offered = true;
            }
        }
        if let Some(v) = header.and_then(|h| headers.get(h)) {
            if constant_time_eq(v.as_bytes(), token) {
                return Verdict::Pass;
            }
            offered = true;
        }
        if visit {
            let now = unix_now();
            // The first of this cookie in each `Cookie` header.
            let headers = headers.get_all(http::header::COOKIE).iter();
            for v in headers.filter_map(|v| v.to_str().ok()) {
                if let Some(c) = crate::cookies::values(v, COOKIE).next() {
                    if cookie_is_valid(key, c.as_bytes(), now) {
                        return Verdict::Pass;
                    }
                    offered = true;
                }
            }
            if let Some(query) = req.uri.query() {
                if let Some((given, rest)) = take_param(query, VISIT_PARAM) {
                    if constant_time_eq(given.as_bytes(), token) {
                        let path = crate::redirect::single_leading_slash(req.uri.path());
                        let location = match rest.is_empty() {
                            true => path.into_owned(),
                            false => format!("{path}?{rest}"),
                        };
                        let expires = now + self.cookie_ttl.as_secs();
                        let cookie = format!(
                            "{COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
                            sign_cookie(key, expires),
                            self.cookie_ttl.as_secs(),
                            if secure { "; Secure" } else { "" }
                        );
                        return match HeaderValue::from_str(&cookie) {
                            Ok(cookie) => Verdict::Visit { location, cookie },
                            Err(_) => Verdict::Denied(self.challenge.clone()),
                        };
                    }
                    offered = true;
                }
            }
        }
        if offered {
            Verdict::Denied(self.challenge.clone())
        } else {
            Verdict::Challenge(self.challenge.clone())
        }
    }

    fn remembered(&self, digest: &[u8; 32]) -> bool {
        let Ok(map) = self.verified.lock() else {
            return false;
        };
        map.get(digest).is_some_and(|until| *until > Instant::now())
    }

    fn remember(&self, digest: [u8; 32]) {
        let Ok(mut map) = self.verified.lock() else {
            return;
        };
        let now = Instant::now();
        if map.len() >= VERIFIED_MAX {
            map.retain(|_, until| *until > now);
            if map.len() >= VERIFIED_MAX {
                // Still full of live entries: forget them all rather than grow;
                // the cost is one more password check per client.
                map.clear();
            }
        }
        map.insert(digest, now + VERIFIED_TTL);
    }
}

fn compile_basic(list: Vec<String>) -> Result<Vec<Credential>, (&'static str, String)> {
    if list.is_empty() {
        return Err(("basic", "empty: list at least one \"user:HASH\"".into()));
    }
    let mut creds: Vec<Credential> = Vec::with_capacity(list.len());
    for (i, entry) in list.into_iter().enumerate() {
        let Some((user, hash)) = entry.split_once(':') else {
            return Err(("basic", format!("entry {i} is not \"user:HASH\"")));
        };
        if user.is_empty() || user.bytes().any(|b| b < 0x20) {
            return Err((
                "basic",
                format!("entry {i}: the user name is empty or has control characters"),
            ));
        }
        if creds.iter().any(|c| c.user == user) {
            return Err((
                "basic",
                format!("entry {i}: user \"{user}\" is listed twice"),
            ));
        }
        check_hash(hash).map_err(|e| ("basic", format!("entry {i} (user \"{user}\"): {e}")))?;
        creds.push(Credential {
            user: user.to_owned(),
            hash: hash.to_owned(),
        });
    }
    Ok(creds)
}

/// Only password hashes are accepted, never a plain password.
fn check_hash(hash: &str) -> Result<(), String> {
    const HINT: &str = "not a password hash; make one with `bext hash-password`";
    if hash.starts_with("$argon2") {
        return argon2::PasswordHash::new(hash)
            .map(drop)
            .map_err(|e| format!("bad argon2 hash ({e}); {HINT}"));
    }
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        return hash
            .parse::<bcrypt::HashParts>()
            .map(drop)
            .map_err(|e| format!("bad bcrypt hash ({e}); {HINT}"));
    }
    Err(HINT.to_owned())
}

/// Checks `password` against an argon2 or bcrypt hash (CPU-heavy: call off
/// the event loop). Both libraries compare in constant time.
fn verify_password(password: &[u8], hash: &str) -> bool {
    use argon2::PasswordVerifier;
    if hash.starts_with("$argon2") {
        return argon2::PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password, &h)
                .is_ok()
        });
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// An argon2id hash of `password` with the argon2 crate's defaults (OWASP's
/// minimum: 19 MiB, 2 passes, 1 lane) and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// `Basic dXNlcjpwYXNz` → (`user`, `pass` bytes).
fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let encoded = strip_scheme(value, b"basic")?;
    if encoded.len() > 4096 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// `Scheme value` with the scheme matched case-insensitively → `value`.
fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let n = scheme.len();
    if value.len() > n && value[..n].eq_ignore_ascii_case(scheme) && value[n] == b' ' {
        Some(value[n + 1..].trim_ascii())
    } else {
        None
    }
}

/// `query` without `name=value` → (percent-decoded value, the rest).
fn take_param(query: &str, name: &str) -> Option<(String, String)> {
    let mut found = None;
    let mut rest = String::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((k, v)) if k == name && found.is_none() => {
                found = Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
            _ if pair.is_empty() => {}
            _ => {
                if !rest.is_empty() {
                    rest.push('&');
                }
                rest.push_str(pair);
            }
        }
    }
    found.map(|f| (f, rest))
}

type HmacSha256 = Hmac<Sha256>;

/// `EXPIRES.MAC`: the expiry (unix seconds) signed with the rule's key.
fn sign_cookie(key: &[u8; 32], expires: u64) -> String {
    let mut buf = itoa::Buffer::new();
    let exp = buf.format(expires);
    let mac = mac(key, exp.as_bytes());
    format!(
        "{exp}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    )
}

fn cookie_is_valid(key: &[u8; 32], value: &[u8], now: u64) -> bool {
    let Some(dot) = value.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (exp, sig) = (&value[..dot], &value[dot + 1..]);
    let Some(expires) = std::str::from_utf8(exp)
        .ok()
        .and_then(|e| e.parse::<u64>().ok())
    else {
        return false;
    };
    if expires <= now {
        return false;
    }
    let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    constant_time_eq(&sig, &mac(key, exp))
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    // A 32-byte key is always accepted by HMAC.
    let Ok(mut m) = HmacSha256::new_from_slice(key) else {
        return [0; 32];
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            basic: None,
            token: None,
            header: None,
            cookie: None,
            cookie_ttl: None,
            realm: None,
            exempt: vec![],
        }
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> pingora::http::RequestHeader {
        let mut r = pingora::http::RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    const TOKEN: &str = "0123456789abcdef-staging";

    #[tokio::test]
    async fn basic_accepts_argon2_and_bcrypt_hashes_and_remembers_a_good_login() {
        let argon = hash_password("s3cret pw").unwrap();
        let bcrypt = bcrypt::hash("other", 4).unwrap();
        let plan = AuthPlan::compile(AuthSettings {
            basic: Some(vec![format!("alice:{argon}"), format!("bob:{bcrypt}")]),
            exempt: vec!["/health".into()],
            realm: Some("Staging".into()),
            ..settings()
        })
        .unwrap();
        let none = plan.check(&req("/", &[]), false).await;
        assert_eq!(
            none,
            Verdict::Challenge(HeaderValue::from_static(
                "Basic realm=\"Staging\", charset=\"UTF-8\""
            ))
        );
        let good = format!("Basic {}", b64("alice:s3cret pw"));
        assert_eq!(
            plan.check(&req("/", &[("authorization", &good)]), false)
                .await,
            Verdict::Pass
        );
        assert!(plan.remembered(&Sha256::digest(good.as_bytes()).into()));
        let bob = format!("basic {}", b64("bob:other"));
        assert_eq!(
            plan.check(&req("/", &[("authorization", &bob)]), false)
                .await,
            Verdict::Pass
        );
        for bad in ["alice:wrong", "mallory:s3cret pw", "alice", "bob:s3cret pw"] {
            let v = format!("Basic {}", b64(bad));
            let got = plan.check(&req("/", &[("authorization", &v)]), false).await;
            assert!(matches!(got, Verdict::Denied(_)), "{bad}: {got:?}");
        }
        let garbage = plan
            .check(&req("/", &[("authorization", "Basic %%%")]), false)
            .await;
        assert!(matches!(garbage, Verdict::Denied(_)));
        assert_eq!(plan.check(&req("/health", &[]), false).await, Verdict::Pass);
        assert!(matches!(
            plan.check(&req("/healthz", &[]), false).await,
            Verdict::Challenge(_)
        ));
    }

    #[test]
    fn plain_passwords_and_bad_settings_are_refused() {
        let e = AuthPlan::compile(AuthSettings {
            basic: Some(vec!["alice:hunter2".into()]),
            ..settings()
        })
        .unwrap_err();
        assert!(e.1.contains("bext hash-password"), "{e:?}");
        let e = AuthPlan::compile(AuthSettings {
            token: Some("short".into()),
            ..settings()
        })
        .unwrap_err();
        assert_eq!(e.0, "token");
        let e = AuthPlan::compile(AuthSettings {
            token: Some(TOKEN.into()),
            basic: Some(vec![]),
            ..settings()
        })
        .unwrap_err();
        assert_eq!(e.0, "basic");
        assert_eq!(AuthPlan::compile(settings()).unwrap_err().0, "basic");
        let e = AuthPlan::compile(AuthSettings {
            basic: Some(vec![format!("a:{}", bcrypt::hash("x", 4).unwrap())]),
            header: Some("X-Token".into()),
            ..settings()
        })
        .unwrap_err();
        assert_eq!(e.0, "header");
    }

    #[tokio::test]
    async fn token_by_bearer_header_cookie_and_visit() {
        let plan = AuthPlan::compile(AuthSettings {
            token: Some(TOKEN.into()),
            header: Some("X-Staging-Token".into()),
            ..settings()
        })
        .unwrap();
        assert!(matches!(
            plan.check(&req("/", &[]), false).await,
            Verdict::Challenge(_)
        ));
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(
            plan.check(&req("/", &[("authorization", &bearer)]), false)
                .await,
            Verdict::Pass
        );
        assert_eq!(
            plan.check(&req("/", &[("x-staging-token", TOKEN)]), false)
                .await,
            Verdict::Pass
        );
        let wrong = plan
            .check(&req("/", &[("x-staging-token", "nope")]), false)
            .await;
        assert!(matches!(wrong, Verdict::Denied(_)));

        let visit = plan
            .check(
                &req(
                    &format!("//evil.example/p?a=1&{VISIT_PARAM}={TOKEN}&b=2"),
                    &[],
                ),
                true,
            )
            .await;
        let Verdict::Visit { location, cookie } = visit else {
            panic!("{visit:?}");
        };
        assert_eq!(location, "/evil.example/p?a=1&b=2");
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.ends_with("; Secure") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap();
        let sent = format!("theme=dark; {pair}");
        assert_eq!(
            plan.check(&req("/live/websocket", &[("cookie", &sent)]), false)
                .await,
            Verdict::Pass
        );

        let value = pair.split_once('=').unwrap().1;
        let (exp, sig) = value.split_once('.').unwrap();
        let later: u64 = exp.parse::<u64>().unwrap() + 10;
        let forged = format!("{COOKIE}={later}.{sig}");
        assert!(matches!(
            plan.check(&req("/", &[("cookie", &forged)]), false).await,
            Verdict::Denied(_)
        ));
        let key = match &plan.mode {
            Mode::Token { key, .. } => *key,
            Mode::Basic(_) => unreachable!(),
        };
        let expired = sign_cookie(&key, unix_now() - 1);
        assert!(!cookie_is_valid(&key, expired.as_bytes(), unix_now()));
        let bad_visit = plan
            .check(&req(&format!("/?{VISIT_PARAM}=guess"), &[]), false)
            .await;
        assert!(matches!(bad_visit, Verdict::Denied(_)));
    }

    #[test]
    fn the_verified_map_stays_bounded() {
        let plan = AuthPlan::compile(AuthSettings {
            token: Some(TOKEN.into()),
            ..settings()
        })
        .unwrap();
        for i in 0..(VERIFIED_MAX as u32 * 2 + 5) {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            plan.remember(d);
        }
        assert!(plan.verified.lock().unwrap().len() <= VERIFIED_MAX);
    }

    #[test]
    fn params_and_cookies_are_split_exactly() {
        assert_eq!(
            take_param("bext_token=a%2Bb", VISIT_PARAM),
            Some(("a+b".into(), String::new()))
        );
        assert_eq!(take_param("xbext_token=a", VISIT_PARAM), None);
        assert_eq!(strip_scheme(b"Bearer  tok ", b"bearer"), Some(&b"tok"[..]));
        assert_eq!(strip_scheme(b"Bearertok", b"bearer"), None);
    }
}
