//! Upstream keep-alive with several worker threads: a connection Phoenix
//! finished a response on goes back to the pool and the next request, on
//! whichever thread, takes it, instead of a new TCP connection per request.

use crate::common::{Bext, StubOrigin};
use crate::support::one_node;

const CLIENTS: usize = 16;
const REQUESTS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pooled_upstream_connections_are_reused_across_threads() {
    let origin = StubOrigin::start("n0").await;
    let toml = one_node(origin.addr(), "", "").replace("threads = 2", "threads = 4");
    let bext = Bext::start(&toml).await;
    let url = bext.url("/reuse");
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // One keep-alive client connection each, as browsers and load
            // balancers in front of bext do.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            for _ in 0..REQUESTS {
                let r = http.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = CLIENTS * REQUESTS;
    assert_eq!(origin.requests_to("/reuse").len(), total);
    let log = bext.stderr();
    assert!(
        !log.contains("failed to acquire reusable stream"),
        "pooled connections were dropped on reuse:\n{log}"
    );
    // At most one upstream connection per request in flight is needed; a
    // connection thrown away on release shows up as hundreds here.
    let opened = origin.connections();
    eprintln!("{total} requests from {CLIENTS} clients: {opened} upstream connections");
    assert!(
        opened <= 2 * CLIENTS,
        "{total} requests from {CLIENTS} clients opened {opened} upstream connections"
    );
}
