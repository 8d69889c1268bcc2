//! WebSocket tunnels: upgrades on websocket routes only, tunnels outlive the
//! downstream client_timeout, the websocket idle limit applies, and 1000
//! tunnels can be open at once.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use common::{
    client, free_port, raise_nofile_limit, raw_request_keep, read_response, wait_closed, Bext,
    StubOrigin,
};

fn config(port: u16, origin: &StubOrigin, client_timeout: &str, ws_idle: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
client_timeout = "{client_timeout}"

# Idle keep-alive connections are closed after the same time.
[limits]
keepalive_timeout = "{client_timeout}"
# 1000 tunnels come from one test address.
max_connections_per_ip = 0
max_websockets_per_ip = 0

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/live/*"
proxy = "app"
cache = false
websocket = true
websocket_idle_timeout = "{ws_idle}"

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
        origin = origin.addr()
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(bext: &Bext, path: &str) -> Result<Ws, WsError> {
    let url = format!("ws://{}{}", bext.addr(), path);
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
}

/// Sends `text` and expects the same text back (skipping control frames).
async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string()))
        .await
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
        let msg = match next {
            Err(_) => panic!("no echo for {text:?} within the 30 s safety net"),
            Ok(None) => panic!("tunnel closed while waiting for {text:?}"),
            Ok(Some(Err(e))) => panic!("tunnel error while waiting for {text:?}: {e}"),
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Text(t) => {
                assert_eq!(t, text);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?} while waiting for {text:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_outlives_client_timeout() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "1s", "30s")).await;

    let mut ws = connect(&bext, "/live/websocket?vsn=2.0.0")
        .await
        .expect("websocket handshake through bext");
    echo(&mut ws, "hello").await;

    // Idle for longer than client_timeout (1 s): a websocket tunnel is
    // governed by websocket_idle_timeout (30 s), not client_timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    echo(&mut ws, "still here").await;

    let seen = origin.requests_to("/live/websocket");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].query, "vsn=2.0.0");
    assert!(seen[0]
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    assert_eq!(origin.ws_sessions(), 1);
    ws.close(None).await.ok();
}

/// The counterpart of `tunnel_outlives_client_timeout`: with the same
/// settings (keep-alive idle = client_timeout = 1 s), an idle plain HTTP
/// keep-alive connection IS closed by bext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connection_is_closed_after_client_timeout() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "1s", "30s")).await;

    let (r, mut conn) = raw_request_keep(
        bext.addr(),
        b"GET /idle-http HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // The connection is kept alive: a second request on it works...
    conn.write_all(b"GET /idle-http-2 HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), read_response(&mut conn))
        .await
        .expect("second response within the 30 s safety net");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(origin.requests_to("/idle-http-2").len(), 1);
    // ...but once idle it is closed. 30 s is only a safety net for the poll;
    // limits.keepalive_timeout is 1 s.
    assert!(
        wait_closed(&mut conn, Duration::from_secs(30)).await,
        "idle keep-alive connection stayed open past client_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_not_passed_on_non_websocket_routes() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "60s", "30s")).await;

    match connect(&bext, "/ws").await {
        Ok(_) => panic!("websocket upgrade succeeded on a route without websocket = true"),
        Err(WsError::Http(resp)) => assert_ne!(resp.status().as_u16(), 101),
        Err(_) => {} // connection refused/closed: also not upgraded
    }
    assert_eq!(origin.ws_sessions(), 0, "origin opened a websocket session");
    for q in origin.requests_to("/ws") {
        assert!(
            !q.has_header("upgrade"),
            "origin saw an upgrade request on a non-websocket route: {q:?}"
        );
    }

    // The route itself works for plain requests (the stub answers 400 to
    // non-upgrade requests on its websocket path).
    let r = client().get(bext.url("/ws")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-node"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_after_websocket_idle_timeout() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin, "60s", "1s")).await;

    let mut ws = connect(&bext, "/live/websocket")
        .await
        .expect("websocket handshake through bext");
    echo(&mut ws, "before idle").await;

    // Stay idle; bext must close the tunnel (1 s idle limit). The 30 s
    // deadline is only a safety net for the poll.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "idle tunnel was never closed by bext");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while origin.ws_open() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.ws_open(), 0, "origin side of the tunnel stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_tunnels() {
    const N: usize = 1000;
    // The test process holds 2 fds per tunnel (client + stub side).
    let limit = raise_nofile_limit();
    assert!(
        limit >= 2 * N as u64 + 200,
        "hard RLIMIT_NOFILE {limit} too low for this test"
    );
    let origin = StubOrigin::start("a").await;
    // bext starts with the common default soft limit of 1024 fds; 1000
    // tunnels need ~2000 fds in bext, so it must raise its own limit.
    let bext =
        Bext::start_with_soft_nofile(&config(free_port(), &origin, "60s", "300s"), 1024).await;

    let result = tokio::time::timeout(Duration::from_secs(240), async {
        let conns: Vec<Result<Ws, WsError>> = futures_util::stream::iter(0..N)
            .map(|_| connect(&bext, "/live/websocket?vsn=2.0.0"))
            .buffer_unordered(50)
            .collect()
            .await;
        let mut conns: Vec<Ws> = conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                c.unwrap_or_else(|e| {
                    panic!(
                        "tunnel {i} failed: {e} (bext soft nofile limit: {})",
                        bext.nofile_soft_limit()
                    )
                })
            })
            .collect();

        // All tunnels are open at the same time at the origin.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while origin.ws_open() < N && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(origin.ws_open(), N, "tunnels open at the origin");

        futures_util::stream::iter(conns.iter_mut().enumerate())
            .for_each_concurrent(100, |(i, ws)| async move {
                echo(ws, &format!("tunnel {i}")).await;
            })
            .await;
        assert!(origin.ws_max() >= N);
        assert_eq!(origin.ws_sessions(), N);
        conns
    })
    .await;
    let conns = result.expect("1000 tunnels did not finish within the 240 s safety net");
    drop(conns);
}

/// Fresh tunnels are stable: many short-lived sockets opened one after another
/// each echo twice, with a pause longer than the request-head deadline between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_tunnels_stay_open_past_the_head_deadline() {
    let origin = StubOrigin::start("a").await;
    let conf = config(free_port(), &origin, "30s", "30s").replace(
        "keepalive_timeout = \"30s\"",
        "keepalive_timeout = \"30s\"\nheader_timeout = \"1s\"",
    );
    let bext = Bext::start(&conf).await;
    let mut sockets = Vec::new();
    for i in 0..40 {
        let mut ws = connect(&bext, "/live/websocket?vsn=2.0.0")
            .await
            .expect("websocket handshake through bext");
        echo(&mut ws, &format!("first {i}")).await;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        echo(ws, &format!("second {i}")).await;
    }
}
