//! The access log: JSON lines with redaction, nginx's `combined` format,
//! and reopening the file on SIGUSR1 after logrotate renamed it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{client, Bext, StubOrigin};
use crate::support::one_node;

fn config(origin: std::net::SocketAddr, format: &str) -> String {
    let telemetry =
        format!("[telemetry]\naccess_log = \"access.log\"\naccess_log_format = \"{format}\"\n");
    one_node(origin, "", &telemetry)
}

/// Waits until `path` has at least `n` lines; returns them.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} line(s), expected {n}",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn json_lines_carry_the_request_and_redact_secrets() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr(), "json")).await;
    let c = client();
    let r = c
        .get(bext.url("/login?password=hunter2&next=%2Fhome&_csrf_token=abc&TOKEN=t1"))
        .header("user-agent", "log-test/1.0")
        .header("referer", "https://example.com/")
        .header("cookie", "_app_key=SESSIONSECRET")
        .header("authorization", "Bearer AUTHSECRET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r = c
        .get(bext.url("/q?x=<script>alert(1)</script>"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let log = bext.dir().join("access.log");
    let all = lines(&log, 2);
    let line = all
        .iter()
        .find(|l| l.contains("/login"))
        .expect("login line");
    for secret in ["hunter2", "SESSIONSECRET", "AUTHSECRET", "abc", "t1"] {
        assert!(!line.contains(secret), "{secret} leaked: {line}");
    }
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/login");
    assert_eq!(
        v["query"],
        "password=[REDACTED]&next=%2Fhome&_csrf_token=[REDACTED]&TOKEN=[REDACTED]"
    );
    assert_eq!(v["status"], 200);
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["route"], "/*");
    assert_eq!(v["upstream_node"], "n0");
    assert_eq!(v["upstream_addr"], origin.addr().to_string());
    assert_eq!(v["user_agent"], "log-test/1.0");
    assert_eq!(v["referer"], "https://example.com/");
    assert!(v["bytes_sent"].as_u64().unwrap() > 0);
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    let blocked = all.iter().find(|l| l.contains("\"/q\"")).expect("waf line");
    let b: serde_json::Value = serde_json::from_str(blocked).unwrap();
    assert_eq!(b["status"], 403);
    assert_eq!(b["waf"], "block");
    assert!(b["waf_rules"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(b["waf_score"].as_u64().is_some_and(|s| s >= 5), "{b}");
    assert!(v.get("waf_score").is_none(), "no score on a clean request");
    // A blocked attack is the client's doing: no ERROR line for it.
    assert!(
        !bext.stderr().contains("ERROR"),
        "error log: {}",
        bext.stderr()
    );
}

#[tokio::test]
async fn combined_format_matches_nginx_and_sigusr1_reopens_the_file() {
    let origin = StubOrigin::start("n0").await;
    let mut bext = Bext::start(&config(origin.addr(), "combined")).await;
    let c = client();
    let r = c
        .get(bext.url("/posts/1?password=x"))
        .header("user-agent", "Mozilla/5.0 \"quoted\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = bext.dir().join("access.log");
    let first = lines(&log, 1);
    // nginx: $remote_addr - $remote_user [$time_local] "$request" $status
    // $body_bytes_sent "$http_referer" "$http_user_agent"
    let combined = regex::Regex::new(
        r#"^(\S+) - (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "([A-Z]+) (\S+) (HTTP/[0-9.]+)" (\d{3}) (\d+) "([^"]*)" "((?:[^"\\]|\\x[0-9A-Fa-f]{2})*)"$"#,
    )
    .unwrap();
    let caps = combined
        .captures(&first[0])
        .unwrap_or_else(|| panic!("not nginx combined: {}", first[0]));
    assert_eq!(&caps[1], "127.0.0.1");
    assert_eq!(&caps[4], "GET");
    assert_eq!(&caps[5], "/posts/1?password=[REDACTED]");
    assert_eq!(&caps[7], "200");
    assert_eq!(&caps[9], "-");
    assert_eq!(&caps[10], "Mozilla/5.0 \\x22quoted\\x22");

    // logrotate: rename, then SIGUSR1 (its postrotate), then new lines go to a new file.
    let rotated = bext.dir().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(bext.pid() as i32, libc::SIGUSR1);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.exists() {
        assert!(Instant::now() < deadline, "access.log was not reopened");
        let r = c.get(bext.url("/after")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.get(bext.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let fresh = lines(&log, 1);
    assert!(fresh.iter().all(|l| combined.is_match(l)));
    assert!(fresh.iter().any(|l| l.contains("/after")));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/posts/1"));
    assert!(bext.is_running(), "SIGUSR1 must not stop bext");
}

/// Clients that close, reset or garble their connection are their own
/// doing: the error log stays for bext's faults, and bext keeps serving.
#[tokio::test]
async fn broken_client_connections_do_not_fill_the_error_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&one_node(origin.addr(), "", "")).await;
    let send = |bytes: &'static [u8], read: bool| {
        let addr = bext.addr();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            if read {
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    s.read_to_end(&mut buf),
                )
                .await;
            }
        }
    };
    for _ in 0..5 {
        // Half a request head, then gone (a closed tab, a health check).
        send(b"GET /a HTTP/1.1\r\nHost: a", false).await;
        // A TLS hello on the plain port.
        send(
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n",
            true,
        )
        .await;
        // A malformed header line.
        send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", true).await;
        // Gone before the response, and a body cut short.
        send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n", false).await;
        send(
            b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc",
            false,
        )
        .await;
    }
    let r = client().get(bext.url("/still")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Give bext the time to log what it would log.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let log = bext.stderr();
    assert!(!log.contains("ERROR"), "error log: {log}");
}
