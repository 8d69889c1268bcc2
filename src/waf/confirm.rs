//! Second-stage checks for content rules whose pattern only finds a
//! candidate: some decisions need a little parsing that a linear-time regex
//! cannot express (balanced parentheses, for one). A rule listed here counts
//! only when its check holds on the same canonical text; every other rule
//! counts on its pattern alone.

use super::rules::{Scope, S_PATH};

/// Whether the match of rule `rule_id` on `text`, found in a value of
/// `scope`, stands.
pub(super) fn holds(rule_id: u32, scope: Scope, text: &[u8]) -> bool {
    match rule_id {
        921030 => ldap_breakout(text),
        930010 if scope & S_PATH != 0 => path_traversal(text),
        _ => true,
    }
}

/// In the request path, a `..` segment followed by more path always counts
/// (`/static/../admin` is how routing rules are dodged), but a trailing one
/// only when it climbs above the root: `/docs/..` names `/`, which is
/// harmless however the origin resolves it. Encoded dot forms (`0x2e`) the
/// pattern also matches always count.
fn path_traversal(path: &[u8]) -> bool {
    if path.windows(4).any(|w| w.starts_with(b"0x")) {
        let lower = path.to_ascii_lowercase();
        if [&b"0x2e"[..], b"0x2f", b"0x5c"]
            .iter()
            .any(|p| lower.windows(4).any(|w| w == *p))
        {
            return true;
        }
    }
    let segs: Vec<&[u8]> = path.split(|&b| matches!(b, b'/' | b'\\' | b';')).collect();
    let dots = |s: &[u8]| s == b".." || s == b"...";
    let last = segs.len().saturating_sub(1);
    if segs[..last].iter().any(|s| dots(s)) {
        return true;
    }
    let mut depth: i64 = 0;
    for s in &segs {
        if dots(s) {
            depth -= 1;
            if depth < 0 {
                return true;
            }
        } else if !s.is_empty() && *s != b"." {
            depth += 1;
        }
    }
    false
}

/// An LDAP injection has to leave the filter it is spliced into, so at some
/// point a `)` closes more than the value opened (`*)(uid=*))(|(uid=*`). A
/// value that is itself a balanced filter, such as
/// `(&(objectCategory=group)(cn=x))` typed into a directory search form, is
/// a search, not a breakout.
fn ldap_breakout(s: &[u8]) -> bool {
    let mut depth: i64 = 0;
    for &b in s {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_dot_dot_in_a_path_counts_only_above_the_root() {
        assert!(!path_traversal(b"/get/.."));
        assert!(path_traversal(b"/.."));
        assert!(path_traversal(b"/a/../../etc"));
        assert!(path_traversal(b"/static/../admin"));
        assert!(path_traversal(b"/x/0x2e0x2e/"));
    }

    #[test]
    fn ldap_breakout_needs_an_unopened_close() {
        assert!(ldap_breakout(b"*)(uid=*))(|(uid=*"));
        assert!(ldap_breakout(b")(cn>=bob)"));
        assert!(!ldap_breakout(
            b"(useraccountcontrol:1.2.840.113556.1.4.803:=2)(&(objectcategory=group))"
        ));
        assert!(!ldap_breakout(b"(cn=bob)"));
    }
}
