//! The connection layer of the limits: [`LimitedApp`] sits between Pingora's
//! listener and the `HttpProxy`, and every accepted connection passes through
//! it. It refuses connections over the caps before any byte is read, and wraps
//! each HTTP/1 connection in a [`GuardedStream`] that enforces what Pingora
//! 0.9 cannot express:
//!
//! * a deadline for the *whole* request head (`limits.header_timeout`).
//!   Pingora's own read timeout restarts on every read, so a slow-loris client
//!   sending one byte a second would never be cut. The clock starts at accept
//!   for the first request and at the first byte of each later one (the idle
//!   gap between keep-alive requests is `limits.keepalive_timeout`).
//! * a byte budget for the head while it is read (Pingora buffers up to 1 MiB
//!   before it gives up), answered 414 (request line) or 431 (headers).
//!
//! The proxy tells the wrapper that the head is complete from
//! `early_request_filter` ([`headers_complete`]), reaching it through
//! `Session::stream()` and `IO::as_any()`. Streams that did not come through
//! here (HTTP/2, the h3 bridge) simply have no wrapper, and no head deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::conns::Permit;
use super::{Limits, Listener};
use crate::exchange::Protocol;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BODY: u8 = 2;

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const TOO_LONG_414: &[u8] =
    b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const TOO_LARGE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// A client connection with the head deadline and byte budget applied.
