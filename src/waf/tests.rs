//! Detector unit tests: attacks that must score, near-miss benign strings
//! that must not, and bad input that must stay bounded.

use super::*;

fn waf() -> Waf {
    Waf::new(WafPlan::default()).expect("rules compile")
}

fn get(uri: &str) -> http::request::Parts {
    http::Request::get(uri).header("host", "app.example.com").body(()).unwrap().into_parts().0
}

fn post(ct: &str) -> http::request::Parts {
    http::Request::post("/submit")
        .header("host", "app.example.com")
        .header("content-type", ct)
        .header("content-length", "1")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn query_score(w: &Waf, q: &str) -> Verdict {
    let uri = format!("/search?q={}", q);
    w.inspect_head(&get(&uri))
}

#[test]
fn rules_compile() {
    waf();
}
