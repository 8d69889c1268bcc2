//! TLS termination: the compiled `[tls]` plan, the SNI certificate store, the
//! TCP TLS listeners (TLS 1.2/1.3, ALPN `h2` + `http/1.1`), the HTTP/2 limits of
//! every downstream listener, and the edge HTTPS policy (redirect, HSTS,
//! Alt-Svc). The HTTP/3 endpoint reuses [`TlsPlan::resolver`] from here.
//!
//! It must not decide anything about routing or upstreams: requests that
//! arrive over TLS run through the same `BextProxy` phases as plain ones.
//!
//! Certificates are read once, when the config is compiled (`bext check`
//! reports unreadable or mismatched files). A certificate renewal is picked
//! up by a graceful upgrade (`SIGQUIT` + `bext serve -u`), which compiles a new
//! plan and so re-reads every file.

pub mod certs;
pub mod edge;
pub mod sni;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::http::v2::server::H2Options;
use pingora::proxy::HttpProxy;
use pingora::services::listening::Service;

pub use edge::{is_secure, scheme, EdgePolicy};
pub use sni::{CertStore, SniResolver};

/// HTTP/2: streams one client may have open at once (per connection).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// HTTP/2: largest decoded header list accepted (larger → stream refused).
pub const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// HTTP/2 rapid reset (CVE-2023-44487): streams the client may open and reset
/// before bext accepted them; one more and the connection gets GOAWAY.
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2: protocol-error resets bext may send on one connection before it
/// closes it (a client provoking errors in a loop).
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// HTTP/2: reset streams remembered per connection.
pub const H2_MAX_CONCURRENT_RESETS: usize = 50;
/// HTTP/2: response bytes buffered per stream before writes wait.
pub const H2_MAX_SEND_BUFFER: usize = 256 * 1024;

/// `[tls]`, validated and loaded.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub listen: Vec<SocketAddr>,
    /// Swappable: a reload in place stores the new certificates here, and
    /// every listener's resolver (TCP and QUIC) reads the current ones.
    pub certs: Arc<arc_swap::ArcSwap<CertStore>>,
    /// QUIC endpoint on the UDP side of every `listen` address.
    pub http3: bool,
    /// 301 or 308 when the plain listeners redirect to HTTPS.
    pub redirect_status: Option<u16>,
    pub hsts: Option<HeaderValue>,
}

impl TlsPlan {
    /// The port redirects point at (the first TLS listen address).
    pub fn https_port(&self) -> u16 {
        self.listen.first().map_or(443, |a| a.port())
    }

    pub fn resolver(&self) -> Arc<SniResolver> {
        Arc::new(SniResolver(self.certs.clone()))
    }
}

/// Post-handshake callbacks: none (certificates come from the resolver).
struct NoCallbacks;

#[async_trait]
impl TlsAccept for NoCallbacks {}

/// HTTP/2 settings for every downstream listener (TLS and h2c): bounded
/// streams, header lists and reset budgets. Pingora's defaults cap only
/// streams (100) and header lists (64 KiB); the reset limits here are
/// explicit so a dependency bump cannot loosen them silently.
pub fn h2_options() -> H2Options {
    let mut o = H2Options::default();
    o.max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_reset_streams(H2_MAX_CONCURRENT_RESETS)
        .max_send_buffer_size(H2_MAX_SEND_BUFFER);
    o
}

/// Applies the HTTP/2 limits (TLS and h2c) and h2c itself to the proxy app.
pub fn configure_http<SV>(app: &mut HttpProxy<SV>, h2c: bool) {
    app.h2_options = Some(h2_options());
    if h2c {
        let mut options = app.server_options.take().unwrap_or_default();
        options.h2c = true;
        app.server_options = Some(options);
    }
}

/// Adds one TLS listener (ALPN h2, http/1.1) per `tls.listen` address. Never
/// panics: the certificates were loaded and checked when the plan was compiled.
pub fn add_listeners<A>(service: &mut Service<A>, tls: Option<&TlsPlan>) -> pingora::Result<()> {
    let Some(tls) = tls else {
        return Ok(());
    };
    for addr in &tls.listen {
        let mut settings = TlsSettings::with_callbacks(Box::new(NoCallbacks))?;
        settings.set_cert_resolver(tls.resolver());
        settings.enable_h2();
        service.add_tls_with_settings(&addr.to_string(), None, settings);
    }
    Ok(())
}

/// One start-up line naming the HTTPS (and HTTP/3) addresses.
pub fn log_listeners(tls: &TlsPlan) {
    let addrs: Vec<String> = tls.listen.iter().map(|a| a.to_string()).collect();
    log::info!(
        "bext HTTPS (h2, http/1.1) on {}{}",
        addrs.join(", "),
        if tls.http3 {
            "; HTTP/3 on the same ports (udp)"
        } else {
            ""
        }
    );
}
