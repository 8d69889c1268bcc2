//! A small load loop, HTTP/3 (quinn + h3) versus HTTP/2 (h2 over rustls),
//! through the same bext and origin: requests per second and latency
//! percentiles. Ignored by default (numbers, not a check); run it in release:
//!
//! ```sh
//! cargo test --release --test h3_load -- --ignored --nocapture
//! BEXT_LOAD_REQUESTS=20000 BEXT_LOAD_CONCURRENCY=64 cargo test --release --test h3_load -- --ignored --nocapture
//! ```
//!
//! Both protocols use one connection with `concurrency` requests in flight.

mod common;
mod tls_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, Bext, StubOrigin};
use tls_support::*;
use tokio::sync::Mutex;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    name: &'static str,
    ok: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
    }

    fn print(&self) {
        println!(
            "{:<4} requests={} req/s={:.0} p50={:.2?} p99={:.2?} max={:.2?}",
            self.name,
            self.ok,
            self.ok as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(1.0),
        );
    }
}

/// Runs `total` requests with `concurrency` workers pulling from a shared counter.
async fn run<F, Fut>(name: &'static str, total: usize, concurrency: usize, one: F) -> Stats
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let left = Arc::new(Mutex::new(total));
    let one = Arc::new(one);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (left, one) = (left.clone(), one.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ok = 0;
            loop {
                {
                    let mut l = left.lock().await;
                    if *l == 0 {
                        break;
                    }
                    *l -= 1;
                }
                let t = Instant::now();
                if one().await {
                    ok += 1;
                }
                lat.push(t.elapsed());
            }
            (ok, lat)
        }));
    }
    let mut stats = Stats {
        name,
        ok: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for w in workers {
        let (ok, lat) = w.await.unwrap();
        stats.ok += ok;
        stats.latencies.extend(lat);
    }
    stats.elapsed = start.elapsed();
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load numbers: cargo test --release --test h3_load -- --ignored --nocapture"]
async fn h3_versus_h2_requests_per_second_and_p99() {
    let total = env_or("BEXT_LOAD_REQUESTS", 5000);
    let concurrency = env_or("BEXT_LOAD_CONCURRENCY", 32);
    let certs = Certs::new();
    let cert = certs.make("a", &["a.test"]);
    let origin = StubOrigin::start("o").await;
    let port = free_tcp_udp_port();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\nthreads = 1\n\
         [tls]\nlisten = [\"127.0.0.1:{port}\"]\ncert = \"{}\"\nkey = \"{}\"\nhttp3 = true\n\
         [upstreams.app]\nnodes = [\"{}\"]\n\
         [[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\ncache = false\n",
        free_port(),
        cert.cert_path.display(),
        cert.key_path.display(),
        origin.addr()
    );
    let _bext = Bext::start(&toml).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp(addr).await;
    println!(
        "{total} GETs of a ~0.5 KB echo, {concurrency} in flight on one connection, bext threads=1"
    );

    // HTTP/2
    let s = tls_connect(addr, "a.test", client_config(&[&cert], &[b"h2"]))
        .await
        .unwrap();
    let send = h2_handshake(s).await;
    let h2 = run("h2", total, concurrency, move || {
        let send = send.clone();
        async move {
            matches!(h2_get(&send, "https://a.test/load").await, Ok((r, _)) if r.status() == 200)
        }
    })
    .await;
    h2.print();

    // HTTP/3
    let client = h3_connect_ready(addr, "a.test", &[&cert]).await;
    let send = client.send.clone();
    let h3 = run("h3", total, concurrency, move || {
        let mut send = send.clone();
        async move {
            let req = http::Request::get("https://a.test/load").body(()).unwrap();
            matches!(h3_request(&mut send, req, None).await, Ok(r) if r.status() == 200)
        }
    })
    .await;
    h3.print();
    drop(client);

    assert_eq!(h2.ok, total, "h2 requests failed");
    assert_eq!(h3.ok, total, "h3 requests failed");
}
