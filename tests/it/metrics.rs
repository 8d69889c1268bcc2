//! `GET /__bext/metrics` and `telemetry.metrics_listen`: exact counts after
//! known traffic, label sets, promtool on a real scrape, bounded series.

use crate::common::{client, free_port, raw_request, Bext, StubOrigin};
use crate::scrape::{matching, parse, promtool_check, scrape_until, value, value_or_zero};
use crate::support::{get_json, one_node};

const DURATION: &str = "bext_http_server_request_duration_seconds_count";

fn config(origin: std::net::SocketAddr, extra: &str) -> String {
    let routes = "[[route_rules]]\npattern = \"/assets/*\"\nproxy = \"phoenix\"\n";
    let extra = format!("[limits]\nmax_headers_size = \"4KiB\"\n\n{extra}");
    one_node(origin, routes, &extra)
}

#[tokio::test]
async fn scrape_counts_known_traffic_exactly() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr(), "")).await;
    let c = client();
    for _ in 0..3 {
        let r = c.get(bext.url("/posts/1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..2 {
        let r = c.get(bext.url("/missing?status=404")).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = c
        .post(bext.url("/api/items"))
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Cacheable route: a miss that is stored, then a hit.
    for _ in 0..2 {
        let r = c
            .get(bext.url("/assets/app.js?set=Cache-Control:public,max-age=60"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A WAF block and a limits refusal, both with a request id.
    let r = c
        .get(bext.url("/search?q=<script>alert(1)</script>"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().contains_key("x-request-id"));
    let big = "a".repeat(8000);
    let r = c
        .get(bext.url("/posts/1"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert!(
        r.headers().contains_key("x-request-id"),
        "early refusals carry a request id"
    );

    // A request is recorded once its response is out (Pingora's logging
    // phase): wait until all 10 are in.
    let base = format!("http://{}", bext.addr());
    let text = scrape_until(&c, &base, |s| {
        matching(s, DURATION, &[])
            .iter()
            .map(|x| x.value)
            .sum::<f64>()
            >= 10.0
    })
    .await;
    let s = parse(&text);
    let get_ok = [
        ("http_request_method", "GET"),
        ("http_route", "/*"),
        ("http_response_status_code", "200"),
        ("network_protocol_version", "1.1"),
        ("cache_status", "none"),
    ];
    assert_eq!(value(&s, DURATION, &get_ok), 3.0);
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_route", "/*"), ("http_response_status_code", "404")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_request_method", "POST"), ("http_route", "/*")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_route", "/assets/*"), ("cache_status", "miss")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_route", "/assets/*"), ("cache_status", "hit")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_route", "/*"), ("http_response_status_code", "403")]
        ),
        1.0
    );
    // The 431 was refused before any route matched: no route label.
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_route", ""), ("http_response_status_code", "431")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "bext_cache_requests_total", &[("cache_status", "hit")]),
        1.0
    );
    assert_eq!(value(&s, "bext_cache_stored_total", &[]), 1.0);
    assert_eq!(value(&s, "bext_cache_entries", &[]), 1.0);
    assert_eq!(
        value(
            &s,
            "bext_waf_matches_total",
            &[("category", "xss"), ("action", "block")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "bext_limits_rejected_total", &[("reason", "headers")]),
        1.0
    );
    // The node saw the 3 + 2 + 1 + 1 (the cache miss) forwarded requests;
    // the WAF block never reached it.
    let node = [("upstream", "phoenix"), ("node", "n0")];
    assert_eq!(value(&s, "bext_upstream_requests_total", &node), 7.0);
    assert_eq!(value(&s, "bext_upstream_failures_total", &node), 0.0);
    assert_eq!(
        value(&s, "bext_upstream_request_duration_seconds_count", &node),
        7.0
    );
    assert_eq!(value(&s, "bext_upstream_node_healthy", &node), 1.0);
    assert_eq!(
        value(
            &s,
            "bext_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // The admin JSON reads the same counters.
    let waf = get_json(&c, &bext.url("/__bext/waf")).await;
    assert_eq!(waf["counters"]["blocked"], 1);
    let ups = get_json(&c, &bext.url("/__bext/upstreams")).await;
    assert_eq!(ups["upstreams"][0]["nodes"][0]["requests"], 7, "{ups}");

    let report = promtool_check(&text);
    assert!(report.is_empty(), "promtool check metrics:\n{report}");
}

#[tokio::test]
async fn metrics_listener_serves_only_metrics() {
    let origin = StubOrigin::start("n0").await;
    let mport = free_port();
    let extra = format!("[telemetry]\nmetrics_listen = \"127.0.0.1:{mport}\"\n");
    let bext = Bext::start(&config(origin.addr(), &extra)).await;
    let c = client();
    let r = c.get(bext.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The scrape listener may come up a moment after the proxy's.
    let mut text = String::new();
    for _ in 0..100 {
        if let Ok(r) = c
            .get(format!("http://127.0.0.1:{mport}/metrics"))
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            text = r.text().await.unwrap();
            // The request is recorded once its response is out.
            if text.contains("http_response_status_code=\"200\"") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let s = parse(&text);
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_route", "/*"), ("http_response_status_code", "200")]
        ),
        1.0
    );
    let r = c
        .get(format!("http://127.0.0.1:{mport}/__bext/upstreams"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn hostile_paths_and_methods_do_not_grow_the_series() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr(), "")).await;
    let c = client();
    for i in 0..2000 {
        let r = c
            .get(bext.url(&format!("/p/{i}/{}", i * 7919)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for i in 0..50 {
        let req = format!("M{i}X /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let _ = raw_request(bext.addr(), req.as_bytes()).await;
    }
    let base = format!("http://{}", bext.addr());
    let text = scrape_until(&c, &base, |s| {
        matching(s, DURATION, &[])
            .iter()
            .map(|x| x.value)
            .sum::<f64>()
            >= 2050.0
    })
    .await;
    let s = parse(&text);
    let series = matching(&s, DURATION, &[]);
    assert!(series.len() <= 4, "{series:#?}");
    let other = value_or_zero(
        &s,
        DURATION,
        &[("http_request_method", "_OTHER"), ("http_route", "/*")],
    );
    assert!(
        other >= 1.0,
        "unknown methods fold into _OTHER: {series:#?}"
    );
    assert_eq!(
        value(
            &s,
            DURATION,
            &[("http_request_method", "GET"), ("http_route", "/*")]
        ),
        2000.0
    );
}
