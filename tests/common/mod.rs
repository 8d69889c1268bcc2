//! Shared helpers for the integration tests: a handle on a real `bext`
//! process, a stub origin (a real HTTP/1.1 + websocket server built on
//! hyper 1) and a tiny raw HTTP/1.1 client for byte-exact requests.
//!
//! Every test crate uses a different subset of these helpers.
#![allow(dead_code, clippy::collapsible_match)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Path of the binary under test.
pub const BEXT: &str = env!("CARGO_BIN_EXE_bext");

/// A loopback port that was free a moment ago (bound to port 0, then released).
///
/// A port is never handed out twice by one test process: tests run in
/// parallel, and the kernel may give a just-released port to the next
/// `bind(0)` before the first test's bext has bound it, so two bexts would
/// race for one port and a TLS client could reach the other test's plain
/// listener.
pub fn free_port() -> u16 {
    static ISSUED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let l = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        let mut issued = ISSUED.lock().unwrap();
        if !issued.contains(&port) {
            issued.push(port);
            return port;
        }
    }
}

/// A loopback port that refuses connections for as long as the guard lives:
/// a socket is bound to it but never listens, so connecting gets a reset, no
/// other socket can take the port, and the kernel never picks it as the
/// source port of an outgoing connection (no TCP self-connect).
pub struct ClosedPort {
    fd: libc::c_int,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        // SAFETY: plain socket/bind/getsockname calls on a fresh fd with
        // properly sized, zero-initialised sockaddr_in structs.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            addr.sin_port = 0;
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let mut out: libc::sockaddr_in = std::mem::zeroed();
            let mut out_len = len;
            let rc = libc::getsockname(fd, &mut out as *mut _ as *mut libc::sockaddr, &mut out_len);
            assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                fd,
                port: u16::from_be(out.sin_port),
            }
        }
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: closing the fd this guard owns.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// A reqwest client that never uses an environment proxy. The 60 s timeout is
/// only a safety net so a hung proxy fails the test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// Path of a file shipped in the repository (relative to the manifest dir).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---------------------------------------------------------------------------
// The bext process
// ---------------------------------------------------------------------------

/// A running `bext serve -c FILE` process. Killed on drop.
pub struct Bext {
    child: Child,
    dir: TempDir,
    config_path: PathBuf,
    listen: Vec<SocketAddr>,
}

/// Extracts the addresses of `listen = [...]` from the caller's TOML text.
fn listen_addrs(toml: &str) -> Vec<SocketAddr> {
    let start = toml
        .find("listen")
        .expect("config has no `listen` key; Bext::start needs one");
    let rest = &toml[start..];
    let open = rest.find('[').expect("listen = [ ... ]");
    let close = rest.find(']').expect("listen = [ ... ]");
    rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("listen address in test config"))
        .collect()
}

impl Bext {
    /// Writes `toml` to `bext.toml` in a fresh temp dir and starts
    /// `bext serve -c bext.toml`. Waits (up to 60 s) until every listen
    /// address accepts a TCP connection.
    pub async fn start(toml: &str) -> Bext {
        Self::start_inner(toml, None).await
    }

    /// Like [`Bext::start`], but the child starts with its RLIMIT_NOFILE soft
    /// limit lowered to `soft` (the hard limit is untouched), so the test can
    /// check that bext raises its own limit.
    pub async fn start_with_soft_nofile(toml: &str, soft: u64) -> Bext {
        Self::start_inner(toml, Some(soft)).await
    }

    async fn start_inner(toml: &str, soft_nofile: Option<u64>) -> Bext {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("bext.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let listen = listen_addrs(toml);
        assert!(!listen.is_empty(), "test config must listen somewhere");

        let stdout = File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new(BEXT);
        cmd.arg("serve")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("RUST_LOG", "info");
        if let Some(soft) = soft_nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: getrlimit/setrlimit are async-signal-safe; no allocation.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lim.rlim_cur = soft.min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn bext");
        let mut bext = Bext {
            child,
            dir,
            config_path,
            listen,
        };
        bext.wait_ready().await;
        bext
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pending = self.listen.clone();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "bext exited during startup with {status}\n--- config ---\n{}\n--- stderr ---\n{}",
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.stderr()
                );
            }
            let mut still = Vec::new();
            for addr in pending {
                if TcpStream::connect(addr).await.is_err() {
                    still.push(addr);
                }
            }
            pending = still;
            if pending.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "bext did not listen on {pending:?} within 60 s\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first listen address.
    pub fn addr(&self) -> SocketAddr {
        self.listen[0]
    }

