//! Bytes saved against CPU per response for each coding and level, on a
//! Phoenix-like HTML page (~146 KiB, LiveView markup) and a 200 KiB JSON API
//! answer, through bext's own streaming encoder (same windows, 16 KiB
//! chunks as an origin sends them, a flush per chunk). Chooses nothing by
//! itself: it prints the table the defaults in `compression::Levels` were
//! picked from (README, "Compression").
//!
//!   cargo run --release --example compression_levels [-- --small]
//!
//! `--small` measures 1, 4 and 16 KiB answers instead, where setting up the
//! encoder costs more than compressing.

use std::time::Instant;

use bext::compression::{Coding, Encoder, Levels};

/// A small deterministic PRNG (xorshift), so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[(self.next() % words.len() as u64) as usize]
    }
    fn sentence(&mut self, words: &[&str], n: usize) -> String {
        (0..n)
            .map(|_| self.pick(words))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

const WORDS: &[&str] = &[
    "phoenix",
    "elixir",
    "socket",
    "render",
    "channel",
    "deploy",
    "cluster",
    "query",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "that",
    "by",
    "user",
    "post",
    "comment",
    "update",
    "release",
    "node",
    "edge",
    "cache",
    "request",
    "page",
    "stream",
    "event",
    "live",
    "view",
    "form",
    "submit",
    "change",
    "error",
    "valid",
    "database",
    "migration",
    "schema",
    "context",
    "router",
    "controller",
    "template",
];

fn html_page(rng: &mut Rng) -> Vec<u8> {
    let mut s = String::from(
        r#"<!DOCTYPE html><html lang="en" class="[scrollbar-gutter:stable]"><head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="KxQ8Ci0GGjw5LjEaFgMOHQlnPCs5AxsJqY4m3iH0Kl2ERqzNfxh8Jw0l">
<title data-suffix=" · Phoenix Framework">Listing Posts · Phoenix Framework</title>
<link phx-track-static rel="stylesheet" href="/assets/app-4f5a1c2e.css">
<script defer phx-track-static type="text/javascript" src="/assets/app-9b8e7d6c.js"></script>
</head><body class="bg-white antialiased">
<header class="px-4 sm:px-6 lg:px-8"><div class="flex items-center justify-between border-b border-zinc-100 py-3 text-sm">
<div class="flex items-center gap-4"><a href="/"><img src="/images/logo.svg" width="36"></a>
<p class="bg-brand/5 text-brand rounded-full px-2 font-medium leading-6">v1.7.14</p></div></div></header>
<main class="px-4 py-20 sm:px-6 lg:px-8"><div class="mx-auto max-w-2xl">
<div id="phx-F8xYq2lZ" data-phx-main data-phx-session="SFMyNTY.g2gDaAJhBXQAAAAIZAACaWRtAAAAFHBoeC1GOHhZcTJsWkFBQUFBQUFBZAAMbGl2ZV9zZXNzaW9u" data-phx-static="SFMyNTY.g2gDaAJhBXQAAAADZAAKYXNzaWduX25ldw" data-phx-root-id="phx-F8xYq2lZ">
<table class="w-[40rem] mt-11 sm:w-full"><thead class="text-sm text-left leading-6 text-zinc-500"><tr>
<th class="p-0 pb-4 pr-6 font-normal">Title</th><th class="p-0 pb-4 pr-6 font-normal">Body</th></tr></thead>
<tbody id="posts" phx-update="stream" class="relative divide-y divide-zinc-100 border-t border-zinc-200 text-sm leading-6 text-zinc-700">
"#,
    );
    for i in 0..180 {
        let title = rng.sentence(WORDS, 4);
        let body = rng.sentence(WORDS, 14);
        s.push_str(&format!(
            r##"<tr id="posts-{i}" class="group hover:bg-zinc-50"><td phx-click={{JS.navigate("/posts/{i}")}} class="relative p-0 hover:cursor-pointer"><div class="block py-4 pr-6"><span class="absolute -inset-y-px right-0 -left-4 group-hover:bg-zinc-50 sm:rounded-l-xl"></span><span class="relative font-semibold text-zinc-900">{title}</span></div></td><td class="relative p-0"><div class="block py-4 pr-6"><span class="relative">{body}</span></div></td><td class="relative w-14 p-0"><div class="relative whitespace-nowrap py-4 text-right text-sm font-medium"><a href="/posts/{i}/edit" data-phx-link="patch" data-phx-link-state="push">Edit</a> <a href="#" phx-click="delete" phx-value-id="{i}" data-confirm="Are you sure?">Delete</a></div></td></tr>
"##
        ));
    }
    s.push_str("</tbody></table></div></div></main></body></html>\n");
    s.into_bytes()
}

fn json_answer(rng: &mut Rng) -> Vec<u8> {
    let mut s = String::from("{\"data\":[");
    let mut i = 0;
    while s.len() < 200 * 1024 {
        if i > 0 {
            s.push(',');
        }
        let title = rng.sentence(WORDS, 5);
        let body = rng.sentence(WORDS, 18);
        let author = rng.pick(WORDS);
        let at = 1_700_000_000 + rng.next() % 30_000_000;
        s.push_str(&format!(
            r#"{{"id":{i},"title":"{title}","body":"{body}","published":{},"inserted_at":"2026-{:02}-{:02}T{:02}:{:02}:{:02}Z","author":{{"id":{},"name":"{author}","email":"{author}{}@example.com"}},"tags":["{}","{}"],"comments_count":{}}}"#,
            at % 2 == 0,
            1 + at % 12,
            1 + at % 28,
            at % 24,
            at % 60,
            (at / 7) % 60,
            at % 997,
            at % 89,
            rng.pick(WORDS),
            rng.pick(WORDS),
            at % 40
        ));
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

fn measure(name: &str, body: &[u8]) {
    println!("\n{name}: {} bytes", body.len());
    println!("| coding | level | bytes | saved | µs per response |");
    println!("|---|---:|---:|---:|---:|");
    let runs: &[(Coding, &[i32])] = &[
        (Coding::Brotli, &[1, 2, 3, 4, 5, 6, 7, 9, 11]),
        (Coding::Zstd, &[1, 2, 3, 4, 6, 9, 12, 19]),
        (Coding::Gzip, &[1, 3, 4, 5, 6, 9]),
    ];
    for (coding, levels) in runs {
        for &level in *levels {
            let l = match coding {
                Coding::Brotli => Levels {
                    brotli: level as u32,
                    ..Levels::default()
                },
                Coding::Zstd => Levels {
                    zstd: level,
                    ..Levels::default()
                },
                _ => Levels {
                    gzip: level as u32,
                    ..Levels::default()
                },
            };
            let once = || {
                // As an origin sends it: with its Content-Length.
                let mut enc = Encoder::new(*coding, &l, Some(body.len() as u64));
                let mut n = 0;
                let mut chunks = body.chunks(16 * 1024).peekable();
                while let Some(c) = chunks.next() {
                    n += enc
                        .encode(c, chunks.peek().is_none())
                        .expect("encode")
                        .len();
                }
                n
            };
            let size = once();
            // Enough repetitions for ~0.3 s per cell.
            let start = Instant::now();
            let mut reps = 0u32;
            while start.elapsed().as_millis() < 300 {
                std::hint::black_box(once());
                reps += 1;
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(reps);
            let saved = 100.0 * (1.0 - size as f64 / body.len() as f64);
            println!(
                "| {} | {level} | {size} | {saved:.1} % | {us:.0} |",
                coding.as_str()
            );
        }
    }
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let page = html_page(&mut rng);
    let json = json_answer(&mut rng);
    if std::env::args().any(|a| a == "--small") {
        // Small answers: where the encoder's set-up, not the data, is the cost.
        for n in [1024, 4096, 16384] {
            measure(&format!("first {n} bytes of the JSON answer"), &json[..n]);
        }
        return;
    }
    measure("Phoenix HTML page (LiveView markup)", &page);
    measure("JSON API answer", &json);
}
