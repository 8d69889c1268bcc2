//! SQL injection and XSS decided by tokenization (libinjection's algorithm),
//! on the canonical value bext's normalizer produced (URL / HTML-entity /
//! JavaScript-escape / full-width decoding; the comment-stripped variant is
//! checked too, see `inspect`).
//!
//! libinjection does not look for keywords: it tokenizes a value as SQL (in
//! three quote contexts: as is, inside `'...'`, inside `"..."`) and folds the
//! first tokens into a fingerprint (`s&1c` = string, operator, number,
//! comment), which it looks up in a list of fingerprints of real injections.
//! An attacker who swaps `OR` for `||`, `1=1` for `2>1`, or `UNION` for
//! `UNION ALL` gets the same fingerprint. Its XSS side runs an HTML5
//! tokenizer in five contexts (text, unquoted / single / double / back-quoted
//! attribute value) and flags dangerous tags, event-handler attributes and
//! `javascript:`-like URLs. This is the decision ModSecurity makes for CRS
//! 942100 and 941100.
//!
//! Which implementation: `libinjectionrs` (a Rust port) over the `libinjection`
//! crate (bindgen binding of the C library). The binding's build script
//! `git clone`s libinjection from GitHub at build time and runs autotools and
//! bindgen (libclang): it does not build offline, in a vendored CI, or on
//! this machine (no network to GitHub, no autoconf/libclang). The port builds
//! with stable Rust and no system deps, forbids `unsafe`, and passes the C
//! library's own test files and differential fuzzing against it (its README);
//! as it is young, every call is wrapped in `catch_unwind` (a panic on some
//! input becomes "no verdict from this detector", the regex rules still run)
//! and the hostile-input tests cover it. Numbers: README, WAF section.
//!
//! Both detectors are linear in the value: the SQL side stops after a few
//! folded tokens, the HTML5 tokenizer makes one pass per context.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// The verdicts of recently seen values, per thread. Most values that reach
/// the tokenizers repeat request after request: a client's User-Agent (on
/// every request, 10–50k instructions of tokenizing each time), its cookies,
/// the same form fields. A direct-mapped table remembers the verdict for a
/// value's 64-bit hash, keyed with a per-process random key (std's SipHash
/// `RandomState`), so a client cannot aim a value at another one's slot;
/// an accidental collision of two values is 2^-64 per lookup.
mod memo {
    use std::cell::RefCell;
    use std::hash::BuildHasher;
    use std::sync::OnceLock;

    const SLOTS: usize = 1024;
    /// Longer values are rare (bodies, big JSON strings) and not remembered.
    const MAX_LEN: usize = 1024;

    struct Table {
        sqli: Vec<(u64, Option<[u8; 8]>)>,
        xss: Vec<(u64, bool)>,
    }

    thread_local! {
        static TABLE: RefCell<Table> = RefCell::new(Table {
            sqli: vec![(0, None); SLOTS],
            xss: vec![(0, false); SLOTS],
        });
    }

    fn key(v: &[u8], tag: u8) -> u64 {
        static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        // Never 0, the empty slot's key.
        STATE.get_or_init(Default::default).hash_one((tag, v)) | 1
    }

    pub(super) fn sqli(v: &[u8], f: impl FnOnce() -> Option<[u8; 8]>) -> Option<[u8; 8]> {
        remembered(v, 1, |t| &mut t.sqli, f)
    }

    pub(super) fn xss(v: &[u8], f: impl FnOnce() -> bool) -> bool {
        remembered(v, 2, |t| &mut t.xss, f)
    }

    /// The verdict for `v` in the table `slots` picks, computed by `f`
    /// when the slot holds another value.
    fn remembered<T: Copy>(
        v: &[u8],
        tag: u8,
        slots: fn(&mut Table) -> &mut Vec<(u64, T)>,
        f: impl FnOnce() -> T,
    ) -> T {
        if v.len() > MAX_LEN {
            return f();
        }
        let k = key(v, tag);
        let slot = (k as usize) % SLOTS;
        let hit = TABLE.with(|t| {
            let entry = slots(&mut t.borrow_mut())[slot];
            (entry.0 == k).then_some(entry.1)
        });
        if let Some(verdict) = hit {
            return verdict;
        }
        let verdict = f();
        TABLE.with(|t| slots(&mut t.borrow_mut())[slot] = (k, verdict));
        verdict
    }
}

/// Values longer than this are checked on their first `MAX_SQLI` bytes for
/// SQL (an injection starts where the value does: libinjection only reads
/// the first tokens anyway).
const MAX_SQLI: usize = 8 << 10;

/// libinjection's SQL verdict on `v`, with the fingerprint for the log.
pub(super) fn sqli(v: &[u8]) -> Option<[u8; 8]> {
    if !might_be_sqli(v) {
        return None;
    }
    memo::sqli(v, || {
        let fp = raw_sqli(v)?;
        if prose_fingerprint(&fp) && is_prose(v) {
            return None;
        }
        Some(fp)
    })
}

