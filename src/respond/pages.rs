//! Error pages bext writes itself: the maintenance page for 502/503/504, and short
//! pages for 4xx errors. Also the mapping from a Pingora error to the status a
//! client sees. Clients never see error details or stack traces; the request id
//! on the page ties what they report to the log line.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use super::request_id;
use super::send;

/// The page bodies, built once from the plan.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    /// `server.error_page`: used for 502/503/504. `{{status}}` and `{{request_id}}`
    /// in it are replaced.
    custom: Option<Bytes>,
}

impl ErrorPages {
    pub fn new(custom: Option<Bytes>) -> ErrorPages {
        ErrorPages { custom }
    }

    fn body(&self, status: u16, request_id: &str, page: Option<&Bytes>) -> Bytes {
        let page = page.or(self.custom.as_ref().filter(|_| is_unavailable(status)));
        if let Some(page) = page {
            let text = String::from_utf8_lossy(page);
            if !text.contains("{{") {
                return page.clone();
            }
            let filled = text
                .replace("{{status}}", &status.to_string())
                .replace("{{request_id}}", &html_escape(request_id));
            return Bytes::from(filled);
        }
        let (title, message) = describe(status);
        Bytes::from(format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{status} {title}</title>\
<meta name=\"viewport\" content=\"width=device-width\">\
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
small{{color:#777}}</style></head>\n<body><h1>{title}</h1><p>{message}</p>\
<p><small>Status {status} &middot; request id {id}</small></p></body></html>\n",
            id = html_escape(request_id)
        ))
    }

    /// Writes a complete error response. Failures to write (client gone) are
    /// returned; the caller decides whether they matter.
    pub async fn respond(
        &self,
        session: &mut Session,
        status: u16,
        request_id: Option<&HeaderValue>,
    ) -> pingora::Result<()> {
        self.respond_with(session, status, request_id, &[]).await
    }

    /// The 503 of a site in maintenance: its own page when it has one
    /// (same placeholders), else the server's.
    pub async fn maintenance(
        &self,
        session: &mut Session,
        page: Option<&Bytes>,
        request_id: Option<&HeaderValue>,
    ) -> pingora::Result<()> {
        self.write(session, 503, request_id, &[], page).await
    }

    /// [`respond`](Self::respond) plus headers the status needs (`Allow` on a
    /// 405, `Content-Range` on a 416).
    pub async fn respond_with(
        &self,
        session: &mut Session,
        status: u16,
        request_id: Option<&HeaderValue>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> pingora::Result<()> {
        self.write(session, status, request_id, extra, None).await
    }

    async fn write(
        &self,
        session: &mut Session,
        status: u16,
        request_id: Option<&HeaderValue>,
        extra: &[(HeaderName, HeaderValue)],
        page: Option<&Bytes>,
    ) -> pingora::Result<()> {
        let minted;
        let id = match request_id {
            Some(id) => id,
            None => {
                minted = request_id::mint();
                &minted
            }
        };
        let body = self.body(status, id.to_str().unwrap_or(""), page);
        let mut resp = ResponseHeader::build(status, Some(5))?;
        resp.insert_header("content-type", "text/html; charset=utf-8")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header(request_id::HEADER, id.clone())?;
        if status == 503 {
            resp.insert_header("retry-after", "5")?;
        }
        for (name, value) in extra {
            resp.insert_header(name.clone(), value.clone())?;
        }
        send(session, resp, body).await
    }
}

fn is_unavailable(status: u16) -> bool {
    matches!(status, 502..=504)
}

fn describe(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("Bad Request", "The request could not be understood."),
        401 => ("Unauthorized", "This site needs a login."),
        403 => ("Forbidden", "This file cannot be served."),
        404 => ("Not Found", "Nothing is served at this address."),
        405 => ("Method Not Allowed", "This address only answers GET and HEAD."),
        408 => ("Request Timeout", "The request took too long to arrive."),
        416 => ("Range Not Satisfiable", "The requested range is outside the file."),
        421 => ("Misdirected Request", "This server does not serve this host name."),
        502 => (
            "Temporarily Unavailable",
            "The application is not answering right now. Please try again in a moment.",
        ),
        503 => (
            "Temporarily Unavailable",
            "The application is briefly unavailable, usually for maintenance. Please try again in a moment.",
        ),
        504 => (
            "Gateway Timeout",
            "The application took too long to answer. Please try again in a moment.",
        ),
        s if s >= 500 => ("Server Error", "Something went wrong on our side."),
        _ => ("Error", "The request could not be served."),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status a client gets for a proxying failure; 0 means the client is gone
/// and nothing should be written.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => match e.etype() {
                // No node could be reached (every attempt failed to connect):
                // the request never got to Phoenix, so it is the maintenance
                // case, 503 with Retry-After, safe for the client to retry.
                ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError
                | ConnectProxyFailure | BindError => 503,
                ReadTimedout | WriteTimedout | TLSHandshakeTimedout => 504,
                _ => 502,
            },
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        let refused = Error::new_up(ErrorType::ConnectRefused);
        assert_eq!(status_for(&refused), 503);
        let unreachable = Error::new_up(ErrorType::ConnectTimedout);
        assert_eq!(status_for(&unreachable), 503);
        let broken = Error::new_up(ErrorType::ConnectionClosed);
        assert_eq!(status_for(&broken), 502);
        let slow = Error::new_up(ErrorType::ReadTimedout);
        assert_eq!(status_for(&slow), 504);
        let gone = Error::new_down(ErrorType::ConnectionClosed);
        assert_eq!(status_for(&gone), 0);
        let bad = Error::new_down(ErrorType::InvalidHTTPHeader);
        assert_eq!(status_for(&bad), 400);
    }

    #[test]
    fn custom_page_is_used_for_unavailability_with_placeholders() {
        let pages = ErrorPages::new(Some(Bytes::from_static(b"down {{status}} {{request_id}}")));
        assert_eq!(pages.body(502, "r<1>", None), "down 502 r&lt;1&gt;");
        assert!(String::from_utf8_lossy(&pages.body(404, "x", None)).contains("Not Found"));
    }
}
