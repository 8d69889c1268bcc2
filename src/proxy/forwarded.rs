//! Forwarding metadata on the upstream request: `X-Forwarded-For`, `-Proto`,
//! `-Host`, `-Port`, `X-Real-IP` and `Forwarded`. Client-supplied values are
//! only believed when the TCP peer is one of `server.trusted_proxies`; anyone
//! else's are dropped so Phoenix (Plug.RewriteOn / remote_ip) never sees a
//! spoofed client address. `Host` is left exactly as the client sent it.

use http::header::{HeaderName, HOST};
use ipnet::IpNet;
use pingora::http::RequestHeader;

use crate::exchange::client::is_trusted;
use crate::exchange::Client;

const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
const XFH: &str = "x-forwarded-host";
const XFPORT: &str = "x-forwarded-port";
const XRI: &str = "x-real-ip";
const FORWARDED: &str = "forwarded";
// The same names for lookups and removals, which by &str would parse the name
// first (inserts take the &'static str: no allocation for the case map).
const XFF_NAME: HeaderName = HeaderName::from_static(XFF);
const XFP_NAME: HeaderName = HeaderName::from_static(XFP);
const XFH_NAME: HeaderName = HeaderName::from_static(XFH);
const XFPORT_NAME: HeaderName = HeaderName::from_static(XFPORT);
const XRI_NAME: HeaderName = HeaderName::from_static(XRI);
const FORWARDED_NAME: HeaderName = HeaderName::from_static(FORWARDED);

/// Rewrites the forwarding headers of `req` for `client`.
pub fn apply(req: &mut RequestHeader, client: &Client, trusted: &[IpNet]) -> pingora::Result<()> {
    let peer = client.peer_ip();
    let trusted_peer = peer.is_some_and(|ip| is_trusted(ip, trusted));

    // The chain the client presented (comma-joined across repeated headers).
    let prior_chain = if trusted_peer {
        joined(req, &XFF_NAME)
    } else {
        None
    };
    let prior_proto = if trusted_peer {
        first_value(req, &XFP_NAME)
    } else {
        None
    };
    let prior_host = if trusted_peer {
        first_value(req, &XFH_NAME)
    } else {
        None
    };
    let prior_port = if trusted_peer {
        first_value(req, &XFPORT_NAME)
    } else {
        None
    };
    for name in &[
        XFF_NAME,
        XFP_NAME,
        XFH_NAME,
        XFPORT_NAME,
        XRI_NAME,
        FORWARDED_NAME,
    ] {
        req.remove_header(name);
    }

    let peer_text = peer.map(|ip| ip.to_string());
    let xff = match (prior_chain, &peer_text) {
        (Some(chain), Some(peer)) => format!("{chain}, {peer}"),
        (Some(chain), None) => chain,
        (None, Some(peer)) => peer.clone(),
        (None, None) => String::new(),
    };
    // The client as bext worked it out once for the request (the same
    // address the limits, the balancer and the logs use).
    if let Some(real) = client.ip {
        req.insert_header(XRI, real.to_string())?;
    }
    if !xff.is_empty() {
        req.insert_header(XFF, xff)?;
    }

    req.insert_header(XFP, prior_proto.as_deref().unwrap_or(client.scheme()))?;

    if req.headers.get(HOST).is_none() {
        // HTTP/2 and HTTP/3 carry the authority in the URI; Phoenix needs a Host.
        if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string()) {
            req.insert_header(HOST, authority)?;
        }
    }
    // Without the port, as nginx's `$host`: the port goes in
    // X-Forwarded-Port, and `Plug.RewriteOn` copies this value into
    // `conn.host` as is (with the port, `request_url` became
    // `http://127.0.0.1:8080:8080/…`).
    let host = prior_host.or_else(|| {
        req.headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| crate::routing::strip_port(h.trim()).to_string())
    });
    if let Some(host) = host {
        req.insert_header(XFH, host)?;
    }
    match (prior_port, client.local_port) {
        (Some(p), _) => req.insert_header(XFPORT, p)?,
        (None, Some(p)) => req.insert_header(XFPORT, p.to_string())?,
        (None, None) => {}
    }
    Ok(())
}

fn joined(req: &RequestHeader, name: &HeaderName) -> Option<String> {
    let mut out = String::new();
    for v in req.headers.get_all(name) {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
    }
    (!out.is_empty()).then_some(out)
}

fn first_value(req: &RequestHeader, name: &HeaderName) -> Option<String> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a RequestHeader, k: &str) -> Option<&'a str> {
        r.headers.get(k).and_then(|v| v.to_str().ok())
    }

    fn arrival(ip: &str, r: &RequestHeader, trusted: &[IpNet]) -> Client {
        let peer: std::net::IpAddr = ip.parse().unwrap();
        Client {
            peer: Some(std::net::SocketAddr::new(peer, 50000)),
            ip: crate::exchange::client::real_ip(r, Some(peer), trusted),
            secure: false,
            local_port: Some(8080),
            protocol: Default::default(),
        }
    }

    #[test]
    fn untrusted_client_cannot_spoof_its_address() {
        let mut r = req(&[
            ("host", "app.example.com:8443"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let c = arrival("203.0.113.9", &r, &[]);
        apply(&mut r, &c, &[]).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), Some("203.0.113.9"));
        assert_eq!(get(&r, "x-real-ip"), Some("203.0.113.9"));
        assert_eq!(get(&r, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&r, "x-forwarded-host"), Some("app.example.com"));
        assert_eq!(get(&r, "x-forwarded-port"), Some("8080"));
        assert_eq!(get(&r, "host"), Some("app.example.com:8443"));
        assert_eq!(get(&r, "forwarded"), None);
    }

    #[test]
    fn trusted_proxy_chain_is_extended() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut r = req(&[
            ("host", "a.test"),
            ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = arrival("10.2.2.2", &r, &trusted);
        apply(&mut r, &c, &trusted).unwrap();
        assert_eq!(
            get(&r, "x-forwarded-for"),
            Some("198.51.100.7, 10.1.1.1, 10.2.2.2")
        );
        assert_eq!(get(&r, "x-real-ip"), Some("198.51.100.7"));
        assert_eq!(get(&r, "x-forwarded-proto"), Some("https"));
    }

    #[test]
    fn forwarded_host_has_no_port() {
        for (host, want) in [
            ("a.test", "a.test"),
            ("a.test:8080", "a.test"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("a.test:", "a.test"),
            ("[::1", "[::1"),
        ] {
            assert_eq!(crate::routing::strip_port(host), want, "{host}");
        }
    }

    #[test]
    fn host_is_filled_from_authority_when_absent() {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        r.set_uri("https://a.test/x".parse().unwrap());
        let c = arrival("127.0.0.1", &r, &[]);
        apply(&mut r, &c, &[]).unwrap();
        assert_eq!(get(&r, "host"), Some("a.test"));
        assert_eq!(get(&r, "x-forwarded-host"), Some("a.test"));
    }
}
