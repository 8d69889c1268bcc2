//! Embedded demo origin used by `bext demo`.
//!
//! This module owns a tiny HTTP/1.1 + WebSocket server that imitates a small
//! Phoenix application, so bext can be tried without installing Elixir:
//!
//! * `GET /` — an HTML landing page with Phoenix-like default headers (session
//!   cookie, `x-frame-options`, private `cache-control`) and an inline script
//!   that joins a LiveView-style channel over `/live/websocket`.
//! * `GET /posts/:id` — cacheable pages (`cache-control: public, max-age=60`)
//!   tagged `cache-tag: post:<id>`, showing when and how often they were
//!   rendered so cache hits are visible.
//! * `GET /health` — plain `ok`.
//! * `/live/websocket` — a WebSocket endpoint speaking the Phoenix channel
//!   protocol (serializer `vsn` 1.x objects or 2.x arrays).
//!
//! [`DemoOrigin::spawn`] runs the server on a dedicated OS thread with its own
//! tokio runtime (so the caller can later start Pingora freely), while
//! [`serve`] runs it on an already-bound listener inside existing async code.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::FusedStream;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, error, info, warn};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Largest accepted WebSocket message (and frame); larger ones close with 1009.
const MAX_WS_MESSAGE: usize = 1024 * 1024;
/// Phoenix closes sockets that send nothing (not even heartbeats) for 60 s.
const WS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long we wait for the peer to finish a close handshake.
const WS_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Upper bound on channels a single socket may join.
const MAX_TOPICS_PER_SOCKET: usize = 1024;
/// Time allowed for a client to send a full request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a non-connection-specific accept error (e.g. EMFILE).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Worker threads of the runtime owned by [`DemoOrigin::spawn`].
const WORKER_THREADS: usize = 2;

/// Number of post pages rendered by this process (visible on each page).
static POST_RENDERS: AtomicU64 = AtomicU64::new(0);
/// Mixed into [`random_hex`] so two calls in the same nanosecond differ.
static RANDOM_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Handle of a running demo origin.
///
/// Dropping the handle stops the server: its runtime is shut down and the
/// listening socket is closed. Keep it alive for as long as the demo runs.
#[must_use = "dropping a DemoOrigin stops the demo server"]
#[derive(Debug)]
pub struct DemoOrigin {
    /// Address the demo origin is listening on (with the real port when
    /// spawned on port 0).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DemoOrigin {
    /// Binds `addr` (use "127.0.0.1:0" for a random port) and serves on a dedicated OS thread
    /// with its own multi-thread tokio runtime (2 worker threads). Returns once the socket is bound.
    pub fn spawn(addr: SocketAddr) -> io::Result<DemoOrigin> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;

        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bext-demo-origin".to_owned())
            .spawn(move || run_origin_thread(listener, ready_tx, shutdown_rx))?;

        match ready_rx.recv() {
            Ok(Ok(())) => {
                info!("demo origin listening on http://{local}");
                Ok(DemoOrigin {
                    addr: local,
                    shutdown: Some(shutdown_tx),
                    thread: Some(thread),
                })
            }
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "demo origin thread exited before it was ready",
                ))
            }
        }
    }
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The receiver also resolves when the sender is dropped, so a
            // failed send (thread already gone) needs no handling.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                warn!("demo origin thread panicked");
            }
        }
    }
}

