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

// ---------------------------------------------------------------------------
// Shared rate limits, switches, health hints and the cluster endpoint
// ---------------------------------------------------------------------------

fn cluster_section(redis: &Redis, name: &str) -> String {
    format!(
        "\n[cluster]\nredis = \"{}\"\nnode_name = \"{name}\"\nkey_prefix = \"{PREFIX}\"\n",
        redis.url()
    )
}

/// 20 requests a second, bursts of 10, per client.
const RATE: (f64, f64) = (20.0, 10.0);
const LIMITS: &str = "[limits]\nrate = { requests = 20, per = \"1s\", burst = 10 }\n";

/// Three nodes on one Redis in front of `origin`, `extra` in each config.
async fn three(origin: &CacheOrigin, redis: &Redis, extra: &str) -> [Bext; 3] {
    let mut nodes = vec![];
    for name in ["a", "b", "c"] {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = config(
            listen,
            origin.addr(),
            &format!("{extra}{}", cluster_section(redis, name)),
        );
        nodes.push(Bext::start(&text).await);
    }
    let nodes: [Bext; 3] = nodes.try_into().unwrap_or_else(|_| unreachable!());
    all_linked(&nodes).await;
    nodes
}

/// Waits until every node's subscriber (rate rounds, switches) is connected.
async fn all_linked(nodes: &[Bext]) {
    for n in nodes {
        let up = wait_metric(n, "bext_cluster_events_connected", 15, |v| v == 1.0).await;
        assert_eq!(up, 1.0, "{} linked to Redis: {}", n.addr(), n.stderr());
    }
}

/// A client that is neither loopback-admin nor anyone else's: its own
/// address on the loopback network.
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, last]))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// What a paced client got: answers by status, transport failures, time.
#[derive(Debug, Default)]
struct Tally {
    ok: u32,
    limited: u32,
    other: u32,
    failed: u32,
    secs: f64,
}

/// Sends `rps` requests a second round-robin over `nodes` for `secs`.
async fn paced(c: &reqwest::Client, nodes: &[&Bext], rps: f64, secs: f64) -> Tally {
    let mut t = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let total = (rps * secs) as usize;
    for i in 0..total {
        tick.tick().await;
        match c.get(nodes[i % nodes.len()].url("/nocache/r")).send().await {
            Ok(r) => match r.status().as_u16() {
                200 => t.ok += 1,
                429 => t.limited += 1,
                _ => t.other += 1,
            },
            Err(_) => t.failed += 1,
        }
    }
    t.secs = start.elapsed().as_secs_f64();
    t
}

/// Admitted requests as a share of what the global limit allows over the run.
fn share(t: &Tally) -> f64 {
    f64::from(t.ok) / (RATE.0 * t.secs + RATE.1)
}

#[tokio::test]
async fn a_client_spread_over_three_nodes_is_held_to_about_its_global_rate() {
    let redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let [a, b, c] = three(&origin, &redis, LIMITS).await;
    // 3× the limit, spread evenly: unshared, each node would admit nearly
    // all of its third (≈ 2.7× the global limit).
    let t = paced(&client_from(21), &[&a, &b, &c], 3.0 * RATE.0, 5.0).await;
    let s = share(&t);
    eprintln!("admitted {:.0}% of the global limit: {t:?}", s * 100.0);
    assert_eq!((t.failed, t.other), (0, 0), "{t:?}");
    assert!(
        s > 0.5 && s < 2.0,
        "admitted {s:.2}× the global limit: {t:?}"
    );
    for n in [&a, &b, &c] {
        let charged = metric(n, "bext_cluster_rate_remote_requests_total").await;
        assert!(
            charged > 0.0,
            "{} charged nothing from the others",
            n.addr()
        );
    }
    assert!(metric(&a, "bext_cluster_rate_sync_rounds_total").await > 0.0);
    assert_eq!(
        metric(&a, "bext_cluster_rate_sync_failures_total").await,
        0.0
    );
}

