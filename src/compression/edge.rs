//! The compression stage of a proxied request: the coding negotiated when
//! the request arrives, the encoder started on the upstream's response head
//! (before the cache stores it, so a cached response is compressed once, at
//! fill), and the body chunks run through it. Counts what it did.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use prometheus::IntCounter;

use super::{
    apply_headers, content_coding, content_length, Coding, CompressionPlan, Encoder, HeaderMap,
};
use crate::telemetry::registry::Sub;

/// Codings with a counter, in `Coding` order after identity.
const COUNTED: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

struct PerCoding {
    responses: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

/// The plan and its counters; shared by every request (`Clone` shares them).
#[derive(Clone)]
pub struct EdgeCompression {
    plan: std::sync::Arc<CompressionPlan>,
    counters: std::sync::Arc<[PerCoding; 3]>,
}

/// Per-request state (a field of the proxy's `Ctx`).
#[derive(Debug, Default)]
pub struct CompressState {
    /// What this request's client gets, when its route compresses; `None`
    /// on routes that never compress (their cache variants then follow the
    /// client's `Accept-Encoding` as sent).
    coding: Option<Coding>,
    encoder: Option<Encoder>,
    /// The origin sent a body in a coding other than the negotiated one: it
    /// must not be stored under this request's variant.
    foreign_coding: bool,
}

impl CompressState {
    /// The `Accept-Encoding` part of the cache variant: the negotiated coding.
    pub fn variant(&self) -> Option<&'static str> {
        self.coding.map(Coding::as_str)
    }

    /// The response may not be stored under this request's variant.
    pub fn unstorable(&self) -> bool {
        self.foreign_coding
    }
}

impl std::fmt::Debug for EdgeCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCompression")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl EdgeCompression {
    /// The same counters with another plan (a reload in place).
    pub fn with_plan(&self, plan: CompressionPlan) -> EdgeCompression {
        EdgeCompression {
            plan: std::sync::Arc::new(plan),
            counters: self.counters.clone(),
        }
    }

    pub fn new(plan: CompressionPlan, sub: &Sub) -> EdgeCompression {
        let responses = sub.counter_vec(
            "responses_total",
            "Responses compressed by bext, by coding (cache hits are served compressed already and are not counted)",
            &["coding"],
        );
        let bytes_in = sub.counter_vec(
            "input_bytes_total",
            "Body bytes fed to the compressor, by coding",
            &["coding"],
        );
        let bytes_out = sub.counter_vec(
            "output_bytes_total",
            "Compressed body bytes produced, by coding",
            &["coding"],
        );
        let per = |c: Coding| PerCoding {
            responses: responses.with_label_values(&[c.as_str()]),
            bytes_in: bytes_in.with_label_values(&[c.as_str()]),
            bytes_out: bytes_out.with_label_values(&[c.as_str()]),
        };
        EdgeCompression {
            plan: std::sync::Arc::new(plan),
            counters: std::sync::Arc::new(COUNTED.map(per)),
        }
    }

    /// `request_filter`: the coding this request's response gets.
    pub fn on_request(&self, route_compresses: bool, headers: &HeaderMap, st: &mut CompressState) {
        if route_compresses && self.plan.enabled {
            st.coding = Some(self.plan.negotiate(headers));
        }
    }

    /// `upstream_response_filter`: starts the encoder and rewrites the head
    /// when the response is compressed.
    pub fn on_response_head(
        &self,
        method: &http::Method,
        resp: &mut ResponseHeader,
        st: &mut CompressState,
    ) -> pingora::Result<()> {
        st.encoder = None;
        st.foreign_coding = false;
        let Some(coding) = st.coding else {
            return Ok(());
        };
        if let Some(origin) = content_coding(resp) {
            st.foreign_coding = !origin.eq_ignore_ascii_case(coding.as_str());
            // The origin chose a coding by the client's Accept-Encoding: a
            // stored copy must vary by it even if the origin did not say so.
            super::add_vary(resp)?;
            return Ok(());
        }
        if !self.plan.eligible(method, resp) {
            return Ok(());
        }
        if coding == Coding::Identity {
            // Sent as it is to this client, compressed to others: a stored
            // copy is this client's variant only (nginx's `gzip_vary`).
            return super::add_vary(resp);
        }
        let len = content_length(resp);
        apply_headers(resp, coding)?;
        st.encoder = Some(Encoder::new(coding, &self.plan.levels, len));
        Ok(())
    }

    /// `upstream_response_body_filter`: compresses the chunk in place.
    pub fn on_body(
        &self,
        body: &mut Option<Bytes>,
        end: bool,
        st: &mut CompressState,
    ) -> pingora::Result<()> {
        let Some(enc) = st.encoder.as_mut() else {
            return Ok(());
        };
        let input = body.take().unwrap_or_default();
        let out = enc.encode(&input, end).map_err(|e| {
            pingora::Error::because(
                pingora::ErrorType::InternalError,
                format!("{} compression", enc.coding().as_str()),
                e,
            )
        })?;
        if end {
            let (i, o) = enc.totals();
            if let Some(c) = COUNTED.iter().position(|&c| c == enc.coding()) {
                let c = &self.counters[c];
                c.responses.inc();
                c.bytes_in.inc_by(i);
                c.bytes_out.inc_by(o);
            }
        }
        *body = (!out.is_empty() || end).then_some(out);
        Ok(())
    }
}
