//! Retries: a killed node under load costs no request; bodies are not replayed.

mod common;
mod upstream_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{client, free_port, Bext};
use futures_util::StreamExt;
use upstream_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_under_load_fails_no_request() {
    let (a, b, c) = (
        TestNode::start("a").await,
        TestNode::start("b").await,
        TestNode::start("c").await,
    );
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], FAST_HEALTH)).await;
    let cl = client();
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let url = bext.url("/x");
    let load = futures_util::stream::iter(0..2000)
        .map(|_| {
            let (cl, url, done, failed) = (cl.clone(), url.clone(), done.clone(), failed.clone());
            async move {
                let ok = match cl.get(&url).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>();
    let killer = async {
        while done.load(Ordering::SeqCst) < 400 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        b.kill();
    };
    tokio::join!(load, killer);
    let failed = failed.load(Ordering::SeqCst);
    eprintln!(
        "node-kill under 2000 GETs at concurrency 32: {failed} failed; node b served {}",
        b.hits()
    );
    assert_eq!(failed, 0);
    assert!(b.hits() > 0 && b.hits() < 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_replayed_after_its_body_was_sent() {
    let (a, b, c) = (
        TestNode::start("a").await,
        TestNode::start("b").await,
        TestNode::start("c").await,
    );
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], "")).await;
    let cl = client();
    // The client sees a 502, or a reset if bext closes while the 502 is in
    // flight; either way the POST must have reached Phoenix exactly once.
    match cl
        .post(bext.url("/die"))
        .body(vec![7u8; 10_000])
        .send()
        .await
    {
        Ok(r) => assert_eq!(r.status(), 502),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let posts: usize = [&a, &b, &c].iter().map(|n| n.count("POST", "/die")).sum();
    assert_eq!(posts, 1, "the POST reached Phoenix {posts} times");
    // The same failure on a GET is retried on the other nodes (retries = 2).
    let r = cl.get(bext.url("/die")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let gets: Vec<usize> = [&a, &b, &c]
        .iter()
        .map(|n| n.count("GET", "/die"))
        .collect();
    assert_eq!(gets, vec![1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_one_node_is_retried_for_get_but_not_post() {
    let (a, b) = (TestNode::start("a").await, TestNode::start("b").await);
    let bext = Bext::start(&config(free_port(), &[&a, &b], "retries = 1")).await;
    let cl = client();
    // Every node answers 503 on this path: both are tried, then the last 503 passes.
    let r = cl.get(bext.url("/fail503")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(a.count("GET", "/fail503") + b.count("GET", "/fail503"), 2);
    let r = cl
        .post(bext.url("/fail503"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(a.count("POST", "/fail503") + b.count("POST", "/fail503"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_a_dead_node_is_retried_because_nothing_was_sent() {
    let (a, b) = (TestNode::start("a").await, TestNode::start("b").await);
    let bext = Bext::start(&config(free_port(), &[&a, &b], "")).await;
    a.kill_and_wait().await;
    let cl = client();
    for _ in 0..4 {
        let r = cl.post(bext.url("/x")).body("hello").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-node"], "b");
    }
}
