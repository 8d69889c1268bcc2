//! Request body parsers for inspection: url-encoded forms, JSON (any depth,
//! without building a tree) and multipart/form-data. Each walks the bytes it is
//! given once and hands out borrowed slices, so memory stays bounded by the
//! body buffer the caller already holds (at most `waf.inspect_body_limit`).
//! Malformed input is reported, never panics.

/// Splits `a=1&b=2` into (name, value) pairs of raw (still encoded) bytes.
pub fn form_pairs(s: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    s.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| {
        match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &b""[..]),
        }
    })
}

/// One string found in a JSON document.
#[derive(Debug, PartialEq, Eq)]
pub struct JsonString<'a> {
    /// The raw contents between the quotes (escapes still in place; the
    /// normalizer decodes `\uXXXX`).
    pub raw: &'a [u8],
    /// Whether this string is an object key.
    pub is_key: bool,
    /// How many arrays/objects enclose it (a top-level array's elements: 1).
    pub depth: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JsonError {
    Unterminated,
    TooDeep,
}

/// Calls `f` for each string in `s` (keys and values, any nesting). Lenient
/// about structure (so NDJSON and JSON arrays of frames work), strict about
/// strings and nesting depth.
pub fn json_strings<'a>(
    s: &'a [u8],
    max_depth: usize,
    mut f: impl FnMut(JsonString<'a>),
) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(JsonError::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                let mut j = start;
                loop {
                    match s.get(j) {
                        None => return Err(JsonError::Unterminated),
                        Some(b'\\') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                let raw = &s[start..j];
                let next = s[j + 1..].iter().find(|b| !b.is_ascii_whitespace());
                f(JsonString {
                    raw,
                    is_key: next == Some(&b':'),
                    depth,
                });
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// One part of a multipart body.
#[derive(Debug, Default)]
pub struct Part<'a> {
    pub name: &'a [u8],
    pub filename: Option<&'a [u8]>,
    /// Raw header lines of the part, for protocol checks.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub body: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub enum MultipartError {
    NoBoundary,
    /// The closing `--boundary--` never came.
    Unterminated,
    /// A part without the blank line that ends its headers.
    BadPart,
    TooManyParts,
}

/// The `boundary` parameter of a multipart Content-Type.
pub fn boundary(content_type: &[u8]) -> Option<&[u8]> {
    let lower = content_type.to_ascii_lowercase();
    let at = find(&lower, b"boundary=")?;
    let rest = &content_type[at + 9..];
    let rest = match rest.first() {
        Some(b'"') => {
            let end = rest[1..].iter().position(|&b| b == b'"')?;
            &rest[1..1 + end]
        }
        _ => {
            let end = rest
                .iter()
                .position(|&b| b == b';' || b == b',' || b == b' ')
                .unwrap_or(rest.len());
            &rest[..end]
        }
    };
    (!rest.is_empty() && rest.len() <= 200).then_some(rest)
}

/// Substring search (linear time).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// Parses a multipart body into at most `max_parts` parts.
pub fn multipart<'a>(
    body: &'a [u8],
    boundary: &[u8],
    max_parts: usize,
) -> Result<Vec<Part<'a>>, MultipartError> {
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    let Some(first) = find(body, &delim) else {
        return Err(MultipartError::NoBoundary);
    };
    let mut parts = Vec::new();
    let mut pos = first + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        if parts.len() >= max_parts {
            return Err(MultipartError::TooManyParts);
        }
        let Some(next) = find(&body[pos..], &delim) else {
            return Err(MultipartError::Unterminated);
        };
        let chunk = &body[pos..pos + next];
        pos += next + delim.len();
        let chunk = chunk
            .strip_prefix(b"\r\n")
            .or_else(|| chunk.strip_prefix(b"\n"))
            .unwrap_or(chunk);
        let chunk = chunk
            .strip_suffix(b"\r\n")
            .or_else(|| chunk.strip_suffix(b"\n"))
            .unwrap_or(chunk);
        let (head, data) = match find(chunk, b"\r\n\r\n") {
            Some(i) => (&chunk[..i], &chunk[i + 4..]),
            None => match find(chunk, b"\n\n") {
                Some(i) => (&chunk[..i], &chunk[i + 2..]),
                None => return Err(MultipartError::BadPart),
            },
        };
        let mut part = Part {
            body: data,
            ..Part::default()
        };
        for line in head.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let (n, v) = match line.iter().position(|&b| b == b':') {
                Some(i) => (&line[..i], trim(&line[i + 1..])),
                None => (line, &b""[..]),
            };
            if n.eq_ignore_ascii_case(b"content-disposition") {
                part.name = param(v, b"name").unwrap_or(b"");
                part.filename = param(v, b"filename");
            }
            part.headers.push((n, v));
        }
        parts.push(part);
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// `name="x"` / `name=x` in a header value like Content-Disposition.
pub fn param<'a>(v: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    for item in v.split(|&b| b == b';') {
        let item = trim(item);
        let Some(eq) = item.iter().position(|&b| b == b'=') else {
            continue;
        };
        if !trim(&item[..eq]).eq_ignore_ascii_case(key) {
            continue;
        }
        let val = trim(&item[eq + 1..]);
        let val = val
            .strip_prefix(b"\"")
            .map(|r| r.strip_suffix(b"\"").unwrap_or(r))
            .unwrap_or(val);
        return Some(val);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_split() {
        let v: Vec<_> = form_pairs(b"a=1&&b&c=x=y").collect();
        assert_eq!(v, vec![(&b"a"[..], &b"1"[..]), (b"b", b""), (b"c", b"x=y")]);
    }

    #[test]
    fn json_strings_keys_and_values() {
        let mut got = vec![];
        json_strings(br#"{"a": ["x\"y", {"b":1}], "c" : "d"}"#, 64, |s| {
            got.push((String::from_utf8_lossy(s.raw).into_owned(), s.is_key))
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("a".into(), true),
                ("x\\\"y".into(), false),
                ("b".into(), true),
                ("c".into(), true),
                ("d".into(), false)
            ]
        );
    }

    #[test]
    fn json_depth_and_unterminated_are_errors() {
        let deep = "[".repeat(100_000);
        assert_eq!(
            json_strings(deep.as_bytes(), 128, |_| {}),
            Err(JsonError::TooDeep)
        );
        assert_eq!(
            json_strings(br#"{"a": "b"#, 128, |_| {}),
            Err(JsonError::Unterminated)
        );
        assert_eq!(
            json_strings(br#""\"#, 128, |_| {}),
            Err(JsonError::Unterminated)
        );
    }

    #[test]
    fn multipart_parts_and_errors() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nhello\r\n--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\n--b--\r\n";
        let parts = multipart(body, b"b", 10).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, b"t");
        assert_eq!(parts[0].body, b"hello");
        assert_eq!(parts[1].filename, Some(&b"a.txt"[..]));
        let open = b"--b\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nhello";
        assert_eq!(
            multipart(open, b"b", 10).unwrap_err(),
            MultipartError::Unterminated
        );
        assert_eq!(
            multipart(b"nothing", b"b", 10).unwrap_err(),
            MultipartError::NoBoundary
        );
        let many = "--b\r\nA: b\r\n\r\nx\r\n".repeat(50) + "--b--";
        assert_eq!(
            multipart(many.as_bytes(), b"b", 10).unwrap_err(),
            MultipartError::TooManyParts
        );
    }

    #[test]
    fn boundary_forms() {
        assert_eq!(
            boundary(b"multipart/form-data; boundary=abc"),
            Some(&b"abc"[..])
        );
        assert_eq!(
            boundary(b"multipart/form-data; BOUNDARY=\"a b\"; x=1"),
            Some(&b"a b"[..])
        );
        assert_eq!(boundary(b"multipart/form-data"), None);
    }
}
