//! The file system side: the canonical static root, and finding the file (and
//! its precompressed variants) for a relative path without ever leaving the
//! root. Everything here is blocking; `serve` runs it on the blocking pool.

use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use super::negotiate::{Accepted, Encoding};

/// A `static_root`, resolved when the config loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoot {
    /// Canonical (absolute, symlink-free), so that a found file is inside the
    /// root exactly when its canonical path starts with this one.
    dir: PathBuf,
    /// `index = "index.html"`: served for a directory path (ending in `/`).
    index: Option<String>,
    /// `fallback = "index.html"`: served, relative to the root, for a
    /// missing page (a path whose last segment has no `.`): single-page apps.
    fallback: Option<PathBuf>,
}

impl StaticRoot {
    /// Checks that `path` is an existing directory. Blocking; config load only.
    pub fn open(path: &Path) -> Result<StaticRoot, String> {
        let dir = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot use {}: {e}", path.display()))?;
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", path.display()));
        }
        Ok(StaticRoot {
            dir,
            index: None,
            fallback: None,
        })
    }

    /// Sets `index` (a plain file name) and `fallback` (a file inside the
    /// root, which must exist). Blocking; config load only.
    pub fn with_site(
        mut self,
        index: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<StaticRoot, (&'static str, String)> {
        if let Some(i) = index {
            if i.is_empty() || i.contains(['/', '\\', '\0']) || i == "." || i == ".." {
                return Err((
                    "index",
                    format!("\"{i}\" must be a file name, e.g. \"index.html\""),
                ));
            }
            self.index = Some(i.to_owned());
        }
        if let Some(f) = fallback {
            let rel = super::path::relative_path(&format!("/{}", f.trim_start_matches('/')))
                .map_err(|e| ("fallback", format!("\"{f}\": {e}")))?;
            match open_inside(&self, &self.dir.join(&rel)) {
                Ok(Some(_)) => self.fallback = Some(rel),
                _ => {
                    return Err((
                        "fallback",
                        format!("\"{f}\" is not a file inside {}", self.dir.display()),
                    ))
                }
            }
        }
        Ok(self)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn index(&self) -> Option<&str> {
        self.index.as_deref()
    }
}

/// What a request finds on a static site: the file for `rel`; for a
/// directory request (`dir`: the path ended in `/`) the index file inside
/// it; for a missing page the fallback. Also the relative path served (its
/// extension gives the content type).
pub fn find_page(
    root: &StaticRoot,
    rel: &Path,
    dir: bool,
    accepted: Accepted,
) -> io::Result<Option<(PathBuf, Found)>> {
    let wanted = match (dir, &root.index) {
        (true, Some(index)) => rel.join(index),
        (true, None) => return Ok(None),
        (false, _) => rel.to_path_buf(),
    };
    if let Some(found) = find(root, &wanted, accepted)? {
        return Ok(Some((wanted, found)));
    }
    let page = wanted
        .file_name()
        .is_none_or(|n| !n.to_string_lossy().contains('.'))
        || dir;
    match &root.fallback {
        Some(fallback) if page => {
            Ok(find(root, fallback, accepted)?.map(|f| (fallback.clone(), f)))
        }
        _ => Ok(None),
    }
}

/// An opened regular file inside the root.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub meta: Metadata,
}

/// The representation chosen for a request.
#[derive(Debug)]
pub struct Found {
    pub opened: Opened,
    /// `Some` when a precompressed variant was chosen.
    pub encoding: Option<Encoding>,
    /// A `.br` or `.gz` variant exists, so the response depends on
    /// Accept-Encoding whichever one was sent.
    pub has_variants: bool,
}

