//! Bodies stream through bext: a 50 MB upload and a 50 MB download complete
//! with the right byte counts while bext's resident memory stays bounded.

mod common;

use bytes::Bytes;
use futures_util::StreamExt;

use common::{client, free_port, pattern_chunk, Bext, StubOrigin};

const MB: u64 = 1024 * 1024;
const BIG: u64 = 50 * MB;
const CHUNK: usize = 64 * 1024;

/// Allowed growth of bext's peak RSS (VmHWM) over the value measured after a
/// warm-up: 16 MB. Buffering either 50 MB body would blow well past it, while
/// streaming needs only a few chunk-sized buffers per direction.
const MAX_GROWTH_KB: u64 = 16 * 1024;

fn config(port: u16, origin: &StubOrigin) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[upstreams.app]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/*"
proxy = "app"
cache = false
"#,
        origin = origin.addr()
    )
}

/// A generated request body of `total` bytes, produced chunk by chunk.
fn generated_body(total: u64) -> reqwest::Body {
    let stream = futures_util::stream::unfold(0u64, move |off| async move {
        if off >= total {
            return None;
        }
        let len = (CHUNK as u64).min(total - off) as usize;
        let chunk: Bytes = pattern_chunk(off, len);
        Some((Ok::<_, std::io::Error>(chunk), off + len as u64))
    });
    reqwest::Body::wrap_stream(stream)
}

async fn upload(c: &reqwest::Client, bext: &Bext, total: u64) -> u64 {
    let r = c
        .post(bext.url("/upload"))
        .body(generated_body(total))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .trim()
        .parse()
        .expect("origin replies with the byte count")
}

/// Downloads `/bytes?n=total`, checking every byte against the pattern;
/// returns the number of bytes received.
async fn download(c: &reqwest::Client, bext: &Bext, total: u64) -> u64 {
    let r = c
        .get(bext.url(&format!("/bytes?n={total}")))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("download body");
        assert!(
            chunk[..] == pattern_chunk(got, chunk.len())[..],
            "corrupted bytes near offset {got}"
        );
        got += chunk.len() as u64;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_in_bounded_memory() {
    let origin = StubOrigin::start("a").await;
    let bext = Bext::start(&config(free_port(), &origin)).await;
    let c = client();

    // Warm-up: exercise both directions once so that lazily allocated
    // buffers and pools are counted in the baseline.
    assert_eq!(upload(&c, &bext, 2 * MB).await, 2 * MB);
    assert_eq!(download(&c, &bext, 2 * MB).await, 2 * MB);
    let hwm_before = bext.hwm_kb();
    let rss_before = bext.rss_kb();

    assert_eq!(upload(&c, &bext, BIG).await, BIG, "upload byte count");
    let hwm_after_upload = bext.hwm_kb();
    assert_eq!(download(&c, &bext, BIG).await, BIG, "download byte count");
    let hwm_after = bext.hwm_kb();
    let rss_after = bext.rss_kb();

    let report = format!(
        "VmHWM before {hwm_before} kB, after upload {hwm_after_upload} kB, \
         after download {hwm_after} kB; VmRSS before {rss_before} kB, after {rss_after} kB"
    );
    eprintln!("50 MB up + 50 MB down: {report}");
    assert!(
        hwm_after_upload.saturating_sub(hwm_before) <= MAX_GROWTH_KB,
        "upload was buffered: {report}"
    );
    assert!(
        hwm_after.saturating_sub(hwm_before) <= MAX_GROWTH_KB,
        "download was buffered: {report}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) <= MAX_GROWTH_KB,
        "RSS grew: {report}"
    );
}
