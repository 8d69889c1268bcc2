//! A route's header policy against the real binary: the security preset
//! fills in what Phoenix did not set and never overrides what it did,
//! response headers are removed, request headers set and removed upstream.

use crate::common::{client, Bext, StubOrigin};
use crate::support::one_node;

#[tokio::test]
async fn security_preset_and_header_lists() {
    let origin = StubOrigin::start("n0").await;
    let config = one_node(
        origin.addr(),
        r#"[[route_rules]]
pattern = "/app/*"
proxy = "phoenix"
security_headers = true
permissions_policy = "camera=(), microphone=()"
response_headers_remove = ["server", "x-powered-by"]
request_headers = { "x-env" = "staging" }
request_headers_remove = ["x-debug"]"#,
        "",
    );
    let bext = Bext::start(&config).await;
    let c = client();
    let r = c
        .get(
            bext.url(
                "/app/page?set=server:Cowboy&set=x-powered-by:Elixir&set=x-frame-options:DENY",
            ),
        )
        .header("x-debug", "1")
        .header("x-env", "prod")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(h["permissions-policy"], "camera=(), microphone=()");
    assert_eq!(h["x-frame-options"], "DENY", "Phoenix's own value stays");
    assert_eq!(h.get_all("x-frame-options").iter().count(), 1);
    assert!(
        h.get("strict-transport-security").is_none(),
        "no HSTS on plain HTTP"
    );
    assert!(h.get("server").is_none() && h.get("x-powered-by").is_none());
    let seen = origin.requests_to("/app/page");
    assert_eq!(seen[0].header_all("x-env"), vec!["staging"]);
    assert!(!seen[0].has_header("x-debug"));
    // A CSP with frame-ancestors: no X-Frame-Options added.
    let r = c
        .get(bext.url("/app/csp?set=content-security-policy:frame-ancestors%20%27self%27"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-frame-options").is_none());
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // Other routes are untouched.
    let r = c
        .get(bext.url("/other?set=server:Cowboy"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-content-type-options").is_none());
    assert_eq!(r.headers()["server"], "Cowboy");
    let seen = origin.requests_to("/other");
    assert!(!seen[0].has_header("x-env"));
}
