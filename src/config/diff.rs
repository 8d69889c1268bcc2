//! What a config reload changes, and whether the running process can apply
//! it in place (a new plan swapped in: cache, tunnels, rate-limit state and
//! node health kept) or needs a new process through the socket handoff.
//!
//! In place: `route_rules`, `upstreams` (pools and nodes; a node kept by id
//! and address keeps its health, tunnels and metrics), `limits` (rate
//! sketches kept where the spec is unchanged), `sites`, `waf`, `admin`,
//! `compression`,
//! and `server.default_site` / `error_page` / `client_timeout`. Everything else — listeners, threads and process
//! settings, `[cache]`, `[cluster]`, `[tls]` other than its
//! certificates, `[telemetry]` — takes a handoff. Certificates (the files
//! `[tls]` names, or their paths) are swapped in place: new handshakes get
//! them, open connections keep theirs.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::Path;

use toml::{Table, Value};

use super::Plan;

/// The decision for one reload.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Apply in place; what changed, for the operator.
    InPlace(Vec<String>),
    /// A new process is needed, because of this.
    Handoff(String),
}

/// Sections only a new process can apply.
const HANDOFF_SECTIONS: [&str; 3] = ["cache", "telemetry", "cluster"];
/// `[tls]` keys that only name certificates: swapped in place (the
/// listeners' resolver reads the current store); the rest of `[tls]`
/// (listen addresses, HTTP/3, redirects) takes a handoff.
const CERT_KEYS: [&str; 3] = ["cert", "key", "certificates"];
/// Sections applied in place.
const IN_PLACE_SECTIONS: [&str; 6] = [
    "upstreams",
    "limits",
    "sites",
    "waf",
    "admin",
    "compression",
];
/// `[server]` keys applied in place; every other one takes a handoff.
const IN_PLACE_SERVER_KEYS: [&str; 3] = ["default_site", "error_page", "client_timeout"];

/// What the diff needs of a plan (kept by the running process).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub source: std::path::PathBuf,
    pub doc: Table,
    pub tls_digest: u64,
}

impl Snapshot {
    pub fn of(plan: &Plan) -> Snapshot {
        Snapshot::of_parts(&plan.source, plan.doc.clone(), plan.tls_digest)
    }

    pub fn of_parts(source: &Path, doc: Table, tls_digest: u64) -> Snapshot {
        Snapshot {
            source: std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf()),
            doc,
            tls_digest,
        }
    }
}

pub fn compare(old: &Snapshot, new: &Snapshot) -> Change {
    let (a, b) = (&old.doc, &new.doc);
    if old.source != new.source {
        return Change::Handoff(format!(
            "another config file ({} instead of {})",
            new.source.display(),
            old.source.display()
        ));
    }
    for s in HANDOFF_SECTIONS {
        if a.get(s) != b.get(s) {
            return Change::Handoff(format!("[{s}] changed"));
        }
    }
    let tls_rest = |t: &Table| {
        t.get("tls").and_then(Value::as_table).map(|t| {
            let mut t = t.clone();
            CERT_KEYS.iter().for_each(|k| {
                t.remove(*k);
            });
            t
        })
    };
    if tls_rest(a) != tls_rest(b) {
        return Change::Handoff("[tls] changed (other than its certificates)".into());
    }
    let mut changed = vec![];
    if a.get("tls") != b.get("tls") || old.tls_digest != new.tls_digest {
        changed.push("TLS certificates".to_owned());
    }
    let server = |t: &Table| {
        t.get("server")
            .and_then(Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let (sa, sb) = (server(a), server(b));
    let keys: BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
    for k in keys {
        if sa.get(k) != sb.get(k) {
            if IN_PLACE_SERVER_KEYS.contains(&k.as_str()) {
                changed.push(format!("server.{k}"));
            } else {
                return Change::Handoff(format!("server.{k} changed"));
            }
        }
    }
    let (ra, rb) = (routes(a), routes(b));
    if ra != rb {
        changed.push(if ra.len() == rb.len() {
            format!("route_rules ({} rules)", rb.len())
        } else {
            format!("route_rules ({} → {} rules)", ra.len(), rb.len())
        });
    }
    for s in IN_PLACE_SECTIONS {
        if a.get(s) != b.get(s) {
            changed.push(format!("[{s}]"));
        }
    }
    Change::InPlace(changed)
}

fn routes(t: &Table) -> Vec<Value> {
    t.get("route_rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A digest of the files `[tls]` names (`cert`, `key`, at any depth),
/// relative to the config file: a renewed certificate under the same path
/// must still reach the listeners.
pub fn tls_digest(doc: &Table, config: &Path) -> u64 {
    let Some(tls) = doc.get("tls") else {
        return 0;
    };
    let base = config.parent().unwrap_or(Path::new("."));
    let mut paths = vec![];
    collect_files(tls, &mut paths);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        p.hash(&mut h);
        std::fs::read(base.join(&p)).ok().hash(&mut h);
    }
    h.finish()
}

fn collect_files(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                match (k.as_str(), v) {
                    ("cert" | "key", Value::String(s)) => out.push(s.clone()),
                    _ => collect_files(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_files(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[upstreams.app]\nnodes = [\"127.0.0.1:4000\"]\n";

    fn plan(extra: &str, routes: &str) -> Snapshot {
        let text = format!(
            "{BASE}{extra}\n{routes}\n[[route_rules]]\npattern = \"/*\"\nproxy = \"app\"\n"
        );
        Snapshot::of(&super::super::load_str(Path::new("/tmp/bext-diff-test.toml"), &text).unwrap())
    }

    #[test]
    fn routes_waf_and_sites_are_in_place_and_the_rest_is_a_handoff() {
        let old = plan("", "");
        let new = plan(
            "[waf]\nmode = \"detect\"\n",
            "[[route_rules]]\npattern = \"/a\"\nproxy = \"app\"\nheaders = { \"X-A\" = \"1\" }\n",
        );
        match compare(&old, &new) {
            Change::InPlace(c) => assert_eq!(c, vec!["route_rules (1 → 2 rules)", "[waf]"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(compare(&old, &plan("", "")), Change::InPlace(vec![]));
        let up = plan("[upstreams.other]\nnodes = [\"127.0.0.1:4001\"]\n", "");
        assert_eq!(
            compare(&old, &up),
            Change::InPlace(vec!["[upstreams]".into()])
        );
        let lim = plan("[limits]\nmax_body = \"1MiB\"\n", "");
        assert_eq!(
            compare(&old, &lim),
            Change::InPlace(vec!["[limits]".into()])
        );
        let cache = plan("[cache]\nmax_size = \"100MiB\"\n", "");
        assert!(matches!(compare(&old, &cache), Change::Handoff(r) if r.contains("[cache]")));
        let listen = plan("[server]\nlisten = [\"127.0.0.1:9999\"]\n", "");
        assert!(
            matches!(compare(&old, &listen), Change::Handoff(r) if r.contains("server.listen"))
        );
        let page = plan("[server]\nclient_timeout = \"10s\"\n", "");
        assert_eq!(
            compare(&old, &page),
            Change::InPlace(vec!["server.client_timeout".into()])
        );
    }
}
