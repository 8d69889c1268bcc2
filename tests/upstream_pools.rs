//! Pools end to end: balancing, health checks, drain, admin state, all down.

mod common;
mod upstream_support;

use std::collections::HashMap;
use std::time::Duration;

use common::{client, free_port, Bext};
use upstream_support::*;

async fn three() -> (TestNode, TestNode, TestNode) {
    (
        TestNode::start("a").await,
        TestNode::start("b").await,
        TestNode::start("c").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], "")).await;
    let cl = client();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let (status, node, set) = get(&cl, &bext.url("/x"), None).await;
        assert_eq!(status, 200);
        assert!(set.is_none(), "no sticky configured, no cookie");
        *seen.entry(node).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 100), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_to_the_idle_node() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(
        free_port(),
        &[&a, &b, &c],
        "balance = \"least_conn\"",
    ))
    .await;
    let cl = client();
    let mut held = vec![];
    for i in 0..2 {
        // Distinct URLs: two concurrent GETs of one cacheable URL would wait
        // on the cache lock (stampede protection) instead of both going out.
        let (cl, url) = (cl.clone(), bext.url(&format!("/{i}/hold")));
        held.push(tokio::spawn(async move { get(&cl, &url, None).await }));
        // Wait until the held request reached a node, so the next one sees its count.
        let before: usize = held.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while a.held() + b.held() + c.held() < before {
            assert!(std::time::Instant::now() < deadline, "hold never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let idle = [&a, &b, &c]
        .into_iter()
        .find(|n| n.held() == 0)
        .unwrap_or_else(|| {
            panic!(
                "one idle node: held {:?}\n{}",
                [a.held(), b.held(), c.held()],
                bext.stderr()
            )
        })
        .id()
        .to_string();
    for _ in 0..30 {
        let (status, node, _) = get(&cl, &bext.url("/x"), None).await;
        assert_eq!(status, 200);
        let held: Vec<usize> = [&a, &b, &c].iter().map(|n| n.held()).collect();
        if node != idle {
            let st = cl
                .get(bext.url("/__bext/upstreams"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            eprintln!("{st}");
        }
        assert_eq!(
            node, idle,
            "least_conn picked a busy node (held per node: {held:?})"
        );
    }
    for n in [&a, &b, &c] {
        n.release();
    }
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_balance_keeps_each_key_on_one_node() {
    let (a, b, c) = three().await;
    let conf = config(
        free_port(),
        &[&a, &b, &c],
        "balance = \"hash\"\nhash_on = \"header:x-user\"",
    );
    let bext = Bext::start(&conf).await;
    let cl = client();
    let mut used = std::collections::HashSet::new();
    for user in 0..30 {
        let mut nodes = std::collections::HashSet::new();
        for _ in 0..5 {
            let r = cl
                .get(bext.url("/x"))
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            nodes.insert(r.headers()["x-node"].to_str().unwrap().to_string());
        }
        assert_eq!(nodes.len(), 1, "user-{user} moved between {nodes:?}");
        used.extend(nodes);
    }
    assert!(used.len() >= 2, "30 keys all on {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_node_stops_getting_traffic_and_comes_back() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], FAST_HEALTH)).await;
    let (cl, base) = (client(), bext.url(""));
    b.set_healthy(false);
    let took = wait_state(&cl, &base, "b", "unhealthy").await;
    eprintln!("node b marked unhealthy {took:?} after its health endpoint started failing");
    let before = b.hits();
    for _ in 0..60 {
        let (status, node, _) = get(&cl, &bext.url("/x"), None).await;
        assert_eq!(status, 200);
        assert_ne!(node, "b");
    }
    assert_eq!(b.hits(), before);
    let body = cl
        .get(bext.url("/__bext/upstreams"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("answered 503"), "last_error missing: {body}");
    b.set_healthy(true);
    wait_state(&cl, &base, "b", "healthy").await;
    let mut back = false;
    for _ in 0..30 {
        back |= get(&cl, &bext.url("/x"), None).await.1 == "b";
    }
    assert!(back, "b never got traffic again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_new_clients_and_undrain_brings_them_back() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let (cl, base) = (client(), bext.url(""));
    // All test clients share 127.0.0.1, so fresh clients hash to one node.
    let (_, home, cookie) = get(&cl, &bext.url("/x"), None).await;
    let cookie = cookie.expect("sticky cookie issued");
    let r = cl
        .post(bext.url(&format!("/__bext/upstreams/app/nodes/{home}/drain")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_state(&cl, &base, &home, "draining").await;
    for _ in 0..20 {
        let (status, node, set) = get(&cl, &bext.url("/x"), None).await;
        assert_eq!(status, 200);
        assert_ne!(node, home, "a new client landed on the drained node");
        assert!(set.is_some(), "new client gets a cookie for its new node");
    }
    // An existing sticky client keeps its node while it drains.
    let (_, node, set) = get(&cl, &bext.url("/x"), Some(&cookie)).await;
    assert_eq!(node, home);
    assert!(set.is_none());
    let r = cl
        .post(bext.url(&format!("/__bext/upstreams/app/nodes/{home}/undrain")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&cl, &bext.url("/x"), None).await.1, home);
    let r = cl
        .post(bext.url("/__bext/upstreams/app/nodes/nope/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_gives_the_503_maintenance_page() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], FAST_HEALTH)).await;
    let (cl, base) = (client(), bext.url(""));
    for n in [&a, &b, &c] {
        n.kill();
    }
    for id in ["a", "b", "c"] {
        wait_state(&cl, &base, id, "unhealthy").await;
    }
    let r = cl.get(bext.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().to_lowercase().contains("<html"));
    let body = cl
        .get(bext.url("/__bext/upstreams"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["upstreams"][0]["healthy_nodes"], 0);
    assert!(
        v["upstreams"][0]["nodes"][0]["last_error"].is_string(),
        "{body}"
    );
    assert!(
        v["upstreams"][0]["nodes"][0]["in_flight"].is_number(),
        "{body}"
    );
}
