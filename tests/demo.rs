//! `bext demo --listen ADDR`: the proxy in front of the embedded Phoenix-like
//! demo origin (pages, cacheable posts, health, Phoenix channel websocket).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::{client, free_port, BEXT};

/// The demo process; killed on drop.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Demo {
    async fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(BEXT)
            .args(["demo", "--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn bext demo");
        let mut demo = Demo { child, dir, addr };

        // Ready once /health answers 200 through the proxy (60 s deadline).
        let c = client();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = demo.child.try_wait().unwrap() {
                panic!("bext demo exited with {status}:\n{}", demo.stderr());
            }
            if let Ok(r) = c.get(demo.url("/health")).send().await {
                if r.status() == 200 {
                    return demo;
                }
            }
            if Instant::now() > end {
                panic!("bext demo not ready within 60 s:\n{}", demo.stderr());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no websocket reply within the 30 s safety net")
            .expect("websocket closed")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_pages_posts_health_and_phoenix_socket() {
    let demo = Demo::start().await;
    let c = client();

    let stdout = demo.stdout();
    assert!(
        stdout.contains(&demo.addr.to_string()),
        "demo should print its URLs:\n{stdout}"
    );

    // Home page, through the proxy (it carries a request id).
    let r = c.get(demo.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "content-type {ct:?}");
    assert!(r.text().await.unwrap().contains("bext demo"));

    // A cacheable post.
    let r = c.get(demo.url("/posts/3")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cc = r
        .headers()
        .get("cache-control")
        .expect("posts carry cache-control")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cc.contains("public") && cc.contains("max-age=60"),
        "cache-control {cc:?}"
    );

    let r = c.get(demo.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    // Phoenix channel V2 over the proxied websocket.
    let url = format!("ws://{}/live/websocket?vsn=2.0.0", demo.addr);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake through the demo proxy");
    assert_eq!(resp.status().as_u16(), 101);

    ws.send(Message::Text(
        json!(["1", "1", "lv:demo", "phx_join", {}]).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!(["1", "1", "lv:demo", "phx_reply", {"status": "ok", "response": {}}])
    );

    ws.send(Message::Text(
        json!([null, "2", "phoenix", "heartbeat", {}]).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!([null, "2", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );
    ws.close(None).await.ok();
}
