//! Size limits on the request head and body: request-target (414), one header
//! line, all headers together and the header count (431), the body (413, from
//! `Content-Length` up front or while it streams). Pure functions over the
//! parsed head, so they are testable without a socket.
//!
//! What Pingora 0.9's HTTP/1 parser does first (before any of this runs):
//! more than 256 header lines, or a head that is still incomplete after 1 MiB,
//! is answered 400 by Pingora itself. bext's connection wrapper (see
//! `stream.rs`) cuts a head larger than our limits earlier, while it is read.

use http::header::CONTENT_LENGTH;
use pingora::http::RequestHeader;

/// The limits on the request head, from the plan.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_request_target: usize,
    pub max_header_line: usize,
    pub max_headers_size: usize,
    pub max_headers: usize,
}

/// A head that breaks a limit: the status to answer with and what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize {
    pub status: u16,
    pub what: &'static str,
}

pub fn check_head(req: &RequestHeader, limits: &HeadLimits) -> Option<Oversize> {
    if req.raw_path().len() > limits.max_request_target {
        return Some(Oversize {
            status: 414,
            what: "request-target longer than limits.max_request_target",
        });
    }
    if req.headers.len() > limits.max_headers {
        return Some(Oversize {
            status: 431,
            what: "more header fields than limits.max_headers",
        });
    }
    let mut total = 0usize;
    for (name, value) in req.headers.iter() {
        // "Name: value\r\n"
        let line = name.as_str().len() + value.len() + 4;
        if line > limits.max_header_line {
            return Some(Oversize {
                status: 431,
                what: "header line longer than limits.max_header_line",
            });
        }
        total += line;
    }
    if total > limits.max_headers_size {
        return Some(Oversize {
            status: 431,
            what: "headers larger than limits.max_headers_size",
        });
    }
    None
}

/// The declared body length, if any (Pingora has already refused unparseable
/// or conflicting values by the time this runs).
pub fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeadLimits = HeadLimits {
        max_request_target: 100,
        max_header_line: 64,
        max_headers_size: 200,
        max_headers: 5,
    };

    fn req(path: &str, headers: &[(&str, String)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), v.as_str()).unwrap();
        }
        r
    }

    #[test]
    fn each_limit_has_its_status() {
        assert_eq!(check_head(&req("/ok", &[("host", "a".into())]), &L), None);
        let long = format!("/{}", "a".repeat(100));
        assert_eq!(check_head(&req(&long, &[]), &L).unwrap().status, 414);
        let line = [("x-big", "v".repeat(60))];
        assert_eq!(check_head(&req("/", &line), &L).unwrap().status, 431);
        let many: Vec<_> = (0..6).map(|i| ("x-n", i.to_string())).collect();
        assert_eq!(
            check_head(&req("/", &many), &L).unwrap().what,
            "more header fields than limits.max_headers"
        );
        let total: Vec<_> = (0..4).map(|_| ("x-m", "v".repeat(50))).collect();
        assert_eq!(
            check_head(&req("/", &total), &L).unwrap().what,
            "headers larger than limits.max_headers_size"
        );
    }
}
