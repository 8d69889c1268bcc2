//! OTLP traces end to end: a real OTLP/HTTP receiver decodes bext's spans;
//! the client's trace is continued and Phoenix gets bext's span as parent;
//! hostile `traceparent`s start fresh traces; a dead or black-holed
//! collector never affects requests and its spans are counted as dropped;
//! an https collector gets the spans over TLS when its certificate verifies
//! and nothing when it does not.

use std::time::{Duration, Instant};

use crate::common::{client, Bext, ClosedPort, StubOrigin};
use crate::otlp_receiver::OtlpReceiver;
use crate::scrape::{parse, scrape, value};
use crate::support::one_node;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn config(origin: std::net::SocketAddr, endpoint: &str, ratio: f64) -> String {
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"edge-test\"\nsample_ratio = {ratio}\n"
    );
    one_node(origin, "", &telemetry)
}

#[tokio::test]
async fn client_trace_is_continued_and_phoenix_gets_bexts_span_as_parent() {
    let receiver = OtlpReceiver::start();
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr(), &receiver.endpoint(), 0.0)).await;
    let c = client();
    // Sampled by the client: recorded although sample_ratio is 0.
    let r = c
        .get(bext.url("/posts/1?token=secret"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .header("user-agent", "trace-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(bext.url("/boom?status=500"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"));
    assert_eq!(r.send().await.unwrap().status(), 500);
    let spans = receiver.wait_for_spans(2, Duration::from_secs(20));
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let ok = spans
        .iter()
        .find(|s| s.attributes.get("url.path").map(String::as_str) == Some("/posts/1"))
        .expect("span of /posts/1");
    assert_eq!(ok.trace_id, CLIENT_TRACE);
    assert_eq!(ok.parent_span_id, CLIENT_SPAN);
    assert_ne!(ok.span_id, CLIENT_SPAN);
    assert_eq!(ok.kind, 2, "SERVER");
    assert_eq!(ok.name, "GET /*");
    assert_eq!(ok.service_name, "edge-test");
    let a = &ok.attributes;
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.route"], "/*");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["url.scheme"], "http");
    assert_eq!(a["network.protocol.version"], "1.1");
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(a["user_agent.original"], "trace-test");
    assert!(
        !a.contains_key("url.query"),
        "query strings stay out of spans by default"
    );
    assert!(
        ok.events.iter().any(|e| e == "bext.upstream"),
        "{:?}",
        ok.events
    );
    assert_ne!(ok.status_code, 2);
    let failed = spans
        .iter()
        .find(|s| s.attributes.get("url.path").map(String::as_str) == Some("/boom"))
        .expect("span of /boom");
    assert_eq!(failed.status_code, 2, "5xx is an error span");

    // Phoenix got a traceparent whose parent is bext's span.
    let seen = origin.requests_to("/posts/1");
    let tp = seen[0]
        .header("traceparent")
        .expect("traceparent to the origin");
    assert_eq!(tp, format!("00-{CLIENT_TRACE}-{}-01", ok.span_id));
    assert_eq!(seen[0].header("tracestate").as_deref(), Some("vendor=abc"));
}

#[tokio::test]
async fn hostile_traceparents_start_fresh_traces() {
    let receiver = OtlpReceiver::start();
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr(), &receiver.endpoint(), 1.0)).await;
    let c = client();
    let hostile = [
        "garbage".to_string(),
        format!("ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
        format!("00-{CLIENT_TRACE}-{}-01", "0".repeat(16)),
        format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase()),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra"),
    ];
    for tp in &hostile {
        let r = c
            .get(bext.url("/x"))
            .header("traceparent", tp)
            .header("tracestate", "k=".to_string() + &"v".repeat(600))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{tp}");
    }
    let spans = receiver.wait_for_spans(hostile.len(), Duration::from_secs(20));
    assert_eq!(spans.len(), hostile.len());
    for s in &spans {
        assert_ne!(s.trace_id, CLIENT_TRACE);
        assert_eq!(s.parent_span_id, "", "a fresh trace has no parent");
    }
    for r in origin.requests() {
        assert!(
            r.header("tracestate").is_none(),
            "an oversize tracestate is dropped"
        );
        assert!(r.header("traceparent").is_some_and(|t| t.len() == 55));
    }
}

/// Sends `n` requests (all must succeed), then waits for the dropped-span
/// counter to move.
async fn requests_unaffected_and_spans_dropped(endpoint: &str) {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr(), endpoint, 1.0)).await;
    let c = client();
    for _ in 0..50 {
        let r = c.get(bext.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    spans_dropped_none_exported(&c, &bext).await;
}

/// Waits (up to 30 s) for the dropped-span counter to move; none exported.
async fn spans_dropped_none_exported(c: &reqwest::Client, bext: &Bext) {
    let base = format!("http://{}", bext.addr());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = parse(&scrape(c, &base).await);
        let dropped = value(&s, "bext_otel_spans_dropped_total", &[]);
        if dropped >= 1.0 {
            assert_eq!(value(&s, "bext_otel_spans_exported_total", &[]), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no span counted as dropped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn collector_down_drops_spans_not_requests() {
    let closed = ClosedPort::new();
    requests_unaffected_and_spans_dropped(&format!("http://127.0.0.1:{}", closed.port)).await;
}

#[tokio::test]
async fn black_holed_collector_drops_spans_not_requests() {
    let hole = OtlpReceiver::black_hole();
    requests_unaffected_and_spans_dropped(&hole.endpoint()).await;
}

fn tls_config(origin: std::net::SocketAddr, endpoint: &str, ca: &std::path::Path) -> String {
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\notlp_ca = \"{}\"\nsample_ratio = 1.0\n",
        ca.display()
    );
    one_node(origin, "", &telemetry)
}

#[tokio::test]
async fn https_collector_gets_the_spans_over_verified_tls() {
    let receiver = OtlpReceiver::start_tls();
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&tls_config(
        origin.addr(),
        &receiver.endpoint(),
        receiver.ca_path(),
    ))
    .await;
    let c = client();
    for i in 0..3 {
        let r = c.get(bext.url(&format!("/tls/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let spans = receiver.wait_for_spans(3, Duration::from_secs(20));
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|s| s.attributes["url.path"].starts_with("/tls/")));
    assert!(receiver.tls_handshakes() >= 1);
    let s = parse(&scrape(&c, &format!("http://{}", bext.addr())).await);
    assert_eq!(value(&s, "bext_otel_spans_dropped_total", &[]), 0.0);
}

#[tokio::test]
async fn https_collector_with_a_certificate_bext_does_not_trust_gets_nothing() {
    let receiver = OtlpReceiver::start_tls();
    // A CA that did not sign the receiver's certificate.
    let other = OtlpReceiver::start_tls();
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&tls_config(
        origin.addr(),
        &receiver.endpoint(),
        other.ca_path(),
    ))
    .await;
    let c = client();
    for _ in 0..20 {
        let r = c.get(bext.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    spans_dropped_none_exported(&c, &bext).await;
    assert_eq!(receiver.requests(), 0);
    assert_eq!(receiver.tls_handshakes(), 0);
    assert!(
        bext.stderr().contains("TLS handshake"),
        "the warning says why: {}",
        bext.stderr()
    );
}
