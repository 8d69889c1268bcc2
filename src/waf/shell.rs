//! Command injection by shell tokenization (rule 932100): "does this value
//! hold a shell command position followed by a known command?", asked the
//! way a shell would read the value rather than by listing spellings.
//!
//! A command position is what follows `;`, `|`, `||`, `&`, `&&`, a line
//! break, a backtick or `$(` (and a `(` / `{` group opened right there).
//! There, after `$IFS`-style blanks and `NAME=value` assignments, the first
//! word is read the way the shell expands it: quotes and backslashes
//! removed (`w'h'o"am"i`, `c\at`), empty expansions dropped (`$@`, `$*`,
//! `$1`, `${9}`, `$()`, two backticks), ANSI-C strings decoded
//! (`$'\x69\x64'`), and a glob-spelled path (`/???/??t`, `/u?r/b?n/id`)
//! matched against the usual bin directories. The word's base name is then
//! looked up in the command lists (`data/*.txt`, one Aho-Corasick automaton
//! built at start-up).
//!
//! What counts (the same care for prose as the regex rules):
//! - inside `$(...)` or backticks: any listed command;
//! - after a separator: a command whose name is not an English word
//!   (`unix_commands.txt`, `windows_commands.txt`) whatever follows; a
//!   word-like one (`*_command_words.txt`: "find", "time", "dir") only with
//!   command-like arguments; viewers and archivers (`cat`, `tar`, `vi`) not
//!   at all, as in CRS's paranoia level 1;
//! - any listed command whose spelling needed the evasions above: nobody
//!   writes `wh$@oami` in a comment.
//!
//! Linear: each candidate position reads at most `MAX_WORD` bytes of word
//! and one argument start, and positions only occur at separators.

use aho_corasick::{AhoCorasick, Anchored, Input, MatchKind};

/// Longest command word read (paths included); longer words are no command.
const MAX_WORD: usize = 96;
/// Glob-spelled paths matched per value at most: each is matched against
/// every listed name in every bin directory, so hostile input with many of
/// them must not multiply that work.
const MAX_GLOBS: usize = 4;

/// The bin directories a glob-spelled path is matched against.
const BIN_DIRS: [&str; 6] = [
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Counts after a separator whatever follows.
    Strong,
    /// Needs command-like arguments after a separator.
    Word,
    /// Never counts after a separator on its own (only in a substitution
    /// or when spelled evasively).
    Loose,
}

/// The command lists, compiled once per rule set.
#[derive(Debug)]
pub(super) struct Commands {
    ac: AhoCorasick,
    class: Vec<Class>,
    names: Vec<&'static str>,
}

