//! What a purge matches, in the cache's core: the HTTP API (`purge`), the
//! CLI and the cluster's purge stream all produce a [`Selector`] and hand it
//! to [`Store::purge`](super::storage::Store::purge), so a purge applies the
//! same way wherever it came from.
//!
//! The wire form (`to_wire` / `from_wire`) is what other nodes read from the
//! purge stream: JSON of the selector itself, not the HTTP request it came
//! from (a URL purge travels as its key hashes, already normalized). A
//! decoded selector is bounded like one parsed from the HTTP API, since a
//! stream entry is input from outside this process.

use pingora::cache::key::HashBinary;
use serde::{Deserialize, Serialize};

use super::storage::FillInfo;

/// Most tags one purge may name (HTTP API and stream alike).
pub const MAX_PURGE_TAGS: usize = 10_000;
/// Most key hashes one URL purge carries on the wire (a URL gives two: http and https).
const MAX_PRIMARIES: usize = 64;
/// Longest wire form accepted from the stream (the HTTP API takes 64 KiB bodies).
pub const MAX_WIRE_BYTES: usize = 1 << 20;

/// What a purge removes. Kept (bounded) in the store's purge log so fills in
/// flight when the purge ran are not stored afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Selector {
    All,
    Tags(Box<[Box<str>]>),
    /// Primary key hashes (every `Vary` variant of a URL).
    Primaries(Box<[HashBinary]>),
    /// A path prefix, on one host (lower-cased, port as sent) or all hosts.
    Prefix {
        host: Option<Box<str>>,
        path: Box<str>,
    },
}

impl Selector {
    pub fn matches(&self, info: &FillInfo) -> bool {
        match self {
            Selector::All => true,
            Selector::Tags(tags) => tags.iter().any(|t| info.tags.contains(t)),
            Selector::Primaries(ps) => ps.contains(&info.primary),
            Selector::Prefix { host, path } => {
                host.as_ref().is_none_or(|h| **h == *info.host) && info.path.starts_with(&**path)
            }
        }
    }

    /// Approximate heap bytes, for the purge log's budget.
    pub fn bytes(&self) -> usize {
        64 + match self {
            Selector::All => 0,
            Selector::Tags(t) => t.iter().map(|t| t.len() + 16).sum(),
            Selector::Primaries(p) => p.len() * 16,
            Selector::Prefix { host, path } => host.as_ref().map_or(0, |h| h.len()) + path.len(),
        }
    }

    /// The JSON other nodes decode with [`Selector::from_wire`].
    pub fn to_wire(&self) -> String {
        // Serializing plain strings and byte arrays cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "\"all\"".to_string())
    }

    /// Decodes a stream entry's body; a message (for the log) when it is
    /// not a selector bext would have produced.
    pub fn from_wire(body: &[u8]) -> Result<Selector, String> {
        if body.len() > MAX_WIRE_BYTES {
            return Err(format!("{} bytes (at most {MAX_WIRE_BYTES})", body.len()));
        }
        let sel: Selector = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        match &sel {
            Selector::Tags(t) if t.is_empty() || t.len() > MAX_PURGE_TAGS => {
                Err(format!("{} tags (1 to {MAX_PURGE_TAGS})", t.len()))
            }
            Selector::Tags(t) if t.iter().any(|t| t.is_empty()) => Err("an empty tag".into()),
            Selector::Primaries(p) if p.is_empty() || p.len() > MAX_PRIMARIES => {
                Err(format!("{} key hashes (1 to {MAX_PRIMARIES})", p.len()))
            }
            _ => Ok(sel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_survives_the_wire() {
        let all = [
            Selector::All,
            Selector::Tags(vec!["post:1".into(), "list".into()].into()),
            Selector::Primaries(vec![[7u8; 16], [9u8; 16]].into()),
            Selector::Prefix {
                host: Some("h.test".into()),
                path: "/blog/".into(),
            },
            Selector::Prefix {
                host: None,
                path: "/".into(),
            },
        ];
        for sel in all {
            let wire = sel.to_wire();
            assert_eq!(Selector::from_wire(wire.as_bytes()), Ok(sel), "{wire}");
        }
        assert_eq!(Selector::All.to_wire(), "\"all\"");
    }

    #[test]
    fn hostile_wire_forms_are_refused() {
        for bad in [
            &b"{not json"[..],
            br#"{"tags":[]}"#,
            br#"{"tags":[""]}"#,
            br#"{"primaries":[]}"#,
            br#"{"primaries":[[1,2]]}"#,
            br#"{"prefix":{"path":"/","evil":1}}"#,
            br#""nothing""#,
        ] {
            assert!(
                Selector::from_wire(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<String> = (0..=MAX_PURGE_TAGS).map(|i| format!("t{i}")).collect();
        let wire = serde_json::json!({ "tags": many }).to_string();
        assert!(Selector::from_wire(wire.as_bytes()).is_err());
    }
}
