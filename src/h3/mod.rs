//! The HTTP/3 sidecar: a QUIC endpoint (quinn + h3) on the UDP side of every
//! TLS listen address, with the same certificates (SNI resolver), feeding each
//! request into a second `HttpProxy<BextProxy>` built from a clone of the
//! listeners' `BextProxy` (shared state), so routes, WAF, limits, cache, load
//! balancing, logs and metrics are the same as over TCP.
//!
//! It owns QUIC connections and HTTP/3 framing only; the request mapping is in
//! [`exchange`], the in-process stream in [`bridge`].
//!
//! Graceful upgrade: the UDP socket is not part of Pingora's listening-fd
//! handoff; instead both processes hold the port at once and the kernel
//! steers each datagram to the process owning its connection ([`socket`]),
//! so QUIC answers throughout:
//! - SIGQUIT: Pingora sends the TCP fds to the new process and keeps the old
//!   one fully serving for 5 s; the new process binds the UDP port next to
//!   it and attaches the steering program: from then on new connections
//!   reach the new process and the old one's connections keep reaching it.
//! - Shutdown broadcast (after those 5 s, or at once for SIGTERM/SIGINT):
//!   each connection gets an HTTP/3 GOAWAY, in-flight requests get [`DRAIN`]
//!   (and the process's grace period) to finish; a connection whose requests
//!   are all answered is closed with H3_NO_ERROR after at most [`LINGER`]
//!   (the client learns any request it still has open was not processed and
//!   may retry it elsewhere), what is left after [`DRAIN`] is cut with
//!   H3_REQUEST_CANCELLED. The old process keeps accepting new connections
//!   while it drains: it gets Initials only while no successor has bound
//!   (a plain stop, or the new process still starting), and then it is the
//!   only QUIC server a client can reach. The drain ends at [`DRAIN`] or once
//!   its connections are gone, so a plain stop ends in bounded time.
//! - The new process waits (retrying every [`REBIND_EVERY`]) while it cannot
//!   bind next to the old one: an old process without `SO_REUSEPORT` (a bext
//!   from before this scheme; not Linux), or two processes already on the
//!   port (an upgrade during an upgrade's grace period; the steering orders
//!   two). That wait is an HTTP/3 gap, bridged by clients over TCP.
//!
//! Not supported: WebSocket over HTTP/3 (extended CONNECT), 0-RTT (refused so
//! requests cannot be replayed), HTTP/3 trailers towards Phoenix.

pub mod bridge;
pub mod exchange;
pub mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::proxy::{http_proxy, HttpProxy};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService, GenBackgroundService};
use pingora::tls::{version, ServerConfig};
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::exchange::Protocol;
use crate::limits::{Limits, Listener};
use crate::proxy::BextProxy;
use crate::tls::TlsPlan;
use exchange::Pipeline;

/// How often a failed UDP bind (old process still on the port) is retried.
pub const REBIND_EVERY: Duration = Duration::from_millis(500);
/// On shutdown, how long in-flight HTTP/3 requests get before the socket closes.
pub const DRAIN: Duration = Duration::from_secs(5);
/// QUIC connections served at once per endpoint; more are refused.
pub const MAX_CONNECTIONS: usize = 4096;
/// Concurrent requests (bidirectional streams) per QUIC connection.
pub const MAX_STREAMS: u32 = 100;
/// Largest request header section accepted (QPACK-decoded).
pub const MAX_FIELD_SECTION: u64 = 64 * 1024;
/// Request-body bytes a client may have in flight per stream (QUIC flow control).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// ... and per connection, across its streams: with the pipe buffers this
/// bounds what one connection can make bext hold in memory.
pub const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// After its last request, how long a connection that was sent GOAWAY waits
/// for the client to close it before closing it itself: closing at once
/// would drop the last response's unacknowledged packets.
pub const LINGER: Duration = Duration::from_secs(1);
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client gets to send a request's headers once its stream is open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 9114 §8.1 error codes for closing a connection.
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);
const H3_REQUEST_CANCELLED: quinn::VarInt = quinn::VarInt::from_u32(0x10c);

