//! The controller's certificate authority (rcgen): the CA itself, the controller's server
//! certificate, node client certificates from a CSR or as a one-step bundle, and reading back
//! what a certificate says (name, serial, usages, expiry).
//!
//! Node certificates carry the node name as subject common name and only the client-auth
//! extended key usage. When signing a CSR only its public key is used: name, validity and usages
//! are set here, never taken from the request.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::ParsedExtension;

use crate::name::validate_node_name;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    InvalidName(String),
    #[error("the CSR names {csr:?} but the certificate is for {node:?}")]
    CsrNameMismatch { csr: String, node: String },
    #[error("not a PEM certificate")]
    NotPem,
    #[error("unparseable certificate: {0}")]
    Parse(String),
    #[error("server certificate needs at least one subject alternative name")]
    NoSans,
    #[error("validity ends before it starts")]
    EmptyValidity,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour before `now` (tolerating clock skew between hosts) to `days` after it.
    pub fn days_from(now: OffsetDateTime, days: u32) -> Validity {
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), CaError> {
        if self.not_after <= self.not_before {
            return Err(CaError::EmptyValidity);
        }
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        Ok(())
    }
}

/// A CA certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate this CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// The private key, when it was generated here (bundle, server certificate).
    pub key_pem: Option<String>,
    pub info: CertInfo,
}

/// What the link cares about in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: Option<String>,
    /// Lower-case hex without leading zero bytes; the key of the revocation list.
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub client_auth: bool,
    pub server_auth: bool,
    pub is_ca: bool,
}

impl CertInfo {
    /// Seconds until expiry at `now_unix` (negative once expired).
    pub fn expires_in(&self, now_unix: i64) -> i64 {
        self.not_after_unix - now_unix
    }
}

fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Parse("no randomness for a serial number".into()))?;
    // Positive and without a leading zero byte, so its hex form is canonical.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// Creates a self-signed CA that may sign end-entity certificates only.
pub fn create_ca(name: &str, validity: Validity) -> Result<CaMaterial, CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    validity.apply(&mut params)?;
    params.distinguished_name = common_name(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issuer(ca: &CaMaterial) -> Result<Issuer<'static, KeyPair>, CaError> {
    let key = KeyPair::from_pem(&ca.key_pem)?;
    Ok(Issuer::from_ca_cert_pem(&ca.cert_pem, key)?)
}

fn end_entity_params(
    cn: &str,
    validity: Validity,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    validity.apply(&mut params)?;
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// The controller's server certificate with a fresh key; `sans` are DNS names or IP addresses.
pub fn issue_server_cert(
    ca: &CaMaterial,
    sans: &[String],
    validity: Validity,
) -> Result<Issued, CaError> {
    let first = sans.first().ok_or(CaError::NoSans)?;
    let mut params = end_entity_params(first, validity, ExtendedKeyUsagePurpose::ServerAuth)?;
    params.subject_alt_names = CertificateParams::new(sans.to_vec())?.subject_alt_names;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer(ca)?)?;
    issued(cert.pem(), Some(key.serialize_pem()))
}

/// What a controller's peer certificate's common name starts with: never a valid node name
/// (`:` is not allowed in one), so a node's certificate can never pass for a controller's and
/// a controller's is refused on the agent link.
pub const CONTROLLER_CN_PREFIX: &str = "controller:";

/// A controller's peer certificate (controllers of one cluster forwarding actions to each other
/// over mutual TLS) with a fresh key: common name `controller:<id>`, both the server-auth and
/// the client-auth extended key usages, `sans` (DNS names or IP addresses) naming where its
/// peer endpoint is reached.
pub fn issue_controller_cert(
    ca: &CaMaterial,
    id: &str,
    sans: &[String],
    validity: Validity,
) -> Result<Issued, CaError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(CaError::InvalidName(format!(
            "controller id {id:?}: 1 to 64 letters, digits, '.', '-' or '_'"
        )));
    }
    if sans.is_empty() {
        return Err(CaError::NoSans);
    }
    let mut params = end_entity_params(
        &format!("{CONTROLLER_CN_PREFIX}{id}"),
        validity,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ClientAuth);
    params.subject_alt_names = CertificateParams::new(sans.to_vec())?.subject_alt_names;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer(ca)?)?;
    issued(cert.pem(), Some(key.serialize_pem()))
}