fn entries(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl Commands {
    pub(super) fn new() -> Result<Commands, aho_corasick::BuildError> {
        let lists: [(&'static str, Class); 5] = [
            (include_str!("data/unix_commands.txt"), Class::Strong),
            (include_str!("data/windows_commands.txt"), Class::Strong),
            (include_str!("data/unix_command_words.txt"), Class::Word),
            (include_str!("data/windows_command_words.txt"), Class::Word),
            (include_str!("data/unix_commands_loose.txt"), Class::Loose),
        ];
        let mut names = vec![];
        let mut class = vec![];
        for (text, c) in lists {
            for e in entries(text) {
                if !names.contains(&e) {
                    names.push(e);
                    class.push(c);
                }
            }
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(aho_corasick::StartKind::Anchored)
            .build(&names)?;
        Ok(Commands { ac, class, names })
    }

    /// The class of `word` when it is exactly a listed command.
    fn lookup(&self, word: &[u8]) -> Option<Class> {
        let m = self
            .ac
            .find(Input::new(word).anchored(Anchored::Yes))
            .filter(|m| m.end() == word.len())?;
        self.class.get(m.pattern().as_usize()).copied()
    }

    /// Whether a glob-spelled path names a listed command in a bin directory.
    fn glob_names_command(&self, pattern: &[u8]) -> bool {
        BIN_DIRS.iter().any(|dir| {
            self.names.iter().any(|n| {
                let full = [dir.as_bytes(), n.as_bytes()].concat();
                glob(pattern, &full)
            })
        })
    }
}

/// Where a command position was found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// After `;`, `|`, `&` or a line break.
    AfterSeparator,
    /// Inside `$(...)` or backticks.
    Substitution,
}

/// The byte offset of the first command found in the canonical value `v`.
pub(super) fn find(cmds: &Commands, v: &[u8]) -> Option<usize> {
    let mut globs = MAX_GLOBS;
    let mut i = 0;
    while i < v.len() {
        let (ctx, start) = match v[i] {
            b';' | b'|' | b'&' | b'\n' | b'\r' => (Ctx::AfterSeparator, i + 1),
            b'`' => (Ctx::Substitution, i + 1),
            b'$' if v.get(i + 1) == Some(&b'(') => (Ctx::Substitution, i + 2),
            _ => {
                i += 1;
                continue;
            }
        };
        if command_at(cmds, v, start, ctx, &mut globs) {
            return Some(i);
        }
        i = start;
    }
    None
}

/// Blanks the shell splits words on, with `$IFS` / `${IFS}` spelled out.
fn skip_blanks(v: &[u8], mut i: usize) -> usize {
    loop {
        match v.get(i) {
            Some(b' ' | b'\t') => i += 1,
            _ if v[i.min(v.len())..].starts_with(b"${ifs}") => i += 6,
            _ if v[i.min(v.len())..].starts_with(b"$ifs") => i += 4,
            _ => return i,
        }
    }
}

fn command_at(cmds: &Commands, v: &[u8], start: usize, ctx: Ctx, globs: &mut usize) -> bool {
    let mut i = skip_blanks(v, start);
    // A group opened at the command position: `;(id)`, `;{ id; }`.
    while matches!(v.get(i), Some(b'(' | b'{')) {
        i = skip_blanks(v, i + 1);
    }
    // `NAME=value` assignments before the command (at most a few).
    for _ in 0..4 {
        let Some((word, end, _)) = shell_word(v, i) else {
            return false;
        };
        if is_assignment(&word.text) {
            i = skip_blanks(v, end);
            continue;
        }
        return judge(cmds, v, &word, end, ctx, globs);
    }
    false
}

fn is_assignment(word: &[u8]) -> bool {
    match word.iter().position(|&b| b == b'=') {
        Some(eq) if eq > 0 => word[..eq]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_'),
        _ => false,
    }
}

fn judge(cmds: &Commands, v: &[u8], word: &Word, end: usize, ctx: Ctx, globs: &mut usize) -> bool {
    let text = &word.text;
    if text.is_empty() {
        return false;
    }
    let globbed = text.iter().any(|b| matches!(b, b'?' | b'*' | b'['));
    if globbed {
        if !text.starts_with(b"/") || *globs == 0 {
            return false;
        }
        *globs -= 1;
        return cmds.glob_names_command(text);
    }
    let base = text.rsplit(|&b| b == b'/').next().unwrap_or(text);
    let base = base.rsplit(|&b| b == b'\\').next().unwrap_or(base);
    let Some(class) = cmds.lookup(base) else {
        return false;
    };
    if word.evasive || ctx == Ctx::Substitution {
        return true;
    }
    // A quoted string after a separator (`a; 'strings'`) is data, and so
    // is a MIME parameter (`data:text/plain;base64,...`).
    if word.quoted || v.get(end) == Some(&b',') {
        return false;
    }
    match class {
        Class::Strong => true,
        Class::Word => command_like_args(v, end),
        Class::Loose => false,
    }
}

/// One shell word, expanded the way the shell would (see the module doc).
struct Word {
    text: Vec<u8>,
    /// Quotes, backslashes or empty expansions inside the word.
    evasive: bool,
    /// The word starts with a quote.
    quoted: bool,
}

fn shell_word(v: &[u8], start: usize) -> Option<(Word, usize, ())> {
    let mut text = Vec::new();
    let mut evasive = false;
    let mut i = start;
    let mut quote: Option<u8> = None;
    while i < v.len() && i - start < MAX_WORD {
        let b = v[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            } else if b == b'\\' && q == b'"' && i + 1 < v.len() {
                text.push(v[i + 1]);
                i += 1;
            } else {
                text.push(b);
            }
            i += 1;
            continue;
        }
        match b {
            b'\'' | b'"' => {
                // A quote inside a word (`w'h'o`); a word that *is* one
                // quoted string (`'foo'`) is just a string.
                if !text.is_empty() || has_quote_after(v, i) {
                    evasive = true;
                }
                quote = Some(b);
                i += 1;
            }
            b'\\' if i + 1 < v.len() => {
                evasive = true;
                text.push(v[i + 1]);
                i += 2;
            }
            b'$' => {
                let rest = &v[i + 1..];
                if rest.starts_with(b"'") {
                    // ANSI-C quoting: `$'\x69\x64'`.
                    let (decoded, used) = ansi_c(&rest[1..]);
                    text.extend_from_slice(&decoded);
                    evasive = true;
                    i += 2 + used;
                } else if let Some(n) = empty_expansion(rest) {
                    evasive = true;
                    i += 1 + n;
                } else {
                    break;
                }
            }
            b'`' if v.get(i + 1) == Some(&b'`') => {
                evasive = true;
                i += 2;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b';' | b'|' | b'&' | b'<' | b'>' | b'(' | b')'
            | b'`' | b'{' | b'}' | b',' => break,
            _ => {
                text.push(b);
                i += 1;
            }
        }
    }
    if i - start >= MAX_WORD {
        return None;
    }
    let quoted = matches!(v.get(start), Some(b'\'' | b'"'));
    Some((
        Word {
            text,
            evasive,
            quoted,
        },
        i,
        (),
    ))
}

/// A quote that is closed further on, then followed by more word: the
/// quote splits a word rather than enclosing a phrase.
fn has_quote_after(v: &[u8], i: usize) -> bool {
    let q = v[i];
    let Some(close) = v[i + 1..].iter().take(16).position(|&b| b == q) else {
        return false;
    };
    let after = v.get(i + 2 + close);
    after.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'\'' || *b == b'"')
}

/// `$@`, `$*`, `$1`..`$9`, `${N}`, `${@}`, `$()`: expansions that are empty
/// in an injected command line. Returns the bytes after `$` they take.
fn empty_expansion(rest: &[u8]) -> Option<usize> {
    match rest {
        [b'@' | b'*' | b'0'..=b'9', ..] => Some(1),
        [b'(', b')', ..] => Some(2),
        [b'{', b'@' | b'*' | b'0'..=b'9', b'}', ..] => Some(3),
        _ => None,
    }
}

/// Decodes the body of `$'...'` up to its closing quote: `\xHH`, `\NNN`
/// octal and the usual one-letter escapes. Returns (bytes, input used).
fn ansi_c(s: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() && i < MAX_WORD * 4 {
        match s[i] {
            b'\'' => return (out, i + 1),
            b'\\' if i + 1 < s.len() => {
                let e = s[i + 1];
                if e == b'x' {
                    let hex: Vec<u8> = s[i + 2..]
                        .iter()
                        .take(2)
                        .take_while(|b| b.is_ascii_hexdigit())
                        .copied()
                        .collect();
                    let n = std::str::from_utf8(&hex)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    if let Some(n) = n {
                        out.push(n);
                    }
                    i += 2 + hex.len();
                } else if e.is_ascii_digit() {
                    let oct: Vec<u8> = s[i + 1..]
                        .iter()
                        .take(3)
                        .take_while(|b| (b'0'..=b'7').contains(b))
                        .copied()
                        .collect();
                    let n = std::str::from_utf8(&oct)
                        .ok()
                        .and_then(|o| u8::from_str_radix(o, 8).ok());
                    if let Some(n) = n {
                        out.push(n);
                    }
                    i += 1 + oct.len().max(1);
                } else {
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                    i += 2;
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (out, i)
}

/// What may follow a word-like command for it to read as one: nothing, a
/// separator or redirection, an option, a path, a variable, a quoted string,
/// a number, a Windows switch / drive / `%VAR%`, or a file name with an
/// extension. A plain word ("time he came", "dir of the film") is prose.
fn command_like_args(v: &[u8], end: usize) -> bool {
    let i = skip_blanks(v, end);
    let Some(&b) = v.get(i) else {
        return true;
    };
    if matches!(
        b,
        b';' | b'|'
            | b'&'
            | b'\n'
            | b'\r'
            | b'`'
            | b')'
            | b'<'
            | b'>'
            | b'-'
            | b'/'
            | b'~'
            | b'.'
            | b'$'
            | b'\''
            | b'"'
            | b'\\'
            | b'%'
            | b'0'..=b'9'
    ) {
        return true;
    }
    let rest = &v[i..];
    // `c:\`, `c:/`
    if rest.len() >= 3
        && rest[0].is_ascii_alphabetic()
        && rest[1] == b':'
        && matches!(rest[2], b'\\' | b'/')
    {
        return true;
    }
    // A file name with an extension: `x.sh`, `a.txt`.
    let word_end = rest
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
        .unwrap_or(rest.len());
    let w = &rest[..word_end];
    w.iter()
        .rposition(|&b| b == b'.')
        .is_some_and(|d| d > 0 && d + 1 < w.len())
}

/// Shell glob match (`?`, `*`, `[...]`), iterative with one backtrack point
/// for `*` (linear in practice on these short strings; bounded by MAX_WORD).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'[' => {
                    if let Some(close) = p[pi + 1..].iter().position(|&b| b == b']') {
                        let set = &p[pi + 1..pi + 1 + close];
                        let (neg, set) = match set.first() {
                            Some(b'!' | b'^') => (true, &set[1..]),
                            _ => (false, set),
                        };
                        if set.contains(&s[si]) != neg {
                            pi += close + 2;
                            si += 1;
                            continue;
                        }
                    }
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(s: &str) -> bool {
        let c = Commands::new().expect("lists");
        find(&c, s.as_bytes()).is_some()
    }

    #[test]
    fn lists_load_and_every_entry_is_found() {
        let c = Commands::new().expect("lists");
        assert!(c.names.len() > 250);
        for n in &c.names {
            assert!(c.lookup(n.as_bytes()).is_some(), "{n}");
        }
        assert_eq!(c.lookup(b"python3x"), None);
    }

    #[test]
    fn evasions_are_undone() {
        for a in [
            "x;w'h'o'am'i",
            "x;c\\at /etc/hostname",
            "x$(cat /etc/hostname)",
            "x|wh$@oami",
            "x;who$()ami",
            "x;un$9ame -a",
            "x;$'\\x77\\x68\\x6f\\x61\\x6d\\x69'",
            "x;/???/?name -a",
            "x;/u?r/b?n/id",
            "x;${ifs}uname${ifs}-a",
            "x&&getent passwd",
            "x;dmesg",
            "x`id`",
            "x$(sleep 5)",
            "x;(compgen -c)",
            "x;a=1 b=2 journalctl -n5",
            "x&dir c:\\",
            "x|type c:\\boot.ini",
            "x;find / -perm -4000",
        ] {
            assert!(hit(a), "{a}");
        }
    }

    #[test]
    fn prose_and_data_pass() {
        for b in [
            "hello; time he came",
            "rock & roll; more than music",
            "Tom & Jerry",
            "a list (ssh keys) here",
            "Q&A: is curl better?",
            "one; two; three",
            "see `README` for details",
            "x; find the way home",
            "Henry VI; cat lovers",
            "x; cat /path/file.gz",
            "data:text/plain;base64,ssbsb3zl",
            "a; dir of the film",
            "price: $5 | tax: $1",
            "'quoted'; 'strings'",
            "user[name]=x&user[email]=y",
        ] {
            assert!(!hit(b), "{b}");
        }
    }

    #[test]
    fn glob_matches_like_the_shell() {
        assert!(glob(b"/???/??t", b"/bin/cat"));
        assert!(glob(b"/u*/b*/id", b"/usr/bin/id"));
        assert!(glob(b"/bin/[c]at", b"/bin/cat"));
        assert!(!glob(b"/???/??t", b"/usr/bin/cat"));
        assert!(!glob(b"/b[!i]n/cat", b"/bin/cat"));
    }

    #[test]
    fn hostile_values_stay_linear() {
        let c = Commands::new().expect("lists");
        let t = std::time::Instant::now();
        for s in [
            ";".repeat(1 << 20),
            ";'".repeat(1 << 19),
            ";$'".repeat(1 << 18),
            "|/?*".repeat(1 << 18),
            ";a=b ".repeat(1 << 17),
        ] {
            let _ = find(&c, s.as_bytes());
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
    }
}
