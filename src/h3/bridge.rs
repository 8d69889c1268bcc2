//! The in-process stream one HTTP/3 request is handed to Pingora on: the
//! server half of a `tokio::io::duplex` pipe, carrying the QUIC peer and local
//! addresses in its socket digest (so `session.client_addr()` is the real
//! client for rate limits, X-Forwarded-For, admin access and logs) and a TLS
//! digest (so the pipeline treats the request as HTTPS).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Cipher name reported for bridged requests (QUIC always runs TLS 1.3).
pub const H3_CIPHER: &str = "QUIC";
/// TLS version reported for bridged requests; also how a phase can tell HTTP/3.
pub use crate::exchange::client::H3_TLS_VERSION;

static NEXT_ID: AtomicI32 = AtomicI32::new(1);

/// Server half of the pipe between the HTTP/3 exchange and `HttpProxy`.
#[derive(Debug)]
pub struct BridgeStream {
    inner: DuplexStream,
    socket: Arc<SocketDigest>,
    ssl: Arc<SslDigest>,
    id: UniqueIDType,
}

impl BridgeStream {
    pub fn new(inner: DuplexStream, peer: SocketAddr, local: SocketAddr) -> BridgeStream {
        let socket = SocketDigest::from_raw_fd(-1);
        // Fresh OnceCells: setting them cannot fail.
        let _ = socket.peer_addr.set(Some(PSocketAddr::Inet(peer)));
        let _ = socket.local_addr.set(Some(PSocketAddr::Inet(local)));
        BridgeStream {
            inner,
            socket: Arc::new(socket),
            ssl: Arc::new(SslDigest::new(
                H3_CIPHER,
                H3_TLS_VERSION,
                None,
                None,
                vec![],
            )),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed) & i32::MAX,
        }
    }
}

impl AsyncRead for BridgeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BridgeStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for BridgeStream {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for BridgeStream {
    fn id(&self) -> UniqueIDType {
        self.id
    }
}

impl Ssl for BridgeStream {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.ssl.clone())
    }
}

impl GetTimingDigest for BridgeStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![]
    }
}

impl GetProxyDigest for BridgeStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for BridgeStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.socket.clone())
    }
}

#[async_trait]
impl Peek for BridgeStream {}
