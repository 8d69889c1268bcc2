//! `render = "static"` routes: files from `static_root` with content types,
//! validators and 304s, precompressed variants, ranges, traversal refusal,
//! streaming in bounded memory, and the `bext check` rules for static routes.

mod common;

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tempfile::TempDir;

use tokio::io::AsyncWriteExt;

use common::{
    client, free_port, pattern_chunk, raw_request, raw_request_keep, read_response, run_bext, Bext,
    StubOrigin,
};

const APP_JS: &str = "console.log('hello from priv/static');\n";
/// Stand-in bytes for `app.js.gz`: bext never decodes a variant, it sends it as is.
const APP_JS_GZ: &[u8] = b"\x1f\x8bfake-gzip-bytes";
const STYLE_CSS: &str = "body { color: #222 }\n";
const SECRET: &str = "TOP-SECRET-OUTSIDE-ROOT";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const MB: u64 = 1024 * 1024;
const BIG: u64 = 20 * MB;
/// Allowed growth of bext's peak RSS while sending the 20 MB file: reading it
/// whole would need 20 MB, streaming needs a few 64 KiB chunks.
const MAX_GROWTH_KB: u64 = 16 * 1024;

/// A Phoenix-like tree: `priv/static/assets/...`, plus files outside the root
/// that traversal attempts aim at.
struct Site {
    tmp: TempDir,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("priv/static");
        std::fs::create_dir_all(root.join("assets/sub")).unwrap();
        std::fs::write(root.join("assets/app.js"), APP_JS).unwrap();
        std::fs::write(root.join("assets/app.js.gz"), APP_JS_GZ).unwrap();
        std::fs::write(root.join("assets/style.css"), STYLE_CSS).unwrap();
        std::fs::write(root.join("assets/sub/x.txt"), "x").unwrap();
        std::fs::write(root.join("assets/my file.txt"), "spaced").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), SECRET).unwrap();
        std::fs::write(tmp.path().join("priv/secret.txt"), SECRET).unwrap();
        std::os::unix::fs::symlink(
            tmp.path().join("secret.txt"),
            root.join("assets/escape.txt"),
        )
        .unwrap();
        Site { tmp }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("priv/static")
    }

    fn write_big(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.root().join("assets/big.bin")).unwrap();
        let mut off = 0;
        while off < BIG {
            let n = MB.min(BIG - off) as usize;
            f.write_all(&pattern_chunk(off, n)).unwrap();
            off += n as u64;
        }
    }
}

/// The seed's rule, plus an optional proxied catch-all after it.
fn config(port: u16, root: &Path, origin: Option<&StubOrigin>) -> String {
    let mut toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[[route_rules]]
pattern = "/assets/*"
render = "static"
static_root = "{root}"
headers = {{ "Cache-Control" = "{IMMUTABLE}" }}
"#,
        root = root.display()
    );
    if let Some(origin) = origin {
        toml.push_str(&format!(
            r#"
[upstreams.app]
nodes = ["{}"]

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
            origin.addr()
        ));
    }
    toml
}

