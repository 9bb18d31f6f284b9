//! MySQL over TLS: rustls (ring) verifies the server against the CA named in the URL.

use std::path::Path;

use nodewarden_controller::store::{Store, StoreConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::support::{PrivateMariaDb, at, node};

/// Writes `<name>.pem` (CA), and a server certificate for 127.0.0.1 signed by it.
fn write_certs(dir: &Path, name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let path = |file: &str| dir.join(format!("{name}-{file}")).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("server.pem"), path("server-key.pem"));
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&cert, server_cert.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    (ca, cert, key)
}

#[tokio::test]
async fn mysql_over_verified_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certs(certs.path(), "good");
    let (other_ca, _, _) = write_certs(certs.path(), "other");
    let Some(server) = PrivateMariaDb::start_with(vec![
        format!("--ssl-ca={ca}"),
        format!("--ssl-cert={cert}"),
        format!("--ssl-key={key}"),
        "--require-secure-transport=ON".to_string(),
    ])
    .await
    else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(data_dir.path());

    config.url = Some(format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}",
        server.url()
    ));
    let store = Store::open(config.clone()).await.expect("open over TLS");
    store.node_connected(node("n1"), at(0)).unwrap();
    store.flush().await.expect("flush over TLS");
    assert_eq!(store.persisted_nodes().await.unwrap().len(), 1);
    store.close().await.unwrap();

    // require_secure_transport: MariaDB refuses the login (1045) without TLS.
    config.url = Some(format!("{}?ssl-mode=DISABLED", server.url()));
    let text = Store::open(config.clone())
        .await
        .err()
        .expect("plain text refused")
        .to_string();
    assert!(text.contains("cannot connect"), "{text}");

    config.url = Some(format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={other_ca}",
        server.url()
    ));
    let text = Store::open(config)
        .await
        .err()
        .expect("unknown CA refused")
        .to_string();
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains(super::support::PRIVATE_PASSWORD), "{text}");
}
