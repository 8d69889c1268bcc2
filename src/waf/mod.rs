//! The web application firewall: request normalization, detectors, the rule
//! set, modes and exclusions. It knows nothing about Pingora: the proxy hands
//! it the request head (`http::request::Parts`) and, separately, the body
//! bytes it buffered, and gets a [`Verdict`] back. It must never panic, and
//! its time and memory are linear in the (bounded) input. `phase` is the
//! thin adapter the proxy phases call.
//!
//! Scoring works like OWASP CRS anomaly mode: every matched rule adds its
//! severity (critical 5, warning 3, notice 2); a request whose total reaches
//! `waf.threshold` (default 5) is blocked in `block` mode and logged in
//! `detect` mode.

pub mod body;
pub mod config;
mod confirm;
pub mod exclusions;
mod head;
mod inspect;
pub mod metrics;
pub mod normalize;
pub mod phase;
mod phoenix;
mod protocol;
pub mod rules;
mod shell;
mod tokenize;
mod upload;
mod url;

use regex::bytes::{Regex, RegexSet, RegexSetBuilder};

pub use config::{Mode, OverLimit, WafPlan};
use rules::{Category, Rule, RULES};

/// Longest excerpt of a matched value kept for the log line.
const EXCERPT: usize = 48;
/// At most this many hits are recorded per request (the score keeps counting).
const MAX_HITS: usize = 16;
/// Regex size limit for the compiled rule set.
const REGEX_SIZE: usize = 64 << 20;

/// One matched rule.
#[derive(Debug, Clone)]
pub struct Hit {
    pub rule: &'static Rule,
    /// Where: `path`, `query:NAME`, `header:NAME`, `body:NAME`, ...
    pub location: String,
    /// A short, escaped, redacted excerpt of what matched.
    pub excerpt: String,
}

/// The outcome of inspecting a request (or part of one).
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub score: u32,
    pub hits: Vec<Hit>,
}

impl Verdict {
    /// Adds a hit; a rule counts once per request however often it matches.
    pub fn add(&mut self, hit: Hit) {
        if self.hits.iter().any(|h| h.rule.id == hit.rule.id) {
            return;
        }
        self.score += u32::from(hit.rule.severity);
        if self.hits.len() < MAX_HITS {
            self.hits.push(hit);
        }
    }

    pub fn merge(&mut self, other: Verdict) {
        for h in other.hits {
            self.add(h);
        }
    }

    pub fn is_clean(&self) -> bool {
        self.score == 0
    }

    /// Comma-separated rule ids, for logs and the 403 body.
    pub fn rule_ids(&self) -> String {
        let ids: Vec<String> = self.hits.iter().map(|h| h.rule.id.to_string()).collect();
        ids.join(",")
    }

