//! A stop always finishes. Pingora stops by shutting its runtimes down and
//! joining their threads; a thread that never yields (a task in a loop that
//! never waits) or never returns keeps the process alive forever. This
//! watchdog runs on its own thread: once Pingora starts shutting the
//! runtimes down, it gives them `shutdown_timeout` plus a margin, then logs
//! and ends the process itself.

use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

/// Time beyond `shutdown_timeout` before the process is ended: Pingora's
/// own join of a runtime that stops normally takes milliseconds.
pub const MARGIN: Duration = Duration::from_secs(5);

pub struct Watchdog {
    phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    shutdown_timeout: Duration,
}

impl Watchdog {
    /// `phases`: `Server::watch_execution_phase()`, subscribed before the
    /// server runs.
    pub fn new(
        phases: broadcast::Receiver<ExecutionPhase>,
        shutdown_timeout: Duration,
    ) -> Watchdog {
        Watchdog {
            phases: std::sync::Mutex::new(Some(phases)),
            shutdown_timeout,
        }
    }
}

#[async_trait]
impl BackgroundService for Watchdog {
    // Started like every service, after a daemon's fork: a thread made
    // before the fork would not exist in the child.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let limit = self.shutdown_timeout + MARGIN;
        let spawned = std::thread::Builder::new()
            .name("bext stop watchdog".into())
            .spawn(move || loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownRuntimes) => {
                        std::thread::sleep(limit);
                        log::error!(
                            "the runtimes did not stop within {limit:?} of the shutdown (shutdown_timeout + {MARGIN:?}): ending the process"
                        );
                        log::logger().flush();
                        // SAFETY: _exit(2) ends the process at once; nothing
                        // is left to run in a process whose stop is stuck.
                        unsafe { libc::_exit(1) }
                    }
                    Ok(ExecutionPhase::Terminated) | Err(broadcast::error::RecvError::Closed) => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the stop watchdog: {e}");
        }
    }
}
