//! The telemetry's background work, started after Pingora has forked: the
//! access log's writer thread and SIGUSR1 handler, and the OTLP exporter
//! task; and the optional scrape listener (`telemetry.metrics_listen`) that
//! answers only `GET /metrics`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{access_log, Telemetry};

pub struct TelemetryService {
    telemetry: Arc<Telemetry>,
}

impl TelemetryService {
    pub fn new(telemetry: Arc<Telemetry>) -> TelemetryService {
        TelemetryService { telemetry }
    }
}

#[async_trait]
impl BackgroundService for TelemetryService {
    async fn start(&self, shutdown: ShutdownWatch) {
        if let Some(log) = self.telemetry.access_log() {
            access_log::install_reopen_signal();
            if let Err(e) = log.start() {
                // The sink keeps trying to open the file; requests are unaffected.
                log::error!("access log: {e}");
            }
        }
        match self.telemetry.tracer() {
            Some(tracer) => tracer.run(shutdown).await,
            None => {
                let mut shutdown = shutdown;
                let _ = shutdown.changed().await;
            }
        }
    }
}

/// `telemetry.metrics_listen`: a listener that serves the exposition on
/// `/metrics` and nothing else.
pub struct MetricsApp {
    telemetry: Arc<Telemetry>,
}

impl MetricsApp {
    pub fn new(telemetry: Arc<Telemetry>) -> MetricsApp {
        MetricsApp { telemetry }
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, body, ctype) = match (req.method.as_str(), req.uri.path()) {
            ("GET" | "HEAD", "/metrics") => (
                StatusCode::OK,
                self.telemetry.scrape().into_bytes(),
                super::CONTENT_TYPE,
            ),
            _ => (
                StatusCode::NOT_FOUND,
                b"only /metrics is served here\n".to_vec(),
                "text/plain; charset=utf-8",
            ),
        };
        let len = body.len();
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("content-length", len)
            .header("cache-control", "no-store")
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
