//! Checks on uploaded file names (multipart `filename=` and the
//! `X-Filename`-style headers upload widgets send): server-side script
//! extensions, restricted server files and PHP session file names.

use super::inspect::Pass;

pub(super) fn is_filename_header(name: &str) -> bool {
    matches!(
        name,
        "x-filename" | "x_filename" | "x.filename" | "x-file-name" | "x-file"
    )
}

/// Upload file names: PHP / JSP extensions and restricted server files.
pub(super) fn filename(pass: &mut Pass, name: &[u8], f: &[u8]) {
    let lower = f.to_ascii_lowercase();
    let base = lower
        .rsplit(|&b| b == b'/' || b == b'\\')
        .next()
        .unwrap_or(&lower);
    let trimmed: &[u8] = {
        let end = base
            .iter()
            .rposition(|&b| !matches!(b, b'.' | b' ' | b'\t'))
            .map_or(0, |e| e + 1);
        &base[..end]
    };
    let compact: Vec<u8> = trimmed.iter().copied().filter(|&b| b != b' ').collect();
    let ext = compact.rsplit(|&b| b == b'.').next().unwrap_or(b"");
    let php_n = ext.starts_with(b"php") && ext[3..].iter().all(u8::is_ascii_digit);
    let php = [
        &b"phtml"[..],
        b"pht",
        b"phar",
        b"phps",
        b"pgif",
        b"shtml",
        b"inc",
        b"phpt",
    ];
    if compact.contains(&b'.') && (php_n || php.contains(&ext)) {
        pass.hit(933010, "filename", name, f, 0, false);
    }
    if compact.contains(&b'.') && (ext == b"jsp" || ext == b"jspx") {
        pass.hit(944010, "filename", name, f, 0, false);
    }
    let restricted = [
        &b".htaccess"[..],
        b".htpasswd",
        b"web.config",
        b".user.ini",
        b"php.ini",
        b".env",
        b".bashrc",
        b".profile",
        b"wp-config",
        b"config.php",
        b"settings.php",
        b"local.xml",
        b".git",
    ];
    if restricted
        .iter()
        .any(|r| super::body::find(&compact, r).is_some())
    {
        pass.hit(932010, "filename", name, f, 0, false);
    }
    // Framework config files (Symfony / Drupal names CRS lists) replaced by
    // an upload: matched on the whole base name only.
    let exact = [
        &b"config.yml"[..],
        b"config_dev.yml",
        b"config_prod.yml",
        b"config_test.yml",
        b"parameters.yml",
        b"routing.yml",
        b"security.yml",
        b"services.yml",
        b"default.settings.php",
        b"settings.local.php",
        b".htdigest",
    ];
    if exact.contains(&compact.as_slice()) {
        pass.hit(932010, "filename", name, f, 0, false);
    }
    if is_php_session_file(trimmed) {
        pass.hit(933080, "filename", name, f, 0, false);
    }
}

/// `sess_` and a session id: the name PHP gives its session files, so an
/// upload under that name overwrites (plants) a session. Only file names are
/// checked: as a form value `sess_...` is just a token.
fn is_php_session_file(base: &[u8]) -> bool {
    base.strip_prefix(b"sess_").is_some_and(|id| {
        id.len() >= 20
            && id
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b',' || b == b'-' || b == b'_')
    })
}
