//! Upstream pools: the Phoenix nodes behind each `[upstreams.NAME]`, how a node
//! is chosen for a request (balancing, signed affinity cookie, retries on
//! another node), their health (active probes in a background service plus
//! passive marking on failed connects), draining, and the websocket tunnels
//! open to each node (closed when the node goes down or is drained).
//!
//! The proxy phases call [`Upstreams`] and [`RequestState`] one line each; no
//! decision about nodes is made in `proxy`.

pub mod admin;
mod balance;
pub mod farewell;
pub mod health;
pub mod liveview;
pub mod metrics;
mod node;
mod pool;
mod request;
mod retry;
mod sticky;
pub mod tunnels;

use std::sync::Arc;
use std::time::Duration;

pub use node::{Node, NodeSnapshot};
pub use pool::Pool;
pub use request::{PeerRequest, RequestState};

use crate::config::UpstreamPlan;

/// What a route needs from the connection to the node.
#[derive(Debug, Clone, Copy)]
pub struct PeerRequirements {
    /// `None` keeps the pool's `read_timeout`.
    pub read_timeout: Option<Duration>,
    /// Only websocket routes forward an upgrade handshake.
    pub allow_websocket: bool,
}

/// Every pool of the plan, shared by the proxy, the health service and the admin API.
#[derive(Debug)]
pub struct Upstreams {
    pools: Vec<Arc<Pool>>,
}

impl Upstreams {
    pub fn new(plans: &[UpstreamPlan]) -> Upstreams {
        Upstreams {
            pools: plans.iter().map(|p| Arc::new(Pool::new(p))).collect(),
        }
    }

    /// The pools of the next plan of a reload in place, registering the
    /// metrics of what is new and unregistering those of the nodes that are
    /// gone (returned, so their tunnels can be closed).
    pub fn next(
        &self,
        plans: &[UpstreamPlan],
        registry: &prometheus::Registry,
    ) -> (Upstreams, Vec<Arc<Node>>) {
        let mut gone = vec![];
        let mut fresh: Vec<Arc<Node>> = vec![];
        let pools: Vec<Arc<Pool>> = plans
            .iter()
            .map(|plan| match self.by_name(&plan.name) {
                Some(old) => {
                    let next = Pool::next(plan, old);
                    fresh.extend(next.fresh);
                    gone.extend(next.gone);
                    Arc::new(next.pool)
                }
                None => {
                    let pool = Pool::new(plan);
                    pool.metrics.register(registry);
                    fresh.extend(pool.nodes().iter().cloned());
                    Arc::new(pool)
                }
            })
            .collect();
        for old in &self.pools {
            if !plans.iter().any(|p| p.name == old.name) {
                gone.extend(old.nodes().iter().cloned());
            }
        }
        // Gone first: a node that kept its id at a new address gets the
        // same series names.
        for n in &gone {
            n.metrics.unregister(registry);
        }
        for n in &fresh {
            n.metrics.register(registry);
        }
        (Upstreams { pools }, gone)
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The tunnel sets of every node of every pool.
    pub fn tunnel_sets(&self) -> Vec<Arc<tunnels::TunnelSet>> {
        self.pools
            .iter()
            .flat_map(|p| p.nodes().iter().map(|n| n.tunnels.clone()))
            .collect()
    }

    /// Registers every pool's and node's metrics in the proxy's registry.
    pub fn register_metrics(&self, registry: &prometheus::Registry) {
        for pool in &self.pools {
            pool.metrics.register(registry);
            for node in pool.nodes() {
                node.metrics.register(registry);
            }
        }
    }

    /// Scrape time: node gauges from the nodes' state.
    pub fn refresh_metrics(&self) {
        for node in self.pools.iter().flat_map(|p| p.nodes()) {
            node.refresh_metrics();
        }
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Pool>> {
        self.pools.get(index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Attempts Pingora must allow per request (`ServerConf::max_retries`) so
    /// that every pool's `retries` can happen; the pools bound themselves.
    pub fn max_attempts(plans: &[UpstreamPlan]) -> usize {
        plans
            .iter()
            .map(|p| p.policy.retries as usize + 1)
            .max()
            .unwrap_or(1)
            .max(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::{NodePlan, PoolPolicy};
    use http::HeaderMap;
    use pingora::upstreams::peer::HttpUpstreamRequestPolicy;

    pub(crate) fn plan(nodes: &[&str], policy: PoolPolicy) -> UpstreamPlan {
        UpstreamPlan {
            name: "phoenix".into(),
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| NodePlan {
                    addr: n.parse().unwrap(),
                    id: format!("n{i}"),
                    weight: 1,
                    drained: false,
                })
                .collect(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(4),
            policy,
        }
    }

    fn input(headers: &HeaderMap, tried: u64) -> pool::SelectInput<'_> {
        pool::SelectInput {
            headers,
            client_ip: Some("10.0.0.1".parse().unwrap()),
            sticky: false,
            websocket: false,
            tried,
        }
    }

    #[test]
    fn round_robin_visits_every_node_evenly_and_skips_tried_ones() {
        let pool = Pool::new(&plan(
            &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
            PoolPolicy::default(),
        ));
        let h = HeaderMap::new();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[pool.select(input(&h, 0)).unwrap().index] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        for _ in 0..10 {
            assert_ne!(pool.select(input(&h, 0b010)).unwrap().index, 1);
        }
        assert!(!pool.has_untried(0b111));
    }

    #[test]
    fn drained_node_gets_no_new_clients_and_all_down_means_none() {
        let pool = Pool::new(&plan(
            &["127.0.0.1:1", "127.0.0.1:2"],
            PoolPolicy::default(),
        ));
        assert_eq!(pool.set_drained("n0", true), Some(true));
        assert_eq!(pool.set_drained("nope", true), None);
        let h = HeaderMap::new();
        for _ in 0..10 {
            assert_eq!(pool.select(input(&h, 0)).unwrap().index, 1);
        }
        let health = &pool.policy.health;
        for _ in 0..health.unhealthy_after {
            pool.nodes()[1].record_failure("refused".into(), health);
        }
        assert!(pool.select(input(&h, 0)).is_none());
    }

    #[test]
    fn route_requirements_shape_the_peer() {
        let pool = Pool::new(&plan(&["127.0.0.1:1"], PoolPolicy::default()));
        let node = &pool.nodes()[0];
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
