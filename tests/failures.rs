//! Failure handling: unreachable upstream (503 maintenance page), custom error page, slow upstream
//! (504) and the per-route timeout override, malformed requests (400), the
//! process surviving all of these, and SIGTERM draining in-flight requests.

mod common;

use std::time::Duration;

use common::{
    client, free_port, raw_request, raw_request_keep, read_response, wait_closed, Bext, ClosedPort,
    StubOrigin,
};
use tokio::io::AsyncWriteExt;

/// `dead` points at a port that refuses connections; `live` at the stub with
/// a 1 s read timeout.
fn config(port: u16, origin: &StubOrigin, closed: &ClosedPort, extra_server: &str) -> String {
    let closed = closed.port;
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
grace_period = "3s"
shutdown_timeout = "2s"
{extra_server}

[upstreams.dead]
nodes = ["127.0.0.1:{closed}"]
connect_timeout = "2s"

[upstreams.live]
nodes = ["{origin}"]
read_timeout = "1s"

[[route_rules]]
pattern = "/dead/*"
proxy = "dead"
cache = false

[[route_rules]]
pattern = "/patient/*"
proxy = "live"
cache = false
timeout = "10s"

[[route_rules]]
pattern = "/*"
proxy = "live"
cache = false
"#,
        origin = origin.addr()
    )
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn is_request_id(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_503_maintenance_page_with_request_id() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;

    let r = client().get(bext.url("/dead/page")).send().await.unwrap();
    // No node could be reached: the maintenance answer, retryable.
    assert_eq!(r.status(), 503, "stderr:\n{}", bext.stderr());
    assert!(r.headers().get("retry-after").is_some());
    assert!(
        content_type(&r).starts_with("text/html"),
        "content-type {:?}",
        content_type(&r)
    );
    let rid = r
        .headers()
        .get("x-request-id")
        .expect("503 carries X-Request-Id")
        .to_str()
        .unwrap()
        .to_string();
    assert!(is_request_id(&rid), "bad request id {rid:?}");
    let body = r.text().await.unwrap();
    assert!(
        body.to_ascii_lowercase().contains("<html") || body.contains("<!"),
        "503 body is not an HTML page: {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gives_504() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;

    // The origin waits 4 s before its response headers; read_timeout is 1 s.
    let r = client()
        .get(bext.url("/slow?ms=4000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504, "stderr:\n{}", bext.stderr());
    assert!(content_type(&r).starts_with("text/html"));
    assert!(r.headers().get("x-request-id").is_some());
    assert_eq!(
        origin.requests_to("/slow").len(),
        1,
        "origin got the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_overrides_upstream_read_timeout() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;

    // 2 s wait > upstream read_timeout (1 s) but < the route's timeout (10 s).
    let r = client()
        .get(bext.url("/patient/slow?ms=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "stderr:\n{}", bext.stderr());
    assert_eq!(r.text().await.unwrap(), "slow done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_page_file_is_served_for_gateway_errors() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let pages = tempfile::tempdir().unwrap();
    let page_path = pages.path().join("maintenance.html");
    let page = "<!DOCTYPE html><html><body><h1>Back soon</h1>\
                <p>marker-7f3a9c-maintenance</p></body></html>\n";
    std::fs::write(&page_path, page).unwrap();
    let extra = format!("error_page = \"{}\"", page_path.display());
    let bext = Bext::start(&config(free_port(), &origin, &closed, &extra)).await;
    let c = client();

    let r = c.get(bext.url("/dead/page")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(content_type(&r).starts_with("text/html"));
    assert!(r.headers().get("x-request-id").is_some());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("marker-7f3a9c-maintenance"),
        "503 body is not the error_page file: {body:?}"
    );

    let r = c.get(bext.url("/slow?ms=4000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(content_type(&r).starts_with("text/html"));
    let body = r.text().await.unwrap();
    assert!(
        body.contains("marker-7f3a9c-maintenance"),
        "504 body is not the error_page file: {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_gets_400_and_never_reaches_origin() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;

    let r = raw_request(
        bext.addr(),
        b"GET /bad-request-marker HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "status line {:?}", r.status_line);
    assert!(r.status_line.starts_with("HTTP/1."), "{:?}", r.status_line);
    assert!(
        origin.requests_to("/bad-request-marker").is_empty(),
        "malformed request reached the origin"
    );
}

/// A 503/504 answered with `Connection: keep-alive` must leave the client
/// connection usable (HTTP/1.1: a server that means to close says `close`),
/// otherwise pooling clients fail their next request on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_keep_connection_semantics() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;

    for (path, status) in [("/dead/ka", 503u16), ("/slow?ms=3000", 504)] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
        let (r, mut conn) = raw_request_keep(bext.addr(), req.as_bytes()).await;
        assert_eq!(r.status, status, "{r:?}");
        let says_close = r
            .header_all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"));
        if says_close {
            assert!(
                wait_closed(&mut conn, Duration::from_secs(30)).await,
                "{status} said `Connection: close` but kept the connection open"
            );
            continue;
        }
        // Not announced as closing: the connection must serve the next request.
        let write = conn
            .write_all(b"GET /after-error HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .await;
        assert!(
            write.is_ok(),
            "{status} with Connection: {:?}, then the connection was gone: {write:?}",
            r.header("connection")
        );
        let next = tokio::time::timeout(Duration::from_secs(30), async {
            let mut probe = [0u8; 1];
            // peek-free check: read_response panics on EOF, so detect it first.
            match conn.peek(&mut probe).await {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(read_response(&mut conn).await),
            }
        })
        .await
        .expect("no answer on the reused connection within the 30 s safety net");
        let next = next.unwrap_or_else(|| {
            panic!(
                "{status} was sent with Connection: {:?} but bext closed the connection \
                 instead of serving the next request on it",
                r.header("connection")
            )
        });
        assert_eq!(next.status, 200, "{next:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_survives_all_failures() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let mut bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;
    let c = client();

    let r = c.get(bext.url("/dead/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = c.get(bext.url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let r = raw_request(
        bext.addr(),
        b"GET /bad HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);

    // Still alive and serving.
    assert!(bext.is_running(), "bext died:\n{}", bext.stderr());
    let r = client().get(bext.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-node"], "a");
    assert_eq!(origin.requests_to("/after").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request_then_exits_zero() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let mut bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;

    // The origin answers after 1.5 s; the route allows 10 s.
    let url = bext.url("/patient/slow?ms=1500");
    let in_flight = tokio::spawn(async move {
        let r = client().get(url).send().await?;
        let status = r.status();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });

    // Signal only once the origin has the request, so it is truly in flight.
    assert!(
        origin
            .wait_for(Duration::from_secs(30), |reqs| reqs
                .iter()
                .any(|q| q.path == "/patient/slow"))
            .await,
        "request never reached the origin"
    );
    bext.sigterm();

    let (status, body) = in_flight
        .await
        .unwrap()
        .expect("in-flight request failed after SIGTERM");
    assert_eq!(status, 200);
    assert_eq!(body, "slow done");

    // grace_period 3 s + shutdown_timeout 2 s; 20 s is a generous deadline.
    let exit = bext.wait_exit(Duration::from_secs(20)).await;
    let exit = exit.unwrap_or_else(|| panic!("bext still running 20 s after SIGTERM"));
    assert_eq!(
        exit.code(),
        Some(0),
        "exit status {exit:?}\n{}",
        bext.stderr()
    );
}

/// Idle keep-alive connections wait for their next request in bext's
/// connection layer, outside Pingora. Shutdown must still treat them as
/// Pingora did: a request sent during the drain is answered (with
/// `Connection: close`), not reset, and a connection that stays idle is closed
/// before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_answered_then_closed_on_sigterm() {
    let origin = StubOrigin::start("a").await;
    let closed = ClosedPort::new();
    let mut bext = Bext::start(&config(free_port(), &origin, &closed, "")).await;
    let req = b"GET /ka HTTP/1.1\r\nHost: a\r\n\r\n";
    let (first, mut answered) = raw_request_keep(bext.addr(), req).await;
    assert_eq!(first.status, 200);
    let (first, mut idle) = raw_request_keep(bext.addr(), req).await;
    assert_eq!(first.status, 200);

    bext.sigterm();
    // Inside the 3 s grace period: shutdown has started, idle connections
    // are still open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    answered.write_all(req).await.unwrap();
    let r = read_response(&mut answered).await;
    assert_eq!(
        r.status, 200,
        "request during the drain: {:?}",
        r.status_line
    );
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(
        wait_closed(&mut answered, Duration::from_secs(10)).await,
        "connection kept open after Connection: close"
    );

    assert!(
        wait_closed(&mut idle, Duration::from_secs(15)).await,
        "idle keep-alive connection never closed during shutdown"
    );
    let exit = bext.wait_exit(Duration::from_secs(20)).await;
    let exit = exit.unwrap_or_else(|| panic!("bext still running 20 s after SIGTERM"));
    assert_eq!(exit.code(), Some(0), "{}", bext.stderr());
    assert_eq!(origin.requests_to("/ka").len(), 3);
}
