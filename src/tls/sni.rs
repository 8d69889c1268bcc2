//! The certificate store and the rustls SNI resolver built on it, shared by the
//! TCP TLS listeners and the QUIC endpoint.
//!
//! Lookup order for a client's server name: exact host, then a one-label
//! wildcard (`*.example.com` matches `a.example.com`, not `example.com` nor
//! `a.b.example.com`), then the default certificate (`[tls] cert`). Without a
//! default, an unknown or missing name fails the handshake (rustls sends an
//! alert; no connection is made).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};

/// Certificates by host name. Immutable once built: a new set of certificates
/// comes with a new process (graceful upgrade), which re-reads every file.
#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`, e.g. `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("hosts", &self.hosts())
            .field("default", &self.default.is_some())
            .finish()
    }
}

/// Why a host pattern cannot be added to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("\"{0}\" is not a host name (letters, digits, '-' and '.'; a wildcard is \"*.example.com\")")]
    Invalid(String),
    #[error("\"{0}\" already has a certificate")]
    Duplicate(String),
}

/// Checks a host pattern and returns it normalised (lowercase, no trailing dot).
pub fn normalise_host(pattern: &str) -> Result<String, HostError> {
    let p = pattern.trim_end_matches('.').to_ascii_lowercase();
    let name = p.strip_prefix("*.").unwrap_or(&p);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && (name.contains('.') || !p.starts_with("*."));
    if ok {
        Ok(p)
    } else {
        Err(HostError::Invalid(pattern.to_string()))
    }
}

impl CertStore {
    pub fn set_default(&mut self, cert: Arc<CertifiedKey>) {
        self.default = Some(cert);
    }

    /// Adds `cert` for a host pattern (exact or `*.suffix`).
    pub fn add(&mut self, pattern: &str, cert: Arc<CertifiedKey>) -> Result<(), HostError> {
        let host = normalise_host(pattern)?;
        let (map, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, host.clone()),
        };
        if map.contains_key(&key) {
            return Err(HostError::Duplicate(pattern.to_string()));
        }
        map.insert(key, cert);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    /// Host patterns with their own certificate, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.exact.keys().cloned().collect();
        hosts.extend(self.wildcard.keys().map(|s| format!("*.{s}")));
        hosts.sort();
        hosts
    }

    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The certificate for a client's server name (`None` = fail the handshake).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = server_name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                name.split_once('.')
                    .and_then(|(_, suffix)| self.wildcard.get(suffix))
            })
        });
        found.or(self.default.as_ref()).cloned()
    }
}

/// The rustls resolver over the shared, swappable [`CertStore`] (new
/// handshakes see certificates a reload in place stored).
#[derive(Debug, Clone)]
pub struct SniResolver(pub Arc<arc_swap::ArcSwap<CertStore>>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.0.load().lookup(hello.server_name());
        if cert.is_none() {
            log::debug!(
                "TLS handshake refused: no certificate for server name {:?}",
                hello.server_name()
            );
        }
        cert
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::tls::sign::SigningKey;

    fn dummy(tag: u8) -> Arc<CertifiedKey> {
        // A distinct certificate per tag is enough: lookup never parses it.
        let kp = rcgen::KeyPair::generate().unwrap();
        let der = rustls_pki_types::PrivateKeyDer::try_from(kp.serialize_der()).unwrap();
        pingora::tls::install_default_crypto_provider();
        let provider = pingora::tls::CryptoProvider::get_default().unwrap();
        let key: Arc<dyn SigningKey> = provider.key_provider.load_private_key(der).unwrap();
        Arc::new(CertifiedKey::new(
            vec![rustls_pki_types::CertificateDer::from(vec![tag])],
            key,
        ))
    }

    fn tag(c: Option<Arc<CertifiedKey>>) -> Option<u8> {
        c.map(|c| c.cert[0].as_ref()[0])
    }

    #[test]
    fn exact_beats_wildcard_beats_default() {
        let mut s = CertStore::default();
        s.add("a.example.com", dummy(1)).unwrap();
        s.add("*.example.com", dummy(2)).unwrap();
        s.set_default(dummy(9));
        assert_eq!(tag(s.lookup(Some("a.example.com"))), Some(1));
        assert_eq!(tag(s.lookup(Some("A.Example.COM."))), Some(1));
        assert_eq!(tag(s.lookup(Some("b.example.com"))), Some(2));
        // a wildcard covers exactly one label
        assert_eq!(tag(s.lookup(Some("example.com"))), Some(9));
        assert_eq!(tag(s.lookup(Some("x.b.example.com"))), Some(9));
        assert_eq!(tag(s.lookup(None)), Some(9));
    }

    #[test]
    fn without_default_unknown_names_get_nothing() {
        let mut s = CertStore::default();
        s.add("a.test", dummy(1)).unwrap();
        assert_eq!(tag(s.lookup(Some("b.test"))), None);
        assert_eq!(tag(s.lookup(None)), None);
    }

    #[test]
    fn bad_and_duplicate_hosts_are_refused() {
        let mut s = CertStore::default();
        s.add("a.test", dummy(1)).unwrap();
        assert_eq!(
            s.add("A.TEST", dummy(2)),
            Err(HostError::Duplicate("A.TEST".into()))
        );
        for bad in [
            "",
            "*",
            "*.com.",
            "a b.test",
            "-a.test",
            "a..test",
            "*.*.test",
            "a.test:443",
        ] {
            assert!(normalise_host(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(normalise_host("*.Example.com").unwrap(), "*.example.com");
    }
}