/// Finds `rel` under `root` and picks the best variant the client accepts.
/// `Ok(None)` is "not found" (missing, a directory, or outside the root).
pub fn find(root: &StaticRoot, rel: &Path, accepted: Accepted) -> io::Result<Option<Found>> {
    let Some((canonical, plain)) = open_inside(root, &root.dir.join(rel))? else {
        return Ok(None);
    };
    let mut chosen = None;
    let mut has_variants = false;
    for encoding in Encoding::ALL {
        let mut name = canonical.clone().into_os_string();
        name.push(encoding.suffix());
        // A variant is resolved like any file, so a `.gz` symlink cannot
        // escape the root either.
        if let Some((_, opened)) = open_inside(root, Path::new(&name))? {
            has_variants = true;
            if chosen.is_none() && accepted.accepts(encoding) {
                chosen = Some((opened, encoding));
            }
        }
    }
    Ok(Some(match chosen {
        Some((opened, encoding)) => Found {
            opened,
            encoding: Some(encoding),
            has_variants,
        },
        None => Found {
            opened: plain,
            encoding: None,
            has_variants,
        },
    }))
}

/// Opens `path` if it resolves (after all symlinks) to a regular file inside
/// the root. Not-found-like errors become `None`; others (EACCES, EIO) are
/// returned. A symlink swapped between canonicalize and open is not guarded
/// against: whoever can write into the root can already publish any content.
fn open_inside(root: &StaticRoot, path: &Path) -> io::Result<Option<(PathBuf, Opened)>> {
    let canonical = match std::fs::canonicalize(path) {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !canonical.starts_with(&root.dir) {
        return Ok(None);
    }
    let file = match File::open(&canonical) {
        Ok(f) => f,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some((canonical, Opened { file, meta })))
}

fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENAMETOOLONG))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, StaticRoot) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("priv/static");
        std::fs::create_dir_all(root.join("assets/sub")).unwrap();
        std::fs::write(root.join("assets/app.js"), "plain").unwrap();
        std::fs::write(root.join("assets/app.js.gz"), "gz").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), "secret").unwrap();
        let r = StaticRoot::open(&root).unwrap();
        (tmp, r)
    }

    fn gzip_ok() -> Accepted {
        let mut h = http::HeaderMap::new();
        h.insert("accept-encoding", "gzip".parse().unwrap());
        Accepted::from_headers(&h)
    }

    #[test]
    fn picks_the_gzip_variant_only_when_accepted() {
        let (_tmp, root) = tree();
        let rel = Path::new("assets/app.js");
        let f = find(&root, rel, gzip_ok()).unwrap().unwrap();
        assert_eq!((f.encoding, f.has_variants), (Some(Encoding::Gzip), true));
        assert_eq!(f.opened.meta.len(), 2);
        let f = find(&root, rel, Accepted::default()).unwrap().unwrap();
        assert_eq!((f.encoding, f.has_variants), (None, true));
        assert_eq!(f.opened.meta.len(), 5);
    }

    #[test]
    fn directories_missing_files_and_escaping_symlinks_are_not_found() {
        let (tmp, root) = tree();
        let a = Accepted::default();
        assert!(find(&root, Path::new("assets/sub"), a).unwrap().is_none());
        assert!(find(&root, Path::new("assets/nope.js"), a)
            .unwrap()
            .is_none());
        assert!(find(&root, Path::new("assets/app.js/x"), a)
            .unwrap()
            .is_none());
        let escape = root.dir().join("assets/escape.txt");
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), escape).unwrap();
        assert!(find(&root, Path::new("assets/escape.txt"), a)
            .unwrap()
            .is_none());
        let inside = root.dir().join("assets/alias.js");
        std::os::unix::fs::symlink(root.dir().join("assets/app.js"), inside).unwrap();
        assert!(find(&root, Path::new("assets/alias.js"), a)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_variant_symlink_escaping_the_root_is_ignored() {
        let (tmp, root) = tree();
        std::fs::write(root.dir().join("assets/b.css"), "css").unwrap();
        let link = root.dir().join("assets/b.css.gz");
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), link).unwrap();
        let f = find(&root, Path::new("assets/b.css"), gzip_ok())
            .unwrap()
            .unwrap();
        assert_eq!((f.encoding, f.has_variants), (None, false));
    }

    #[test]
    fn root_must_be_an_existing_directory() {
        let (tmp, _) = tree();
        assert!(StaticRoot::open(&tmp.path().join("nope")).is_err());
        assert!(StaticRoot::open(&tmp.path().join("secret.txt")).is_err());
    }
}
