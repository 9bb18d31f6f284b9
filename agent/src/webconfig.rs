//! `--web.config.file`: the exporter-toolkit YAML that node_exporter users already have
//! (TLS server settings, client-certificate auth, bcrypt `basic_auth_users`).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher as _, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{file}: {reason}")]
    Invalid { file: PathBuf, reason: String },
}

fn invalid(file: &Path, reason: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Accepted for compatibility; rustls chooses its own safe suites and curves.
    cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

/// The checked web configuration.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub basic_auth: Option<BasicAuth>,
}

impl WebConfig {
    pub fn load(file: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| invalid(file, e.to_string()))?;
        Self::parse(&text, file)
    }

    /// Checks the text of `file`; the certificate and CA files it names are read relative to
    /// `file`'s directory.
    pub fn parse(text: &str, file: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| invalid(file, e.to_string()))?
        };
        if raw.http_server_config.is_some() {
            tracing::info!(file = %file.display(), "http_server_config is accepted but not used");
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let tls = raw
            .tls_server_config
            .map(|tls| build_tls(file, base, tls))
            .transpose()?;
        let basic_auth = if raw.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &raw.basic_auth_users {
                if bcrypt::HashParts::from_str_checked(hash).is_none() {
                    return Err(invalid(
                        file,
                        format!("basic_auth_users.{user}: not a bcrypt hash"),
                    ));
                }
            }
            Some(BasicAuth::new(raw.basic_auth_users))
        };
        Ok(WebConfig { tls, basic_auth })
    }
}

trait HashCheck {
    fn from_str_checked(hash: &str) -> Option<()>;
}

impl HashCheck for bcrypt::HashParts {
    fn from_str_checked(hash: &str) -> Option<()> {
        hash.parse::<bcrypt::HashParts>().ok().map(|_| ())
    }
}

