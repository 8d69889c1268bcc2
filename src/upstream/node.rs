//! One Phoenix node at run time: its pre-built peer, health and drain state,
//! in-flight and request counters (atomics, no lock on the request path), last
//! error, and its open websocket tunnels.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pingora::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use serde::Serialize;

use super::metrics::NodeMetrics;
use super::tunnels::TunnelSet;
use super::PeerRequirements;
use crate::config::upstream::{HealthPlan, NodePlan};
use crate::config::UpstreamPlan;

/// Longest `last_error` kept per node.
const MAX_ERROR_LEN: usize = 256;

#[derive(Debug)]
pub struct Node {
    /// Position in the pool.
    pub index: usize,
    /// Stable public id (configured, or a hash of the address).
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    peer: HttpPeer,
    healthy: AtomicBool,
    drained: AtomicBool,
    in_flight: AtomicUsize,
    ok_streak: AtomicU32,
    fail_streak: AtomicU32,
    /// Written only when something fails.
    last_error: Mutex<Option<String>>,
    pub tunnels: Arc<TunnelSet>,
    /// `id` as a shared string, for the request record without a copy.
    pub label: Arc<str>,
    pub metrics: NodeMetrics,
}

/// A health state change the caller must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    WentUp,
}

/// What `GET /__bext/upstreams` and the metrics exporter see of a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSnapshot {
    pub id: String,
    pub addr: String,
    pub weight: u32,
    /// `healthy`, `unhealthy` or `draining`.
    pub state: &'static str,
    pub healthy: bool,
    pub drained: bool,
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
    pub tunnels: usize,
    pub last_error: Option<String>,
}

/// Connection-pool group of websocket handshakes (see [`Node::peer`]).
const WEBSOCKET_POOL: u64 = 0x7765_6273_6f63_6b74;

impl Node {
    pub fn new(index: usize, plan: &NodePlan, pool: &UpstreamPlan) -> Node {
        let metrics = NodeMetrics::new(&pool.name, &plan.id);
        Node::build(index, plan, pool, metrics, Arc::default())
    }

    fn build(
        index: usize,
        plan: &NodePlan,
        pool: &UpstreamPlan,
        metrics: NodeMetrics,
        tunnels: Arc<TunnelSet>,
    ) -> Node {
        // Plain HTTP/1.1 to Phoenix on a private address; no SNI.
        let mut peer = HttpPeer::new(plan.addr, false, String::new());
        peer.options.connection_timeout = Some(pool.connect_timeout);
        peer.options.read_timeout = Some(pool.read_timeout);
        peer.options.write_timeout = Some(pool.write_timeout);
        peer.options.idle_timeout = Some(pool.idle_timeout);
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        Node {
            index,
            id: plan.id.clone(),
            addr: plan.addr,
            weight: plan.weight,
            peer,
            healthy: AtomicBool::new(true),
            drained: AtomicBool::new(plan.drained),
            in_flight: AtomicUsize::new(0),
            label: Arc::from(plan.id.as_str()),
            metrics,
            ok_streak: AtomicU32::new(0),
            fail_streak: AtomicU32::new(0),
            last_error: Mutex::new(None),
            tunnels,
        }
    }

    /// The node `plan` describes (same id, same address): a reload in place
    /// carries its state over.
    pub fn is(&self, plan: &NodePlan) -> bool {
        self.id == plan.id && self.addr == plan.addr
    }

    /// The same node (id and address) in the next plan of a reload in place:
    /// built from the new settings (position, weight, timeouts), keeping what
    /// the running process learned — health and its streaks, the last error,
    /// a run-time drain (unless the config now drains it), its open tunnels
    /// and its metric series. Requests in flight finish on the old object.
    pub fn next(index: usize, plan: &NodePlan, pool: &UpstreamPlan, old: &Node) -> Node {
        let n = Node::build(index, plan, pool, old.metrics.clone(), old.tunnels.clone());
        n.healthy.store(old.is_healthy(), Ordering::Relaxed);
        n.drained
            .store(plan.drained || old.is_drained(), Ordering::Relaxed);
        n.ok_streak
            .store(old.ok_streak.load(Ordering::Relaxed), Ordering::Relaxed);
        n.fail_streak
            .store(old.fail_streak.load(Ordering::Relaxed), Ordering::Relaxed);
        if let (Ok(mut mine), Ok(theirs)) = (n.last_error.lock(), old.last_error.lock()) {
            *mine = theirs.clone();
        }
        n
    }

