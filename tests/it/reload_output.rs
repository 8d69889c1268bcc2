//! `bext reload` run by a tool that captures its output returns as soon as
//! the new process holds the sockets: the new server writes where the old
//! one wrote, never into the caller's pipes.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Bext, StubOrigin, BEXT};

/// `bext reload -c CONFIG EXTRA…` with both outputs captured; its stdout.
async fn reload_captured(config: &std::path::Path, extra: &[&str]) -> String {
    let config = config.to_owned();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            Command::new(BEXT)
                .args(["reload", "-c", config.to_str().unwrap(), "--timeout", "20s"])
                .args(&extra)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }),
    )
    .await
    .expect("bext reload held the caller's pipes")
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_reload_with_captured_output_returns_and_the_new_process_logs_where_the_old_did() {
    let origin = StubOrigin::start("n0").await;
    let run = tempfile::tempdir().unwrap();
    let toml = crate::support::one_node(
        origin.addr(),
        "",
        "",
    )
    .replacen(
        "threads = 2",
        &format!(
            "threads = 2\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\npid_file = \"{r}/bext.pid\"\nupgrade_sock = \"{r}/upgrade.sock\"",
            r = run.path().display()
        ),
        1,
    );
    let bext = Bext::start(&toml).await;
    let _guard = crate::support::KillPid(run.path().join("bext.pid"));
    // Like subprocess.run(capture_output=True): both outputs are pipes read
    // to their end, so this returns only once every holder has closed them.
    // First the config as it is (applied in place), then a forced handoff.
    let stdout = reload_captured(bext.config_path(), &[]).await;
    assert!(
        stdout.starts_with("bext reloaded in place: pid "),
        "{stdout}"
    );
    let stdout = reload_captured(bext.config_path(), &["--upgrade"]).await;
    assert!(stdout.starts_with("bext reloaded: pid "), "{stdout}");
    // The new process's start-up lines went to the old one's stderr file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bext.stderr().matches("listening on").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", bext.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = reqwest::get(format!("http://{}/x", bext.addr()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
