//! HTTP/3: the QUIC sidecar feeds the same pipeline as TCP: routes, response
//! headers, forwarded headers with the real client address, admin access by
//! address, streaming bodies both ways, and junk datagrams are ignored.

mod common;
mod tls_support;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{echo_json, free_port, pattern_chunk, Bext, StubOrigin};
use http::Request;
use tls_support::*;

struct Fixture {
    bext: Bext,
    addr: SocketAddr,
    origin: StubOrigin,
    cert: TestCert,
    _certs: Certs,
}

/// `extra_routes` go before the catch-all route.
async fn start(extra_routes: &str) -> Fixture {
    let certs = Certs::new();
    let cert = certs.make("a", &["a.test"]);
    let origin = StubOrigin::start("o").await;
    let port = free_tcp_udp_port();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{plain}"]
threads = 2

[tls]
listen = ["127.0.0.1:{port}"]
cert = "{c}"
key = "{k}"
http3 = true
redirect_http = true
hsts = "max-age=600"

[upstreams.app]
nodes = ["{origin}"]

{extra_routes}

[[route_rules]]
pattern = "/tagged/*"
proxy = "app"
cache = false
headers = {{ "X-Route" = "tagged" }}

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
        plain = free_port(),
        c = cert.cert_path.display(),
        k = cert.key_path.display(),
        origin = origin.addr(),
    );
    let bext = Bext::start(&toml).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Fixture {
        bext,
        addr,
        origin,
        cert,
        _certs: certs,
    }
}

