//! Leaf: reading cookies out of `Cookie` request headers (RFC 6265 §5.4:
//! `name=value` pairs separated by `;`). HTTP/2 clients may split the pairs
//! over several `Cookie` headers, so callers that want every value use
//! [`all`].

use http::header::COOKIE;
use http::HeaderMap;

/// The values of cookie `name` in one `Cookie` header value, in order.
pub fn values<'a, 'n>(
    header: &'a str,
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The values of cookie `name` across every `Cookie` header.
pub fn all<'h, 'n>(
    headers: &'h HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |v| values(v, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_across_headers() {
        assert_eq!(values("a=1; _bext_authx=2", "_bext_auth").next(), None);
        assert_eq!(values("a=1;_bext_auth=2", "_bext_auth").next(), Some("2"));
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; b=2".parse().unwrap());
        h.append(COOKIE, "b=3".parse().unwrap());
        assert_eq!(all(&h, "b").collect::<Vec<_>>(), ["2", "3"]);
    }
}