    /// One structured log line (key=value) describing the hits.
    pub fn log_line(&self) -> String {
        let mut s = format!("score={} rules={}", self.score, self.rule_ids());
        for h in &self.hits {
            s.push_str(&format!(
                " hit={}:{}:{}:\"{}\"",
                h.rule.id,
                h.rule.category.name(),
                h.location,
                h.excerpt
            ));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WafError {
    #[error("rule {id}: pattern does not compile: {source}")]
    Pattern { id: u32, source: regex::Error },
    #[error("rule set does not compile: {0}")]
    Set(regex::Error),
    #[error("scanner list does not compile: {0}")]
    Scanners(aho_corasick::BuildError),
    #[error("command lists do not compile: {0}")]
    Commands(aho_corasick::BuildError),
}

/// A compiled subset of the content rules, matched in one pass.
#[derive(Debug)]
struct RuleSet {
    set: RegexSet,
    /// Same order as `set`: the rule and its own regex (for the excerpt).
    rules: Vec<(&'static Rule, Regex)>,
}

impl RuleSet {
    fn build(filter: impl Fn(&Rule) -> bool) -> Result<RuleSet, WafError> {
        let mut pats = vec![];
        let mut rules = vec![];
        for r in RULES.iter().filter(|r| filter(r)) {
            let Some(p) = r.pattern else { continue };
            let full = format!("(?-u){p}");
            let re = regex::bytes::RegexBuilder::new(&full)
                .size_limit(REGEX_SIZE)
                .build()
                .map_err(|source| WafError::Pattern { id: r.id, source })?;
            pats.push(full);
            rules.push((r, re));
        }
        let set = RegexSetBuilder::new(&pats)
            .size_limit(REGEX_SIZE)
            .dfa_size_limit(REGEX_SIZE)
            .build()
            .map_err(WafError::Set)?;
        Ok(RuleSet { set, rules })
    }
}

/// The compiled firewall, built once per plan and shared by all requests.
#[derive(Debug)]
pub struct Waf {
    pub plan: WafPlan,
    all: RuleSet,
    /// Command-injection rules, also run on the "command line" variant of a
    /// value (quotes, backslashes and carets removed: `w'h'o'a'm'i`). All
    /// rules also run on the variant with `/* comments */` replaced by spaces.
    rce: RuleSet,
    /// The scanner User-Agent substrings, matched in one pass.
    scanners: aho_corasick::AhoCorasick,
    /// The command lists of the shell tokenizer (`shell`, `data/*.txt`).
    commands: shell::Commands,
    pub metrics: metrics::WafMetrics,
}

impl Waf {
    pub fn new(plan: WafPlan) -> Result<Waf, WafError> {
        Ok(Waf {
            plan,
            all: RuleSet::build(|_| true)?,
            rce: RuleSet::build(|r| r.category == Category::Rce)?,
            scanners: protocol::scanner_matcher().map_err(WafError::Scanners)?,
            commands: shell::Commands::new().map_err(WafError::Commands)?,
            metrics: metrics::WafMetrics::new(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.plan.mode
    }

    pub fn blocks(&self, v: &Verdict) -> bool {
        v.score >= self.plan.threshold
    }

    /// Inspects method, path, query string and headers (an HTTP/2 head, or
    /// one whose raw bytes are not at hand).
    pub fn inspect_head(&self, req: &http::request::Parts) -> Verdict {
        self.inspect_head_raw(req, None)
    }

    /// Like [`Waf::inspect_head`], with the head of an HTTP/1 request as
    /// received: its request line is checked as sent (the fragment, the
    /// version and an absolute-form target never reach the parsed `Uri`).
    pub fn inspect_head_raw(&self, req: &http::request::Parts, raw_head: Option<&[u8]>) -> Verdict {
        self.metrics.inspected();
        let mut v = Verdict::default();
        let line = raw_head.and_then(head::RequestLine::parse);
        inspect::head(self, req, line, &mut v);
        v
    }

    /// Inspects a request body (at most `inspect_body_limit` bytes of it;
    /// `truncated` says the rest was not buffered).
    pub fn inspect_body(
        &self,
        req: &http::request::Parts,
        body: &[u8],
        truncated: bool,
    ) -> Verdict {
        let mut v = Verdict::default();
        inspect::body(self, req, body, truncated, &mut v);
        v
    }

    /// Registers the WAF's metrics in the proxy's registry.
    pub fn register_metrics(&self, registry: &prometheus::Registry) {
        self.metrics.register(registry);
    }

    /// `GET /__bext/waf`: mode and counters.
    pub fn to_json(&self) -> serde_json::Value {
        let mode = format!("{:?}", self.mode()).to_lowercase();
        serde_json::json!({ "mode": mode, "counters": self.metrics.to_json() })
    }

    /// Whether the body of this request should be buffered for inspection.
    pub fn wants_body(&self, req: &http::request::Parts) -> bool {
        self.plan.mode != Mode::Off && inspect::has_body(req)
    }
}

/// An escaped excerpt of `s` around `start`, at most [`EXCERPT`] bytes.
fn excerpt(s: &[u8], start: usize, redact: bool) -> String {
    if redact {
        return "[redacted]".into();
    }
    let from = start.min(s.len());
    let to = (from + EXCERPT).min(s.len());
    let mut out = String::with_capacity(EXCERPT + 8);
    for &b in &s[from..to] {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_classes;
#[cfg(test)]
mod tests_fp;
#[cfg(test)]
mod tests_phoenix;
#[cfg(test)]
mod tests_protocol;
