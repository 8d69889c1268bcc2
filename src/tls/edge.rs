//! Edge HTTPS policy applied inside the proxy pipeline: which scheme a request
//! arrived with, the plain-listener redirect to `https://`, and the
//! `Strict-Transport-Security` / `Alt-Svc` headers on TLS responses.
//!
//! A request is "secure" when its connection carries a TLS digest: the
//! TCP TLS listeners (HTTP/1.1 and HTTP/2) and the HTTP/3 bridge (whose
//! in-process stream reports one) all do; the plain listeners never do.

use std::net::IpAddr;

use http::header::HOST;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::TlsPlan;
use crate::admin::{self, AdminAccess};

/// How long clients may remember the HTTP/3 endpoint (`Alt-Svc: ...; ma=`).
const ALT_SVC_MAX_AGE: u32 = 86400;

/// The per-process edge policy, cheap to clone (one per `BextProxy`).
#[derive(Debug, Clone, Default)]
pub struct EdgePolicy {
    /// `(status, https port)` when the plain listeners redirect to HTTPS.
    redirect: Option<(u16, u16)>,
    hsts: Option<HeaderValue>,
    http3: bool,
}

/// Whether the session arrived over TLS (TCP TLS listener or HTTP/3).
pub fn is_secure(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// `"https"` on TLS and HTTP/3, `"http"` otherwise (for X-Forwarded-Proto).
pub fn scheme(session: &Session) -> &'static str {
    if is_secure(session) {
        "https"
    } else {
        "http"
    }
}

impl EdgePolicy {
    pub fn new(tls: Option<&TlsPlan>) -> EdgePolicy {
        let Some(tls) = tls else {
            return EdgePolicy::default();
        };
        EdgePolicy {
            redirect: tls.redirect_status.map(|s| (s, tls.https_port())),
            hsts: tls.hsts.clone(),
            http3: tls.http3,
        }
    }

    /// On a plain listener with `redirect_http`, answers the request with a
    /// redirect to `https://` and returns `true`. `/__bext/*` requests from
    /// callers the admin API accepts are left alone (health checks, purges).
    pub async fn redirect_plain(
        &self,
        session: &mut Session,
        admin_access: &AdminAccess,
        request_id: Option<&http::HeaderValue>,
    ) -> pingora::Result<bool> {
        let Some((status, port)) = self.redirect else {
            return Ok(false);
        };
        if is_secure(session) {
            return Ok(false);
        }
        let req = session.req_header();
        if admin::is_admin_path(req.uri.path()) {
            let peer: Option<IpAddr> = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_canonical());
            if admin_access.permits(peer, admin::authorization(session)) {
                return Ok(false);
            }
        }
        let host = req
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let Some(location) = host.and_then(|h| https_location(h, port, pq)) else {
            crate::respond::refusal(session, 400, None, request_id).await?;
            return Ok(true);
        };
        crate::respond::redirect(session, status, &location, request_id).await?;
        Ok(true)
    }

    /// Adds `Strict-Transport-Security` and `Alt-Svc` to a TLS response.
    pub fn decorate(&self, session: &Session, resp: &mut ResponseHeader) -> pingora::Result<()> {
        if !is_secure(session) {
            return Ok(());
        }
        if let Some(hsts) = &self.hsts {
            resp.insert_header("strict-transport-security", hsts.clone())?;
        }
        if self.http3 {
            let port = session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port())
                .or(self.redirect.map(|(_, p)| p));
            if let Some(port) = port {
                resp.insert_header("alt-svc", alt_svc(port))?;
            }
        }
        Ok(())
    }
}

/// `h3=":PORT"; ma=86400`.
pub fn alt_svc(port: u16) -> String {
    format!("h3=\":{port}\"; ma={ALT_SVC_MAX_AGE}")
}

