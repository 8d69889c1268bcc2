use std::io::Read;

use super::*;

fn ae(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn neg(values: &[&str]) -> &'static str {
    CompressionPlan::default().negotiate(&ae(values)).as_str()
}

#[test]
fn negotiation_table() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "identity"),
        (&[""], "identity"),
        (&["gzip, deflate, br, zstd"], "br"),
        (&["gzip, deflate, br"], "br"),
        (&["gzip, deflate"], "gzip"),
        (&["x-gzip"], "gzip"),
        (&["GZIP"], "gzip"),
        (&["zstd, gzip"], "zstd"),
        (&["br;q=0.5, gzip"], "gzip"),
        (&["br;q=0.5, gzip;q=0.5"], "br"),
        (&["gzip;q=0.1, zstd"], "zstd"),
        (&["br;q=0, gzip;q=0"], "identity"),
        (&["identity"], "identity"),
        (&["identity;q=0"], "identity"),
        (&["*"], "br"),
        (&["*;q=0"], "identity"),
        (&["*;q=0.1, gzip;q=0.5"], "gzip"),
        (&["*, br;q=0"], "zstd"),
        (&["deflate, compress"], "identity"),
        (&["br;q=1.0"], "br"),
        (&["br;q=1.001, gzip"], "gzip"),
        (&["br;q=2, gzip;q=0.2"], "gzip"),
        (&["br;q=abc, gzip;q=0.2"], "gzip"),
        (&["br ; q=0.9 , gzip ; q=0.8"], "br"),
        (&["gzip", "br"], "br"),
        (&["br;level=9"], "br"),
        (&["br;q=0, br;q=0.4"], "br"),
    ];
    for (headers, want) in cases {
        assert_eq!(neg(headers), *want, "Accept-Encoding {headers:?}");
    }
}

#[test]
fn preference_order_and_subsets_are_honoured() {
    let plan = CompressionPlan {
        prefer: vec![Coding::Gzip, Coding::Brotli],
        ..Default::default()
    };
    assert_eq!(plan.negotiate(&ae(&["br, gzip, zstd"])), Coding::Gzip);
    assert_eq!(plan.negotiate(&ae(&["zstd"])), Coding::Identity);
    let off = CompressionPlan {
        enabled: false,
        ..Default::default()
    };
    assert_eq!(off.negotiate(&ae(&["br"])), Coding::Identity);
}

#[test]
fn accept_encoding_bombs_are_cut_short() {
    // 10k codings: only the first items are looked at; the answer is still sane.
    let bomb = std::iter::repeat_n("foo;q=0.5", 10_000)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(neg(&[&format!("{bomb}, br")]), "identity");
    assert_eq!(neg(&[&format!("gzip, {bomb}")]), "gzip");
    let huge_q = format!("br;q={}", "9".repeat(100_000));
    assert_eq!(neg(&[&huge_q, "gzip"]), "gzip");
}

#[test]
fn qvalues_parse_by_the_rfc() {
    assert_eq!(qvalue(b"1"), Some(1000));
    assert_eq!(qvalue(b"1.000"), Some(1000));
    assert_eq!(qvalue(b"0.5"), Some(500));
    assert_eq!(qvalue(b"0.05"), Some(50));
    assert_eq!(qvalue(b"0"), Some(0));
    assert_eq!(qvalue(b"0."), Some(0));
    assert_eq!(qvalue(b"0.0001"), None);
    assert_eq!(qvalue(b"1.5"), None);
    assert_eq!(qvalue(b"-1"), None);
    assert_eq!(qvalue(b""), None);
}

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (n, v) in headers {
        r.append_header(n.to_string(), *v).unwrap();
    }
    r
}

fn eligible(method: &str, r: &ResponseHeader) -> bool {
    let m = http::Method::from_bytes(method.as_bytes()).unwrap();
    CompressionPlan::default().eligible(&m, r)
}

#[test]
fn what_is_compressed() {
    let html = [("content-type", "text/html; charset=utf-8")];
    assert!(eligible("GET", &resp(200, &html)));
    assert!(eligible(
        "POST",
        &resp(201, &[("content-type", "application/json")])
    ));
    assert!(eligible("GET", &resp(404, &html)));
    assert!(eligible(
        "GET",
        &resp(200, &[("content-type", "application/vnd.api+json")])
    ));
    assert!(eligible(
        "GET",
        &resp(200, &[("content-type", "image/svg+xml")])
    ));
    assert!(eligible("GET", &resp(200, &[("content-type", "Text/CSS")])));
    assert!(eligible(
        "GET",
        &resp(
            200,
            &[("content-type", "text/plain"), ("content-length", "1024")]
        )
    ));
    // Not compressible, too small, or not ours to transform.
    assert!(!eligible(
        "GET",
        &resp(200, &[("content-type", "image/png")])
    ));
    assert!(!eligible("GET", &resp(200, &[])));
    assert!(!eligible(
        "GET",
        &resp(200, &[("content-type", "application/zip")])
    ));
    assert!(!eligible(
        "GET",
        &resp(
            200,
            &[("content-type", "text/plain"), ("content-length", "1023")]
        )
    ));
    assert!(!eligible(
        "GET",
        &resp(
            200,
            &[("content-type", "text/html"), ("content-encoding", "gzip")]
        )
    ));
    assert!(eligible(
        "GET",
        &resp(
            200,
            &[
                ("content-type", "text/html"),
                ("content-encoding", "identity")
            ]
        )
    ));
    assert!(!eligible(
        "GET",
        &resp(
            200,
            &[
                ("content-type", "text/html"),
                ("cache-control", "public, No-Transform")
            ]
        )
    ));
    assert!(!eligible("HEAD", &resp(200, &html)));
    for status in [101, 204, 206, 304] {
        assert!(!eligible("GET", &resp(status, &html)), "{status}");
    }
    assert!(!eligible(
        "GET",
        &resp(
            200,
            &[
                ("content-type", "text/html"),
                ("content-range", "bytes 0-9/100")
            ]
        )
    ));
}

