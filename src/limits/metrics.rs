//! The limits' own metrics: refusals by reason, and the client connections
//! the listeners accepted, refused and hold open, and their TLS handshakes,
//! by listener and protocol. Registered in
//! the proxy's registry when the plan is built; `GET /__bext/limits` reads
//! the same counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

use super::Reason;
use crate::exchange::Protocol;
use crate::telemetry::registry::Sub;

/// The kind of listener a client connection came in on (a bounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain TCP (`server.listen`).
    Tcp,
    /// TLS over TCP (`tls.listen`).
    Tls,
    /// QUIC (HTTP/3 on `tls.listen`, udp).
    Quic,
}

impl Listener {
    pub const ALL: [Listener; 3] = [Listener::Tcp, Listener::Tls, Listener::Quic];

    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Tcp => "tcp",
            Listener::Tls => "tls",
            Listener::Quic => "quic",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A failed handshake's error is logged at most this often (with a count):
/// scanners and broken clients fail handshakes all day, but a certificate
/// problem on bext's side must still reach the error log.
const HANDSHAKE_WARN_EVERY: Duration = Duration::from_secs(60);

pub struct LimitMetrics {
    /// Indexed by `Reason as usize`.
    rejected: Vec<IntCounter>,
    /// Indexed by `Listener::index() * Protocol::ALL.len() + Protocol::index()`.
    accepted: Vec<IntCounter>,
    open: Vec<IntGauge>,
    /// Indexed by `Listener::index()`.
    refused_connections: Vec<IntCounter>,
    /// Indexed by `Listener::index()`; none for plain TCP.
    tls_handshakes: Vec<Option<IntCounter>>,
    /// `[listener][0 = error, 1 = timeout]`; none for plain TCP.
    tls_failures: Vec<Option<[IntCounter; 2]>>,
    failures_since_warn: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for LimitMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LimitMetrics")
    }
}

impl LimitMetrics {
    pub fn new(limits: &Sub, conns: &Sub) -> LimitMetrics {
        let rejected = limits.counter_vec(
            "rejected_total",
            "Requests and connections refused by a limit, by reason.",
            &["reason"],
        );
        let accepted = conns.counter_vec(
            "accepted_total",
            "Client connections accepted, by listener and HTTP protocol version.",
            &["listener", "network_protocol_version"],
        );
        let open = conns.gauge_vec(
            "open",
            "Client connections open now, by listener and HTTP protocol version.",
            &["listener", "network_protocol_version"],
        );
        let refused = conns.counter_vec(
            "rejected_total",
            "Client connections refused by limits.max_connections or max_connections_per_ip (or the HTTP/3 connection cap), by listener.",
            &["listener"],
        );
        let handshakes = conns.counter_vec(
            "tls_handshakes_total",
            "TLS handshakes completed (tls: TCP listeners, quic: HTTP/3).",
            &["listener"],
        );
        let failures = conns.counter_vec(
            "tls_handshake_failures_total",
            "TLS handshakes that failed (reason=error) or did not finish in time (reason=timeout).",
            &["listener", "reason"],
        );
        let pairs = || {
            Listener::ALL
                .iter()
                .flat_map(|l| Protocol::ALL.iter().map(move |p| (l.as_str(), p.version())))
        };
        LimitMetrics {
            rejected: Reason::ALL
                .iter()
                .map(|r| rejected.with_label_values(&[r.as_str()]))
                .collect(),
            accepted: pairs()
                .map(|(l, p)| accepted.with_label_values(&[l, p]))
                .collect(),
            open: pairs()
                .map(|(l, p)| open.with_label_values(&[l, p]))
                .collect(),
            refused_connections: Listener::ALL
                .iter()
                .map(|l| refused.with_label_values(&[l.as_str()]))
                .collect(),
            tls_handshakes: Listener::ALL
                .iter()
                .map(|l| (*l != Listener::Tcp).then(|| handshakes.with_label_values(&[l.as_str()])))
                .collect(),
            tls_failures: Listener::ALL
                .iter()
                .map(|l| {
                    (*l != Listener::Tcp).then(|| {
                        [
                            failures.with_label_values(&[l.as_str(), "error"]),
                            failures.with_label_values(&[l.as_str(), "timeout"]),
                        ]
                    })
                })
                .collect(),
            failures_since_warn: AtomicU64::new(0),
            last_warn: Mutex::new(None),
        }
    }

    pub fn rejected(&self, reason: Reason) {
        if let Some(c) = self.rejected.get(reason as usize) {
            c.inc();
        }
    }

    pub fn rejected_count(&self, reason: Reason) -> u64 {
        self.rejected.get(reason as usize).map_or(0, |c| c.get())
    }

    pub fn connection_refused(&self, listener: Listener) {
        if let Some(c) = self.refused_connections.get(listener.index()) {
            c.inc();
        }
    }

    pub fn tls_handshake(&self, listener: Listener) {
        if let Some(Some(c)) = self.tls_handshakes.get(listener.index()) {
            c.inc();
        }
    }

    /// Counts a failed (`Some(error)`) or timed-out (`None`) handshake and
    /// logs a WARN at most once a minute, with how many failed since.
    pub fn tls_handshake_failed(&self, listener: Listener, error: Option<&dyn std::fmt::Display>) {
        if let Some(Some(c)) = self.tls_failures.get(listener.index()) {
            c[usize::from(error.is_none())].inc();
        }
        let n = self.failures_since_warn.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_warn.try_lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < HANDSHAKE_WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.failures_since_warn.store(0, Ordering::Relaxed);
        let what = error.map_or_else(|| "timed out".to_string(), |e| e.to_string());
        log::warn!(
            "{n} TLS handshake(s) failed on {} listeners since the last report; last: {what} (counted in bext_client_connections_tls_handshake_failures_total; reported at most once a minute)",
            listener.as_str()
        );
    }

    /// Counts an accepted connection; it counts as open until the guard drops.
    pub fn connection(&self, listener: Listener, protocol: Protocol) -> OpenConnection {
        let i = listener.index() * Protocol::ALL.len() + protocol.index();
        if let Some(c) = self.accepted.get(i) {
            c.inc();
        }
        let open = self.open.get(i).cloned();
        if let Some(g) = &open {
            g.inc();
        }
        OpenConnection(open)
    }
}

/// One open client connection, for the `bext_client_connections_open` gauge.
pub struct OpenConnection(Option<IntGauge>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}
