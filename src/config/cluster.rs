//! `[cluster]`: several bext nodes sharing purges, rate limits, maintenance
//! and drain state and health hints through one Redis (or any Redis-protocol
//! server). Absent, bext is a single node and no Redis code runs. The URL may hold a password, so it is resolved with
//! [`resolve_secret`] (`env:VAR`) and never printed whole.

use serde::Deserialize;

use std::time::Duration;

use super::plan::{resolve_secret, Errors};
use super::units::HumanDuration;

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `redis://[user:pass@]host:port/db`, `rediss://…` (TLS), or `env:VAR`.
    pub redis: String,
    /// This node's name in the stream and the logs (default: the hostname).
    pub node_name: Option<String>,
    /// Prefix of every key bext uses (default `bext:`), to share a Redis.
    pub key_prefix: Option<String>,
    /// How often this node's rate-limit admissions are shared (default 200ms).
    pub sync_interval: Option<HumanDuration>,
}

/// `[cluster]`, validated.
#[derive(Clone)]
pub struct ClusterPlan {
    /// The resolved URL (may carry a password: see the `Debug` impl).
    pub redis_url: String,
    pub node_name: String,
    pub key_prefix: String,
    /// Rate-limit sync period (also paces the shared-state and health-hint
    /// checks; heartbeats are a few of these apart).
    pub sync_interval: Duration,
}

impl ClusterPlan {
    /// The URL without its password, for logs and `bext check`.
    pub fn redis_display(&self) -> String {
        redact(&self.redis_url)
    }
}

impl std::fmt::Debug for ClusterPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPlan")
            .field("redis_url", &self.redis_display())
            .field("node_name", &self.node_name)
            .field("key_prefix", &self.key_prefix)
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}

pub const DEFAULT_KEY_PREFIX: &str = "bext:";
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// Faster costs Redis round trips for little accuracy; slower lets a client
/// spread over N nodes take up to N bursts before the others hear of it.
const SYNC_RANGE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(5));
const MAX_NAME: usize = 128;

pub(super) fn compile(errs: &mut Errors, c: ClusterSection) -> Option<ClusterPlan> {
    let before = errs.count();
    let url = match resolve_secret(c.redis.trim()) {
        Ok(u) => u,
        Err(e) => {
            errs.push("cluster.redis", e);
            String::new()
        }
    };
    if !url.is_empty() {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            errs.push(
                "cluster.redis",
                format!(
                    "\"{}\" is not a redis:// or rediss:// URL (e.g. \"redis://127.0.0.1:6379/0\")",
                    redact(&url)
                ),
            );
        } else if let Err(e) = redis::Client::open(url.as_str()) {
            // Only parses: no connection is made before the server runs.
            errs.push("cluster.redis", format!("{}: {e}", redact(&url)));
        }
    }
    let node_name = match c.node_name {
        Some(n) => n,
        None => hostname().unwrap_or_default(),
    };
    if node_name.is_empty() {
        errs.push(
            "cluster.node_name",
            "empty (and no hostname to default to): name this node",
        );
    } else if node_name.len() > MAX_NAME || node_name.chars().any(|c| c.is_whitespace()) {
        errs.push(
            "cluster.node_name",
            format!("\"{node_name}\": at most {MAX_NAME} bytes, no whitespace"),
        );
    }
    let key_prefix = c
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
    if key_prefix.len() > MAX_NAME {
        errs.push(
            "cluster.key_prefix",
            format!("longer than {MAX_NAME} bytes"),
        );
    }
    let sync_interval = c.sync_interval.map_or(DEFAULT_SYNC_INTERVAL, |d| d.0);
    if sync_interval < SYNC_RANGE.0 || sync_interval > SYNC_RANGE.1 {
        errs.push(
            "cluster.sync_interval",
            format!(
                "{sync_interval:?}: must be between {:?} and {:?} (default {DEFAULT_SYNC_INTERVAL:?})",
                SYNC_RANGE.0, SYNC_RANGE.1
            ),
        );
    }
    (errs.count() == before).then_some(ClusterPlan {
        redis_url: url,
        node_name,
        key_prefix,
        sync_interval,
    })
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((auth, host)) if auth.contains(':') => {
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_string(),
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("redis://u:hunter2@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact("rediss://:pw@h/1"), "rediss://:***@h/1");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    fn load(section: &str) -> Result<Option<ClusterPlan>, Vec<String>> {
        let text = format!(
            "[upstreams.p]\nnodes = [\"127.0.0.1:4000\"]\n[[route_rules]]\npattern = \"/*\"\nproxy = \"p\"\n{section}"
        );
        super::super::load_str(std::path::Path::new("/etc/bext/t.toml"), &text)
            .map(|p| p.cluster)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn cluster_is_optional_and_defaulted() {
        assert!(load("").unwrap().is_none());
        let c = load("[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.key_prefix, "bext:");
        assert_eq!(c.sync_interval, DEFAULT_SYNC_INTERVAL);
        assert_eq!(Some(c.node_name), hostname());
        let c = load("[cluster]\nredis = \"rediss://u:pw@r.test:6380/1\"\nnode_name = \"edge-a\"\nkey_prefix = \"shop:\"\nsync_interval = \"100ms\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.node_name.as_str(), c.key_prefix.as_str()),
            ("edge-a", "shop:")
        );
        assert_eq!(c.sync_interval, Duration::from_millis(100));
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[cluster]\nredis = \"http://x\"\n").unwrap_err();
        assert!(
            e[0].starts_with("/etc/bext/t.toml: cluster.redis: "),
            "{e:?}"
        );
        let e = load("[cluster]\nredis = \"env:BEXT_TEST_SURELY_UNSET\"\n").unwrap_err();
        assert!(
            e[0].contains("cluster.redis: environment variable BEXT_TEST_SURELY_UNSET is not set"),
            "{e:?}"
        );
        let e = load("[cluster]\nredis = \"redis://h\"\nnode_name = \"a b\"\n").unwrap_err();
        assert!(e[0].contains("cluster.node_name"), "{e:?}");
        let e = load("[cluster]\nredis = \"redis://h\"\nmaxlen = 3\n").unwrap_err();
        assert!(e[0].contains("cluster.maxlen: unknown field"), "{e:?}");
        let e = load("[cluster]\nredis = \"redis://h\"\nsync_interval = \"1ms\"\n").unwrap_err();
        assert!(
            e[0].contains("cluster.sync_interval: 1ms: must be between"),
            "{e:?}"
        );
        let e = load("[cluster]\nredis = \"redis://h\"\nsync_interval = \"fast\"\n").unwrap_err();
        assert!(e[0].contains("cluster.sync_interval"), "{e:?}");
    }

    #[test]
    fn the_hostname_is_the_default_node_name() {
        assert!(hostname().is_some_and(|h| !h.is_empty()));
    }
}