#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    #[error("tls: cannot build the QUIC TLS config: {0}")]
    Crypto(String),
    #[error("quic connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("h3 connection: {0}")]
    H3(#[from] ::h3::error::ConnectionError),
}

/// The sidecar as a Pingora background service.
pub struct H3Sidecar {
    proxy: Arc<HttpProxy<BextProxy>>,
    /// The same connection caps (total, per client IP) as the TCP listeners.
    limits: Arc<Limits>,
    listen: Vec<SocketAddr>,
    config: quinn::ServerConfig,
}

/// Builds the sidecar for `tls.listen`, with its own `HttpProxy` over `app`.
pub fn service(
    conf: &Arc<ServerConf>,
    app: BextProxy,
    tls: &TlsPlan,
) -> Result<GenBackgroundService<H3Sidecar>, H3Error> {
    let sidecar = H3Sidecar {
        limits: app.limits(),
        proxy: Arc::new(http_proxy(conf, app)),
        listen: tls.listen.clone(),
        config: quic_config(tls)?,
    };
    let mut service = background_service("bext http3", sidecar);
    // As many threads as the TCP listeners get; connections are spread over them.
    service.threads = Some(conf.threads);
    Ok(service)
}

fn quic_config(tls: &TlsPlan) -> Result<quinn::ServerConfig, H3Error> {
    pingora::tls::install_default_crypto_provider();
    let mut rustls = ServerConfig::builder_with_protocol_versions(&[&version::TLS13])
        .with_no_client_auth()
        .with_cert_resolver(tls.resolver());
    rustls.alpn_protocols = vec![b"h3".to_vec()];
    rustls.max_early_data_size = 0; // no 0-RTT: early data can be replayed
    let crypto = QuicServerConfig::try_from(rustls).map_err(|e| H3Error::Crypto(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        .max_concurrent_uni_streams(16u32.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .send_window(u64::from(CONNECTION_WINDOW))
        .max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

#[async_trait]
impl BackgroundService for H3Sidecar {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut endpoints = JoinSet::new();
        for addr in &self.listen {
            let (addr, config) = (*addr, self.config.clone());
            let (proxy, limits) = (self.proxy.clone(), self.limits.clone());
            endpoints.spawn(run_endpoint(addr, config, proxy, limits, shutdown.clone()));
        }
        while endpoints.join_next().await.is_some() {}
    }
}

/// Binds the UDP socket next to the old process's (see [`socket`]), waiting
/// while that is not possible yet: another process without `SO_REUSEPORT`
/// (a bext from before the shared socket, or not Linux) still holds the
/// port, or two bext processes already do (an upgrade during an upgrade's
/// grace period: the steering only orders two, so the newest waits for the
/// oldest to let go; the middle one serves meanwhile).
async fn bind(
    addr: SocketAddr,
    config: &quinn::ServerConfig,
    shutdown: &mut ShutdownWatch,
) -> Option<quinn::Endpoint> {
    let mut attempts = 0u32;
    loop {
        let held = socket::holders(addr).unwrap_or(0);
        let bound = if held >= 2 {
            Err(format!(
                "{held} processes hold it (an upgrade is still draining)"
            ))
        } else {
            socket::bind(addr)
                .and_then(|sock| {
                    quinn::Endpoint::new(
                        socket::endpoint_config(),
                        Some(config.clone()),
                        sock,
                        Arc::new(quinn::TokioRuntime),
                    )
                })
                .map_err(|e| e.to_string())
        };
        match bound {
            Ok(ep) => return Some(ep),
            Err(e) => {
                if attempts % 20 == 0 {
                    log::warn!(
                        "http3: cannot bind udp {addr} yet ({e}); retrying every {REBIND_EVERY:?}"
                    );
                }
                attempts += 1;
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return None,
            _ = tokio::time::sleep(REBIND_EVERY) => {}
        }
    }
}

async fn run_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    proxy: Arc<HttpProxy<BextProxy>>,
    limits: Arc<Limits>,
    mut shutdown: ShutdownWatch,
) {
    let Some(endpoint) = bind(addr, &config, &mut shutdown).await else {
        return;
    };
    let local = endpoint.local_addr().unwrap_or(addr);
    log::info!("http3 listening on udp {local}");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    // Set by the shutdown signal: the end of the drain.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed(), if deadline.is_none() => {
                // GOAWAY goes out on each connection (they watch the same
                // signal). New connections are still accepted (and told
                // GOAWAY after their first request): whoever still gets
                // Initials is the only QUIC server a client can reach; once
                // a successor has bound, the steering sends it the Initials.
                deadline = Some(tokio::time::Instant::now() + DRAIN);
                if conns.is_empty() {
                    break;
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                if deadline.is_some() && conns.is_empty() {
                    break;
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    limits.metrics.connection_refused(Listener::Quic);
                    incoming.refuse();
                    continue;
                };
                let client = incoming.remote_address().ip().to_canonical();
                let Ok(capped) = limits.admit_connection(Some(client), Listener::Quic) else {
                    incoming.refuse();
                    continue;
                };
                let pipe = Pipeline {
                    proxy: proxy.clone(),
                    peer: incoming.remote_address(),
                    local,
                    shutdown: shutdown.clone(),
                };
                let limits = limits.clone();
                let connection = async move {
                    if let Err(e) = serve_connection(incoming, pipe, &limits).await {
                        log::debug!("http3 connection: {e}");
                    }
                    drop((permit, capped));
                };
                // Like Pingora's own listeners: each connection lives on one of
                // the service's threads, picked at random.
                conns.spawn_on(connection, &pingora_runtime::current_handle());
            }
        }
    }
    // What is still open after DRAIN is cut: not H3_NO_ERROR, which would
    // tell clients their open requests were never processed.
    endpoint.set_server_config(None);
    endpoint.close(H3_REQUEST_CANCELLED, b"shutdown");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    log::info!("http3 on udp {local} closed");
}

/// Sleeps until `deadline`; never returns without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    mut pipe: Pipeline,
    limits: &Limits,
) -> Result<(), H3Error> {
    // The QUIC handshake is the TLS handshake (quinn bounds it by its idle
    // timeout, reported as a timed-out connection).
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            let timed_out = matches!(e, quinn::ConnectionError::TimedOut);
            limits.metrics.tls_handshake_failed(
                Listener::Quic,
                (!timed_out).then_some(&e as &dyn std::fmt::Display),
            );
            return Err(e.into());
        }
    };
    limits.metrics.tls_handshake(Listener::Quic);
    let _open = limits.metrics.connection(Listener::Quic, Protocol::Http3);
    pipe.peer = conn.remote_address();
    let quic = conn.clone();
    let mut h3 = ::h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await?;
    let mut shutdown = pipe.shutdown.clone();
    let mut draining = *shutdown.borrow();
    if draining {
        h3.shutdown(0).await?;
    }
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed(), if !draining => {
                draining = true;
                h3.shutdown(0).await?; // GOAWAY: finish what is open, start nothing new
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let pipe = pipe.clone();
                    requests.spawn(serve_request(resolver, pipe));
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        log::debug!("http3 connection from {}: {e}", pipe.peer);
                    }
                    break;
                }
            }
        }
    }
    // Keep the connection (and so its streams) alive until open requests end.
    while requests.join_next().await.is_some() {}
    if quic.close_reason().is_none() {
        // Every request it accepted is answered: a graceful close, which
        // also tells the client that any request still open on its side was
        // not processed (RFC 9114 §5.2) and can be retried elsewhere.
        let _ = tokio::time::timeout(LINGER, quic.closed()).await;
        quic.close(H3_NO_ERROR, b"");
    }
    Ok(())
}

async fn serve_request(
    resolver: ::h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    pipe: Pipeline,
) {
    let (req, stream) = match tokio::time::timeout(HEADER_TIMEOUT, resolver.resolve_request()).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return log::debug!("http3 request headers: {e}"),
        Err(_) => return log::debug!("http3 request headers: timed out"),
    };
    if let Err(e) = exchange::run(req, stream, pipe).await {
        log::debug!("http3 request: {e}");
    }
}
