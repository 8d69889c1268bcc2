//! Forwarded headers on the upstream request (X-Forwarded-For / -Proto /
//! -Host, X-Real-IP, Host) and hop-by-hop header removal in both directions.

mod common;

use common::{free_port, raw_request, Bext, StubOrigin};

fn config(port: u16, origin: &StubOrigin, trusted: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
trusted_proxies = [{trusted}]

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
        origin = origin.addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_cannot_spoof_forwarded_headers() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "")).await;

    let r = raw_request(
        bext.addr(),
        b"GET /fwd-untrusted HTTP/1.1\r\n\
          Host: app.example.com:8443\r\n\
          X-Forwarded-For: 6.6.6.6\r\n\
          X-Real-IP: 7.7.7.7\r\n\
          X-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: evil.example\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    let seen = origin.requests_to("/fwd-untrusted");
    assert_eq!(seen.len(), 1);
    let q = &seen[0];
    assert_eq!(
        q.header_all("x-forwarded-for"),
        vec!["127.0.0.1"],
        "spoofed X-Forwarded-For must be dropped and replaced by the peer"
    );
    assert_eq!(q.header_all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(q.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        q.header_all("x-forwarded-host"),
        vec!["app.example.com"],
        "without the port (it is in X-Forwarded-Port), as nginx's $host"
    );
    assert_eq!(
        q.header_all("host"),
        vec!["app.example.com:8443"],
        "Host must arrive exactly as the client sent it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_without_client_input() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "")).await;

    let r = raw_request(
        bext.addr(),
        b"GET /fwd-plain HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let q = &origin.requests_to("/fwd-plain")[0];
    assert_eq!(q.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(q.header_all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(q.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(q.header_all("x-forwarded-host"), vec!["plain.test"]);
    assert_eq!(q.header_all("host"), vec!["plain.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_chain_is_appended_to() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(
        free_port(),
        &origin,
        r#""127.0.0.0/8", "10.0.0.0/8""#,
    ))
    .await;

    // Peer 127.0.0.1 is trusted: its X-Forwarded-For is kept and appended to.
    let r = raw_request(
        bext.addr(),
        b"GET /fwd-trusted-1 HTTP/1.1\r\nHost: app.example.com\r\n\
          X-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let q = &origin.requests_to("/fwd-trusted-1")[0];
    assert_eq!(q.header_all("x-forwarded-for"), vec!["6.6.6.6, 127.0.0.1"]);
    assert_eq!(q.header_all("x-real-ip"), vec!["6.6.6.6"]);

    // X-Real-IP is the rightmost untrusted address of the chain: 10.0.0.5 is
    // a trusted hop, so the client is 1.1.1.1 (not the spoofable 9.9.9.9).
    let r = raw_request(
        bext.addr(),
        b"GET /fwd-trusted-2 HTTP/1.1\r\nHost: app.example.com\r\n\
          X-Forwarded-For: 9.9.9.9, 1.1.1.1, 10.0.0.5\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let q = &origin.requests_to("/fwd-trusted-2")[0];
    assert_eq!(
        q.header_all("x-forwarded-for"),
        vec!["9.9.9.9, 1.1.1.1, 10.0.0.5, 127.0.0.1"]
    );
    assert_eq!(q.header_all("x-real-ip"), vec!["1.1.1.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_do_not_reach_the_origin() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "")).await;

    let r = raw_request(
        bext.addr(),
        b"GET /hop-req HTTP/1.1\r\n\
          Host: app.example.com\r\n\
          Connection: keep-alive, X-Secret-Hop\r\n\
          X-Secret-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          X-Normal: yes\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    let seen = origin.requests_to("/hop-req");
    assert_eq!(seen.len(), 1);
    let q = &seen[0];
    for h in ["x-secret-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(!q.has_header(h), "{h} reached the origin: {:?}", q.headers);
    }
    for v in q.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-secret-hop"),
            "client's Connection tokens reached the origin: {v:?}"
        );
    }
    assert_eq!(
        q.header_all("x-normal"),
        vec!["yes"],
        "end-to-end header lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "")).await;

    let r = raw_request(
        bext.addr(),
        b"GET /hop HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "hop");
    assert_eq!(r.header("x-node").as_deref(), Some("a"));
    assert_eq!(r.header_all("x-origin-normal"), vec!["yes"]);
    for h in ["x-origin-hop", "keep-alive"] {
        assert!(
            r.header_all(h).is_empty(),
            "origin's hop-by-hop {h} reached the client: {:?}",
            r.headers
        );
    }
    for v in r.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-origin-hop"),
            "origin's Connection tokens reached the client: {v:?}"
        );
    }
}