async fn start(site: &Site) -> Bext {
    Bext::start(&config(free_port(), &site.root(), None)).await
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_serves_the_file_with_type_validators_and_route_headers() {
    let site = Site::new();
    let bext = start(&site).await;
    let r = client()
        .get(bext.url("/assets/app.js?vsn=d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let ct = h["content-type"].to_str().unwrap();
    assert!(ct.contains("javascript"), "content-type {ct}");
    let etag = h["etag"].to_str().unwrap();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong etag {etag}"
    );
    assert!(h.contains_key("last-modified"));
    assert_eq!(h["cache-control"], IMMUTABLE);
    assert_eq!(h["content-length"], APP_JS.len().to_string().as_str());
    assert_eq!(h["vary"], "Accept-Encoding", "app.js has a .gz variant");
    assert!(!h.contains_key("content-encoding"));
    assert!(h.contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), APP_JS);

    let r = client()
        .get(bext.url("/assets/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/css");
    assert!(!r.headers().contains_key("vary"), "no variants, no Vary");
    assert_eq!(r.text().await.unwrap(), STYLE_CSS);

    let r = client()
        .get(bext.url("/assets/my%20file.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "spaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sends_the_headers_without_a_body() {
    let site = Site::new();
    let bext = start(&site).await;
    let r = raw_request(
        bext.addr(),
        b"HEAD /assets/style.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length").as_deref(),
        Some(STYLE_CSS.len().to_string().as_str())
    );
    assert!(r.header("etag").is_some());
    assert!(r.body.is_empty(), "HEAD body: {:?}", r.body_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_304_with_the_validators() {
    let site = Site::new();
    let bext = start(&site).await;
    let c = client();
    let first = c.get(bext.url("/assets/style.css")).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let last_modified = first.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();

    let r = c
        .get(bext.url("/assets/style.css"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert_eq!(r.headers()["cache-control"], IMMUTABLE);
    assert!(r.bytes().await.unwrap().is_empty());

    let r = c
        .get(bext.url("/assets/style.css"))
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let r = c
        .get(bext.url("/assets/style.css"))
        .header("if-none-match", "\"some-other-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), STYLE_CSS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_variant_is_sent_only_to_clients_that_accept_it() {
    let site = Site::new();
    let bext = start(&site).await;
    let r = raw_request(
        bext.addr(),
        &get("/assets/app.js", "Accept-Encoding: gzip, deflate\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert!(r.header("content-type").unwrap().contains("javascript"));
    assert_eq!(r.body, APP_JS_GZ);
    let gz_etag = r.header("etag").unwrap();

    let r = raw_request(bext.addr(), &get("/assets/app.js", "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(r.body_str(), APP_JS);
    assert_ne!(
        r.header("etag").unwrap(),
        gz_etag,
        "one ETag per representation"
    );

    let r = raw_request(
        bext.addr(),
        &get("/assets/app.js", "Accept-Encoding: gzip;q=0, br\r\n"),
    )
    .await;
    assert_eq!(r.header("content-encoding"), None, "no .br variant exists");
    assert_eq!(r.body_str(), APP_JS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_range_gets_206_and_an_unsatisfiable_one_416() {
    let site = Site::new();
    let bext = start(&site).await;
    let len = STYLE_CSS.len();
    let r = raw_request(
        bext.addr(),
        &get("/assets/style.css", "Range: bytes=5-9\r\n"),
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some(format!("bytes 5-9/{len}").as_str())
    );
    assert_eq!(r.header("content-length").as_deref(), Some("5"));
    assert_eq!(r.body_str(), &STYLE_CSS[5..10]);

    let r = raw_request(
        bext.addr(),
        &get("/assets/style.css", "Range: bytes=-4\r\n"),
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body_str(), &STYLE_CSS[len - 4..]);

    let r = raw_request(
        bext.addr(),
        &get("/assets/style.css", "Range: bytes=9999-\r\n"),
    )
    .await;
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some(format!("bytes */{len}").as_str())
    );

    let r = raw_request(
        bext.addr(),
        &get("/assets/style.css", "Range: bytes=0-1,4-5\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "multiple ranges get the whole file");
    assert_eq!(r.body_str(), STYLE_CSS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_never_serve_files_outside_the_root() {
    let site = Site::new();
    let bext = start(&site).await;
    for path in [
        "/assets/../../etc/passwd",
        "/assets/../../secret.txt",
        "/assets/../secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/%2E%2E/%2E%2E/%2E%2E/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/..\\..\\secret.txt",
        "/assets/%5c..%5c..%5csecret.txt",
        "/assets/app.js%00.txt",
        "/assets//../../secret.txt",
        "/assets/escape.txt",
    ] {
        let r = raw_request(bext.addr(), &get(path, "")).await;
        // 403 when the WAF (which runs first) already calls it traversal.
        assert!(
            r.status == 400 || r.status == 403 || r.status == 404,
            "{path}: status {}",
            r.status
        );
        assert!(!r.body_str().contains(SECRET), "{path} leaked the secret");
        assert!(!r.body_str().contains("root:"), "{path} leaked /etc/passwd");
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_missing_files_get_the_404_page() {
    let site = Site::new();
    let bext = start(&site).await;
    for path in [
        "/assets/",
        "/assets",
        "/assets/sub",
        "/assets/sub/",
        "/assets/nope.js",
    ] {
        let r = raw_request(bext.addr(), &get(path, "")).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body_str().contains("Not Found"), "{path}: the 404 page");
        assert_ne!(
            r.header("cache-control").as_deref(),
            Some(IMMUTABLE),
            "{path}: route headers never go on an error"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_get_405_with_allow() {
    let site = Site::new();
    let bext = start(&site).await;
    let r = raw_request(
        bext.addr(),
        b"POST /assets/app.js HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    let r = raw_request(
        bext.addr(),
        b"DELETE /assets/app.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    // DELETE is one of the WAF's default methods (REST APIs use it); the
    // static route answers 405 and nothing is deleted.
    assert_eq!(r.status, 405);
    assert!(site.root().join("assets/app.js").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_route_never_reaches_the_origin_and_keeps_connections_alive() {
    let site = Site::new();
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &site.root(), Some(&origin))).await;
    let c = client();
    for _ in 0..3 {
        let r = c.get(bext.url("/assets/app.js")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), APP_JS);
    }
    let r = c.get(bext.url("/assets/nope.js")).send().await.unwrap();
    assert_eq!(r.status(), 404, "a missing asset is not passed to Phoenix");
    let r = c.get(bext.url("/page")).send().await.unwrap();
    assert_eq!(r.status(), 200, "other paths are still proxied");
    assert_eq!(r.headers()["x-node"], "a");
    let paths: Vec<String> = origin.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/page".to_string()]);

    // A static answer leaves the connection open for the next request.
    let keep = b"GET /assets/style.css HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (first, mut conn) = raw_request_keep(bext.addr(), keep).await;
    assert_eq!(first.body_str(), STYLE_CSS);
    conn.write_all(keep).await.unwrap();
    let second = read_response(&mut conn).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body_str(), STYLE_CSS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_streams_in_bounded_memory() {
    let site = Site::new();
    site.write_big();
    let bext = start(&site).await;
    let c = client();
    // Warm-up so lazily allocated runtime and connection buffers are in the baseline.
    for _ in 0..2 {
        let r = c
            .get(bext.url("/assets/big.bin"))
            .header("range", "bytes=0-1048575")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().len() as u64, MB);
    }
    let hwm_before = bext.hwm_kb();

    let r = c.get(bext.url("/assets/big.bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(BIG));
    let mut stream = r.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("body");
        assert!(
            chunk[..] == pattern_chunk(got, chunk.len())[..],
            "corrupted bytes near offset {got}"
        );
        got += chunk.len() as u64;
    }
    assert_eq!(got, BIG);
    let hwm_after = bext.hwm_kb();
    eprintln!("static 20 MB download: VmHWM {hwm_before} kB -> {hwm_after} kB");
    assert!(
        hwm_after.saturating_sub(hwm_before) <= MAX_GROWTH_KB,
        "the file was buffered: VmHWM {hwm_before} kB -> {hwm_after} kB"
    );

    // A range deep inside the file starts at the right byte.
    let r = c
        .get(bext.url("/assets/big.bin"))
        .header("range", "bytes=15000000-15000099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap()[..],
        pattern_chunk(15_000_000, 100)[..]
    );
}

// ---------------------------------------------------------------------------
// bext check
// ---------------------------------------------------------------------------

/// Runs `bext check` on `toml` written as `DIR/bext.toml`; returns (code, stdout, stderr).
fn check_in(dir: &Path, toml: &str) -> (i32, String, String) {
    let path = dir.join("bext.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run_bext(&["check", "-c", path.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const UPSTREAM: &str = "[upstreams.phoenix]\nnodes = [\"127.0.0.1:4000\"]\n";

fn static_rule(extra: &str) -> String {
    format!("{UPSTREAM}[[route_rules]]\npattern = \"/assets/*\"\n{extra}")
}

fn assert_error(dir: &Path, toml: &str, key: &str, word: &str) {
    let (code, stdout, stderr) = check_in(dir, toml);
    assert_eq!(
        code, 1,
        "expected failure\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let prefix = format!("{}: {key}:", dir.join("bext.toml").display());
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stderr}"));
    assert!(line.to_lowercase().contains(word), "{line}");
}

#[test]
fn check_accepts_a_relative_static_root_next_to_the_config() {
    let site = Site::new();
    let (code, stdout, stderr) = check_in(
        site.tmp.path(),
        &static_rule("render = \"static\"\nstatic_root = \"priv/static\"\n"),
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("static"),
        "summary shows the static route:\n{stdout}"
    );
}

#[test]
fn check_rejects_a_missing_or_absent_static_root() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_error(
        d,
        &static_rule("render = \"static\"\nstatic_root = \"priv/static\"\n"),
        "route_rules[0].static_root",
        "priv/static",
    );
    assert_error(
        d,
        &static_rule("render = \"static\"\n"),
        "route_rules[0].static_root",
        "missing",
    );
    std::fs::write(d.join("file.txt"), "x").unwrap();
    assert_error(
        d,
        &static_rule("render = \"static\"\nstatic_root = \"file.txt\"\n"),
        "route_rules[0].static_root",
        "not a directory",
    );
}

#[test]
fn check_rejects_proxy_and_render_together_and_unknown_renderers() {
    let site = Site::new();
    let d = site.tmp.path();
    assert_error(
        d,
        &static_rule("proxy = \"phoenix\"\nrender = \"static\"\nstatic_root = \"priv/static\"\n"),
        "route_rules[0].render",
        "proxy",
    );
    assert_error(
        d,
        &static_rule("render = \"html\"\nstatic_root = \"priv/static\"\n"),
        "route_rules[0].render",
        "static",
    );
    assert_error(
        d,
        &static_rule("proxy = \"phoenix\"\nstatic_root = \"priv/static\"\n"),
        "route_rules[0].static_root",
        "render",
    );
    assert_error(
        d,
        &static_rule("render = \"static\"\nstatic_root = \"priv/static\"\nwebsocket = true\n"),
        "route_rules[0].websocket",
        "static",
    );
}
