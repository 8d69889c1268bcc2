//! Stub Phoenix nodes for the upstream tests: tag every response with
//! `x-node: ID`, can be killed (listener and every connection dropped) and
//! revived on the same port, report health on `/health` as told, echo
//! websockets on `/ws`, hold requests on `/hold` until released, and on
//! `/die` read the whole request body then drop the connection unanswered.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

#[derive(Default)]
struct State {
    id: String,
    healthy: AtomicBool,
    hits: AtomicUsize,
    ws_open: AtomicUsize,
    held: AtomicUsize,
    release: Notify,
    /// (method, path) of every non-health request.
    log: Mutex<Vec<(String, String)>>,
}

pub struct TestNode {
    pub addr: SocketAddr,
    state: Arc<State>,
    kill: Mutex<watch::Sender<bool>>,
}

impl TestNode {
    pub async fn start(id: &str) -> TestNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            id: id.into(),
            healthy: AtomicBool::new(true),
            ..Default::default()
        });
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, state.clone(), rx));
        TestNode {
            addr,
            state,
            kill: Mutex::new(tx),
        }
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Closes the listener and every open connection (including websockets).
    pub fn kill(&self) {
        let _ = self.kill.lock().unwrap().send(true);
    }

    /// [`kill`], then waits until the port refuses connections.
    pub async fn kill_and_wait(&self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "{} still accepts after kill",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Listens again on the same port after [`kill`].
    pub async fn revive(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        let (tx, rx) = watch::channel(false);
        *self.kill.lock().unwrap() = tx;
        tokio::spawn(serve(listener, self.state.clone(), rx));
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests served (health checks excluded).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }

    pub fn ws_open(&self) -> usize {
        self.state.ws_open.load(Ordering::SeqCst)
    }

    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Lets every `/hold` request answer.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }
}

async fn serve(listener: TcpListener, st: Arc<State>, mut kill: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            _ = kill.changed() => return,
        };
        let st = st.clone();
        let mut kill = kill.clone();
        tokio::spawn(async move {
            let die = Arc::new(Notify::new());
            let die2 = die.clone();
            let kill2 = kill.clone();
            let svc = service_fn(move |req| {
                let (st, die, kill) = (st.clone(), die2.clone(), kill2.clone());
                async move { Ok::<_, Infallible>(handle(st, req, die, kill).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = die.notified() => {}
                _ = kill.changed() => {}
            }
        });
    }
}

fn page(status: u16, id: &str, content_type: &str, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-node", id)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn text(status: u16, id: &str, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-node", id)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    st: Arc<State>,
    mut req: Request<Incoming>,
    die: Arc<Notify>,
    kill: watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let ok = st.healthy.load(Ordering::SeqCst);
        return text(
            if ok { 200 } else { 503 },
            &st.id,
            if ok { "ok" } else { "down" },
        );
    }
    st.hits.fetch_add(1, Ordering::SeqCst);
    st.log
        .lock()
        .unwrap()
        .push((req.method().to_string(), path.clone()));
    let last = path.rsplit('/').next().unwrap_or("").to_string();
    match last.as_str() {
        "ws" => websocket(&st, &mut req, kill),
        "hold" => {
            st.held.fetch_add(1, Ordering::SeqCst);
            st.release.notified().await;
            st.held.fetch_sub(1, Ordering::SeqCst);
            text(200, &st.id, &st.id)
        }
        "die" => {
            let _ = req.into_body().collect().await;
            die.notify_one();
            std::future::pending().await
        }
        "fail503" => page(503, &st.id, "text/html", "unavailable"),
        // Phoenix's long-poll transport answers JSON.
        "longpoll" => page(200, &st.id, "application/json", "{\"status\":200}"),
        _ => {
            let _ = req.into_body().collect().await;
            // Like a Phoenix app: assets by extension, pages otherwise.
            let ct = match last.rsplit_once('.').map(|(_, ext)| ext) {
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                Some("png") => "image/png",
                Some("json") => "application/json",
                _ => "text/html; charset=utf-8",
            };
            page(200, &st.id, ct, &st.id)
        }
    }
}

fn websocket(
    st: &Arc<State>,
    req: &mut Request<Incoming>,
    mut kill: watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(400, &st.id, "not a websocket upgrade");
    };
    let on_upgrade = hyper::upgrade::on(req);
    let st2 = st.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        st2.ws_open.fetch_add(1, Ordering::SeqCst);
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(m)) if m.is_text() || m.is_binary() => {
                        if ws.send(m).await.is_err() { break }
                    }
                    Some(Ok(m)) if m.is_close() => break,
                    Some(Ok(_)) => {}
                    _ => break,
                },
                _ = kill.changed() => break,
            }
        }
        st2.ws_open.fetch_sub(1, Ordering::SeqCst);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("x-node", st.id.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

// ---------------------------------------------------------------------------
// Config and client helpers
// ---------------------------------------------------------------------------

pub const SECRET: &str = "test-sticky-secret-0123456789";

/// A bext config with one upstream `app` over `nodes` (ids = node ids),
/// `upstream_extra` appended to `[upstreams.app]`, a websocket route `/live/*`
/// and a catch-all.
pub fn config(listen: u16, nodes: &[&TestNode], upstream_extra: &str) -> String {
    let list: Vec<String> = nodes
        .iter()
        .map(|n| format!("{{ addr = \"{}\", id = \"{}\" }}", n.addr, n.id()))
        .collect();
    format!(
        r#"[server]
listen = ["127.0.0.1:{listen}"]
threads = 2

[upstreams.app]
nodes = [{}]
connect_timeout = "1s"
read_timeout = "10s"
{upstream_extra}

[[route_rules]]
pattern = "/live/*"
proxy = "app"
websocket = true

[[route_rules]]
pattern = "/*"
proxy = "app"
"#,
        list.join(", ")
    )
}

/// Fast health checks on `/health`.
pub const FAST_HEALTH: &str = r#"health = { path = "/health", interval = "200ms", timeout = "1s", healthy_after = 2, unhealthy_after = 2 }"#;

pub fn sticky_conf() -> String {
    format!("sticky = {{ cookie = \"_bext_node\", secret = \"{SECRET}\" }}\nclose_spread = \"500ms\"\n{FAST_HEALTH}")
}

/// GETs `path` with an optional Cookie; returns (status, x-node, set-cookie pair `name=value`).
pub async fn get(
    c: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut rb = c.get(url);
    if let Some(cookie) = cookie {
        rb = rb.header("cookie", cookie);
    }
    let r = rb.send().await.expect("request");
    let node = r
        .headers()
        .get("x-node")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let set = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
    (r.status().as_u16(), node, set)
}

/// The node states from `GET /__bext/upstreams`: (id, state).
pub async fn states(c: &reqwest::Client, base: &str) -> Vec<(String, String)> {
    let body = c
        .get(format!("{base}/__bext/upstreams"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["upstreams"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls the admin API until node `id` is in `state` (generous deadline).
pub async fn wait_state(c: &reqwest::Client, base: &str, id: &str, state: &str) -> Duration {
    let start = Instant::now();
    loop {
        if states(c, base)
            .await
            .iter()
            .any(|(i, s)| i == id && s == state)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "node {id} never became {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
