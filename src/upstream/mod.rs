//! Upstream pools: the Phoenix nodes behind one `[upstreams.NAME]`, how a node is
//! chosen for a request, and the connection options used to reach it.
//!
//! Selection is plain round robin today. Health checks, least-connections,
//! consistent hashing, sticky LiveView affinity and draining plug in behind
//! [`Pool::select`] without the proxy phases changing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pingora::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};

use crate::config::UpstreamPlan;

/// One Phoenix node of a pool.
#[derive(Debug)]
pub struct Node {
    pub addr: SocketAddr,
    /// Pre-built peer with the pool's options; cloned per request (cheaper than
    /// rebuilding the address string and options every time).
    peer: HttpPeer,
}

/// What a route needs from the connection to the node.
#[derive(Debug, Clone, Copy)]
pub struct PeerRequirements {
    /// `None` keeps the pool's `read_timeout`.
    pub read_timeout: Option<Duration>,
    /// Only websocket routes forward an upgrade handshake.
    pub allow_websocket: bool,
}

/// The nodes behind one upstream name.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    nodes: Vec<Node>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(plan: &UpstreamPlan) -> Pool {
        let nodes = plan
            .nodes
            .iter()
            .map(|addr| {
                // Plain HTTP/1.1 to Phoenix on a private address; no SNI.
                let mut peer = HttpPeer::new(*addr, false, String::new());
                peer.options.connection_timeout = Some(plan.connect_timeout);
                peer.options.read_timeout = Some(plan.read_timeout);
                peer.options.write_timeout = Some(plan.write_timeout);
                peer.options.idle_timeout = Some(plan.idle_timeout);
                peer.options.http_upstream_request_policy =
                    HttpUpstreamRequestPolicy::deny_upgrades();
                Node { addr: *addr, peer }
            })
            .collect();
        Pool {
            name: plan.name.clone(),
            nodes,
            next: AtomicUsize::new(0),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Picks the node for the next request. `None` when the pool has no node to offer.
    pub fn select(&self) -> Option<&Node> {
        match self.nodes.len() {
            0 => None,
            1 => self.nodes.first(),
            n => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                self.nodes.get(i)
            }
        }
    }
}

impl Node {
    /// The peer to connect to for one request, with the route's requirements applied.
    pub fn peer(&self, req: PeerRequirements) -> Box<HttpPeer> {
        let mut peer = Box::new(self.peer.clone());
        if let Some(t) = req.read_timeout {
            peer.options.read_timeout = Some(t);
        }
        if req.allow_websocket {
            peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::standard();
        }
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: &[&str]) -> UpstreamPlan {
        UpstreamPlan {
            name: "phoenix".into(),
            nodes: nodes.iter().map(|n| n.parse().unwrap()).collect(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(4),
        }
    }

    #[test]
    fn round_robin_visits_every_node_evenly() {
        let pool = Pool::new(&plan(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]));
        let mut counts = [0; 3];
        for _ in 0..300 {
            let port = pool.select().unwrap().addr.port();
            counts[port as usize - 1] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn route_requirements_shape_the_peer() {
        let pool = Pool::new(&plan(&["127.0.0.1:1"]));
        let node = pool.select().unwrap();
        let p = node.peer(PeerRequirements {
            read_timeout: None,
            allow_websocket: false,
        });
        assert_eq!(p.options.read_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.options.connection_timeout, Some(Duration::from_secs(1)));
        assert_eq!(
            p.options.http_upstream_request_policy,
            HttpUpstreamRequestPolicy::deny_upgrades()
        );
        let p = node.peer(PeerRequirements {
            read_timeout: Some(Duration::from_secs(300)),
            allow_websocket: true,
        });
        assert_eq!(p.options.read_timeout, Some(Duration::from_secs(300)));
        assert_eq!(
            p.options.http_upstream_request_policy,
            HttpUpstreamRequestPolicy::standard()
        );
    }
}
