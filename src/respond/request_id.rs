//! `X-Request-Id`: keep a sane client-supplied id, otherwise mint one. The id
//! travels to Phoenix (Plug.RequestId picks it up), back to the client, and into
//! error pages and logs so one request can be followed end to end.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::HeaderValue;

pub const HEADER: &str = "x-request-id";
const MAX_LEN: usize = 128;

/// Returns the request's id: the client's when it is well-formed, a fresh one otherwise.
pub fn from_client(value: Option<&HeaderValue>) -> HeaderValue {
    match value {
        Some(v) if is_sane(v.as_bytes()) => v.clone(),
        _ => mint(),
    }
}

fn is_sane(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LEN
        && v.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=')
        })
}

/// 32 lowercase hex chars: a scrambled counter keyed by a per-process random seed,
/// so ids are unique within the process and differ across restarts.
pub fn mint() -> HeaderValue {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| RandomState::new().build_hasher().finish());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 is a bijection, so distinct counters give distinct ids.
    let hi = splitmix64(seed.wrapping_add(n));
    let lo = splitmix64(splitmix64(seed) ^ n);
    let mut out = [0u8; 32];
    hex(hi, &mut out[..16]);
    hex(lo, &mut out[16..]);
    // The bytes are ASCII hex, always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hex(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_32_hex_and_distinct() {
        let a = mint();
        let b = mint();
        assert_eq!(a.len(), 32);
        assert!(a
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn sane_client_ids_are_kept_and_others_replaced() {
        let v = HeaderValue::from_static("abc-123");
        assert_eq!(from_client(Some(&v)), v);
        let bad = HeaderValue::from_static("<script>");
        assert_ne!(from_client(Some(&bad)), bad);
        let long = HeaderValue::from_str(&"a".repeat(200)).unwrap();
        assert_eq!(from_client(Some(&long)).len(), 32);
    }
}
