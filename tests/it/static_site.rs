//! A whole static site from a static route: index files for directory
//! paths, a single-page-app fallback for missing pages (never for missing
//! assets), and `.zst` precompressed siblings.

use crate::common::{client, Bext};

#[tokio::test]
async fn index_fallback_and_zstd_siblings() {
    let site = tempfile::tempdir().unwrap();
    let root = site.path().join("public");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    let js = "console.log('app');\n".repeat(100);
    std::fs::write(root.join("app.js"), &js).unwrap();
    let zst = zstd::stream::encode_all(js.as_bytes(), 3).unwrap();
    std::fs::write(root.join("app.js.zst"), &zst).unwrap();
    let config = format!(
        r#"[server]
listen = ["127.0.0.1:{port}"]

[upstreams.none]
nodes = ["127.0.0.1:9"]

[[route_rules]]
pattern = "/*"
render = "static"
static_root = "{root}"
index = "index.html"
fallback = "index.html"
"#,
        port = crate::common::free_port(),
        root = root.display()
    );
    let bext = Bext::start(&config).await;
    let c = client();
    let get = |path: &str| c.get(bext.url(path)).send();
    for (path, want) in [
        ("/", "<h1>home</h1>"),
        ("/docs/", "<h1>docs</h1>"),
        // Missing pages of the app: the fallback, so client-side routes load.
        ("/dashboard/settings", "<h1>home</h1>"),
        ("/docs", "<h1>home</h1>"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert_eq!(r.text().await.unwrap(), want, "{path}");
    }
    // A missing asset is a 404, not the app's HTML.
    assert_eq!(get("/missing.js").await.unwrap().status(), 404);
    // The .zst sibling for a client that takes zstd, the file for one that does not.
    let r = c
        .get(bext.url("/app.js"))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "zstd");
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    assert_eq!(r.bytes().await.unwrap().as_ref(), zst.as_slice());
    let r = get("/app.js").await.unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.text().await.unwrap(), js);
}