/// Body of the thread started by [`DemoOrigin::spawn`]: owns the runtime.
fn run_origin_thread(
    listener: std::net::TcpListener,
    ready: std::sync::mpsc::SyncSender<io::Result<()>>,
    shutdown: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("bext-demo-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let listener = {
        let _guard = runtime.enter();
        match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        }
    };
    if ready.send(Ok(())).is_err() {
        return;
    }
    runtime.block_on(async move {
        tokio::select! {
            res = serve(listener) => {
                if let Err(err) = res {
                    error!("demo origin stopped: {err}");
                }
            }
            _ = shutdown => debug!("demo origin shutting down"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// Serve the demo app on an already-bound listener until the future is dropped (usable from tests/async code).
///
/// Dropping the future also stops every connection and WebSocket it started.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    let local = listener.local_addr()?;
    debug!("demo origin serving on {local}");
    // Connection tasks watch this channel; dropping the sender (when this
    // future is dropped) tells them to stop.
    let (_shutdown_tx, shutdown_rx) = watch::channel(());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => {
                debug!("demo origin: accept failed: {err}");
                continue;
            }
            Err(err) => {
                warn!("demo origin: accept failed: {err}; retrying");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            debug!("demo origin: set_nodelay for {peer} failed: {err}");
        }
        tokio::spawn(serve_connection(stream, peer, shutdown_rx.clone()));
    }
}

/// Accept errors that concern only the one connection being accepted.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one HTTP/1.1 connection (with upgrades) until it ends or the server stops.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, mut shutdown: watch::Receiver<()>) {
    let ctx = shutdown.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        std::future::ready(Ok::<_, Infallible>(route(req, &ctx)))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        res = conn => {
            if let Err(err) = res {
                debug!("demo origin: connection from {peer} failed: {err}");
            }
        }
        _ = shutdown.changed() => {}
    }
}

type DemoResponse = Response<Full<Bytes>>;

/// Pages served by the demo origin.
enum Page<'a> {
    Home,
    Post(&'a str),
    Health,
    LiveSocket,
}

/// Dispatches one request.
fn route(req: Request<Incoming>, shutdown: &watch::Receiver<()>) -> DemoResponse {
    let is_head = req.method() == Method::HEAD;
    let path = req.uri().path();
    let page = match path {
        "/" => Page::Home,
        "/health" => Page::Health,
        "/live/websocket" => Page::LiveSocket,
        _ => match path.strip_prefix("/posts/").and_then(parse_post_id) {
            Some(id) => Page::Post(id),
            None => return text_response(StatusCode::NOT_FOUND, is_head, "not found\n"),
        },
    };

    let head = match *req.method() {
        Method::GET | Method::HEAD => is_head,
        _ => {
            let mut resp = text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                false,
                "method not allowed\n",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
    };

    match page {
        Page::Home => home_page(&req, head),
        Page::Post(id) => post_page(id, head),
        Page::Health => text_response(StatusCode::OK, head, "ok\n"),
        Page::LiveSocket => live_socket(req, shutdown),
    }
}

/// `id` of `/posts/:id`: 1 to 20 ASCII digits.
fn parse_post_id(id: &str) -> Option<&str> {
    let valid = (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit());
    valid.then_some(id)
}

/// Builds a response with an explicit content-length; HEAD gets an empty body.
fn response(
    status: StatusCode,
    head: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: impl Into<Bytes>,
) -> DemoResponse {
    let body: Bytes = body.into();
    let length = HeaderValue::from(body.len());
    let mut resp = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *resp.status_mut() = status;
    let map = resp.headers_mut();
    for (name, value) in headers {
        map.append(name, value);
    }
    map.insert(header::CONTENT_LENGTH, length);
    map.insert(
        HeaderName::from_static("x-request-id"),
        header_value(&random_hex()),
    );
    resp
}

fn text_response(status: StatusCode, head: bool, body: &'static str) -> DemoResponse {
    response(
        status,
        head,
        vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
}

/// A header value built from text we generated ourselves (always visible ASCII).
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn html_content_type() -> (HeaderName, HeaderValue) {
    (
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    )
}

/// `GET /`: landing page with Phoenix's default browser headers.
fn home_page(req: &Request<Incoming>, head: bool) -> DemoResponse {
    let host = html_escape(&request_host(req));
    let body = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bext demo</title>
</head>
<body>
<h1>bext demo</h1>
<p>This page is served by the embedded demo origin, which behaves like a small Phoenix app, through the bext edge proxy.</p>
<ul>
<li><a href="/posts/1">/posts/1</a></li>
<li><a href="/posts/2">/posts/2</a></li>
<li><a href="/health">/health</a></li>
</ul>
<p><code>/posts/:id</code> is cacheable (<code>cache-control: public, max-age=60</code>) and tagged <code>post:&lt;id&gt;</code>. Reload a post: the render time and counter stay the same while it is served from the cache. Purge it with:</p>
<pre>curl -X POST http://{host}/__bext/cache/purge -d '{{"tag":"post:1"}}'</pre>
<h2>LiveView socket</h2>
<pre id="log"></pre>
<script>
(function () {{
  var log = document.getElementById("log");
  function line(text) {{ log.textContent += text + "\n"; }}
  var url = (location.protocol === 'https:' ? 'wss' : 'ws') + "://" + location.host + "/live/websocket?vsn=2.0.0";
  var ref = 0;
  function nextRef() {{ ref += 1; return String(ref); }}
  var heartbeat = null;
  var ws = new WebSocket(url);
  function send(msg) {{ var text = JSON.stringify(msg); line("> " + text); ws.send(text); }}
  ws.onopen = function () {{
    line("connected to " + url);
    var joinRef = nextRef();
    send([joinRef, joinRef, "lv:demo", "phx_join", {{}}]);
    heartbeat = setInterval(function () {{ send([null, nextRef(), "phoenix", "heartbeat", {{}}]); }}, 30000);
  }};
  ws.onmessage = function (event) {{ line("< " + event.data); }};
  ws.onerror = function () {{ line("websocket error"); }};
  ws.onclose = function (event) {{ line("closed (code " + event.code + ")"); if (heartbeat) {{ clearInterval(heartbeat); }} }};
}})();
</script>
</body>
</html>
"#
    );
    let cookie = format!("_demo_key={}; path=/; HttpOnly; SameSite=Lax", random_hex());
    let headers = vec![
        html_content_type(),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, private, must-revalidate"),
        ),
        (header::SET_COOKIE, header_value(&cookie)),
        (
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ),
        (
            HeaderName::from_static("x-permitted-cross-domain-policies"),
            HeaderValue::from_static("none"),
        ),
    ];
    response(StatusCode::OK, head, headers, body)
}

