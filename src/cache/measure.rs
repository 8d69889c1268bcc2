//! Measurements for the closing note (ignored tests; numbers are printed, not
//! asserted): memory per cached entry beyond body + header, and the latency
//! of purging a tag that covers 10k entries.
//!
//! `cargo test --lib cache::measure -- --ignored --nocapture` (add `--release`
//! for production-like timings).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pingora::cache::trace::Span;
use pingora::cache::{CacheMeta, Storage};
use pingora::http::ResponseHeader;

use super::key::KeyParts;
use super::selector::Selector;
use super::storage::{FillInfo, Store};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Stores `n` entries of `body` bytes tagged `post:i` and `tag`; returns the
/// serialized header size of one entry.
async fn fill(store: &'static Store, n: usize, body: usize, tag: &str) -> usize {
    let span = Span::inactive();
    let payload = bytes::Bytes::from(vec![b'x'; body]);
    let mut header_bytes = 0;
    for i in 0..n {
        let parts = KeyParts::from_url(&format!("https://example.com/posts/{i}?page=1")).unwrap();
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "text/html; charset=utf-8")
            .unwrap();
        h.insert_header("cache-control", "public, max-age=300")
            .unwrap();
        h.insert_header("cache-tag", format!("post:{i} {tag}"))
            .unwrap();
        h.insert_header("content-length", body.to_string()).unwrap();
        let now = SystemTime::now();
        let mut meta = CacheMeta::new(now + Duration::from_secs(300), now, 0, 60, h);
        header_bytes = meta
            .serialize()
            .map(|(a, b)| a.len() + b.len())
            .unwrap_or(0);
        meta.extensions_mut().insert(Arc::new(FillInfo {
            generation: store.generation(),
            primary: parts.primary_hash(),
            host: parts.host.clone().into(),
            path: parts.path.clone().into(),
            tags: vec![format!("post:{i}").into(), tag.into()].into(),
        }));
        let mut miss = store
            .get_miss_handler(&parts.cache_key(), &meta, &span.handle())
            .await
            .unwrap();
        miss.write_body(payload.clone(), true).await.unwrap();
        miss.finish().await.unwrap();
    }
    header_bytes
}

#[tokio::test]
#[ignore]
async fn cache_numbers() {
    const N: usize = 50_000;
    const BODY: usize = 512;
    let store = Store::leak(1 << 34, 1 << 20);
    let before = rss_kb();
    let header = fill(store, N, BODY, "list").await;
    let after = rss_kb();
    let stats = store.stats();
    let real_per_entry = (after - before) as f64 * 1024.0 / N as f64;
    println!(
        "entries={} body={BODY} B (origin header {header} B serialized); accounted weight/entry={} B; \
         measured RSS/entry={real_per_entry:.0} B; overhead beyond the body={:.0} B",
        stats.entries,
        stats.used_bytes / N,
        real_per_entry - BODY as f64
    );

    let hot = Store::leak(1 << 34, 1 << 20);
    fill(hot, 10_000, 256, "hot").await;
    let t = Instant::now();
    let purged = hot.purge(Selector::Tags(vec!["hot".into()].into()));
    println!("purge tag covering {purged} entries: {:?}", t.elapsed());
}
