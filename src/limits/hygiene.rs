//! Protocol hygiene: request framings that two HTTP parsers could read
//! differently (request smuggling) are refused with 400 before anything is
//! forwarded to Phoenix.
//!
//! Which layer answers what (Pingora 0.9.1's HTTP/1 server parser runs first):
//! * Pingora, 400: differing duplicate or unparseable `Content-Length`;
//!   `Transfer-Encoding` whose final coding is not `chunked`, or on HTTP/1.0;
//!   bare CR, control characters and malformed request lines (httparse);
//!   absolute-form targets whose authority differs from `Host`, userinfo in the
//!   target, duplicate `Host`.
//! * Here, 400: `Content-Length` together with `Transfer-Encoding` (Pingora
//!   drops the length and proceeds chunked; we refuse); a repeated
//!   `Content-Length` even when the copies agree, or a comma list
//!   (Pingora collapses them); a head whose lines end in a bare LF (httparse
//!   accepts them); an absolute-form target without a `Host` header.
//! * Invalid chunked framing in the body is found by Pingora's body reader
//!   while the body streams; the request fails (400/connection closed) and
//!   Phoenix sees a truncated chunked body, never a complete request.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

/// Returns what is wrong with the framing of this request, if anything.
/// `raw_head` is the head exactly as received (HTTP/1 only).
pub fn check(req: &RequestHeader, raw_head: Option<&Bytes>) -> Option<&'static str> {
    let mut lengths = req.headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.next().is_some() || first.as_bytes().contains(&b',') {
            return Some("repeated Content-Length");
        }
    }
    // HTTP/1 only (`raw_head` is `None` for HTTP/2): an HTTP/2 request always
    // carries its authority in the URI (`:authority`) and usually no `Host`.
    let raw = raw_head?;
    if req.uri.authority().is_some() && req.headers.get(HOST).is_none() {
        return Some("absolute-form request-target without Host");
    }
    if req.headers.contains_key(TRANSFER_ENCODING) && has_content_length_line(raw) {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if has_bare_lf(raw) {
        return Some("line ending without CR");
    }
    None
}

fn has_bare_lf(raw: &[u8]) -> bool {
    raw.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
}

/// Pingora removes `Content-Length` from the parsed head when
/// `Transfer-Encoding` is present, so look at the raw lines.
fn has_content_length_line(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length";
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > NAME.len()
            && line[..NAME.len()].eq_ignore_ascii_case(NAME)
            && matches!(line[NAME.len()], b':' | b' ' | b'\t')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &'static str) -> (RequestHeader, Bytes) {
        let mut lines = raw.split("\r\n");
        let first = lines.next().unwrap();
        let path = first.split(' ').nth(1).unwrap();
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        for l in lines.filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(": ").unwrap();
            if k.eq_ignore_ascii_case("content-length") && raw.contains("chunked") {
                continue; // Pingora drops it before we look
            }
            r.append_header(k.to_string(), v).unwrap();
        }
        (r, Bytes::from_static(raw.as_bytes()))
    }

    #[test]
    fn http2_authority_without_host_is_fine() {
        // HTTP/2 (no raw head): the authority is in the URI, Host is optional.
        let r = RequestHeader::build("GET", b"https://a.test/x", None).unwrap();
        assert_eq!(check(&r, None), None);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let (r, b) = head(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(
            check(&r, Some(&b)),
            Some("both Content-Length and Transfer-Encoding")
        );
        let (r, b) =
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(check(&r, Some(&b)), Some("repeated Content-Length"));
        let (r, b) = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(check(&r, Some(&b)), None);
        let (r, b) = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(check(&r, Some(&b)), None);
        let bare = Bytes::from_static(b"GET / HTTP/1.1\nHost: a\r\n\r\n");
        assert!(check(&r, Some(&bare)).is_some());
    }
}
