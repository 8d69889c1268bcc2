//! When a Phoenix node's side of a websocket tunnel ends without a Close
//! frame (the node died), the browser gets a Close frame (1011) instead of a
//! bare TCP close (1006), and reconnects as it does after a drain; a Close
//! the node sent itself is passed on alone.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{free_port, Bext};
use crate::upstream_support::{config, TestNode};

#[tokio::test]
async fn a_dying_node_s_tunnels_get_a_1011_close_frame() {
    let node = TestNode::start("n1").await;
    let port = free_port();
    let bext = Bext::start(&config(port, &[&node], "")).await;
    let url = format!("ws://127.0.0.1:{port}/live/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // Frames flow both ways first (the tracker follows them).
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo.to_text().unwrap(), format!("ping {i}"));
    }
    node.kill();
    let last = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the tunnel ended");
    match last {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Error, "{frame:?}");
        }
        other => panic!("expected a 1011 Close frame, got {other:?}"),
    }
    drop(bext);
}
