//! Several sites on one listener: a host no route names gets `421
//! Misdirected Request`, or the `default_site`'s routes when one is set;
//! `bext check` prints the site table.

use crate::common::{run_bext, Bext, StubOrigin};

fn config(origin: std::net::SocketAddr, default_site: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:{port}"]
{default_site}

[upstreams.phoenix]
nodes = ["{origin}"]

[[route_rules]]
host = "shop.test"
pattern = "/shop/*"
proxy = "phoenix"

[[route_rules]]
host = "*.blog.test"
pattern = "/*"
proxy = "phoenix"
"#,
        port = crate::common::free_port()
    )
}

async fn status(bext: &Bext, path: &str, host: &str) -> u16 {
    reqwest::Client::new()
        .get(bext.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn unknown_hosts_get_421_or_the_default_site() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr(), "")).await;
    assert_eq!(status(&bext, "/shop/cart", "shop.test").await, 200);
    assert_eq!(status(&bext, "/shop/cart", "shop.test:8080").await, 200);
    assert_eq!(status(&bext, "/x", "en.blog.test").await, 200);
    // A known site, a path it does not serve: 404.
    assert_eq!(status(&bext, "/other", "shop.test").await, 404);
    // A host no route is for: 421, and Phoenix never sees it.
    assert_eq!(status(&bext, "/shop/cart", "evil.test").await, 421);
    assert_eq!(
        origin.requests_to("/shop/cart").len(),
        2,
        "the 421 never reached Phoenix"
    );
    drop(bext);

    let bext = Bext::start(&config(origin.addr(), "default_site = \"shop.test\"")).await;
    assert_eq!(status(&bext, "/shop/cart", "203.0.113.5").await, 200);
    assert_eq!(status(&bext, "/nothing", "203.0.113.5").await, 404);
    let out = run_bext(&["check", "-c", bext.config_path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sites"), "{text}");
    assert!(
        text.contains("shop.test: 1") && text.contains("*.blog.test: 1"),
        "{text}"
    );
    assert!(text.contains("other hosts: routed as shop.test"), "{text}");
}
