//! Decoding of request data into the one canonical form the detectors see:
//! percent-decoding (repeated, to undo double encoding), `+` as space (query
//! and form data only), `%uXXXX`, HTML entities, JavaScript `\uXXXX`/`\xNN`
//! escapes, overlong UTF-8 and full-width ASCII folded to ASCII, NUL bytes
//! dropped, ASCII lower-cased. What had to be undone is remembered in
//! [`Evasion`] flags, since evasion is itself a signal.
//!
//! Output is bounded: it is never longer than the input (every decoding step
//! shrinks or keeps the length), and the caller bounds the input.

use std::borrow::Cow;

/// What decoding was needed to reach the canonical form.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evasion {
    /// Percent-decoding produced another `%XX` that was decoded again.
    pub double_encoded: bool,
    /// A NUL byte appeared (raw or decoded).
    pub null_byte: bool,
    /// `%uXXXX` (IIS-style) encoding was used.
    pub percent_u: bool,
    /// `%uFFxx` full-width forms were used (a classic filter bypass).
    pub fullwidth: bool,
    /// A `%` not followed by two hex digits.
    pub bad_percent: bool,
    /// The decoded bytes hold a broken multi-byte UTF-8 sequence (see
    /// [`broken_multibyte`]).
    pub broken_utf8: bool,
    /// Overlong UTF-8 (`C0 AF` for `/`).
    pub overlong: bool,
}

/// How many percent-decoding passes are made at most.
const MAX_PASSES: usize = 3;

/// Whether a byte needs any work from [`canonical`].
fn needs_work(b: u8, plus: bool) -> bool {
    matches!(b, b'%' | b'&' | b'\\' | 0 | b'A'..=b'Z') || b >= 0x80 || (plus && b == b'+')
}

/// The canonical (decoded, lower-cased) form of `input`. `plus_is_space`
/// applies to query strings and form bodies. Borrows when nothing changes,
/// which is the common case on the hot path.
pub fn canonical(input: &[u8], plus_is_space: bool) -> (Cow<'_, [u8]>, Evasion) {
    let mut ev = Evasion::default();
    if !input.iter().any(|&b| needs_work(b, plus_is_space)) {
        return (Cow::Borrowed(input), ev);
    }
    let mut cur = percent_decode(input, plus_is_space, &mut ev);
    for _ in 1..MAX_PASSES {
        if !has_percent_escape(&cur) {
            break;
        }
        ev.double_encoded = true;
        cur = percent_decode(&cur, false, &mut ev);
    }
    if cur.contains(&b'&') {
        cur = html_entities(&cur);
    }
    if cur.contains(&b'\\') {
        cur = js_escapes(&cur);
        if cur.contains(&b'&') {
            cur = html_entities(&cur);
        }
    }
    if broken_multibyte(&cur) {
        ev.broken_utf8 = true;
    }
    let mut out = fold_unicode(&cur, &mut ev);
    if out.contains(&0) {
        ev.null_byte = true;
        out.retain(|&b| b != 0);
    }
    out.make_ascii_lowercase();
    (Cow::Owned(out), ev)
}

/// `input` percent-decoded only (up to [`MAX_PASSES`] times), with none of
/// the later steps: for checks on the escapes those steps would undo.
pub fn url_decoded(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut ev = Evasion::default();
    let mut cur = percent_decode(input, plus_is_space, &mut ev);
    for _ in 1..MAX_PASSES {
        if !has_percent_escape(&cur) {
            break;
        }
        cur = percent_decode(&cur, false, &mut ev);
    }
    cur
}

/// Whether `s` holds a multi-byte UTF-8 sequence that is cut short or
/// malformed: a lead byte (C0..F4) without the continuation bytes it
/// announces, or an overlong, surrogate or out-of-range form. Lenient
/// decoders disagree on these, which is what makes them a filter evasion.
/// Bytes that never start a UTF-8 sequence (F5..FF, or a stray continuation
/// byte) are not flagged: they are legacy single-byte text (`%FF` is `ÿ` in
/// Latin-1) that no decoder turns into ASCII.
pub fn broken_multibyte(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        let need = match b {
            0xc0..=0xdf => 1,
            0xe0..=0xef => 2,
            0xf0..=0xf4 => 3,
            _ => {
                i += 1;
                continue;
            }
        };
        let rest = &s[i + 1..];
        let cont = rest
            .iter()
            .take(need)
            .take_while(|c| (0x80..0xc0).contains(*c))
            .count();
        if cont < need {
            return true;
        }
        let second = rest[0];
        let malformed = matches!(b, 0xc0 | 0xc1)
            || (b == 0xe0 && second < 0xa0)
            || (b == 0xed && second >= 0xa0)
            || (b == 0xf0 && second < 0x90)
            || (b == 0xf4 && second >= 0x90);
        if malformed {
            return true;
        }
        i += 1 + need;
    }
    false
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn has_percent_escape(s: &[u8]) -> bool {
    s.windows(3)
        .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
}