    /// `http://ADDR` for the first listen address.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// The config file the process was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    fn proc_status_kb(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing from /proc status"))
    }

    /// Current resident set size in kB.
    pub fn rss_kb(&self) -> u64 {
        self.proc_status_kb("VmRSS:")
    }

    /// Peak resident set size ("high water mark") in kB.
    pub fn hwm_kb(&self) -> u64 {
        self.proc_status_kb("VmHWM:")
    }

    /// The soft RLIMIT_NOFILE of the running process, from /proc/PID/limits.
    pub fn nofile_soft_limit(&self) -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid()))
            .expect("read /proc/PID/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files line");
        line["Max open files".len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Polls until the process exits or `deadline` elapses.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Bext {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the bext binary with `args` to completion.
pub fn run_bext(args: &[&str]) -> std::process::Output {
    Command::new(BEXT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run bext")
}

// ---------------------------------------------------------------------------
// Stub origin
// ---------------------------------------------------------------------------

/// One request as the origin saw it (recorded when its headers arrive).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// (lowercase name, value) in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// All values of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The single value of header `name`; panics if it appears more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "header {name} arrived {} times: {all:?}",
            all.len()
        );
        all.into_iter().next()
    }

    pub fn has_header(&self, name: &str) -> bool {
        !self.header_all(name).is_empty()
    }
}

