//! LiveView affinity: the signed cookie, websockets on the cookie's node,
//! forged cookies, dead nodes, and tunnels closed when their node goes down.

mod common;
mod upstream_support;

use std::time::{Duration, Instant};

use common::{client, free_port, Bext};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use upstream_support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn three() -> (TestNode, TestNode, TestNode) {
    (
        TestNode::start("a").await,
        TestNode::start("b").await,
        TestNode::start("c").await,
    )
}

/// Opens `/live/ws` through bext with `cookie`; returns the socket and the node that answered.
async fn open_ws(bext: &Bext, cookie: Option<&str>) -> (Ws, String) {
    let mut req = format!("ws://{}/live/ws", bext.addr())
        .into_client_request()
        .unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket handshake");
    let node = resp
        .headers()
        .get("x-node")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (ws, node)
}

async fn echo(ws: &mut Ws) -> bool {
    if ws.send(Message::text("ping")).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await,
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "ping"
    )
}

/// Waits (generous deadline) until the server side of `ws` closes it.
async fn closed(ws: &mut Ws) -> bool {
    match tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    {
        Ok(()) => true,
        Err(_) => false,
    }
}

/// A cookie pinned to a node other than the one fresh clients hash to:
/// drain the hash node, take the cookie a fresh client gets, undrain.
async fn cookie_for_other_node(bext: &Bext, cl: &reqwest::Client) -> (String, String, String) {
    let (_, home, _) = get(cl, &bext.url("/x"), None).await;
    let drain = |action: &str| bext.url(&format!("/__bext/upstreams/app/nodes/{home}/{action}"));
    assert_eq!(cl.post(drain("drain")).send().await.unwrap().status(), 200);
    let (_, other, cookie) = get(cl, &bext.url("/x"), None).await;
    assert_eq!(
        cl.post(drain("undrain")).send().await.unwrap().status(),
        200
    );
    assert_ne!(home, other);
    (home, other, cookie.expect("cookie for the other node"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_pins_100_requests_to_one_node() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let cl = client();
    let r = cl.get(bext.url("/x")).send().await.unwrap();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    for n in [&a, &b, &c] {
        assert!(
            !set.contains(&n.addr.port().to_string()),
            "cookie leaks an address: {set}"
        );
    }
    let (home, other, cookie) = cookie_for_other_node(&bext, &cl).await;
    let mut hits = std::collections::HashSet::new();
    for _ in 0..100 {
        let (status, node, set) = get(&cl, &bext.url("/x"), Some(&cookie)).await;
        assert_eq!(status, 200);
        assert!(set.is_none(), "a valid cookie is not reissued");
        hits.insert(node);
    }
    assert_eq!(hits.into_iter().collect::<Vec<_>>(), vec![other.clone()]);
    assert_ne!(home, other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_lands_on_the_cookies_node() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let cl = client();
    let (home, other, cookie) = cookie_for_other_node(&bext, &cl).await;
    let (mut ws, node) = open_ws(&bext, Some(&cookie)).await;
    assert_eq!(node, other);
    assert!(echo(&mut ws).await);
    let (mut ws2, node2) = open_ws(&bext, None).await;
    assert_eq!(
        node2, home,
        "without a cookie the upgrade follows the client-IP hash"
    );
    assert!(echo(&mut ws2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_garbled_cookies_are_ignored() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let cl = client();
    let (home, other, cookie) = cookie_for_other_node(&bext, &cl).await;
    // Same signature, another node's id: must not be believed.
    let (_, rest) = cookie.split_once('.').unwrap();
    let forged_to_home = format!("_bext_node={home}.{rest}");
    let (_, node, set) = get(&cl, &bext.url("/x"), Some(&forged_to_home)).await;
    assert_eq!(node, home, "falls back to the client-IP hash");
    assert!(set.is_some(), "a fresh cookie replaces the forged one");
    // Forge towards `other` from a valid home cookie.
    let (_, _, home_cookie) = get(&cl, &bext.url("/x"), None).await;
    let home_cookie = home_cookie.expect("fresh cookie");
    let (_, rest) = home_cookie.split_once('.').unwrap();
    let forged_to_other = format!("_bext_node={other}.{rest}");
    let (_, node, _) = get(&cl, &bext.url("/x"), Some(&forged_to_other)).await;
    assert_eq!(node, home, "a forged cookie moved the client");
    let huge = format!("_bext_node={}", "x".repeat(4000));
    for junk in [
        "_bext_node=",
        "_bext_node=b",
        "_bext_node=b.1.zz",
        huge.as_str(),
    ] {
        let (status, node, _) = get(&cl, &bext.url("/x"), Some(junk)).await;
        assert_eq!((status, node.as_str()), (200, home.as_str()), "{junk:.40}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_to_a_killed_node_is_moved_and_reissued() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let cl = client();
    let (_home, other, cookie) = cookie_for_other_node(&bext, &cl).await;
    let dead = [&a, &b, &c].into_iter().find(|n| n.id() == other).unwrap();
    dead.kill_and_wait().await;
    let (status, node, set) = get(&cl, &bext.url("/x"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_ne!(node, other);
    let set = set.expect("cookie reissued");
    assert!(set.starts_with(&format!("_bext_node={node}.")), "{set}");
    // The new cookie holds.
    for _ in 0..10 {
        assert_eq!(get(&cl, &bext.url("/x"), Some(&set)).await.1, node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_to_a_node_that_turns_unhealthy_are_closed() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let cl = client();
    let (home, other, cookie) = cookie_for_other_node(&bext, &cl).await;
    let sick = [&a, &b, &c].into_iter().find(|n| n.id() == other).unwrap();
    let mut doomed = vec![];
    for _ in 0..3 {
        let (mut ws, node) = open_ws(&bext, Some(&cookie)).await;
        assert_eq!(node, other);
        assert!(echo(&mut ws).await);
        doomed.push(ws);
    }
    let (mut survivor, node) = open_ws(&bext, None).await;
    assert_eq!(node, home);
    let state = cl
        .get(bext.url("/__bext/upstreams"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(state.contains("\"tunnels\":3"), "{state}");
    let t0 = Instant::now();
    sick.set_healthy(false);
    for ws in &mut doomed {
        assert!(closed(ws).await, "tunnel to the unhealthy node stayed open");
    }
    eprintln!(
        "tunnels to the unhealthy node closed {:?} after its health endpoint failed \
         (interval 200ms x unhealthy_after 2 + close_spread 500ms)",
        t0.elapsed()
    );
    assert!(
        echo(&mut survivor).await,
        "a tunnel to a healthy node was closed"
    );
    // The reconnect moves to a healthy node and gets a new cookie.
    let (_, node) = open_ws(&bext, Some(&cookie)).await;
    assert_ne!(node, other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_to_a_killed_node_are_closed_and_drain_closes_tunnels() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let cl = client();
    let (home, other, cookie) = cookie_for_other_node(&bext, &cl).await;
    // Drain: the tunnel on the drained node is closed; the upgrade then moves.
    let (mut ws, node) = open_ws(&bext, None).await;
    assert_eq!(node, home);
    let url = bext.url(&format!("/__bext/upstreams/app/nodes/{home}/drain"));
    assert_eq!(cl.post(url).send().await.unwrap().status(), 200);
    assert!(closed(&mut ws).await, "drain left the tunnel open");
    let (_, node) = open_ws(&bext, None).await;
    assert_ne!(node, home);
    // Kill: the health check marks it down and its tunnel is closed by bext
    // (the stub's own close is raced by the kill; both count as closed).
    let (mut ws, node) = open_ws(&bext, Some(&cookie)).await;
    assert_eq!(node, other);
    let dead = [&a, &b, &c].into_iter().find(|n| n.id() == other).unwrap();
    let t0 = Instant::now();
    dead.kill();
    assert!(closed(&mut ws).await);
    wait_state(&cl, &bext.url(""), &other, "unhealthy").await;
    eprintln!("node death to its tunnel closed: {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_set_only_where_affinity_matters() {
    let (a, b, c) = three().await;
    let bext = Bext::start(&config(free_port(), &[&a, &b, &c], &sticky_conf())).await;
    let cl = client();
    // A cookie-less client: the document that mounts the LiveView and its
    // long-poll transport get the cookie ...
    for path in ["/posts", "/live/longpoll"] {
        let (status, _, set) = get(&cl, &bext.url(path), None).await;
        assert_eq!(status, 200);
        assert!(
            set.is_some_and(|s| s.starts_with("_bext_node=")),
            "{path} must pin the client"
        );
    }
    // ... assets, JSON answers and error pages do not, so browsers and
    // shared caches may keep them.
    for path in [
        "/assets/app.js",
        "/assets/app.css",
        "/images/logo.png",
        "/api/posts.json",
        "/x/fail503",
    ] {
        let (_, _, set) = get(&cl, &bext.url(path), None).await;
        assert_eq!(set, None, "{path} must not carry Set-Cookie");
    }
    // The websocket handshake does.
    let req = format!("ws://{}/live/ws", bext.addr())
        .into_client_request()
        .unwrap();
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket handshake");
    let set = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(set.is_some_and(|s| s.starts_with("_bext_node=")));
}