/// Accuracy of the shared limit over several runs (a measurement):
/// `cargo test --test it -- --ignored cluster::rate_accuracy --nocapture`.
#[tokio::test]
#[ignore]
async fn rate_accuracy() {
    let redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let [a, b, c] = three(&origin, &redis, LIMITS).await;
    let mut shares = vec![];
    for run in 0..6u8 {
        let t = paced(&client_from(40 + run), &[&a, &b, &c], 3.0 * RATE.0, 10.0).await;
        assert_eq!((t.failed, t.other), (0, 0), "{t:?}");
        eprintln!("run {run}: {:.1}% {t:?}", share(&t) * 100.0);
        shares.push(share(&t) * 100.0);
    }
    shares.sort_by(|x, y| x.total_cmp(y));
    eprintln!(
        "a client at 3× its limit over 3 nodes got {:.0}–{:.0}% of its global limit through ({} runs of 10 s, sync every 200 ms)",
        shares[0],
        shares[shares.len() - 1],
        shares.len()
    );
    // The worst case: a burst at all three nodes at once, inside one sync
    // period, before any node hears of the others.
    let burst = client_from(60);
    let sends = [&a, &b, &c]
        .iter()
        .flat_map(|n| (0..30).map(|_| burst.get(n.url("/nocache/r")).send()))
        .collect::<Vec<_>>();
    let ok = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == 200))
        .count();
    eprintln!(
        "a burst of 90 requests at once over 3 nodes: {ok} admitted (burst {})",
        RATE.1
    );
}

