//! Zero-downtime reloads: `bext reload` checks the config, starts a new
//! process that takes over the listening sockets, and the old one drains.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, run_bext, Bext, StubOrigin};

/// Kills whatever pid the pid file names at the end of the test: processes
/// started by `bext reload` are not children of the harness.
struct PidFileGuard(PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.0) {
            // SAFETY: plain kill(2) of a test-owned process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Running (not exited): a zombie still answers kill(pid, 0), so look at its state.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn config(port: u16, run: &Path, origin: &StubOrigin, generation: u32, grace: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:{port}"]
threads = 2
grace_period = "{grace}"
shutdown_timeout = "1s"
pid_file = "{run}/bext.pid"
upgrade_sock = "{run}/upgrade.sock"

[upstreams.app]
nodes = ["{origin}"]
{new_route}
[[route_rules]]
pattern = "/*"
proxy = "app"
headers = {{ "X-Generation" = "{generation}" }}
"#,
        run = run.display(),
        origin = origin.addr(),
        // From generation 2 on, a route that did not exist before.
        new_route = if generation >= 2 {
            "\n[[route_rules]]\npattern = \"/brand-new\"\nproxy = \"app\"\nheaders = { \"X-New-Route\" = \"yes\" }\n"
        } else {
            ""
        }
    )
}