pub struct GuardedStream {
    inner: Stream,
    phase: AtomicU8,
    header_timeout: Duration,
    /// When the current head started to arrive.
    head_started: Instant,
    /// The timer is only armed once a head read would block: a head that
    /// arrives in one read (nearly all of them) then costs no timer-wheel
    /// registration, which tokio does under the driver's lock.
    armed: bool,
    deadline: Pin<Box<Sleep>>,
    head_bytes: usize,
    head_budget: usize,
    line_done: bool,
    _permit: Permit,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl GuardedStream {
    fn new(inner: Stream, permit: Permit, header_timeout: Duration, head_budget: usize) -> Self {
        GuardedStream {
            inner,
            phase: AtomicU8::new(HEAD),
            header_timeout,
            head_started: Instant::now(),
            armed: true,
            deadline: Box::pin(tokio::time::sleep(header_timeout)),
            head_bytes: 0,
            head_budget,
            line_done: false,
            _permit: permit,
        }
    }

    /// Best effort: a short status line before the connection is dropped.
    fn answer(&mut self, cx: &mut Context<'_>, response: &'static [u8]) {
        let _ = Pin::new(&mut self.inner).poll_write(cx, response);
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
    }
}

/// The wrapper under a Pingora stream, if this connection came through [`LimitedApp`].
fn guarded(stream: &Stream) -> Option<&GuardedStream> {
    // Through the trait object explicitly: `Box<dyn IO>` must not be taken
    // for the concrete type.
    let io: &dyn IO = &**stream;
    io.as_any().downcast_ref::<GuardedStream>()
}

/// Tells the connection wrapper (if any) that the request head is complete.
pub fn headers_complete(stream: Option<&Stream>) {
    if let Some(g) = stream.and_then(guarded) {
        g.phase.store(BODY, Ordering::Relaxed);
    }
}

impl GuardedStream {
    /// Ready once the next request's first byte (or EOF) is waiting. Plain
    /// TCP only; any other stream is ready at once.
    fn poll_next_request(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io: &dyn IO = &*self.inner;
        match io.as_any().downcast_ref::<L4Stream>() {
            Some(l4) => l4.poll_read_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.load(Ordering::Relaxed);
        if phase == BODY {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if phase == IDLE {
                    this.phase.store(HEAD, Ordering::Relaxed);
                    this.head_bytes = 0;
                    this.line_done = false;
                    this.head_started = Instant::now();
                    this.armed = false;
                }
                this.head_bytes += fresh.len();
                if !this.line_done && fresh.contains(&b'\n') {
                    this.line_done = true;
                }
                if this.head_bytes > this.head_budget {
                    let line_done = this.line_done;
                    this.answer(
                        cx,
                        if line_done {
                            TOO_LARGE_431
                        } else {
                            TOO_LONG_414
                        },
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request head larger than the limits allow",
                    )));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if phase == HEAD && !this.armed {
                    let at = this.head_started + this.header_timeout;
                    this.deadline.as_mut().reset(at);
                    this.armed = true;
                }
                if phase == HEAD && this.deadline.as_mut().poll(cx).is_ready() {
                    if this.head_bytes > 0 {
                        this.answer(cx, TIMEOUT_408);
                    }
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received within limits.header_timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        Peek::try_peek(self.inner.as_mut(), buf).await
    }
}

/// The listening application: connection caps and the HTTP/1 keep-alive loop
/// (Pingora's own loop, plus the wrapper and our keep-alive idle time) around
/// the proxy app `A`.
pub struct LimitedApp<A> {
    inner: Arc<A>,
    limits: Arc<Limits>,
    idle_drain: Duration,
    /// Set, and `idle_abort` notified, when idle keep-alive connections must
    /// close (the end of the shutdown drain).
    aborting: AtomicBool,
    idle_abort: Notify,
}

impl<A> LimitedApp<A> {
    pub fn new(inner: A, limits: Arc<Limits>) -> LimitedApp<A> {
        LimitedApp {
            inner: Arc::new(inner),
            limits,
            idle_drain: Duration::ZERO,
            aborting: AtomicBool::new(false),
            idle_abort: Notify::new(),
        }
    }

    /// Marks the connection idle (its next byte starts a new head, with its
    /// own deadline) and waits, holding nothing but the connection, until that
    /// request starts to arrive. `false`: close it (idle past `keepalive`, or
    /// shutdown is closing idle connections).
    ///
    /// Serving a request takes Pingora's session and request future (~10 KiB,
    /// plus a 4 KiB head buffer) the moment its head read begins; waiting here
    /// first is what lets an idle connection cost a few hundred bytes, as in
    /// nginx. Streams without readiness (TLS, which may hold decrypted bytes
    /// the socket does not show) are ready at once and wait in Pingora's read.
    async fn idle_until_readable(&self, stream: &Stream, keepalive: Duration) -> bool {
        let Some(g) = guarded(stream) else {
            return true;
        };
        g.phase.store(IDLE, Ordering::Relaxed);
        let notified = self.idle_abort.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.aborting.load(Ordering::Acquire) {
            return false;
        }
        let ready = std::future::poll_fn(|cx| g.poll_next_request(cx));
        tokio::select! {
            r = tokio::time::timeout(keepalive, ready) => r.is_ok(),
            () = &mut notified => false,
        }
    }

    /// How long idle keep-alive connections stay open after shutdown starts
    /// (graceful stop or upgrade), waiting for one more request to answer with
    /// `Connection: close`. Closing them at once races with a client that is
    /// sending its next request at that moment: it gets a reset instead of a
    /// response. Set from `server.grace_period`.
    pub fn with_idle_drain(mut self, idle_drain: Duration) -> LimitedApp<A> {
        self.idle_drain = idle_drain;
        self
    }
}

#[async_trait]
impl<A> ServerApp for LimitedApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Failed handshakes are clients' and scanners' faults far more often
    /// than bext's: counted, and logged at most once a minute, instead of
    /// Pingora's ERROR line per connection.
    fn downstream_handshake_failed(&self, error: Option<&pingora::Error>) -> bool {
        self.limits
            .metrics
            .tls_handshake_failed(Listener::Tls, error.map(|e| e as &dyn std::fmt::Display));
        false
    }

    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Pingora hands over TLS streams with the handshake done.
        let listener = if stream.get_ssl_digest().is_some() {
            Listener::Tls
        } else {
            Listener::Tcp
        };
        let permit = match self.limits.admit_connection(peer, listener) {
            Ok(p) => p,
            Err(()) => {
                // Cheap refusal: no parsing, a canned answer, then close.
                let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(REFUSED))
                    .await;
                return None;
            }
        };
        let h2c = self
            .inner
            .server_options()
            .is_some_and(|o| o.h2c || o.force_custom);
        if listener == Listener::Tls {
            self.limits.metrics.tls_handshake(listener);
        }
        let h2 = !matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1));
        // An h2c listener may also see HTTP/1.1; counted as the listener's protocol.
        let protocol = if h2 || h2c {
            Protocol::Http2
        } else {
            Protocol::Http11
        };
        let _open = self.limits.metrics.connection(listener, protocol);
        let _active = crate::memory::Active::new();
        if h2c || h2 {
            // HTTP/2 (and custom protocols): Pingora's own handling; the
            // connection still holds its slot until it ends.
            let _permit = permit;
            return self.inner.process_new(stream, shutdown).await;
        }
        let settings = self.limits.settings();
        let plan = &settings.plan;
        let head_budget = usize::try_from(plan.max_request_target + plan.max_headers_size)
            .unwrap_or(usize::MAX)
            .saturating_add(4096);
        let keepalive = plan.keepalive_timeout.as_secs().max(1);
        let guarded = GuardedStream::new(stream, permit, plan.header_timeout, head_budget);
        let mut session = ServerSession::new_http1(Box::new(guarded));
        let reuses = self
            .inner
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        session.set_keepalive((!*shutdown.borrow()).then_some(keepalive));
        session.set_keepalive_reuses_remaining(reuses);
        let mut result = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            if !self
                .idle_until_readable(&stream, plan.keepalive_timeout)
                .await
            {
                return None;
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            if session.get_keepalive().is_some() && !*shutdown.borrow() {
                session.set_keepalive(Some(keepalive));
            }
            result = self.inner.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        // The listeners have stopped accepting. Busy connections finish their
        // request with `Connection: close` (Pingora turns keep-alive off once
        // shutdown is flagged); idle ones are only aborted near the end of the
        // grace period, so each client's next request is answered, not reset.
        tokio::time::sleep(self.idle_drain).await;
        self.aborting.store(true, Ordering::Release);
        self.idle_abort.notify_waiters();
        self.inner.http_cleanup().await;
    }
}
