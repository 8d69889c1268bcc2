//! One HTTP/3 request, run through `HttpProxy<BextProxy>` as an HTTP/1.1
//! exchange over an in-process pipe.
//!
//! The server half of the pipe goes to `process_new_http` (every phase runs:
//! routing, WAF, limits, cache, upstream, logging). The client half is driven
//! by hyper's HTTP/1.1 client, which serialises the request and parses the
//! response (chunked, content-length, HEAD, 1xx). Bodies stream both ways at
//! the same time, through bounded buffers, so a large upload and an early
//! answer (a 403 or 413 before the body is read) both work, and a slow
//! reader on either side slows the other down instead of growing memory.

use std::net::SocketAddr;
use std::sync::Arc;

use ::h3::error::Code;
use ::h3::server::RequestStream;
use bytes::{Buf, Bytes};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::sync::{mpsc, oneshot};

use super::bridge::BridgeStream;
use crate::proxy::BextProxy;

/// Bytes buffered in each direction of the in-process pipe.
const PIPE_BUFFER: usize = 64 * 1024;
/// Request-body chunks queued between QUIC and the pipe.
const BODY_QUEUE: usize = 4;
/// How long the first body bytes (or the end of the request) may take.
const FIRST_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;
type H3Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type H3Send = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type H3Recv = RequestStream<h3_quinn::RecvStream, Bytes>;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("h3 stream: {0}")]
    Stream(#[from] ::h3::error::StreamError),
    #[error("bridge: {0}")]
    Bridge(#[from] hyper::Error),
    #[error("response: {0}")]
    Http(#[from] http::Error),
}

/// Where the request came from and goes to.
#[derive(Clone)]
pub struct Pipeline {
    pub proxy: Arc<HttpProxy<BextProxy>>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub shutdown: ShutdownWatch,
}

/// Serves one request end to end; errors are the client's or the pipe's.
pub async fn run(req: Request<()>, stream: H3Stream, pipe: Pipeline) -> Result<(), ExchangeError> {
    let (mut send, mut recv) = stream.split();
    if req.method() == Method::CONNECT {
        // No extended CONNECT (WebSocket over HTTP/3) and no tunnels.
        return respond_plain(
            &mut send,
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported over HTTP/3\n",
        )
        .await;
    }
    // The body: none, streamed, or (without content-length) peeked at first:
    // a GET usually ends with its HEADERS frame, and an empty body must not
    // reach Phoenix as a chunked one.
    let first = match content_length(req.headers()) {
        Some(0) => None,
        Some(_) => Some(None),
        None => match tokio::time::timeout(FIRST_BODY_WAIT, recv.recv_data()).await {
            Ok(first) => first?.map(|mut b| Some(b.copy_to_bytes(b.remaining()))),
            Err(_) => {
                return respond_plain(
                    &mut send,
                    StatusCode::REQUEST_TIMEOUT,
                    "request body timed out\n",
                )
                .await
            }
        },
    };
    // Dropping `stop` (when the exchange ends, however it ends) tells the
    // pump to stop reading a body nobody wants any more.
    let (stop, stopped) = oneshot::channel::<()>();
    let body = match first {
        None => Empty::new().map_err(|e| match e {}).boxed_unsync(),
        Some(first) => {
            let (tx, rx) = mpsc::channel(BODY_QUEUE);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            tokio::spawn(pump_request_body(recv, first, tx, stopped));
            StreamBody::new(stream).boxed_unsync()
        }
    };
    let result = forward(req, body, &mut send, &pipe).await;
    drop(stop);
    result
}

/// The HTTP/1.1 leg: request out, response back to the HTTP/3 client.
async fn forward(
    req: Request<()>,
    body: Body,
    send: &mut H3Send,
    pipe: &Pipeline,
) -> Result<(), ExchangeError> {
    let (client_io, server_io) = tokio::io::duplex(PIPE_BUFFER);
    let session = ServerSession::new_http1(Box::new(BridgeStream::new(
        server_io, pipe.peer, pipe.local,
    )));
    let (proxy, shutdown) = (pipe.proxy.clone(), pipe.shutdown.clone());
    tokio::spawn(async move {
        // One request per pipe: the stream handed back for keep-alive is dropped.
        let _ = proxy.process_new_http(session, &shutdown).await;
    });

    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(client_io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            log::debug!("h3 bridge connection: {e}");
        }
    });

    let response = match sender.send_request(to_http1(req, body)).await {
        Ok(r) => r,
        Err(e) => {
            log::debug!("h3 bridge: no response from the pipeline: {e}");
            return respond_plain(send, StatusCode::BAD_GATEWAY, "bad gateway\n").await;
        }
    };
    let (mut parts, mut body) = response.into_parts();
    strip_connection_headers(&mut parts.headers);
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // The pipeline broke off mid-body: reset rather than finish,
                // so the client cannot mistake a truncated body for a whole one.
                log::debug!("h3 bridge: response body: {e}");
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                    return Ok(());
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}

