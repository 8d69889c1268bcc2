//! Several bext nodes sharing purges through one real `redis-server`
//! (spawned here on a free port, without persistence; `scripts/setup.sh`
//! installs it): a purge on one node empties the others' caches, Redis going
//! away queues purges until it returns, and a node that missed trimmed
//! entries empties its whole cache.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cache_support::{config, CacheOrigin};
use crate::common::{client, free_port, Bext};
use crate::scrape::{parse, scrape, value_or_zero};

/// A `redis-server` owned by the test: killed when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    async fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.restart().await;
        r
    }

    /// Starts (again, on the same port, empty) and waits until it answers.
    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package `redis-server`; scripts/setup.sh installs it)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < end, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

const PREFIX: &str = "t:";

async fn node(origin: &CacheOrigin, redis: &Redis, name: &str) -> Bext {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "[cluster]\nredis = \"{}\"\nnode_name = \"{name}\"\nkey_prefix = \"{PREFIX}\"\n",
        redis.url()
    );
    Bext::start(&config(listen, origin.addr(), &extra)).await
}

async fn metric(bext: &Bext, name: &str) -> f64 {
    let text = scrape(&client(), &bext.url("")).await;
    value_or_zero(&parse(&text), name, &[])
}

/// Polls `bext`'s metric until `ok` holds (a safety net of `secs`).
async fn wait_metric(bext: &Bext, name: &str, secs: u64, ok: impl Fn(f64) -> bool) -> f64 {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = metric(bext, name).await;
        if ok(v) || Instant::now() > end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cache_status(bext: &Bext, path: &str) -> String {
    let r = client().get(bext.url(path)).send().await.expect("request");
    r.headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Fetches `path` until it is a hit (filled and served from the cache).
async fn fill(bext: &Bext, path: &str) {
    for _ in 0..3 {
        if cache_status(bext, path).await.contains("hit") {
            return;
        }
    }
    panic!("{path} is not cached on {}", bext.addr());
}

/// Polls until `path` is no longer a hit on `bext` (it was purged).
async fn purged_within(bext: &Bext, path: &str, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if !cache_status(bext, path).await.contains("hit") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn purge(bext: &Bext, json: &str) -> serde_json::Value {
    let r = client()
        .post(bext.url("/__bext/cache/purge"))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .expect("purge");
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

async fn both_connected(a: &Bext, b: &Bext) {
    for n in [a, b] {
        let up = wait_metric(n, "bext_cluster_redis_connected", 10, |v| v == 1.0).await;
        assert_eq!(up, 1.0, "{} connected to Redis", n.addr());
    }
}

fn signal(bext: &Bext, sig: i32) {
    // SAFETY: kill(2) of the test's own child process.
    unsafe {
        libc::kill(bext.pid() as i32, sig);
    }
}

#[tokio::test]
async fn purge_by_tag_on_one_node_empties_the_others_cache() {
    let redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let a = node(&origin, &redis, "a").await;
    let mut b = node(&origin, &redis, "b").await;
    both_connected(&a, &b).await;
    let page = "/post/1?cc=public,max-age=600&tag=post:1";
    fill(&a, page).await;
    fill(&b, page).await;

    let reply = purge(&a, r#"{"tag": "post:1"}"#).await;
    assert_eq!(reply["purged"], 1, "{reply}");
    assert_eq!(reply["cluster"], "published", "{reply}");
    assert!(
        purged_within(&b, page, Duration::from_secs(2)).await,
        "node b still serves the purged page"
    );
    assert!(!cache_status(&a, page).await.contains("hit"));
    assert_eq!(metric(&a, "bext_cluster_purges_published_total").await, 1.0);
    let applied = wait_metric(&b, "bext_cluster_purges_applied_total", 5, |v| v >= 1.0).await;
    assert_eq!(applied, 1.0);
    // A node does not apply its own purge a second time.
    assert_eq!(metric(&a, "bext_cluster_purges_applied_total").await, 0.0);
    let entry = redis.cli(&["XRANGE", &format!("{PREFIX}purges"), "-", "+"]);
    assert!(
        entry.contains("post:1") && entry.lines().any(|l| l == "a"),
        "{entry}"
    );

    // A hostile entry is ignored (counted, logged); the stream still flows.
    let stream = format!("{PREFIX}purges");
    redis.cli(&["XADD", &stream, "*", "node", "evil", "body", "{not json"]);
    let bad = wait_metric(&b, "bext_cluster_bad_entries_total", 5, |v| v >= 1.0).await;
    assert_eq!(bad, 1.0);
    fill(&b, page).await;
    let reply = purge(&a, r#"{"url": "http://x.test/none"}"#).await;
    assert_eq!(reply["cluster"], "published", "{reply}");
    let reply = purge(&a, r#"{"all": true}"#).await;
    assert_eq!(reply["cluster"], "published", "{reply}");
    assert!(purged_within(&b, page, Duration::from_secs(2)).await);
    assert!(b.is_running(), "b survived the hostile entry");
}

#[tokio::test]
async fn with_redis_away_purges_stay_local_and_are_published_when_it_returns() {
    let mut redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let a = node(&origin, &redis, "a").await;
    let b = node(&origin, &redis, "b").await;
    both_connected(&a, &b).await;
    let page = "/news?cc=public,max-age=600&tag=news";
    fill(&a, page).await;
    fill(&b, page).await;

    redis.kill();
    wait_metric(&a, "bext_cluster_redis_connected", 10, |v| v == 0.0).await;
    let reply = purge(&a, r#"{"tag": "news"}"#).await;
    assert_eq!(reply["purged"], 1, "{reply}");
    assert_eq!(reply["cluster"], "unavailable", "{reply}");
    assert!(
        !cache_status(&a, page).await.contains("hit"),
        "purged locally"
    );
    assert_eq!(metric(&a, "bext_cluster_purge_queue_length").await, 1.0);
    assert!(
        cache_status(&b, page).await.contains("hit"),
        "b cannot know yet"
    );

    redis.restart().await;
    assert!(
        purged_within(&b, page, Duration::from_secs(20)).await,
        "the queued purge reached node b"
    );
    let queued = wait_metric(&a, "bext_cluster_purge_queue_length", 10, |v| v == 0.0).await;
    assert_eq!(queued, 0.0);
    assert_eq!(metric(&a, "bext_cluster_purges_published_total").await, 1.0);
    let applied = wait_metric(&b, "bext_cluster_purges_applied_total", 5, |v| v >= 1.0).await;
    assert_eq!(applied, 1.0, "b applied the purge itself");
    // Redis came back empty: purges published before may never have been
    // read, so both nodes emptied their caches (once).
    for n in [&a, &b] {
        let resets = wait_metric(n, "bext_cluster_cache_resets_total", 5, |v| v >= 1.0).await;
        assert_eq!(resets, 1.0, "{}", n.stderr());
    }
    assert!(b.stderr().contains("Redis lost its data"), "{}", b.stderr());
}

#[tokio::test]
async fn a_node_that_missed_trimmed_entries_empties_its_cache() {
    let redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let a = node(&origin, &redis, "a").await;
    let b = node(&origin, &redis, "b").await;
    both_connected(&a, &b).await;
    // The stream exists and b has read it.
    purge(&a, r#"{"tag": "warm-up"}"#).await;
    let seen = wait_metric(&b, "bext_cluster_purges_applied_total", 5, |v| v >= 1.0).await;
    assert_eq!(seen, 1.0);
    let keep = "/keep?cc=public,max-age=600&tag=keep";
    fill(&b, keep).await;

    // b is away (stopped, its last id kept in memory) while purges it never
    // sees are published and trimmed away.
    signal(&b, libc::SIGSTOP);
    for i in 0..3 {
        let reply = purge(&a, &format!(r#"{{"tag": "other:{i}"}}"#)).await;
        assert_eq!(reply["cluster"], "published", "{reply}");
    }
    // (Let a's reader pass its own entries first: trimmed before it read
    // them, a would empty its cache too, which is safe but not this test.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = format!("{PREFIX}purges");
    assert_eq!(redis.cli(&["XTRIM", &stream, "MAXLEN", "1"]), "3");
    signal(&b, libc::SIGCONT);

    let resets = wait_metric(&b, "bext_cluster_cache_resets_total", 15, |v| v >= 1.0).await;
    assert_eq!(resets, 1.0, "b counted one reset");
    assert!(
        !cache_status(&b, keep).await.contains("hit"),
        "b emptied its cache rather than serve what it cannot prove fresh"
    );
    assert!(b.stderr().contains("emptied the cache"), "{}", b.stderr());
}

/// Purge propagation on loopback, end to end (purge sent to A → B misses),
/// over 1,000 purges. A measurement, not a test: `cargo test --test it --
/// --ignored cluster::propagation --nocapture`.
#[tokio::test]
#[ignore]
async fn propagation_latency() {
    let redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let a = node(&origin, &redis, "a").await;
    let b = node(&origin, &redis, "b").await;
    both_connected(&a, &b).await;
    let mut ms = Vec::new();
    for i in 0..1000 {
        let page = format!("/m/{i}?cc=public,max-age=600&tag=m:{i}");
        fill(&b, &page).await;
        let t = Instant::now();
        let reply = purge(&a, &format!(r#"{{"tag": "m:{i}"}}"#)).await;
        assert_eq!(reply["cluster"], "published");
        assert!(purged_within(&b, &page, Duration::from_secs(5)).await);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|x, y| x.total_cmp(y));
    let text = scrape(&client(), &b.url("")).await;
    let s = parse(&text);
    let sum = value_or_zero(&s, "bext_cluster_purge_propagation_seconds_sum", &[]);
    let count = value_or_zero(&s, "bext_cluster_purge_propagation_seconds_count", &[]);
    eprintln!(
        "purge propagation over {} purges: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (purge request sent on A → miss seen on B); B's own mean publish→apply {:.2} ms",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() * 99 / 100],
        ms[ms.len() - 1],
        sum / count.max(1.0) * 1000.0
    );
}

#[tokio::test]
async fn with_redis_down_at_start_bext_serves_and_purges_locally() {
    // A Redis that is not there (yet): the port is free, nothing listens.
    let redis = Redis {
        port: free_port(),
        child: None,
    };
    let origin = CacheOrigin::start().await;
    let a = node(&origin, &redis, "a").await;
    let page = "/p?cc=public,max-age=600&tag=p";
    fill(&a, page).await;
    let reply = purge(&a, r#"{"tag": "p"}"#).await;
    assert_eq!(reply["purged"], 1, "{reply}");
    assert_eq!(reply["cluster"], "unavailable", "{reply}");
    assert!(!cache_status(&a, page).await.contains("hit"));
    assert_eq!(metric(&a, "bext_cluster_redis_connected").await, 0.0);
    assert_eq!(metric(&a, "bext_cluster_purge_queue_length").await, 1.0);
}

/// bext spawned here rather than through `Bext`: it needs `SSL_CERT_FILE`
/// (the system CA store, where an operator would add Redis's CA).
struct TlsNode {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsNode {
    async fn start(origin: &CacheOrigin, url: &str, name: &str, ca: &std::path::Path) -> TlsNode {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let extra = format!(
            "[cluster]\nredis = \"{url}\"\nnode_name = \"{name}\"\nkey_prefix = \"{PREFIX}\"\n"
        );
        let path = dir.path().join("bext.toml");
        std::fs::write(&path, config(listen, origin.addr(), &extra)).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_bext"))
            .arg("serve")
            .arg("-c")
            .arg(&path)
            .env("SSL_CERT_FILE", ca)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn bext");
        let end = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(Instant::now() < end, "bext did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        TlsNode {
            child,
            port,
            _dir: dir,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn metric_until(&self, name: &str, want: f64) -> f64 {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let v = value_or_zero(&parse(&scrape(&client(), &self.base()).await), name, &[]);
            if v == want || Instant::now() > end {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn purges_travel_over_tls_with_rediss() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let up = || {
        Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&cert)
            .args(["-h", "localhost", "-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !up() {
        assert!(Instant::now() < end, "redis-server (TLS) did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let origin = CacheOrigin::start().await;
    let url = format!("rediss://localhost:{port}/0");
    let a = TlsNode::start(&origin, &url, "a", &cert).await;
    let b = TlsNode::start(&origin, &url, "b", &cert).await;
    for n in [&a, &b] {
        let v = n.metric_until("bext_cluster_redis_connected", 1.0).await;
        assert_eq!(v, 1.0, "{}", n.stderr());
    }
    let r = client()
        .post(format!("{}/__bext/cache/purge", a.base()))
        .body(r#"{"tag": "tls"}"#)
        .send()
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(reply["cluster"], "published", "{reply}");
    let applied = b
        .metric_until("bext_cluster_purges_applied_total", 1.0)
        .await;
    assert_eq!(applied, 1.0, "{}", b.stderr());
    let _ = server.kill();
    let _ = server.wait();
}
