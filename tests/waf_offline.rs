//! Offline replay of the WAF dev corpus through `Waf` directly (no sockets):
//! a fast loop for rule work. The end-to-end score is `waf_corpus.rs`.
//! Run: cargo test --test waf_offline -- --ignored --nocapture
//!
//! `SHOW` selects what is listed, by file prefix: `SHOW=att` lists attack
//! misses, `SHOW=ben` / `SHOW=crs` list false positives (with the rule ids,
//! locations and excerpts that fired), and `SHOW=all` lists every verdict of
//! the selected files (for diffing two rule versions). False positives on
//! crs_negatives are always summarised per rule id.

use std::collections::BTreeMap;

use bext::waf::{Waf, WafPlan};

fn b64(s: &str) -> Vec<u8> {
    let mut out = vec![];
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// (head, body) for a record, completed like score.py does; None when the
/// request would not even parse (Pingora answers 400).
fn build(rec: &serde_json::Value) -> Option<(http::request::Parts, Vec<u8>)> {
    let (method, uri, headers, body): (String, String, Vec<(String, String)>, Vec<u8>) =
        if let Some(raw) = rec["raw"].as_str() {
            let raw = b64(raw);
            let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            let body = raw[split + 4..].to_vec();
            let mut lines = head.split("\r\n");
            let mut rl = lines.next()?.split(' ');
            let (m, u) = (rl.next()?.to_string(), rl.next()?.to_string());
            let hs = lines
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                })
                .collect();
            (m, u, hs, body)
        } else {
            let m = rec["method"].as_str().unwrap_or("GET").to_string();
            let u = rec["uri"].as_str().unwrap_or("/").to_string();
            let mut hs: Vec<(String, String)> = rec["headers"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let body = rec["body"].as_str().unwrap_or("").as_bytes().to_vec();
            let has = |hs: &Vec<(String, String)>, n: &str| {
                hs.iter().any(|(k, _)| k.eq_ignore_ascii_case(n))
            };
            if !has(&hs, "host") {
                hs.push(("Host".into(), "127.0.0.1:8080".into()));
            }
            if !has(&hs, "content-length")
                && !has(&hs, "transfer-encoding")
                && (!body.is_empty() || ["POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
            {
                hs.push(("Content-Length".into(), body.len().to_string()));
            }
            (m, u, hs, body)
        };
    let mut b = http::Request::builder()
        .method(method.as_str())
        .uri(uri.as_str());
    for (k, v) in &headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(()).ok()?;
    Some((req.into_parts().0, body))
}

/// Per-file tallies: records, blocked, per-category (blocked, total), and
/// for blocked records of a negative file, how often each rule id fired.
struct Tally {
    n: usize,
    blocked: usize,
    cats: BTreeMap<String, (usize, usize)>,
    fp_rules: BTreeMap<u32, usize>,
}

fn run(file: &str, waf: &Waf, show: bool, all: bool) -> Tally {
    let text = std::fs::read_to_string(bext_corpus(file)).expect("corpus file");
    let (mut n, mut blocked) = (0, 0);
    let mut cats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut fp_rules: BTreeMap<u32, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: serde_json::Value = serde_json::from_str(line).expect("json");
        n += 1;
        let cat = rec["category"].as_str().unwrap_or("?").to_string();
        let e = cats.entry(cat.clone()).or_default();
        e.1 += 1;
        let Some((head, body)) = build(&rec) else {
            if show && file == "attacks.jsonl" {
                println!("UNPARSABLE {}", rec["id"]);
            }
            continue;
        };
        let mut v = waf.inspect_head(&head);
        if !body.is_empty() {
            v.merge(waf.inspect_body(&head, &body, false));
        }
        let hit = waf.blocks(&v);
        if hit {
            blocked += 1;
            e.0 += 1;
        }
        let attack = file == "attacks.jsonl";
        if hit && !attack {
            for h in &v.hits {
                *fp_rules.entry(h.rule.id).or_default() += 1;
            }
        }
        let interesting = if attack { !hit } else { hit };
        if show && (interesting || all) {
            let tag = match (attack, hit) {
                (true, true) => "HIT",
                (true, false) => "MISS",
                (false, true) => "FP",
                (false, false) => "PASS",
            };
            println!(
                "{} {} {} pl={} | {}",
                tag,
                rec["id"],
                cat,
                rec["pl"],
                v.log_line()
            );
        }
    }
    Tally {
        n,
        blocked,
        cats,
        fp_rules,
    }
}

fn bext_corpus(f: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/waf_corpus")
        .join(f)
}

#[test]
#[ignore = "development loop; prints misses"]
fn offline_corpus_report() {
    let waf = Waf::new(WafPlan::default()).expect("rules");
    let show = std::env::var("SHOW").unwrap_or_default();
    let all = show.contains("all");
    for f in ["attacks.jsonl", "benign.jsonl", "crs_negatives.jsonl"] {
        let t = run(f, &waf, show.contains(&f[..3]), all);
        let (n, b) = (t.n, t.blocked);
        println!("== {f}: {b}/{n} = {:.3}", b as f64 / n as f64);
        if f == "attacks.jsonl" {
            for (c, (hit, tot)) in t.cats {
                println!("   {c:16} {hit}/{tot} = {:.3}", hit as f64 / tot as f64);
            }
        } else if !t.fp_rules.is_empty() {
            let mut by: Vec<_> = t.fp_rules.into_iter().collect();
            by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let list: Vec<String> = by.iter().map(|(id, c)| format!("{id}x{c}")).collect();
            println!("   rules in false positives: {}", list.join(" "));
        }
    }
}