#[derive(Default)]
struct StubState {
    id: String,
    connections: AtomicUsize,
    ws_open: AtomicUsize,
    ws_max: AtomicUsize,
    ws_sessions: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

/// A real HTTP/1.1 origin on 127.0.0.1:0. Endpoints are chosen by the LAST
/// path segment so that any route prefix works:
///
/// * `.../slow?ms=N`   — waits N ms before the response headers, then "slow done"
/// * `.../bytes?n=N`   — streams N bytes (byte i = i % 251) in 64 KiB chunks
/// * `.../upload`      — streams the request body, replies with the byte count
/// * `.../hop`         — replies with hop-by-hop response headers
///   (`Connection: X-Origin-Hop`, `X-Origin-Hop: 1`, `Keep-Alive: timeout=5`)
///   plus `X-Origin-Normal: yes`
/// * `.../text?n=N`    — N bytes of HTML-like text (the same for every N
///   prefix), `text/html; charset=utf-8` unless `ct=`; with `stream=1` it is
///   sent in 16 KiB chunks without a length (chunked)
/// * `.../ws`, `.../websocket` — websocket echo for upgrade requests, 400 otherwise
/// * anything else     — echo: JSON `{"method","path","query","headers","body_len","node"}`;
///   `?status=N` sets the status.
///
/// On every endpoint, each `set=Name:Value` (percent-decoded) adds a response header.
///
/// Every response carries `x-node: <id>`.
#[derive(Clone)]
pub struct StubOrigin {
    addr: SocketAddr,
    state: Arc<StubState>,
}

type StubBody = UnsyncBoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> StubBody {
    Full::new(body.into()).boxed_unsync()
}

/// A percent-encoded query value, decoded (`+` is a space).
fn decode_param(v: &str) -> String {
    percent_encoding::percent_decode_str(&v.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `n` bytes of text shaped like a rendered Phoenix page: repetitive markup
/// with varying numbers, so it compresses like real HTML (not like zeros).
pub fn text_body(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 128);
    let mut i = 0u64;
    while out.len() < n {
        let row = format!(
            "<tr id=\"post-{i}\" phx-click=\"open\"><td class=\"px-4 py-2\">Post {i}</td><td>{}</td></tr>\n",
            i.wrapping_mul(2654435761) % 100000
        );
        out.extend_from_slice(row.as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let mut it = kv.splitn(2, '=');
        (it.next() == Some(key)).then(|| it.next().unwrap_or(""))
    })
}

/// Byte `i` of the generated payloads used by `/bytes` and the upload tests.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// A chunk of the generated payload starting at `offset`.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    // The pattern has period 251: copy from a precomputed window (fast even
    // in a debug build) instead of computing byte by byte.
    static WINDOW: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    const MAX: usize = 1 << 20;
    if len > MAX {
        let mut v = Vec::with_capacity(len);
        let mut off = offset;
        while v.len() < len {
            let n = MAX.min(len - v.len());
            v.extend_from_slice(&pattern_chunk(off, n));
            off += n as u64;
        }
        return v.into();
    }
    let window = WINDOW.get_or_init(|| (0..(MAX + 251) as u64).map(pattern_byte).collect());
    let start = (offset % 251) as usize;
    Bytes::copy_from_slice(&window[start..start + len])
}

impl StubOrigin {
    pub async fn start(id: &str) -> StubOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(StubState {
            id: id.to_string(),
            ..Default::default()
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => {
                        // e.g. EMFILE: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        StubOrigin { addr, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// All requests seen so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests whose path is exactly `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Websocket sessions currently open at the origin.
    pub fn ws_open(&self) -> usize {
        self.state.ws_open.load(Ordering::SeqCst)
    }

    /// Highest number of simultaneously open websocket sessions.
    pub fn ws_max(&self) -> usize {
        self.state.ws_max.load(Ordering::SeqCst)
    }

    /// Websocket sessions established in total.
    pub fn ws_sessions(&self) -> usize {
        self.state.ws_sessions.load(Ordering::SeqCst)
    }

    /// Polls (up to `deadline`) until `pred` holds on the recorded requests.
    pub async fn wait_for(&self, deadline: Duration, pred: impl Fn(&[Recorded]) -> bool) -> bool {
        let end = Instant::now() + deadline;
        loop {
            if pred(&self.requests()) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(st: Arc<StubState>, mut req: Request<Incoming>) -> Response<StubBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    st.requests.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: headers.clone(),
    });

    let last = path.rsplit('/').next().unwrap_or("").to_string();
    let mut resp = match last.as_str() {
        "slow" => {
            let ms: u64 = query_param(&query, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow done"))
        }
        "bytes" => {
            let n: u64 = query_param(&query, "n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            const CHUNK: u64 = 64 * 1024;
            let stream = futures_util::stream::unfold(0u64, move |off| async move {
                if off >= n {
                    return None;
                }
                let len = CHUNK.min(n - off);
                let chunk = pattern_chunk(off, len as usize);
                Some((Ok::<_, Infallible>(Frame::data(chunk)), off + len))
            });
            let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            r
        }
        "upload" => {
            let mut body = req.into_body();
            let mut count: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            count += d.len() as u64;
                        }
                    }
                    Err(_) => {
                        return Response::builder()
                            .status(StatusCode::BAD_REQUEST)
                            .body(full("body error"))
                            .unwrap();
                    }
                }
            }
            Response::new(full(count.to_string()))
        }
        "hop" => Response::builder()
            .header("Connection", "X-Origin-Hop")
            .header("X-Origin-Hop", "1")
            .header("Keep-Alive", "timeout=5")
            .header("X-Origin-Normal", "yes")
            .body(full("hop"))
            .unwrap(),
        "text" => {
            let n: usize = query_param(&query, "n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let ct = query_param(&query, "ct")
                .map(decode_param)
                .unwrap_or_else(|| "text/html; charset=utf-8".to_string());
            let mut r = if query_param(&query, "stream") == Some("1") {
                const CHUNK: usize = 16 * 1024;
                let all = Bytes::from(text_body(n));
                let stream = futures_util::stream::unfold(0usize, move |off| {
                    let all = all.clone();
                    async move {
                        if off >= n {
                            return None;
                        }
                        let len = CHUNK.min(n - off);
                        let chunk = all.slice(off..off + len);
                        Some((Ok::<_, Infallible>(Frame::data(chunk)), off + len))
                    }
                });
                Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)))
            } else {
                Response::new(full(text_body(n)))
            };
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_str(&ct).unwrap(),
            );
            r
        }
        "ws" | "websocket" => websocket(&st, &mut req),
        _ => {
            let method = req.method().to_string();
            let status = query_param(&query, "status")
                .and_then(|v| v.parse::<u16>().ok())
                .unwrap_or(200);
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let json = serde_json::json!({
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "body_len": body.len(),
                "node": st.id,
            });
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(full(json.to_string()))
                .unwrap()
        }
    };
    for set in query.split('&').filter_map(|kv| kv.strip_prefix("set=")) {
        let set = decode_param(set);
        if let Some((n, v)) = set.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                resp.headers_mut().append(n, v);
            }
        }
    }
    resp.headers_mut().insert(
        "x-node",
        HeaderValue::from_str(&st.id).expect("node id is a valid header value"),
    );
    resp
}

