//! Certificates are re-read by a graceful upgrade (`bext reload --upgrade`),
//! and HTTP/3 keeps answering across it: the QUIC socket is not part of
//! Pingora's fd handoff, the new process binds the port next to the old one
//! (`SO_REUSEPORT`) and the kernel steers each datagram to the process that
//! owns its connection (`src/h3/socket.rs`).

mod common;
mod tls_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, run_bext, Bext, StubOrigin, BEXT};
use tls_support::*;

/// Kills the process named by a pid file when dropped (the upgraded bext
/// runs in its own process group, outside the harness's handle).
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: plain kill(2) of the bext this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_certificates_and_rebinds_http3() {
    let certs = Certs::new();
    let old = certs.make("site", &["a.test"]);
    let origin = StubOrigin::start("o").await;
    let port = free_tcp_udp_port();
    let run_dir = tempfile::tempdir().unwrap();
    let pid_file = run_dir.path().join("bext.pid");
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{plain}"]
threads = 1
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "{pid}"
upgrade_sock = "{sock}"

[tls]
listen = ["127.0.0.1:{port}"]
cert = "{c}"
key = "{k}"
http3 = true

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
        plain = free_port(),
        pid = pid_file.display(),
        sock = run_dir.path().join("upgrade.sock").display(),
        c = old.cert_path.display(),
        k = old.key_path.display(),
        origin = origin.addr(),
    );
    let mut first = Bext::start(&toml).await;
    let _cleanup = KillOnDrop(pid_file.clone());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp(addr).await;
    {
        let mut c = h3_connect_ready(addr, "a.test", &[&old]).await;
        assert_eq!(
            h3_get(&mut c.send, "https://a.test/before").await.status(),
            200
        );
    }

    // Renew the certificate in place, then upgrade.
    let new = certs.make("site", &["a.test"]);
    assert_ne!(old.der, new.der);
    let log = std::fs::File::create(run_dir.path().join("reload.log")).unwrap();
    let status = Command::new(BEXT)
        .args(["reload", "--upgrade", "-c"])
        .arg(first.dir().join("bext.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("run bext reload");
    assert!(
        status.success(),
        "bext reload failed:\n{}",
        std::fs::read_to_string(run_dir.path().join("reload.log")).unwrap_or_default()
    );

    // TCP is handed over at once: new handshakes get the renewed certificate.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = tls_connect(addr, "a.test", insecure_client_config()).await {
            if peer_leaf(&s) == new.der {
                break;
            }
        }
        assert!(
            Instant::now() < end,
            "the renewed certificate was never served over TCP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old process drains and exits; the new one then owns the UDP port.
    assert!(
        first.wait_exit(Duration::from_secs(60)).await.is_some(),
        "the old bext did not exit after the upgrade"
    );
    // Trusting only the renewed certificate: this succeeds only against the
    // new process's QUIC endpoint.
    let mut c = h3_connect_ready(addr, "a.test", &[&new]).await;
    let r = h3_get(&mut c.send, "https://a.test/after").await;
    assert_eq!(r.status(), 200);
    assert_eq!(origin.requests_to("/after").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_inflight_h3_request_finish() {
    let certs = Certs::new();
    let cert = certs.make("a", &["a.test"]);
    let origin = StubOrigin::start("o").await;
    let port = free_tcp_udp_port();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\nthreads = 1\ngrace_period = \"10s\"\n\
         [tls]\nlisten = [\"127.0.0.1:{port}\"]\ncert = \"{}\"\nkey = \"{}\"\nhttp3 = true\n\
         [upstreams.app]\nnodes = [\"{}\"]\n\
         [[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\ncache = false\n",
        free_port(),
        cert.cert_path.display(),
        cert.key_path.display(),
        origin.addr()
    );
    let mut bext = Bext::start(&toml).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = h3_connect_ready(addr, "a.test", &[&cert]).await;
    let mut send = c.send.clone();
    let inflight =
        tokio::spawn(
            async move { h3_get(&mut send, "https://a.test/inflight/slow?ms=1500").await },
        );
    // Once the origin holds the request, ask bext to stop.
    assert!(
        origin
            .wait_for(Duration::from_secs(30), |r| r
                .iter()
                .any(|r| r.path == "/inflight/slow"))
            .await
    );
    bext.sigterm();
    let r = inflight.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.body[..], b"slow done");
    assert!(bext.wait_exit(Duration::from_secs(60)).await.is_some());
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Running (not exited): a zombie still answers kill(pid, 0), so look at its state.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Generation `generation` of the config: its routes say which one answered.
/// The grace period lets a long poll in flight at the drain finish on the
/// old process.
fn generation_config(
    plain: u16,
    port: u16,
    run: &Path,
    cert: &TestCert,
    origin: &StubOrigin,
    generation: u32,
) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{plain}"]
threads = 2
grace_period = "5s"
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
pattern = "/*"
proxy = "app"
cache = false
headers = {{ "X-Generation" = "{generation}" }}
"#,
        run = run.display(),
        c = cert.cert_path.display(),
        k = cert.key_path.display(),
        origin = origin.addr(),
    )
}

