//! A stop always finishes: bext under HTTP/1.1, HTTP/2, HTTP/3, websocket
//! and long-poll load is stopped 20 times (SIGINT, SIGTERM and SIGQUIT in
//! turn); each time the process must exit within the grace period plus
//! `shutdown_timeout` plus the watchdog's margin, and its log must stay small.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::common::{free_port, Bext, StubOrigin};
use crate::tls_support::{
    client_config, free_tcp_udp_port, h2_get, h2_handshake, h3_connect, tls_connect, Certs,
    TestCert,
};

fn config(
    origin: std::net::SocketAddr,
    port: u16,
    cert: &TestCert,
    run: &std::path::Path,
) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:{plain}"]
threads = 2
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "{run}/bext.pid"
upgrade_sock = "{run}/upgrade.sock"

[tls]
listen = ["127.0.0.1:{port}"]
cert = "{c}"
key = "{k}"
http3 = true

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/live/*"
proxy = "app"
websocket = true

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
        plain = free_port(),
        c = cert.cert_path.display(),
        k = cert.key_path.display(),
        run = run.display(),
    )
}

/// Load of every kind until `stop`; counts the requests that completed.
fn load(
    bext: &Bext,
    tls: std::net::SocketAddr,
    tls_cfg: Arc<pingora::tls::ClientConfig>,
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    let plain = bext.addr();
    for _ in 0..4 {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if c.get(format!("http://{plain}/x")).send().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Long-polls and websocket tunnels held open across the stop.
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            let _ = reqwest::get(format!("http://{plain}/live/longpoll/slow?ms=60000")).await;
        }));
        tasks.push(tokio::spawn(async move {
            if let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async(format!("ws://{plain}/live/websocket")).await
            {
                while ws.next().await.is_some() {}
            }
        }));
    }
    {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(tcp) = tls_connect(tls, "a.test", tls_cfg).await else {
                return;
            };
            let send = h2_handshake(tcp).await;
            while !stop.load(Ordering::Relaxed) {
                match h2_get(&send, &format!("https://a.test:{}/x", tls.port())).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => return,
                };
            }
        }));
    }
    tasks
}

#[tokio::test]
async fn every_stop_under_load_finishes_and_the_log_stays_small() {
    let certs = Certs::new();
    let cert = certs.make("a", &["a.test"]);
    let origin = StubOrigin::start("o").await;
    for round in 0..20 {
        let run = tempfile::tempdir().unwrap();
        let port = free_tcp_udp_port();
        let mut bext = Bext::start(&config(origin.addr(), port, &cert, run.path())).await;
        let tls: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let tls_cfg = client_config(&[&cert], &[b"h2"]);
        let mut tasks = load(&bext, tls, tls_cfg, &stop, &done);
        // HTTP/3: a connection looping requests (QUIC comes up just after TCP).
        let h3 = {
            let (stop, done, der) = (stop.clone(), done.clone(), cert.der.clone());
            tokio::spawn(async move {
                let cert = TestCert {
                    der,
                    cert_path: Default::default(),
                    key_path: Default::default(),
                };
                for _ in 0..50 {
                    if let Ok(mut c) = h3_connect(tls, "a.test", &[&cert]).await {
                        while !stop.load(Ordering::Relaxed) {
                            let req = http::Request::get(format!("https://a.test:{port}/x"))
                                .body(())
                                .unwrap();
                            match crate::tls_support::h3_request(&mut c.send, req, None).await {
                                Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                                Err(_) => return,
                            };
                        }
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        tasks.push(h3);
        // Let the load run (no timing is asserted: only that it served).
        while done.load(Ordering::Relaxed) < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (signal, bound) = match round % 5 {
            0 | 2 => (libc::SIGINT, 1 + 1),
            1 | 3 => (libc::SIGTERM, 1 + 1),
            // SIGQUIT without a new process to take the sockets: Pingora
            // waits 5 s for the handoff, then stops gracefully.
            _ => (libc::SIGQUIT, 5 + 1 + 1),
        };
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(bext.pid() as i32, signal) }, 0);
        let limit = Duration::from_secs(bound) + bext::stop::MARGIN + Duration::from_secs(5);
        let status = bext.wait_exit(limit).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        let log_size = bext.stderr().len() + bext.stdout().len();
        assert!(
            status.is_some(),
            "round {round}: bext did not exit within {limit:?} of signal {signal}\n{}",
            tail(&bext.stderr())
        );
        assert!(
            log_size < 256 * 1024,
            "round {round}: {log_size} bytes of log\n{}",
            tail(&bext.stderr())
        );
        assert!(
            !bext.stderr().contains("ending the process"),
            "round {round}: the watchdog had to end the process\n{}",
            tail(&bext.stderr())
        );
    }
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(4000)..]
}
