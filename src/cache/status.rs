//! `Cache-Status` (RFC 9211) for every response of a cacheable route, so an
//! operator can see what the cache did: `bext; hit; ttl=42`,
//! `bext; fwd=uri-miss; fwd-status=200; stored`, `bext; fwd=uri-miss;
//! fwd-status=200; detail=private`, `bext; fwd=method`, ...

use std::fmt::Write;
use std::time::SystemTime;

use pingora::cache::{CacheMeta, CachePhase};

use super::CacheCtx;

pub const HEADER: &str = "cache-status";
const NAME: &str = "bext";

/// Seconds of freshness left (negative once stale).
fn ttl(meta: &CacheMeta) -> i64 {
    let now = SystemTime::now();
    match meta.fresh_until().duration_since(now) {
        Ok(left) => left.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Everything the header needs, gathered from the session by the caller.
pub struct Observed<'a> {
    pub phase: CachePhase,
    pub meta: Option<&'a CacheMeta>,
    /// The lookup went to a `Vary` secondary slot (a variant was missing).
    pub vary_lookup: bool,
    pub status: u16,
}

pub fn render(o: &Observed, ctx: &CacheCtx) -> String {
    let mut s = String::with_capacity(64);
    s.push_str(NAME);
    if let Some(reason) = ctx.bypass {
        let _ = write!(s, "; fwd={reason}");
        return s;
    }
    let ttl = o.meta.map(ttl);
    let fwd = if ctx.found.is_some() {
        "stale"
    } else if o.vary_lookup {
        "vary-miss"
    } else {
        "uri-miss"
    };
    match o.phase {
        CachePhase::Hit => {
            s.push_str("; hit");
            push_ttl(&mut s, ttl);
        }
        CachePhase::Stale | CachePhase::StaleUpdating => {
            s.push_str("; hit");
            push_ttl(&mut s, ttl);
            s.push_str(if ctx.upstream_error {
                "; fwd=stale; detail=stale-if-error"
            } else {
                "; detail=stale-while-revalidate"
            });
        }
        CachePhase::Revalidated => {
            s.push_str("; fwd=stale; fwd-status=304");
            push_ttl(&mut s, ttl);
            s.push_str("; stored");
        }
        CachePhase::RevalidatedNoCache(reason) => {
            let _ = write!(s, "; fwd=stale; fwd-status=304; detail={}", reason.as_str());
        }
        CachePhase::Miss | CachePhase::Expired => {
            let _ = write!(s, "; fwd={fwd}; fwd-status={}", o.status);
            match ctx.stored {
                Some(Ok(())) => {
                    push_ttl(&mut s, ttl);
                    s.push_str("; stored");
                }
                Some(Err(r)) => {
                    let _ = write!(s, "; detail={}", r.as_str());
                }
                None => {}
            }
        }
        CachePhase::Disabled(reason) => {
            let _ = write!(s, "; fwd={fwd}; fwd-status={}", o.status);
            match ctx.stored {
                Some(Err(r)) => {
                    let _ = write!(s, "; detail={}", r.as_str());
                }
                _ => {
                    let _ = write!(s, "; detail={}", detail_token(reason.as_str()));
                }
            }
        }
        _ => s.push_str("; fwd=bypass"),
    }
    s
}

fn push_ttl(s: &mut String, ttl: Option<i64>) {
    if let Some(t) = ttl {
        let _ = write!(s, "; ttl={t}");
    }
}

/// Pingora's reason names (`CacheLockTimeout`, `Custom(...)`) as an sf-token.
fn detail_token(reason: &str) -> String {
    let t: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if t.starts_with(|c: char| c.is_ascii_alphabetic()) {
        t
    } else {
        format!("x{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::Refusal;

    fn obs(phase: CachePhase) -> Observed<'static> {
        Observed {
            phase,
            meta: None,
            vary_lookup: false,
            status: 200,
        }
    }

    #[test]
    fn renders_the_common_cases() {
        let mut ctx = CacheCtx::default();
        assert_eq!(render(&obs(CachePhase::Hit), &ctx), "bext; hit");
        ctx.stored = Some(Ok(()));
        assert_eq!(
            render(&obs(CachePhase::Miss), &ctx),
            "bext; fwd=uri-miss; fwd-status=200; stored"
        );
        ctx.stored = Some(Err(Refusal::Private));
        assert_eq!(
            render(
                &obs(CachePhase::Disabled(
                    pingora::cache::NoCacheReason::OriginNotCache
                )),
                &ctx
            ),
            "bext; fwd=uri-miss; fwd-status=200; detail=private"
        );
        ctx.bypass = Some("method");
        assert_eq!(render(&obs(CachePhase::Miss), &ctx), "bext; fwd=method");
    }
}