fn tls_version(
    file: &Path,
    v: &str,
) -> Result<&'static rustls::SupportedProtocolVersion, WebConfigError> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        other => Err(invalid(
            file,
            format!(
                "tls_server_config: TLS version {other:?} is not supported (use TLS12 or TLS13)"
            ),
        )),
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn build_tls(
    file: &Path,
    base: &Path,
    tls: RawTls,
) -> Result<Arc<rustls::ServerConfig>, WebConfigError> {
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Err(invalid(
            file,
            "tls_server_config: cert_file and key_file are both required",
        ));
    };
    if tls.client_allowed_sans.is_some() {
        return Err(invalid(
            file,
            "tls_server_config.client_allowed_sans is not supported",
        ));
    }
    let _ = (
        &tls.cipher_suites,
        &tls.curve_preferences,
        tls.prefer_server_cipher_suites,
    );
    let cert_path = resolve(base, cert_file);
    let key_path = resolve(base, key_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(file, format!("cert_file {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            file,
            format!("cert_file {}: no certificate", cert_path.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| invalid(file, format!("key_file {}: {e}", key_path.display())))?;

    let min = tls_version(file, tls.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = tls_version(file, tls.max_version.as_deref().unwrap_or("TLS13"))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let rank = |x: &rustls::SupportedProtocolVersion| {
                    if x.version == rustls::ProtocolVersion::TLSv1_2 {
                        0
                    } else {
                        1
                    }
                };
                rank(v) >= rank(min) && rank(v) <= rank(max)
            })
            .collect();
    if versions.is_empty() {
        return Err(invalid(
            file,
            "tls_server_config: min_version is above max_version",
        ));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(file, e.to_string()))?;

    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let Some(ca_file) = &tls.client_ca_file else {
                return Err(invalid(
                    file,
                    format!("client_auth_type {auth_type} needs client_ca_file"),
                ));
            };
            let ca_path = resolve(base, ca_file);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca_path)
                .map_err(|e| invalid(file, format!("client_ca_file {}: {e}", ca_path.display())))?
            {
                let cert = cert.map_err(|e| {
                    invalid(file, format!("client_ca_file {}: {e}", ca_path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    invalid(file, format!("client_ca_file {}: {e}", ca_path.display()))
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| invalid(file, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(invalid(
                file,
                format!(
                    "client_auth_type {auth_type} accepts unverified certificates and is refused; use RequireAndVerifyClientCert"
                ),
            ));
        }
        other => return Err(invalid(file, format!("unknown client_auth_type {other:?}"))),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(file, format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// bcrypt basic auth with a cache of verified credentials (bcrypt costs tens of milliseconds, and
/// Prometheus sends the same credentials every scrape) and a short cache of refused ones.
///
/// bcrypt never runs on the metrics runtime's thread: at most [`BCRYPT_WORKERS`] checks run on
/// the blocking pool, at most [`BCRYPT_PENDING`] are admitted (running or waiting); a request
/// beyond that is answered [`Verdict::Busy`] at once. So a flood of wrong passwords costs one
/// blocking thread and never delays a scrape whose credentials are already verified.
pub struct BasicAuth {
    users: HashMap<String, String>,
    verified: Mutex<HashSet<String>>,
    /// Refused credentials by keyed digest (SipHash with this process's random keys: a collision
    /// can only refuse a right password for [`FAILURE_CACHE_TTL`], never admit a wrong one), with
    /// when they were refused.
    refused: Mutex<HashMap<u64, Instant>>,
    refused_keys: RandomState,
    admitted: Arc<tokio::sync::Semaphore>,
    workers: Arc<tokio::sync::Semaphore>,
    /// bcrypt verifications run so far (tests read it to see the caches work).
    bcrypt_runs: AtomicU64,
}

/// What [`BasicAuth::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Too many bcrypt checks already admitted: try again later (503), not a verdict on the
    /// credentials.
    Busy,
}

const VERIFIED_CACHE_LIMIT: usize = 256;
/// bcrypt checks running at once, each on a blocking-pool thread (main.rs sizes the pool).
pub const BCRYPT_WORKERS: usize = 1;
/// bcrypt checks admitted at once (running or waiting for a worker): at tens of milliseconds
/// each, a request admitted last waits well under a second.
pub const BCRYPT_PENDING: usize = 8;
/// How long refused credentials are refused again without bcrypt.
pub const FAILURE_CACHE_TTL: Duration = Duration::from_secs(10);
const FAILURE_CACHE_LIMIT: usize = 1024;
/// What an unknown user's password is checked against, so that user names cannot be probed by
/// timing (exporter-toolkit's dummy hash).
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

impl BasicAuth {
    fn new(users: HashMap<String, String>) -> Self {
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashMap::new()),
            refused_keys: RandomState::new(),
            admitted: Arc::new(tokio::sync::Semaphore::new(BCRYPT_PENDING)),
            workers: Arc::new(tokio::sync::Semaphore::new(BCRYPT_WORKERS)),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// bcrypt verifications run so far.
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    /// Checks an `Authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Verdict {
        use base64::Engine;
        let Some(encoded) = authorization.and_then(|h| h.strip_prefix("Basic ")) else {
            return Verdict::Denied;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return Verdict::Denied;
        };
        let Ok(credentials) = String::from_utf8(decoded) else {
            return Verdict::Denied;
        };
        let Some((user, password)) = credentials.split_once(':') else {
            return Verdict::Denied;
        };
        let key = self.refused_keys.hash_one(&credentials);
        if let Some(verdict) = self.cached(&credentials, key) {
            return verdict;
        }
        let Ok(_admitted) = self.admitted.try_acquire() else {
            return Verdict::Busy;
        };
        let Ok(worker) = self.workers.clone().acquire_owned().await else {
            return Verdict::Busy;
        };
        // Another request may have settled the same credentials while this one waited.
        if let Some(verdict) = self.cached(&credentials, key) {
            return verdict;
        }
        let known = self.users.get(user);
        let hash = known.map_or(DUMMY_HASH, String::as_str).to_string();
        let password = password.to_string();
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        // The worker permit goes with the check, so the bound holds even when the request that
        // asked is dropped (its client went away) while bcrypt runs.
        let matched = tokio::task::spawn_blocking(move || {
            let _worker = worker;
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if matched && known.is_some() {
            let mut verified = lock(&self.verified);
            if verified.len() >= VERIFIED_CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(credentials);
            Verdict::Allowed
        } else {
            let now = Instant::now();
            let mut refused = lock(&self.refused);
            if refused.len() >= FAILURE_CACHE_LIMIT {
                refused.retain(|_, at| now.duration_since(*at) < FAILURE_CACHE_TTL);
                if refused.len() >= FAILURE_CACHE_LIMIT {
                    refused.clear();
                }
            }
            refused.insert(key, now);
            Verdict::Denied
        }
    }

    /// The verdict the caches hold for these credentials, if any.
    fn cached(&self, credentials: &str, key: u64) -> Option<Verdict> {
        if lock(&self.verified).contains(credentials) {
            return Some(Verdict::Allowed);
        }
        let refused = lock(&self.refused);
        match refused.get(&key) {
            Some(at) if at.elapsed() < FAILURE_CACHE_TTL => Some(Verdict::Denied),
            _ => None,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn auth_with(password: &str) -> BasicAuth {
        let mut users = HashMap::new();
        users.insert("prom".to_string(), bcrypt::hash(password, 4).unwrap());
        BasicAuth::new(users)
    }

    fn basic(s: &str) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn basic_auth_checks_bcrypt_and_rejects_others() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let f = write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  prom: {hash}\n"),
        );
        let cfg = WebConfig::load(&f).unwrap();
        let auth = cfg.basic_auth.unwrap();
        assert_eq!(
            auth.check(Some(&basic("prom:s3cret"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.check(Some(&basic("prom:s3cret"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.bcrypt_runs(),
            1,
            "the second check came from the cache"
        );
        assert_eq!(
            auth.check(Some(&basic("prom:wrong"))).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.check(Some(&basic("other:s3cret"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.check(Some("Basic !!!")).await, Verdict::Denied);
        assert_eq!(auth.check(None).await, Verdict::Denied);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refused_credentials_are_refused_again_without_bcrypt() {
        let auth = auth_with("s3cret");
        for _ in 0..5 {
            assert_eq!(
                auth.check(Some(&basic("prom:wrong"))).await,
                Verdict::Denied
            );
        }
        assert_eq!(auth.bcrypt_runs(), 1);
        // An unknown user's password is checked (against the dummy hash) and cached the same way.
        for _ in 0..3 {
            assert_eq!(auth.check(Some(&basic("eve:x"))).await, Verdict::Denied);
        }
        assert_eq!(auth.bcrypt_runs(), 2);
        // The right password is not held back by the refusals.
        assert_eq!(
            auth.check(Some(&basic("prom:s3cret"))).await,
            Verdict::Allowed
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn checks_beyond_the_admitted_bound_are_busy_and_verified_ones_still_pass() {
        let auth = Arc::new(auth_with("s3cret"));
        assert_eq!(
            auth.check(Some(&basic("prom:s3cret"))).await,
            Verdict::Allowed
        );
        // No admitted check may finish (and hand its admission on) before all 40 have asked:
        // the test holds every worker until then.
        let workers = auth
            .workers
            .clone()
            .acquire_many_owned(BCRYPT_WORKERS as u32)
            .await
            .unwrap();
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..40 {
            let auth = auth.clone();
            flood.spawn(async move { auth.check(Some(&basic(&format!("prom:wrong{i}")))).await });
        }
        // Every task has tried for admission once this yields back (current-thread runtime).
        tokio::task::yield_now().await;
        assert_eq!(
            auth.check(Some(&basic("prom:s3cret"))).await,
            Verdict::Allowed
        );
        drop(workers);
        let mut busy = 0;
        let mut denied = 0;
        while let Some(verdict) = flood.join_next().await {
            match verdict.unwrap() {
                Verdict::Busy => busy += 1,
                Verdict::Denied => denied += 1,
                Verdict::Allowed => panic!("a wrong password was allowed"),
            }
        }
        assert_eq!(denied, BCRYPT_PENDING);
        assert_eq!(busy, 40 - BCRYPT_PENDING);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "web.yml",
            "basic_auth_users:\n  prom: plaintext\n",
        );
        let err = WebConfig::load(&f).err().unwrap().to_string();
        assert!(
            err.contains("web.yml") && err.contains("not a bcrypt hash"),
            "{err}"
        );
        let f = write(
            dir.path(),
            "web2.yml",
            "tls_server_config:\n  cert_file: a.pem\n",
        );
        let err = WebConfig::load(&f).err().unwrap().to_string();
        assert!(err.contains("key_file"), "{err}");
        let f = write(dir.path(), "web3.yml", "unknown_key: 1\n");
        let err = WebConfig::load(&f).err().unwrap().to_string();
        assert!(err.contains("unknown_key"), "{err}");
        let f = write(
            dir.path(),
            "web4.yml",
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  client_auth_type: RequireAnyClientCert\n",
        );
        assert!(WebConfig::load(&f).is_err());
    }
}
