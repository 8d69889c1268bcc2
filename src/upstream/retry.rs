//! Retry decisions. Pingora calls `upstream_peer` again when an error is
//! marked retryable; these rules decide when that is safe:
//!
//! * a failed connect (nothing was sent) is retried for every method, and
//!   counts as a passive health failure of the node;
//! * after connecting, GET/HEAD/OPTIONS are retried on a reset, close or
//!   timeout before any response header, and on a 502/503 answer;
//! * only errors on the node's connection count against the node or are
//!   retried: a request bext itself refused (WAF, limits) never reached it;
//! * other methods are never replayed once connected (their body may have
//!   reached Phoenix) unless `retry_non_idempotent = true` and Pingora still
//!   holds the whole body;
//! * at most `retries` further attempts, each on a node this request has not
//!   tried, except that a stale keep-alive connection may be retried on the
//!   same node.

use http::Method;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::request::RequestState;
use pingora::http::ResponseHeader;

fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl RequestState {
    fn mark_tried(&mut self) {
        if let Some(i) = self.node().map(|n| n.index).filter(|&i| i < 64) {
            self.tried |= 1 << i;
        }
    }

    /// Another attempt is allowed and has somewhere to go.
    fn can_retry(&self, reused_connection: bool) -> bool {
        let Some(pool) = &self.pool else { return false };
        self.attempts <= pool.policy.retries && (reused_connection || pool.has_untried(self.tried))
    }

    /// `fail_to_connect`.
    pub fn connect_failed(&mut self, mut e: Box<Error>) -> Box<Error> {
        self.outcome.connect_failures += 1;
        if let (Some(pool), Some(node)) = (self.pool.clone(), self.node().cloned()) {
            node.metrics.connect_errors.inc();
            node.count_failure(e.to_string());
            let t = node.record_failure(format!("connect: {e}"), &pool.policy.health);
            pool.on_transition(&node, t);
        }
        self.mark_tried();
        e.set_retry(self.can_retry(false));
        e
    }

    /// `error_while_proxy`: an error after the connection was made.
    pub fn proxy_failed(
        &mut self,
        session: &Session,
        mut e: Box<Error>,
        reused: bool,
    ) -> Box<Error> {
        // Only errors Pingora raised on the node's connection (marked
        // `Upstream`) are the node's fault. Errors bext's own filters return
        // (a WAF or limits refusal in `request_body_filter`, after the
        // connection was opened: `Unset`) and internal ones never reached
        // the node: counting them would let any client push a healthy node's
        // failure count up, and they must not be retried elsewhere either.
        let upstream_fault = *e.esource() == ErrorSource::Upstream;
        if upstream_fault {
            if let Some(node) = self.node() {
                node.count_failure(e.to_string());
            }
        }
        self.mark_tried();
        let replayable = match self.pool.as_ref() {
            _ if idempotent(&session.req_header().method) => true,
            Some(p) => p.policy.retry_non_idempotent && !session.as_ref().retry_buffer_truncated(),
            None => false,
        };
        let retry = upstream_fault
            && replayable
            && !self.response_started
            && self.tunnel.is_none()
            && self.can_retry(reused);
        e.set_retry(retry);
        e
    }

    /// `upstream_response_filter`: a 502/503 to an idempotent request becomes
    /// a retryable error while another node can take it; any other answer
    /// ends the retry window.
    pub fn response_head(&mut self, session: &Session, resp: &ResponseHeader) -> Result<()> {
        let status = resp.status.as_u16();
        if matches!(status, 502 | 503)
            && idempotent(&session.req_header().method)
            && self.can_retry(false)
        {
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                format!("node answered {status}"),
            );
            e.as_up();
            return Err(e);
        }
        self.response_started = true;
        self.outcome.status = Some(status);
        let took = self.outcome.attempt_start.map(|t| t.elapsed());
        self.outcome.response_time = took;
        if let Some(node) = self.node() {
            node.note_response();
            if let Some(took) = took {
                node.metrics.duration.observe(took.as_secs_f64());
            }
        }
        Ok(())
    }
}