/// `GET /posts/:id`: cacheable, tagged page showing when it was rendered.
fn post_page(id: &str, head: bool) -> DemoResponse {
    let render = POST_RENDERS.fetch_add(1, Ordering::Relaxed) + 1;
    let generated_at = unix_time();
    let body = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Post {id}</title>
</head>
<body>
<h1>Post {id}</h1>
<p>Generated at {generated_at} (seconds since the UNIX epoch); render #{render} of this demo origin process.</p>
<p>This response is cacheable for 60 seconds and tagged <code>post:{id}</code>. If the time and render number do not change on reload, you are looking at a cache hit.</p>
<p><a href="/">Back</a></p>
</body>
</html>
"#
    );
    let headers = vec![
        html_content_type(),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        ),
        (
            HeaderName::from_static("cache-tag"),
            header_value(&format!("post:{id}")),
        ),
    ];
    response(StatusCode::OK, head, headers, body)
}

/// Host the client used, for display in the page; falls back to `localhost`
/// when absent or containing anything unusual for a host[:port].
fn request_host(req: &Request<Incoming>) -> String {
    let candidate = req
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        });
    match candidate {
        Some(host)
            if !host.is_empty()
                && host.len() <= 255
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)) =>
        {
            host
        }
        _ => "localhost".to_owned(),
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// 32 hex characters, unpredictable enough for a demo cookie / request id.
fn random_hex() -> String {
    let counter = RANDOM_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    // RandomState is seeded from OS randomness (and varies per instance).
    let state = RandomState::new();
    let word = |salt: u64| state.hash_one((counter, nanos, salt, std::process::id()));
    format!("{:016x}{:016x}", word(1), word(2))
}