/// Whether libinjection could flag `v` at all, decided in one cheap pass so
/// the common value (a name, a number, a sentence) skips the tokenizer. A
/// fingerprint it flags needs a string, comment, operator, parenthesis or
/// `;` (all punctuation), or a logic / UNION keyword between words: a value
/// of only letters, digits, spaces, `_` and `.` without those keywords
/// cannot be one.
fn might_be_sqli(v: &[u8]) -> bool {
    if v.iter()
        .any(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.') || b >= 0x80))
    {
        return true;
    }
    v.split(|&b| b == b' ').any(|w| {
        matches!(
            w,
            b"or"
                | b"and"
                | b"xor"
                | b"not"
                | b"union"
                | b"div"
                | b"like"
                | b"rlike"
                | b"regexp"
                | b"is"
                | b"between"
                | b"having"
                | b"sounds"
                | b"mod"
        )
    })
}

fn raw_sqli(v: &[u8]) -> Option<[u8; 8]> {
    let v = &v[..v.len().min(MAX_SQLI)];
    catch_unwind(AssertUnwindSafe(|| {
        let r = libinjectionrs::detect_sqli(v);
        if !r.is_injection() {
            return None;
        }
        let mut fp = [0u8; 8];
        if let Some(f) = r.fingerprint {
            let b = f.as_bytes();
            let n = b.len().min(8);
            fp[..n].copy_from_slice(&b[..n]);
        }
        Some(fp)
    }))
    .unwrap_or(None)
}

/// libinjection's known weak spot is prose: "while (foo) is bar" folds to
/// `T(n)o`, "a quarter (24%) of" to `nf(1o`, "Fixed; update (see notes)"
/// to a stacked statement, "select count(*) from posts" (a sentence about
/// SQL) to `Ef(o)`. A fingerprint without a string, a comment, UNION, a
/// logic operator (`and`/`or`/`||`) or a variable never breaks out of a
/// literal: on prose it is left to the regex rules, which ask for real
/// statement syntax (`; drop table x`, `select ... from ... where`).
fn prose_fingerprint(fp: &[u8; 8]) -> bool {
    !fp.iter()
        .take_while(|&&b| b != 0)
        .any(|b| matches!(b, b's' | b'c' | b'U' | b'&' | b'v'))
}

/// Natural-language text: at least three words of letters, and none of the
/// characters that end a SQL literal or start a comment. An injection
/// without those (`sleep(5)`, `1 union select`) is not prose by this test.
fn is_prose(v: &[u8]) -> bool {
    if v.iter().any(|b| matches!(b, b'\'' | b'"' | b'`' | b'#'))
        || memchr::memmem::find(v, b"--").is_some()
        || memchr::memmem::find(v, b"/*").is_some()
    {
        return false;
    }
    v.split(|b| b.is_ascii_whitespace())
        .filter(|w| {
            let punct = |b: &u8| matches!(b, b'(' | b')' | b';' | b',' | b'.' | b':' | b'!' | b'?');
            let start = w.iter().position(|b| !punct(b)).unwrap_or(w.len());
            let end = w.iter().rposition(|b| !punct(b)).map_or(start, |e| e + 1);
            let w = &w[start..end];
            w.len() >= 2 && w.iter().all(|b| b.is_ascii_alphabetic() || *b >= 0x80)
        })
        .nth(2)
        .is_some()
}

/// libinjection's XSS verdict on `v`, with its two known false-positive
/// classes removed (see `inert_markup` and `attribute_can_run`).
pub(super) fn xss(v: &[u8]) -> bool {
    // Markup needs a `<`; attribute text an `=` (`x onerror=...`): without
    // either, none of libinjection's five contexts can flag the value.
    if !v.iter().any(|&b| b == b'<' || b == b'=') {
        return false;
    }
    memo::xss(v, || xss_uncached(v))
}

fn xss_uncached(v: &[u8]) -> bool {
    if !raw_xss(v) {
        return false;
    }
    if let Some(masked) = inert_markup(v) {
        if !raw_xss(&masked) {
            return false;
        }
    }
    v.contains(&b'<') || attribute_can_run(v)
}

fn raw_xss(v: &[u8]) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        libinjectionrs::detect_xss(v).is_injection()
    }))
    .unwrap_or(false)
}

