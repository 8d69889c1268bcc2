//! `waf.exclusions`: turn rules off for a path, for some arguments, or both
//! (e.g. skip XSS rules for the rich-text field `post[body]` on `/admin/posts/*`).

use super::rules::{Category, Rule};
use crate::routing::Pattern;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSelector {
    Id(u32),
    Category(Category),
}

#[derive(Debug, Clone)]
pub struct Exclusion {
    /// Empty: every rule.
    pub rules: Vec<RuleSelector>,
    /// None: every path.
    pub path: Option<Pattern>,
    /// Lower-cased argument names; empty: the whole request.
    pub args: Vec<String>,
}

impl Exclusion {
    fn covers_rule(&self, rule: &Rule) -> bool {
        self.rules.is_empty()
            || self.rules.iter().any(|s| match s {
                RuleSelector::Id(id) => *id == rule.id,
                RuleSelector::Category(c) => *c == rule.category,
            })
    }

    /// Whether a hit of `rule` on argument `arg` (if any) at `path` is excluded.
    pub fn excludes(&self, path: &str, rule: &Rule, arg: Option<&[u8]>) -> bool {
        if !self.covers_rule(rule) {
            return false;
        }
        if let Some(p) = &self.path {
            if !p.matches(path) {
                return false;
            }
        }
        if self.args.is_empty() {
            return true;
        }
        match arg {
            Some(a) => self
                .args
                .iter()
                .any(|x| x.as_bytes().eq_ignore_ascii_case(a)),
            None => false,
        }
    }
}

pub fn excluded(list: &[Exclusion], path: &str, rule: &Rule, arg: Option<&[u8]>) -> bool {
    list.iter().any(|e| e.excludes(path, rule, arg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::rules::by_id;

    #[test]
    fn by_category_path_and_arg() {
        let e = Exclusion {
            rules: vec![RuleSelector::Category(Category::Xss)],
            path: Some(Pattern::parse("/admin/posts/*").unwrap()),
            args: vec!["post[body]".into()],
        };
        let xss = by_id(941010).unwrap();
        let sqli = by_id(942020).unwrap();
        assert!(e.excludes("/admin/posts/1", xss, Some(b"post[body]")));
        assert!(!e.excludes("/admin/posts/1", xss, Some(b"post[title]")));
        assert!(!e.excludes("/posts/1", xss, Some(b"post[body]")));
        assert!(!e.excludes("/admin/posts/1", sqli, Some(b"post[body]")));
        assert!(!e.excludes("/admin/posts/1", xss, None));
    }

    #[test]
    fn by_id_everywhere() {
        let e = Exclusion {
            rules: vec![RuleSelector::Id(942020)],
            path: None,
            args: vec![],
        };
        assert!(e.excludes("/x", by_id(942020).unwrap(), None));
        assert!(!e.excludes("/x", by_id(942010).unwrap(), None));
    }
}
