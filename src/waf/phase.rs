//! The glue between the Pingora phases and the (Pingora-free) WAF core:
//! what `request_filter`, `request_body_filter` and `fail_to_proxy` call.
//!
//! Bodies: `request_body_filter` holds the chunks back (it hands Pingora an
//! empty chunk, which is not forwarded) and appends them to a per-request
//! buffer of at most `waf.inspect_body_limit` bytes. At the end of the body
//! the buffer is inspected; a clean body is released upstream in one piece, a
//! blocked one never leaves bext: the filter returns a 403 error, Pingora
//! drops the upstream connection (which has seen the request head but no
//! body byte) and `fail_to_proxy` writes the 403 page. A body that outgrows
//! the limit is either rejected (413) or released after inspecting its first
//! `inspect_body_limit` bytes, and the rest streams through unbuffered.
//! Memory per request is bounded by the limit plus one chunk.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::{Mode, OverLimit, Verdict, Waf, COUNTERS};

/// Per-request WAF state, kept in the proxy's `Ctx`.
#[derive(Debug, Default)]
pub struct WafState {
    /// Score and hits so far (head, then body).
    verdict: Verdict,
    /// The body is being held back for inspection.
    buffering: bool,
    buf: BytesMut,
    /// The request was blocked; `fail_to_proxy` answers with the 403 page.
    blocked: bool,
}

impl WafState {
    pub fn blocked(&self) -> bool {
        self.blocked
    }
}

fn describe(session: &Session, request_id: Option<&HeaderValue>) -> String {
    let req = session.req_header();
    let path = req.uri.path();
    let shown: String = path.chars().take(128).collect();
    format!(
        "request_id={} method={} path={:?}",
        request_id.and_then(|v| v.to_str().ok()).unwrap_or("-"),
        req.method,
        shown
    )
}

/// Applies the verdict so far: logs and counts a match. Returns whether the
/// request must be blocked.
fn decide(
    waf: &Waf,
    state: &mut WafState,
    session: &Session,
    request_id: Option<&HeaderValue>,
) -> bool {
    if !waf.blocks(&state.verdict) {
        return false;
    }
    let who = describe(session, request_id);
    match waf.mode() {
        Mode::Block => {
            COUNTERS.blocked.fetch_add(1, Ordering::Relaxed);
            log::warn!("waf action=block {who} {}", state.verdict.log_line());
            state.blocked = true;
            true
        }
        Mode::Detect | Mode::Off => {
            COUNTERS.detected.fetch_add(1, Ordering::Relaxed);
            log::warn!("waf action=detect {who} {}", state.verdict.log_line());
            // Log once per request: forget what was reported.
            state.verdict = Verdict::default();
            false
        }
    }
}

/// `request_filter`: inspects the head. Returns `Ok(true)` when a response
/// (403 or 413) was written.
pub async fn on_request(
    waf: &Waf,
    enabled_on_route: bool,
    session: &mut Session,
    state: &mut WafState,
    request_id: Option<&HeaderValue>,
) -> Result<bool> {
    if waf.mode() == Mode::Off || !enabled_on_route {
        return Ok(false);
    }
    state.verdict = waf.inspect_head(session.req_header());
    if decide(waf, state, session, request_id) {
        respond_blocked(session, request_id).await?;
        return Ok(true);
    }
    let req = session.req_header();
    if waf.wants_body(req) {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let limit = waf.plan.inspect_body_limit;
        if declared.is_some_and(|n| n > limit as u64) {
            COUNTERS.body_over_limit.fetch_add(1, Ordering::Relaxed);
            if waf.plan.body_over_limit == OverLimit::Reject {
                log::info!(
                    "waf action=reject-413 {} content-length over inspect_body_limit",
                    describe(session, request_id)
                );
                super::super::proxy::error_page::ErrorPages::default()
                    .respond(session, 413, request_id)
                    .await?;
                return Ok(true);
            }
        }
        state.buffering = true;
    }
    Ok(false)
}

/// `request_body_filter`: holds the body back until it is inspected.
pub fn on_body(
    waf: &Waf,
    session: &Session,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    state: &mut WafState,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    if !state.buffering {
        return Ok(());
    }
    let limit = waf.plan.inspect_body_limit;
    let chunk = body.take().unwrap_or_default();
    if state.buf.len() + chunk.len() > limit {
        COUNTERS.body_over_limit.fetch_add(1, Ordering::Relaxed);
        if waf.plan.body_over_limit == OverLimit::Reject {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "body over waf.inspect_body_limit",
            ));
        }
        // Inspect what fits, then stream the rest unbuffered.
        let room = limit - state.buf.len();
        state.buf.extend_from_slice(&chunk[..room]);
        finish(waf, session, state, true, request_id)?;
        let mut all = std::mem::take(&mut state.buf);
        all.extend_from_slice(&chunk[room..]);
        *body = Some(all.freeze());
        state.buffering = false;
        return Ok(());
    }
    state.buf.extend_from_slice(&chunk);
    if end_of_stream {
        finish(waf, session, state, false, request_id)?;
        *body = Some(std::mem::take(&mut state.buf).freeze());
        state.buffering = false;
    } else {
        // An empty chunk is not forwarded; the data waits in the buffer.
        *body = Some(Bytes::new());
    }
    Ok(())
}

fn finish(
    waf: &Waf,
    session: &Session,
    state: &mut WafState,
    truncated: bool,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let v = waf.inspect_body(session.req_header(), &state.buf, truncated);
    state.verdict.merge(v);
    if decide(waf, state, session, request_id) {
        state.buf = BytesMut::new();
        return Err(Error::explain(
            ErrorType::HTTPStatus(403),
            "blocked by the waf",
        ));
    }
    Ok(())
}

/// The 403 page: JSON when the client prefers it, HTML otherwise. It carries
/// the request id (to find the log line) but never the rule ids.
pub async fn respond_blocked(
    session: &mut Session,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let id = request_id
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
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
    let mut resp = ResponseHeader::build(403, Some(5))?;
    resp.insert_header("content-type", ctype)?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("connection", "close")?;
    if let Some(id) = request_id {
        resp.insert_header(crate::proxy::request_id::HEADER, id.clone())?;
    }
    session.set_keepalive(None);
    crate::proxy::error_page::send(session, resp, body).await
}