/// libinjection flags every document prologue (`<?xml ...?>`,
/// `<?xpacket ...?>`, `<!doctype ...>`) and a bare `<svg>` / `<math>` tag:
/// an uploaded SVG or XMP metadata in a form field. None of them runs
/// script (an HTML parser reads `<?...>` as a comment; `<svg>` needs a
/// script child, a handler or a link, which stay in the text). It also
/// flags every `xmlns` namespace declaration (`<x:xmpmeta xmlns:x=...>`);
/// a namespace is a name, and the dangerous ones (XInclude, XSLT, XHTML
/// hosts) are rule 941050's. The value with all these blanked out is
/// checked again; `None` when there is nothing to blank.
fn inert_markup(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(v.len());
    let mut changed = false;
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'<' {
            let rest = &v[i..];
            let end = rest.iter().position(|&b| b == b'>');
            let inert = end.filter(|&e| {
                let tag = &rest[1..e];
                tag.starts_with(b"?")
                    || tag.starts_with(b"!doctype")
                    || matches!(tag, b"svg" | b"/svg" | b"math" | b"/math")
            });
            if let Some(e) = inert {
                out.push(b' ');
                i += e + 1;
                changed = true;
                continue;
            }
        }
        if v[i..].starts_with(b"xmlns") {
            out.extend_from_slice(b"xmlnz");
            i += 5;
            changed = true;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// Without a `<`, libinjection can only have read the value as attributes
/// spliced into a tag, and it flags any `style` attribute. Attribute text
/// runs script only through an event handler, a script URL, or one of the
/// CSS script vectors; plain `style=color:red` is none of them.
fn attribute_can_run(v: &[u8]) -> bool {
    let has = |n: &[u8]| memchr::memmem::find(v, n).is_some();
    const VECTORS: [&[u8]; 10] = [
        b"javascript:",
        b"vbscript:",
        b"livescript:",
        b"data:",
        b"expression(",
        b"-moz-binding",
        b"behavior:",
        b"behaviour:",
        b"@import",
        b"srcdoc",
    ];
    if VECTORS.iter().any(|n| has(n)) {
        return true;
    }
    // An event handler: `on` + letters + `=`, at a word start.
    let mut i = 0;
    while let Some(at) = memchr::memmem::find(&v[i..], b"on") {
        let p = i + at;
        let word_start = p == 0 || !v[p - 1].is_ascii_alphanumeric();
        let letters = v[p + 2..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let after = v[p + 2 + letters..]
            .iter()
            .find(|b| !b.is_ascii_whitespace());
        if word_start && letters >= 3 && after == Some(&b'=') {
            return true;
        }
        i = p + 2;
    }
    false
}

#[cfg(test)]
mod tests {

    #[test]
    fn remembered_verdicts_are_the_computed_ones() {
        let ua = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)";
        let attack = b"1' or '1'='1";
        let xss = b"<img src=x onerror=alert(1)>";
        for _ in 0..3 {
            assert_eq!(super::sqli(ua), None);
            assert!(super::sqli(attack).is_some());
            assert!(super::xss(xss));
            assert!(!super::xss(b"a=b"));
        }
    }

    use super::*;

    #[test]
    fn classic_forms_and_their_variants() {
        for a in [
            "1' or '1'='1",
            "1' || '1'='1",
            "1 union all select null,version()--",
            "admin'--",
            "1; drop table users--",
            "-1' and 2>1#",
        ] {
            assert!(sqli(a.as_bytes()).is_some(), "{a}");
        }
        for a in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\"><svg onload=confirm(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
        ] {
            assert!(xss(a.as_bytes()), "{a}");
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let quotes = "'\"`".repeat(350_000);
        let t = std::time::Instant::now();
        let _ = sqli(quotes.as_bytes());
        let _ = xss(quotes.as_bytes());
        let tags = "<a ".repeat(300_000);
        let _ = xss(tags.as_bytes());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
#[cfg(test)]
mod through_the_waf {
    use crate::waf::test_support::{caught, head, passes, verdict};
    use crate::waf::{Waf, WafPlan};

    fn query(w: &Waf, q: &str) -> crate::waf::Verdict {
        verdict(w, &head("GET", &format!("/s?q={q}"), &[]), b"")
    }

    /// Injections with no keyword pair the regex rules know: the
    /// tokenizer's fingerprint decides.
    #[test]
    fn tokenizer_catches_what_keyword_rules_do_not() {
        let on = Waf::new(WafPlan::default()).expect("rules");
        let off = Waf::new(WafPlan {
            tokenizers: false,
            ..WafPlan::default()
        })
        .expect("rules");
        for q in [
            "1%20rlike%20(select%201)",
            "1%20AND%20(SELECT%201%20FROM%20DUAL)",
        ] {
            caught(&on, query(&on, q), q);
            assert!(
                !off.blocks(&query(&off, q)),
                "{q}: pick a case the regexes miss"
            );
        }
    }

    /// The false-positive classes the tokenizers are guarded against.
    #[test]
    fn prose_markup_and_code_near_misses_pass() {
        let w = Waf::new(WafPlan::default()).expect("rules");
        for q in [
            "while%20(foo)%20is%20bar.",
            "one%20quarter%20(24%25)%20of%20people%20agree",
            "Fixed%3B%20update%20(see%20notes)",
            "I%20select%20the%20best%20union%20of%20tools%20from%20the%20shelf",
            "%40spec%20fetch(id%20%3A%3A%20integer())%20%3A%3A%20%7B%3Aok%2C%20t()%7D",
            "Enum.map(list%2C%20fn%20x%20-%3E%20x%20*%202%20end)",
            "%3C%3Fxml%20version%3D%221.0%22%3F%3E%3Csvg%3E%3C%2Fsvg%3E",
            "%3Cx%3Axmpmeta%20xmlns%3Ax%3D%22adobe%3Ans%3Ameta%2F%22%3E",
            "style%3Dcolor%3Ared%3Bbackground%3Awhite",
            "%3C!doctype%20html%3E",
        ] {
            passes(&w, query(&w, q), q);
        }
    }
}
