//! `conf/grafana/bext.json` queries only metrics a real bext exports.

use std::collections::BTreeSet;

use crate::common::{client, free_port, repo_path, Bext, StubOrigin};
use crate::otlp_receiver::OtlpReceiver;
use crate::scrape::{parse, scrape_until};

/// Metric names in a PromQL expression: identifiers starting with `bext_`.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("bext_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_exists_in_a_scrape() {
    let text = std::fs::read_to_string(repo_path("conf/grafana/bext.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut wanted = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            wanted.extend(names_in(t["expr"].as_str().unwrap()));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            wanted.extend(names_in(q));
        }
    }
    assert!(wanted.len() >= 15, "{wanted:?}");

    let receiver = OtlpReceiver::start();
    let origin = StubOrigin::start("n0").await;
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:{}"]

[upstreams.phoenix]
nodes = [{{ addr = "{}", id = "n0" }}]

[[route_rules]]
pattern = "/*"
proxy = "phoenix"

[telemetry]
access_log = "access.log"
otlp_endpoint = "{}"
sample_ratio = 0.5
"#,
        free_port(),
        origin.addr(),
        receiver.endpoint()
    );
    let bext = Bext::start(&toml).await;
    let c = client();
    assert_eq!(c.get(bext.url("/")).send().await.unwrap().status(), 200);
    let base = format!("http://{}", bext.addr());
    let text = scrape_until(&c, &base, |s| {
        wanted.iter().all(|w| {
            s.iter()
                .any(|x| &x.name == w || x.name.starts_with(&format!("{w}_")))
        })
    })
    .await;
    let s = parse(&text);
    let have: BTreeSet<String> = s.iter().map(|x| x.name.clone()).collect();
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries unknown metrics: {missing:?}"
    );
}
