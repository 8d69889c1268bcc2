//! Reading a Prometheus text exposition in tests: samples by name and labels,
//! and `promtool check metrics` on a real scrape.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], parse_labels(&head[i + 1..head.len() - 1])),
            None => (head, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 2..];
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() {
            if bytes[end] == b'\\' {
                end += 2;
                continue;
            }
            if bytes[end] == b'"' {
                break;
            }
            end += 1;
        }
        m.insert(key, after[..end].to_string());
        rest = &after[(end + 1).min(after.len())..];
    }
    m
}

/// The value of the sample `name` whose labels include every pair of `labels`;
/// panics with the candidates when there is not exactly one.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = matching(samples, name, labels);
    assert_eq!(
        found.len(),
        1,
        "expected one {name}{labels:?}, found {found:#?}\nall {name}: {:#?}",
        samples
            .iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()
    );
    found[0].value
}

/// Like [`value`], but 0 when there is no such sample.
pub fn value_or_zero(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(samples, name, labels)
        .first()
        .map_or(0.0, |s| s.value)
}

pub fn matching<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// Runs `promtool check metrics` on `text`; returns what it printed (empty = clean).
pub fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() || !s.is_empty(),
        "promtool failed without output"
    );
    s
}

/// `GET /__bext/metrics` on `base`.
pub async fn scrape(c: &reqwest::Client, base: &str) -> String {
    let r = c
        .get(format!("{base}/__bext/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    let ctype = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    r.text().await.unwrap()
}

/// Scrapes until `done` holds for the samples (or 10 s pass): a request is
/// recorded once its response is out, so a scrape right after it may miss it.
pub async fn scrape_until(
    c: &reqwest::Client,
    base: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(c, base).await;
        if done(&parse(&text)) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
