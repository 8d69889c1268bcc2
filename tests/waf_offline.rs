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

/// Method, target, headers, body and raw request line of a record.
type Fields = (String, String, Vec<(String, String)>, Vec<u8>, Vec<u8>);

/// (head, raw request line, body) for a record, completed like score.py
/// does; None when the request would not even parse (Pingora answers 400).
/// The raw line is what Pingora hands the WAF as the HTTP/1 head.
fn build(rec: &serde_json::Value) -> Option<(http::request::Parts, Vec<u8>, Vec<u8>)> {
    let (method, uri, headers, body, line): Fields = if let Some(raw) = rec["raw"].as_str() {
        let raw = b64(raw);
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap_or(split);
        let line = raw[..line_end].to_vec();
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
        (m, u, hs, body, line)
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
        let has =
            |hs: &Vec<(String, String)>, n: &str| hs.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has(&hs, "host") {
            hs.push(("Host".into(), "127.0.0.1:8080".into()));
        }
        if !has(&hs, "content-length")
            && !has(&hs, "transfer-encoding")
            && (!body.is_empty() || ["POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
        {
            hs.push(("Content-Length".into(), body.len().to_string()));
        }
        let line = format!("{m} {u} HTTP/1.1").into_bytes();
        (m, u, hs, body, line)
    };
    let mut b = http::Request::builder()
        .method(method.as_str())
        .uri(uri.as_str());
    for (k, v) in &headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(()).ok()?;
    Some((req.into_parts().0, line, body))
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
        let Some((head, line, body)) = build(&rec) else {
            if show && file == "attacks.jsonl" {
                println!("UNPARSABLE {}", rec["id"]);
            }
            continue;
        };
        let mut v = waf.inspect_head_raw(&head, Some(&line));
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

/// One attack record's outcome, for the fold splits.
struct Outcome {
    id: String,
    rule: Option<u64>,
    blocked: bool,
}

fn attack_outcomes(waf: &Waf) -> Vec<Outcome> {
    let text = std::fs::read_to_string(bext_corpus("attacks.jsonl")).expect("corpus file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let rec: serde_json::Value = serde_json::from_str(line).expect("json");
            let blocked = build(&rec).is_some_and(|(head, line, body)| {
                let mut v = waf.inspect_head_raw(&head, Some(&line));
                if !body.is_empty() {
                    v.merge(waf.inspect_body(&head, &body, false));
                }
                waf.blocks(&v)
            });
            Outcome {
                id: rec["id"].as_str().unwrap_or("").to_string(),
                rule: rec["rule"].as_u64(),
                blocked,
            }
        })
        .collect()
}

/// FNV-1a: a stable hash, so a record's fold never depends on file order or
/// on the std hasher's seed.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Detection per fold: (records, blocked) for each of `k` folds, the fold of
/// a record chosen by `key`.
fn folds(out: &[Outcome], k: u64, key: impl Fn(&Outcome) -> String) -> Vec<(usize, usize)> {
    let mut f = vec![(0usize, 0usize); usize::try_from(k).expect("k")];
    for o in out {
        let i = usize::try_from(fnv(&key(o)) % k).expect("fold");
        f[i].0 += 1;
        f[i].1 += usize::from(o.blocked);
    }
    f
}

fn report(name: &str, f: &[(usize, usize)]) -> f64 {
    let mut worst = 1.0f64;
    for (i, (n, b)) in f.iter().enumerate() {
        let rate = *b as f64 / (*n).max(1) as f64;
        worst = worst.min(rate);
        println!("   {name} fold {i}: {b}/{n} = {rate:.3}");
    }
    println!("   {name} worst fold: {worst:.3}");
    worst
}

/// The test-case id without its stage suffix (`942100-7-s2` → `942100-7`):
/// the stages of one test belong to one fold.
fn test_case(o: &Outcome) -> String {
    match o.id.rfind("-s") {
        Some(i) if o.id[i + 2..].bytes().all(|b| b.is_ascii_digit()) => o.id[..i].to_string(),
        _ => o.id.clone(),
    }
}

/// The CRS rule of a record (its id's first part when `rule` is null).
fn crs_rule(o: &Outcome) -> String {
    o.rule
        .map(|r| r.to_string())
        .unwrap_or_else(|| o.id.split('-').next().unwrap_or("").to_string())
}

/// k-fold generalization report over the dev attack corpus, split once by
/// test case and once by whole CRS rule id (a rule family never seen).
///
/// bext's rules are written by hand, not trained, so there is nothing to
/// refit per fold: the code is frozen and each fold is scored as it stands.
/// What the split shows is how even detection is across unseen-looking
/// slices of the corpus; a rule tuned to a handful of corpus lines shows up
/// as one weak fold, and the by-rule split puts whole CRS rules (and every
/// variant of their payloads) out together. Run with `K=10` for ten folds.
#[test]
#[ignore = "report; the CI gate is kfold_worst_fold_by_test_case"]
fn kfold_report() {
    let waf = Waf::new(WafPlan::default()).expect("rules");
    let out = attack_outcomes(&waf);
    let k = std::env::var("K")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5u64);
    println!("== k-fold ({k}) by test case");
    report("case", &folds(&out, k, test_case));
    println!("== k-fold ({k}) by CRS rule id");
    let by_rule = folds(&out, k, crs_rule);
    report("rule", &by_rule);
    let mut rules: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in &out {
        let e = rules.entry(crs_rule(o)).or_default();
        e.0 += 1;
        e.1 += usize::from(o.blocked);
    }
    let weak: Vec<String> = rules
        .iter()
        .filter(|(_, (n, b))| b < n)
        .map(|(r, (n, b))| format!("{r}:{b}/{n}"))
        .collect();
    println!("   CRS rules with misses: {}", weak.join(" "));
}

/// CI gate (issue #16): over 5 folds by test case, the worst fold's
/// detection stays at or above 0.93.
#[test]
fn kfold_worst_fold_by_test_case() {
    let waf = Waf::new(WafPlan::default()).expect("rules");
    let out = attack_outcomes(&waf);
    let f = folds(&out, 5, test_case);
    let worst = report("case", &f);
    assert!(worst >= 0.93, "worst fold by test case {worst:.3} < 0.93");
}
