//! Hop-by-hop response headers. Pingora's upstream request policy already strips
//! them from requests to Phoenix; this removes the ones Phoenix (or anything in
//! between) sends back, so they never reach the client. Pingora writes its own
//! `Connection` header for the downstream connection.

use http::header::{HeaderName, CONNECTION, TE, TRAILER, UPGRADE};
use pingora::http::ResponseHeader;

// HeaderName, not &str: a removal by &str parses the name first, per response.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop fields and the fields the `Connection` header nominates.
/// A `101 Switching Protocols` keeps `Connection`/`Upgrade`: the handshake needs them.
pub fn strip_response(resp: &mut ResponseHeader) {
    let switching = resp.status.as_u16() == 101;
    let nominated: Vec<String> = resp
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "upgrade")
        .collect();
    for name in nominated {
        resp.remove_header(name.as_str());
    }
    for name in &[KEEP_ALIVE, PROXY_CONNECTION, TE, TRAILER] {
        resp.remove_header(name);
    }
    // Transfer-Encoding is left alone: framing is Pingora's to rewrite, not ours.
    if !switching {
        resp.remove_header(&CONNECTION);
        resp.remove_header(&UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominated_and_standard_hop_headers_are_removed() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("connection", "keep-alive, X-Origin-Hop")
            .unwrap();
        r.append_header("x-origin-hop", "1").unwrap();
        r.append_header("keep-alive", "timeout=5").unwrap();
        r.append_header("content-type", "text/plain").unwrap();
        strip_response(&mut r);
        assert!(r.headers.get("x-origin-hop").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("content-type").is_some());
    }

    #[test]
    fn switching_protocols_keeps_the_handshake() {
        let mut r = ResponseHeader::build(101, None).unwrap();
        r.append_header("connection", "Upgrade").unwrap();
        r.append_header("upgrade", "websocket").unwrap();
        strip_response(&mut r);
        assert!(r.headers.get("connection").is_some());
        assert!(r.headers.get("upgrade").is_some());
    }
}
