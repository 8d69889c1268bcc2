//! Detector unit tests: attacks that must score, near-miss benign strings
//! that must not, and bad input that must stay bounded.

use super::test_support::waf;
use super::*;

fn get(uri: &str) -> http::request::Parts {
    http::Request::get(uri)
        .header("host", "app.example.com")
        .body(())
        .unwrap()
        .into_parts()
        .0
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

fn blocked(w: &Waf, q: &str) -> bool {
    w.blocks(&query_score(w, q))
}

fn body_verdict(w: &Waf, ct: &str, body: &[u8]) -> Verdict {
    let head = post(ct);
    w.inspect_body(&head, body, false)
}

#[test]
fn sqli_attacks_and_near_misses() {
    let w = waf();
    for a in [
        "1%27%20or%201%3D1--",
        "x%27%20UNION%20ALL%20SELECT%20NULL--",
        "1%3B%20waitfor%20delay%20%270%3A0%3A5%27",
        "BENCHMARK(5000000,MD5(1))",
        "%27%20AND%20extractvalue(1,concat(0x5c,version()))--",
        "%5B%24ne%5D",
    ] {
        assert!(blocked(&w, a), "missed {a}");
    }
    for b in [
        "how+to+insert+a+table",
        "select",
        "update+profile+picture",
        "The+union+of+two+sets",
        "O%27Connell+St.",
    ] {
        assert!(!blocked(&w, b), "false positive on {b}");
    }
}

#[test]
fn xss_attacks_and_near_misses() {
    let w = waf();
    for a in [
        "%3Cscript%3Ealert(1)%3C/script%3E",
        "%3Csvg/onload%3Dalert(1)%3E",
        "javascript:alert(1)",
        "%EF%BC%9Cscript%EF%BC%9E",
    ] {
        assert!(blocked(&w, a), "missed {a}");
    }
    for b in ["a+%3C+b+and+c+%3E+d", "online+shopping", "only+%3D+once"] {
        assert!(!blocked(&w, b), "false positive on {b}");
    }
}

#[test]
fn rce_lfi_php_java_attacks_and_near_misses() {
    let w = waf();
    for a in [
        "%3Bcat%20/etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%24(id)",
        "%3C%3Fphp%20system(%24_GET%5Bc%5D)%3B",
        "%24%7Bjndi%3Aldap%3A//x/a%7D",
        "java.lang.Runtime",
        "w%27h%27o%27a%27m%27i%3B",
    ] {
        assert!(blocked(&w, a), "missed {a}");
    }
    for b in [
        "cats+-dogs",
        "node",
        "export",
        "time+management",
        "50%25+off",
        "best+laptop+2024",
    ] {
        assert!(!blocked(&w, b), "false positive on {b}");
    }
}

#[test]
fn prose_about_sql_in_json_passes() {
    let w = waf();
    let body = br#"{"post":{"body":"If you have ever written `SELECT * FROM users where id = $1` you know why. Run `mix phx.server` and open http://localhost:4000.","tags":["node","import"]}}"#;
    let v = body_verdict(&w, "application/json", body);
    assert!(!w.blocks(&v), "{}", v.log_line());
}

#[test]
fn json_keys_and_multipart_filenames_are_inspected() {
    let w = waf();
    assert!(w.blocks(&body_verdict(
        &w,
        "application/json",
        br#"{"__proto__":{"x":1}}"#
    )));
    let mp = b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"shell.php\"\r\n\r\n<?php\r\n--b--\r\n";
    assert!(w.blocks(&body_verdict(&w, "multipart/form-data; boundary=b", mp)));
}

#[test]
fn scanner_method_and_protocol_rules() {
    let w = waf();
    let ua = http::Request::get("/")
        .header("user-agent", "sqlmap/1.7")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert!(w.blocks(&w.inspect_head(&ua)));
    // An HTTP/1.1 head needs its Host (rule 920250).
    let with_ua = |ua: &str| {
        http::Request::get("/")
            .header("host", "app.example.com")
            .header("user-agent", ua)
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    // Matched case-insensitively anywhere in the value.
    let v = w.inspect_head(&with_ua("Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)"));
    assert!(
        v.hits.iter().any(|h| h.rule.id == 913010),
        "{}",
        v.log_line()
    );
    let browser = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    assert!(!w.blocks(&w.inspect_head(&with_ua(browser))));
    let m = http::Request::builder()
        .method("TRACK")
        .uri("/")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert!(w.blocks(&w.inspect_head(&m)));
    let smug = http::Request::post("/")
        .header("content-length", "5")
        .header("transfer-encoding", "chunked")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert!(w.blocks(&w.inspect_head(&smug)));
}

#[test]
fn bad_input_is_bounded_and_never_panics() {
    let w = waf();
    // Deeply nested JSON: an error after max_json_depth, no recursion.
    let deep = "[".repeat(200_000);
    let v = body_verdict(&w, "application/json", deep.as_bytes());
    assert!(v.hits.iter().any(|h| h.rule.id == 920120));
    // 10k arguments: counted, then flagged, not all inspected.
    let many = (0..10_000)
        .map(|i| format!("a{i}=x"))
        .collect::<Vec<_>>()
        .join("&");
    let v = body_verdict(&w, "application/x-www-form-urlencoded", many.as_bytes());
    assert!(v.hits.iter().any(|h| h.rule.id == 920140));
    // Invalid UTF-8 everywhere.
    let junk: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    for ct in [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=z",
    ] {
        let _ = body_verdict(&w, ct, &junk);
    }
    // Multipart with no closing boundary.
    let open = b"--z\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated";
    let v = body_verdict(&w, "multipart/form-data; boundary=z", open);
    assert!(v.hits.iter().any(|h| h.rule.id == 920120));
    // Regex-pathological shapes: long runs that defeat naive backtracking.
    for s in [
        "'".repeat(100_000),
        "<a ".repeat(30_000),
        "$((".repeat(30_000),
        "/*".repeat(50_000),
        "%25".repeat(50_000),
    ] {
        let _ = body_verdict(&w, "text/plain", s.as_bytes());
        let _ = body_verdict(
            &w,
            "application/x-www-form-urlencoded",
            format!("q={s}").as_bytes(),
        );
    }
}

/// The issue's hostile bodies, at the full 1 MiB inspection limit, through
/// every detector (regex set, tokenizers, URL parser, Phoenix frames): each
/// finishes, and in bounded time (a generous bound for a debug build on a
/// shared machine; linear work takes a fraction of it).
#[test]
fn hostile_one_mib_bodies_are_inspected_in_bounded_time() {
    let w = waf();
    let mib = 1 << 20;
    let quotes = "'\"`(".repeat(mib / 4);
    let nested_json = {
        let mut s = String::from("[\"");
        while s.len() < mib - 8 {
            s.push_str("\\\"'");
        }
        s.push_str("\"]");
        s
    };
    let deep_json = "{\"a\":[".repeat(mib / 7);
    let params = (0..10_000)
        .map(|i| format!("p{i}=%27%22{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let frames = (0..10_000)
        .map(|i| format!("[\"{i}\",\"{i}\",\"lv:phx-F\",\"event\",{{\"type\":\"form\",\"value\":\"a=http%3A%2F%2F127.0.0.1%2F&b='\"\"}}]"))
        .collect::<Vec<_>>()
        .join("\n");
    let urls = "http://".repeat(mib / 7);
    let cases: [(&str, &str, &[u8]); 7] = [
        ("/submit", "text/plain", quotes.as_bytes()),
        ("/submit", "application/json", nested_json.as_bytes()),
        ("/submit", "application/json", deep_json.as_bytes()),
        (
            "/submit",
            "application/x-www-form-urlencoded",
            params.as_bytes(),
        ),
        ("/live/longpoll", "application/x-ndjson", frames.as_bytes()),
        (
            "/live/longpoll",
            "application/x-ndjson",
            deep_json.as_bytes(),
        ),
        (
            "/submit",
            "application/x-www-form-urlencoded",
            urls.as_bytes(),
        ),
    ];
    for (path, ct, body) in cases {
        let h = http::Request::post(path)
            .header("host", "app.example.com")
            .header("content-type", ct)
            .header("content-length", body.len().to_string())
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let t = std::time::Instant::now();
        let _ = w.inspect_body(&h, &body[..body.len().min(mib)], false);
        let took = t.elapsed();
        println!("{path} {ct} {} bytes: {took:?}", body.len());
        assert!(
            took < std::time::Duration::from_secs(20),
            "{ct} body took {took:?}"
        );
    }
}

#[test]
fn exclusions_remove_hits() {
    let mut plan = WafPlan::default();
    plan.exclusions.push(exclusions::Exclusion {
        rules: vec![exclusions::RuleSelector::Category(Category::Sqli)],
        path: None,
        args: vec!["q".into()],
    });
    let w = Waf::new(plan).unwrap();
    assert!(!w.blocks(&query_score(&w, "1%27%20or%201%3D1--")));
}

/// p99 of inspecting a 1 MiB JSON body (release build recommended):
/// cargo test --release --lib waf::tests::bench_1mib_json -- --ignored --nocapture
#[test]
#[ignore = "measurement, not a check"]
fn bench_1mib_json() {
    let off = Waf::new(WafPlan {
        tokenizers: false,
        ..WafPlan::default()
    })
    .unwrap();
    for (what, w) in [("all detectors", waf()), ("without libinjection", off)] {
        print!("{what}: ");
        bench_json(&w);
    }
}

fn bench_json(w: &Waf) {
    let mut body = String::from("{\"items\":[");
    let mut i = 0;
    while body.len() < (1 << 20) - 200 {
        body.push_str(&format!("{{\"id\":{i},\"title\":\"Post number {i} about Phoenix LiveView\",\"tags\":[\"elixir\",\"web\"]}},"));
        i += 1;
    }
    body.push_str("{}]}");
    let head = post("application/json");
    let mut times = vec![];
    for _ in 0..50 {
        let t = std::time::Instant::now();
        let v = w.inspect_body(&head, body.as_bytes(), false);
        times.push(t.elapsed());
        assert!(!w.blocks(&v), "{}", v.log_line());
    }
    times.sort();
    println!(
        "1 MiB JSON: p50={:?} p99={:?} max={:?}",
        times[25],
        times[49 * 99 / 100],
        times[49]
    );
}

/// Phoenix's generators route every REST verb (`phx.gen.json` resources take
/// real DELETE / PUT / PATCH from API clients): the default list takes them.
/// Tunnel and trace methods, and names no Phoenix route answers, stay out.
#[test]
fn rest_verbs_pass_and_tunnel_trace_and_unknown_methods_are_refused() {
    let w = waf();
    let with = |m: &str| {
        http::Request::builder()
            .method(m)
            .uri("/api/v1/posts/42")
            .header("host", "app.example.com")
            .header("content-type", "application/json")
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    for m in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let v = w.inspect_head(&with(m));
        assert!(!w.blocks(&v), "{m} refused: {}", v.log_line());
    }
    for m in ["CONNECT", "TRACE", "TRACK", "PROPFIND", "DEBUG", "FOO"] {
        let v = w.inspect_head(&with(m));
        assert!(
            v.hits.iter().any(|h| h.rule.id == 911010),
            "{m} allowed: {}",
            v.log_line()
        );
    }
}

/// Command injection read as the shell reads it (rule 932100): evasions and
/// commands the regex lists never named, next to prose that must pass.
#[test]
fn shell_tokenizer_catches_evasions_and_unlisted_commands() {
    let w = waf();
    for q in [
        "x%3B%2F%3F%3F%3F%2F%3Fname%20-a",
        "x%3B%24%27%5Cx77%5Cx68%5Cx6f%5Cx61%5Cx6d%5Cx69%27",
        "x%3Bun%249ame%20-a",
        "x%3B%2Fu%3Fr%2Fb%3Fn%2Fid",
        "x%7C%7Cgetent%20passwd",
        "x%3Bcompgen%20-c",
        "x%0Adeclare%20-p",
        "x%3Bsource%20%2Ftmp%2Fx",
        "x%3Blsattr%20-a",
        "x%3Bdmesg",
        "x%3Bjournalctl%20-n5",
        "x%26dir%20C%3A%5C",
    ] {
        let v = w.inspect_head(&get(&format!("/s?q={q}")));
        assert!(w.blocks(&v), "missed {q}");
    }
    for q in [
        "Tom+%26+Jerry%3B+more+than+friends",
        "see+%60README%60+for+details",
        "a%3B+dir+of+the+film",
        "type=image%2Fpng%3Bbase64%2CiVBORw0KGgo%3D",
        "Henry+VI%3B+cat+lovers+unite",
    ] {
        let v = w.inspect_head(&get(&format!("/s?q={q}")));
        assert!(!w.blocks(&v), "false positive on {q}: {}", v.log_line());
    }
}
