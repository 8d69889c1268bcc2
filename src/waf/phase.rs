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

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::{Mode, OverLimit, Verdict, Waf};
use crate::exchange::{WafAction, WafOutcome};
use crate::respond;

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
    inspected: bool,
    /// What the request's log line and metrics report (set on a match).
    outcome: WafOutcome,
}

impl WafState {
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// The WAF's part of the request record.
    pub fn outcome(&mut self) -> WafOutcome {
        let mut o = std::mem::take(&mut self.outcome);
        o.inspected = self.inspected;
        o
    }
}

/// Applies the verdict so far: records and counts a match. Returns whether
/// the request must be blocked. The details go to the access log (rules) and
/// the info log (excerpts), not to the error log: a blocked attack is the
/// client's doing, not bext's.
fn decide(
    waf: &Waf,
    state: &mut WafState,
    session: &Session,
    request_id: Option<&HeaderValue>,
) -> bool {
    if !waf.blocks(&state.verdict) {
        return false;
    }
    let action = match waf.mode() {
        Mode::Block => WafAction::Block,
        Mode::Detect | Mode::Off => WafAction::Detect,
    };
    let category = state.verdict.hits.first().map(|h| h.rule.category);
    if let Some(c) = category {
        waf.metrics.matched(c, action);
    }
    // INFO, not WARN/ERROR: a blocked attack is the client's doing. Rate
    // limiting these lines is left to the log pipeline; the access log and
    // `bext_waf_matches_total` carry the same facts.
    log::info!(
        "waf action={} request_id={} method={} path={:?} {}",
        action.as_str(),
        request_id.and_then(|v| v.to_str().ok()).unwrap_or("-"),
        session.req_header().method,
        session
            .req_header()
            .uri
            .path()
            .chars()
            .take(128)
            .collect::<String>(),
        state.verdict.log_line()
    );
    state.outcome = WafOutcome {
        inspected: true,
        action: Some(action),
        score: state.verdict.score,
        category: category.map(|c| c.name()),
        rules: Some(state.verdict.rule_ids().into_boxed_str()),
    };
    match action {
        WafAction::Block => {
            state.blocked = true;
            true
        }
        WafAction::Detect => {
            // Report once per request: forget what was reported.
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
    state.inspected = true;
    // The raw head of an HTTP/1 request (a cheap `Bytes` handle): the
    // request line as sent, before Pingora drops the fragment and turns an
    // absolute-form target into a path.
    let raw = session.as_http1().map(|h1| h1.get_headers_raw_bytes());
    state.verdict = waf.inspect_head_raw(session.req_header(), raw.as_deref());
    if decide(waf, state, session, request_id) {
        respond::forbidden(session, request_id).await?;
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
            waf.metrics.body_over_limit();
            if waf.plan.body_over_limit == OverLimit::Reject {
                log::debug!("waf action=reject-413 content-length over inspect_body_limit");
                respond::ErrorPages::default()
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
) -> Result<()> {
    if !state.buffering {
        return Ok(());
    }
    let limit = waf.plan.inspect_body_limit;
    let chunk = body.take().unwrap_or_default();
    if state.buf.len() + chunk.len() > limit {
        waf.metrics.body_over_limit();
        if waf.plan.body_over_limit == OverLimit::Reject {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "body over waf.inspect_body_limit",
            ));
        }
        // Inspect what fits, then stream the rest unbuffered.
        let room = limit - state.buf.len();
        state.buf.extend_from_slice(&chunk[..room]);
        finish(waf, session, state, true)?;
        let mut all = std::mem::take(&mut state.buf);
        all.extend_from_slice(&chunk[room..]);
        *body = Some(all.freeze());
        state.buffering = false;
        return Ok(());
    }
    state.buf.extend_from_slice(&chunk);
    if end_of_stream {
        finish(waf, session, state, false)?;
        *body = Some(std::mem::take(&mut state.buf).freeze());
        state.buffering = false;
    } else {
        // An empty chunk is not forwarded; the data waits in the buffer.
        *body = Some(Bytes::new());
    }
    Ok(())
}

fn finish(waf: &Waf, session: &Session, state: &mut WafState, truncated: bool) -> Result<()> {
    let v = waf.inspect_body(session.req_header(), &state.buf, truncated);
    state.verdict.merge(v);
    if decide(waf, state, session, None) {
        state.buf = BytesMut::new();
        return Err(Error::explain(
            ErrorType::HTTPStatus(403),
            "blocked by the waf",
        ));
    }
    Ok(())
}
