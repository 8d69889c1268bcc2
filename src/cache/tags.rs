//! `Cache-Tag` / `Surrogate-Key` parsing. Tags are what Phoenix purges by
//! (`post:42`); they are indexed with the entry and stripped before the client
//! unless `cache.expose_tags` is set.
//!
//! Hostile input is bounded: parsing stops after [`MAX_TAGS`] + 1 tags, and a
//! response carrying too many or too long tags is not stored at all (storing
//! it with a truncated tag set would make purges silently miss it).

/// Most tags one response may carry and still be stored.
pub const MAX_TAGS: usize = 256;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 256;

/// Response headers that carry tags (both are accepted; Fastly/Cloudflare spellings).
// HeaderName, not &str: looking a name up by &str parses it first, per request.
pub const TAG_HEADERS: [http::HeaderName; 2] = [
    http::HeaderName::from_static("cache-tag"),
    http::HeaderName::from_static("surrogate-key"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("more than {MAX_TAGS} cache tags")]
    TooMany,
    #[error("a cache tag is longer than {MAX_TAG_LEN} bytes")]
    TooLong,
}

/// The distinct tags of a response, in order of appearance. Tags are
/// separated by commas and/or whitespace; bytes that are not UTF-8 are
/// replaced (the purge API speaks JSON strings, so such a tag is only purgeable
/// through its replacement form or by URL/prefix/all).
pub fn parse(headers: &http::HeaderMap) -> Result<Vec<Box<str>>, TagError> {
    let mut tags: Vec<Box<str>> = Vec::new();
    for name in &TAG_HEADERS {
        for value in headers.get_all(name) {
            for raw in value
                .as_bytes()
                .split(|b| *b == b',' || b.is_ascii_whitespace())
                .filter(|t| !t.is_empty())
            {
                if raw.len() > MAX_TAG_LEN {
                    return Err(TagError::TooLong);
                }
                let tag = String::from_utf8_lossy(raw);
                if tags.iter().any(|t| **t == *tag) {
                    continue;
                }
                if tags.len() == MAX_TAGS {
                    return Err(TagError::TooMany);
                }
                tags.push(tag.into());
            }
        }
    }
    Ok(tags)
}

/// Removes the tag headers (before a response reaches the client).
pub fn strip(resp: &mut pingora::http::ResponseHeader) {
    for name in &TAG_HEADERS {
        resp.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            let name = http::HeaderName::from_bytes(n.as_bytes()).unwrap();
            h.append(name, http::HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn comma_and_space_separated_both_headers_deduplicated() {
        let h = headers(&[
            ("cache-tag", b"post:1, post:2 user:9"),
            ("surrogate-key", b"post:1 blog"),
        ]);
        let t = parse(&h).unwrap();
        let t: Vec<&str> = t.iter().map(|s| s.as_ref()).collect();
        assert_eq!(t, ["post:1", "post:2", "user:9", "blog"]);
    }

    #[test]
    fn hostile_headers_are_bounded() {
        let many: String = (0..10_000).map(|i| format!("t{i},")).collect();
        assert_eq!(
            parse(&headers(&[("cache-tag", many.as_bytes())])),
            Err(TagError::TooMany)
        );
        let long = "x".repeat(1 << 20);
        assert_eq!(
            parse(&headers(&[("cache-tag", long.as_bytes())])),
            Err(TagError::TooLong)
        );
        let odd = parse(&headers(&[("cache-tag", b"caf\xc3\xa9 \xff\xfe")])).unwrap();
        assert_eq!(odd.len(), 2);
        assert_eq!(&*odd[0], "café");
    }
}
