//! Concurrency caps: open connections per client IP and in total, open
//! websocket tunnels per client IP. Counts are taken when a connection (or
//! tunnel) starts and given back by dropping the returned permit, so they are
//! exact up to sketch collisions.
//!
//! Per-IP counts use `pingora_limits::inflight::Inflight`: a count-min sketch
//! (4 x 8192 counters, 256 KiB) with decrement on guard drop. It is bounded by
//! construction (a 1M-address spray costs no memory) and can only overestimate:
//! a client is refused early only if all four of its counters are shared with
//! busy addresses. An exact map would need eviction, and evicting a live
//! count would let an attacker reset its own counter.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use pingora_limits::inflight::{Guard, Inflight};

use super::client_key::ClientKey;

/// Why a connection or tunnel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerIp,
}

pub struct ConnLimiter {
    total: Arc<AtomicUsize>,
    /// Caps are atomics: a reload in place changes them without losing the
    /// tallies of what is open.
    max_total: AtomicUsize,
    per_ip: Inflight,
    max_per_ip: AtomicUsize,
}

/// Held for the life of a connection (or a websocket tunnel).
pub struct Permit {
    total: Option<Arc<AtomicUsize>>,
    _per_ip: Option<Guard>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(total) = &self.total {
            total.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ConnLimiter {
    /// `0` means unlimited for either cap.
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnLimiter {
        ConnLimiter {
            total: Arc::new(AtomicUsize::new(0)),
            max_total: AtomicUsize::new(max_total),
            per_ip: Inflight::new(),
            max_per_ip: AtomicUsize::new(max_per_ip),
        }
    }

    /// New caps (a reload in place); open slots keep counting.
    pub fn set_caps(&self, max_total: usize, max_per_ip: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
    }

    /// Connections (or tunnels) currently held.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes a slot for `key`; `exempt` keys (allowlisted, trusted proxies)
    /// only count towards the total.
    pub fn acquire(&self, key: Option<ClientKey>, exempt: bool) -> Result<Permit, Refusal> {
        let now = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut permit = Permit {
            total: Some(self.total.clone()),
            _per_ip: None,
        };
        let (max_total, max_per_ip) = (
            self.max_total.load(Ordering::Relaxed),
            self.max_per_ip.load(Ordering::Relaxed),
        );
        if max_total > 0 && now > max_total {
            return Err(Refusal::Total);
        }
        if let (Some(key), false, true) = (key, exempt, max_per_ip > 0) {
            let (guard, count) = self.per_ip.incr(key.raw(), 1);
            permit._per_ip = Some(guard);
            if usize::try_from(count).unwrap_or(usize::MAX) > max_per_ip {
                return Err(Refusal::PerIp);
            }
        }
        Ok(permit)
    }
}

/// Whether `ip` is in one of `nets`.
pub fn listed(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<ClientKey> {
        Some(ClientKey::new(s.parse().unwrap(), 64))
    }

    #[test]
    fn per_ip_cap_counts_and_gives_back() {
        let l = ConnLimiter::new(0, 2);
        let a = l.acquire(key("192.0.2.1"), false).unwrap();
        let _b = l.acquire(key("192.0.2.1"), false).unwrap();
        assert_eq!(
            l.acquire(key("192.0.2.1"), false).unwrap_err(),
            Refusal::PerIp
        );
        assert!(l.acquire(key("192.0.2.2"), false).is_ok());
        assert!(l.acquire(key("192.0.2.1"), true).is_ok(), "exempt");
        drop(a);
        assert!(l.acquire(key("192.0.2.1"), false).is_ok());
        assert_eq!(l.open(), 1, "refused and dropped permits were given back");
    }

    #[test]
    fn total_cap() {
        let l = ConnLimiter::new(2, 0);
        let _a = l.acquire(key("192.0.2.1"), false).unwrap();
        let _b = l.acquire(key("192.0.2.2"), false).unwrap();
        assert_eq!(
            l.acquire(key("192.0.2.3"), true).unwrap_err(),
            Refusal::Total
        );
        assert_eq!(l.open(), 2);
    }
}