/// What the HTTP/3 clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Requests the server declared unprocessed, retried on a new connection.
    retried: AtomicU64,
    connections: AtomicU64,
    failed: Mutex<Vec<String>>,
    /// Responses per `X-Generation`.
    generations: Mutex<BTreeMap<u32, u64>>,
}

impl Tally {
    fn seen(&self, generation: u32) -> u64 {
        self.generations
            .lock()
            .unwrap()
            .get(&generation)
            .copied()
            .unwrap_or(0)
    }
}

/// An HTTP/3 client that behaves like a browser: one connection for its
/// requests, one request at a time; after a GOAWAY (or a request the server
/// did not process) a new connection, on which that request is retried.
/// `fresh_every`: also open a new connection after that many requests (a
/// browser opening new tabs), so new connections are made all along.
/// `slow_ms`: each request waits that long at the origin (a long poll).
async fn browser(
    addr: SocketAddr,
    der: pingora::tls::CertificateDer<'static>,
    fresh_every: Option<u64>,
    slow_ms: Option<u64>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let cert = TestCert {
        der,
        cert_path: Default::default(),
        key_path: Default::default(),
    };
    let (mut conn, mut on_conn, mut i) = (None::<H3Client>, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if fresh_every.is_some_and(|n| on_conn >= n) {
            conn = None;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match h3_connect(addr, "a.test", &[&cert]).await {
                Ok(c) => {
                    tally.connections.fetch_add(1, Ordering::Relaxed);
                    on_conn = 0;
                    conn.insert(c)
                }
                Err(e) => {
                    tally.failed.lock().unwrap().push(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let url = match slow_ms {
            Some(ms) => format!("https://a.test/loop/{i}/slow?ms={ms}"),
            None => format!("https://a.test/loop/{i}"),
        };
        match h3_try_get(&mut c.send, &url).await {
            Ok(r) if r.status() == 200 => {
                let generation = r.header("x-generation").and_then(|g| g.parse().ok());
                match generation {
                    Some(g) => *tally.generations.lock().unwrap().entry(g).or_default() += 1,
                    None => tally.failed.lock().unwrap().push("no X-Generation".into()),
                }
                tally.ok.fetch_add(1, Ordering::Relaxed);
                (i, on_conn) = (i + 1, on_conn + 1);
            }
            Ok(r) => {
                let failure = format!("/loop/{i}: status {}", r.status());
                tally.failed.lock().unwrap().push(failure);
                i += 1;
            }
            Err(H3Failure::Unprocessed(_)) => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Err(H3Failure::Failed(e)) => {
                tally.failed.lock().unwrap().push(format!("/loop/{i}: {e}"));
                (conn, i) = (None, i + 1);
            }
        }
    }
}

/// Waits (bounded) until `cond` holds.
async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_keeps_answering_across_three_handoffs() {
    let certs = Certs::new();
    let cert = certs.make("site", &["a.test"]);
    let origin = StubOrigin::start("o").await;
    let (plain, port) = (free_port(), free_tcp_udp_port());
    let run = tempfile::tempdir().unwrap();
    let pid_file = run.path().join("bext.pid");
    let mut first = Bext::start(&generation_config(
        plain,
        port,
        run.path(),
        &cert,
        &origin,
        0,
    ))
    .await;
    let _cleanup = KillOnDrop(pid_file.clone());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp(addr).await;
    drop(h3_connect_ready(addr, "a.test", &[&cert]).await);

    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    // Three clients on long-lived connections, one opening a new connection
    // every 20 requests, and one long poll of 3 s at a time: it keeps the
    // old process's socket open for seconds into its drain, the window in
    // which a new connection would find no QUIC server without the steering.
    let clients: Vec<_> = [(None, None), (None, None), (None, None), (Some(20), None)]
        .into_iter()
        .chain([(None, Some(3000))])
        .map(|(fresh, slow)| {
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(browser(addr, cert.der.clone(), fresh, slow, stop, tally))
        })
        .collect();
    wait_until(
        "HTTP/3 load before the first handoff",
        Duration::from_secs(30),
        || tally.ok.load(Ordering::Relaxed) >= 50,
    )
    .await;

    let conf = first.dir().join("bext.toml");
    let mut old = read_pid(&pid_file).expect("pid file");
    for generation in 1..=3u32 {
        std::fs::write(
            &conf,
            generation_config(plain, port, run.path(), &cert, &origin, generation),
        )
        .unwrap();
        let log = run.path().join(format!("reload-{generation}.log"));
        let out = run_bext(&[
            "reload",
            "--upgrade",
            "-c",
            conf.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--timeout",
            "60s",
        ]);
        assert!(
            out.status.success(),
            "handoff {generation}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let new = read_pid(&pid_file).expect("pid file after the handoff");
        assert_ne!(
            new, old,
            "handoff {generation}: the pid file still names the old process"
        );
        // The new process holds the sockets; the old one still serves its
        // connections (Pingora drains it 5 s later).
        let old_before = tally.seen(generation - 1);
        wait_until(
            &format!("handoff {generation}: the new process answering HTTP/3"),
            Duration::from_secs(30),
            || tally.seen(generation) > 0,
        )
        .await;
        if generation == 1 {
            assert!(first.wait_exit(Duration::from_secs(60)).await.is_some());
        } else {
            wait_until(
                &format!("handoff {generation}: the old process exiting"),
                Duration::from_secs(60),
                || !alive(old),
            )
            .await;
        }
        assert!(
            tally.seen(generation - 1) > old_before,
            "handoff {generation}: the old process answered nothing on its connections after the new one took over"
        );
        old = new;
    }
    // A moment of the last generation alone, then the verdict.
    let last = tally.seen(3);
    wait_until(
        "requests after the last handoff",
        Duration::from_secs(30),
        || tally.seen(3) >= last + 50,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    let failed = tally.failed.lock().unwrap().clone();
    eprintln!(
        "HTTP/3 across 3 handoffs: {} requests answered, {} failed, {} declared unprocessed by the server and retried, {} connections; responses per generation {:?}",
        tally.ok.load(Ordering::Relaxed),
        failed.len(),
        tally.retried.load(Ordering::Relaxed),
        tally.connections.load(Ordering::Relaxed),
        tally.generations.lock().unwrap(),
    );
    assert!(failed.is_empty(), "failed HTTP/3 requests: {failed:#?}");
    for generation in 0..=3 {
        assert!(
            tally.seen(generation) > 0,
            "generation {generation} never answered over HTTP/3"
        );
    }
}