#[tokio::test]
async fn with_redis_down_under_load_no_request_fails_and_limits_are_local() {
    let mut redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let [a, b, c] = three(&origin, &redis, LIMITS).await;
    let nodes = [&a, &b, &c];
    let load = {
        let nodes: Vec<String> = nodes.iter().map(|n| n.url("/nocache/r")).collect();
        tokio::spawn(async move {
            let c = client_from(22);
            let mut t = Tally::default();
            let end = Instant::now() + Duration::from_secs(6);
            let mut i = 0;
            while Instant::now() < end {
                match c.get(&nodes[i % nodes.len()]).send().await {
                    Ok(r) if r.status() == 200 => t.ok += 1,
                    Ok(r) if r.status() == 429 => t.limited += 1,
                    Ok(_) => t.other += 1,
                    Err(_) => t.failed += 1,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            t
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.kill();
    for n in nodes {
        let down = wait_metric(n, "bext_cluster_events_connected", 10, |v| v == 0.0).await;
        assert_eq!(down, 0.0);
    }
    let t = load.await.unwrap();
    assert_eq!((t.failed, t.other), (0, 0), "no request failed: {t:?}");
    assert!(t.ok > 0 && t.limited > 0, "{t:?}");
    for n in nodes {
        let f = wait_metric(n, "bext_cluster_rate_sync_failures_total", 5, |v| v > 0.0).await;
        assert!(f > 0.0, "{} counted rounds not shared", n.addr());
    }
    // Each node still holds a client to its own limit: a burst of 40 at one
    // node gets about its burst of 10 through.
    let c = client_from(23);
    let answers =
        futures_util::future::join_all((0..40).map(|_| c.get(a.url("/nocache/r")).send())).await;
    let mut ok = 0;
    for r in answers {
        let status = r.expect("served").status();
        assert!(status == 200 || status == 429, "{status}");
        ok += u32::from(status == 200);
    }
    // (A slow machine refills a few tokens while the 40 are answered.)
    assert!((10..=20).contains(&ok), "local limit admitted {ok} of 40");
    assert!(a.stderr().contains("limits are local"), "{}", a.stderr());
}

async fn post_json(bext: &Bext, path: &str, body: &str) -> serde_json::Value {
    let r = client()
        .post(bext.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("admin call");
    assert_eq!(r.status(), 200, "{path}");
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// Polls `GET path` as a non-admin client on every node until each answers `status`.
async fn all_answer(nodes: &[&Bext], path: &str, status: u16, secs: u64) {
    let c = client_from(30);
    for n in nodes {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = c.get(n.url(path)).send().await.expect("request").status();
            if got == status {
                break;
            }
            assert!(
                Instant::now() < end,
                "{} still answers {got}, not {status}: {}",
                n.addr(),
                n.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn maintenance_switched_on_one_node_applies_on_every_node() {
    let redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let [a, b, c] = three(&origin, &redis, "").await;
    let all = [&a, &b, &c];
    all_answer(&all, "/nocache/m", 200, 5).await;

    let reply = post_json(&b, "/__bext/maintenance", r#"{"site": "*", "on": true}"#).await;
    assert_eq!(reply["cluster"], "published", "{reply}");
    all_answer(&all, "/nocache/m", 503, 5).await;
    for n in [&a, &c] {
        let applied = wait_metric(n, "bext_cluster_state_updates_applied_total", 5, |v| {
            v >= 1.0
        })
        .await;
        assert_eq!(applied, 1.0);
    }
    assert!(a.stderr().contains("(from the cluster)"), "{}", a.stderr());
    let state = redis.cli(&["HGETALL", &format!("{PREFIX}state")]);
    assert!(state.contains(r#"["maintenance","*"]"#), "{state}");

    let reply = post_json(&c, "/__bext/maintenance", r#"{"site": "*", "on": false}"#).await;
    assert_eq!(reply["cluster"], "published", "{reply}");
    all_answer(&all, "/nocache/m", 200, 5).await;

    // A node that starts later reads the state when it connects.
    post_json(&a, "/__bext/maintenance", r#"{"site": "*", "on": true}"#).await;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let d = Bext::start(&config(
        listen,
        origin.addr(),
        &cluster_section(&redis, "d"),
    ))
    .await;
    all_answer(&[&d], "/nocache/m", 503, 10).await;
}

mod upstreams {
    use super::*;
    use crate::upstream_support::{self as us, TestNode};

    async fn three_edges(redis: &Redis, nodes: &[&TestNode], extra: &str) -> [Bext; 3] {
        let mut edges = vec![];
        for name in ["a", "b", "c"] {
            let text = us::config(free_port(), nodes, extra) + &cluster_section(redis, name);
            edges.push(Bext::start(&text).await);
        }
        let edges: [Bext; 3] = edges.try_into().unwrap_or_else(|_| unreachable!());
        all_linked(&edges).await;
        edges
    }

    async fn node_of(c: &reqwest::Client, edge: &Bext) -> String {
        us::get(c, &edge.url("/x"), None).await.1
    }

    #[tokio::test]
    async fn a_node_drained_through_one_edge_gets_no_new_requests_from_any() {
        let redis = Redis::start().await;
        let (n0, n1) = (TestNode::start("n0").await, TestNode::start("n1").await);
        let [a, b, c] = three_edges(&redis, &[&n0, &n1], "").await;
        let http = client();
        for e in [&a, &b, &c] {
            let seen: Vec<String> =
                futures_util::future::join_all((0..4).map(|_| node_of(&http, e))).await;
            assert!(seen.iter().any(|n| n == "n1"), "{seen:?}");
        }

        let reply = post_json(&a, "/__bext/upstreams/app/nodes/n1/drain", "").await;
        assert_eq!(reply["cluster"], "published", "{reply}");
        for e in [&b, &c] {
            us::wait_state(&http, &e.url(""), "n1", "draining").await;
        }
        let before = n1.hits();
        for e in [&b, &c] {
            for _ in 0..10 {
                assert_eq!(node_of(&http, e).await, "n0");
            }
        }
        assert_eq!(n1.hits(), before, "b and c sent n1 nothing new");

        let reply = post_json(&c, "/__bext/upstreams/app/nodes/n1/undrain", "").await;
        assert_eq!(reply["cluster"], "published", "{reply}");
        us::wait_state(&http, &a.url(""), "n1", "healthy").await;
        let seen: Vec<String> =
            futures_util::future::join_all((0..4).map(|_| node_of(&http, &a))).await;
        assert!(seen.iter().any(|n| n == "n1"), "{seen:?}");
    }

    #[tokio::test]
    async fn the_affinity_cookie_of_one_edge_is_honoured_by_the_others() {
        let redis = Redis::start().await;
        let (n0, n1) = (TestNode::start("n0").await, TestNode::start("n1").await);
        let [a, b, c] = three_edges(&redis, &[&n0, &n1], &us::sticky_conf()).await;
        let http = client();
        let (status, node, cookie) = us::get(&http, &a.url("/x"), None).await;
        assert_eq!(status, 200);
        let cookie = cookie.expect("a issued an affinity cookie");
        for e in [&b, &c] {
            for _ in 0..6 {
                let (s, n, reissued) = us::get(&http, &e.url("/x"), Some(&cookie)).await;
                assert_eq!((s, n.as_str()), (200, node.as_str()), "{}", e.addr());
                assert!(reissued.is_none(), "{} reissued the cookie", e.addr());
            }
        }
    }

    #[tokio::test]
    async fn a_node_one_edge_sees_fail_is_probed_by_the_others_at_once() {
        let redis = Redis::start().await;
        let (n0, n1) = (TestNode::start("n0").await, TestNode::start("n1").await);
        // a probes every 200 ms, b only every minute: b can only learn of
        // n1's failure this soon from a's hint (and then its own probes).
        let fast = r#"health = { path = "/health", interval = "200ms", timeout = "1s", healthy_after = 1, unhealthy_after = 1 }"#;
        let slow = r#"health = { path = "/health", interval = "60s", timeout = "1s", healthy_after = 1, unhealthy_after = 1 }"#;
        let a = Bext::start(
            &(us::config(free_port(), &[&n0, &n1], fast) + &cluster_section(&redis, "a")),
        )
        .await;
        let b = Bext::start(
            &(us::config(free_port(), &[&n0, &n1], slow) + &cluster_section(&redis, "b")),
        )
        .await;
        let edges = [a, b];
        all_linked(&edges).await;
        let [a, b] = edges;
        let http = client();
        us::wait_state(&http, &b.url(""), "n1", "healthy").await;

        n1.set_healthy(false);
        us::wait_state(&http, &a.url(""), "n1", "unhealthy").await;
        let took = us::wait_state(&http, &b.url(""), "n1", "unhealthy").await;
        assert!(
            took < Duration::from_secs(30),
            "b took {took:?}: {}",
            b.stderr()
        );
        let hints = wait_metric(&b, "bext_cluster_health_hints_received_total", 5, |v| {
            v >= 1.0
        })
        .await;
        assert!(hints >= 1.0);
        assert!(metric(&a, "bext_cluster_health_hints_published_total").await >= 1.0);
        assert!(
            b.stderr().contains("another edge saw it fail"),
            "{}",
            b.stderr()
        );
    }
}

#[tokio::test]
async fn the_cluster_endpoint_lists_the_peers() {
    let redis = Redis::start().await;
    let origin = CacheOrigin::start().await;
    let [a, b, c] = three(&origin, &redis, "").await;
    let http = client();
    let end = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = crate::support::get_json(&http, &a.url("/__bext/cluster")).await;
        let n = v["peers"].as_array().map_or(0, |p| p.len());
        if n == 2 || Instant::now() > end {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["node"], "a", "{v}");
    assert_eq!(v["redis"]["state"], "connected", "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let peers = v["peers"].as_array().expect("peers");
    let names: Vec<&str> = peers.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["b", "c"], "{v}");
    for (p, n) in peers.iter().zip([&b, &c]) {
        let own = crate::support::get_json(&http, &n.url("/__bext/cluster")).await;
        assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(p["config_digest"], own["config_digest"], "{v}");
        assert!(p["last_seen_ms_ago"].as_u64().unwrap() < 10_000);
    }
    assert_eq!(metric(&a, "bext_cluster_peers").await, 2.0);
    assert!(
        v["purge_stream"]["stream"]
            .as_str()
            .unwrap()
            .ends_with("purges"),
        "{v}"
    );

    // The cluster's series keep the exposition clean.
    let text = scrape(&client(), &a.url("")).await;
    assert!(
        text.contains("bext_cluster_rate_sync_rounds_total"),
        "{text}"
    );
    let report = crate::scrape::promtool_check(&text);
    assert!(report.is_empty(), "promtool check metrics:\n{report}");

    // Not for everyone: the admin API's rules.
    let r = client_from(31)
        .get(a.url("/__bext/cluster"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn bext_check_prints_the_cluster_settings_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let origin = SocketAddr::from(([127, 0, 0, 1], 4000));
    let extra = "[cluster]\nredis = \"redis://u:hunter2@10.0.0.9:6379/0\"\nnode_name = \"edge-a\"\nsync_interval = \"150ms\"\n";
    let path = dir.path().join("bext.toml");
    std::fs::write(&path, config(listen, origin, extra)).unwrap();
    let out = crate::common::run_bext(&["check", "-c", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("cluster: "))
        .unwrap_or_else(|| panic!("no cluster line: {text}"));
    assert_eq!(
        line,
        "cluster: node edge-a on redis://u:***@10.0.0.9:6379/0 (keys bext:*, rate sync every 150ms); shared: purges, rate limits (approximate), maintenance, drain, health hints"
    );
    assert!(!text.contains("hunter2"));
}
