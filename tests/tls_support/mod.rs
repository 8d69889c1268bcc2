//! Helpers for the TLS, HTTP/2 and HTTP/3 tests: leaf certificates made with
//! rcgen in the test, rustls client configs, waiting for the TLS and QUIC
//! ports, and small HTTP/2 and HTTP/3 clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use pingora::tls::{
    CertificateDer, ClientConfig, DigitallySignedStruct, HandshakeSignatureValid, RootCertStore,
    ServerCertVerified, ServerCertVerifier, ServerName, SignatureScheme, TlsConnector, UnixTime,
};
use tempfile::TempDir;
use tokio::net::{TcpStream, UdpSocket};

pub type TlsStream = pingora::tls::ClientTlsStream<TcpStream>;

/// A self-signed leaf certificate (CA:FALSE, as webpki requires) for `hosts`.
pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Certificates written to a temp dir that lives as long as the fixture.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        Certs {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Generates a leaf certificate for `hosts` and writes NAME.crt / NAME.key.
    pub fn make(&self, name: &str, hosts: &[&str]) -> TestCert {
        let ck = rcgen::generate_simple_self_signed(
            hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        )
        .expect("rcgen");
        let cert_path = self.dir.path().join(format!("{name}.crt"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, ck.cert.pem()).unwrap();
        std::fs::write(&key_path, ck.key_pair.serialize_pem()).unwrap();
        TestCert {
            der: ck.cert.der().clone(),
            cert_path,
            key_path,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A port free on both TCP and UDP a moment ago (the TLS port doubles as QUIC's).
pub fn free_tcp_udp_port() -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both tcp and udp");
}

/// Waits (up to 60 s) until `addr` accepts TCP connections.
pub async fn wait_tcp(addr: SocketAddr) {
    let end = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < end, "{addr} never accepted a connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rustls client trusting exactly `roots`, offering `alpn`.
pub fn client_config(roots: &[&TestCert], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    pingora::tls::install_default_crypto_provider();
    let mut store = RootCertStore::empty();
    for c in roots {
        store.add(c.der.clone()).expect("add root");
    }
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Accepts any certificate (to look at what an unknown name gets).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, pingora::tls::RusTlsError> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, pingora::tls::RusTlsError> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, pingora::tls::RusTlsError> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        pingora::tls::CryptoProvider::get_default()
            .map(|p| p.signature_verification_algorithms.supported_schemes())
            .unwrap_or_default()
    }
}

/// A client that accepts any certificate (never for anything but inspection).
pub fn insecure_client_config() -> Arc<ClientConfig> {
    pingora::tls::install_default_crypto_provider();
    let cfg = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// TLS handshake to `addr` with SNI `name`.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    cfg: Arc<ClientConfig>,
) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    // As browsers do: without it Nagle holds small writes (h2 WINDOW_UPDATE,
    // a request's frames) for the peer's delayed ACK, ~40 ms stalls in a load loop.
    tcp.set_nodelay(true)?;
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let fut = TlsConnector::from(cfg).connect(server_name, tcp);
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake"))?
}

/// The leaf certificate the server presented.
pub fn peer_leaf(s: &TlsStream) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .clone()
}

pub fn alpn(s: &TlsStream) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(|p| p.to_vec())
}

/// An HTTP/2 client connection over TLS (ALPN h2) or cleartext (h2c).
pub async fn h2_handshake<T>(io: T) -> h2::client::SendRequest<Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// One GET over an HTTP/2 connection: (status, headers, body).
pub async fn h2_get(
    send: &h2::client::SendRequest<Bytes>,
    uri: &str,
) -> Result<(Response<()>, Bytes), h2::Error> {
    let mut send = send.clone().ready().await?;
    let req = Request::get(uri).body(()).unwrap();
    let (resp, _) = send.send_request(req, true)?;
    let resp = resp.await?;
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok((Response::from_parts(parts, ()), Bytes::from(out)))
}

// ---------------------------------------------------------------------------
// HTTP/3
// ---------------------------------------------------------------------------

pub type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An HTTP/3 client connection (quinn + h3) and the endpoint it lives on.
pub struct H3Client {
    pub endpoint: quinn::Endpoint,
    pub send: H3Send,
    pub local: SocketAddr,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for H3Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn quic_client_config(roots: &[&TestCert], idle: Duration) -> quinn::ClientConfig {
    let mut tls = (*client_config(roots, &[b"h3"])).clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic crypto");
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(idle.try_into().unwrap()));
    cfg.transport_config(Arc::new(transport));
    cfg
}

/// Connects once; `Err` when the handshake fails or times out.
pub async fn h3_connect(
    addr: SocketAddr,
    name: &str,
    roots: &[&TestCert],
) -> Result<H3Client, String> {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quic_client_config(roots, Duration::from_secs(20)));
    let local = endpoint.local_addr().map_err(|e| e.to_string())?;
    let connecting = endpoint.connect(addr, name).map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| "quic handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = driver.wait_idle().await;
    });
    Ok(H3Client {
        endpoint,
        send,
        local,
        driver,
    })
}

