//! `bext check`, `bext serve -t` and `bext version`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, repo_path, run_bext, BEXT};

fn valid_config() -> String {
    valid_config_on(free_port())
}

fn valid_config_on(port: u16) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
grace_period = "30s"
shutdown_timeout = "5s"
client_timeout = "60s"
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]

[upstreams.phoenix]
nodes = ["127.0.0.1:4000", "127.0.0.1:4001"]
connect_timeout = "2s"
read_timeout = "30s"
write_timeout = "30s"
idle_timeout = "60s"

[upstreams.assets]
nodes = ["127.0.0.1:4100"]

[[route_rules]]
pattern = "/live/*"
proxy = "phoenix"
cache = false
websocket = true
websocket_idle_timeout = "300s"

[[route_rules]]
pattern = "/static/*"
host = "cdn.example.com"
proxy = "assets"
headers = {{ "X-Frame-Options" = "DENY" }}

[[route_rules]]
pattern = "/*"
proxy = "phoenix"
timeout = "60s"
"#
    )
}

fn check(path: &Path) -> (i32, String, String) {
    let out = run_bext(&["check", "-c", path.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `toml` and asserts `bext check` fails with a `FILE: KEY:` line.
/// `word`, when given, must appear (case-insensitively) in that line: a loose
/// check on the reason (a keyword, or the offending value), never its wording.
fn assert_check_error(toml: &str, key: &str, word: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bext.toml");
    std::fs::write(&path, toml).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(
        code, 1,
        "expected exit 1 for bad {key}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let prefix = format!("{}: {}:", path.display(), key);
    let line = stderr
        .lines()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in stderr:\n{stderr}"));
    if let Some(word) = word {
        assert!(
            line.to_ascii_lowercase().contains(word),
            "error line for {key} should mention {word:?}: {line}"
        );
    }
}

fn replace_once(s: &str, from: &str, to: &str) -> String {
    assert!(s.contains(from), "template lacks {from:?}");
    s.replacen(from, to, 1)
}

#[test]
fn check_accepts_valid_config_and_summarises_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bext.toml");
    std::fs::write(&path, valid_config()).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in [
        "/live/*",
        "/static/*",
        "/*",
        "phoenix",
        "assets",
        "127.0.0.1:4000",
        "127.0.0.1:4001",
        "127.0.0.1:4100",
    ] {
        assert!(
            stdout.contains(needle),
            "summary lacks {needle:?}:\n{stdout}"
        );
    }
}

#[test]
fn check_accepts_shipped_configs() {
    for rel in ["conf/bext.example.toml", "conf/phoenix.toml"] {
        let path = repo_path(rel);
        assert!(path.exists(), "{rel} is not shipped");
        // The example's sticky secret comes from the environment, as it should in production.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bext"))
            .args(["check", "-c", path.to_str().unwrap()])
            .env("BEXT_STICKY_SECRET", "an-example-secret-of-32-bytes!!!")
            .output()
            .unwrap();
        let (code, stdout, stderr) = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(code, 0, "{rel}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("/live/*"), "{rel} summary:\n{stdout}");
        assert!(stdout.contains("phoenix"), "{rel} summary:\n{stdout}");
    }
}

#[test]
fn check_rejects_unknown_keys() {
    let valid = valid_config();
    assert_check_error(
        &replace_once(&valid, "threads = 1", "threads = 1\nunknown_thing = 1"),
        "server.unknown_thing",
        None,
    );
    assert_check_error(
        &replace_once(
            &valid,
            "connect_timeout = \"2s\"",
            "connect_timeout = \"2s\"\nconect_timeout = \"2s\"",
        ),
        "upstreams.phoenix.conect_timeout",
        None,
    );
    assert_check_error(
        &replace_once(
            &valid,
            "host = \"cdn.example.com\"",
            "host = \"cdn.example.com\"\ncachee = true",
        ),
        "route_rules[1].cachee",
        None,
    );
}

#[test]
fn check_rejects_unknown_upstream() {
    let bad = replace_once(&valid_config(), "proxy = \"phoenix\"", "proxy = \"phenix\"");
    assert_check_error(&bad, "route_rules[0].proxy", Some("phenix"));
    assert_check_error(&bad, "route_rules[0].proxy", Some("unknown"));
}

#[test]
fn check_rejects_bad_duration() {
    assert_check_error(
        &replace_once(
            &valid_config(),
            "connect_timeout = \"2s\"",
            "connect_timeout = \"abc\"",
        ),
        "upstreams.phoenix.connect_timeout",
        Some("duration"),
    );
    assert_check_error(
        &replace_once(
            &valid_config(),
            "grace_period = \"30s\"",
            "grace_period = \"soon\"",
        ),
        "server.grace_period",
        Some("duration"),
    );
}

#[test]
fn check_rejects_bad_addresses() {
    assert_check_error(
        &replace_once(
            &valid_config(),
            "nodes = [\"127.0.0.1:4000\", \"127.0.0.1:4001\"]",
            "nodes = [\"localhost:abc\"]",
        ),
        "upstreams.phoenix.nodes[0]",
        Some("localhost:abc"),
    );
    assert_check_error(
        &replace_once(
            &valid_config(),
            "nodes = [\"127.0.0.1:4000\", \"127.0.0.1:4001\"]",
            "nodes = [\"127.0.0.1:4000\", \"nohost\"]",
        ),
        "upstreams.phoenix.nodes[1]",
        Some("nohost"),
    );
    let port = free_port();
    assert_check_error(
        &replace_once(
            &valid_config_on(port),
            &format!("listen = [\"127.0.0.1:{port}\"]"),
            "listen = [\"nohost\"]",
        ),
        "server.listen[0]",
        Some("nohost"),
    );
}

#[test]
fn check_rejects_bad_cidr() {
    assert_check_error(
        &replace_once(
            &valid_config(),
            "trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\"]",
            "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/99\"]",
        ),
        "server.trusted_proxies[1]",
        Some("10.0.0.0/99"),
    );
    assert_check_error(
        &replace_once(
            &valid_config(),
            "trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\"]",
            "trusted_proxies = [\"not-an-ip\"]",
        ),
        "server.trusted_proxies[0]",
        Some("not-an-ip"),
    );
}

#[test]
fn check_rejects_empty_nodes_and_relative_pattern() {
    assert_check_error(
        &replace_once(
            &valid_config(),
            "nodes = [\"127.0.0.1:4000\", \"127.0.0.1:4001\"]",
            "nodes = []",
        ),
        "upstreams.phoenix.nodes",
        None,
    );
    assert_check_error(
        &replace_once(
            &valid_config(),
            "pattern = \"/live/*\"",
            "pattern = \"live/*\"",
        ),
        "route_rules[0].pattern",
        None,
    );
}

#[test]
fn check_rejects_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.toml");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(path.to_str().unwrap()),
        "stderr should name the missing file:\n{stderr}"
    );
}

#[test]
fn serve_test_flag_validates_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    let valid = valid_config();
    std::fs::write(&good, &valid).unwrap();
    std::fs::write(
        &bad,
        replace_once(&valid, "proxy = \"phoenix\"", "proxy = \"phenix\""),
    )
    .unwrap();

    let run = |path: &Path| {
        let mut child = Command::new(BEXT)
            .args(["serve", "-t", "-c", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // -t must not start serving; 30 s is a safety deadline only.
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                return (status, String::from_utf8_lossy(&out.stderr).into_owned());
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`bext serve -t` did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (status, stderr) = run(&good);
    assert!(status.success(), "{status:?}\n{stderr}");
    let (status, stderr) = run(&bad);
    assert!(!status.success(), "bad config passed `serve -t`:\n{stderr}");
}

#[test]
fn version_prints_name_and_semver() {
    let out = run_bext(&["version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("bext {}", env!("CARGO_PKG_VERSION")),
        "version output"
    );
}

#[test]
fn check_warns_when_the_pid_file_or_upgrade_socket_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bext.toml");
    let missing = dir.path().join("no-such-dir");
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:18080\"]\npid_file = \"{}/bext.pid\"\nupgrade_sock = \"{}/bext.sock\"\n\
         [upstreams.app]\nnodes = [\"127.0.0.1:4000\"]\n[[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\n",
        missing.display(),
        dir.path().display()
    );
    std::fs::write(&path, toml).unwrap();
    let (code, stdout, stderr) = check(&path);
    // Still valid (systemd creates /run/bext), but said.
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let prefix = format!("warning: {}: server.pid_file:", path.display());
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` warning:\n{stderr}"));
    assert!(line.contains("does not exist"), "{line}");
    // The upgrade socket's directory exists and is writable: no warning.
    assert!(!stderr.contains("server.upgrade_sock"), "{stderr}");
}
