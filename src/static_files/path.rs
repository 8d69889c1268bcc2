//! URL path → path relative to a static root. Pure string work, no file system:
//! this is the first of two traversal guards (the second, in `lookup`, checks
//! the canonical path of what was actually found against the canonical root).

use std::path::PathBuf;

/// Why a URL path cannot name a file under a static root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path, or percent-decoding gave invalid UTF-8.
    #[error("the request path is not a valid percent-encoded UTF-8 path")]
    Malformed,
    /// A `..` segment, literal or encoded (`%2e%2e`).
    #[error("the request path contains a \"..\" segment")]
    ParentSegment,
    /// NUL, a backslash, or a slash hidden in a segment as `%2F`.
    #[error("the request path contains NUL, a backslash or an encoded slash")]
    ForbiddenChar,
    /// `/` or a path ending in `/`: directories are never listed.
    #[error("the request path names a directory")]
    Directory,
}

impl PathError {
    /// Attempts to step outside the root or smuggle separators are the
    /// client's fault (400); a directory is simply not something we serve (404).
    pub fn status(self) -> u16 {
        match self {
            PathError::Directory => 404,
            _ => 400,
        }
    }
}

/// Like [`relative_path`] for a path that names a directory (`/` or ending
/// in `/`): the directory, relative to the root (empty for the root itself).
pub fn directory_path(raw: &str) -> Result<PathBuf, PathError> {
    match relative_path(raw) {
        Err(PathError::Directory) => {
            let trimmed = raw.trim_end_matches('/');
            if trimmed.is_empty() {
                return Ok(PathBuf::new());
            }
            relative_path(trimmed)
        }
        Ok(p) => Ok(p),
        Err(e) => Err(e),
    }
}

/// Maps the raw (still percent-encoded, query-free) request path to a relative
/// path. The route prefix is kept: `/assets/app.js` → `assets/app.js`, as
/// Phoenix's `Plug.Static` maps it. Empty and `.` segments are dropped.
pub fn relative_path(raw: &str) -> Result<PathBuf, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::Malformed)?;
    let mut out = PathBuf::new();
    for segment in rest.split('/') {
        // Decode per segment so that `%2F` cannot create a separator the
        // checks above never saw.
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| PathError::Malformed)?;
        if decoded.contains(['\0', '\\', '/']) {
            return Err(PathError::ForbiddenChar);
        }
        match decoded.as_ref() {
            "" | "." => {}
            ".." => return Err(PathError::ParentSegment),
            name => out.push(name),
        }
    }
    // Checked after the segments so that `/../` is refused as traversal, not
    // quietly answered as a missing directory (the caller may then look for
    // an index file with [`directory_path`]).
    if out.as_os_str().is_empty() || raw.ends_with('/') {
        return Err(PathError::Directory);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        relative_path(raw).unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn route_prefix_is_kept_and_percent_escapes_decoded() {
        assert_eq!(ok("/assets/app-1a2b.js"), "assets/app-1a2b.js");
        assert_eq!(ok("/assets/my%20file.css"), "assets/my file.css");
        assert_eq!(ok("/assets//./x.png"), "assets/x.png");
        assert_eq!(ok("/caf%C3%A9.txt"), "café.txt");
    }

    #[test]
    fn parent_segments_are_refused_in_every_spelling() {
        for raw in [
            "/assets/../../etc/passwd",
            "/assets/%2e%2e/%2e%2e/etc/passwd",
            "/assets/%2E%2E/x",
            "/assets/.%2e/x",
            "/..",
            "/a/../",
        ] {
            assert_eq!(relative_path(raw), Err(PathError::ParentSegment), "{raw}");
        }
    }

    #[test]
    fn separators_and_nul_smuggled_in_a_segment_are_refused() {
        for raw in [
            "/assets/..%2f..%2fetc/passwd",
            "/assets/%2Fetc%2Fpasswd",
            "/assets/..\\..\\etc\\passwd",
            "/assets/%5c..%5cx",
            "/assets/app.js%00.png",
        ] {
            assert_eq!(relative_path(raw), Err(PathError::ForbiddenChar), "{raw}");
        }
    }

    #[test]
    fn directories_and_malformed_paths_are_not_files() {
        assert_eq!(relative_path("/"), Err(PathError::Directory));
        assert_eq!(relative_path("/assets/"), Err(PathError::Directory));
        assert_eq!(relative_path("//"), Err(PathError::Directory));
        assert_eq!(relative_path("*"), Err(PathError::Malformed));
        assert_eq!(relative_path("/a%ff.js"), Err(PathError::Malformed));
        assert_eq!(PathError::Directory.status(), 404);
        assert_eq!(PathError::ParentSegment.status(), 400);
    }

    #[test]
    fn a_mapped_path_is_always_relative() {
        for raw in ["/etc/passwd", "///etc/passwd", "/C:/x"] {
            assert!(relative_path(raw).unwrap().is_relative(), "{raw}");
        }
    }
}
