//! A pool: the nodes behind one `[upstreams.NAME]` and the choice of a node
//! for one request attempt (sticky cookie first, then the pool's balancing),
//! plus the reactions to health and drain changes (closing tunnels).

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use super::balance::Balancer;
use super::liveview::ReconnectTracker;
use super::metrics::PoolMetrics;
use super::node::{Node, Transition};
use super::sticky::Sticky;
use crate::config::upstream::{Balance, HashOn, PoolPolicy};
use crate::config::UpstreamPlan;

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub nodes: Vec<Arc<Node>>,
    balancer: Balancer,
    sticky: Option<Sticky>,
    pub policy: PoolPolicy,
    pub metrics: PoolMetrics,
    /// Recent tunnel closes per client, to tell LiveView reconnects.
    pub reconnects: ReconnectTracker,
    /// Wakes this pool's health checks before their next tick (a hint
    /// from another edge that one of its nodes failed).
    probe_soon: tokio::sync::Notify,
}

/// [`Pool::next`]: the pool, its nodes that are new, and the old pool's
/// nodes that are gone.
pub struct Next {
    pub pool: Pool,
    pub fresh: Vec<Arc<Node>>,
    pub gone: Vec<Arc<Node>>,
}

/// Slots of the reconnect table (fixed memory, whatever the client count).
const RECONNECT_SLOTS: usize = 4096;
/// A LiveView join this soon after the client's previous tunnel closed is a reconnect.
pub const RECONNECT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// What a request brings to node selection.
#[derive(Debug, Clone, Copy)]
pub struct SelectInput<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: Option<IpAddr>,
    /// The route wants affinity (and the pool offers it).
    pub sticky: bool,
    /// A websocket handshake: a drained node's cookie no longer holds it.
    pub websocket: bool,
    /// Bit i set: node i already failed this request.
    pub tried: u64,
}

/// The node chosen for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub index: usize,
    /// The node a valid affinity cookie of the request named, if any.
    pub cookie_node: Option<usize>,
}

fn tried(mask: u64, i: usize) -> bool {
    i < 64 && mask & (1 << i) != 0
}

fn ip_key(ip: Option<IpAddr>, buf: &mut [u8; 16]) -> &[u8] {
    match ip {
        Some(IpAddr::V4(v4)) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..4]
        }
        Some(IpAddr::V6(v6)) => {
            buf.copy_from_slice(&v6.octets());
            &buf[..]
        }
        None => &buf[..0],
    }
}

