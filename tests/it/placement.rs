//! Node placement by client IP uses the real client behind trusted proxies:
//! `balance = "hash"` and the affinity fallback for cookie-less clients.

use std::collections::HashMap;

use crate::common::{client, free_port, Bext};
use crate::upstream_support::{config, get, TestNode, SECRET};

async fn spread(extra: &str) -> HashMap<String, usize> {
    let (a, b, c) = (
        TestNode::start("a").await,
        TestNode::start("b").await,
        TestNode::start("c").await,
    );
    let mut toml = config(free_port(), &[&a, &b, &c], extra);
    toml = toml.replace(
        "threads = 2",
        "threads = 2\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let bext = Bext::start(&toml).await;
    let http = client();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..40 {
        let ip = format!("198.51.{}.{}", i / 200, 10 + i % 200);
        let r = http
            .get(bext.url("/page"))
            .header("x-forwarded-for", &ip)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let node = r.headers()["x-node"].to_str().unwrap().to_string();
        // The same client keeps its node.
        let again = http
            .get(bext.url("/page"))
            .header("x-forwarded-for", &ip)
            .send()
            .await
            .unwrap();
        assert_eq!(again.headers()["x-node"].to_str().unwrap(), node);
        *per_node.entry(node).or_default() += 1;
    }
    // Without the XFF header every request comes from 127.0.0.1, one node.
    let (_, first, _) = get(&http, &bext.url("/page"), None).await;
    assert!(!first.is_empty());
    per_node
}

#[tokio::test]
async fn hash_balance_spreads_clients_behind_a_trusted_proxy() {
    let per_node = spread("balance = \"hash\"").await;
    assert!(
        per_node.len() >= 2 && per_node.values().all(|&n| n < 40),
        "40 clients behind a load balancer must not all land on one node: {per_node:?}"
    );
}

#[tokio::test]
async fn affinity_fallback_spreads_cookieless_clients_behind_a_trusted_proxy() {
    let sticky = format!("sticky = {{ cookie = \"_bext_node\", secret = \"{SECRET}\" }}");
    let per_node = spread(&sticky).await;
    assert!(
        per_node.len() >= 2 && per_node.values().all(|&n| n < 40),
        "cookie-less LiveView clients must be spread by their real address: {per_node:?}"
    );
}
