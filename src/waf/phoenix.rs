//! Phoenix's own wire protocol, as the WAF sees it in long-poll bodies.
//!
//! Websocket frames are not inspected, but when websockets are blocked
//! (corporate proxies) LiveView falls back to the long-poll transport, which
//! POSTs the same channel frames to `<socket path>/longpoll` as NDJSON, one
//! frame a line, in the V2 JSON serializer's shape
//! `[join_ref, ref, topic, event, payload]`.
//!
//! Two fields of LiveView frames are the browser's own page address, filled
//! in by `live_socket.js` from `window.location` and never fetched by the
//! server (LiveView matches them against the router): the `url` (and
//! `redirect`) of `phx_join` / `live_patch`, and the `_track_static` asset
//! URLs of `phx_join`. When a site is reached by an IP address or
//! `localhost`, they are IP URLs, which the RFI and SSRF decisions would
//! read as an include or a forged request; for them those two decisions do
//! not apply. Every other rule still runs on them, and every other field —
//! `value` of an `event` (the form the user typed), params, session — is
//! inspected as usual. Only frames on LiveView topics (`lv:`) of those
//! events are treated this way: an app's own channel may well fetch a
//! `url` it is sent.

/// What a line of a long-poll body is, for the JSON walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Frame {
    /// A LiveView navigation frame (`phx_join`, `live_patch`,
    /// `live_redirect`): its page-address fields are the browser's own.
    pub navigation: bool,
    /// A LiveView `event` frame: its `value` may be a url-encoded form.
    pub event: bool,
}

/// Whether `path` (decoded) is a Phoenix long-poll transport endpoint.
pub(super) fn is_longpoll(path: &str) -> bool {
    path.ends_with("/longpoll")
}

/// Reads the frame head of one NDJSON line; `Frame::default()` when the line
/// is not a LiveView frame.
pub(super) fn frame(line: &[u8]) -> Frame {
    let Some((topic, event)) = head(line) else {
        return Frame::default();
    };
    if !topic.starts_with(b"lv:") {
        return Frame::default();
    }
    Frame {
        navigation: matches!(event, b"phx_join" | b"live_patch" | b"live_redirect"),
        event: event == b"event",
    }
}

/// Whether the string at JSON `depth` under `key` is a page-address field
/// of a navigation frame (payload keys sit at depth 2: array, object).
pub(super) fn is_page_address(f: Frame, depth: usize, key: &[u8]) -> bool {
    f.navigation && ((depth == 2 && matches!(key, b"url" | b"redirect")) || key == b"_track_static")
}

/// Whether the string is the `value` of an event frame holding a
/// url-encoded form (LiveView serializes `phx-change` / `phx-submit` forms
/// that way): its fields are then inspected one by one, like a form post.
pub(super) fn is_form_value(f: Frame, depth: usize, key: &[u8], raw: &[u8]) -> bool {
    f.event
        && depth == 2
        && key == b"value"
        && raw.contains(&b'=')
        && !raw.iter().any(|b| b.is_ascii_whitespace())
}

/// `[join_ref, ref, "topic", "event", ...`: the raw topic and event.
/// The first two may be `null` or strings; anything else is not a frame.
fn head(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut rest = line.trim_ascii_start().strip_prefix(b"[")?;
    let mut fields: [&[u8]; 4] = [b""; 4];
    for (i, slot) in fields.iter_mut().enumerate() {
        rest = rest.trim_ascii_start();
        if i > 0 {
            rest = rest.strip_prefix(b",")?.trim_ascii_start();
        }
        if let Some(r) = rest.strip_prefix(b"null") {
            if i >= 2 {
                return None;
            }
            rest = r;
            continue;
        }
        let body = rest.strip_prefix(b"\"")?;
        let mut j = 0;
        loop {
            match body.get(j)? {
                b'\\' => j += 2,
                b'"' => break,
                _ => j += 1,
            }
        }
        *slot = &body[..j];
        rest = &body[j + 1..];
    }
    Some((fields[2], fields[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_liveview_frame_heads() {
        let join = br#"["4","4","lv:phx-F1","phx_join",{"url":"http://127.0.0.1:8080/counter"}]"#;
        assert_eq!(
            frame(join),
            Frame {
                navigation: true,
                event: false
            }
        );
        let ev = br#"[null, "7", "lv:phx-F1", "event", {"type":"form"}]"#;
        assert!(frame(ev).event);
        let hb = br#"[null,"9","phoenix","heartbeat",{}]"#;
        assert_eq!(frame(hb), Frame::default());
        // An app's own channel: its payload is the app's, inspected in full.
        let own = br#"["1","1","room:lobby","phx_join",{"url":"http://10.0.0.5/"}]"#;
        assert_eq!(frame(own), Frame::default());
        assert_eq!(frame(b"{\"url\":1}"), Frame::default());
        assert_eq!(frame(b"[\"1\",\"2\",\"lv:x"), Frame::default());
    }
}
