//! Hostile or broken input on the TLS side: bad certificate files are config
//! errors, and plain HTTP on the TLS port, handshake garbage, HTTP/2 rapid
//! resets and header floods neither crash bext nor stop it serving others.

mod common;
mod tls_support;

use std::net::SocketAddr;
use std::time::Duration;

use common::{free_port, run_bext, Bext, StubOrigin};
use http::Request;
use tls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(
    plain: u16,
    tls_port: u16,
    cert: &TestCert,
    key: &TestCert,
    origin: SocketAddr,
) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{plain}\"]\nthreads = 2\n\
         [tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncert = \"{}\"\nkey = \"{}\"\n\
         [upstreams.app]\nnodes = [\"{origin}\"]\n\
         [[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\ncache = false\n",
        cert.cert_path.display(),
        key.key_path.display(),
    )
}

struct Fixture {
    bext: Bext,
    tls: SocketAddr,
    cert: TestCert,
    _certs: Certs,
    _origin: StubOrigin,
}

async fn start() -> Fixture {
    let certs = Certs::new();
    let cert = certs.make("a", &["a.test"]);
    let origin = StubOrigin::start("o").await;
    let tls_port = free_port();
    let bext = Bext::start(&config(free_port(), tls_port, &cert, &cert, origin.addr())).await;
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    wait_tcp(tls).await;
    Fixture {
        bext,
        tls,
        cert,
        _certs: certs,
        _origin: origin,
    }
}

/// A fresh HTTPS (h2) request still gets a 200.
async fn still_serves(f: &mut Fixture) {
    assert!(f.bext.is_running(), "bext died:\n{}", f.bext.stderr());
    let s = tls_connect(f.tls, "a.test", client_config(&[&f.cert], &[b"h2"]))
        .await
        .expect("handshake after abuse");
    let send = h2_handshake(s).await;
    let (resp, _) = h2_get(&send, "https://a.test/still-ok")
        .await
        .expect("h2 get");
    assert_eq!(resp.status(), 200);
}

/// Reads until EOF or 10 s, whichever comes first.
async fn read_some(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

#[test]
fn check_names_missing_and_mismatched_certificate_files() {
    let certs = Certs::new();
    let a = certs.make("a", &["a.test"]);
    let b = certs.make("b", &["b.test"]);
    let dir = certs.path();
    let run = |toml: String| {
        let path = dir.join("bext.toml");
        std::fs::write(&path, toml).unwrap();
        let out = run_bext(&["check", "-c", path.to_str().unwrap()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let origin: SocketAddr = "127.0.0.1:4000".parse().unwrap();

    let (code, err) = run(config(8080, 8443, &a, &b, origin));
    assert_eq!(code, Some(1));
    assert!(err.contains("tls.key: the private key in"), "{err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");

    let missing = TestCert {
        der: a.der.clone(),
        cert_path: dir.join("nope.crt"),
        key_path: a.key_path.clone(),
    };
    let (code, err) = run(config(8080, 8443, &missing, &a, origin));
    assert_eq!(code, Some(1));
    assert!(err.contains("tls.cert: cannot read"), "{err}");
    assert!(err.contains("nope.crt"), "{err}");

    let (code, err) = run(config(8080, 8443, &a, &a, origin));
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let mut f = start().await;
    let mut s = TcpStream::connect(f.tls).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let got = read_some(&mut s).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served on the TLS port: {:?}",
        String::from_utf8_lossy(&got)
    );
    still_serves(&mut f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_garbage_is_dropped() {
    let mut f = start().await;
    // random bytes, a truncated ClientHello, an absurd record length, and
    // connections that close right away
    let mut junk = vec![0u8; 4096];
    let mut x: u32 = 12345;
    for b in junk.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let inputs: Vec<Vec<u8>> = vec![
        junk,
        vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
        vec![0x16, 0x03, 0x03, 0xff, 0xff, 0x01],
        vec![],
    ];
    for input in inputs.iter().cycle().take(40) {
        let mut s = TcpStream::connect(f.tls).await.unwrap();
        if !input.is_empty() {
            let _ = s.write_all(input).await;
            let _ = s.shutdown().await;
            let got = read_some(&mut s).await;
            assert!(!got.starts_with(b"HTTP/"), "{got:?}");
        }
    }
    still_serves(&mut f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_does_not_hurt_the_server() {
    let mut f = start().await;
    let s = tls_connect(f.tls, "a.test", client_config(&[&f.cert], &[b"h2"]))
        .await
        .unwrap();
    let send = h2_handshake(s).await;
    // Open and immediately cancel (RST_STREAM) streams, as fast as the
    // connection allows. bext either keeps up or closes the connection with
    // GOAWAY (ENHANCE_YOUR_CALM); both are fine, a crash or a hang is not.
    let mut refused = false;
    for i in 0..2000 {
        let mut ready = match send.clone().ready().await {
            Ok(r) => r,
            Err(_) => {
                refused = true;
                break;
            }
        };
        let req = Request::post(format!("https://a.test/reset/{i}/slow?ms=1000"))
            .body(())
            .unwrap();
        match ready.send_request(req, false) {
            Ok((resp, stream)) => {
                drop(stream);
                drop(resp); // → RST_STREAM(CANCEL)
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    eprintln!("rapid reset: connection refused further streams: {refused}");
    still_serves(&mut f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_flood_is_refused() {
    let mut f = start().await;
    let s = tls_connect(f.tls, "a.test", client_config(&[&f.cert], &[b"h2"]))
        .await
        .unwrap();
    let send = h2_handshake(s).await;
    let mut req = Request::get("https://a.test/flood");
    let filler = "x".repeat(1000);
    for i in 0..200 {
        req = req.header(format!("x-flood-{i}"), filler.as_str());
    }
    let outcome = async {
        let mut ready = send.clone().ready().await?;
        let (resp, _) = ready.send_request(req.body(()).unwrap(), true)?;
        let resp = resp.await?;
        Ok::<_, h2::Error>(resp.status().as_u16())
    }
    .await;
    match outcome {
        Ok(status) => assert_ne!(status, 200, "a 200 KB header list was accepted"),
        Err(e) => eprintln!("header flood refused: {e}"),
    }
    still_serves(&mut f).await;
}
