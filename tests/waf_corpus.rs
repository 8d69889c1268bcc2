//! CI gate on the WAF dev corpus: bext in block mode in front of the kit's
//! Python origin, scored by the kit's `score.py` (both copied into
//! `tests/waf_corpus/`). Fails below the targets of issue 6.

// The shared harness trips a newer clippy lint; it is not ours to rewrite.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, repo_path, Bext};

/// Targets of issue 6 (see the README, "Web application firewall"): every
/// one is met, so each is now a floor the rules must not fall below. The
/// detection floor sits a little under the measured 0.978 to lock in the
/// second detection pass without making the test flaky on rule tweaks.
const MIN_DETECTION: f64 = 0.96;
const MAX_FP_BENIGN: f64 = 0.01;
const MAX_FP_CRS_NEG: f64 = 0.05;
const MIN_CATEGORY: f64 = 0.75;

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in summary line: {line}"))
}

#[tokio::test]
async fn score_py_meets_the_targets_on_the_dev_corpus() {
    let dir = repo_path("tests/waf_corpus");
    let origin_port = free_port();
    let _origin = Kill(
        Command::new("python3")
            .arg(dir.join("backend.py"))
            .args(["--port", &origin_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is required for the WAF corpus test"),
    );
    let port = free_port();
    let bext = Bext::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
[upstreams.app]
nodes = ["127.0.0.1:{origin_port}"]
[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
websocket = true
[waf]
mode = "block"
"#
    ))
    .await;
    // The origin is a separate process; wait until it accepts connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", origin_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "backend.py did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(dir.join("score.py"))
            .args(["--target", &format!("http://127.0.0.1:{port}")])
            .args([
                "--attacks",
                dir.join("attacks.jsonl").to_str().unwrap_or_default(),
            ])
            .args([
                "--benign",
                dir.join("benign.jsonl").to_str().unwrap_or_default(),
            ])
            .args([
                "--negatives",
                dir.join("crs_negatives.jsonl").to_str().unwrap_or_default(),
            ])
            .args(["--concurrency", "8", "--timeout", "20"])
            .output()
            .expect("run score.py")
    })
    .await
    .expect("score.py task");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    assert!(
        out.status.success(),
        "score.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .rev()
        .find(|l| l.starts_with("detection="))
        .expect("summary line");
    let (det, fpb, fpn) = (
        metric(summary, "detection"),
        metric(summary, "fp_benign"),
        metric(summary, "fp_crs_neg"),
    );
    assert!(det >= MIN_DETECTION, "detection {det} < {MIN_DETECTION}");
    assert!(fpb <= MAX_FP_BENIGN, "fp_benign {fpb} > {MAX_FP_BENIGN}");
    assert!(fpn <= MAX_FP_CRS_NEG, "fp_crs_neg {fpn} > {MAX_FP_CRS_NEG}");
    // Per-category detection: the rows of the attack table, up to its ALL row.
    let attack_table = text.split("== attack").nth(1).expect("attack table");
    for row in attack_table.lines().skip(2) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        if cols.first() == Some(&"ALL") || cols.len() != 6 {
            break;
        }
        let rate: f64 = cols[5].parse().expect("rate column");
        // Issue 16: DELETE is in the default methods (Phoenix JSON APIs), so
        // CRS's DELETE test (911100-6) passes by design; the other two of
        // the three method tests (TEST, FOO) must still be refused.
        let floor = if cols[0] == "method" {
            0.66
        } else {
            MIN_CATEGORY
        };
        assert!(rate >= floor, "category {} at {rate} < {floor}", cols[0]);
    }
    drop(bext);
}