/// `/live/websocket`: validates the upgrade, answers 101 and spawns the socket task.
fn live_socket(mut req: Request<Incoming>, shutdown: &watch::Receiver<()>) -> DemoResponse {
    let accept = match websocket_accept(&req) {
        Some(accept) => accept,
        None => {
            let head = req.method() == Method::HEAD;
            let mut resp = text_response(
                StatusCode::BAD_REQUEST,
                head,
                "expected a websocket upgrade\n",
            );
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return resp;
        }
    };
    let vsn = Serializer::from_query(req.uri().query());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig {
                    max_message_size: Some(MAX_WS_MESSAGE),
                    max_frame_size: Some(MAX_WS_MESSAGE),
                    ..WebSocketConfig::default()
                };
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                run_socket(ws, vsn, shutdown).await;
            }
            Err(err) => debug!("demo origin: websocket upgrade failed: {err}"),
        }
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, header_value(&accept));
    resp
}

/// `Sec-WebSocket-Accept` for a valid RFC 6455 upgrade request, else `None`.
fn websocket_accept<B>(req: &Request<B>) -> Option<String> {
    if req.method() != Method::GET || req.version() != Version::HTTP_11 {
        return None;
    }
    let has_token = |name: HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return None;
    }
    let version = req.headers().get(header::SEC_WEBSOCKET_VERSION)?;
    if version.as_bytes() != b"13" {
        return None;
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY)?.as_bytes();
    // base64 of a 16-byte nonce: 22 base64 characters followed by "==".
    let valid_key = key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/');
    valid_key.then(|| derive_accept_key(key))
}

/// Phoenix channel serializer selected by the `vsn` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serializer {
    /// `vsn=1.x`: `{"topic","event","payload","ref","join_ref"}` objects.
    V1,
    /// `vsn=2.x` (default): `[join_ref, ref, topic, event, payload]` arrays.
    V2,
}

impl Serializer {
    fn from_query(query: Option<&str>) -> Serializer {
        let vsn = query
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("vsn="));
        match vsn {
            Some(vsn) if vsn == "1" || vsn.starts_with("1.") => Serializer::V1,
            _ => Serializer::V2,
        }
    }
}

/// One decoded Phoenix channel message.
#[derive(Debug, Clone, PartialEq)]
struct ChannelMessage {
    join_ref: Value,
    msg_ref: Value,
    topic: String,
    event: String,
    payload: Value,
}

/// Refs are opaque to the server: strings (what phoenix.js sends), numbers or null.
fn is_ref(value: &Value) -> bool {
    matches!(value, Value::Null | Value::String(_) | Value::Number(_))
}

impl ChannelMessage {
    fn decode(serializer: Serializer, text: &str) -> Option<ChannelMessage> {
        let value: Value = serde_json::from_str(text).ok()?;
        let (join_ref, msg_ref, topic, event, payload) = match (serializer, value) {
            (Serializer::V2, Value::Array(items)) => {
                let [join_ref, msg_ref, topic, event, payload]: [Value; 5] =
                    items.try_into().ok()?;
                (join_ref, msg_ref, topic, event, payload)
            }
            (Serializer::V1, Value::Object(mut map)) => (
                map.remove("join_ref").unwrap_or(Value::Null),
                map.remove("ref").unwrap_or(Value::Null),
                map.remove("topic")?,
                map.remove("event")?,
                map.remove("payload").unwrap_or_else(|| json!({})),
            ),
            _ => return None,
        };
        if !is_ref(&join_ref) || !is_ref(&msg_ref) {
            return None;
        }
        match (topic, event) {
            (Value::String(topic), Value::String(event)) => Some(ChannelMessage {
                join_ref,
                msg_ref,
                topic,
                event,
                payload,
            }),
            _ => None,
        }
    }
}

/// Per-socket channel state: joined topics and their join refs.
#[derive(Debug)]
struct Channels {
    serializer: Serializer,
    joined: HashMap<String, Value>,
}

impl Channels {
    fn new(serializer: Serializer) -> Channels {
        Channels {
            serializer,
            joined: HashMap::new(),
        }
    }

