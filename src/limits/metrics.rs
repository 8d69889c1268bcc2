//! The limits' own metrics: refusals by reason, and the client connections
//! the listener accepted, refused and holds open, by protocol. Registered in
//! the proxy's registry when the plan is built; `GET /__bext/limits` reads
//! the same counters.

use prometheus::{IntCounter, IntGauge};

use super::Reason;
use crate::exchange::Protocol;
use crate::telemetry::registry::Sub;

pub struct LimitMetrics {
    /// Indexed by `Reason as usize`.
    rejected: Vec<IntCounter>,
    /// Indexed by `Protocol::index()`.
    accepted: Vec<IntCounter>,
    open: Vec<IntGauge>,
    refused_connections: IntCounter,
    tls_handshakes: IntCounter,
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
            "Client connections accepted, by HTTP protocol version.",
            &["network_protocol_version"],
        );
        let open = conns.gauge_vec(
            "open",
            "Client connections open now, by HTTP protocol version.",
            &["network_protocol_version"],
        );
        LimitMetrics {
            rejected: Reason::ALL
                .iter()
                .map(|r| rejected.with_label_values(&[r.as_str()]))
                .collect(),
            accepted: Protocol::ALL
                .iter()
                .map(|p| accepted.with_label_values(&[p.version()]))
                .collect(),
            open: Protocol::ALL
                .iter()
                .map(|p| open.with_label_values(&[p.version()]))
                .collect(),
            refused_connections: conns.counter(
                "rejected_total",
                "Client connections refused by limits.max_connections or max_connections_per_ip.",
            ),
            tls_handshakes: conns.counter(
                "tls_handshakes_total",
                "TLS handshakes completed on the TCP listeners.",
            ),
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

    pub fn connection_refused(&self) {
        self.refused_connections.inc();
    }

    pub fn tls_handshake(&self) {
        self.tls_handshakes.inc();
    }

    /// Counts an accepted connection; it counts as open until the guard drops.
    pub fn connection(&self, protocol: Protocol) -> OpenConnection {
        let i = protocol.index();
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
