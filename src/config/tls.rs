//! Validation of `[tls]` into a [`TlsPlan`]: listen addresses, certificate
//! files (read and checked here, so `bext check` catches a missing file or a
//! key that belongs to another certificate), SNI host names, redirect and HSTS.

use std::net::SocketAddr;
use std::path::Path;

use http::HeaderValue;

use super::plan::Errors;
use super::user::TlsSection;
use crate::tls::certs::{self, CertError};
use crate::tls::{CertStore, TlsPlan};

pub(super) fn compile(
    errs: &mut Errors,
    base: &Path,
    t: TlsSection,
    plain_listen: &[SocketAddr],
) -> Option<TlsPlan> {
    let before = errs.count();
    let listen = compile_listen(errs, t.listen, plain_listen);
    let mut store = CertStore::default();

    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            if let Some(ck) = load(errs, base, "tls.cert", cert, "tls.key", key) {
                store.set_default(ck);
            }
        }
        (Some(_), None) => errs.push("tls.key", "missing: `cert` needs its private key"),
        (None, Some(_)) => errs.push("tls.cert", "missing: `key` needs its certificate"),
        (None, None) => {}
    }
    for (i, c) in t.certificates.iter().enumerate() {
        let key = format!("tls.certificates[{i}]");
        if c.hosts.is_empty() {
            errs.push(
                format!("{key}.hosts"),
                "at least one host name is required (e.g. [\"example.com\", \"*.example.com\"])",
            );
        }
        let Some(ck) = load(
            errs,
            base,
            &format!("{key}.cert"),
            &c.cert,
            &format!("{key}.key"),
            &c.key,
        ) else {
            continue;
        };
        for (j, host) in c.hosts.iter().enumerate() {
            if let Err(e) = store.add(host, ck.clone()) {
                errs.push(format!("{key}.hosts[{j}]"), e.to_string());
            }
        }
    }
    if t.cert.is_none() && t.key.is_none() && t.certificates.is_empty() {
        errs.push(
            "tls",
            "no certificate: set `cert` and `key` (the default), or add [[tls.certificates]]",
        );
    }

    let redirect_http = t.redirect_http.unwrap_or(false);
    let redirect_status = match t.redirect_status {
        None | Some(308) => 308,
        Some(301) => 301,
        Some(other) => {
            errs.push(
                "tls.redirect_status",
                format!("{other} is not 301 or 308 (308 keeps the method and body)"),
            );
            308
        }
    };
    let hsts = t.hsts.and_then(|v| match check_hsts(&v) {
        Ok(h) => Some(h),
        Err(reason) => {
            errs.push("tls.hsts", reason);
            None
        }
    });
    if errs.count() != before {
        return None;
    }
    Some(TlsPlan {
        listen,
        certs: std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(store)),
        http3: t.http3.unwrap_or(false),
        redirect_status: redirect_http.then_some(redirect_status),
        hsts,
    })
}

fn compile_listen(
    errs: &mut Errors,
    listen: Option<Vec<String>>,
    plain_listen: &[SocketAddr],
) -> Vec<SocketAddr> {
    let Some(listen) = listen.filter(|l| !l.is_empty()) else {
        errs.push(
            "tls.listen",
            "missing: at least one IP:port is required (e.g. [\"0.0.0.0:443\"])",
        );
        return vec![];
    };
    listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a.parse::<SocketAddr>() {
            Ok(addr) if plain_listen.contains(&addr) => {
                errs.push(
                    format!("tls.listen[{i}]"),
                    format!("{addr} is also in server.listen; TLS needs its own port"),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                errs.push(
                    format!("tls.listen[{i}]"),
                    format!("\"{a}\" is not an IP:port address (e.g. \"0.0.0.0:443\")"),
                );
                None
            }
        })
        .collect()
}

fn load(
    errs: &mut Errors,
    base: &Path,
    cert_key: &str,
    cert: &str,
    key_key: &str,
    key: &str,
) -> Option<std::sync::Arc<pingora::tls::sign::CertifiedKey>> {
    let (cert_path, key_path) = (base.join(cert), base.join(key));
    match certs::load_pair(&cert_path, &key_path) {
        Ok(ck) => Some(ck),
        Err(e) => {
            let name = if is_key_problem(&e, &key_path) {
                key_key
            } else {
                cert_key
            };
            errs.push(name, e.to_string());
            None
        }
    }
}

