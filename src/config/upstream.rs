//! The multi-node part of `[upstreams.NAME]`: node tables, balancing, health
//! checks, retries, sticky affinity and tunnel closing. User-facing serde types
//! and their validation into the plan types the `upstream` module runs on.
//! Plain addresses and connection timeouts stay in `plan.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use super::units::HumanDuration;
use super::user::UpstreamSection;

// ---------------------------------------------------------------------------
// User-facing types
// ---------------------------------------------------------------------------

/// One entry of `nodes`: `"127.0.0.1:4000"` or `{ addr, id, weight, drain }`.
///
/// Deserialized like `#[serde(untagged)]` (a string or a table), but by hand so
/// a typo inside a table is reported as `unknown field` with its key instead of
/// serde's "did not match any variant".
#[derive(Debug)]
pub enum NodeEntry {
    Addr(String),
    Table(NodeTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTable {
    pub addr: String,
    pub id: Option<String>,
    pub weight: Option<u32>,
    /// Start drained: no new clients (see `POST /__bext/upstreams/NAME/nodes/ID/undrain`).
    pub drain: Option<bool>,
}

impl<'de> Deserialize<'de> for NodeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address \"HOST:PORT\" or a table { addr, id, weight, drain }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NodeEntry, E> {
                Ok(NodeEntry::Addr(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NodeEntry, A::Error> {
                NodeTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(NodeEntry::Table)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// HTTP path to probe; without it the check is a TCP connect.
    pub path: Option<String>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_after: Option<u32>,
    pub unhealthy_after: Option<u32>,
    pub expect_status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySection {
    pub cookie: Option<String>,
    /// HMAC key; `"env:VAR"` reads it from the environment.
    pub secret: String,
    pub max_age: Option<HumanDuration>,
}

// ---------------------------------------------------------------------------
// Plan types
// ---------------------------------------------------------------------------

/// One node as the proxy uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub addr: SocketAddr,
    /// Stable public id: the configured `id`, else a hash of the address.
    pub id: String,
    pub weight: u32,
    pub drained: bool,
}

impl fmt::Display for NodePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    Hash(HashOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers `expect_status` (any 2xx/3xx when `None`).
    Http {
        path: String,
        expect_status: Option<u16>,
    },
}

#[derive(Debug, Clone)]
pub struct HealthPlan {
    pub probe: HealthProbe,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

#[derive(Clone)]
pub struct StickyPlan {
    pub cookie: String,
    pub secret: Vec<u8>,
    pub max_age: Duration,
}

impl fmt::Debug for StickyPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyPlan")
            .field("cookie", &self.cookie)
            .field("secret", &"<redacted>")
            .field("max_age", &self.max_age)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct PoolPolicy {
    pub balance: Balance,
    pub health: HealthPlan,
    /// Further nodes tried after the first one fails.
    pub retries: u32,
    pub retry_non_idempotent: bool,
    pub sticky: Option<StickyPlan>,
    pub close_spread: Duration,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        PoolPolicy {
            balance: Balance::RoundRobin,
            health: HealthPlan {
                probe: HealthProbe::Tcp,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                healthy_after: 2,
                unhealthy_after: 2,
            },
            retries: 2,
            retry_non_idempotent: false,
            sticky: None,
            close_spread: Duration::from_secs(5),
        }
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Where validation problems go: `(KEY, REASON)`.
pub(super) type Report<'a> = &'a mut dyn FnMut(String, String);

/// The id a node gets when none is configured: a short hash, never the address.
pub fn default_node_id(addr: &SocketAddr) -> String {
    let digest = Sha256::digest(format!("bext-node:{addr}").as_bytes());
    let mut id = String::with_capacity(12);
    for b in &digest[..6] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Validates `nodes`; `resolve` turns an address string into a socket address.
pub(super) fn compile_nodes(
    key: &str,
    entries: &[NodeEntry],
    resolve: impl Fn(&str) -> Result<SocketAddr, String>,
    report: Report,
) -> Vec<NodePlan> {
    let mut nodes: Vec<NodePlan> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let k = format!("{key}.nodes[{i}]");
        let (addr, id, weight, drained) = match entry {
            NodeEntry::Addr(a) => (a, None, None, false),
            NodeEntry::Table(t) => (&t.addr, t.id.as_ref(), t.weight, t.drain.unwrap_or(false)),
        };
        let addr = match resolve(addr) {
            Ok(a) => a,
            Err(e) => {
                let k = if matches!(entry, NodeEntry::Table(_)) {
                    format!("{k}.addr")
                } else {
                    k
                };
                report(k, e);
                continue;
            }
        };
        if let Some(id) = id.filter(|id| !valid_id(id)) {
            report(
                format!("{k}.id"),
                format!("\"{id}\" is not a node id: use 1-64 of [A-Za-z0-9_-]"),
            );
            continue;
        }
        let weight = weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            report(
                format!("{k}.weight"),
                format!("{weight} is out of range 1..=1000 (to stop traffic, use `drain = true`)"),
            );
            continue;
        }
        let id = id.cloned().unwrap_or_else(|| default_node_id(&addr));
        if nodes.iter().any(|n| n.addr == addr) {
            report(k, format!("{addr} is listed twice"));
            continue;
        }
        if nodes.iter().any(|n| n.id == id) {
            report(format!("{k}.id"), format!("node id \"{id}\" is used twice"));
            continue;
        }
        nodes.push(NodePlan {
            addr,
            id,
            weight,
            drained,
        });
    }
    nodes
}

pub(super) fn compile_policy(
    key: &str,
    p: &UpstreamSection,
    resolve_secret: impl Fn(&str) -> Result<String, String>,
    report: Report,
) -> PoolPolicy {
    let mut policy = PoolPolicy::default();
    let hash_on_set = p.hash_on.is_some();
    let hash_on = p
        .hash_on
        .as_deref()
        .map(|h| parse_hash_on(h).map_err(|e| report(format!("{key}.hash_on"), e)));
    match p.balance.as_deref() {
        None | Some("round_robin") => {}
        Some("least_conn") => policy.balance = Balance::LeastConn,
        Some("hash") => {
            policy.balance = Balance::Hash(match hash_on {
                Some(Ok(h)) => h,
                _ => HashOn::ClientIp,
            })
        }
        Some(other) => report(
            format!("{key}.balance"),
            format!("unknown balance \"{other}\": use round_robin, least_conn or hash"),
        ),
    }
    if hash_on_set && !matches!(policy.balance, Balance::Hash(_)) {
        report(
            format!("{key}.hash_on"),
            "only used with `balance = \"hash\"`".into(),
        );
    }
    if let Some(h) = &p.health {
        policy.health = compile_health(&format!("{key}.health"), h, report);
    }
    if let Some(r) = p.retries {
        if r > 10 {
            report(format!("{key}.retries"), format!("{r} is more than 10"));
        }
        policy.retries = r.min(10);
    }
    policy.retry_non_idempotent = p.retry_non_idempotent.unwrap_or(false);
    if let Some(s) = &p.sticky {
        policy.sticky = compile_sticky(&format!("{key}.sticky"), s, resolve_secret, report);
    }
    if let Some(d) = p.close_spread {
        if d.0 > Duration::from_secs(600) {
            report(format!("{key}.close_spread"), "longer than 10m".into());
        }
        policy.close_spread = d.0;
    }
    policy
}

fn parse_hash_on(s: &str) -> Result<HashOn, String> {
    if s == "client_ip" {
        return Ok(HashOn::ClientIp);
    }
    if let Some(h) = s.strip_prefix("header:") {
        return HeaderName::from_bytes(h.as_bytes())
            .map(HashOn::Header)
            .map_err(|_| format!("\"{h}\" is not a valid header name"));
    }
    if let Some(c) = s.strip_prefix("cookie:") {
        if valid_cookie_name(c) {
            return Ok(HashOn::Cookie(c.to_string()));
        }
        return Err(format!("\"{c}\" is not a valid cookie name"));
    }
    Err(format!(
        "\"{s}\": use \"client_ip\", \"header:NAME\" or \"cookie:NAME\""
    ))
}

fn valid_cookie_name(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn compile_health(key: &str, h: &HealthSection, report: Report) -> HealthPlan {
    let mut plan = PoolPolicy::default().health;
    if let Some(path) = h.path.clone() {
        if !path.starts_with('/')
            || path.len() > 1024
            || path.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            report(
                format!("{key}.path"),
                format!("\"{path}\" is not an absolute request path"),
            );
        }
        if let Some(s) = h.expect_status.filter(|s| !(100..=599).contains(s)) {
            report(
                format!("{key}.expect_status"),
                format!("{s} is not an HTTP status"),
            );
        }
        plan.probe = HealthProbe::Http {
            path,
            expect_status: h.expect_status,
        };
    } else if h.expect_status.is_some() {
        report(
            format!("{key}.expect_status"),
            "needs `path` (without it the check is a TCP connect)".into(),
        );
    }
    if let Some(d) = h.interval {
        if d.0 < Duration::from_millis(100) {
            report(format!("{key}.interval"), "shorter than 100ms".into());
        }
        plan.interval = d.0.max(Duration::from_millis(100));
    }
    if let Some(d) = h.timeout {
        if d.0.is_zero() {
            report(format!("{key}.timeout"), "must be more than 0s".into());
        }
        plan.timeout = d.0;
    }
    for (name, value, slot) in [
        ("healthy_after", h.healthy_after, &mut plan.healthy_after),
        (
            "unhealthy_after",
            h.unhealthy_after,
            &mut plan.unhealthy_after,
        ),
    ] {
        if let Some(v) = value {
            if !(1..=100).contains(&v) {
                report(
                    format!("{key}.{name}"),
                    format!("{v} is out of range 1..=100"),
                );
            }
            *slot = v.clamp(1, 100);
        }
    }
    plan
}

fn compile_sticky(
    key: &str,
    s: &StickySection,
    resolve_secret: impl Fn(&str) -> Result<String, String>,
    report: Report,
) -> Option<StickyPlan> {
    let cookie = s.cookie.clone().unwrap_or_else(|| "_bext_node".into());
    if !valid_cookie_name(&cookie) {
        report(
            format!("{key}.cookie"),
            format!("\"{cookie}\" is not a valid cookie name"),
        );
        return None;
    }
    let secret = match resolve_secret(&s.secret) {
        Ok(v) if v.len() >= 16 => v.into_bytes(),
        Ok(_) => {
            report(
                format!("{key}.secret"),
                "too short: use at least 16 characters".into(),
            );
            return None;
        }
        Err(e) => {
            report(format!("{key}.secret"), e);
            return None;
        }
    };
    let max_age = s.max_age.map_or(Duration::from_secs(24 * 3600), |d| d.0);
    if max_age < Duration::from_secs(60) {
        report(format!("{key}.max_age"), "shorter than 60s".into());
        return None;
    }
    Some(StickyPlan {
        cookie,
        secret,
        max_age,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    const ROUTE: &str = "[[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\n";

    fn errs(upstream: &str) -> Vec<String> {
        let text = format!("[upstreams.app]\n{upstream}\n{ROUTE}");
        match load_str(Path::new("b.toml"), &text) {
            Ok(_) => panic!("config unexpectedly valid: {upstream}"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn nodes_accept_strings_and_tables_with_defaults() {
        let text = format!(
            "[upstreams.app]\nnodes = [\"127.0.0.1:4000\", {{ addr = \"127.0.0.1:4001\", id = \"web-2\", weight = 3, drain = true }}]\n\
             balance = \"hash\"\nhash_on = \"cookie:_app_key\"\n\
             health = {{ path = \"/health\", interval = \"2s\", expect_status = 204 }}\n\
             sticky = {{ secret = \"0123456789abcdef\" }}\n{ROUTE}"
        );
        let plan = load_str(Path::new("b.toml"), &text).unwrap();
        let u = &plan.upstreams[0];
        assert_eq!(u.nodes[0].id, default_node_id(&u.nodes[0].addr));
        assert!(!u.nodes[0].id.contains("4000"));
        assert_eq!(
            (
                u.nodes[1].id.as_str(),
                u.nodes[1].weight,
                u.nodes[1].drained
            ),
            ("web-2", 3, true)
        );
        assert_eq!(
            u.policy.balance,
            Balance::Hash(HashOn::Cookie("_app_key".into()))
        );
        assert_eq!(u.policy.health.interval, Duration::from_secs(2));
        assert_eq!(
            u.policy.health.probe,
            HealthProbe::Http {
                path: "/health".into(),
                expect_status: Some(204)
            }
        );
        assert_eq!(u.policy.retries, 2);
        let sticky = u.policy.sticky.as_ref().unwrap();
        assert_eq!(sticky.cookie, "_bext_node");
        assert!(
            !format!("{sticky:?}").contains("0123456789abcdef"),
            "secret in Debug"
        );
    }

    #[test]
    fn bad_pool_keys_are_named() {
        let e = errs("nodes = [{ addr = \"127.0.0.1:1\", wieght = 2 }]");
        assert!(
            e[0].contains("upstreams.app.nodes[0]") && e[0].contains("unknown field"),
            "{e:?}"
        );
        let e = errs("nodes = [\"127.0.0.1:1\"]\nbalance = \"random\"");
        assert!(
            e[0].contains("b.toml: upstreams.app.balance: unknown balance"),
            "{e:?}"
        );
        let e = errs("nodes = [\"127.0.0.1:1\"]\nhash_on = \"client_ip\"");
        assert!(e[0].contains("upstreams.app.hash_on"), "{e:?}");
        let e = errs("nodes = [{ addr = \"127.0.0.1:1\", id = \"a b\" }]");
        assert!(e[0].contains("upstreams.app.nodes[0].id"), "{e:?}");
        let e = errs("nodes = [{ addr = \"127.0.0.1:1\", id = \"x\" }, { addr = \"127.0.0.1:2\", id = \"x\" }]");
        assert!(e[0].contains("used twice"), "{e:?}");
        let e = errs("nodes = [\"127.0.0.1:1\"]\nsticky = { secret = \"short\" }");
        assert!(
            e[0].contains("upstreams.app.sticky.secret: too short"),
            "{e:?}"
        );
        let e = errs(
            "nodes = [\"127.0.0.1:1\"]\nsticky = { secret = \"env:BEXT_TEST_UNSET_VAR_XYZ\" }",
        );
        assert!(e[0].contains("BEXT_TEST_UNSET_VAR_XYZ is not set"), "{e:?}");
        let e = errs("nodes = [\"127.0.0.1:1\"]\nhealth = { interval = \"10ms\" }");
        assert!(e[0].contains("upstreams.app.health.interval"), "{e:?}");
        let e = errs("nodes = [\"127.0.0.1:1\"]\nhealth = { unhealthy_after = 0 }");
        assert!(
            e[0].contains("upstreams.app.health.unhealthy_after"),
            "{e:?}"
        );
    }

    #[test]
    fn route_sticky_needs_an_upstream_cookie() {
        let text = "[upstreams.app]\nnodes = [\"127.0.0.1:1\"]\n[[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\nsticky = true\n";
        let e = load_str(Path::new("b.toml"), text).unwrap_err().to_string();
        assert!(e.contains("route_rules[0].sticky"), "{e}");
    }
}
