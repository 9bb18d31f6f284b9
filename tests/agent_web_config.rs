//! `--web.config.file`: TLS with client certificates and bcrypt basic auth refuse scrapes that
//! lack them. A real TLS client (curl) talks to the agent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nodewarden_tests::{ChildGuard, bin_path, free_port, service, wait_for};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pki {
        ca_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(pki: &Pki, sans: &[&str], usage: ExtendedKeyUsagePurpose, dir: &Path, stem: &str) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &pki.issuer).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}

/// curl's HTTP status for a scrape (0 when the TLS handshake or connection failed).
fn curl_status(url: &str, args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn tls_client_certificates_and_basic_auth_refuse_unauthenticated_scrapes() {
    // curl comes with the test command's packages; require it like a service.
    if service("NW_TEST_NODE_EXPORTER_URL").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = ca("nodewarden test CA");
    let other = ca("some other CA");
    std::fs::write(d.join("ca.pem"), &good.ca_pem).unwrap();
    leaf(
        &good,
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        d,
        "server",
    );
    leaf(
        &good,
        &["prometheus"],
        ExtendedKeyUsagePurpose::ClientAuth,
        d,
        "client",
    );
    leaf(
        &other,
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
        d,
        "foreign",
    );
    let hash = bcrypt::hash("scrape-secret", 4).unwrap();
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();

    let port = free_port();
    let _agent = ChildGuard::spawn(
        Command::new(bin_path("nodewarden-agent"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.config.file={}", d.join("web.yml").display()))
            .stdout(Stdio::null()),
    );
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca_arg = d.join("ca.pem").display().to_string();
    let cert = d.join("client.pem").display().to_string();
    let key = d.join("client.key").display().to_string();
    let fcert = d.join("foreign.pem").display().to_string();
    let fkey = d.join("foreign.key").display().to_string();
    let full = [
        "--cacert",
        &ca_arg,
        "--cert",
        &cert,
        "--key",
        &key,
        "-u",
        "prometheus:scrape-secret",
    ];
    wait_for("the agent's TLS endpoint", Duration::from_secs(20), || {
        (curl_status(&url, &full) == 200).then_some(())
    });

    assert_eq!(
        curl_status(
            &url,
            &["--cacert", &ca_arg, "-u", "prometheus:scrape-secret"]
        ),
        0,
        "no client certificate"
    );
    assert_eq!(
        curl_status(
            &url,
            &[
                "--cacert",
                &ca_arg,
                "--cert",
                &fcert,
                "--key",
                &fkey,
                "-u",
                "prometheus:scrape-secret"
            ]
        ),
        0,
        "client certificate from another CA"
    );
    assert_eq!(
        curl_status(&url, &["--cacert", &ca_arg, "--cert", &cert, "--key", &key]),
        401,
        "no password"
    );
    assert_eq!(
        curl_status(
            &url,
            &[
                "--cacert",
                &ca_arg,
                "--cert",
                &cert,
                "--key",
                &key,
                "-u",
                "prometheus:wrong"
            ]
        ),
        401,
        "wrong password"
    );
    // A client that connects and never starts its handshake: the scrapes above and below go
    // on beside it, and the agent drops it once the handshake timeout has passed.
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let opened = std::time::Instant::now();
    let plain = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(curl_status(&plain, &[]), 0, "plain HTTP to a TLS port");
    // And the good scrape really carries metrics.
    let out = Command::new("curl")
        .args([
            "-sf",
            "--cacert",
            &ca_arg,
            "--cert",
            &cert,
            "--key",
            &key,
            "-u",
            "prometheus:scrape-secret",
            &url,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("node_load1 "));
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let read = std::io::Read::read(&mut &silent, &mut [0u8; 16]);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the silent connection was not closed by the agent: {read:?}"
    );
    let held = opened.elapsed();
    assert!(
        held >= Duration::from_secs(9) && held < Duration::from_secs(30),
        "closed after {held:?}, expected the 10 s handshake timeout"
    );
}
