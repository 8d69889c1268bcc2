//! Whether a response may be stored, and for how long (RFC 9111 §3, §4.2).
//!
//! Stored only when all hold: GET (HEAD is answered from GET entries but never
//! fills them), a status cacheable by default, no `Set-Cookie`, no `private`,
//! `no-store` or `Vary: *`, no `Authorization` on the request unless the
//! response allows it (`public`, `s-maxage`, `must-revalidate`), a size within
//! `max_object_size`, a tag set within bounds, and an explicit freshness
//! lifetime (`s-maxage`, `max-age`, `Expires`) or the route's `cache_ttl`.
//! There is no heuristic freshness: Phoenix marks what may be cached.

use std::time::{Duration, SystemTime};

use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::filters::{calculate_expires_header_time, calculate_serve_stale_durations};
use pingora::cache::{CacheMeta, CacheMetaDefaults};
use pingora::http::{RequestHeader, ResponseHeader};

use super::key;
use super::tags::{self, TagError};
use crate::config::CachePlan;

/// Why a response was not stored; shown as `detail=` in `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Head,
    Status,
    SetCookie,
    Private,
    NoStore,
    Authorization,
    NoFreshness,
    Vary,
    Tags,
    TooLarge,
    Encoding,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Head => "head",
            Refusal::Status => "status",
            Refusal::SetCookie => "set-cookie",
            Refusal::Private => "private",
            Refusal::NoStore => "no-store",
            Refusal::Authorization => "authorization",
            Refusal::NoFreshness => "no-freshness",
            Refusal::Vary => "vary",
            Refusal::Tags => "tags",
            Refusal::TooLarge => "too-large",
            Refusal::Encoding => "content-encoding",
        }
    }
}

/// Statuses that may be stored (RFC 9110 §15.1 "heuristically cacheable"),
/// here still only with explicit freshness. 206 and 304 never fill the cache.
fn status_storable(code: u16) -> bool {
    matches!(
        code,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The decision for one upstream response: its metadata and tags when it may
/// be stored.
pub fn decide(
    req: &RequestHeader,
    resp: &ResponseHeader,
    ttl_override: Option<Duration>,
    plan: &CachePlan,
) -> Result<(CacheMeta, Vec<Box<str>>), Refusal> {
    if req.method == http::Method::HEAD {
        return Err(Refusal::Head);
    }
    if !status_storable(resp.status.as_u16()) {
        return Err(Refusal::Status);
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        return Err(Refusal::SetCookie);
    }
    if key::vary_names(&resp.headers).is_none() {
        return Err(Refusal::Vary);
    }
    let too_large = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > plan.max_object_size);
    if too_large {
        return Err(Refusal::TooLarge);
    }
    let tags = tags::parse(&resp.headers).map_err(|e| match e {
        TagError::TooMany | TagError::TooLong => Refusal::Tags,
    })?;
    let cc = CacheControl::from_resp_headers(resp);
    if let Some(cc) = &cc {
        if cc.no_store() {
            return Err(Refusal::NoStore);
        }
        if cc.is_cacheable() == Cacheable::No {
            return Err(Refusal::Private);
        }
    }
    if req.headers.contains_key(http::header::AUTHORIZATION)
        && !cc
            .as_ref()
            .is_some_and(|c| c.allow_caching_authorized_req())
    {
        return Err(Refusal::Authorization);
    }
    let now = SystemTime::now();
    let lifetime = match ttl_override {
        Some(ttl) => Some(ttl),
        None => cc.as_ref().and_then(|c| c.fresh_duration()).or_else(|| {
            calculate_expires_header_time(resp)
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
        }),
    };
    let Some(lifetime) = lifetime else {
        return Err(Refusal::NoFreshness);
    };
    // A zero lifetime is stored already stale: it is revalidated every time.
    let fresh_until = if lifetime.is_zero() {
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now.checked_add(lifetime).unwrap_or(now)
    };
    let defaults = CacheMetaDefaults::new(
        |_| None,
        secs_u32(plan.stale_while_revalidate),
        secs_u32(plan.stale_if_error),
    );
    let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &defaults);
    let mut header = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut header);
    }
    // The tags are indexed already; storing the header without them spares
    // every hit the work of removing them again (see `EdgeCache::finish_response`).
    if !plan.expose_tags {
        tags::strip(&mut header);
    }
    Ok((CacheMeta::new(fresh_until, now, swr, sie, header), tags))
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get() -> RequestHeader {
        RequestHeader::build("GET", b"/", None).unwrap()
    }

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn verdict(req: &RequestHeader, headers: &[(&str, &str)]) -> Result<u64, Refusal> {
        decide(req, &resp(headers), None, &CachePlan::default()).map(|(m, _)| m.fresh_sec())
    }

    #[test]
    fn phoenix_default_and_cookies_are_never_stored() {
        let phoenix = [("cache-control", "max-age=0, private, must-revalidate")];
        assert_eq!(verdict(&get(), &phoenix), Err(Refusal::Private));
        let cookie = [
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "_app=1"),
        ];
        assert_eq!(verdict(&get(), &cookie), Err(Refusal::SetCookie));
        assert_eq!(
            verdict(&get(), &[("cache-control", "no-store")]),
            Err(Refusal::NoStore)
        );
        assert_eq!(verdict(&get(), &[]), Err(Refusal::NoFreshness));
    }

    #[test]
    fn freshness_sources() {
        assert_eq!(
            verdict(&get(), &[("cache-control", "public, max-age=60")]),
            Ok(60)
        );
        assert_eq!(
            verdict(&get(), &[("cache-control", "max-age=60, s-maxage=120")]),
            Ok(120)
        );
        let later = httpdate(SystemTime::now() + Duration::from_secs(3600));
        let ttl = verdict(&get(), &[("expires", &later)]).unwrap();
        assert!((3590..=3600).contains(&ttl), "{ttl}");
        let r = resp(&[("cache-control", "max-age=5")]);
        let (m, _) = decide(
            &get(),
            &r,
            Some(Duration::from_secs(300)),
            &CachePlan::default(),
        )
        .unwrap();
        assert_eq!(m.fresh_sec(), 300);
    }

    #[test]
    fn authorization_needs_public() {
        let mut req = get();
        req.insert_header("authorization", "Bearer x").unwrap();
        assert_eq!(
            verdict(&req, &[("cache-control", "max-age=60")]),
            Err(Refusal::Authorization)
        );
        assert_eq!(
            verdict(&req, &[("cache-control", "public, max-age=60")]),
            Ok(60)
        );
    }

    #[test]
    fn head_vary_star_and_partial_are_not_stored() {
        let head = RequestHeader::build("HEAD", b"/", None).unwrap();
        assert_eq!(
            verdict(&head, &[("cache-control", "max-age=60")]),
            Err(Refusal::Head)
        );
        let vary = [("cache-control", "max-age=60"), ("vary", "*")];
        assert_eq!(verdict(&get(), &vary), Err(Refusal::Vary));
        let mut r = resp(&[("cache-control", "max-age=60")]);
        r.set_status(206).unwrap();
        assert!(decide(&get(), &r, None, &CachePlan::default()).is_err());
    }

    /// IMF-fixdate by hand (the `httpdate` crate is not a direct dependency).
    fn httpdate(t: SystemTime) -> String {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let days = secs / 86400;
        let rem = secs % 86400;
        let (y, m, d) = civil(days as i64);
        let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
        let mon = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ][(m - 1) as usize];
        format!(
            "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    fn civil(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }
}