fn push_char(out: &mut Vec<u8>, c: u32) {
    let ch = char::from_u32(c).unwrap_or('\u{fffd}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

fn percent_decode(s: &[u8], plus: bool, ev: &mut Evasion) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if matches!(s.get(i + 1), Some(b'u' | b'U')) && i + 6 <= s.len() {
                let digits = &s[i + 2..i + 6];
                if let Some(v) = digits
                    .iter()
                    .try_fold(0u32, |acc, &d| hex(d).map(|h| acc << 4 | u32::from(h)))
                {
                    ev.percent_u = true;
                    if (0xff00..=0xffef).contains(&v) {
                        ev.fullwidth = true;
                    }
                    push_char(&mut out, v);
                    i += 6;
                    continue;
                }
            }
            ev.bad_percent = true;
            out.push(b);
        } else if plus && b == b'+' {
            out.push(b' ');
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

const NAMED: &[(&[u8], &[u8])] = &[
    (b"lt", b"<"),
    (b"gt", b">"),
    (b"quot", b"\""),
    (b"apos", b"'"),
    (b"amp", b"&"),
    (b"nbsp", b" "),
    (b"colon", b":"),
    (b"semi", b";"),
    (b"tab", b"\t"),
    (b"newline", b"\n"),
    (b"lpar", b"("),
    (b"rpar", b")"),
    (b"lcub", b"{"),
    (b"rcub", b"}"),
    (b"lbrace", b"{"),
    (b"rbrace", b"}"),
    (b"lsqb", b"["),
    (b"rsqb", b"]"),
    (b"sol", b"/"),
    (b"bsol", b"\\"),
    (b"dollar", b"$"),
    (b"excl", b"!"),
    (b"num", b"#"),
    (b"period", b"."),
    (b"comma", b","),
    (b"equals", b"="),
    (b"grave", b"`"),
    (b"plus", b"+"),
    (b"percnt", b"%"),
    (b"ast", b"*"),
    (b"vert", b"|"),
];

/// Decodes `&#NN;`, `&#xHH;` (semicolon optional) and the named entities above.
fn html_entities(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'&' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let rest = &s[i + 1..];
        if rest.first() == Some(&b'#') {
            let (radix, start) = match rest.get(1) {
                Some(b'x' | b'X') => (16, 2),
                _ => (10, 1),
            };
            let digits = rest[start..]
                .iter()
                .take(8)
                .take_while(|d| d.is_ascii_digit() || (radix == 16 && hex(**d).is_some()))
                .count();
            if digits > 0 {
                let text = &rest[start..start + digits];
                let v = text.iter().fold(0u32, |acc, &d| {
                    acc.saturating_mul(radix)
                        .saturating_add(u32::from(hex(d).unwrap_or(0)))
                });
                push_char(&mut out, v);
                let mut used = 1 + start + digits;
                if rest.get(start + digits) == Some(&b';') {
                    used += 1;
                }
                i += used;
                continue;
            }
        } else if let Some(end) = rest.iter().take(10).position(|&c| c == b';') {
            let name = &rest[..end];
            if let Some((_, v)) = NAMED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                out.extend_from_slice(v);
                i += end + 2;
                continue;
            }
        }
        out.push(b'&');
        i += 1;
    }
    out
}