/// A node's key and a CSR naming it, generated on the node.
pub fn create_csr(node: &str) -> Result<(String, String), CaError> {
    validate_node_name(node).map_err(CaError::InvalidName)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(node);
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Signs a node's CSR for `node`: only the CSR's public key (and its proof of possession) is
/// used. A CSR naming a different node is refused, as it is most likely the wrong file.
pub fn sign_node_csr(
    ca: &CaMaterial,
    csr_pem: &str,
    node: &str,
    validity: Validity,
) -> Result<Issued, CaError> {
    validate_node_name(node).map_err(CaError::InvalidName)?;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    if let Some(value) = csr.params.distinguished_name.get(&DnType::CommonName) {
        let csr_name = match value {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
            rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
            other => format!("{other:?}"),
        };
        if csr_name != node {
            return Err(CaError::CsrNameMismatch {
                csr: csr_name,
                node: node.to_string(),
            });
        }
    }
    let params = end_entity_params(node, validity, ExtendedKeyUsagePurpose::ClientAuth)?;
    let cert = params.signed_by(&csr.public_key, &issuer(ca)?)?;
    issued(cert.pem(), None)
}

/// A node's key and certificate in one step (labs, the demo): the key leaves the controller.
pub fn issue_node_cert(ca: &CaMaterial, node: &str, validity: Validity) -> Result<Issued, CaError> {
    validate_node_name(node).map_err(CaError::InvalidName)?;
    let params = end_entity_params(node, validity, ExtendedKeyUsagePurpose::ClientAuth)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer(ca)?)?;
    issued(cert.pem(), Some(key.serialize_pem()))
}

fn issued(cert_pem: String, key_pem: Option<String>) -> Result<Issued, CaError> {
    let info = inspect_pem(&cert_pem)?;
    Ok(Issued {
        cert_pem,
        key_pem,
        info,
    })
}

/// Reads the first certificate of a PEM text.
pub fn inspect_pem(pem: &str) -> Result<CertInfo, CaError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(CaError::NotPem)?
        .map_err(|_| CaError::NotPem)?;
    inspect_der(&der)
}

/// Reads a DER certificate.
pub fn inspect_der(der: &[u8]) -> Result<CertInfo, CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CaError::Parse(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut info = CertInfo {
        common_name,
        serial: serial_hex(cert.raw_serial()),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        client_auth: false,
        server_auth: false,
        is_ca: cert.is_ca(),
    };
    for ext in cert.extensions() {
        if let ParsedExtension::ExtendedKeyUsage(eku) = ext.parsed_extension() {
            info.client_auth |= eku.client_auth || eku.any;
            info.server_auth |= eku.server_auth || eku.any;
        }
    }
    Ok(info)
}

/// Canonical serial text: lower-case hex without leading zero bytes.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw.get(start..)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn ca() -> CaMaterial {
        create_ca("test CA", Validity::days_from(now(), 10)).unwrap()
    }

    #[test]
    fn csr_signing_sets_name_usage_and_validity_itself() {
        let ca = ca();
        let (key, csr) = create_csr("storage-01").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let issued =
            sign_node_csr(&ca, &csr, "storage-01", Validity::days_from(now(), 30)).unwrap();
        assert!(issued.key_pem.is_none());
        let info = issued.info;
        assert_eq!(info.common_name.as_deref(), Some("storage-01"));
        assert!(info.client_auth && !info.server_auth && !info.is_ca);
        let days = info.expires_in(now().unix_timestamp()) / 86400;
        assert!((29..=30).contains(&days), "{days}");
        assert_eq!(info.serial.len(), 32);
    }

    #[test]
    fn csr_for_another_node_or_garbage_is_refused() {
        let ca = ca();
        let (_, csr) = create_csr("a").unwrap();
        assert!(matches!(
            sign_node_csr(&ca, &csr, "b", Validity::days_from(now(), 1)),
            Err(CaError::CsrNameMismatch { .. })
        ));
        assert!(sign_node_csr(&ca, "garbage", "a", Validity::days_from(now(), 1)).is_err());
        assert!(matches!(
            create_csr("bad name"),
            Err(CaError::InvalidName(_))
        ));
    }

    #[test]
    fn server_and_ca_certificates() {
        let ca = ca();
        let info = inspect_pem(&ca.cert_pem).unwrap();
        assert!(info.is_ca);
        let server = issue_server_cert(
            &ca,
            &["controller.test".into(), "127.0.0.1".into()],
            Validity::days_from(now(), 5),
        )
        .unwrap();
        assert!(server.info.server_auth && !server.info.client_auth);
        assert!(issue_server_cert(&ca, &[], Validity::days_from(now(), 5)).is_err());
    }

    #[test]
    fn past_validity_gives_an_expired_certificate() {
        let ca = ca();
        let past = Validity {
            not_before: now() - Duration::days(10),
            not_after: now() - Duration::days(1),
        };
        let issued = issue_node_cert(&ca, "old", past).unwrap();
        assert!(issued.info.expires_in(now().unix_timestamp()) < 0);
        let empty = Validity {
            not_before: now(),
            not_after: now() - Duration::days(1),
        };
        assert!(matches!(
            issue_node_cert(&ca, "x", empty),
            Err(CaError::EmptyValidity)
        ));
    }

    #[test]
    fn serial_text_is_canonical() {
        assert_eq!(serial_hex(&[0, 0, 0x0a, 0xff]), "0aff");
        assert_eq!(serial_hex(&[0]), "");
    }
}
