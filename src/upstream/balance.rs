//! Choosing a node among those a request may use: weighted round robin,
//! least connections (in-flight per weight) and consistent (Ketama) hashing.
//! Everything here is lock-free: one atomic counter and reads of node state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pingora_ketama::{Bucket, Continuum};

use super::node::Node;
use crate::config::upstream::Balance;

/// How far along the ring a hash lookup walks before giving up on it.
const MAX_RING_STEPS: usize = 4096;

pub struct Balancer {
    kind: Balance,
    /// Weighted round-robin order of node indices (smooth: weights interleave).
    schedule: Vec<usize>,
    next: AtomicUsize,
    ring: Continuum,
    addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Balancer {
    pub fn new(kind: Balance, nodes: &[Arc<Node>]) -> Balancer {
        let buckets: Vec<Bucket> = nodes
            .iter()
            .map(|n| Bucket::new(n.addr, n.weight))
            .collect();
        Balancer {
            kind,
            schedule: smooth_schedule(&nodes.iter().map(|n| n.weight).collect::<Vec<_>>()),
            next: AtomicUsize::new(0),
            ring: Continuum::new(&buckets),
            addrs: nodes.iter().map(|n| n.addr).collect(),
        }
    }

    pub fn kind(&self) -> &Balance {
        &self.kind
    }

    /// The pool's own policy. `hash_key` is used by `Balance::Hash`.
    pub fn pick(
        &self,
        nodes: &[Arc<Node>],
        hash_key: &[u8],
        ok: impl Fn(&Node) -> bool,
    ) -> Option<usize> {
        match self.kind {
            Balance::RoundRobin => self.round_robin(nodes, &ok),
            Balance::LeastConn => self.least_conn(nodes, &ok),
            Balance::Hash(_) => self.hashed(nodes, hash_key, &ok),
        }
    }

    fn round_robin(&self, nodes: &[Arc<Node>], ok: &impl Fn(&Node) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 || !nodes.iter().any(|n| ok(n)) {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|i| self.schedule[(start + i) % len])
            .find(|&i| nodes.get(i).is_some_and(|n| ok(n)))
    }

    fn least_conn(&self, nodes: &[Arc<Node>], ok: &impl Fn(&Node) -> bool) -> Option<usize> {
        let n = nodes.len();
        if n == 0 {
            return None;
        }
        // Rotate the starting point so ties do not always go to the first node.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None; // (index, in_flight, weight)
        for k in 0..n {
            let i = (start + k) % n;
            let node = &nodes[i];
            if !ok(node) {
                continue;
            }
            let (load, w) = (node.in_flight() as u64, u64::from(node.weight));
            match best {
                Some((_, bl, bw)) if load * bw >= bl * w => {}
                _ => best = Some((i, load, w)),
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// Consistent hashing: the first acceptable node clockwise from `key` on
    /// the Ketama ring, so only keys of a missing node move.
    pub fn hashed(
        &self,
        nodes: &[Arc<Node>],
        key: &[u8],
        ok: &impl Fn(&Node) -> bool,
    ) -> Option<usize> {
        if !nodes.iter().any(|n| ok(n)) {
            return None;
        }
        self.ring
            .node_iter(key)
            .take(MAX_RING_STEPS)
            .filter_map(|addr| self.addrs.iter().position(|a| a == addr))
            .find(|&i| ok(&nodes[i]))
            .or_else(|| nodes.iter().position(|n| ok(n)))
    }
}

/// Nginx's smooth weighted round robin, unrolled into one period.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total.max(0) as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::{HashOn, NodePlan};
    use crate::config::UpstreamPlan;

    fn nodes(weights: &[u32]) -> Vec<Arc<Node>> {
        let plan = UpstreamPlan {
            name: "p".into(),
            nodes: vec![],
            connect_timeout: Default::default(),
            read_timeout: Default::default(),
            write_timeout: Default::default(),
            idle_timeout: Default::default(),
            policy: Default::default(),
        };
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let np = NodePlan {
                    addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    id: format!("n{i}"),
                    weight: w,
                    drained: false,
                };
                Arc::new(Node::new(i, &np, &plan))
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        assert_eq!(smooth_schedule(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_skips_unacceptable_nodes() {
        let ns = nodes(&[1, 1, 1]);
        let b = Balancer::new(Balance::RoundRobin, &ns);
        let picks: Vec<usize> = (0..6)
            .filter_map(|_| b.pick(&ns, b"", |n| n.index != 1))
            .collect();
        assert_eq!(picks.len(), 6);
        assert!(!picks.contains(&1));
        assert!(b.pick(&ns, b"", |_| false).is_none());
    }

    #[test]
    fn least_conn_prefers_the_idle_node() {
        let ns = nodes(&[1, 1]);
        let b = Balancer::new(Balance::LeastConn, &ns);
        let _busy = super::super::node::NodeLease::new(ns[0].clone());
        for _ in 0..4 {
            assert_eq!(b.pick(&ns, b"", |_| true), Some(1));
        }
    }

    #[test]
    fn hashing_is_stable_and_moves_only_the_missing_nodes_keys() {
        let ns = nodes(&[1, 1, 1]);
        let b = Balancer::new(Balance::Hash(HashOn::ClientIp), &ns);
        let keys: Vec<String> = (0..300)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| b.pick(&ns, k.as_bytes(), |_| true).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|k| b.pick(&ns, k.as_bytes(), |_| true).unwrap())
            .collect();
        assert_eq!(before, again);
        for n in 0..3 {
            assert!(
                before.iter().filter(|&&i| i == n).count() > 50,
                "{n} underused"
            );
        }
        let after: Vec<usize> = keys
            .iter()
            .map(|k| b.pick(&ns, k.as_bytes(), |n| n.index != 2).unwrap())
            .collect();
        for (x, y) in before.iter().zip(&after) {
            if *x != 2 {
                assert_eq!(x, y, "a key of a healthy node moved");
            } else {
                assert_ne!(*y, 2);
            }
        }
    }
}
