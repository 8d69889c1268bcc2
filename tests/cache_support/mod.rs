//! A cache-aware stub origin for `tests/cache.rs`: every response is shaped by
//! the query string, and the origin counts what it serves per path so tests can
//! tell a hit from a fetch. It can be killed (listener and open connections).
//!
//! Query parameters: `cc=` Cache-Control, `tag=` Cache-Tag, `ms=` delay before
//! the headers, `cookie=1` Set-Cookie, `size=N` an N-byte body (`chunked=1`:
//! without Content-Length), `etag=1` ETag "v1" + Last-Modified, `vary=` Vary,
//! `tags=N` N generated tags. The default body names the path, the fetch
//! number for that path, the Host and the Accept-Encoding.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    /// path → fetches
    counts: HashMap<String, usize>,
    /// (path, headers) of every request, in arrival order
    seen: Vec<(String, Vec<(String, String)>)>,
}

#[derive(Clone)]
pub struct CacheOrigin {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    kill: watch::Sender<bool>,
}

fn param<'a>(q: &'a str, k: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| {
        let (a, b) = kv.split_once('=').unwrap_or((kv, ""));
        (a == k).then_some(b)
    })
}

impl CacheOrigin {
    pub async fn start() -> CacheOrigin {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> CacheOrigin {
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (kill, _) = watch::channel(false);
        let origin = CacheOrigin { addr, state, kill };
        let o = origin.clone();
        let mut killed = origin.kill.subscribe();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    _ = killed.changed() => return,
                };
                let o = o.clone();
                let mut killed = o.kill.subscribe();
                tokio::spawn(async move {
                    let o2 = o.clone();
                    let svc = service_fn(move |req| {
                        let o = o2.clone();
                        async move { Ok::<_, Infallible>(o.handle(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        origin
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and drops every open connection (the origin "dies").
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }

    /// Fetches served for `path` (path only, no query).
    pub fn count(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .counts
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.state.lock().unwrap().counts.values().sum()
    }

    /// Headers of every request for `path`.
    pub fn seen(&self, path: &str) -> Vec<Vec<(String, String)>> {
        let st = self.state.lock().unwrap();
        st.seen
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// Polls until `path` has been requested `n` times (10 s safety net).
    pub async fn wait_count(&self, path: &str, n: usize) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.count(path) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let q = req.uri().query().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let n = {
            let mut st = self.state.lock().unwrap();
            st.seen.push((path.clone(), headers));
            let c = st.counts.entry(path.clone()).or_default();
            *c += 1;
            *c
        };
        if let Some(ms) = param(&q, "ms").and_then(|v| v.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let h = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        if param(&q, "etag").is_some() && h("if-none-match") == "\"v1\"" {
            return Response::builder()
                .status(304)
                .header("etag", "\"v1\"")
                .body(full(""))
                .unwrap();
        }
        let mut b = Response::builder().header("content-type", "text/plain");
        if let Some(cc) = param(&q, "cc") {
            b = b.header("cache-control", cc.replace("%20", " "));
        }
        if let Some(tag) = param(&q, "tag") {
            b = b.header("cache-tag", tag.replace("%20", " "));
        }
        if let Some(k) = param(&q, "tags").and_then(|v| v.parse::<usize>().ok()) {
            let many: Vec<String> = (0..k).map(|i| format!("t{i}")).collect();
            b = b.header("cache-tag", many.join(","));
        }
        if param(&q, "cookie").is_some() {
            b = b.header("set-cookie", "_app_key=secret; path=/; HttpOnly");
        }
        if let Some(v) = param(&q, "vary") {
            b = b.header("vary", v);
        }
        if param(&q, "etag").is_some() {
            b = b
                .header("etag", "\"v1\"")
                .header("last-modified", "Fri, 02 Jan 2026 00:00:00 GMT");
        }
        if let Some(size) = param(&q, "size").and_then(|v| v.parse::<usize>().ok()) {
            let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
            let chunks = size.div_ceil(chunk.len());
            let stream = futures_util::stream::iter((0..chunks).map(move |i| {
                let len = chunk.len().min(size - i * chunk.len());
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            }));
            if param(&q, "chunked").is_none() {
                b = b.header("content-length", size);
            }
            return b
                .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
                .unwrap();
        }
        let body = format!(
            "path={path} n={n} host={} ae={}\n",
            h("host"),
            h("accept-encoding")
        );
        b.body(full(body)).unwrap()
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed_unsync()
}

/// A bext config with one cacheable `/*` route (plus a `cache = false` route
/// under `/nocache/*`) in front of `origin`, and extra TOML appended.
pub fn config(listen: SocketAddr, origin: SocketAddr, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["{listen}"]
threads = 2
grace_period = "1s"
shutdown_timeout = "1s"

[upstreams.app]
nodes = ["{origin}"]
connect_timeout = "1s"

[[route_rules]]
pattern = "/nocache/*"
proxy = "app"
cache = false

[[route_rules]]
pattern = "/*"
proxy = "app"

{extra}
"#
    )
}
