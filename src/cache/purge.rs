//! The purge API: `POST /__bext/cache/purge` with one of
//! `{"tag": T}`, `{"tags": [T, ...]}`, `{"url": "https://host/path?q"}`,
//! `{"prefix": "/blog/", "host": "example.com"}` (host optional: every host)
//! or `{"all": true}`; replies `{"purged": N}`, plus `"cluster": "published"`
//! or `"unavailable"` when a purge bus hands purges to other nodes. Access
//! control is the admin module's job; this module parses, purges, publishes
//! and answers. What a purge matches is the core's [`Selector`].

use pingora::proxy::Session;
use serde::Deserialize;

use super::key::KeyParts;
pub use super::selector::Selector;
use super::storage::Store;
use crate::admin;
use crate::cluster::PurgeBus;

pub use super::selector::MAX_PURGE_TAGS;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    tag: Option<String>,
    tags: Option<Vec<String>>,
    url: Option<String>,
    prefix: Option<String>,
    host: Option<String>,
    all: Option<bool>,
}

/// Parses a purge request body into a selector, or a message for a 400.
pub fn parse(body: &[u8]) -> Result<Selector, String> {
    let req: PurgeRequest = serde_json::from_slice(body).map_err(|e| {
        format!(
            "invalid JSON purge request: {e}; expected one of {{\"tag\": \"T\"}}, {{\"tags\": [\"T\"]}}, \
             {{\"url\": \"https://host/path\"}}, {{\"prefix\": \"/path/\", \"host\": \"example.com\"}}, {{\"all\": true}}"
        )
    })?;
    let kinds = [
        req.tag.is_some() || req.tags.is_some(),
        req.url.is_some(),
        req.prefix.is_some(),
        req.all.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => return Err("empty purge request: give one of tag, tags, url, prefix, all".into()),
        1 => {}
        _ => return Err("give only one of tag/tags, url, prefix, all per request".into()),
    }
    if req.host.is_some() && req.prefix.is_none() {
        return Err("\"host\" only goes with \"prefix\"".into());
    }
    if let Some(all) = req.all {
        return if all {
            Ok(Selector::All)
        } else {
            Err("\"all\" must be true".into())
        };
    }
    if let Some(url) = req.url {
        let parts = KeyParts::from_url(&url)?;
        let primaries = [parts.with_scheme("http"), parts.with_scheme("https")]
            .iter()
            .map(KeyParts::primary_hash)
            .collect();
        return Ok(Selector::Primaries(primaries));
    }
    if let Some(prefix) = req.prefix {
        let (host, path) = if prefix.starts_with('/') {
            (req.host.map(|h| h.to_ascii_lowercase()), prefix)
        } else {
            let p = KeyParts::from_url(&prefix).map_err(|_| {
                format!(
                    "\"prefix\" must be a path (\"/blog/\") or an absolute URL, got \"{prefix}\""
                )
            })?;
            (Some(p.host), p.path)
        };
        return Ok(Selector::Prefix {
            host: host.map(String::into_boxed_str),
            path: path.into_boxed_str(),
        });
    }
    let mut tags: Vec<Box<str>> = req.tag.into_iter().map(String::into_boxed_str).collect();
    tags.extend(
        req.tags
            .unwrap_or_default()
            .into_iter()
            .map(String::into_boxed_str),
    );
    if tags.is_empty() {
        return Err("\"tags\" is empty".into());
    }
    if tags.len() > MAX_PURGE_TAGS {
        return Err(format!("more than {MAX_PURGE_TAGS} tags in one request"));
    }
    if tags.iter().any(|t| t.is_empty()) {
        return Err("empty tag".into());
    }
    Ok(Selector::Tags(tags.into_boxed_slice()))
}

/// Answers `POST /__bext/cache/purge` (the caller is already authorized).
pub async fn handle(
    session: &mut Session,
    store: &Store,
    bus: &dyn PurgeBus,
    request_id: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    let body = match admin::read_body(session).await {
        Ok(b) => b,
        Err(413) => {
            let msg = admin::error_body("purge request body is larger than 64 KiB");
            return crate::respond::json(session, 413, &msg, request_id).await;
        }
        Err(code) => {
            let msg = admin::error_body("could not read the request body");
            return crate::respond::json(session, code, &msg, request_id).await;
        }
    };
    match parse(&body) {
        Ok(sel) => {
            // Here first: this node's answer never depends on Redis.
            let purged = store.purge(sel.clone());
            let mut reply = serde_json::json!({ "purged": purged });
            if let Some(p) = bus.publish(&sel).await {
                reply["cluster"] = p.as_str().into();
            }
            crate::respond::json(session, 200, &reply, request_id).await
        }
        Err(msg) => crate::respond::json(session, 400, &admin::error_body(&msg), request_id).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::storage::FillInfo;

    fn info(host: &str, path: &str, tags: &[&str]) -> FillInfo {
        FillInfo {
            generation: 0,
            primary: KeyParts::from_url(&format!("http://{host}{path}"))
                .unwrap()
                .primary_hash(),
            host: host.into(),
            path: path.into(),
            tags: tags.iter().map(|t| (*t).into()).collect(),
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(parse(br#"{"all":true}"#).unwrap(), Selector::All);
        assert!(
            matches!(parse(br#"{"tag":"post:1"}"#).unwrap(), Selector::Tags(t) if t.len() == 1)
        );
        assert!(
            matches!(parse(br#"{"tags":["a","b"]}"#).unwrap(), Selector::Tags(t) if t.len() == 2)
        );
        assert!(
            matches!(parse(br#"{"url":"https://h/x"}"#).unwrap(), Selector::Primaries(p) if p.len() == 2)
        );
        let p = parse(br#"{"prefix":"/blog/","host":"H.test"}"#).unwrap();
        assert!(p.matches(&info("h.test", "/blog/1", &[])));
        assert!(!p.matches(&info("other", "/blog/1", &[])));
        assert!(!p.matches(&info("h.test", "/news", &[])));
        let p = parse(br#"{"prefix":"https://h.test/blog/"}"#).unwrap();
        assert!(p.matches(&info("h.test", "/blog/x", &[])));
    }

    #[test]
    fn url_selector_matches_either_scheme() {
        let sel = parse(br#"{"url":"https://h.test/x?b=1&a=2"}"#).unwrap();
        let i = info("h.test", "/x?a=2&b=1", &[]);
        assert!(sel.matches(&FillInfo {
            primary: KeyParts::from_url("http://h.test/x?a=2&b=1")
                .unwrap()
                .primary_hash(),
            ..i
        }));
    }

    #[test]
    fn bad_requests_have_clear_messages() {
        assert!(parse(b"{not json").unwrap_err().contains("invalid JSON"));
        assert!(parse(b"{}").unwrap_err().contains("empty purge request"));
        assert!(parse(br#"{"tag":"a","all":true}"#)
            .unwrap_err()
            .contains("only one"));
        assert!(parse(br#"{"all":false}"#).is_err());
        assert!(parse(br#"{"tags":[]}"#).is_err());
        assert!(parse(br#"{"url":"/x"}"#).is_err());
        assert!(parse(br#"{"tagz":"a"}"#)
            .unwrap_err()
            .contains("unknown field"));
    }
}
