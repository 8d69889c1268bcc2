//! LiveView-aware counters against the demo origin's Phoenix channel socket:
//! joins, open LiveView sockets, reconnects and tunnel lifetimes per node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{client, free_port, Bext};
use crate::scrape::{parse, scrape, value, Sample};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn join(bext: &Bext, topic: &str) -> Ws {
    let url = format!("ws://{}/live/websocket?vsn=2.0.0", bext.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    let msg = format!(r#"["1","1","{topic}","phx_join",{{"url":"http://127.0.0.1/"}}]"#);
    ws.send(Message::text(msg)).await.unwrap();
    // The demo origin answers the join with a phx_reply.
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("join reply")
        .expect("open")
        .expect("frame");
    assert!(reply.to_text().unwrap().contains("phx_reply"), "{reply:?}");
    ws
}

async fn samples(bext: &Bext) -> Vec<Sample> {
    parse(&scrape(&client(), &format!("http://{}", bext.addr())).await)
}

/// Polls the scrape until `pred` holds (tunnels end asynchronously).
async fn wait_until(bext: &Bext, what: &str, pred: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = samples(bext).await;
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn liveview_joins_sockets_and_reconnects_are_counted_per_node() {
    let origin = bext::demo_origin::DemoOrigin::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("demo origin");
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:{}"]
threads = 2

[upstreams.phoenix]
nodes = [{{ addr = "{}", id = "n0" }}]

[[route_rules]]
pattern = "/live/*"
proxy = "phoenix"
cache = false
websocket = true

[[route_rules]]
pattern = "/*"
proxy = "phoenix"
"#,
        free_port(),
        origin.addr
    );
    let bext = Bext::start(&toml).await;
    let node = [("upstream", "phoenix"), ("node", "n0")];

    let mut ws = join(&bext, "lv:demo").await;
    let s = wait_until(&bext, "the join", |s| {
        value(s, "bext_liveview_joins_total", &node) == 1.0
    })
    .await;
    assert_eq!(value(&s, "bext_liveview_sockets_open", &node), 1.0);
    assert_eq!(value(&s, "bext_liveview_channel_joins_total", &node), 1.0);
    assert_eq!(value(&s, "bext_liveview_reconnects_total", &node), 0.0);
    assert_eq!(value(&s, "bext_upstream_tunnels_open", &node), 1.0);

    // The tab closes, and comes back at once: a reconnect.
    ws.close(None).await.unwrap();
    drop(ws);
    wait_until(&bext, "the tunnel to close", |s| {
        value(s, "bext_liveview_sockets_open", &node) == 0.0
    })
    .await;
    let mut ws = join(&bext, "lv:demo").await;
    let s = wait_until(&bext, "the second join", |s| {
        value(s, "bext_liveview_joins_total", &node) == 2.0
    })
    .await;
    assert_eq!(value(&s, "bext_liveview_reconnects_total", &node), 1.0);
    assert_eq!(value(&s, "bext_liveview_sockets_open", &node), 1.0);

    // A plain channel join is a join, not a LiveView.
    let plain = join(&bext, "room:lobby").await;
    let s = wait_until(&bext, "the channel join", |s| {
        value(s, "bext_liveview_channel_joins_total", &node) == 3.0
    })
    .await;
    assert_eq!(value(&s, "bext_liveview_joins_total", &node), 2.0);
    assert_eq!(value(&s, "bext_liveview_sockets_open", &node), 1.0);

    ws.close(None).await.unwrap();
    drop(ws);
    drop(plain);
    let s = wait_until(&bext, "every tunnel to close", |s| {
        value(s, "bext_upstream_tunnels_open", &node) == 0.0
    })
    .await;
    assert_eq!(value(&s, "bext_liveview_sockets_open", &node), 0.0);
    assert_eq!(
        value(&s, "bext_websocket_tunnel_duration_seconds_count", &node),
        3.0
    );
}