/// The `https://` URL for a plain request to `host` (its port, if any, is
/// replaced by the HTTPS port; 443 is left out). `None` when `host` is not a
/// plausible host name or IP literal, so a hostile Host header can never turn
/// into an open redirect or a header injection.
pub fn https_location(host: &str, https_port: u16, path_and_query: &str) -> Option<String> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        let v6 = &rest[..end];
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        format!("[{v6}]")
    } else {
        let name = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return None;
        }
        name.to_ascii_lowercase()
    };
    let pq = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    };
    Some(if https_port == 443 {
        format!("https://{name}{pq}")
    } else {
        format!("https://{name}:{https_port}{pq}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_path_and_query_and_swaps_the_port() {
        assert_eq!(
            https_location("Example.com:8080", 443, "/a/b?x=1&y=2").as_deref(),
            Some("https://example.com/a/b?x=1&y=2")
        );
        assert_eq!(
            https_location("example.com", 8443, "/").as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(
            https_location("[::1]:80", 8443, "/p").as_deref(),
            Some("https://[::1]:8443/p")
        );
        assert_eq!(
            https_location("127.0.0.1", 443, "*").as_deref(),
            Some("https://127.0.0.1/")
        );
    }

    #[test]
    fn hostile_hosts_get_no_location() {
        for h in [
            "",
            "evil.com/x",
            "a b",
            "evil.com\r\nx: y",
            "[zz]:1",
            "user@evil.com",
        ] {
            assert_eq!(https_location(h, 443, "/"), None, "{h:?}");
        }
    }

    /// A session that has read `request`, and the client end of its pipe.
    async fn session(secure: bool, request: &[u8]) -> (Session, tokio::io::DuplexStream) {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(request).await.unwrap();
        let stream: pingora::protocols::Stream = if secure {
            let a = "127.0.0.1:8443".parse().unwrap();
            Box::new(crate::h3::bridge::BridgeStream::new(server, a, a))
        } else {
            Box::new(server)
        };
        let mut s = Session::new_h1(stream);
        assert!(s.read_request().await.unwrap());
        (s, client)
    }

    fn policy() -> EdgePolicy {
        EdgePolicy {
            redirect: Some((308, 8443)),
            hsts: Some(HeaderValue::from_static("max-age=60")),
            http3: true,
        }
    }

    #[tokio::test]
    async fn tls_responses_get_hsts_and_alt_svc_plain_ones_do_not() {
        let req = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
        let (secure, _c1) = session(true, req).await;
        assert_eq!(scheme(&secure), "https");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        policy().decorate(&secure, &mut resp).unwrap();
        assert_eq!(resp.headers["strict-transport-security"], "max-age=60");
        assert_eq!(resp.headers["alt-svc"], "h3=\":8443\"; ma=86400");

        let (plain, _c2) = session(false, req).await;
        assert_eq!(scheme(&plain), "http");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        policy().decorate(&plain, &mut resp).unwrap();
        assert!(resp.headers.is_empty());
    }

    #[tokio::test]
    async fn redirect_only_on_plain_and_not_for_permitted_admin_calls() {
        let admin = AdminAccess::default();
        let req = b"GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\n\r\n";
        let (mut secure, _c1) = session(true, req).await;
        assert!(!policy()
            .redirect_plain(&mut secure, &admin, None)
            .await
            .unwrap());
        let (mut plain, _c2) = session(false, req).await;
        assert!(!EdgePolicy::default()
            .redirect_plain(&mut plain, &admin, None)
            .await
            .unwrap());
        // A duplex peer has no inet address, so the admin path is redirected
        // unless the caller carries the admin token.
        let with_token = AdminAccess {
            allow: vec![],
            token: Some("0123456789abcdef".into()),
        };
        let admin_req =
            b"GET /__bext/health HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer 0123456789abcdef\r\n\r\n";
        let (mut plain, _c3) = session(false, admin_req).await;
        assert!(!policy()
            .redirect_plain(&mut plain, &with_token, None)
            .await
            .unwrap());
    }

    #[test]
    fn alt_svc_names_the_port() {
        assert_eq!(alt_svc(8443), "h3=\":8443\"; ma=86400");
    }
}
