//! A real OTLP/HTTP trace receiver for the integration tests: a hyper 1
//! server on 127.0.0.1:0 that decodes `POST /v1/traces` bodies as
//! `ExportTraceServiceRequest` protobuf (the official `opentelemetry-proto`
//! messages + `prost`, not a hand-written parser) and keeps every span, so a
//! test can check what bext really put on the wire. It answers like a
//! collector: 200 with an empty `ExportTraceServiceResponse`, 415 for a body
//! that is not protobuf, 400 for one that does not decode.
//!
//! It runs on a tokio runtime on its own std thread, so synchronous tests can
//! use it; dropping it stops the server and closes its connections.
//! `black_hole()` is the failure twin: it accepts TCP connections and reads
//! forever without answering, like a wedged collector. `start_tls()` is the
//! same receiver behind real TLS (rustls, a certificate made with rcgen for
//! 127.0.0.1 whose PEM `ca_path()` gives), like a hosted collector.

// Not every test uses every accessor.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use pingora::tls::{PrivateKeyDer, ServerConfig, TlsAcceptor};
use prost::Message;
use tokio::io::AsyncReadExt;

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Lowercase hex.
    pub trace_id: String,
    pub span_id: String,
    /// "" if none.
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    /// Ints rendered as decimal, bools as true/false.
    pub attributes: HashMap<String, String>,
    pub events: Vec<String>,
    pub status_code: i32,
    /// The resource's `service.name`.
    pub service_name: String,
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: AtomicUsize,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    last_headers: Mutex<Option<http::HeaderMap>>,
}

#[derive(Clone)]
enum Mode {
    Answer,
    BlackHole,
    Tls(TlsAcceptor),
}

pub struct OtlpReceiver {
    addr: SocketAddr,
    /// Holds the CA file of a TLS receiver.
    ca: Option<(tempfile::TempDir, std::path::PathBuf)>,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// A receiver answering normally.
    pub fn start() -> OtlpReceiver {
        Self::spawn(Mode::Answer)
    }

    /// Accepts TCP connections, reads, never answers.
    pub fn black_hole() -> OtlpReceiver {
        Self::spawn(Mode::BlackHole)
    }

    /// A receiver answering over TLS only, with a fresh self-signed
    /// certificate for 127.0.0.1 (see `ca_path`).
    pub fn start_tls() -> OtlpReceiver {
        pingora::tls::install_default_crypto_provider();
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("rcgen certificate");
        let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .expect("receiver TLS config");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("collector-ca.pem");
        std::fs::write(&ca, ck.cert.pem()).expect("write CA file");
        let mut r = Self::spawn(Mode::Tls(TlsAcceptor::from(Arc::new(server))));
        r.ca = Some((dir, ca));
        r
    }

    /// "http://127.0.0.1:PORT" ("https://…" for a TLS receiver)
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// PEM of the TLS receiver's certificate (its own CA).
    pub fn ca_path(&self) -> &std::path::Path {
        &self.ca.as_ref().expect("a TLS receiver").1
    }

    /// TLS handshakes that completed (0 for a plain receiver).
    pub fn tls_handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Polls until `n` spans arrived; returns what it has at the deadline.
    pub fn wait_for_spans(&self, n: usize, within: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Export POSTs received on /v1/traces (0 for a black hole, which never
    /// parses what it reads).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted (shows whether the exporter keeps them alive).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Headers of the latest export POST (e.g. to check configured headers).
    pub fn last_headers(&self) -> Option<http::HeaderMap> {
        self.state.last_headers.lock().unwrap().clone()
    }

    fn spawn(mode: Mode) -> OtlpReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind OTLP receiver");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(State::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let state = state.clone();
            std::thread::Builder::new()
                .name("otlp-receiver".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("receiver runtime");
                    rt.block_on(serve(listener, mode, state, stopped));
                    // Dropping the runtime here ends every connection task.
                })
                .expect("spawn receiver thread")
        };
        OtlpReceiver {
            addr,
            ca: None,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    mode: Mode,
    state: Arc<State>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        match &mode {
            Mode::Answer => {
                tokio::spawn(serve_http(stream, state.clone()));
            }
            Mode::Tls(acceptor) => {
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate aborts
                    // the handshake: that connection never carries a POST.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        state.handshakes.fetch_add(1, Ordering::SeqCst);
                        serve_http(tls, state).await;
                    }
                });
            }
            Mode::BlackHole => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        }
    }
}

async fn serve_http<S>(io: S, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return Ok(reply(StatusCode::NOT_FOUND, Bytes::new()));
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state.last_headers.lock().unwrap() = Some(req.headers().clone());
    let protobuf = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    if !protobuf {
        return Ok(reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, Bytes::new()));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new())),
    };
    let export = match ExportTraceServiceRequest::decode(body) {
        Ok(e) => e,
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new())),
    };
    let mut received = Vec::new();
    for rs in export.resource_spans {
        let service_name = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| render(a.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                received.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attributes: attributes(&s.attributes),
                    events: s.events.into_iter().map(|e| e.name).collect(),
                    status_code: s.status.map_or(0, |st| st.code),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    state.spans.lock().unwrap().extend(received);
    let mut resp = reply(
        StatusCode::OK,
        Bytes::from(ExportTraceServiceResponse::default().encode_to_vec()),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(resp)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
