//! Per-client request rate limiting: a token bucket (GCRA, "generic cell rate
//! algorithm") whose per-key state lives in a count-min style sketch of
//! theoretical-arrival-times. Memory is fixed at construction (`ROWS x WIDTH`
//! atomics, 1 MiB), so a spray from a million addresses cannot grow it.
//! Lookups are lock-free: 4 relaxed loads and, when admitted, 4 `fetch_max`.
//!
//! A key's state is the *minimum* of its cells; another key sharing a cell can
//! only raise it, so collisions make a limit stricter, never looser (as with
//! count-min). With 4 rows of 32768 cells a legitimate client is affected only
//! when all four of its cells were touched within the last emission interval.
//!
//! With `[cluster]` each limiter also records what it admits (`shared.rs`),
//! and [`RateLimiter::charge`] applies what other nodes admitted: the
//! client's arrival time moves on by `count × interval`, as if those
//! requests had come here, so the local check (still the only one on the
//! request path) sees the cluster's traffic one sync period late. The
//! sketch is indexed by the client's cluster-wide name so a remote count
//! finds the same cells.
//!
//! Why not `pingora_limits::rate::Rate`: it counts events in fixed windows, so
//! a burst allowance and a sustained rate cannot both be expressed (a client
//! gets up to twice the limit across a window boundary), and its reset path
//! asserts `new >= now - 1000` on a `u64` of milliseconds, which underflows
//! (panics) when windows shorter than a second race in the first second.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::client_key::ClientKey;
use super::shared::Admissions;
use super::RateSpec;

const ROWS: usize = 4;
const WIDTH: usize = 1 << 15;

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Over the limit; the client may retry after this many whole seconds (≥ 1).
    Deny {
        retry_after_secs: u32,
    },
}

pub struct RateLimiter {
    /// Nanoseconds between two requests at the sustained rate.
    interval_ns: u64,
    /// How far ahead of "now" a key's arrival time may run: `burst x interval`.
    tolerance_ns: u64,
    cells: Box<[AtomicU64]>,
    hasher: RandomState,
    epoch: Instant,
    /// `[cluster]`: this node's admissions since the last sync.
    shared: Option<Admissions>,
    spec: RateSpec,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval_ns", &self.interval_ns)
            .field("tolerance_ns", &self.tolerance_ns)
            .finish()
    }
}

