//! Helpers for the limits tests: clients bound to distinct loopback
//! addresses (127.0.0.2, 127.0.0.3, ...) so that one test process can act as
//! many client IPs, and a tolerant response reader that reports a closed
//! connection instead of panicking.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A minimal parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Opens a TCP connection to `to` from the local address `from` (port 0).
pub async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let ip: IpAddr = from.parse().expect("client ip");
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(ip, 0))
        .expect("bind client address");
    sock.connect(to).await.expect("connect")
}

/// Reads one response; `None` if the connection closed (or reset) first.
/// 30 s safety net so a hung server fails the test instead of hanging it.
pub async fn read_resp(s: &mut TcpStream) -> Option<Resp> {
    tokio::time::timeout(Duration::from_secs(30), read_inner(s))
        .await
        .expect("no response and no close within the 30 s safety net")
}

async fn read_inner(s: &mut TcpStream) -> Option<Resp> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = buf[end + 4..].to_vec();
    let mut resp = Resp {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = resp
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&tmp[..n]),
        }
    }
    body.truncate(len);
    resp.body = body;
    Some(resp)
}

/// One request on a fresh connection from `from`.
pub async fn request_from(from: &str, to: SocketAddr, req: &[u8]) -> Option<Resp> {
    let mut s = connect_from(from, to).await;
    if s.write_all(req).await.is_err() {
        return None;
    }
    read_resp(&mut s).await
}

/// `GET path` with `Connection: close` from `from`; the status, 0 if closed.
pub async fn get_from(from: &str, to: SocketAddr, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    request_from(from, to, req.as_bytes())
        .await
        .map_or(0, |r| r.status)
}

/// Whether the server has closed `s` (reads until EOF/reset, discarding data).
pub async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut tmp = [0u8; 4096];
    loop {
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

/// A bext config with one upstream (`origin`) and the given extra sections;
/// `routes` are complete `[[route_rules]]` blocks.
pub fn config(
    listen: SocketAddr,
    origin: SocketAddr,
    server_extra: &str,
    limits: &str,
    routes: &str,
) -> String {
    let routes = if routes.is_empty() {
        "[[route_rules]]\npattern = \"/*\"\nproxy = \"origin\"\n"
    } else {
        routes
    };
    format!(
        "[server]\nlisten = [\"{listen}\"]\nthreads = 2\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\n\
         pid_file = \"/tmp/bext-limits-{port}.pid\"\nupgrade_sock = \"/tmp/bext-limits-{port}.sock\"\n{server_extra}\n\
         [upstreams.origin]\nnodes = [\"{origin}\"]\n\n[limits]\n{limits}\n\n{routes}",
        port = listen.port()
    )
}
