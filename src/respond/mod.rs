//! Leaf: every response bext writes itself, and the request id. Error pages
//! (`pages`), admin JSON, the limits' short refusals, the WAF's 403 and the
//! plain writer they all end in ([`send`]). It imports none of bext's
//! features, so every module may use it; nothing here decides *whether* to
//! answer, only how the answer looks.

pub mod pages;
pub mod request_id;

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

pub use pages::{status_for, ErrorPages};

/// Writes a complete response that bext generated itself: the header, then
/// the body unless the request was HEAD.
pub async fn send(session: &mut Session, resp: ResponseHeader, body: Bytes) -> pingora::Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A response head bext makes itself: `status`, `Content-Type`,
/// `Content-Length`, `Cache-Control: no-store` and the request id.
pub fn head(
    status: u16,
    content_type: &'static str,
    len: usize,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", len)?;
    resp.insert_header("cache-control", "no-store")?;
    if let Some(id) = request_id {
        resp.insert_header(request_id::HEADER, id.clone())?;
    }
    Ok(resp)
}

/// A JSON response (admin API).
pub async fn json(
    session: &mut Session,
    status: u16,
    body: &serde_json::Value,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let mut text = body.to_string();
    text.push('\n');
    let resp = head(status, "application/json", text.len(), request_id)?;
    send(session, resp, Bytes::from(text)).await
}

/// A plain-text response with a fixed body (the metrics exposition uses its own type).
pub async fn text(
    session: &mut Session,
    status: u16,
    content_type: &'static str,
    body: Bytes,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let resp = head(status, content_type, body.len(), request_id)?;
    send(session, resp, body).await
}

/// A short plain-text refusal from the limits (400, 408, 413, 414, 429, 431).
/// Only a 429 keeps the connection: after a framing or size error the rest of
/// the request cannot be trusted or is not worth reading.
pub async fn refusal(
    session: &mut Session,
    status: u16,
    retry_after: Option<u32>,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let text: &'static str = match status {
        400 => "Bad Request\n",
        408 => "Request Timeout\n",
        413 => "Payload Too Large\n",
        414 => "URI Too Long\n",
        429 => "Too Many Requests\n",
        431 => "Request Header Fields Too Large\n",
        _ => "Refused\n",
    };
    let mut resp = head(status, "text/plain; charset=utf-8", text.len(), request_id)?;
    if let Some(secs) = retry_after {
        resp.insert_header("retry-after", secs)?;
    }
    if status != 429 {
        session.set_keepalive(None);
        resp.insert_header("connection", "close")?;
    }
    send(session, resp, Bytes::from_static(text.as_bytes())).await
}

/// The WAF's 403: JSON when the client prefers it, HTML otherwise. It carries
/// the request id (to find the log line) but never the rule ids.
pub async fn forbidden(
    session: &mut Session,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let id = request_id.and_then(|v| v.to_str().ok()).unwrap_or("-");
    let wants_json = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    let (ctype, body) = if wants_json {
        let v = serde_json::json!({"error": "forbidden", "status": 403, "request_id": id});
        ("application/json", Bytes::from(v.to_string()))
    } else {
        let safe: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let html = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>403 Forbidden</title></head>\n\
<body><h1>Forbidden</h1><p>This request was blocked by the web application firewall.</p>\
<p><small>Status 403 &middot; request id {safe}</small></p></body></html>\n"
        );
        ("text/html; charset=utf-8", Bytes::from(html))
    };
    let mut resp = head(403, ctype, body.len(), request_id)?;
    resp.insert_header("connection", "close")?;
    session.set_keepalive(None);
    send(session, resp, body).await
}

/// A redirect to `location` (the edge's http → https).
pub async fn redirect(
    session: &mut Session,
    status: u16,
    location: &str,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    redirect_with(session, status, location, None, request_id).await
}

/// [`redirect`] that also sets a cookie (a staging token visit).
pub async fn redirect_with(
    session: &mut Session,
    status: u16,
    location: &str,
    set_cookie: Option<HeaderValue>,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let body = Bytes::from(format!("Moved to {location}\n"));
    let mut resp = head(status, "text/plain; charset=utf-8", body.len(), request_id)?;
    resp.insert_header(http::header::LOCATION, location)?;
    if let Some(cookie) = set_cookie {
        resp.insert_header(http::header::SET_COOKIE, cookie)?;
    }
    send(session, resp, body).await
}
