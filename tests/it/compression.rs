//! Edge compression end to end, against the real binary and a real origin:
//! the negotiation table decoded byte for byte, `Vary` and weak `ETag`,
//! responses left alone (no-transform, pre-encoded, small, images, HEAD,
//! `compress = false`), a 50 MB stream compressed with flat RSS, and the
//! cache storing one compressed variant per coding, served on hits without
//! compressing again, every variant purged together.

use std::io::{Read, Write};

use crate::common::{client, text_body, Bext, StubOrigin};
use crate::scrape::{parse, scrape, value};
use crate::support::one_node;

/// One node and three routes: cached, never compressed, and the catch-all
/// (uncached, compressed).
fn config(origin: std::net::SocketAddr) -> String {
    one_node(
        origin,
        r#"[[route_rules]]
pattern = "/cached/*"
proxy = "phoenix"

[[route_rules]]
pattern = "/plain/*"
proxy = "phoenix"
cache = false
compress = false"#,
        "",
    )
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        "zstd" => out = zstd::stream::decode_all(data).expect("valid zstd"),
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        "" => out = data.to_vec(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

struct Got {
    status: u16,
    coding: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

async fn get(c: &reqwest::Client, url: &str, accept: Option<&str>) -> Got {
    let mut rb = c.get(url);
    if let Some(a) = accept {
        rb = rb.header("accept-encoding", a);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let coding = headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = r.bytes().await.unwrap().to_vec();
    Got {
        status,
        coding,
        headers,
        body,
    }
}

#[tokio::test]
async fn codings_are_negotiated_and_decode_to_the_origin_bytes() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr())).await;
    let c = client();
    let page = text_body(30_000);
    let cases: &[(Option<&str>, &str)] = &[
        (Some("gzip, deflate, br, zstd"), "br"),
        (Some("gzip, deflate"), "gzip"),
        (Some("zstd"), "zstd"),
        (Some("br;q=0.2, gzip;q=0.8"), "gzip"),
        (Some("gzip;q=0, br;q=0"), ""),
        (Some("*"), "br"),
        (Some("*, br;q=0"), "zstd"),
        (Some("identity"), ""),
        (Some("deflate"), ""),
        (None, ""),
    ];
    for (accept, want) in cases {
        let g = get(&c, &bext.url("/page/text?n=30000"), *accept).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.coding, *want, "Accept-Encoding {accept:?}");
        assert_eq!(
            decode(&g.coding, &g.body),
            page,
            "Accept-Encoding {accept:?}"
        );
        if want.is_empty() {
            assert_eq!(g.headers["content-length"], "30000");
        } else {
            assert!(g.headers.get("content-length").is_none());
            assert!(
                g.body.len() < page.len() / 4,
                "{want}: {} bytes",
                g.body.len()
            );
        }
        // Compressed or not, the representation depends on Accept-Encoding.
        let vary: Vec<_> = g.headers.get_all("vary").iter().collect();
        assert!(
            vary.iter()
                .any(|v| v.to_str().unwrap().eq_ignore_ascii_case("accept-encoding")),
            "{accept:?}: {vary:?}"
        );
    }
    // A streamed (chunked) answer of unknown length is compressed too.
    let g = get(&c, &bext.url("/page/text?n=100000&stream=1"), Some("gzip")).await;
    assert_eq!(g.coding, "gzip");
    assert_eq!(decode("gzip", &g.body), text_body(100_000));
    // The counters saw every compressed response and its input bytes.
    let s = parse(&scrape(&c, &format!("http://{}", bext.addr())).await);
    assert_eq!(
        value(&s, "bext_compression_responses_total", &[("coding", "br")]),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "bext_compression_responses_total",
            &[("coding", "zstd")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "bext_compression_responses_total",
            &[("coding", "gzip")]
        ),
        3.0
    );
    let bytes_in = value(
        &s,
        "bext_compression_input_bytes_total",
        &[("coding", "gzip")],
    );
    assert_eq!(bytes_in, 160_000.0);
}