/// Connects, retrying (up to 60 s) while the QUIC endpoint is not up yet.
pub async fn h3_connect_ready(addr: SocketAddr, name: &str, roots: &[&TestCert]) -> H3Client {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        match h3_connect(addr, name, roots).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < end, "no HTTP/3 on {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A response read over HTTP/3.
pub struct H3Response {
    pub head: Response<()>,
    pub body: Bytes,
}

impl H3Response {
    pub fn status(&self) -> u16 {
        self.head.status().as_u16()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_string())
    }
}

/// Sends `req` with `body` (in 64 KiB frames) and reads the whole response.
pub async fn h3_request(
    send: &mut H3Send,
    req: Request<()>,
    body: Option<Bytes>,
) -> Result<H3Response, String> {
    let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
    // A server may answer before it has read the whole body and then stop
    // the upload (STOP_SENDING); the response is still there to read.
    let mut stopped = false;
    if let Some(mut body) = body {
        while !body.is_empty() {
            let chunk = body.split_to(body.len().min(64 * 1024));
            if stream.send_data(chunk).await.is_err() {
                stopped = true;
                break;
            }
        }
    }
    if !stopped {
        stream.finish().await.map_err(|e| e.to_string())?;
    }
    let head = stream.recv_response().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
        out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Ok(H3Response {
        head,
        body: Bytes::from(out),
    })
}

pub async fn h3_get(send: &mut H3Send, url: &str) -> H3Response {
    let req = Request::get(url).body(()).unwrap();
    h3_request(send, req, None)
        .await
        .unwrap_or_else(|e| panic!("h3 GET {url}: {e}"))
}

/// Sends `count` datagrams of junk to `addr` (QUIC must drop them quietly).
pub async fn send_garbage_datagrams(addr: SocketAddr, count: usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..count {
        let len = [1usize, 20, 100, 1200, 1350, 1500][i % 6];
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        if i % 2 == 0 {
            // looks like a QUIC long header (Initial, version 1)
            d[0] = 0xc0 | (d[0] & 0x0f);
            if d.len() > 5 {
                d[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        let _ = sock.send_to(&d, addr).await;
    }
}

/// Why an HTTP/3 request got no response.
#[derive(Debug)]
pub enum H3Failure {
    /// The server said it did not process it (RFC 9114 §5.2, §4.1.1): sent
    /// after the GOAWAY (the connection refused it locally), rejected with
    /// H3_REQUEST_REJECTED, or left unanswered by a graceful (H3_NO_ERROR)
    /// close. A browser retries such a request on a new connection.
    Unprocessed(String),
    /// Anything else: the request failed.
    Failed(String),
}

/// A GET classified as a browser would: [`H3Failure::Unprocessed`] may be
/// retried, [`H3Failure::Failed`] may not.
pub async fn h3_try_get(send: &mut H3Send, url: &str) -> Result<H3Response, H3Failure> {
    use h3::error::{Code, StreamError};
    let unprocessed = |e: &StreamError| match e {
        StreamError::RemoteClosing { .. } => true,
        StreamError::RemoteTerminate { code, .. } => *code == Code::H3_REQUEST_REJECTED,
        e => e.is_h3_no_error(),
    };
    let req = Request::get(url).body(()).unwrap();
    let mut stream = match send.send_request(req).await {
        Ok(s) => s,
        Err(e) if unprocessed(&e) => return Err(H3Failure::Unprocessed(format!("send: {e}"))),
        Err(e) => return Err(H3Failure::Failed(format!("send: {e}"))),
    };
    let head = async {
        stream.finish().await?;
        stream.recv_response().await
    };
    let head = match head.await {
        Ok(h) => h,
        Err(e) if unprocessed(&e) => return Err(H3Failure::Unprocessed(format!("head: {e}"))),
        Err(e) => return Err(H3Failure::Failed(format!("head: {e}"))),
    };
    // Once a response has begun, the request was processed: any error is a failure.
    let mut out = Vec::new();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining())),
            Ok(None) => break,
            Err(e) => return Err(H3Failure::Failed(format!("body: {e}"))),
        }
    }
    Ok(H3Response {
        head,
        body: Bytes::from(out),
    })
}