impl Pool {
    pub fn new(plan: &UpstreamPlan) -> Pool {
        let nodes = plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Arc::new(Node::new(i, n, plan)))
            .collect();
        Pool::with(plan, nodes, PoolMetrics::new(&plan.name))
    }

    fn with(plan: &UpstreamPlan, nodes: Vec<Arc<Node>>, metrics: PoolMetrics) -> Pool {
        let sticky = plan
            .policy
            .sticky
            .as_ref()
            .and_then(|s| Sticky::new(&plan.name, s));
        Pool {
            name: plan.name.clone(),
            balancer: Balancer::new(plan.policy.balance.clone(), &nodes),
            nodes,
            sticky,
            policy: plan.policy.clone(),
            metrics,
            reconnects: ReconnectTracker::new(RECONNECT_SLOTS, RECONNECT_WINDOW),
            probe_soon: tokio::sync::Notify::new(),
        }
    }

    /// Probes every node of the pool now rather than at the next tick;
    /// the results count as any probe's (no node changes state on a hint).
    pub fn probe_now(&self) {
        self.probe_soon.notify_one();
    }

    /// Resolves when [`Self::probe_now`] was called (the health service).
    pub async fn probe_requested(&self) {
        self.probe_soon.notified().await
    }

    /// This pool in the next plan of a reload in place: nodes matched by id
    /// and address carry their state over ([`Node::next`]); the pool's retry
    /// counter is kept.
    pub fn next(plan: &UpstreamPlan, old: &Pool) -> Next {
        let mut fresh = vec![];
        let nodes = plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match old.nodes.iter().find(|o| o.is(n)) {
                Some(o) => Arc::new(Node::next(i, n, plan, o)),
                None => {
                    let node = Arc::new(Node::new(i, n, plan));
                    fresh.push(node.clone());
                    node
                }
            })
            .collect();
        let gone = old
            .nodes
            .iter()
            .filter(|o| !plan.nodes.iter().any(|n| o.is(n)))
            .cloned()
            .collect();
        Next {
            pool: Pool::with(plan, nodes, old.metrics.clone()),
            fresh,
            gone,
        }
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// Affinity is offered: a cookie is configured and there is a choice to pin.
    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref().filter(|_| self.nodes.len() > 1)
    }

    pub fn node_by_id(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Picks the node for one attempt. `None`: no node may take the request.
    pub fn select(&self, input: SelectInput) -> Option<Choice> {
        let fresh = |n: &Node| n.available() && !tried(input.tried, n.index);
        let any = |n: &Node| n.available();
        let mut buf = [0u8; 16];
        if let Some(sticky) = self.sticky().filter(|_| input.sticky) {
            let cookie_node = sticky
                .node_in(input.headers)
                .and_then(|id| self.nodes.iter().position(|n| n.id == id));
            if let Some(i) = cookie_node {
                let n = &self.nodes[i];
                if n.is_healthy() && !tried(input.tried, i) && !(n.is_drained() && input.websocket)
                {
                    return Some(Choice {
                        index: i,
                        cookie_node,
                    });
                }
            }
            let key = ip_key(input.client_ip, &mut buf);
            let index = self
                .balancer
                .hashed(&self.nodes, key, &fresh)
                .or_else(|| self.balancer.hashed(&self.nodes, key, &any))?;
            return Some(Choice { index, cookie_node });
        }
        let key: &[u8] = match self.balancer.kind() {
            Balance::Hash(HashOn::Header(h)) => match input.headers.get(h) {
                Some(v) => v.as_bytes(),
                None => ip_key(input.client_ip, &mut buf),
            },
            Balance::Hash(HashOn::Cookie(c)) => match crate::cookies::all(input.headers, c)
                .next()
                .map(str::as_bytes)
            {
                Some(v) => v,
                None => ip_key(input.client_ip, &mut buf),
            },
            Balance::Hash(HashOn::ClientIp) => ip_key(input.client_ip, &mut buf),
            _ => &[],
        };
        let index = self
            .balancer
            .pick(&self.nodes, key, fresh)
            .or_else(|| self.balancer.pick(&self.nodes, key, any))?;
        Some(Choice {
            index,
            cookie_node: None,
        })
    }

    /// Whether a node this request has not tried yet could take it.
    pub fn has_untried(&self, tried_mask: u64) -> bool {
        self.nodes
            .iter()
            .any(|n| n.available() && !tried(tried_mask, n.index))
    }

    /// Acts on a health change of `node`: logs it and closes its tunnels when it went down.
    pub fn on_transition(&self, node: &Node, t: Transition) {
        match t {
            Transition::None => {}
            Transition::WentDown => {
                log::warn!(
                    "upstream {} node {} ({}) is unhealthy; closing its {} tunnel(s) over {:?}",
                    self.name,
                    node.id,
                    node.addr,
                    node.tunnels.len(),
                    self.policy.close_spread
                );
                node.tunnels.close_all(self.policy.close_spread);
            }
            Transition::WentUp => {
                log::info!(
                    "upstream {} node {} ({}) is healthy again",
                    self.name,
                    node.id,
                    node.addr
                )
            }
        }
    }

    /// Drains (no new clients; its tunnels are closed) or undrains a node.
    /// Returns `None` for an unknown id, else whether the state changed.
    pub fn set_drained(&self, id: &str, drained: bool) -> Option<bool> {
        let node = self.node_by_id(id)?;
        let changed = node.set_drained(drained);
        if changed && drained {
            log::info!(
                "upstream {} node {} drained; closing its {} tunnel(s) over {:?}",
                self.name,
                id,
                node.tunnels.len(),
                self.policy.close_spread
            );
            node.tunnels.close_all(self.policy.close_spread);
        } else if changed {
            log::info!("upstream {} node {} undrained", self.name, id);
        }
        Some(changed)
    }
}