fn is_key_problem(e: &CertError, key_path: &Path) -> bool {
    e.path() == key_path
}

/// `max-age=N` with optional `includeSubDomains` / `preload`.
fn check_hsts(v: &str) -> Result<HeaderValue, String> {
    let has_max_age = v.split(';').any(|d| {
        d.trim()
            .to_ascii_lowercase()
            .strip_prefix("max-age=")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if !has_max_age {
        return Err(format!(
            "\"{v}\" has no max-age (e.g. \"max-age=31536000; includeSubDomains\")"
        ));
    }
    HeaderValue::from_str(v).map_err(|_| format!("\"{v}\" is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::load_str;

    fn pair(dir: &Path, name: &str, host: &str) {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), ck.cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), ck.key_pair.serialize_pem()).unwrap();
    }

    use super::*;

    const BASE: &str = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[upstreams.phoenix]\nnodes = [\"127.0.0.1:4000\"]\n[[route_rules]]\npattern = \"/*\"\nproxy = \"phoenix\"\n";

    fn compile_in(dir: &Path, tls: &str) -> Result<crate::config::Plan, Vec<String>> {
        let file: PathBuf = dir.join("bext.toml");
        load_str(&file, &format!("{BASE}{tls}"))
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn full_tls_section_compiles() {
        let dir = tempfile::tempdir().unwrap();
        pair(dir.path(), "a", "a.test");
        pair(dir.path(), "b", "b.test");
        let plan = compile_in(
            dir.path(),
            "[tls]\nlisten = [\"127.0.0.1:8443\"]\ncert = \"a.crt\"\nkey = \"a.key\"\nhttp3 = true\nredirect_http = true\nhsts = \"max-age=600\"\n[[tls.certificates]]\nhosts = [\"b.test\", \"*.b.test\"]\ncert = \"b.crt\"\nkey = \"b.key\"\n",
        )
        .unwrap();
        let tls = plan.tls.unwrap();
        assert_eq!(tls.https_port(), 8443);
        assert_eq!(tls.redirect_status, Some(308));
        assert!(tls.http3 && tls.certs.load().has_default());
        assert!(tls.certs.load().lookup(Some("x.b.test")).is_some());
    }

    #[test]
    fn bad_files_and_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        pair(dir.path(), "a", "a.test");
        pair(dir.path(), "b", "b.test");
        let e = compile_in(
            dir.path(),
            "[tls]\nlisten = [\"127.0.0.1:8080\"]\ncert = \"a.crt\"\nkey = \"b.key\"\nredirect_status = 302\nhsts = \"preload\"\n[[tls.certificates]]\nhosts = [\"bad host\"]\ncert = \"missing.crt\"\nkey = \"b.key\"\n",
        )
        .unwrap_err();
        let all = e.join("\n");
        assert!(
            all.contains("tls.listen[0]: 127.0.0.1:8080 is also in server.listen"),
            "{all}"
        );
        assert!(all.contains("tls.key: the private key in"), "{all}");
        assert!(
            all.contains("tls.certificates[0].cert: cannot read"),
            "{all}"
        );
        assert!(all.contains("tls.redirect_status: 302"), "{all}");
        assert!(
            all.contains("tls.hsts: \"preload\" has no max-age"),
            "{all}"
        );
        assert!(e
            .iter()
            .all(|l| l.starts_with(&dir.path().join("bext.toml").display().to_string())));
    }

    #[test]
    fn tls_without_certificates_or_listen_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = compile_in(dir.path(), "[tls]\nhttp3 = true\n")
            .unwrap_err()
            .join("\n");
        assert!(e.contains("tls.listen: missing"), "{e}");
        assert!(e.contains("tls: no certificate"), "{e}");
        let e = compile_in(
            dir.path(),
            "[tls]\nlisten = [\"127.0.0.1:1\"]\ncert = \"x\"\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(e.contains("tls.key: missing"), "{e}");
    }
}