    /// The peer to connect to for one request, with the route's requirements applied.
    pub fn peer(&self, req: PeerRequirements) -> Box<HttpPeer> {
        let mut peer = Box::new(self.peer.clone());
        if let Some(t) = req.read_timeout {
            peer.options.read_timeout = Some(t);
        }
        if req.allow_websocket {
            peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::standard();
            // Handshakes get their own connection-pool bucket, so they always
            // open a fresh connection. On a pooled keep-alive connection the
            // 101 can come back before Pingora 0.9 has queued the (empty)
            // request body's end, and its proxy loop then takes that end for
            // the end of the upgraded stream and closes the new tunnel at once.
            // Upgraded connections are never pooled, so nothing is lost.
            peer.group_key = WEBSOCKET_POOL;
        }
        peer
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// May take new clients: healthy and not drained.
    pub fn available(&self) -> bool {
        self.is_healthy() && !self.is_drained()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Sets the drain flag; returns whether it changed.
    pub fn set_drained(&self, drained: bool) -> bool {
        self.drained.swap(drained, Ordering::Relaxed) != drained
    }

    /// An active probe's result.
    pub fn record_probe(&self, result: Result<(), String>, plan: &HealthPlan) -> Transition {
        match result {
            Ok(()) => {
                self.fail_streak.store(0, Ordering::Relaxed);
                let oks = self
                    .ok_streak
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if oks >= plan.healthy_after && !self.healthy.swap(true, Ordering::Relaxed) {
                    return Transition::WentUp;
                }
                Transition::None
            }
            Err(e) => self.record_failure(e, plan),
        }
    }

    /// A probe failure or a failed connect from a request (passive check).
    pub fn record_failure(&self, error: String, plan: &HealthPlan) -> Transition {
        self.ok_streak.store(0, Ordering::Relaxed);
        self.set_last_error(error);
        let fails = self
            .fail_streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if fails >= plan.unhealthy_after && self.healthy.swap(false, Ordering::Relaxed) {
            return Transition::WentDown;
        }
        Transition::None
    }

    /// A response came back: the node is reachable (resets the failure streak).
    pub fn note_response(&self) {
        if self.fail_streak.load(Ordering::Relaxed) != 0 {
            self.fail_streak.store(0, Ordering::Relaxed);
        }
    }

    /// A request this node failed (after connecting); counted, not a health signal.
    pub fn count_failure(&self, error: String) {
        self.metrics.failures.inc();
        self.set_last_error(error);
    }

    fn set_last_error(&self, mut error: String) {
        if error.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(error);
        }
    }

    /// Brings the scrape-time gauges up to date with the node's state.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.healthy.set(i64::from(self.is_healthy()));
        m.draining.set(i64::from(self.is_drained()));
        m.in_flight
            .set(i64::try_from(self.in_flight()).unwrap_or(i64::MAX));
        m.tunnels
            .set(i64::try_from(self.tunnels.len()).unwrap_or(i64::MAX));
    }

    pub fn snapshot(&self) -> NodeSnapshot {
        let (healthy, drained) = (self.is_healthy(), self.is_drained());
        NodeSnapshot {
            id: self.id.clone(),
            addr: self.addr.to_string(),
            weight: self.weight,
            state: match (healthy, drained) {
                (false, _) => "unhealthy",
                (true, true) => "draining",
                (true, false) => "healthy",
            },
            healthy,
            drained,
            in_flight: self.in_flight(),
            requests: self.metrics.requests.get(),
            failures: self.metrics.failures.get(),
            tunnels: self.tunnels.len(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// One request's claim on a node: counted in flight until dropped.
#[derive(Debug)]
pub struct NodeLease(Arc<Node>);

impl NodeLease {
    pub fn new(node: Arc<Node>) -> NodeLease {
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        node.metrics.requests.inc();
        NodeLease(node)
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.0
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
