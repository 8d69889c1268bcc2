//! Active health checks, run as a Pingora background service (so nothing
//! starts before Pingora forks for `-d`). Each pool is probed every
//! `health.interval`: a TCP connect, or `GET health.path` expecting
//! `expect_status` (any 2xx/3xx by default). `unhealthy_after` failures in a
//! row take a node out (and close its tunnels), `healthy_after` successes
//! bring it back. Connect failures of real requests count as failures too
//! (see `retry.rs`), so a dead node usually leaves before its next probe.
//! With `[cluster]`, a hint from another edge that a node failed makes the
//! pool probe at once (`Pool::probe_now`); the result counts like any probe.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::node::Node;
use super::pool::Pool;
use super::Upstreams;
use crate::config::upstream::{HealthPlan, HealthProbe};

/// Longest status line read from a probe answer.
const MAX_HEAD: usize = 1024;

pub struct HealthService {
    upstreams: Arc<arc_swap::ArcSwap<Upstreams>>,
    generation: tokio::sync::watch::Receiver<u64>,
}

impl HealthService {
    /// `generation` changes when a reload in place replaces the pools: the
    /// probes then move to the new ones (node state lives in the nodes, so
    /// nothing is lost by restarting the loops).
    pub fn new(
        upstreams: Arc<arc_swap::ArcSwap<Upstreams>>,
        generation: tokio::sync::watch::Receiver<u64>,
    ) -> HealthService {
        HealthService {
            upstreams,
            generation,
        }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generation = self.generation.clone();
        loop {
            let current = self.upstreams.load_full();
            let tasks: Vec<_> = current
                .pools()
                .iter()
                .map(|pool| tokio::spawn(check_pool(pool.clone(), shutdown.clone())))
                .collect();
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                changed = generation.changed() => changed.is_err(),
            };
            for t in &tasks {
                t.abort();
            }
            if stop {
                return;
            }
        }
    }
}

async fn check_pool(pool: Arc<Pool>, mut shutdown: ShutdownWatch) {
    let plan = pool.policy.health.clone();
    let mut tick = tokio::time::interval(plan.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            // Another edge saw a node of this pool fail (`[cluster]`).
            _ = pool.probe_requested() => tick.reset(),
        }
        let probes = pool.nodes().iter().map(|n| probe_node(n.clone(), &plan));
        let results = futures_util::future::join_all(probes).await;
        for (node, result) in pool.nodes().iter().zip(results) {
            let t = node.record_probe(result, &plan);
            pool.on_transition(node, t);
        }
    }
}

async fn probe_node(node: Arc<Node>, plan: &HealthPlan) -> Result<(), String> {
    match tokio::time::timeout(plan.timeout, probe(&node, &plan.probe)).await {
        Ok(r) => r,
        Err(_) => Err(format!("health check timed out after {:?}", plan.timeout)),
    }
}

async fn probe(node: &Node, probe: &HealthProbe) -> Result<(), String> {
    let mut stream = TcpStream::connect(node.addr)
        .await
        .map_err(|e| format!("health check connect: {e}"))?;
    let HealthProbe::Http {
        path,
        expect_status,
    } = probe
    else {
        return Ok(());
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bext-health\r\nConnection: close\r\n\r\n",
        node.addr
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("health check write: {e}"))?;
    let status = read_status(&mut stream).await?;
    let ok = match expect_status {
        Some(s) => status == *s,
        None => (200..400).contains(&status),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("health check {path} answered {status}"))
    }
}

async fn read_status(stream: &mut TcpStream) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(128);
    let mut tmp = [0u8; 256];
    while !buf.contains(&b'\n') {
        let n = stream
            .read(&mut tmp)
            .await
            .map_err(|e| format!("health check read: {e}"))?;
        if n == 0 {
            return Err("health check: connection closed before a status line".into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > MAX_HEAD {
            break;
        }
    }
    parse_status(&buf).ok_or_else(|| "health check: not an HTTP response".into())
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Time a node needs to be declared down by probes alone, at most.
pub fn detection_bound(plan: &HealthPlan) -> Duration {
    plan.interval * plan.unhealthy_after + plan.timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\nx: y"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 abc\r\n"), None);
    }
}
