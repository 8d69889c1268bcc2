//! Who sent a request, worked out once per request: the TCP (or QUIC) peer,
//! the real client behind trusted proxies, scheme, local port and protocol.

use std::net::{IpAddr, SocketAddr};

use http::HeaderName;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

// A lookup by &str parses the name first; this runs on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// TLS version the HTTP/3 bridge reports in its digest; how the pipeline
/// tells a request that arrived over QUIC.
pub const H3_TLS_VERSION: &str = "TLSv1.3 (QUIC)";

/// The HTTP version the client spoke to bext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    Http10,
    #[default]
    Http11,
    Http2,
    Http3,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Http10,
        Protocol::Http11,
        Protocol::Http2,
        Protocol::Http3,
    ];

    /// OpenTelemetry's `network.protocol.version`.
    pub fn version(self) -> &'static str {
        match self {
            Protocol::Http10 => "1.0",
            Protocol::Http11 => "1.1",
            Protocol::Http2 => "2",
            Protocol::Http3 => "3",
        }
    }

    /// As in a request line / access log.
    pub fn as_http(self) -> &'static str {
        match self {
            Protocol::Http10 => "HTTP/1.0",
            Protocol::Http11 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::Http3 => "HTTP/3",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The client side of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client {
    /// The TCP or QUIC peer; `None` only for non-inet sockets.
    pub peer: Option<SocketAddr>,
    /// The client: the peer, or when the peer is a trusted proxy the
    /// rightmost untrusted hop of `X-Forwarded-For`.
    pub ip: Option<IpAddr>,
    pub secure: bool,
    /// The local port the client connected to.
    pub local_port: Option<u16>,
    pub protocol: Protocol,
}

impl Client {
    pub fn of(session: &Session, trusted: &[IpNet]) -> Client {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()));
        let ssl = session.digest().and_then(|d| d.ssl_digest.as_ref());
        let protocol = if ssl.is_some_and(|s| s.version == H3_TLS_VERSION) {
            Protocol::Http3
        } else if session.is_http2() {
            Protocol::Http2
        } else if session.req_header().version == http::Version::HTTP_10 {
            Protocol::Http10
        } else {
            Protocol::Http11
        };
        Client {
            peer,
            ip: real_ip(session.req_header(), peer.map(|p| p.ip()), trusted),
            secure: ssl.is_some(),
            local_port: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
            protocol,
        }
    }

    /// The TCP/QUIC peer's address.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.ip())
    }

    /// `"https"` on TLS and HTTP/3, `"http"` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.secure {
            "https"
        } else {
            "http"
        }
    }
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client's address: `peer`, or, when the peer is a trusted proxy, the
/// rightmost untrusted hop of `X-Forwarded-For`. Allocation-free.
pub fn real_ip(req: &RequestHeader, peer: Option<IpAddr>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return Some(peer);
    }
    // Walk the X-Forwarded-For chain from the right: hops appended by trusted
    // proxies are skipped; the first untrusted hop is the client.
    let mut leftmost = None;
    for value in req.headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for hop in text.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
            match hop.parse::<IpAddr>() {
                Ok(ip) if is_trusted(ip, trusted) => leftmost = Some(ip),
                Ok(ip) => return Some(ip.to_canonical()),
                // A hop we cannot read: everything left of it is unverifiable.
                Err(_) => return Some(leftmost.unwrap_or(peer)),
            }
        }
    }
    Some(leftmost.unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(xff: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for v in xff {
            r.append_header("x-forwarded-for", *v).unwrap();
        }
        r
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let r = req(&["203.0.113.5, 10.0.0.7"]);
        let peer = Some("10.1.1.1".parse().unwrap());
        assert_eq!(
            real_ip(&r, peer, &trusted),
            Some("203.0.113.5".parse().unwrap())
        );
        let untrusted = Some("198.51.100.1".parse().unwrap());
        assert_eq!(real_ip(&r, untrusted, &trusted), untrusted);
        // A spoofed left part does not matter: the rightmost untrusted hop wins.
        let r = req(&["6.6.6.6", "203.0.113.5"]);
        assert_eq!(
            real_ip(&r, peer, &trusted),
            Some("203.0.113.5".parse().unwrap())
        );
        // Garbage or nothing: the peer.
        assert_eq!(real_ip(&req(&["nonsense"]), peer, &trusted), peer);
        assert_eq!(real_ip(&req(&[]), peer, &trusted), peer);
    }
}
