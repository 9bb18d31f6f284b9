//! A server certificate and key files (the HTTPS server's, the agent link's), re-read when they
//! change, so that a renewed certificate (`ca server`, a site CA's rotation) is served without a
//! restart. The files are
//! checked at most once per interval, during a handshake; a pair that does not load (half
//! written, a key of another certificate) keeps the previous one in service and is reported
//! once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodewarden_shared::tls::{self, Identity};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often a handshake may look at the files.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Both files' contents, or why one could not be read (naming it). Compared whole, not by
/// modification time, which two quick writes of files of the same size can leave unchanged;
/// they are small.
type Stamp = [Result<Vec<u8>, String>; 2];

#[derive(Debug)]
pub struct CertFiles {
    /// Which server, for the log: `HTTPS` or `link`.
    what: &'static str,
    cert_file: PathBuf,
    key_file: PathBuf,
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    key: Arc<CertifiedKey>,
    /// The files as they were when `key` was loaded, or when a load last failed.
    seen: Stamp,
    checked: Instant,
}

fn stamp(cert_file: &Path, key_file: &Path) -> Stamp {
    [cert_file, key_file].map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
}

/// The pair as `seen` holds it, parsed; errors name the files.
fn load(cert_file: &Path, key_file: &Path, seen: &Stamp) -> Result<CertifiedKey, String> {
    let text = |path: &Path, bytes: &Result<Vec<u8>, String>| -> Result<String, String> {
        let bytes = bytes.as_ref().map_err(Clone::clone)?;
        String::from_utf8(bytes.clone()).map_err(|_| format!("{}: not PEM text", path.display()))
    };
    let cert_pem = text(cert_file, &seen[0])?;
    let key_pem = text(key_file, &seen[1])?;
    tls::certified_key(Identity {
        cert_pem: &cert_pem,
        key_pem: &key_pem,
    })
    .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))
}

impl CertFiles {
    /// Loads the pair; an error names the files and what is wrong with them.
    pub fn load(
        what: &'static str,
        cert_file: &Path,
        key_file: &Path,
        interval: Duration,
    ) -> Result<CertFiles, String> {
        let seen = stamp(cert_file, key_file);
        let key = load(cert_file, key_file, &seen)?;
        Ok(CertFiles {
            what,
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            interval,
            state: Mutex::new(State {
                key: Arc::new(key),
                seen,
                checked: Instant::now(),
            }),
        })
    }

    /// What the certificate served now says (name, validity), for start-up logs and warnings.
    pub fn info(&self) -> Result<nodewarden_shared::ca::CertInfo, String> {
        let key = self.current();
        let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
        nodewarden_shared::ca::inspect_der(leaf).map_err(|e| e.to_string())
    }

    /// The pair to serve now: re-read first when the interval has passed and the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= self.interval {
            state.checked = Instant::now();
            let now = stamp(&self.cert_file, &self.key_file);
            if now != state.seen {
                let loaded = load(&self.cert_file, &self.key_file, &now);
                state.seen = now;
                match loaded {
                    Ok(key) => {
                        tracing::info!(certificate = %self.cert_file.display(), "{} certificate reloaded", self.what);
                        state.key = Arc::new(key);
                    }
                    Err(e) => tracing::warn!(
                        "{} certificate not reloaded, the previous one stays in use: {e}",
                        self.what
                    ),
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewarden_shared::ca::{Validity, create_ca, issue_server_cert};

    fn pair(name: &str) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let ca = create_ca("test CA", Validity::days_from(now, 1)).unwrap();
        let s = issue_server_cert(&ca, &[name.into()], Validity::days_from(now, 1)).unwrap();
        (s.cert_pem, s.key_pem.unwrap())
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].to_vec()
    }

    #[test]
    fn a_replaced_pair_is_served_and_a_broken_one_keeps_the_previous() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = (d.path().join("https.pem"), d.path().join("https.key"));
        let write = |(c, k): &(String, String)| {
            std::fs::write(&cert, c).unwrap();
            std::fs::write(&key, k).unwrap();
        };
        let first = pair("one.example");
        write(&first);
        let files = CertFiles::load("HTTPS", &cert, &key, Duration::ZERO).unwrap();
        let served = leaf(&files.current());
        assert_eq!(files.current().cert[0].as_ref(), served.as_slice());

        // Renewed: the next handshake gets the new pair.
        let second = pair("two.example");
        write(&second);
        let renewed = leaf(&files.current());
        assert_ne!(renewed, served);
        assert_eq!(renewed, x509_der(&second.0));

        // Half written (a new certificate, the old key): refused, the renewed pair stays.
        let third = pair("three.example");
        std::fs::write(&cert, &third.0).unwrap();
        assert_eq!(leaf(&files.current()), renewed);
        // The key follows: now the pair loads.
        std::fs::write(&key, &third.1).unwrap();
        assert_eq!(leaf(&files.current()), x509_der(&third.0));

        // A missing file at start is an error naming it.
        let e =
            CertFiles::load("HTTPS", &d.path().join("none.pem"), &key, Duration::ZERO).unwrap_err();
        assert!(e.contains("none.pem"), "{e}");
    }

    #[test]
    fn files_are_looked_at_once_per_interval() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = (d.path().join("https.pem"), d.path().join("https.key"));
        let first = pair("one.example");
        std::fs::write(&cert, &first.0).unwrap();
        std::fs::write(&key, &first.1).unwrap();
        let files = CertFiles::load("HTTPS", &cert, &key, Duration::from_secs(3600)).unwrap();
        let served = leaf(&files.current());
        let second = pair("two.example");
        std::fs::write(&cert, &second.0).unwrap();
        std::fs::write(&key, &second.1).unwrap();
        assert_eq!(
            leaf(&files.current()),
            served,
            "checked again before the interval"
        );
    }

    /// The DER of a PEM certificate.
    fn x509_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
