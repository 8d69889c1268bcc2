//! Websocket tunnels when the process stops (graceful stop, or the old process
//! of an upgrade): they keep working through the first half of
//! `server.grace_period`, then each is closed with a 1001 "going away" frame,
//! spread over the second half so LiveView clients do not all reconnect (to
//! the new process) at the same instant.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{tunnels, Upstreams};

pub struct ShutdownTunnels {
    /// The current pools (a reload in place replaces them).
    upstreams: Arc<arc_swap::ArcSwap<Upstreams>>,
    grace: Duration,
}

impl ShutdownTunnels {
    pub fn new(upstreams: Arc<arc_swap::ArcSwap<Upstreams>>, grace: Duration) -> ShutdownTunnels {
        ShutdownTunnels { upstreams, grace }
    }
}

/// (how long tunnels are kept, the window their closes are spread over). The
/// closes end a little before the grace period does, so every close frame is
/// written before the runtime stops.
pub fn windows(grace: Duration) -> (Duration, Duration) {
    let keep = grace / 2;
    let margin = (grace / 4).min(Duration::from_secs(1));
    (keep, grace.saturating_sub(keep).saturating_sub(margin))
}

#[async_trait]
impl BackgroundService for ShutdownTunnels {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Resolves when shutdown is broadcast (or the server is gone).
        let _ = shutdown.changed().await;
        let (keep, spread) = windows(self.grace);
        tokio::time::sleep(keep).await;
        let sets = self.upstreams.load().tunnel_sets();
        let closed = tunnels::close_all_of(&sets, spread).await;
        if closed > 0 {
            log::info!("shutdown: closed {closed} websocket tunnel(s) with 1001 over {spread:?}");
        }
        // Stay until the runtime stops so the spawned close frames get written.
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_happen_in_the_second_half_and_end_early() {
        let (keep, spread) = windows(Duration::from_secs(30));
        assert_eq!(keep, Duration::from_secs(15));
        assert_eq!(spread, Duration::from_secs(14));
        let (keep, spread) = windows(Duration::from_secs(2));
        assert_eq!(keep, Duration::from_secs(1));
        assert_eq!(spread, Duration::from_millis(500));
        assert_eq!(windows(Duration::ZERO), (Duration::ZERO, Duration::ZERO));
    }
}