#[test]
fn type_patterns() {
    assert!(TypePattern::parse("text").is_err());
    assert!(TypePattern::parse("te xt/html").is_err());
    assert!(TypePattern::parse("application/*+").is_err());
    let p = TypePattern::parse("application/*+json").unwrap();
    assert!(p.matches("application", "ld+json"));
    assert!(!p.matches("application", "+json"));
    assert!(!p.matches("text", "x+json"));
    let e = TypePattern::parse("Application/JSON").unwrap();
    assert!(e.matches("application", "json"));
    assert!(!e.matches("application", "jsonx"));
}

#[test]
fn headers_of_a_compressed_response() {
    let mut r = resp(
        200,
        &[
            ("content-type", "text/html"),
            ("content-length", "5000"),
            ("etag", "\"abc\""),
            ("vary", "Cookie"),
        ],
    );
    apply_headers(&mut r, Coding::Brotli).unwrap();
    assert_eq!(r.headers["content-encoding"], "br");
    assert!(r.headers.get("content-length").is_none());
    assert_eq!(r.headers["etag"], "W/\"abc\"");
    let vary: Vec<_> = r.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Cookie", "Accept-Encoding"]);
    // Already weak, already varying: unchanged.
    let mut r = resp(
        200,
        &[("etag", "W/\"x\""), ("vary", "accept-encoding, cookie")],
    );
    apply_headers(&mut r, Coding::Gzip).unwrap();
    assert_eq!(r.headers["etag"], "W/\"x\"");
    assert_eq!(r.headers.get_all("vary").iter().count(), 1);
}

fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Brotli => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Coding::Zstd => out = zstd::stream::decode_all(data).unwrap(),
        Coding::Gzip => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Coding::Identity => out = data.to_vec(),
    }
    out
}

#[test]
fn streamed_bodies_round_trip_and_each_chunk_is_flushed() {
    let page: Vec<u8> = (0..2000)
        .flat_map(|i| format!("<li class=\"row\">item {i} of the list</li>\n").into_bytes())
        .collect();
    for coding in [Coding::Brotli, Coding::Zstd, Coding::Gzip] {
        let mut enc = Encoder::new(coding, &Levels::default(), None);
        let mut wire = Vec::new();
        for chunk in page.chunks(7000) {
            let out = enc.encode(chunk, false).unwrap();
            // Flushed: what was sent so far decodes to a prefix of the page.
            assert!(!out.is_empty(), "{coding:?} held a chunk back");
            wire.extend_from_slice(&out);
        }
        wire.extend_from_slice(&enc.encode(&[], true).unwrap());
        assert_eq!(decode(coding, &wire), page, "{coding:?}");
        let (i, o) = enc.totals();
        assert_eq!((i, o), (page.len() as u64, wire.len() as u64));
        assert!(o * 4 < i, "{coding:?}: {o} of {i}");
        // After the end nothing more comes out.
        assert!(enc.encode(b"more", true).unwrap().is_empty());
    }
}

#[test]
fn a_body_ending_with_data_in_the_last_call_round_trips() {
    for coding in [Coding::Brotli, Coding::Zstd, Coding::Gzip] {
        let mut enc = Encoder::new(coding, &Levels::default(), None);
        let out = enc.encode(b"hello, hello, hello", true).unwrap();
        assert_eq!(decode(coding, &out), b"hello, hello, hello");
    }
}

#[test]
fn encoders_sized_for_a_known_length_round_trip_at_every_size() {
    let text: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("{{\"id\":{i},\"title\":\"post {}\"}},", i % 97).into_bytes())
        .collect();
    for n in [
        1,
        100,
        1023,
        1024,
        1025,
        5000,
        16 << 10,
        (16 << 10) + 1,
        64 << 10,
        (64 << 10) + 1,
        200_000,
    ] {
        let body = &text[..n];
        for coding in [Coding::Brotli, Coding::Zstd, Coding::Gzip] {
            // As declared, and also when the origin's length was wrong.
            for declared in [n as u64, n as u64 / 2 + 1, n as u64 * 2] {
                let mut enc = Encoder::new(coding, &Levels::default(), Some(declared));
                let mut wire = Vec::new();
                for chunk in body.chunks(4096) {
                    wire.extend_from_slice(&enc.encode(chunk, false).unwrap());
                }
                wire.extend_from_slice(&enc.encode(&[], true).unwrap());
                assert_eq!(
                    decode(coding, &wire),
                    body,
                    "{coding:?} n={n} declared={declared}"
                );
            }
        }
    }
}
