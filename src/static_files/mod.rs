//! `render = "static"` routes: answers a request from the files under the
//! route's `static_root`, the way nginx's `root` does. Owns path mapping and
//! traversal refusal (`path`), finding files and precompressed variants inside
//! the root (`lookup`), and the HTTP rules for ETag, 304 and Range
//! (`negotiate`). Files are streamed in fixed chunks, never read whole, and
//! every file system call runs off the async runtime. Never lists directories
//! and never proxies: a static route does not reach `upstream_peer`.

mod lookup;
mod negotiate;
mod path;

use std::io::{self, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    LAST_MODIFIED, VARY,
};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub use lookup::StaticRoot;
use negotiate::{Accepted, Reply, Validators};

use crate::respond::{request_id, ErrorPages};

/// Body chunk size: large enough for few syscalls, small enough that many
/// concurrent downloads stay cheap in memory.
const CHUNK: usize = 64 * 1024;

/// What a static route adds to the response besides the file.
pub struct Extras<'a> {
    /// The route's `headers`, applied to 200/206/304 (not to error pages: a
    /// `Cache-Control: immutable` must never stick to a 404).
    pub route_headers: &'a [(HeaderName, HeaderValue)],
    pub request_id: Option<&'a HeaderValue>,
}

/// Answers the request on `session` from `root`. Errors are only write
/// failures (client gone) or a file that shrank while being sent.
pub async fn serve(
    session: &mut Session,
    root: &Arc<StaticRoot>,
    extras: Extras<'_>,
    pages: &ErrorPages,
) -> pingora::Result<()> {
    let id = extras.request_id;
    let method = session.req_header().method.clone();
    if method != Method::GET && method != Method::HEAD {
        let allow = [(ALLOW, HeaderValue::from_static("GET, HEAD"))];
        return pages.respond_with(session, 405, id, &allow).await;
    }
    let raw = session.req_header().uri.path();
    let mut dir = false;
    let rel = match path::relative_path(raw) {
        Ok(rel) => rel,
        Err(path::PathError::Directory) if root.index().is_some() => {
            dir = true;
            match path::directory_path(raw) {
                Ok(rel) => rel,
                Err(e) => return pages.respond(session, e.status(), id).await,
            }
        }
        Err(e) => {
            log::debug!("static: refused {:?}: {e}", session.req_header().uri.path());
            return pages.respond(session, e.status(), id).await;
        }
    };
    let accepted = Accepted::from_headers(&session.req_header().headers);
    let task = {
        let (root, rel) = (Arc::clone(root), rel.clone());
        tokio::task::spawn_blocking(move || lookup::find_page(&root, &rel, dir, accepted)).await
    };
    let (rel, found) = match task {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return pages.respond(session, 404, id).await,
        Ok(Err(e)) => {
            log::warn!("static: cannot open {}: {e}", rel.display());
            let code = if e.kind() == io::ErrorKind::PermissionDenied {
                403
            } else {
                500
            };
            return pages.respond(session, code, id).await;
        }
        Err(e) => {
            log::error!("static: lookup task failed: {e}");
            return pages.respond(session, 500, id).await;
        }
    };

    let len = found.opened.meta.len();
    let modified = found.opened.meta.modified().unwrap_or(UNIX_EPOCH);
    let validators = Validators::new(len, modified, found.encoding);
    let reply = negotiate::decide(&method, &session.req_header().headers, len, &validators);
    let (status, start, count) = match reply {
        Reply::NotModified => (304, 0, 0),
        Reply::Full => (200, 0, len),
        Reply::Partial { start, end } => (206, start, end - start + 1),
        Reply::Unsatisfiable => {
            let range = HeaderValue::from_str(&format!("bytes */{len}")).map_err(bad_header)?;
            return pages
                .respond_with(session, 416, id, &[(CONTENT_RANGE, range)])
                .await;
        }
    };

    let mut resp = ResponseHeader::build(status, Some(10))?;
    resp.insert_header(ETAG, &validators.etag)?;
    resp.insert_header(LAST_MODIFIED, validators.last_modified())?;
    if found.has_variants {
        resp.insert_header(VARY, "Accept-Encoding")?;
    }
    if reply != Reply::NotModified {
        resp.insert_header(CONTENT_TYPE, content_type(&rel))?;
        if let Some(encoding) = found.encoding {
            resp.insert_header(CONTENT_ENCODING, encoding.token())?;
        }
        resp.insert_header(ACCEPT_RANGES, "bytes")?;
        resp.insert_header(CONTENT_LENGTH, count.to_string())?;
        if status == 206 {
            let range = format!("bytes {start}-{}/{len}", start + count - 1);
            resp.insert_header(CONTENT_RANGE, range)?;
        }
    }
    for (name, value) in extras.route_headers {
        resp.insert_header(name.clone(), value.clone())?;
    }
    if let Some(id) = id {
        resp.insert_header(request_id::HEADER, id.clone())?;
    }
    let has_body = method == Method::GET && count > 0;
    session
        .write_response_header(Box::new(resp), !has_body)
        .await?;
    if has_body {
        send_file(session, found.opened.file, start, count).await?;
    }
    Ok(())
}

/// By the name the client asked for (`app.js`, not `app.js.gz`), so a
/// precompressed variant keeps its real type.
fn content_type(rel: &Path) -> String {
    mime_guess::from_path(rel)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

/// Streams `count` bytes from `start`: one chunk in memory at a time, and the
/// next read waits until the previous chunk was written (back-pressure).
async fn send_file(
    session: &mut Session,
    file: std::fs::File,
    start: u64,
    count: u64,
) -> pingora::Result<()> {
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(read_error)?;
    }
    let mut remaining = count;
    while remaining > 0 {
        let n = remaining.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        // A file truncated while we send it ends in an error: the promised
        // Content-Length cannot be met, so the connection must be dropped.
        file.read_exact(&mut buf).await.map_err(read_error)?;
        remaining -= n as u64;
        session
            .write_response_body(Some(Bytes::from(buf)), remaining == 0)
            .await?;
    }
    Ok(())
}

fn read_error(e: io::Error) -> Box<Error> {
    Error::because(ErrorType::FileReadError, "static file read", e)
}

fn bad_header(e: http::header::InvalidHeaderValue) -> Box<Error> {
    Error::because(ErrorType::InternalError, "static response header", e)
}