#[tokio::test]
async fn strong_etags_become_weak_and_vary_is_merged() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr())).await;
    let c = client();
    let url = bext.url("/page/text?n=5000&set=etag:%22v1%22&set=vary:Cookie");
    let g = get(&c, &url, Some("br")).await;
    assert_eq!(g.coding, "br");
    assert_eq!(g.headers["etag"], "W/\"v1\"");
    let vary: Vec<String> = g
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(vary.iter().any(|v| v.contains("cookie")), "{vary:?}");
    assert!(
        vary.iter().any(|v| v.contains("accept-encoding")),
        "{vary:?}"
    );
    // Uncompressed, the strong ETag is kept.
    let g = get(&c, &url, None).await;
    assert_eq!(g.headers["etag"], "\"v1\"");
}

#[tokio::test]
async fn responses_that_must_not_be_compressed_pass_untouched() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr())).await;
    let c = client();
    let ae = Some("br, gzip, zstd");
    let cases = [
        (
            "/page/text?n=5000&set=cache-control:no-transform",
            "no-transform",
        ),
        ("/page/text?n=1000", "below min_size"),
        ("/page/text?n=5000&ct=image/png", "not a compressible type"),
        ("/plain/text?n=5000", "route has compress = false"),
    ];
    for (path, why) in cases {
        let g = get(&c, &bext.url(path), ae).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.coding, "", "{why}");
        let n: usize = path
            .split("n=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(g.body, text_body(n), "{why}");
    }
    // Encoded by the origin: passed on as it is, never compressed twice.
    let g = get(
        &c,
        &bext.url("/page/text?n=5000&set=content-encoding:gzip"),
        ae,
    )
    .await;
    assert_eq!(g.coding, "gzip");
    assert_eq!(g.body, text_body(5000));
    // HEAD: the head a GET would get, no body and no coding applied.
    let r = c
        .head(bext.url("/page/text?n=5000"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    let s = parse(&scrape(&c, &format!("http://{}", bext.addr())).await);
    for coding in ["br", "zstd", "gzip"] {
        assert_eq!(
            value(
                &s,
                "bext_compression_responses_total",
                &[("coding", coding)]
            ),
            0.0
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Counts what a decoder writes, keeping none of it.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_50_mb_stream_is_compressed_without_being_held() {
    const N: usize = 50 << 20;
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr())).await;
    let c = client();
    let before = rss_kib(bext.pid());
    let mut r = c
        .get(bext.url(&format!("/page/text?n={N}&stream=1")))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "zstd");
    let mut decoder = zstd::stream::write::Decoder::new(Count(0)).unwrap();
    let (mut wire, mut peak) = (0u64, before);
    while let Some(chunk) = r.chunk().await.unwrap() {
        wire += chunk.len() as u64;
        decoder.write_all(&chunk).unwrap();
        peak = peak.max(rss_kib(bext.pid()));
    }
    decoder.flush().unwrap();
    assert_eq!(decoder.get_ref().0, N as u64, "every byte arrived, decoded");
    assert!(wire < N as u64 / 4, "compressed to {wire} bytes");
    // Held whole, the body alone would add 50 MiB.
    let grew = peak.saturating_sub(before);
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB while streaming");
}

async fn purge(c: &reqwest::Client, bext: &Bext, json: &str) -> serde_json::Value {
    let r = c
        .post(bext.url("/__bext/cache/purge"))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn the_cache_stores_one_compressed_variant_per_coding_and_purges_them_all() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr())).await;
    let c = client();
    let url =
        bext.url("/cached/text?n=20000&set=cache-control:public,max-age=60&set=cache-tag:page");
    let page = text_body(20_000);
    let compressions =
        |s: &_, coding| value(s, "bext_compression_responses_total", &[("coding", coding)]);
    // Chrome, Firefox and Safari write different headers; all of them get br,
    // compressed once at the first fill and then served from the store.
    let browsers = [
        "gzip, deflate, br, zstd",
        "gzip, deflate, br",
        "br",
        "br, gzip",
    ];
    for (i, ae) in browsers.iter().enumerate() {
        let g = get(&c, &url, Some(ae)).await;
        assert_eq!(g.coding, "br", "{ae}");
        assert_eq!(decode("br", &g.body), page);
        let status = g.headers["cache-status"].to_str().unwrap().to_owned();
        if i == 0 {
            assert!(
                status.contains("fwd=") && !status.contains("hit"),
                "{status}"
            );
        } else {
            assert!(status.contains("hit"), "{ae}: {status}");
            // The stored body's length is known: hits are not chunked.
            assert_eq!(
                g.headers["content-length"],
                g.body.len().to_string().as_str()
            );
        }
    }
    // Other codings are variants of their own; identity too (stored as the
    // origin sent it, so a client that accepts nothing never makes bext
    // decompress).
    for (ae, coding) in [(Some("gzip"), "gzip"), (Some("zstd"), "zstd"), (None, "")] {
        for round in 0..2 {
            let g = get(&c, &url, ae).await;
            assert_eq!(g.coding, coding);
            assert_eq!(decode(coding, &g.body), page);
            let status = g.headers["cache-status"].to_str().unwrap().to_owned();
            assert_eq!(
                status.contains("hit"),
                round == 1,
                "{ae:?} round {round}: {status}"
            );
        }
    }
    let s = parse(&scrape(&c, &format!("http://{}", bext.addr())).await);
    assert_eq!(compressions(&s, "br"), 1.0);
    assert_eq!(compressions(&s, "gzip"), 1.0);
    assert_eq!(compressions(&s, "zstd"), 1.0);
    let fetched = origin
        .requests()
        .iter()
        .filter(|r| r.path == "/cached/text")
        .count();
    assert_eq!(fetched, 4, "one origin fetch per variant");
    // One purge removes every variant.
    let v = purge(&c, &bext, r#"{"tag": "page"}"#).await;
    assert_eq!(v["purged"].as_u64(), Some(4), "{v}");
    for ae in [Some("br"), Some("gzip"), Some("zstd"), None] {
        let g = get(&c, &url, ae).await;
        let status = g.headers["cache-status"].to_str().unwrap().to_owned();
        assert!(!status.contains("hit"), "{ae:?} after purge: {status}");
    }
    let s = parse(&scrape(&c, &format!("http://{}", bext.addr())).await);
    assert_eq!(compressions(&s, "br"), 2.0);
}

#[tokio::test]
async fn an_origin_encoded_body_is_never_served_to_a_client_that_did_not_ask_for_it() {
    let origin = StubOrigin::start("n0").await;
    let bext = Bext::start(&config(origin.addr())).await;
    let c = client();
    // An origin that gzips whatever it is asked (Phoenix with compress: true
    // ignoring the README), on a cacheable route, without a Vary header.
    let url = bext
        .url("/cached/text?n=5000&set=cache-control:public,max-age=60&set=content-encoding:gzip");
    let g = get(&c, &url, Some("br")).await;
    assert_eq!(g.coding, "gzip", "passed on as the origin sent it");
    let g = get(&c, &url, Some("br")).await;
    let status = g.headers["cache-status"].to_str().unwrap().to_owned();
    assert!(!status.contains("hit"), "{status}");
    let g = get(&c, &url, Some("gzip")).await;
    assert_eq!(g.coding, "gzip");
    let g = get(&c, &url, Some("gzip")).await;
    assert!(g.headers["cache-status"].to_str().unwrap().contains("hit"));
    // A client without gzip never gets the stored gzip body.
    let g = get(&c, &url, None).await;
    assert!(!g.headers["cache-status"].to_str().unwrap().contains("hit"));
}
