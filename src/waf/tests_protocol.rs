//! The protocol pass (`head.rs`), one test per check: the malformed head it
//! exists for, next to the nearest head a browser, a Phoenix client or an
//! API client really sends, which must not fire it.

use super::test_support::{head, waf};
use super::*;

/// The verdict on a head; `line` is the raw HTTP/1 request line, if any.
fn check(w: &Waf, h: &http::request::Parts, line: Option<&str>) -> Verdict {
    w.inspect_head_raw(h, line.map(str::as_bytes))
}

fn fired(v: &Verdict, id: u32) -> bool {
    v.hits.iter().any(|h| h.rule.id == id)
}

/// `id` fires on the head (and the request is blocked when `blocks`).
fn fires(w: &Waf, h: &http::request::Parts, line: Option<&str>, id: u32, blocks: bool) {
    let v = check(w, h, line);
    assert!(fired(&v, id), "{id} did not fire: {}", v.log_line());
    if blocks {
        assert!(w.blocks(&v), "not blocked: {}", v.log_line());
    }
}

/// `id` does not fire, and the request passes.
fn quiet(w: &Waf, h: &http::request::Parts, line: Option<&str>, id: u32) {
    let v = check(w, h, line);
    assert!(!fired(&v, id), "{id} fired: {}", v.log_line());
    assert!(!w.blocks(&v), "blocked: {}", v.log_line());
}

fn get(headers: &[(&str, &str)]) -> http::request::Parts {
    head("GET", "/", headers)
}

/// A head without the Host `test_support::head` adds.
fn bare(method: &str, uri: &str, version: http::Version) -> http::request::Parts {
    let b = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(version);
    b.body(()).expect("request").into_parts().0
}

#[test]
fn request_line_version_and_method() {
    let w = waf();
    let h = get(&[]);
    fires(&w, &h, Some("GET / HTTP/1.2"), 920230, true);
    fires(&w, &h, Some("GET / HTTP/2.0"), 920230, true);
    quiet(&w, &h, Some("GET / HTTP/1.1"), 920230);
    quiet(&w, &h, Some("GET / HTTP/1.0"), 920230);
    // The line's method must be the parsed one (a second parser's view).
    fires(&w, &h, Some("GeT / HTTP/1.1"), 920230, true);
    quiet(&w, &bare("GET", "/", http::Version::HTTP_2), None, 920230);
}

#[test]
fn request_target_forms() {
    let w = waf();
    let h = get(&[]);
    // A forward-proxy request, another scheme, userinfo, no path.
    for t in [
        "http://app.example.com",
        "http://app.example.com?x=1",
        "ftp://app.example.com/",
        "http://user@app.example.com/",
        "app.example.com:443",
        "*",
    ] {
        fires(&w, &h, Some(&format!("GET {t} HTTP/1.1")), 920240, true);
    }
    // absolute-form with a path (RFC 9112: a server MUST accept it), and
    // asterisk-form on OPTIONS.
    quiet(
        &w,
        &h,
        Some("GET http://app.example.com/posts HTTP/1.1"),
        920240,
    );
    let o = head("OPTIONS", "*", &[]);
    quiet(&w, &o, Some("OPTIONS * HTTP/1.1"), 920240);
    // A backslash in the path; in the query it is data (JSON, regexes).
    let b = head("GET", "/static\\..\\app.js", &[]);
    fires(&w, &b, None, 920240, true);
    let q = head("GET", "/search?q=a\\b", &[]);
    quiet(&w, &q, None, 920240);
}

#[test]
fn fragment_and_percent_encoding_are_warnings() {
    let w = waf();
    let h = get(&[]);
    let v = check(&w, &h, Some("GET /a#/../admin HTTP/1.1"));
    assert!(fired(&v, 920242) && !w.blocks(&v), "{}", v.log_line());
    let bad = head("GET", "/p?discount=50%zz", &[]);
    let v = check(&w, &bad, None);
    assert!(fired(&v, 920245) && !w.blocks(&v), "{}", v.log_line());
    quiet(&w, &head("GET", "/p?q=50%25", &[]), None, 920245);
    // Together they add up.
    let v = check(&w, &bad, Some("GET /p?discount=50%zz#x HTTP/1.1"));
    assert!(w.blocks(&v), "{}", v.log_line());
}

