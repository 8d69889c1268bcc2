//! The signed LiveView affinity cookie. Its value is
//! `NODE_ID.ISSUED.SIG`: the node's stable id (never its address), the issue
//! time in Unix seconds, and the first 16 bytes of
//! HMAC-SHA256(secret, "POOL\0NODE_ID\0ISSUED") in unpadded base64url.
//! A cookie that is oversized, garbled, forged, expired, from the future or
//! for another pool is ignored (the caller falls back to hashing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::config::upstream::StickyPlan;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the HMAC kept in the cookie.
const SIG_LEN: usize = 16;
/// Longest cookie value considered at all.
const MAX_VALUE_LEN: usize = 128;
/// Clock skew tolerated for an issue time in the future.
const FUTURE_SKEW: u64 = 60;

pub struct Sticky {
    cookie: String,
    /// Keyed once; cloned per signature (saves the key schedule).
    mac: HmacSha256,
    pool: String,
    max_age: Duration,
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("cookie", &self.cookie)
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sticky {
    pub fn new(pool: &str, plan: &StickyPlan) -> Option<Sticky> {
        Some(Sticky {
            cookie: plan.cookie.clone(),
            mac: HmacSha256::new_from_slice(&plan.secret).ok()?,
            pool: pool.to_string(),
            max_age: plan.max_age,
        })
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    fn sign(&self, node_id: &str, issued: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(self.pool.as_bytes());
        mac.update(b"\0");
        mac.update(node_id.as_bytes());
        mac.update(b"\0");
        mac.update(issued.to_string().as_bytes());
        mac
    }

    /// The node id named by a valid cookie among the request's `Cookie` headers.
    pub fn node_in<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        self.node_in_at(headers, now_secs())
    }

    fn node_in_at<'h>(&self, headers: &'h HeaderMap, now: u64) -> Option<&'h str> {
        crate::cookies::all(headers, &self.cookie)
            .find_map(|value| self.verify(value.trim_matches('"'), now))
    }

    fn verify<'v>(&self, value: &'v str, now: u64) -> Option<&'v str> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let mut parts = value.split('.');
        let (id, issued, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || id.is_empty() || issued.len() > 20 {
            return None;
        }
        let issued_n: u64 = issued.parse().ok()?;
        if issued_n > now + FUTURE_SKEW || now.saturating_sub(issued_n) > self.max_age.as_secs() {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if sig.len() != SIG_LEN {
            return None;
        }
        // Constant-time comparison of the truncated tag.
        self.sign(id, issued_n).verify_truncated_left(&sig).ok()?;
        Some(id)
    }

    /// The `Set-Cookie` value pinning the client to `node_id`.
    pub fn set_cookie(&self, node_id: &str, secure: bool) -> Option<HeaderValue> {
        self.set_cookie_at(node_id, secure, now_secs())
    }

    fn set_cookie_at(&self, node_id: &str, secure: bool, now: u64) -> Option<HeaderValue> {
        let tag = self.sign(node_id, now).finalize().into_bytes();
        let sig = URL_SAFE_NO_PAD.encode(&tag[..SIG_LEN]);
        let value = format!(
            "{}={node_id}.{now}.{sig}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            self.cookie,
            self.max_age.as_secs(),
            if secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;

    fn sticky(secret: &str) -> Sticky {
        let plan = StickyPlan {
            cookie: "_bext_node".into(),
            secret: secret.as_bytes().to_vec(),
            max_age: Duration::from_secs(3600),
        };
        Sticky::new("phoenix", &plan).unwrap()
    }

    fn cookie_of(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=1; {pair}; b=2")).unwrap(),
        );
        h
    }

    #[test]
    fn issued_cookie_round_trips_with_attributes() {
        let s = sticky("0123456789abcdef0123");
        let set = s.set_cookie_at("node-b", false, 1_000_000).unwrap();
        let text = set.to_str().unwrap();
        assert!(text.starts_with("_bext_node=node-b.1000000."), "{text}");
        assert!(
            text.contains("HttpOnly") && text.contains("SameSite=Lax") && text.contains("Path=/")
        );
        assert!(!text.contains("Secure"));
        assert!(s
            .set_cookie_at("x", true, 1)
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        assert_eq!(s.node_in_at(&cookie_of(&set), 1_000_010), Some("node-b"));
    }

    #[test]
    fn forged_expired_foreign_and_oversized_cookies_are_ignored() {
        let s = sticky("0123456789abcdef0123");
        let set = s.set_cookie_at("node-b", false, 1_000_000).unwrap();
        let good = cookie_of(&set);
        // Expired, and from the future.
        assert_eq!(s.node_in_at(&good, 1_000_000 + 3601), None);
        assert_eq!(s.node_in_at(&good, 1_000_000 - 61), None);
        // Another secret.
        assert_eq!(
            sticky("another-secret-of-16+").node_in_at(&good, 1_000_010),
            None
        );
        // Node id swapped under the same signature.
        let forged = good
            .get(COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .replace("node-b", "node-a");
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&forged).unwrap());
        assert_eq!(s.node_in_at(&h, 1_000_010), None);
        for junk in [
            "_bext_node=",
            "_bext_node=a.b.c",
            "_bext_node=....",
            "_bext_node=node-b.1000000",
        ] {
            h.insert(COOKIE, HeaderValue::from_str(junk).unwrap());
            assert_eq!(s.node_in_at(&h, 1_000_010), None, "{junk}");
        }
        let huge = format!(
            "_bext_node={}.1000000.AAAAAAAAAAAAAAAAAAAAAA",
            "n".repeat(500)
        );
        h.insert(COOKIE, HeaderValue::from_str(&huge).unwrap());
        assert_eq!(s.node_in_at(&h, 1_000_010), None);
    }
}