fn header_pairs(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_get_runs_the_route_rules_with_the_real_client_address() {
    let mut f = start("").await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;

    let r = h3_get(&mut c.send, "https://a.test/tagged/x?y=1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-route").as_deref(), Some("tagged"));
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=600")
    );
    assert_eq!(
        r.header("alt-svc"),
        Some(format!("h3=\":{}\"; ma=86400", f.addr.port()))
    );
    let echo = echo_json(&r.body);
    assert_eq!(echo["path"], "/tagged/x");
    assert_eq!(echo["query"], "y=1");
    assert_eq!(header_pairs(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(
        header_pairs(&echo, "x-forwarded-for"),
        [c.local.ip().to_string()]
    );
    assert_eq!(
        header_pairs(&echo, "x-forwarded-port"),
        [f.addr.port().to_string()]
    );
    assert_eq!(header_pairs(&echo, "host"), ["a.test"]);

    // The admin API decides by client address: loopback over QUIC is allowed,
    // which it could not be if the bridge hid the peer.
    let r = h3_get(&mut c.send, "https://a.test/__bext/health").await;
    assert_eq!(r.status(), 200, "{:?}", r.body);
    // The plain-listener redirect never applies to HTTP/3 (it is HTTPS).
    let r = h3_get(&mut c.send, "https://a.test/not-redirected").await;
    assert_eq!(r.status(), 200);
    assert!(f.bext.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_requests_are_counted_as_protocol_version_3() {
    let f = start("").await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    for _ in 0..2 {
        let r = h3_get(&mut c.send, "https://a.test/counted").await;
        assert_eq!(r.status(), 200);
    }
    // Requests are recorded once their response is out: poll the scrape.
    let mut text = String::new();
    for _ in 0..100 {
        let r = h3_get(&mut c.send, "https://a.test/__bext/metrics").await;
        assert_eq!(r.status(), 200);
        text = String::from_utf8_lossy(&r.body).to_string();
        let done = text.lines().any(|l| {
            l.starts_with("bext_http_server_request_duration_seconds_count{")
                && l.contains("network_protocol_version=\"3\"")
                && l.contains("http_route=\"/*\"")
                && l.contains("http_response_status_code=\"200\"")
                && l.ends_with(" 2")
        });
        if done {
            // One QUIC connection, counted as such.
            for series in [
                "bext_client_connections_accepted_total{listener=\"quic\",network_protocol_version=\"3\"} 1",
                "bext_client_connections_open{listener=\"quic\",network_protocol_version=\"3\"} 1",
                "bext_client_connections_tls_handshakes_total{listener=\"quic\"} 1",
                "bext_client_connections_tls_handshakes_total{listener=\"tls\"} 0",
            ] {
                assert!(text.lines().any(|l| l == series), "no `{series}` in:\n{text}");
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no HTTP/3 series counting 2 requests in:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_are_counted_not_logged_per_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = start("").await;
    // Plain HTTP to the TLS port, as scanners and misconfigured clients do.
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(f.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    // And one good TLS connection.
    let roots = client_config(&[&f.cert], &[b"http/1.1"]);
    let tls = tls_connect(f.addr, "a.test", roots).await.unwrap();
    drop(tls);
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    let want = [
        "bext_client_connections_tls_handshake_failures_total{listener=\"tls\",reason=\"error\"} 3",
        "bext_client_connections_tls_handshakes_total{listener=\"tls\"} 1",
    ];
    let mut text = String::new();
    for _ in 0..100 {
        let r = h3_get(&mut c.send, "https://a.test/__bext/metrics").await;
        text = String::from_utf8_lossy(&r.body).to_string();
        if want.iter().all(|w| text.lines().any(|l| l == *w)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for w in want {
        assert!(text.lines().any(|l| l == w), "no `{w}` in:\n{text}");
    }
    let log = f.bext.stderr();
    assert!(
        !log.contains("Downstream handshake error"),
        "one ERROR per failed handshake:\n{log}"
    );
    assert_eq!(
        log.matches("TLS handshake(s) failed").count(),
        1,
        "failed handshakes are reported once a minute at most:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_streams_a_10_mb_upload_and_a_5_mb_download() {
    // Binary uploads: the WAF would (rightly) flag control bytes in a body.
    let f = start(
        "[[route_rules]]\npattern = \"/files/*\"\nproxy = \"app\"\ncache = false\nwaf = false\n",
    )
    .await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;

    const UP: usize = 10 * 1024 * 1024;
    let body = pattern_chunk(0, UP);
    let req = Request::post("https://a.test/files/upload")
        .header("content-type", "application/octet-stream")
        .header("content-length", UP)
        .body(())
        .unwrap();
    let r = h3_request(&mut c.send, req, Some(body))
        .await
        .expect("upload");
    assert_eq!(r.status(), 200);
    assert_eq!(&r.body[..], UP.to_string().as_bytes());

    // Without content-length (the bridge sends it chunked to the pipeline).
    let req = Request::post("https://a.test/files/upload")
        .body(())
        .unwrap();
    let r = h3_request(&mut c.send, req, Some(Bytes::from(vec![7u8; 300_000])))
        .await
        .expect("upload");
    assert_eq!(&r.body[..], b"300000");

    const DOWN: usize = 5 * 1024 * 1024;
    let r = h3_get(&mut c.send, &format!("https://a.test/files/bytes?n={DOWN}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body.len(), DOWN);
    assert!(r.body == pattern_chunk(0, DOWN), "download corrupted");
    let ups = f.origin.requests_to("/files/upload");
    assert_eq!(ups.len(), 2);
    assert_eq!(ups[0].header("x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_many_concurrent_requests_on_one_connection() {
    let f = start("").await;
    let c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut send = c.send.clone();
        tasks.push(tokio::spawn(async move {
            h3_get(&mut send, &format!("https://a.test/many/{i}/slow?ms=100")).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(&r.body[..], b"slow done");
    }
    assert_eq!(
        f.origin
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/many/"))
            .count(),
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_garbage_datagrams_are_ignored() {
    let mut f = start("").await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    send_garbage_datagrams(f.addr, 600).await;
    let r = h3_get(&mut c.send, "https://a.test/after-garbage").await;
    assert_eq!(r.status(), 200);
    let mut fresh = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    let r = h3_get(&mut fresh.send, "https://a.test/fresh").await;
    assert_eq!(r.status(), 200);
    assert!(f.bext.is_running());
}

/// The second GET of a cacheable path over HTTP/3 is a hit, exactly as over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_second_get_of_a_cacheable_path_is_a_cache_hit() {
    let f =
        start("[[route_rules]]\npattern = \"/cached/*\"\nproxy = \"app\"\ncache = true\n").await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    let url = "https://a.test/cached/page?set=Cache-Control:public,max-age=60";
    let first = h3_get(&mut c.send, url).await;
    assert_eq!(first.status(), 200);
    let second = h3_get(&mut c.send, url).await;
    let status = second.header("cache-status").unwrap_or_default();
    assert!(status.contains("hit"), "cache-status: {status}");
    assert_eq!(f.origin.requests_to("/cached/page").len(), 1);
}

/// A request the WAF blocks over TCP is blocked the same over HTTP/3, with
/// the same 403 and request id, and never reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_waf_blocked_request_gets_403() {
    let f = start("").await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    let r = h3_get(
        &mut c.send,
        "https://a.test/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(String::from_utf8_lossy(&r.body).contains("request id"));
    assert!(f.origin.requests_to("/search").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_early_answer_before_the_body_is_read_does_not_hang() {
    let f = start("").await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    // The admin API answers 404 for an unknown endpoint without reading the
    // body; the client is still sending 8 MB.
    let req = Request::post("https://a.test/__bext/no-such-endpoint")
        .body(())
        .unwrap();
    let r = h3_request(&mut c.send, req, Some(pattern_chunk(0, 8 << 20)))
        .await
        .expect("the early answer is readable");
    assert_eq!(r.status(), 404);
    // The connection is still usable.
    let r = h3_get(&mut c.send, "https://a.test/after-early-answer").await;
    assert_eq!(r.status(), 200);
}

/// The limits apply to HTTP/3 clients by their real address: the per-IP
/// rate limit answers 429 with Retry-After, and the per-IP connection cap
/// refuses extra QUIC connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_clients_get_the_same_rate_limit_and_connection_cap() {
    let f = start("[limits]\nmax_connections_per_ip = 2\nrate = { requests = 3, per = \"60s\" }\n")
        .await;
    let mut c = h3_connect_ready(f.addr, "a.test", &[&f.cert]).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..10 {
        let r = h3_get(&mut c.send, &format!("https://a.test/rated/{i}")).await;
        if r.status() == 429 {
            retry_after = retry_after.or(r.header("retry-after"));
        }
        statuses.push(r.status());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(retry_after.is_some(), "429 without Retry-After");
    assert!(f.origin.requests().len() < 10);

    // One connection is open; a second is allowed, a third is refused.
    let _second = h3_connect(f.addr, "a.test", &[&f.cert])
        .await
        .expect("second connection within the cap");
    let third = h3_connect(f.addr, "a.test", &[&f.cert]).await;
    assert!(
        third.is_err(),
        "a third QUIC connection from one IP was accepted"
    );
}
