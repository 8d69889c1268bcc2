//! TLS termination: SNI certificate choice, ALPN h2 with many multiplexed
//! streams, HTTP/1.1 over TLS, the plain-listener redirect, HSTS and Alt-Svc,
//! h2c, and X-Forwarded-Proto https towards the origin.

mod common;
mod tls_support;

use std::net::SocketAddr;

use common::{echo_json, free_port, raw_request, Bext, StubOrigin};
use tls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    bext: Bext,
    tls: SocketAddr,
    origin: StubOrigin,
    a: TestCert,
    b: TestCert,
    wild: TestCert,
    _certs: Certs,
}

/// bext with a default certificate for a.test, one for b.test and one for
/// *.w.test; `extra` is appended to `[tls]`.
async fn start(extra: &str, server_extra: &str) -> Fixture {
    let certs = Certs::new();
    let a = certs.make("a", &["a.test"]);
    let b = certs.make("b", &["b.test"]);
    let wild = certs.make("wild", &["*.w.test"]);
    let origin = StubOrigin::start("o").await;
    let tls_port = free_tcp_udp_port();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{plain}"]
threads = 2
{server_extra}

[tls]
listen = ["127.0.0.1:{tls_port}"]
cert = "{ac}"
key = "{ak}"
{extra}

[[tls.certificates]]
hosts = ["b.test"]
cert = "{bc}"
key = "{bk}"

[[tls.certificates]]
hosts = ["*.w.test"]
cert = "{wc}"
key = "{wk}"

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
        plain = free_port(),
        ac = a.cert_path.display(),
        ak = a.key_path.display(),
        bc = b.cert_path.display(),
        bk = b.key_path.display(),
        wc = wild.cert_path.display(),
        wk = wild.key_path.display(),
        origin = origin.addr(),
    );
    let bext = Bext::start(&toml).await;
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    wait_tcp(tls).await;
    Fixture {
        bext,
        tls,
        origin,
        a,
        b,
        wild,
        _certs: certs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sni_name_gets_its_own_certificate() {
    let f = start("", "").await;
    let roots = [&f.a, &f.b, &f.wild];
    let alpn: &[&[u8]] = &[b"http/1.1"];
    for (name, want) in [("a.test", &f.a), ("b.test", &f.b), ("x.w.test", &f.wild)] {
        let s = tls_connect(f.tls, name, client_config(&roots, alpn))
            .await
            .unwrap_or_else(|e| panic!("handshake for {name}: {e}"));
        assert_eq!(peer_leaf(&s), want.der, "certificate for {name}");
    }
    // An unknown name gets the default certificate ([tls] cert = a.test)...
    let s = tls_connect(f.tls, "unknown.test", insecure_client_config())
        .await
        .expect("handshake with the default certificate");
    assert_eq!(peer_leaf(&s), f.a.der);
    // ...which a verifying client then refuses (name mismatch).
    assert!(
        tls_connect(f.tls, "unknown.test", client_config(&roots, alpn))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_certificate_unknown_names_fail_the_handshake() {
    let certs = Certs::new();
    let b = certs.make("b", &["b.test"]);
    let origin = StubOrigin::start("o").await;
    let tls_port = free_port();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\n[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n\
         [[tls.certificates]]\nhosts = [\"b.test\"]\ncert = \"{}\"\nkey = \"{}\"\n\
         [upstreams.app]\nnodes = [\"{}\"]\n[[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\n",
        free_port(),
        b.cert_path.display(),
        b.key_path.display(),
        origin.addr()
    );
    let _bext = Bext::start(&toml).await;
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    wait_tcp(tls).await;
    assert!(tls_connect(tls, "other.test", insecure_client_config())
        .await
        .is_err());
    let ok = tls_connect(tls, "b.test", client_config(&[&b], &[]))
        .await
        .expect("known name still works");
    assert_eq!(peer_leaf(&ok), b.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_multiplexes_100_concurrent_streams() {
    let f = start("", "").await;
    let s = tls_connect(
        f.tls,
        "a.test",
        client_config(&[&f.a], &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(alpn(&s).as_deref(), Some(&b"h2"[..]));
    let send = h2_handshake(s).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            // the origin holds each response a little, so the streams overlap
            h2_get(&send, &format!("https://a.test/h2/{i}/slow?ms=200")).await
        }));
    }
    for t in tasks {
        let (resp, body) = t.await.unwrap().expect("h2 stream");
        assert_eq!(resp.status(), 200);
        assert_eq!(&body[..], b"slow done");
    }
    // bext's own HTTP/2 stream limit (Pingora's default would be 100).
    assert_eq!(send.current_max_send_streams(), 128);
    let seen = f.origin.requests();
    assert_eq!(
        seen.iter().filter(|r| r.path.starts_with("/h2/")).count(),
        100
    );
    for r in seen.iter().filter(|r| r.path.starts_with("/h2/")) {
        assert_eq!(r.header("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(r.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(r.header("host").as_deref(), Some("a.test"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_is_forwarded_as_https() {
    let f = start("", "").await;
    let mut s = tls_connect(f.tls, "b.test", client_config(&[&f.b], &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(alpn(&s).as_deref(), Some(&b"http/1.1"[..]));
    s.write_all(b"GET /h1tls?x=1 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let echo = echo_json(body);
    let headers = echo["headers"].as_array().unwrap();
    let has = |n: &str, v: &str| headers.iter().any(|h| h[0] == n && h[1] == v);
    assert!(has("x-forwarded-proto", "https"), "{echo}");
    assert!(has("x-forwarded-for", "127.0.0.1"), "{echo}");
    assert!(has("x-forwarded-port", &f.tls.port().to_string()), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_redirects_and_tls_responses_carry_hsts_and_alt_svc() {
    let f = start(
        "redirect_http = true\nhsts = \"max-age=31536000; includeSubDomains\"\nhttp3 = true",
        "",
    )
    .await;
    let port = f.tls.port();
    let r = raw_request(
        f.bext.addr(),
        b"GET /some/path?q=1&r=2 HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").unwrap(),
        format!("https://shop.example:{port}/some/path?q=1&r=2")
    );
    assert!(r.header("strict-transport-security").is_none());
    // The admin API stays reachable over plain HTTP for allowed peers (loopback).
    let r = raw_request(
        f.bext.addr(),
        b"GET /__bext/health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_str());
    // Nothing reached the origin over plain HTTP.
    assert!(f.origin.requests().is_empty());

    let s = tls_connect(f.tls, "a.test", client_config(&[&f.a], &[b"h2"]))
        .await
        .unwrap();
    let send = h2_handshake(s).await;
    let (resp, _) = h2_get(&send, "https://a.test/secure").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(
        resp.headers()["alt-svc"],
        format!("h3=\":{port}\"; ma=86400")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_status_301_and_no_host_is_a_400() {
    let f = start("redirect_http = true\nredirect_status = 301", "").await;
    let r = raw_request(f.bext.addr(), b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(r.status, 301);
    let r = raw_request(f.bext.addr(), b"GET /a HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 400);
    let r = raw_request(
        f.bext.addr(),
        b"GET /a HTTP/1.1\r\nHost: evil.test/x\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_the_plain_listener() {
    let f = start("", "h2c = true").await;
    let tcp = tokio::net::TcpStream::connect(f.bext.addr()).await.unwrap();
    let send = h2_handshake(tcp).await;
    let (resp, body) = h2_get(&send, "http://a.test/cleartext").await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo = echo_json(&body);
    let headers = echo["headers"].as_array().unwrap();
    assert!(headers
        .iter()
        .any(|h| h[0] == "x-forwarded-proto" && h[1] == "http"));
    // HTTP/1.1 still works on the same listener.
    let r = raw_request(f.bext.addr(), b"GET /h1 HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_both_accepted() {
    use pingora::tls::{version, ClientConfig, RootCertStore};
    let f = start("", "").await;
    let mut roots = RootCertStore::empty();
    roots.add(f.a.der.clone()).unwrap();
    let only12 = ClientConfig::builder_with_protocol_versions(&[&version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let s = tls_connect(f.tls, "a.test", std::sync::Arc::new(only12))
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(version::TLS12.version)
    );
    let s = tls_connect(f.tls, "a.test", client_config(&[&f.a], &[]))
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(version::TLS13.version)
    );
}