#[test]
fn raw_target_that_is_not_utf8() {
    let w = waf();
    let h = get(&[]);
    let v = w.inspect_head_raw(&h, Some(b"GET /caf\xe9 HTTP/1.1"));
    assert!(fired(&v, 920055), "{}", v.log_line());
    quiet(&w, &h, Some("GET /caf%C3%A9 HTTP/1.1"), 920055);
}

#[test]
fn host_presence_syntax_and_agreement() {
    let w = waf();
    // Missing on HTTP/1.1; fine on HTTP/1.0 and on HTTP/2 (`:authority`).
    fires(
        &w,
        &bare("GET", "/", http::Version::HTTP_11),
        None,
        920250,
        true,
    );
    quiet(&w, &bare("GET", "/", http::Version::HTTP_10), None, 920250);
    quiet(
        &w,
        &bare("GET", "https://app.example.com/", http::Version::HTTP_2),
        None,
        920250,
    );
    for bad in [
        "",
        "app.example.com/admin",
        "evil.test@app.example.com",
        "app.example.com:80:80",
        "app.example.com:99999",
        "app example.com",
        "[::1",
    ] {
        let h = bare("GET", "/", http::Version::HTTP_11);
        let mut h = h;
        h.headers.insert("host", bad.parse().expect("value"));
        fires(&w, &h, None, 920250, true);
    }
    for good in [
        "app.example.com",
        "127.0.0.1:8080",
        "[::1]:4000",
        "localhost",
        "my_host.internal",
    ] {
        let mut h = bare("GET", "/", http::Version::HTTP_11);
        h.headers.insert("host", good.parse().expect("value"));
        quiet(&w, &h, None, 920250);
    }
    // An absolute-form target naming another authority than Host.
    let h = get(&[]);
    fires(
        &w,
        &h,
        Some("GET http://other.test/ HTTP/1.1"),
        920250,
        true,
    );
    quiet(
        &w,
        &h,
        Some("GET http://APP.example.com:80/ HTTP/1.1"),
        920250,
    );
}