/// Copies the client's body into the pipe, a few chunks ahead at most. When
/// the exchange is over first (an early answer such as a 403 or 413), it asks
/// the client to stop sending (STOP_SENDING with H3_NO_ERROR, RFC 9114 §4.1).
async fn pump_request_body(
    mut recv: H3Recv,
    first: Option<Bytes>,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut next = first;
    loop {
        let chunk = match next.take() {
            Some(chunk) => chunk,
            None => tokio::select! {
                r = recv.recv_data() => match r {
                    Ok(Some(mut buf)) => buf.copy_to_bytes(buf.remaining()),
                    Ok(None) => return,
                    Err(e) => {
                        // A reset request body must not be forwarded as complete.
                        let _ = tx.send(Err(Box::new(e))).await;
                        return;
                    }
                },
                _ = &mut stopped => return recv.stop_sending(Code::H3_NO_ERROR),
            },
        };
        tokio::select! {
            sent = tx.send(Ok(Frame::data(chunk))) => {
                if sent.is_err() {
                    return recv.stop_sending(Code::H3_NO_ERROR);
                }
            }
            _ = &mut stopped => return recv.stop_sending(Code::H3_NO_ERROR),
        }
    }
}

/// The HTTP/1.1 form of an HTTP/3 request: origin-form target, `Host` from
/// `:authority`, cookies joined into one header, no connection-specific headers.
fn to_http1(req: Request<()>, body: Body) -> Request<Body> {
    let (mut parts, ()) = req.into_parts();
    let authority = parts.uri.authority().cloned();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // A path_and_query always parses as a URI; "/" is the fallback.
    parts.uri = target
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    parts.version = http::Version::HTTP_11;
    strip_connection_headers(&mut parts.headers);
    join_cookies(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            parts.headers.insert(header::HOST, value);
        }
    }
    Request::from_parts(parts, body)
}

/// Removes headers that belong to one HTTP/1.1 connection (illegal in HTTP/3),
/// including any the `Connection` header nominates.
fn strip_connection_headers(headers: &mut HeaderMap) {
    let nominated: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in nominated {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// HTTP/2 and HTTP/3 may split `cookie` into several fields; HTTP/1.1 needs one.
fn join_cookies(headers: &mut HeaderMap) {
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if values.len() < 2 {
        return;
    }
    let joined: Vec<u8> = values
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A short response written by the bridge itself (never reaches Phoenix).
async fn respond_plain(
    send: &mut H3Send,
    status: StatusCode,
    body: &'static str,
) -> Result<(), ExchangeError> {
    let resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len())
        .body(())?;
    send.send_response(resp).await?;
    send.send_data(Bytes::from_static(body.as_bytes())).await?;
    send.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_becomes_origin_form_with_host_and_one_cookie() {
        let req = Request::builder()
            .method("POST")
            .uri("https://a.test:8443/p/q?x=1")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("connection", "x-secret")
            .header("x-secret", "1")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let out = to_http1(req, Empty::new().map_err(|e| match e {}).boxed_unsync());
        assert_eq!(out.uri(), "/p/q?x=1");
        assert_eq!(out.headers()["host"], "a.test:8443");
        assert_eq!(out.headers()["cookie"], "a=1; b=2");
        for gone in ["connection", "x-secret", "te"] {
            assert!(!out.headers().contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn response_hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-type", HeaderValue::from_static("text/html"));
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1);
    }
}