    /// Handles one text frame; returns the encoded reply, or `None` when the
    /// frame is not a valid channel message (it is then ignored).
    fn handle_text(&mut self, text: &str) -> Option<String> {
        let Some(msg) = ChannelMessage::decode(self.serializer, text) else {
            debug!("demo origin: ignoring malformed channel message");
            return None;
        };
        let ok_empty = || ("ok", json!({}));
        let unmatched = || ("error", json!({ "reason": "unmatched topic" }));

        let (join_ref, (status, response)) = match msg.event.as_str() {
            "heartbeat" if msg.topic == "phoenix" => (Value::Null, ok_empty()),
            "phx_join" => {
                if self.joined.len() >= MAX_TOPICS_PER_SOCKET
                    && !self.joined.contains_key(&msg.topic)
                {
                    (
                        msg.join_ref,
                        ("error", json!({ "reason": "too many channels" })),
                    )
                } else {
                    // A rejoin replaces the previous membership, as in Phoenix.
                    self.joined.insert(msg.topic.clone(), msg.join_ref.clone());
                    (msg.join_ref, ok_empty())
                }
            }
            "phx_leave" => match self.joined.remove(&msg.topic) {
                Some(join_ref) => (join_ref, ok_empty()),
                None => (msg.join_ref, unmatched()),
            },
            _ => match self.joined.get(&msg.topic) {
                Some(join_ref) => (join_ref.clone(), ("ok", msg.payload)),
                None => (msg.join_ref, unmatched()),
            },
        };
        Some(self.encode_reply(join_ref, msg.msg_ref, &msg.topic, status, response))
    }

    fn encode_reply(
        &self,
        join_ref: Value,
        msg_ref: Value,
        topic: &str,
        status: &str,
        response: Value,
    ) -> String {
        let payload = json!({ "status": status, "response": response });
        let reply = match self.serializer {
            Serializer::V2 => json!([join_ref, msg_ref, topic, "phx_reply", payload]),
            Serializer::V1 => json!({
                "topic": topic,
                "event": "phx_reply",
                "payload": payload,
                "ref": msg_ref,
                "join_ref": join_ref,
            }),
        };
        reply.to_string()
    }
}

/// What woke the socket loop.
enum SocketEvent {
    Frame(Option<Result<Message, WsError>>),
    Idle,
    Shutdown,
}

/// Runs the Phoenix channel protocol on an established WebSocket.
async fn run_socket<S>(
    mut ws: WebSocketStream<S>,
    serializer: Serializer,
    mut shutdown: watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut channels = Channels::new(serializer);
    loop {
        let event = tokio::select! {
            frame = tokio::time::timeout(WS_IDLE_TIMEOUT, ws.next()) => match frame {
                Ok(frame) => SocketEvent::Frame(frame),
                Err(_) => SocketEvent::Idle,
            },
            _ = shutdown.changed() => SocketEvent::Shutdown,
        };
        match event {
            SocketEvent::Frame(None) => return,
            SocketEvent::Frame(Some(Ok(Message::Text(text)))) => {
                if let Some(reply) = channels.handle_text(&text) {
                    if let Err(err) = ws.send(Message::Text(reply)).await {
                        debug!("demo origin: websocket send failed: {err}");
                        return;
                    }
                }
            }
            SocketEvent::Frame(Some(Ok(Message::Binary(_)))) => {
                debug!("demo origin: ignoring binary websocket frame");
            }
            // Pings are answered by tungstenite while we keep reading; after a
            // Close it queues the reply and the next read ends the stream.
            SocketEvent::Frame(Some(Ok(_))) => {}
            SocketEvent::Frame(Some(Err(WsError::Capacity(err)))) => {
                debug!("demo origin: websocket message too big: {err}");
                close_socket(&mut ws, CloseCode::Size, "message too big").await;
                return;
            }
            SocketEvent::Frame(Some(Err(err))) => {
                debug!("demo origin: websocket error: {err}");
                return;
            }
            SocketEvent::Idle => {
                debug!("demo origin: closing idle websocket");
                close_socket(&mut ws, CloseCode::Normal, "idle timeout").await;
                return;
            }
            SocketEvent::Shutdown => {
                close_socket(&mut ws, CloseCode::Away, "server shutting down").await;
                return;
            }
        }
    }
}

