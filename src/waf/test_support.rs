//! Request builders and verdict checks shared by the WAF's unit-test files.

use super::*;

pub fn waf() -> Waf {
    Waf::new(WafPlan::default()).expect("rules compile")
}

/// Builds a request head for `app.example.com`; `headers` are (name, value) pairs.
pub fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "app.example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("valid request").into_parts().0
}

/// The verdict on a whole request (head and, if any, body).
pub fn verdict(w: &Waf, h: &http::request::Parts, body: &[u8]) -> Verdict {
    let mut v = w.inspect_head(h);
    if !body.is_empty() {
        v.merge(w.inspect_body(h, body, false));
    }
    v
}

/// A POST of `body` with its Content-Type and Content-Length.
fn post(w: &Waf, path: &str, content_type: &str, body: &str) -> Verdict {
    let len = body.len().to_string();
    let h = head(
        "POST",
        path,
        &[("content-type", content_type), ("content-length", &len)],
    );
    verdict(w, &h, body.as_bytes())
}

/// A url-encoded form post of `body`.
pub fn form(w: &Waf, body: &str) -> Verdict {
    post(w, "/post", "application/x-www-form-urlencoded", body)
}

/// A JSON post of `body`.
pub fn json(w: &Waf, body: &str) -> Verdict {
    post(w, "/api/items", "application/json", body)
}

pub fn passes(w: &Waf, v: Verdict, what: &str) {
    assert!(!w.blocks(&v), "false positive on {what}: {}", v.log_line());
}

pub fn caught(w: &Waf, v: Verdict, what: &str) {
    assert!(w.blocks(&v), "missed {what}");
}
