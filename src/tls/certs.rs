//! Loading a certificate chain and its private key from PEM files into a
//! rustls [`CertifiedKey`], with errors precise enough for `bext check`.
//!
//! Pingora's own `TlsSettings::build()` panics on unreadable or mismatched
//! files, so every certificate is loaded (and its key checked against the
//! leaf certificate) here, when the config is compiled, and the listeners are
//! only ever given an already-loaded resolver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CryptoProvider, RusTlsError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest certificate or key file read (a chain of a few certificates is ~10 KiB).
const MAX_PEM_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than 1 MiB; is it really a PEM file?")]
    TooLarge { path: PathBuf },
    #[error("{path} contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate { path: PathBuf },
    #[error("{path}: invalid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path} contains no private key (PKCS#8, PKCS#1/RSA or SEC1/EC PEM)")]
    NoKey { path: PathBuf },
    #[error("the private key in {path} cannot be used: {reason}")]
    UnusableKey { path: PathBuf, reason: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl CertError {
    /// The file the problem is in (the key file for a mismatch).
    pub fn path(&self) -> &Path {
        match self {
            CertError::Read { path, .. }
            | CertError::TooLarge { path }
            | CertError::NoCertificate { path }
            | CertError::Pem { path, .. }
            | CertError::NoKey { path }
            | CertError::UnusableKey { path, .. } => path,
            CertError::Mismatch { key, .. } => key,
        }
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, CertError> {
    let meta = std::fs::metadata(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_PEM_FILE {
        return Err(CertError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the chain in `cert` (leaf first) and the key in `key`, and checks that
/// the key belongs to the leaf certificate.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let cert_pem = read_pem(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_pem = read_pem(key).map_err(|e| match e {
        CertError::Read { source, .. } => CertError::Read {
            path: key.to_path_buf(),
            source,
        },
        other => other,
    })?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => CertError::NoKey {
            path: key.to_path_buf(),
        },
        e => CertError::Pem {
            path: key.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or_else(|| CertError::UnusableKey {
        path: key.to_path_buf(),
        reason: "no TLS crypto provider installed".into(),
    })?;
    match CertifiedKey::from_der(chain, private, provider) {
        Ok(ck) => Ok(Arc::new(ck)),
        Err(RusTlsError::InconsistentKeys(_)) => Err(CertError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        Err(e) => Err(CertError::UnusableKey {
            path: key.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str, hosts: &[&str]) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(
            hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a", &["a.test"]);
        let ck = load_pair(&cert, &key).unwrap();
        assert_eq!(ck.cert.len(), 1);
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, _) = write_pair(dir.path(), "a", &["a.test"]);
        let (_, key_b) = write_pair(dir.path(), "b", &["b.test"]);
        let e = load_pair(&cert_a, &key_b).unwrap_err();
        assert!(matches!(e, CertError::Mismatch { .. }), "{e}");
        assert_eq!(e.path(), key_b.as_path());
    }

    #[test]
    fn missing_files_and_swapped_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a", &["a.test"]);
        let e = load_pair(&dir.path().join("nope.crt"), &key).unwrap_err();
        assert!(e.to_string().contains("nope.crt"), "{e}");
        // key file given as the certificate: no certificate in it
        let e = load_pair(&key, &key).unwrap_err();
        assert!(matches!(e, CertError::NoCertificate { .. }), "{e}");
        // certificate given as the key: no key in it
        let e = load_pair(&cert, &cert).unwrap_err();
        assert!(matches!(e, CertError::NoKey { .. }), "{e}");
    }
}
