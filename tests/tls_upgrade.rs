//! Certificates are re-read by a graceful upgrade (`bext reload`), and the
//! QUIC socket, which is not part of Pingora's fd handoff, is re-bound by the
//! new process once the old one lets go of it.

mod common;
mod tls_support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Bext, StubOrigin, BEXT};
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
