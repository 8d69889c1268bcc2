//! Basic proxying: methods and bodies, routing (paths and hosts), route
//! headers, request ids, upstream keep-alive and round robin.

mod common;

use std::collections::HashMap;

use common::{client, echo_json, free_port, pattern_chunk, raw_request, Bext, StubOrigin};

/// One upstream `app` with the given nodes and a single catch-all route.
fn single_route_config(port: u16, nodes: &[String]) -> String {
    let nodes = nodes
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[upstreams.app]
nodes = [{nodes}]

[waf]

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#
    )
}

fn is_request_id(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_bodies_and_statuses_pass_through() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&single_route_config(
        free_port(),
        &[origin.addr().to_string()],
    ))
    .await;
    let c = client();

    // GET with a query string.
    let r = c
        .get(bext.url("/echo/path?x=1&y=two"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j = echo_json(&r.bytes().await.unwrap());
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/echo/path");
    assert_eq!(j["query"], "x=1&y=two");
    assert_eq!(j["body_len"], 0);

    // Bodies on POST / PUT / DELETE arrive complete. Typed, as real clients
    // send them (the WAF refuses an untyped PUT/PATCH body, rule 920210).
    for (method, len) in [
        (reqwest::Method::POST, 1_000usize),
        (reqwest::Method::PUT, 70_000),
        (reqwest::Method::DELETE, 17),
    ] {
        let body = vec![b'z'; len];
        let r = c
            .request(method.clone(), bext.url("/echo"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let j = echo_json(&r.bytes().await.unwrap());
        assert_eq!(j["method"], method.as_str());
        assert_eq!(j["body_len"], len, "{method} body length at origin");
    }

    // HEAD reaches the origin as HEAD and returns no body.
    let r = c.head(bext.url("/echo")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-node"], "a");
    assert!(r.bytes().await.unwrap().is_empty());
    assert!(origin.requests().iter().any(|q| q.method == "HEAD"));

    // Origin statuses and response headers pass through unchanged.
    for status in [201u16, 404, 500] {
        let r = c
            .get(bext.url(&format!("/echo?status={status}&set=X-Custom:v{status}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["x-custom"], format!("v{status}").as_str());
        let j = echo_json(&r.bytes().await.unwrap());
        assert_eq!(j["node"], "a", "status {status} body must be the origin's");
    }

    // A larger response body arrives byte-for-byte.
    let n = 300_000usize;
    let r = c
        .get(bext.url(&format!("/bytes?n={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), n);
    assert!(body[..] == pattern_chunk(0, n)[..], "body bytes changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_paths_get_404_without_reaching_the_origin() {
    let origin = StubOrigin::start("a").await;
    let port = free_port();
    let bext = Bext::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/api/*"
proxy = "app"

[[route_rules]]
pattern = "/exact"
proxy = "app"
"#,
        origin = origin.addr()
    ))
    .await;
    let c = client();

    for path in ["/api", "/api/", "/api/users/1", "/exact"] {
        let r = c.get(bext.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} should be routed");
        let j = echo_json(&r.bytes().await.unwrap());
        assert_eq!(j["path"], path);
    }
    for path in ["/", "/apix", "/other", "/exact/more", "/exactly"] {
        let r = c.get(bext.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} should not match any route");
        assert!(
            origin.requests_to(path).is_empty(),
            "{path} must not reach the origin"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_route_each_host_to_its_own_origin() {
    let a = StubOrigin::start("a").await;
    let b = StubOrigin::start("b").await;
    let port = free_port();
    let bext = Bext::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[upstreams.alpha]
nodes = ["{a}"]

[upstreams.beta]
nodes = ["{b}"]

[[route_rules]]
pattern = "/*"
host = "a.example.com"
proxy = "alpha"

[[route_rules]]
pattern = "/*"
host = "b.example.com"
proxy = "beta"
"#,
        a = a.addr(),
        b = b.addr()
    ))
    .await;

    let get = |host: &'static str| {
        let addr = bext.addr();
        async move {
            let req = format!("GET /who HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            raw_request(addr, req.as_bytes()).await
        }
    };

    for (host, node) in [
        ("a.example.com", "a"),
        ("b.example.com", "b"),
        ("A.Example.COM", "a"),
        ("b.example.com:8443", "b"),
    ] {
        let r = get(host).await;
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
        assert_eq!(r.header("x-node").as_deref(), Some(node), "Host {host}");
    }
    let r = get("c.example.com").await;
    assert_eq!(
        r.status, 421,
        "a host no route is for is misdirected, never another site's: {r:?}"
    );

    assert_eq!(a.requests_to("/who").len(), 2);
    assert_eq!(b.requests_to("/who").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_headers_are_added_only_on_their_route() {
    let origin = StubOrigin::start("a").await;
    let port = free_port();
    let bext = Bext::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/framed/*"
proxy = "app"
headers = {{ "X-Frame-Options" = "DENY", "X-Route" = "framed" }}

[[route_rules]]
pattern = "/*"
proxy = "app"
"#,
        origin = origin.addr()
    ))
    .await;
    let c = client();

    let r = c.get(bext.url("/framed/page")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["x-route"], "framed");

    let r = c.get(bext.url("/other/page")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-frame-options").is_none());
    assert!(r.headers().get("x-route").is_none());

    // Route headers are response headers: the origin never sees them.
    for q in origin.requests() {
        assert!(!q.has_header("x-frame-options"), "{q:?}");
        assert!(!q.has_header("x-route"), "{q:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_or_kept_and_returned() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&single_route_config(
        free_port(),
        &[origin.addr().to_string()],
    ))
    .await;
    let c = client();

    // No id from the client: bext makes one, the origin and the client see it.
    let mut generated = Vec::new();
    for i in 0..2 {
        let path = format!("/rid-gen-{i}");
        let r = c.get(bext.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let returned = r
            .headers()
            .get("x-request-id")
            .expect("response carries X-Request-Id")
            .to_str()
            .unwrap()
            .to_string();
        assert!(is_request_id(&returned), "bad generated id {returned:?}");
        let seen = origin.requests_to(&path);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].header("x-request-id"), Some(returned.clone()));
        generated.push(returned);
    }
    assert_ne!(generated[0], generated[1], "ids must be unique per request");

    // A sane client id is kept.
    let r = c
        .get(bext.url("/rid-kept"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let seen = origin.requests_to("/rid-kept");
    assert_eq!(seen[0].header("x-request-id").as_deref(), Some("abc-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&single_route_config(
        free_port(),
        &[origin.addr().to_string()],
    ))
    .await;

    // 50 sequential requests over 5 separate client connections.
    for conn in 0..5 {
        let c = client();
        for i in 0..10 {
            let r = c
                .get(bext.url(&format!("/ka/{conn}/{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let j = echo_json(&r.bytes().await.unwrap());
            assert_eq!(j["path"], format!("/ka/{conn}/{i}"));
        }
    }
    let ka = origin
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/ka/"))
        .count();
    assert_eq!(ka, 50);
    // threads = 1: one connection pool; sequential requests reuse idle
    // upstream connections instead of dialing one per request.
    assert!(
        origin.connections() <= 4,
        "origin accepted {} TCP connections for 50 sequential requests",
        origin.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_uses_every_node() {
    let a = StubOrigin::start("a").await;
    let b = StubOrigin::start("b").await;
    let bext = Bext::start(&single_route_config(
        free_port(),
        &[a.addr().to_string(), b.addr().to_string()],
    ))
    .await;
    let c = client();

    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..20 {
        let r = c.get(bext.url(&format!("/rr/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let node = r.headers()["x-node"].to_str().unwrap().to_string();
        *per_node.entry(node).or_default() += 1;
    }
    let na = per_node.get("a").copied().unwrap_or(0);
    let nb = per_node.get("b").copied().unwrap_or(0);
    assert_eq!(na + nb, 20, "{per_node:?}");
    assert!(na >= 5 && nb >= 5, "uneven spread: {per_node:?}");
    let rr = |o: &StubOrigin| {
        o.requests()
            .iter()
            .filter(|q| q.path.starts_with("/rr/"))
            .count()
    };
    assert_eq!(rr(&a), na);
    assert_eq!(rr(&b), nb);
}
