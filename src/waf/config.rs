//! The `[waf]` section of `bext.config.toml` (serde types) and its
//! validation into [`WafPlan`]. Errors are returned as (key, reason) pairs so
//! `config::plan` can report them as `FILE: KEY: REASON`.

use serde::Deserialize;

use super::exclusions::{Exclusion, RuleSelector};
use super::rules::{self, Category};
use crate::config::units::ByteSize;
use crate::routing::Pattern;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WafSection {
    /// "block" | "detect" | "off"
    pub mode: Option<String>,
    pub inspect_body_limit: Option<ByteSize>,
    /// "pass" | "reject"
    pub body_over_limit: Option<String>,
    pub threshold: Option<u32>,
    pub max_args: Option<usize>,
    pub max_json_depth: Option<usize>,
    pub allowed_methods: Option<Vec<String>>,
    /// Rules switched off everywhere, by id (`942100`) or category (`"sqli"`).
    #[serde(default)]
    pub disable: Vec<RuleRef>,
    #[serde(default)]
    pub exclusions: Vec<ExclusionSection>,
}

/// A rule id as a number (`942100`) or a string (`"942100"`, `"sqli"`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RuleRef {
    Id(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionSection {
    /// Rule ids ("942030") or category names ("sqli"); empty = every rule.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Route-style path pattern ("/admin/posts/*"); absent = every path.
    pub path: Option<String>,
    /// Argument names (query, form, JSON key, multipart field, cookie);
    /// empty = the whole request.
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Block,
    Detect,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Inspect the first `inspect_body_limit` bytes, pass the rest unchecked.
    Pass,
    /// Answer 413.
    Reject,
}

/// The validated WAF settings.
#[derive(Debug, Clone)]
pub struct WafPlan {
    pub mode: Mode,
    pub inspect_body_limit: usize,
    pub body_over_limit: OverLimit,
    pub threshold: u32,
    pub max_args: usize,
    pub max_json_depth: usize,
    pub allowed_methods: Vec<String>,
    pub exclusions: Vec<Exclusion>,
    /// The libinjection SQLi/XSS tokenizers (rules 942110, 941070). Always
    /// on from config (`waf.disable`-style switches are per rule id); off
    /// only in measurements that compare the rule set with and without them.
    pub tokenizers: bool,
}

/// The methods a Phoenix app answers: `phx.gen.html`/`phx.gen.json`
/// resources use GET, POST, PUT, PATCH and DELETE (API clients send them as
/// is; browsers tunnel them through `Plug.MethodOverride`), HEAD and OPTIONS
/// come from clients and CORS preflights. Unlike OWASP CRS's list, DELETE is
/// in: refusing it broke every JSON API without stopping any attack (the
/// verb itself carries no payload). CONNECT (tunnels through the proxy),
/// TRACE/TRACK (cross-site tracing) and any unknown method stay refused.
pub const DEFAULT_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Default for WafPlan {
    fn default() -> Self {
        WafPlan {
            mode: Mode::Block,
            inspect_body_limit: 1 << 20,
            body_over_limit: OverLimit::Pass,
            threshold: 5,
            max_args: 1000,
            max_json_depth: 128,
            allowed_methods: DEFAULT_METHODS.iter().map(|m| m.to_string()).collect(),
            exclusions: vec![],
            tokenizers: true,
        }
    }
}

/// A rule id (`"942100"`) or a category name (`"sqli"`).
fn selector(r: &str) -> Option<RuleSelector> {
    if let Some(c) = Category::parse(r) {
        return Some(RuleSelector::Category(c));
    }
    r.parse::<u32>()
        .ok()
        .and_then(rules::by_id)
        .map(|rule| RuleSelector::Id(rule.id))
}

/// Validates the section; every problem is returned with its key.
pub fn compile(s: WafSection) -> Result<WafPlan, Vec<(String, String)>> {
    let mut errs = vec![];
    let mut plan = WafPlan::default();
    match s.mode.as_deref() {
        None | Some("block") => {}
        Some("detect") => plan.mode = Mode::Detect,
        Some("off") => plan.mode = Mode::Off,
        Some(m) => errs.push((
            "waf.mode".into(),
            format!("\"{m}\" is not one of \"block\", \"detect\", \"off\""),
        )),
    }
    if let Some(ByteSize(n)) = s.inspect_body_limit {
        match usize::try_from(n) {
            Ok(n) if (1..=64 << 20).contains(&n) => plan.inspect_body_limit = n,
            _ => errs.push((
                "waf.inspect_body_limit".into(),
                "must be between 1B and 64MiB".into(),
            )),
        }
    }
    match s.body_over_limit.as_deref() {
        None | Some("pass") => {}
        Some("reject") => plan.body_over_limit = OverLimit::Reject,
        Some(v) => errs.push((
            "waf.body_over_limit".into(),
            format!("\"{v}\" is not one of \"pass\", \"reject\""),
        )),
    }
    if let Some(t) = s.threshold {
        if t == 0 {
            errs.push(("waf.threshold".into(), "must be at least 1".into()));
        }
        plan.threshold = t;
    }
    if let Some(n) = s.max_args {
        if n == 0 {
            errs.push(("waf.max_args".into(), "must be at least 1".into()));
        }
        plan.max_args = n;
    }
    if let Some(n) = s.max_json_depth {
        if !(1..=10_000).contains(&n) {
            errs.push((
                "waf.max_json_depth".into(),
                "must be between 1 and 10000".into(),
            ));
        }
        plan.max_json_depth = n;
    }
    if let Some(ms) = s.allowed_methods {
        for (i, m) in ms.iter().enumerate() {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
            {
                errs.push((
                    format!("waf.allowed_methods[{i}]"),
                    format!("\"{m}\" is not an upper-case HTTP method"),
                ));
            }
        }
        plan.allowed_methods = ms;
    }
    // `disable` is an exclusion of those rules from the whole of every request.
    if !s.disable.is_empty() {
        let mut rules_sel = vec![];
        for (j, r) in s.disable.iter().enumerate() {
            let text = match r {
                RuleRef::Id(n) => n.to_string(),
                RuleRef::Name(t) => t.clone(),
            };
            match selector(&text) {
                Some(sel) => rules_sel.push(sel),
                None => errs.push((
                    format!("waf.disable[{j}]"),
                    format!(
                        "\"{text}\" is neither a rule id from the README table nor a category name"
                    ),
                )),
            }
        }
        plan.exclusions.push(Exclusion {
            rules: rules_sel,
            path: None,
            args: vec![],
        });
    }
    for (i, e) in s.exclusions.into_iter().enumerate() {
        let key = format!("waf.exclusions[{i}]");
        let mut rules_sel = vec![];
        for (j, r) in e.rules.iter().enumerate() {
            match selector(r) {
                Some(sel) => rules_sel.push(sel),
                None => errs.push((
                    format!("{key}.rules[{j}]"),
                    format!(
                        "\"{r}\" is neither a rule id from the README table nor a category name"
                    ),
                )),
            }
        }
        let path = match e.path.as_deref().map(Pattern::parse) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(m)) => {
                errs.push((format!("{key}.path"), m));
                None
            }
        };
        plan.exclusions.push(Exclusion {
            rules: rules_sel,
            path,
            args: e.args.into_iter().map(|a| a.to_ascii_lowercase()).collect(),
        });
    }
    if errs.is_empty() {
        Ok(plan)
    } else {
        Err(errs)
    }
}
