//! `scripts/rolling-deploy.sh` against a live bext and three Phoenix-like
//! nodes: each node is drained, restarted and undrained in turn while clients
//! keep sending requests, and none of them fails.

mod common;
#[allow(dead_code)]
mod upstream_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, free_port, repo_path, Bext};
use upstream_support::{config, states, TestNode, FAST_HEALTH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_restarts_every_node_without_failed_requests() {
    let nodes = [
        TestNode::start("web-1").await,
        TestNode::start("web-2").await,
        TestNode::start("web-3").await,
    ];
    let port = free_port();
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let bext = Bext::start(&config(port, &refs, &format!("retries = 2\n{FAST_HEALTH}"))).await;
    let base = format!("http://{}", bext.addr());
    let dir = tempfile::tempdir().unwrap();

    // Steady client load through the whole deploy.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            format!("{base}/page"),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    // The "restart" command hands the node to the test (which kills and
    // revives it, like a release restart) and waits until it is back.
    let marker = dir.path().display().to_string();
    let restart = format!(
        "touch {marker}/restart-$NODE; while [ ! -e {marker}/done-$NODE ]; do sleep 0.1; done"
    );
    let script = repo_path("scripts/rolling-deploy.sh");
    let mut deploy = tokio::process::Command::new(script)
        .args([
            "--admin",
            &base,
            "--upstream",
            "app",
            "--restart",
            &restart,
            "--timeout",
            "60",
        ])
        .args(["web-1", "web-2", "web-3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run rolling-deploy.sh");

    let c = client();
    let deadline = Instant::now() + Duration::from_secs(120);
    for node in &nodes {
        let flag = dir.path().join(format!("restart-{}", node.id()));
        while !Path::new(&flag).exists() {
            assert!(
                Instant::now() < deadline,
                "deploy never restarted {}",
                node.id()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // At restart time bext has the node drained and sends it nothing new.
        let st = states(&c, &base).await;
        assert!(
            st.iter().any(|(id, s)| id == node.id() && s == "draining"),
            "{} not draining at restart: {st:?}",
            node.id()
        );
        node.kill_and_wait().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.revive().await;
        std::fs::write(dir.path().join(format!("done-{}", node.id())), b"").unwrap();
    }
    let status = tokio::time::timeout(Duration::from_secs(120), deploy.wait())
        .await
        .expect("deploy finishes")
        .unwrap();
    assert!(status.success(), "rolling-deploy.sh failed");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let st = states(&c, &base).await;
    assert!(st.iter().all(|(_, s)| s == "healthy"), "{st:?}");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling deploy: {ok} requests ok, {failed} failed");
    assert!(ok > 100, "load did not run: {ok}");
    assert_eq!(failed, 0, "requests failed during the rolling deploy");
}