/// Decodes `\uXXXX`, `\u{X..}` and `\xNN`; other backslashes are kept.
fn js_escapes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            match s.get(i + 1) {
                Some(b'u' | b'U') if s.get(i + 2) == Some(&b'{') => {
                    let body = &s[i + 3..];
                    let n = body
                        .iter()
                        .take(6)
                        .take_while(|d| hex(**d).is_some())
                        .count();
                    if n > 0 && body.get(n) == Some(&b'}') {
                        let v = body[..n]
                            .iter()
                            .fold(0u32, |a, &d| a << 4 | u32::from(hex(d).unwrap_or(0)));
                        push_char(&mut out, v);
                        i += 4 + n;
                        continue;
                    }
                }
                Some(b'u' | b'U') if i + 6 <= s.len() => {
                    if let Some(v) = s[i + 2..i + 6]
                        .iter()
                        .try_fold(0u32, |acc, &d| hex(d).map(|h| acc << 4 | u32::from(h)))
                    {
                        push_char(&mut out, v);
                        i += 6;
                        continue;
                    }
                }
                Some(b'x' | b'X') if i + 4 <= s.len() => {
                    if let (Some(h), Some(l)) = (hex(s[i + 2]), hex(s[i + 3])) {
                        out.push(h << 4 | l);
                        i += 4;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Folds full-width ASCII (U+FF01..U+FF5E) and overlong 2-byte UTF-8
/// sequences for ASCII (`C0 AE` = `.`) to plain ASCII.
fn fold_unicode(s: &[u8], ev: &mut Evasion) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if (b == 0xc0 || b == 0xc1) && i + 1 < s.len() && (0x80..0xc0).contains(&s[i + 1]) {
            ev.overlong = true;
            out.push(((b & 0x1f) << 6) | (s[i + 1] & 0x3f));
            i += 2;
            continue;
        }
        if b == 0xef && i + 2 < s.len() && (s[i + 1] == 0xbc || s[i + 1] == 0xbd) {
            let cp = 0xf000u32 | (u32::from(s[i + 1] & 0x3f) << 6) | u32::from(s[i + 2] & 0x3f);
            if (0xff01..=0xff5e).contains(&cp) {
                ev.fullwidth = true;
                // U+FF01..U+FF5E map to U+0021..U+007E; the difference fits in a byte.
                out.push(u8::try_from(cp - 0xff01 + 0x21).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// A normalized request path for location checks: backslashes become `/`,
/// `//` collapses, `/./` disappears and `..` segments are resolved.
pub fn normalize_path(decoded: &[u8]) -> Vec<u8> {
    let mut segs: Vec<&[u8]> = Vec::new();
    let unified: Vec<u8> = decoded
        .iter()
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect();
    for seg in unified.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(unified.len() + 1);
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        String::from_utf8_lossy(&canonical(s.as_bytes(), true).0).into_owned()
    }

    #[test]
    fn plain_ascii_is_borrowed() {
        let (out, ev) = canonical(b"hello-world_1.2", true);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(ev, Evasion::default());
    }

    #[test]
    fn decodes_percent_plus_and_case() {
        assert_eq!(c("%3CScript%3E+x"), "<script> x");
    }

    #[test]
    fn double_encoding_is_undone_and_flagged() {
        let (out, ev) = canonical(b"%252e%252e%252f", false);
        assert_eq!(&*out, b"../");
        assert!(ev.double_encoded);
    }

    #[test]
    fn entities_js_and_unicode_forms() {
        assert_eq!(c("&#36;&lcub;jndi&colon;x&#x7D;"), "${jndi:x}");
        assert_eq!(c("\\u006Aava\\x2e"), "java.");
        assert_eq!(c("%uff1cscript%uff1e"), "<script>");
        assert_eq!(c("%ef%bc%9cscript"), "<script");
        assert_eq!(c("%c0%ae%c0%ae/"), "../");
    }

    #[test]
    fn nul_bytes_are_dropped_and_flagged() {
        let (out, ev) = canonical(b"a%00b", false);
        assert_eq!(&*out, b"ab");
        assert!(ev.null_byte);
    }

    #[test]
    fn broken_utf8_and_bad_percent_are_flagged() {
        let (_, ev) = canonical(b"%e2%a3%zz", false);
        assert!(ev.broken_utf8 && ev.bad_percent);
        // Truncated and overlong sequences are broken ...
        assert!(broken_multibyte(b"\xc0"));
        assert!(broken_multibyte(b"a\xe2\xa3"));
        assert!(broken_multibyte(b"\xe0\x80\xaf"));
        // ... single-byte legacy text and valid UTF-8 are not.
        assert!(!broken_multibyte(b"test\xfd"));
        assert!(!broken_multibyte(b"/\xffindex.html"));
        assert!(!broken_multibyte(b"\x9cscript\x9e"));
        assert!(!broken_multibyte("Haßelt été 日本 😀".as_bytes()));
    }

    #[test]
    fn path_normalization() {
        assert_eq!(normalize_path(b"/a/./b//c/../d\\e"), b"/a/b/d/e");
        assert_eq!(normalize_path(b"/../../etc"), b"/etc");
    }

    #[test]
    fn output_never_grows() {
        let nasty = "&#x1F600;".repeat(1000) + &"%u0041".repeat(1000) + &"\\u{10FFFF}".repeat(100);
        let (out, _) = canonical(nasty.as_bytes(), true);
        assert!(out.len() <= nasty.len());
    }
}
