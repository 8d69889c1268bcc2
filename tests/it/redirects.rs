//! Redirect routes and trailing-slash policies against the real binary,
//! including the hostile cases: a `Host` or a `//evil` path never makes an
//! open redirect, and a POST is never redirected by the slash policy.

use crate::common::{Bext, StubOrigin};
use crate::support::one_node;

fn no_follow() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn location(c: &reqwest::Client, url: &str, host: &str) -> (u16, String) {
    let r = c.get(url).header("host", host).send().await.unwrap();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), loc)
}

#[tokio::test]
async fn redirect_rules_and_trailing_slashes() {
    let origin = StubOrigin::start("n0").await;
    let config = one_node(
        origin.addr(),
        r#"# www -> apex, path and query kept
[[route_rules]]
host = "www.example.test"
pattern = "/*"
redirect = "https://example.test{path}{query}"
status = 301

[[route_rules]]
host = "*.shop.test"
pattern = "/old/*"
redirect = "https://{host}/new{path}"

[[route_rules]]
pattern = "/moved/*"
redirect = "{path}"
status = 302

[[route_rules]]
pattern = "/docs/*"
proxy = "phoenix"
trailing_slash = "add"

[[route_rules]]
pattern = "/*"
proxy = "phoenix"
trailing_slash = "remove""#,
        "",
    );
    let bext = Bext::start(&config).await;
    let c = no_follow();
    assert_eq!(
        location(&c, &bext.url("/posts/1?page=2"), "www.example.test").await,
        (301, "https://example.test/posts/1?page=2".to_owned())
    );
    assert_eq!(
        location(&c, &bext.url("//evil.com/x"), "www.example.test").await,
        (301, "https://example.test/evil.com/x".to_owned()),
        "a // path stays on the site"
    );
    // {host} is the vetted host (port dropped); default status 308.
    assert_eq!(
        location(&c, &bext.url("/old/a"), "eu.shop.test:8080").await,
        (308, "https://eu.shop.test/new/old/a".to_owned())
    );
    // A relative template never becomes protocol-relative.
    let (status, loc) = location(&c, &bext.url("/moved//evil.com"), "x.test").await;
    assert_eq!(status, 302);
    assert!(loc.starts_with('/') && !loc.starts_with("//"), "{loc}");
    // Trailing slashes: GET/HEAD redirected, with the query; files and POSTs not.
    assert_eq!(
        location(&c, &bext.url("/docs/intro?x=1"), "a.test").await,
        (308, "/docs/intro/?x=1".to_owned())
    );
    assert_eq!(
        location(&c, &bext.url("/docs/app.js"), "a.test").await.0,
        200
    );
    assert_eq!(
        location(&c, &bext.url("/posts/"), "a.test").await,
        (308, "/posts".to_owned())
    );
    assert_eq!(location(&c, &bext.url("/posts"), "a.test").await.0, 200);
    assert_eq!(location(&c, &bext.url("/"), "a.test").await.0, 200);
    let r = c
        .post(bext.url("/posts/"))
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a form POST is never redirected");
    assert_eq!(origin.requests_to("/posts/").len(), 1);
}

#[tokio::test]
async fn other_host_names_are_sent_to_the_canonical_one() {
    let origin = StubOrigin::start("n0").await;
    let config = one_node(
        origin.addr(),
        r#"[[route_rules]]
pattern = "/*"
proxy = "phoenix"
canonical_host = "example.test""#,
        "",
    );
    let bext = Bext::start(&config).await;
    let c = no_follow();
    assert_eq!(
        location(&c, &bext.url("/p?x=1"), "example.test").await.0,
        200
    );
    assert_eq!(
        location(&c, &bext.url("/p?x=1"), "www.example.test").await,
        (308, "http://example.test/p?x=1".to_owned())
    );
    assert_eq!(
        location(&c, &bext.url("/"), "127.0.0.1:8080").await,
        (308, "http://example.test:8080/".to_owned())
    );
    assert_eq!(
        origin.requests_to("/p").len(),
        1,
        "aliases never reach Phoenix"
    );
}