impl RateLimiter {
    /// `shared`: record admissions for the cluster's sync (`[cluster]`).
    pub fn new(spec: RateSpec, shared: bool) -> RateLimiter {
        let per_ns = u64::try_from(spec.per.as_nanos()).unwrap_or(u64::MAX);
        let interval_ns = (per_ns / u64::from(spec.requests.max(1))).max(1);
        RateLimiter {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(spec.burst.max(1))),
            cells: (0..ROWS * WIDTH).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            shared: shared.then(Admissions::new),
            spec,
        }
    }

    /// The spec, as the other nodes know it: counts are only exchanged
    /// between limiters with the same one (FNV-1a, stable across builds).
    pub fn fingerprint(&self) -> u64 {
        let per = u64::try_from(self.spec.per.as_nanos()).unwrap_or(u64::MAX);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in [
            u64::from(self.spec.requests),
            per,
            u64::from(self.spec.burst),
        ]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// The admissions since the last call (`[cluster]`), and how many did
    /// not fit the table. Nothing without `[cluster]`.
    pub(crate) fn drain_admissions(&self, out: &mut Vec<(u64, u16)>) -> u64 {
        self.shared.as_ref().map_or(0, |t| t.drain(out))
    }

    /// Charges client `hash` for `count` requests another node admitted.
    /// The arrival time may run ahead of now by at most two bursts: a
    /// client owes at most one burst beyond its own, however late or
    /// inflated the counts (a hostile publisher cannot lock a client out
    /// for longer than that).
    pub(crate) fn charge(&self, hash: u64, count: u16) {
        let now = self.now_ns();
        let slots = self.slots_of(hash);
        let tat = self.tat(&slots);
        let cap = now.saturating_add(self.tolerance_ns.saturating_mul(2));
        let next = tat
            .max(now)
            .saturating_add(self.interval_ns.saturating_mul(u64::from(count)))
            .min(cap.max(tat));
        for &s in &slots {
            self.cells[s].fetch_max(next, Ordering::Relaxed);
        }
    }

    /// Bytes held by the sketch (constant).
    pub fn memory_bytes() -> usize {
        ROWS * WIDTH * std::mem::size_of::<AtomicU64>()
    }

    pub fn check(&self, key: ClientKey) -> Decision {
        self.check_at(key, self.now_ns())
    }

    fn now_ns(&self) -> u64 {
        // Offset by the burst tolerance so that "never seen" (0) is a full bucket.
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(self.tolerance_ns)
    }

    fn slots_of(&self, cluster_hash: u64) -> [usize; ROWS] {
        // Double hashing (Kirsch-Mitzenmacher): row i uses h1 + i*h2. The
        // per-process hasher keeps cell collisions unpredictable.
        let h = self.hasher.hash_one(cluster_hash);
        let (h1, h2) = (h as u32 as usize, ((h >> 32) as usize) | 1);
        std::array::from_fn(|i| i * WIDTH + (h1.wrapping_add(i.wrapping_mul(h2)) % WIDTH))
    }

    fn tat(&self, slots: &[usize; ROWS]) -> u64 {
        slots
            .iter()
            .map(|&s| self.cells[s].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    fn check_at(&self, key: ClientKey, now: u64) -> Decision {
        let hash = key.cluster_hash();
        let slots = self.slots_of(hash);
        let tat = self.tat(&slots);
        let next = tat.max(now).saturating_add(self.interval_ns);
        let ahead = next - now;
        if ahead > self.tolerance_ns {
            let wait = Duration::from_nanos(ahead - self.tolerance_ns);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Decision::Deny {
                retry_after_secs: u32::try_from(secs.max(1)).unwrap_or(u32::MAX),
            };
        }
        for &s in &slots {
            self.cells[s].fetch_max(next, Ordering::Relaxed);
        }
        if let Some(t) = &self.shared {
            t.record(hash);
        }
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, per_ms: u64, burst: u32) -> RateLimiter {
        RateLimiter::new(
            RateSpec {
                requests,
                per: Duration::from_millis(per_ms),
                burst,
            },
            true,
        )
    }

    fn key(n: u32) -> ClientKey {
        ClientKey::new(std::net::Ipv4Addr::from(n).into(), 64)
    }

    #[test]
    fn burst_then_sustained_rate() {
        let l = limiter(10, 1000, 5); // one request per 100 ms, bucket of 5
        let t0 = l.tolerance_ns;
        let allowed = (0..20)
            .filter(|_| l.check_at(key(1), t0) == Decision::Allow)
            .count();
        assert_eq!(allowed, 5);
        // 100 ms later exactly one more token.
        let t1 = t0 + 100_000_000;
        assert_eq!(l.check_at(key(1), t1), Decision::Allow);
        assert!(matches!(l.check_at(key(1), t1), Decision::Deny { .. }));
        // Another client is unaffected.
        assert_eq!(l.check_at(key(2), t1), Decision::Allow);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let l = limiter(1, 10_000, 1); // one request per 10 s
        let t0 = l.tolerance_ns;
        assert_eq!(l.check_at(key(1), t0), Decision::Allow);
        assert_eq!(
            l.check_at(key(1), t0 + 1),
            Decision::Deny {
                retry_after_secs: 10
            }
        );
    }

    #[test]
    fn a_spray_of_many_keys_barely_affects_a_fresh_client() {
        let l = limiter(50, 1000, 100);
        let now = l.tolerance_ns;
        for n in 0..1_000_000u32 {
            l.check_at(key(n), now);
        }
        // Every cell was touched by ~120 sprayers; a new client still has its
        // burst minus a little collision noise.
        let fresh = (0..100)
            .filter(|_| l.check_at(key(u32::MAX), now) == Decision::Allow)
            .count();
        assert!(fresh >= 50, "fresh client allowed {fresh}");
        assert_eq!(RateLimiter::memory_bytes(), 1 << 20);
    }

    #[test]
    fn admissions_are_recorded_and_remote_ones_are_charged() {
        let l = limiter(10, 1000, 5); // 100 ms per request, bucket of 5
        let now = l.tolerance_ns;
        for _ in 0..3 {
            assert_eq!(l.check_at(key(1), now), Decision::Allow);
        }
        let mut out = vec![];
        assert_eq!(l.drain_admissions(&mut out), 0);
        assert_eq!(out, vec![(key(1).cluster_hash(), 3)]);

        // Another node admitted 2 of key(2)'s requests: 3 of 5 left here.
        l.charge(key(2).cluster_hash(), 2);
        let t = l.now_ns();
        let allowed = (0..10)
            .filter(|_| l.check_at(key(2), t) == Decision::Allow)
            .count();
        assert_eq!(allowed, 3);
        // However much is charged, a client owes at most one more burst.
        l.charge(key(3).cluster_hash(), 4095);
        let t = l.now_ns();
        let slots = l.slots_of(key(3).cluster_hash());
        assert!(l.tat(&slots) <= t + 2 * l.tolerance_ns);
    }

    #[test]
    fn specs_have_stable_fingerprints() {
        assert_eq!(
            limiter(10, 1000, 5).fingerprint(),
            limiter(10, 1000, 5).fingerprint()
        );
        assert_ne!(
            limiter(10, 1000, 5).fingerprint(),
            limiter(10, 1000, 6).fingerprint()
        );
    }
}
