//! `--web.config.file`: the exporter-toolkit YAML that node_exporter users already have
//! (TLS server settings, client-certificate auth, bcrypt `basic_auth_users`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| invalid(file, e.to_string()))?
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

/// bcrypt basic auth with a cache of verified credentials: bcrypt costs tens of milliseconds, and
/// Prometheus sends the same credentials every scrape.
pub struct BasicAuth {
    users: HashMap<String, String>,
    verified: Mutex<HashSet<String>>,
}

const VERIFIED_CACHE_LIMIT: usize = 256;

impl BasicAuth {
    fn new(users: HashMap<String, String>) -> Self {
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        use base64::Engine;
        let Some(encoded) = authorization.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(credentials) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = credentials.split_once(':') else {
            return false;
        };
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.contains(&credentials) {
            return true;
        }
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                // Spend the same time as for a known user, so user names cannot be probed.
                let _ = bcrypt::verify(
                    password,
                    "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi",
                );
                false
            }
        };
        if ok {
            if verified.len() >= VERIFIED_CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(credentials);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_rejects_others() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let f = write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  prom: {hash}\n"),
        );
        let cfg = WebConfig::load(&f).unwrap();
        let auth = cfg.basic_auth.unwrap();
        use base64::Engine;
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(auth.check(Some(&enc("prom:s3cret"))));
        assert!(auth.check(Some(&enc("prom:s3cret"))), "cached");
        assert!(!auth.check(Some(&enc("prom:wrong"))));
        assert!(!auth.check(Some(&enc("other:s3cret"))));
        assert!(!auth.check(Some("Basic !!!")));
        assert!(!auth.check(None));
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