/// Sends a Close frame and gives the peer a bounded time to complete the
/// close handshake, so the frame is not lost to a TCP reset.
async fn close_socket<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if let Err(err) = ws.send(Message::Close(Some(frame))).await {
        debug!("demo origin: sending websocket close failed: {err}");
        return;
    }
    let deadline = Instant::now() + WS_CLOSE_GRACE;
    if !ws.is_terminated() {
        // Read (and discard) until the peer's Close ends the stream.
        let drain = async { while ws.next().await.is_some() {} };
        let _ = tokio::time::timeout_at(deadline, drain).await;
        return;
    }
    // The stream failed (e.g. an oversized frame is still arriving): half-close
    // and discard raw bytes until the peer closes, so unread data does not
    // turn our close into a reset.
    let io = ws.get_mut();
    if let Err(err) = io.shutdown().await {
        debug!("demo origin: websocket shutdown failed: {err}");
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::task::JoinHandle as TaskHandle;

    type ClientWs = WebSocketStream<TcpStream>;

    async fn start() -> (SocketAddr, TaskHandle<io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        (addr, tokio::spawn(serve(listener)))
    }

    struct RawResponse {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl RawResponse {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        }
    }

    fn parse_response(raw: &str) -> RawResponse {
        let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().expect("status code");
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header line");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        RawResponse {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// Sends one request with `Connection: close` and reads until EOF.
    async fn request(addr: SocketAddr, method: &str, path: &str, host: &str) -> RawResponse {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("response in time")
            .expect("read");
        parse_response(&String::from_utf8(raw).expect("utf-8 response"))
    }

    #[tokio::test]
    async fn home_page_has_phoenix_headers_and_purge_hint() {
        let (addr, server) = start().await;
        let resp = request(addr, "GET", "/", "demo.test:8080").await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            resp.header("cache-control"),
            Some("max-age=0, private, must-revalidate")
        );
        assert_eq!(resp.header("x-frame-options"), Some("SAMEORIGIN"));
        let cookie = resp.header("set-cookie").expect("set-cookie");
        assert!(cookie.starts_with("_demo_key="), "{cookie}");
        assert!(
            cookie.ends_with("; path=/; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        assert!(resp.body.contains("<title>bext demo</title>"));
        for link in ["/posts/1", "/posts/2", "/health"] {
            assert!(resp.body.contains(&format!("href=\"{link}\"")), "{link}");
        }
        assert!(resp.body.contains(
            r#"curl -X POST http://demo.test:8080/__bext/cache/purge -d '{"tag":"post:1"}'"#
        ));
        assert!(resp.body.contains("/live/websocket?vsn=2.0.0"));
        assert!(resp.body.contains("<pre id=\"log\">"));

        // HEAD: same headers, no body.
        let head = request(addr, "HEAD", "/", "demo.test:8080").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), resp.header("content-length"));
        assert!(head.header("set-cookie").is_some());

        // A hostile Host header never reaches the page unescaped.
        let evil = request(addr, "GET", "/", "<script>x</script>").await;
        assert_eq!(evil.status, 200);
        assert!(!evil.body.contains("<script>x"));
        assert!(evil.body.contains("http://localhost/__bext/cache/purge"));
        server.abort();
    }

    #[tokio::test]
    async fn posts_are_cacheable_and_tagged() {
        let (addr, server) = start().await;
        let first = request(addr, "GET", "/posts/7", "localhost").await;
        assert_eq!(first.status, 200);
        assert_eq!(first.header("cache-tag"), Some("post:7"));
        assert_eq!(first.header("cache-control"), Some("public, max-age=60"));
        assert_eq!(
            first.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(first.header("set-cookie").is_none());
        assert!(first.body.contains("<h1>Post 7</h1>"));
        assert!(first.body.contains("Generated at "));
        let second = request(addr, "GET", "/posts/7", "localhost").await;
        assert_ne!(first.body, second.body, "render counter must advance");

        let max = "/posts/12345678901234567890";
        assert_eq!(request(addr, "GET", max, "localhost").await.status, 200);
        for path in [
            "/posts/abc",
            "/posts/",
            "/posts/7/",
            "/posts/-1",
            "/posts/123456789012345678901",
            "/posts",
        ] {
            let resp = request(addr, "GET", path, "localhost").await;
            assert_eq!(resp.status, 404, "{path}");
            assert_eq!(resp.body, "not found\n");
        }
        server.abort();
    }

    #[tokio::test]
    async fn health_methods_and_fallbacks() {
        let (addr, server) = start().await;
        let health = request(addr, "GET", "/health", "localhost").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.body, "ok\n");
        assert!(health
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain")));

        let post = request(addr, "POST", "/health", "localhost").await;
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));
        let delete = request(addr, "DELETE", "/posts/1", "localhost").await;
        assert_eq!(delete.status, 405);

        let missing = request(addr, "GET", "/nope", "localhost").await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.body, "not found\n");
        let missing_post = request(addr, "POST", "/nope", "localhost").await;
        assert_eq!(missing_post.status, 404);
        let missing_head = request(addr, "HEAD", "/nope", "localhost").await;
        assert_eq!(missing_head.status, 404);
        assert!(missing_head.body.is_empty());
        assert_eq!(missing_head.header("content-length"), Some("10"));

        let plain = request(addr, "GET", "/live/websocket", "localhost").await;
        assert_eq!(plain.status, 400);
        assert_eq!(plain.body, "expected a websocket upgrade\n");
        server.abort();
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests() {
        let (addr, server) = start().await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
        for _ in 0..3 {
            stream.write_all(req.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            let mut buf = [0u8; 1024];
            while !raw.ends_with(b"\r\n\r\nok\n") {
                let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                    .await
                    .expect("response in time")
                    .expect("read");
                assert!(n > 0, "connection closed early");
                raw.extend_from_slice(&buf[..n]);
            }
            let resp = parse_response(&String::from_utf8(raw).expect("utf-8"));
            assert_eq!(resp.status, 200);
        }
        server.abort();
    }

    async fn ws_connect(addr: SocketAddr, vsn: &str) -> ClientWs {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let url = format!("ws://{addr}/live/websocket?vsn={vsn}");
        let (ws, resp) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("websocket handshake");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws
    }

    async fn ws_call(ws: &mut ClientWs, text: &str) -> Value {
        ws.send(Message::Text(text.to_owned())).await.expect("send");
        ws_next_json(ws).await
    }

    async fn ws_next_json(ws: &mut ClientWs) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("reply in time")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(text) = msg {
                return serde_json::from_str(&text).expect("json reply");
            }
        }
    }

    #[tokio::test]
    async fn websocket_speaks_phoenix_v2() {
        let (addr, server) = start().await;
        let mut ws = ws_connect(addr, "2.0.0").await;

        let join = ws_call(&mut ws, r#"["1","1","lv:demo","phx_join",{}]"#).await;
        assert_eq!(
            join,
            json!(["1", "1", "lv:demo", "phx_reply", {"status": "ok", "response": {}}])
        );
        let beat = ws_call(&mut ws, r#"[null,"2","phoenix","heartbeat",{}]"#).await;
        assert_eq!(
            beat,
            json!([null, "2", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
        );

        // Malformed frames are ignored and the socket stays usable.
        for junk in [
            "not json",
            r#"{"topic":"lv:demo"}"#,
            r#"["1","3","lv:demo"]"#,
        ] {
            ws.send(Message::Text(junk.to_owned())).await.expect("send");
        }
        ws.send(Message::Ping(b"hi".to_vec())).await.expect("ping");

        let echo = ws_call(&mut ws, r#"["1","4","lv:demo","event",{"n":1}]"#).await;
        assert_eq!(
            echo,
            json!(["1", "4", "lv:demo", "phx_reply", {"status": "ok", "response": {"n": 1}}])
        );
        let unmatched = ws_call(&mut ws, r#"["9","5","lv:other","event",{}]"#).await;
        assert_eq!(
            unmatched,
            json!(["9", "5", "lv:other", "phx_reply",
                   {"status": "error", "response": {"reason": "unmatched topic"}}])
        );
        let leave = ws_call(&mut ws, r#"["1","6","lv:demo","phx_leave",{}]"#).await;
        assert_eq!(
            leave,
            json!(["1", "6", "lv:demo", "phx_reply", {"status": "ok", "response": {}}])
        );
        let after_leave = ws_call(&mut ws, r#"["1","7","lv:demo","event",{}]"#).await;
        assert_eq!(after_leave[4]["status"], "error");

        ws.close(None).await.expect("close");
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        assert!(end.is_ok(), "server must finish the close handshake");
        server.abort();
    }

    #[tokio::test]
    async fn websocket_speaks_phoenix_v1() {
        let (addr, server) = start().await;
        let mut ws = ws_connect(addr, "1.0.0").await;
        let join = ws_call(
            &mut ws,
            r#"{"topic":"lv:demo","event":"phx_join","payload":{},"ref":"1"}"#,
        )
        .await;
        assert_eq!(
            join,
            json!({"topic": "lv:demo", "event": "phx_reply", "ref": "1", "join_ref": null,
                   "payload": {"status": "ok", "response": {}}})
        );
        let beat = ws_call(
            &mut ws,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"2"}"#,
        )
        .await;
        assert_eq!(beat["ref"], "2");
        assert_eq!(beat["topic"], "phoenix");
        assert_eq!(beat["payload"]["status"], "ok");
        // Arrays are not the v1 format: ignored.
        ws.send(Message::Text(
            r#"[null,"3","phoenix","heartbeat",{}]"#.to_owned(),
        ))
        .await
        .expect("send");
        let echo = ws_call(
            &mut ws,
            r#"{"topic":"lv:demo","event":"ping","payload":{"a":[1]},"ref":"4"}"#,
        )
        .await;
        assert_eq!(echo["ref"], "4");
        assert_eq!(
            echo["payload"],
            json!({"status": "ok", "response": {"a": [1]}})
        );
        server.abort();
    }

    #[tokio::test]
    async fn websocket_closes_oversized_messages_with_1009() {
        let (addr, server) = start().await;
        let mut ws = ws_connect(addr, "2.0.0").await;
        let big = "a".repeat(MAX_WS_MESSAGE + 1);
        ws.send(Message::Text(big)).await.expect("send");
        let close = loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("close in time")
                .expect("socket open")
                .expect("frame");
            if let Message::Close(frame) = msg {
                break frame;
            }
        };
        assert_eq!(close.map(|frame| frame.code), Some(CloseCode::Size));
        server.abort();
    }

    #[test]
    fn upgrade_validation() {
        let valid = || {
            Request::builder()
                .uri("/live/websocket")
                .header("connection", "keep-alive, Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        };
        let req = valid().body(()).expect("request");
        assert_eq!(
            websocket_accept(&req).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        let with = |name: &'static str, value: &'static str| {
            let mut req = valid().body(()).expect("request");
            req.headers_mut()
                .insert(name, HeaderValue::from_static(value));
            req
        };
        assert_eq!(websocket_accept(&with("sec-websocket-version", "8")), None);
        assert_eq!(websocket_accept(&with("sec-websocket-key", "short")), None);
        assert_eq!(websocket_accept(&with("upgrade", "h2c")), None);
        assert_eq!(websocket_accept(&with("connection", "keep-alive")), None);
        let post = valid().method("POST").body(()).expect("request");
        assert_eq!(websocket_accept(&post), None);

        assert_eq!(Serializer::from_query(None), Serializer::V2);
        assert_eq!(Serializer::from_query(Some("vsn=2.0.0")), Serializer::V2);
        assert_eq!(
            Serializer::from_query(Some("x=1&vsn=1.0.0")),
            Serializer::V1
        );
        assert_eq!(Serializer::from_query(Some("vsn=3.0.0")), Serializer::V2);
    }

    #[test]
    fn spawn_runs_on_its_own_thread_and_stops_on_drop() {
        use std::io::{Read, Write};

        let origin = DemoOrigin::spawn("127.0.0.1:0".parse().expect("addr")).expect("spawn");
        let addr = origin.addr;
        assert_ne!(addr.port(), 0);
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read");
        let resp = parse_response(&raw);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, "ok\n");

        drop(origin);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