fn websocket(st: &Arc<StubState>, req: &mut Request<Incoming>) -> Response<StubBody> {
    let is_upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get("sec-websocket-key").cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full("not a websocket upgrade"))
            .unwrap();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let st = st.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        st.ws_sessions.fetch_add(1, Ordering::SeqCst);
        let now = st.ws_open.fetch_add(1, Ordering::SeqCst) + 1;
        st.ws_max.fetch_max(now, Ordering::SeqCst);
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(_) | Message::Binary(_) => msg,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
        st.ws_open.fetch_sub(1, Ordering::SeqCst);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------

/// A response read byte-for-byte off the socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status_line: String,
    pub status: u16,
    /// (lowercase name, value) in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    pub fn headers_map(&self) -> HashMap<String, Vec<String>> {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (n, v) in &self.headers {
            m.entry(n.clone()).or_default().push(v.clone());
        }
        m
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` verbatim to a new connection to `addr` and reads one
/// response (Content-Length, chunked, or until EOF). 30 s safety net.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    raw_request_keep(addr, request).await.0
}

/// Like [`raw_request`], but also hands back the connection for reuse.
pub async fn raw_request_keep(addr: SocketAddr, request: &[u8]) -> (RawResponse, TcpStream) {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write request");
        let r = read_response(&mut s).await;
        (r, s)
    })
    .await
    .expect("raw request did not complete within the 30 s safety net")
}

/// Waits (up to `deadline`) for the peer to close `s`; true if it did.
/// Any bytes the peer sends meanwhile are discarded.
pub async fn wait_closed(s: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(deadline, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Reads one response from `s` (Content-Length, chunked, or until EOF).
pub async fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut tmp).await.expect("read response head");
        if n == 0 {
            panic!(
                "connection closed before a full response head; got {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };

    let no_body = status / 100 == 1 || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        read_chunked(s, &mut rest).await
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len {
            let n = s.read(&mut tmp).await.expect("read body");
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        loop {
            let n = s.read(&mut tmp).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        rest
    };
    RawResponse {
        status_line,
        status,
        headers,
        body,
    }
}

async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let mut pos = 0usize;
    async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, tmp: &mut [u8]) -> bool {
        let n = s.read(tmp).await.unwrap_or(0);
        buf.extend_from_slice(&tmp[..n]);
        n > 0
    }
    loop {
        // chunk-size line
        let line_end = loop {
            if let Some(p) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                break pos + p;
            }
            if !fill(s, buf, &mut tmp).await {
                return out;
            }
        };
        let size_str = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_str:?}"));
        pos = line_end + 2;
        if size == 0 {
            // trailers until an empty line; not needed by the tests
            return out;
        }
        while buf.len() < pos + size + 2 {
            if !fill(s, buf, &mut tmp).await {
                out.extend_from_slice(&buf[pos..]);
                return out;
            }
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit and
/// returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = if lim.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            lim.rlim_max
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// Parses the stub's `/echo`-style JSON body.
pub fn echo_json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "origin echo body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    })
}