#[test]
fn singleton_fields_twice() {
    let w = waf();
    let h = get(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
    fires(&w, &h, None, 920280, true);
    quiet(&w, &get(&[("authorization", "Bearer a")]), None, 920280);
    // List fields may repeat; HTTP/2 splits Cookie into crumbs.
    quiet(
        &w,
        &get(&[("cookie", "a=1"), ("cookie", "b=2")]),
        None,
        920280,
    );
    quiet(
        &w,
        &get(&[("accept", "text/html"), ("accept", "*/*")]),
        None,
        920280,
    );
    // Two Content-Types matter when there is a body for them to describe.
    let two = |cl: &str| {
        head(
            "POST",
            "/api",
            &[
                ("content-type", "application/json"),
                ("content-type", "application/xml"),
                ("content-length", cl),
            ],
        )
    };
    fires(&w, &two("2"), None, 920280, true);
    quiet(&w, &two("0"), None, 920280);
}

#[test]
fn empty_values_where_the_grammar_needs_one() {
    let w = waf();
    for n in [
        "user-agent",
        "range",
        "origin",
        "authorization",
        "content-range",
    ] {
        fires(&w, &get(&[(n, "")]), None, 920285, true);
    }
    // Accept is a list that may be empty (CFNetwork clients send that), as
    // are Connection, Expect and Upgrade; Referer may be an empty partial URI.
    for n in ["accept", "connection", "expect", "upgrade"] {
        quiet(&w, &get(&[(n, "")]), None, 920285);
    }
    quiet(&w, &get(&[("referer", "")]), None, 920285);
    quiet(&w, &get(&[("user-agent", "curl/8.5.0")]), None, 920285);
}

#[test]
fn transfer_codings() {
    let w = waf();
    let post = |te: &[&str]| {
        let mut h = head("POST", "/upload", &[("content-type", "text/plain")]);
        for v in te {
            h.headers
                .append("transfer-encoding", v.parse().expect("value"));
        }
        h
    };
    for te in [
        &["gzip, chunked"][..],
        &["chunked, chunked"],
        &["chunked;ext=1"],
        &["xchunked"],
        &["chunked", "identity"],
    ] {
        fires(&w, &post(te), None, 920260, true);
    }
    quiet(&w, &post(&["chunked"]), None, 920260);
    quiet(&w, &post(&[" Chunked "]), None, 920260);
}

#[test]
fn content_length_and_post_without_length() {
    let w = waf();
    let cl = |v: &str| {
        head(
            "POST",
            "/f",
            &[("content-type", "text/plain"), ("content-length", v)],
        )
    };
    fires(&w, &cl("+5"), None, 920020, true);
    fires(&w, &cl("0x10"), None, 920020, true);
    quiet(&w, &cl("12"), None, 920020);
    // A POST with no length at all: only a warning (the body is empty).
    let v = check(&w, &head("POST", "/jobs/run", &[]), None);
    assert!(fired(&v, 920265) && !w.blocks(&v), "{}", v.log_line());
    quiet(
        &w,
        &head("POST", "/jobs/run", &[("content-length", "0")]),
        None,
        920265,
    );
    quiet(
        &w,
        &bare("POST", "https://a.test/x", http::Version::HTTP_2),
        None,
        920265,
    );
}

#[test]
fn content_type_grammar() {
    let w = waf();
    let ct = |v: &str| {
        head(
            "POST",
            "/f",
            &[("content-type", v), ("content-length", "2")],
        )
    };
    for bad in [
        "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)}",
        "application/json, text/html",
        "text/plain; charset=\"utf-8",
        "multipart/form-data; boundary={x}",
        "application/",
        "text plain",
    ] {
        fires(&w, &ct(bad), None, 920270, true);
    }
    for good in [
        "application/json",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "multipart/form-data; boundary=\"----=_Part_0_1.2\"",
        "multipart/mixed; boundary=----=_Part_7",
        "application/soap+xml; charset=utf-8; action=\"urn:x#op\"",
        "text/plain;",
        "application/vnd.api+json",
    ] {
        let v = check(&w, &ct(good), None);
        assert!(!fired(&v, 920270), "{good}: {}", v.log_line());
    }
}

#[test]
fn ranges() {
    let w = waf();
    let r = |v: &str| get(&[("range", v)]);
    // Warnings: a server ignores a bad Range, so they only add up.
    for bad in [
        "bytes=10-5",
        "bytes=a-b",
        "bytes=0-10,5-15,8-20",
        "0-1",
        "bytes=",
    ] {
        let v = check(&w, &r(bad), None);
        assert!(
            fired(&v, 920160) && !w.blocks(&v),
            "{bad}: {}",
            v.log_line()
        );
    }
    let many = (0..65).map(|i| format!("{}-{}", i * 10, i * 10 + 1));
    let many = format!("bytes={}", many.collect::<Vec<_>>().join(","));
    assert!(fired(&check(&w, &r(&many), None), 920160));
    for good in [
        "bytes=0-1023",
        "bytes=1024-",
        "bytes=-500",
        "bytes=0-100,200-300",
    ] {
        quiet(&w, &r(good), None, 920160);
    }
    let ir = |v: &str| get(&[("range", "bytes=10-"), ("if-range", v)]);
    assert!(fired(&check(&w, &ir("W/\"abc\""), None), 920160));
    assert!(fired(
        &check(&w, &get(&[("if-range", "\"abc\"")]), None),
        920160
    ));
    quiet(&w, &ir("\"abc\""), None, 920160);
    quiet(&w, &ir("Wed, 21 Oct 2015 07:28:00 GMT"), None, 920160);
}

#[test]
fn content_range() {
    let w = waf();
    let cr = |v: &str| get(&[("content-range", v)]);
    for bad in ["test", "bytes 10-5/100", "bytes 0-1", "bytes */*"] {
        fires(&w, &cr(bad), None, 920275, true);
    }
    // Resumable uploads send these (and some an exclusive end).
    for good in [
        "bytes 0-1023/4096",
        "bytes 4096-8192/8192",
        "bytes */4096",
        "bytes 0-99/*",
    ] {
        quiet(&w, &cr(good), None, 920275);
    }
}

#[test]
fn accept_encoding() {
    let w = waf();
    let ae = |v: &str| get(&[("accept-encoding", v)]);
    fires(&w, &ae("gzip;level=9"), None, 920220, true);
    fires(&w, &ae("gzip;q=2"), None, 920220, true);
    fires(&w, &ae("gzip, <x>"), None, 920220, true);
    let long = format!("text/html;q=0.9, {}", "image/x-a;q=0.1, ".repeat(70));
    fires(&w, &get(&[("accept", &long)]), None, 920220, true);
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
    quiet(&w, &get(&[("accept", browser)]), None, 920220);
    for good in [
        "gzip, deflate, br, zstd",
        "gzip;q=1.0, identity; q=0.5, *;q=0",
        "br;q=0.999",
        "identity",
    ] {
        quiet(&w, &ae(good), None, 920220);
    }
}

#[test]
fn expect() {
    let w = waf();
    let post = |e: &str, cl: &str| {
        head(
            "POST",
            "/upload",
            &[
                ("expect", e),
                ("content-type", "text/plain"),
                ("content-length", cl),
            ],
        )
    };
    fires(&w, &post("y 100-continue", "5"), None, 921070, true);
    fires(&w, &post("100-continue, foo", "5"), None, 921070, true);
    fires(&w, &post("100-continue", "0"), None, 921070, true);
    quiet(&w, &post("100-continue", "5"), None, 921070);
    quiet(&w, &post("100-Continue", "5"), None, 921070);
}

#[test]
fn upgrade() {
    let w = waf();
    let up = |m: &str, u: &str| {
        head(
            m,
            "/live/websocket",
            &[("connection", "Upgrade"), ("upgrade", u)],
        )
    };
    fires(&w, &up("GET", "h2c"), None, 921080, true);
    fires(&w, &up("GET", "websocket, h2c"), None, 921080, true);
    fires(&w, &up("POST", "websocket"), None, 921080, true);
    quiet(&w, &up("GET", "websocket"), None, 921080);
    quiet(&w, &up("GET", "WebSocket"), None, 921080);
}

#[test]
fn connection_options() {
    let w = waf();
    let c = |v: &str| get(&[("connection", v)]);
    for abuse in [
        "close, X-Forwarded-For",
        "keep-alive, Authorization",
        "Content-Length",
        "Upgrade, HTTP2-Settings",
    ] {
        fires(&w, &c(abuse), None, 921090, true);
    }
    fires(&w, &c("keep-alive, close"), None, 920110, true);
    fires(&w, &c("close, close"), None, 920110, true);
    fires(&w, &c("close, <x>"), None, 920110, true);
    // Browsers: keep-alive, Upgrade (Firefox sends both), TE with `TE: trailers`.
    for good in [
        "keep-alive",
        "keep-alive, Upgrade",
        "Upgrade",
        "close",
        "TE",
        "Keep-Alive, TE",
    ] {
        quiet(&w, &c(good), None, 921090);
        quiet(&w, &c(good), None, 920110);
    }
}

#[test]
fn header_injection_in_query() {
    let w = waf();
    let q = |v: &str| head("GET", &format!("/redirect?to={v}"), &[]);
    for bad in [
        "%2F%0d%0aX-Evil:%201",
        "a%0aSet-Cookie:%20s=1",
        "a%0d%0a%0d%0aHTTP/1.1%20200%20OK",
        "a%0aVia:%20x",
    ] {
        fires(&w, &q(bad), None, 921100, true);
    }
    for good in ["%2Fposts%2F1", "line1%0aline2", "a%0a:b", "time%0a12:00"] {
        quiet(&w, &q(good), None, 921100);
    }
}

#[test]
fn request_smuggling_and_splitting_in_values() {
    let w = waf();
    let v = super::test_support::form(&w, "var=aaa%0aPROPFIND+/+HTTP/1.1");
    assert!(fired(&v, 921010), "{}", v.log_line());
    let v = super::test_support::form(&w, "n=x%0d%0aHTTP/1.1+200+OK");
    assert!(fired(&v, 921020), "{}", v.log_line());
    // Prose about HTTP in a body is not a request line.
    let v = super::test_support::form(&w, "body=We+moved+to+HTTP/2+last+year");
    assert!(!w.blocks(&v), "{}", v.log_line());
}

#[test]
fn editor_backup_files() {
    let w = waf();
    fires(&w, &head("GET", "/index.php~", &[]), None, 920100, true);
    fires(&w, &head("GET", "/config.yml~/x", &[]), None, 920100, true);
    quiet(&w, &head("GET", "/~alice/posts", &[]), None, 920100);
    quiet(&w, &head("GET", "/docs/a~b", &[]), None, 920100);
}

/// Phoenix's own traffic goes through the pass untouched: LiveView's
/// websocket upgrade and long-poll, a multipart upload, a JSON API call, a
/// `_csrf_token` form, with the headers browsers send.
#[test]
fn phoenix_traffic_passes_the_protocol_pass() {
    let w = waf();
    let browser = [
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.5"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("upgrade", "websocket"),
        ("origin", "https://app.example.com"),
        ("cookie", "_app_key=SFMyNTY.g3QAAAAB; _bext_node=n1.sig"),
    ];
    let ws = head("GET", "/live/websocket?_csrf_token=abc&vsn=2.0.0", &browser);
    quiet(
        &w,
        &ws,
        Some("GET /live/websocket?_csrf_token=abc&vsn=2.0.0 HTTP/1.1"),
        0,
    );
    let lp = head(
        "POST",
        "/live/longpoll?_csrf_token=abc&vsn=2.0.0",
        &[
            ("content-type", "application/x-ndjson"),
            ("content-length", "40"),
        ],
    );
    quiet(
        &w,
        &lp,
        Some("POST /live/longpoll?_csrf_token=abc&vsn=2.0.0 HTTP/1.1"),
        0,
    );
    let up = head(
        "POST",
        "/uploads",
        &[
            (
                "content-type",
                "multipart/form-data; boundary=----WebKitFormBoundaryx8",
            ),
            ("content-length", "1234"),
            ("expect", "100-continue"),
        ],
    );
    quiet(&w, &up, None, 0);
    let api = head(
        "PATCH",
        "/api/v1/posts/1",
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "20"),
            ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"),
        ],
    );
    quiet(&w, &api, Some("PATCH /api/v1/posts/1 HTTP/1.1"), 0);
    let del = head("DELETE", "/api/v1/posts/1", &[]);
    quiet(&w, &del, Some("DELETE /api/v1/posts/1 HTTP/1.1"), 0);
    let media = head(
        "GET",
        "/uploads/video.mp4",
        &[("range", "bytes=0-"), ("if-range", "\"33a64df5\"")],
    );
    quiet(&w, &media, None, 0);
}

/// Hostile heads stay linear: long values of the characters each scanner
/// loops on.
#[test]
fn hostile_values_are_bounded() {
    let w = waf();
    let nl = "%0a".repeat(20_000);
    let v = check(&w, &head("GET", &format!("/?q={nl}"), &[]), None);
    assert!(!w.blocks(&v), "{}", v.log_line());
    let semis = ";".repeat(50_000);
    let _ = check(
        &w,
        &head(
            "POST",
            "/",
            &[("content-type", &format!("text/plain{semis}"))],
        ),
        None,
    );
    let ranges = format!("bytes={}", "1-2,".repeat(20_000));
    let _ = check(&w, &get(&[("range", &ranges)]), None);
    let quotes = format!("a/b; x=\"{}", "\\\"".repeat(20_000));
    let _ = check(&w, &get(&[("content-type", &quotes)]), None);
}
