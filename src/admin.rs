//! The admin API under `/__bext/` on the main listener: who may use it, and the
//! dispatch to the module that owns each endpoint. Anyone not allowed gets the
//! ordinary 404 page, so the API is invisible from the internet.
//!
//! Allowed: loopback peers, peers in `admin.allow`, or a request carrying
//! `Authorization: Bearer <admin.token>`. Handlers live with their concern
//! (cache purge in `cache`, node state in `upstream`); this module only routes
//! and writes JSON.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use http::header::AUTHORIZATION;
use ipnet::IpNet;
use pingora::proxy::Session;

use crate::auth::constant_time_eq;

pub const PREFIX: &str = "/__bext/";

/// Largest admin request body read (purge requests are tiny JSON documents).
pub const MAX_BODY: usize = 64 * 1024;

/// Who may call the admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    pub allow: Vec<IpNet>,
    pub token: Option<String>,
}

impl AdminAccess {
    /// Only 127.0.0.1 and ::1 are implicitly allowed, not all of 127.0.0.0/8:
    /// other loopback addresses are used to stand in for remote clients (in
    /// tests, and by local sidecars that should not get admin rights).
    pub fn permits(&self, peer: Option<IpAddr>, authorization: Option<&[u8]>) -> bool {
        if let Some(ip) = peer {
            let local =
                ip == IpAddr::from(Ipv4Addr::LOCALHOST) || ip == IpAddr::from(Ipv6Addr::LOCALHOST);
            if local || self.allow.iter().any(|n| n.contains(&ip)) {
                return true;
            }
        }
        match (&self.token, authorization) {
            (Some(token), Some(header)) => header
                .strip_prefix(b"Bearer ")
                .is_some_and(|given| constant_time_eq(given, token.as_bytes())),
            _ => false,
        }
    }
}

/// Whether `path` belongs to the admin API.
pub fn is_admin_path(path: &str) -> bool {
    path.starts_with(PREFIX) || path == "/__bext"
}

/// The admin endpoints known to this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    /// `GET /__bext/upstreams`: node state of every pool.
    Upstreams,
    /// `POST /__bext/upstreams/NAME/nodes/ID/drain|undrain` (path parsed by the handler).
    UpstreamNode,
    Limits,
    /// `GET /__bext/waf`: WAF mode and counters.
    Waf,
    /// `GET /__bext/metrics`: the Prometheus exposition.
    Metrics,
    CachePurge,
    /// `GET|POST /__bext/maintenance`: the sites' maintenance switches.
    Maintenance,
    /// `POST /__bext/reload`: re-read the config, apply it in place if it can be.
    Reload,
    /// `GET /__bext/cluster`: this node, its peers and Redis (`[cluster]`).
    Cluster,
    NotFound,
}

pub fn endpoint(method: &http::Method, path: &str) -> Endpoint {
    match (method.as_str(), path) {
        ("GET" | "HEAD", "/__bext/health") => Endpoint::Health,
        ("GET" | "HEAD", "/__bext/upstreams") => Endpoint::Upstreams,
        ("POST", p) if p.starts_with("/__bext/upstreams/") => Endpoint::UpstreamNode,
        ("GET" | "HEAD", "/__bext/limits") => Endpoint::Limits,
        ("GET" | "HEAD", "/__bext/waf") => Endpoint::Waf,
        ("GET" | "HEAD", "/__bext/metrics") => Endpoint::Metrics,
        ("POST", "/__bext/cache/purge") => Endpoint::CachePurge,
        ("GET" | "HEAD" | "POST", "/__bext/maintenance") => Endpoint::Maintenance,
        ("POST", "/__bext/reload") => Endpoint::Reload,
        ("GET" | "HEAD", "/__bext/cluster") => Endpoint::Cluster,
        _ => Endpoint::NotFound,
    }
}

/// The `Authorization` header's raw bytes, for [`AdminAccess::permits`].
pub fn authorization(session: &Session) -> Option<&[u8]> {
    session
        .req_header()
        .headers
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
}

/// Reads the request body up to [`MAX_BODY`]; `Err(413)` when it is larger.
pub async fn read_body(session: &mut Session) -> Result<Bytes, u16> {
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_BODY {
                    return Err(413);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(_) => return Err(400),
        }
    }
}

/// Why [`post`] got no answer.
#[derive(Debug)]
pub enum CallError {
    Connect(std::io::Error),
    Io(std::io::Error),
    /// Something that is not an HTTP response came back.
    Reply,
}

/// The client side, for the CLI (`bext cache purge`, `bext reload`), never
/// the proxy: a blocking HTTP/1.1 `POST` of a JSON `body` to `path` on the
/// admin API at `addr` (`host` is the `Host` header), with the bearer
/// `token` when given. Returns the status and the (trimmed) body.
pub fn post(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    read_timeout: std::time::Duration,
) -> Result<(u16, String), CallError> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
        .map_err(CallError::Connect)?;
    s.set_read_timeout(Some(read_timeout))
        .map_err(CallError::Io)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(CallError::Io)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).map_err(CallError::Io)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or(CallError::Reply)?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(CallError::Reply)?;
    Ok((status, rest.trim().to_string()))
}

/// A JSON error body: `{"error": "..."}`.
pub fn error_body(message: &str) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_allowlist_and_token() {
        let access = AdminAccess {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            token: Some("s3cret".into()),
        };
        assert!(access.permits(Some("127.0.0.1".parse().unwrap()), None));
        assert!(access.permits(Some("::1".parse().unwrap()), None));
        assert!(!access.permits(Some("127.0.0.2".parse().unwrap()), None));
        assert!(access.permits(Some("10.1.2.3".parse().unwrap()), None));
        assert!(!access.permits(Some("203.0.113.1".parse().unwrap()), None));
        assert!(access.permits(Some("203.0.113.1".parse().unwrap()), Some(b"Bearer s3cret")));
        assert!(!access.permits(Some("203.0.113.1".parse().unwrap()), Some(b"Bearer s3cre")));
        assert!(!access.permits(Some("203.0.113.1".parse().unwrap()), Some(b"s3cret")));
        let no_token = AdminAccess::default();
        assert!(!no_token.permits(Some("203.0.113.1".parse().unwrap()), Some(b"Bearer ")));
    }

    #[test]
    fn endpoints_are_matched_by_method_and_path() {
        assert_eq!(
            endpoint(&http::Method::GET, "/__bext/health"),
            Endpoint::Health
        );
        assert_eq!(
            endpoint(&http::Method::POST, "/__bext/health"),
            Endpoint::NotFound
        );
        assert_eq!(
            endpoint(&http::Method::POST, "/__bext/cache/purge"),
            Endpoint::CachePurge
        );
        assert_eq!(
            endpoint(&http::Method::GET, "/__bext/cache/purge"),
            Endpoint::NotFound
        );
        assert!(is_admin_path("/__bext/cache/purge"));
        assert!(!is_admin_path("/__bextra"));
    }
}