async fn generation_seen(url: &str) -> Option<String> {
    // A fresh connection each time: the listening socket decides who answers.
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .ok()?;
    let r = c.get(url).send().await.ok()?;
    r.headers()
        .get("x-generation")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn wait_pid_file(path: &Path, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = read_pid(path).filter(|p| Some(*p) != not && alive(*p)) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running bext (started by the harness) with its pid file in `run`.
struct Fixture {
    origin: StubOrigin,
    run: tempfile::TempDir,
    port: u16,
    bext: Bext,
    pid_path: PathBuf,
    guard: PidFileGuard,
    pid: i32,
}

impl Fixture {
    /// Starts generation 1 of [`config`] with `grace`, after `edit`.
    async fn start(grace: &str, edit: impl FnOnce(String) -> String) -> Fixture {
        let origin = StubOrigin::start("n1").await;
        let run = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let bext = Bext::start(&edit(config(port, run.path(), &origin, 1, grace))).await;
        let pid_path = run.path().join("bext.pid");
        let guard = PidFileGuard(pid_path.clone());
        let pid = wait_pid_file(&pid_path, None).await;
        Fixture {
            origin,
            run,
            port,
            bext,
            pid_path,
            guard,
            pid,
        }
    }
}

/// `bext reload -c CONF --log LOG`, waiting up to 60 s for the takeover.
fn reload(conf: &Path, log: &Path) -> std::process::Output {
    run_bext(&[
        "reload",
        "-c",
        conf.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "--timeout",
        "60s",
        // These tests are about the socket handoff (a new binary), which
        // `--upgrade` forces; config-only changes are applied in place.
        "--upgrade",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_hands_over_and_applies_the_new_config() {
    let Fixture {
        origin,
        run,
        port,
        mut bext,
        pid_path,
        guard: _guard,
        pid: old,
    } = Fixture::start("1s", |c| c).await;
    assert_eq!(old as u32, bext.pid());
    let url = bext.url("/echo");
    assert_eq!(generation_seen(&url).await.as_deref(), Some("1"));

    let conf_path = bext.dir().join("bext.toml");
    std::fs::write(&conf_path, config(port, run.path(), &origin, 2, "1s")).unwrap();
    let log = run.path().join("new.log");
    let out = reload(&conf_path, &log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reload failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = read_pid(&pid_path).expect("pid file after reload");
    assert_ne!(new, old);
    assert!(
        stdout.contains(&format!("pid {new} took over from pid {old}")),
        "{stdout}"
    );
    eprintln!("{}", stdout.trim());

    // The old process finishes and exits; from then on only the new config answers.
    let status = bext.wait_exit(Duration::from_secs(30)).await;
    assert!(status.is_some(), "old bext did not exit after the handoff");
    for _ in 0..5 {
        assert_eq!(generation_seen(&url).await.as_deref(), Some("2"));
    }
    // The reload is counted, across the process change.
    let metrics = client()
        .get(bext.url("/__bext/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "bext_reloads_total 1"),
        "{metrics}"
    );
    // The route added by the new config answers.
    let r = client().get(bext.url("/brand-new")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("x-new-route").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_broken_config_leaves_the_running_process_alone() {
    let Fixture {
        origin,
        run,
        port,
        mut bext,
        pid_path,
        guard: _guard,
        pid: old,
    } = Fixture::start("1s", |c| c).await;

    let conf_path = bext.dir().join("bext.toml");
    let broken = config(port, run.path(), &origin, 2, "1s")
        .replace("threads = 2", "threads = 2\nbogus_key = 1");
    std::fs::write(&conf_path, broken).unwrap();
    let out = run_bext(&["reload", "-c", conf_path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("server.bogus_key"), "{stderr}");
    assert!(stderr.contains("not touched"), "{stderr}");
    assert!(
        bext.is_running(),
        "running bext must survive a broken reload"
    );
    assert_eq!(read_pid(&pid_path), Some(old));
    assert_eq!(
        generation_seen(&bext.url("/echo")).await.as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_a_running_bext_says_so() {
    let origin = StubOrigin::start("n1").await;
    let run = tempfile::tempdir().unwrap();
    let conf_path = run.path().join("bext.toml");
    std::fs::write(
        &conf_path,
        config(common::free_port(), run.path(), &origin, 1, "1s"),
    )
    .unwrap();
    let out = run_bext(&["reload", "-c", conf_path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no running bext"), "{stderr}");
}

/// 20,000 requests from 64 concurrent keep-alive clients while bext is
/// upgraded three times in a row: none may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_under_load_lose_no_request() {
    const TOTAL: usize = 20_000;
    const CONCURRENCY: usize = 64;
    let Fixture {
        origin,
        run,
        port,
        bext,
        pid_path,
        guard: _guard,
        ..
    } = Fixture::start("2s", |c| c).await;
    let conf_path = bext.dir().join("bext.toml");

    let sent = Arc::new(AtomicUsize::new(0));
    // Keep the load on until every old process has finished draining, so the
    // moments they stop accepting and close idle connections are all covered.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let url = bext.url("/echo");
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (sent, failed, errors, url) =
            (sent.clone(), failed.clone(), errors.clone(), url.clone());
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let c = client();
            while sent.fetch_add(1, Ordering::Relaxed) < TOTAL || !stop.load(Ordering::Relaxed) {
                let ok = match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    Ok(r) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status()));
                        false
                    }
                    Err(e) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("at {:?}: {e:?}", t0.elapsed()));
                        false
                    }
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let mut upgrades = 0;
    let mut pid = read_pid(&pid_path).unwrap();
    let mut old_pids = Vec::new();
    while upgrades < 3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let conf = config(port, run.path(), &origin, upgrades + 2, "2s");
        std::fs::write(&conf_path, conf).unwrap();
        let out = tokio::task::spawn_blocking({
            let p = conf_path.clone();
            let log = run.path().join("new.log");
            move || reload(&p, &log)
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("reload {} done at {:?}", upgrades + 1, t0.elapsed());
        let new = read_pid(&pid_path).unwrap();
        assert_ne!(new, pid);
        old_pids.push(pid);
        pid = new;
        upgrades += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while old_pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "old processes did not exit: {old_pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    let errors = errors.lock().unwrap();
    let total = sent.load(Ordering::Relaxed);
    eprintln!("upgrades: 3, requests: {total}, failed: {failed}");
    assert_eq!(
        failed,
        0,
        "failed requests during upgrades: {:?}",
        &errors[..errors.len().min(10)]
    );
    assert!(sent.load(Ordering::Relaxed) >= TOTAL);
}

/// A LiveView-style socket opened before an upgrade keeps exchanging messages
/// while the old process drains, then gets a clean 1001 "going away" close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_survives_the_handoff_then_gets_1001() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;

    let Fixture {
        run,
        mut bext,
        guard: _guard,
        ..
    } = Fixture::start("4s", |conf| {
        conf.replace(
            "[[route_rules]]\npattern = \"/*\"",
            "[[route_rules]]\npattern = \"/live/*\"\nproxy = \"app\"\ncache = false\nwebsocket = true\n\n[[route_rules]]\npattern = \"/*\"",
        )
    })
    .await;

    let url = format!("ws://{}/live/websocket?vsn=2.0.0", bext.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws handshake");
    ws.send(Message::Text("before".into())).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(t))) if t == "before"));

    let conf_path = bext.dir().join("bext.toml");
    let log = run.path().join("new.log");
    let out = reload(&conf_path, &log);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The old process still carries this tunnel: messages keep flowing until
    // it says goodbye with 1001.
    let mut echoed_after_reload = 0;
    let close = loop {
        let text = format!("during {echoed_after_reload}");
        if ws.send(Message::Text(text.clone())).await.is_err() {
            panic!("tunnel dropped without a close frame after {echoed_after_reload} echoes");
        }
        let next = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("no answer within the 60 s safety net");
        match next {
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t, text);
                echoed_after_reload += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("unexpected {other:?} after {echoed_after_reload} echoes"),
        }
    };
    let frame = close.expect("close frame carries a status code");
    assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
    assert!(
        echoed_after_reload >= 5,
        "only {echoed_after_reload} echoes after the reload"
    );
    assert!(bext.wait_exit(Duration::from_secs(30)).await.is_some());
}
