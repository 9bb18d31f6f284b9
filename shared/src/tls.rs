//! rustls configurations of the link, for quinn: TLS 1.3 only, the ring provider set
//! explicitly, ALPN `nodewarden/1`, mutual authentication against the controller's CA; and of the
//! controller's HTTPS server ([`https_server_config`]: TLS 1.3, no client certificate).
//!
//! The controller's client verifier accepts only a certificate that chains to the CA, is within
//! its validity, carries the client-auth extended key usage (present, not merely allowed by its
//! absence), names a valid node, and whose serial is not in the [`RevokedSet`].

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use crate::ca::{self, CertInfo};
use crate::name::validate_node_name;
use crate::protocol::ALPN;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// The crypto provider of every link configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a certificate serial (canonical hex, see [`ca::serial_hex`]) is revoked; consulted
/// on every handshake. The controller's implementation re-reads its list file when it changed.
pub trait Revocation: Send + Sync + std::fmt::Debug {
    fn is_revoked(&self, serial: &str) -> bool;
}

/// A plain in-memory revoked list, shared between the verifier and whoever updates it.
#[derive(Debug, Clone, Default)]
pub struct RevokedSet(Arc<RwLock<BTreeSet<String>>>);

impl RevokedSet {
    pub fn replace(&self, serials: BTreeSet<String>) {
        match self.0.write() {
            Ok(mut g) => *g = serials,
            Err(poisoned) => *poisoned.into_inner() = serials,
        }
    }

    pub fn contains(&self, serial: &str) -> bool {
        match self.0.read() {
            Ok(g) => g.contains(serial),
            Err(poisoned) => poisoned.into_inner().contains(serial),
        }
    }
}

impl Revocation for RevokedSet {
    fn is_revoked(&self, serial: &str) -> bool {
        self.contains(serial)
    }
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        what,
        reason: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_pem, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// A certificate and its key, PEM.
pub struct Identity<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// The controller's configuration: requires a node certificate from `ca_pem`; its own
/// certificate is chosen per handshake by `resolver` (the controller's re-reads its files when
/// they change; [`single`] for a fixed pair).
pub fn server_config(
    ca_pem: &str,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    revoked: Arc<dyn Revocation>,
) -> Result<rustls::ServerConfig, TlsError> {
    verifying_server_config(ca_pem, resolver, revoked, PeerKind::Node, ALPN)
}

/// TLS 1.3 requiring a client certificate of `kind` from `ca_pem`, not revoked, with `alpn`.
fn verifying_server_config(
    ca_pem: &str,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    revoked: Arc<dyn Revocation>,
    kind: PeerKind,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(NodeCertVerifier {
        inner,
        revoked,
        kind,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![alpn.to_vec()];
    // No session resumption: a resumed session skips the client verifier, and with it the
    // revocation check.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// ALPN of the controller's HTTPS server (API, service discovery, console): HTTP/1.1 only, as
/// its HTTP server speaks nothing else.
pub const HTTP11_ALPN: &[u8] = b"http/1.1";

/// The controller's HTTPS server (`[http] tls`): TLS 1.3 with the ring provider, no client
/// certificate (callers authenticate with bearer tokens inside the encrypted channel); the
/// certificate chosen per handshake by `resolver`, as for [`server_config`].
pub fn https_server_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    Ok(config)
}

/// A fixed certificate and key as a resolver, checked to belong together ([`certified_key`]).
pub fn single(server: Identity<'_>) -> Result<Arc<rustls::sign::SingleCertAndKey>, TlsError> {
    Ok(Arc::new(certified_key(server)?.into()))
}

/// A certificate chain and its key, parsed and checked to belong together (a key of another
/// certificate is an error, not a handshake that fails later).
pub fn certified_key(server: Identity<'_>) -> Result<rustls::sign::CertifiedKey, TlsError> {
    Ok(rustls::sign::CertifiedKey::from_der(
        certs(server.cert_pem, "server certificate")?,
        key(server.key_pem, "server key")?,
        &provider(),
    )?)
}

/// The agent's configuration: verifies the controller against `ca_pem` (the server name is
/// given when connecting) and presents `client` if given. Without a client identity the
/// controller refuses the handshake; tests use that.
pub fn client_config(
    ca_pem: &str,
    client: Option<Identity<'_>>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match client {
        Some(id) => builder.with_client_auth_cert(
            certs(id.cert_pem, "client certificate")?,
            key(id.key_pem, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The peer endpoint of a cluster's controllers (actions forwarded between them): HTTP/1.1
/// over TLS 1.3, requiring a controller's peer certificate from `ca_pem`
/// ([`ca::issue_controller_cert`]), not revoked.
pub fn peer_server_config(
    ca_pem: &str,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    revoked: Arc<dyn Revocation>,
) -> Result<rustls::ServerConfig, TlsError> {
    verifying_server_config(ca_pem, resolver, revoked, PeerKind::Controller, HTTP11_ALPN)
}

/// A controller calling another's peer endpoint: verifies it against `ca_pem` and presents its
/// own peer certificate.
pub fn peer_client_config(
    ca_pem: &str,
    client: Identity<'_>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = client_config(ca_pem, Some(client))?;
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    Ok(config)
}

/// The controller id a peer certificate's common name carries, checked: the prefix, a valid
/// id, and both extended key usages.
fn peer_controller_name(cn: &str, info: &CertInfo) -> Result<String, String> {
    let id = cn
        .strip_prefix(ca::CONTROLLER_CN_PREFIX)
        .ok_or_else(|| format!("{cn:?} is not a controller's peer certificate"))?;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("{cn:?} carries no valid controller id"));
    }
    if !(info.client_auth && info.server_auth) {
        return Err(
            "a controller's peer certificate needs both server-auth and client-auth usages".into(),
        );
    }
    Ok(id.to_string())
}

/// The controller a verified peer certificate (leaf first) names.
pub fn peer_controller(chain: &[CertificateDer<'_>]) -> Result<String, String> {
    let leaf = chain.first().ok_or("no peer certificate")?;
    let info = ca::inspect_der(leaf).map_err(|e| e.to_string())?;
    let cn = info
        .common_name
        .clone()
        .ok_or("peer certificate has no common name")?;
    peer_controller_name(&cn, &info)
}

/// The node a verified peer certificate (leaf first, as quinn's `peer_identity` gives it) names.
pub fn peer_node(chain: &[CertificateDer<'_>]) -> Result<(String, CertInfo), String> {
    let leaf = chain.first().ok_or("no peer certificate")?;
    let info = ca::inspect_der(leaf).map_err(|e| e.to_string())?;
    let name = info
        .common_name
        .clone()
        .ok_or("peer certificate has no common name")?;
    validate_node_name(&name)?;
    Ok((name, info))
}

fn refuse(reason: String) -> rustls::Error {
    // `Error::Other` displays as "other error: <reason>"; a `CertificateError::Other` would
    // show the reason through Debug formatting.
    rustls::Error::Other(OtherError(Arc::new(Refusal(reason))))
}

#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// Whose certificates a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    /// Agents: a node name as common name, client-auth usage.
    Node,
    /// Controllers of the cluster: `controller:<id>`, client-auth and server-auth usages.
    Controller,
}

#[derive(Debug)]
struct NodeCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<dyn Revocation>,
    kind: PeerKind,
}

impl ClientCertVerifier for NodeCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let info = ca::inspect_der(end_entity)
            .map_err(|e| refuse(format!("unparseable client certificate: {e}")))?;
        let who = format!(
            "client certificate {:?} (serial {})",
            info.common_name.as_deref().unwrap_or("?"),
            info.serial
        );
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| match e {
                // Another CA with the same subject name shows up as a bad signature.
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => refuse(format!("{who} is not issued by this controller's CA")),
                rustls::Error::InvalidCertificate(
                    CertificateError::InvalidPurpose
                    | CertificateError::InvalidPurposeContext { .. },
                ) => refuse(format!("{who} lacks the client-auth extended key usage")),
                rustls::Error::InvalidCertificate(
                    ref
                    inner @ (CertificateError::Expired | CertificateError::ExpiredContext { .. }),
                ) => refuse(format!("{who} has expired: {inner}")),
                other => refuse(format!("{who} refused: {other}")),
            })?;
        if !info.client_auth {
            return Err(refuse(format!(
                "{who} lacks the client-auth extended key usage"
            )));
        }
        match (self.kind, &info.common_name) {
            (PeerKind::Node, Some(name)) => {
                validate_node_name(name).map_err(|e| refuse(format!("{who}: {e}")))?
            }
            (PeerKind::Controller, Some(name)) => {
                peer_controller_name(name, &info).map_err(|e| refuse(format!("{who}: {e}")))?;
            }
            (_, None) => return Err(refuse(format!("{who} names no node (no common name)"))),
        }
        if self.revoked.is_revoked(&info.serial) {
            return Err(refuse(format!("{who} is revoked")));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    //! Full TLS 1.3 handshakes in memory between the two configurations.
    use super::*;
    use crate::ca::{CaMaterial, Validity, create_ca, issue_node_cert, issue_server_cert};
    use rustls::pki_types::ServerName;
    use time::{Duration, OffsetDateTime};

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    struct Pki {
        ca: CaMaterial,
        server_cert: String,
        server_key: String,
    }

    fn pki(san: &str) -> Pki {
        let ca = create_ca("CA", Validity::days_from(now(), 10)).unwrap();
        let s = issue_server_cert(&ca, &[san.into()], Validity::days_from(now(), 10)).unwrap();
        Pki {
            server_cert: s.cert_pem,
            server_key: s.key_pem.unwrap(),
            ca,
        }
    }

    /// Runs a handshake; the error of whichever side failed first.
    fn handshake(
        server: impl Into<Arc<rustls::ServerConfig>>,
        client: impl Into<Arc<rustls::ClientConfig>>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        connect(server, client, name).map(drop)
    }

    /// Both ends of a finished handshake.
    fn connect(
        server: impl Into<Arc<rustls::ServerConfig>>,
        client: impl Into<Arc<rustls::ClientConfig>>,
        name: &str,
    ) -> Result<(rustls::ServerConnection, rustls::ClientConnection), rustls::Error> {
        let mut s = rustls::ServerConnection::new(server.into())?;
        let mut c = rustls::ClientConnection::new(
            client.into(),
            ServerName::try_from(name.to_string()).unwrap(),
        )?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
            if !s.is_handshaking() && !c.is_handshaking() {
                return Ok((s, c));
            }
        }
        panic!("handshake did not finish");
    }

    fn server(p: &Pki, revoked: &RevokedSet) -> rustls::ServerConfig {
        server_config(
            &p.ca.cert_pem,
            single(Identity {
                cert_pem: &p.server_cert,
                key_pem: &p.server_key,
            })
            .unwrap(),
            Arc::new(revoked.clone()),
        )
        .unwrap()
    }

    fn client(ca_pem: &str, cert: &str, key: &str) -> rustls::ClientConfig {
        client_config(
            ca_pem,
            Some(Identity {
                cert_pem: cert,
                key_pem: key,
            }),
        )
        .unwrap()
    }

    #[test]
    fn valid_node_is_accepted_and_revocation_applies_to_new_handshakes() {
        let p = pki("controller.test");
        let node = issue_node_cert(&p.ca, "n1", Validity::days_from(now(), 1)).unwrap();
        let key = node.key_pem.clone().unwrap();
        let revoked = RevokedSet::default();
        // The same configurations throughout, as in a running controller and agent: a second
        // handshake must not resume the first session and so skip verification.
        let c = Arc::new(client(&p.ca.cert_pem, &node.cert_pem, &key));
        let s = Arc::new(server(&p, &revoked));
        handshake(s.clone(), c.clone(), "controller.test").unwrap();
        handshake(s.clone(), c.clone(), "controller.test").unwrap();
        revoked.replace([node.info.serial.clone()].into());
        let err = handshake(s, c, "controller.test").unwrap_err();
        assert!(err.to_string().contains("is revoked"), "{err}");
    }

    /// The peer endpoint takes controllers' certificates only, and the agent link refuses them.
    #[test]
    fn controllers_certificates_open_the_peer_endpoint_and_nothing_else() {
        let p = pki("ops2.test");
        let peer = |id: &str, san: &str| {
            let c = crate::ca::issue_controller_cert(
                &p.ca,
                id,
                &[san.to_string()],
                Validity::days_from(now(), 1),
            )
            .unwrap();
            let key = c.key_pem.clone().unwrap();
            (c, key)
        };
        let (ops2, ops2_key) = peer("ops2", "ops2.test");
        let (ops1, ops1_key) = peer("ops1", "ops1.test");
        assert_eq!(ops1.info.common_name.as_deref(), Some("controller:ops1"));
        assert!(ops1.info.client_auth && ops1.info.server_auth);
        let revoked = RevokedSet::default();
        let endpoint = Arc::new(
            peer_server_config(
                &p.ca.cert_pem,
                single(Identity {
                    cert_pem: &ops2.cert_pem,
                    key_pem: &ops2_key,
                })
                .unwrap(),
                Arc::new(revoked.clone()),
            )
            .unwrap(),
        );
        let as_peer = |cert: &str, key: &str| {
            peer_client_config(
                &p.ca.cert_pem,
                Identity {
                    cert_pem: cert,
                    key_pem: key,
                },
            )
            .unwrap()
        };
        let (s, _) = connect(
            endpoint.clone(),
            as_peer(&ops1.cert_pem, &ops1_key),
            "ops2.test",
        )
        .unwrap();
        let chain = s.peer_certificates().unwrap();
        assert_eq!(peer_controller(chain).unwrap(), "ops1");
        // A node's certificate is refused there.
        let node = issue_node_cert(&p.ca, "n1", Validity::days_from(now(), 1)).unwrap();
        let err = handshake(
            endpoint.clone(),
            as_peer(&node.cert_pem, node.key_pem.as_deref().unwrap()),
            "ops2.test",
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a controller"), "{err}");
        // A revoked controller too.
        revoked.replace([ops1.info.serial.clone()].into());
        let err = handshake(endpoint, as_peer(&ops1.cert_pem, &ops1_key), "ops2.test").unwrap_err();
        assert!(err.to_string().contains("is revoked"), "{err}");
        // And a controller's certificate on the agent link is no node.
        let err = handshake(
            server(&p, &RevokedSet::default()),
            client(&p.ca.cert_pem, &ops1.cert_pem, &ops1_key),
            "ops2.test",
        )
        .unwrap_err();
        assert!(err.to_string().contains("node name"), "{err}");
    }

    #[test]
    fn refusals_say_why() {
        let p = pki("controller.test");
        let revoked = RevokedSet::default();
        let other = pki("controller.test");
        let foreign = issue_node_cert(&other.ca, "n1", Validity::days_from(now(), 1)).unwrap();
        let past = Validity {
            not_before: now() - Duration::days(3),
            not_after: now() - Duration::days(1),
        };
        let expired = issue_node_cert(&p.ca, "n1", past).unwrap();
        let cases = [
            (foreign, "not issued by this controller's CA"),
            (expired, "has expired"),
        ];
        for (cert, want) in cases {
            let c = client(
                &p.ca.cert_pem,
                &cert.cert_pem,
                cert.key_pem.as_deref().unwrap(),
            );
            let err = handshake(server(&p, &revoked), c, "controller.test").unwrap_err();
            assert!(err.to_string().contains(want), "{err} !~ {want}");
        }
        // A server certificate used as a client certificate: wrong usage.
        let c = client(&p.ca.cert_pem, &p.server_cert, &p.server_key);
        let err = handshake(server(&p, &revoked), c, "controller.test").unwrap_err();
        assert!(err.to_string().contains("client-auth"), "{err}");
        // No certificate at all.
        let c = client_config(&p.ca.cert_pem, None).unwrap();
        let err = handshake(server(&p, &revoked), c, "controller.test").unwrap_err();
        assert!(err.to_string().contains("no certificates"), "{err}");
    }

    #[test]
    fn agent_refuses_a_controller_with_another_name() {
        let p = pki("other.test");
        let node = issue_node_cert(&p.ca, "n1", Validity::days_from(now(), 1)).unwrap();
        let c = client(
            &p.ca.cert_pem,
            &node.cert_pem,
            node.key_pem.as_deref().unwrap(),
        );
        let err = handshake(server(&p, &RevokedSet::default()), c, "controller.test").unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
    }

    #[test]
    fn https_server_needs_no_client_certificate_and_speaks_http11() {
        let p = pki("127.0.0.1");
        let server = https_server_config(
            single(Identity {
                cert_pem: &p.server_cert,
                key_pem: &p.server_key,
            })
            .unwrap(),
        )
        .unwrap();
        // A browser or Prometheus: trusts the CA, presents nothing, offers h2 and http/1.1.
        let mut browser = client_config(&p.ca.cert_pem, None).unwrap();
        browser.alpn_protocols = vec![b"h2".to_vec(), HTTP11_ALPN.to_vec()];
        let server = Arc::new(server);
        let (s, c) = connect(server.clone(), browser.clone(), "127.0.0.1").unwrap();
        assert_eq!(c.alpn_protocol(), Some(HTTP11_ALPN));
        assert_eq!(s.alpn_protocol(), Some(HTTP11_ALPN));
        // A client of another CA refuses the server; a wrong name too.
        let other = pki("127.0.0.1");
        let stranger = client_config(&other.ca.cert_pem, None).unwrap();
        assert!(handshake(server.clone(), stranger, "127.0.0.1").is_err());
        assert!(handshake(server, browser, "controller.example").is_err());
    }

    #[test]
    fn https_server_refuses_a_key_of_another_certificate() {
        let p = pki("127.0.0.1");
        let other = pki("127.0.0.1");
        let e = single(Identity {
            cert_pem: &p.server_cert,
            key_pem: &other.server_key,
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::Rustls(_)), "{e}");
        let e = single(Identity {
            cert_pem: "not a certificate",
            key_pem: &p.server_key,
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("server certificate"), "{e}");
    }

    #[test]
    fn peer_node_reads_the_common_name() {
        let p = pki("c");
        let node = issue_node_cert(&p.ca, "storage-7", Validity::days_from(now(), 1)).unwrap();
        let der = certs(&node.cert_pem, "t").unwrap();
        let (name, info) = peer_node(&der).unwrap();
        assert_eq!(name, "storage-7");
        assert_eq!(info.serial, node.info.serial);
        assert!(peer_node(&[]).is_err());
    }
}
