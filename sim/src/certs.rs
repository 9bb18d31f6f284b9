//! The simulated fleet's identities: the controller's CA (made once with `nodewarden-controller
//! ca init`) and one node certificate per simulated agent, issued by that CA and cached on disk
//! (keyed by the CA's certificate), so a second run starts at once.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use nodewarden_controller::cadir::CaDir;
use nodewarden_shared::ca::{self, Validity};

/// One simulated node's certificate and key.
pub struct NodeCert {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The node name of agent `i` (0-based).
pub fn node_name(i: usize) -> String {
    format!("sim-{:05}", i + 1)
}

/// Makes the CA directory with `controller ca init` if it is not there yet.
pub fn ensure_ca(controller_bin: &Path, ca_dir: &Path) -> anyhow::Result<()> {
    if ca_dir.join("ca.pem").exists() {
        return Ok(());
    }
    let status = Command::new(controller_bin)
        .args(["ca", "init", "--dir"])
        .arg(ca_dir)
        .args(["--san", "127.0.0.1"])
        .status()
        .with_context(|| format!("running {} ca init", controller_bin.display()))?;
    if !status.success() {
        bail!(
            "{} ca init --dir {} failed",
            controller_bin.display(),
            ca_dir.display()
        );
    }
    Ok(())
}

fn fingerprint(pem: &str) -> String {
    // FNV-1a of the CA certificate: enough to tell caches of different CAs apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pem.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Certificates for agents `0..n`, issued where the cache lacks them.
pub fn node_certs(ca_dir: &Path, cache: &Path, n: usize) -> anyhow::Result<Vec<NodeCert>> {
    let dir = CaDir::new(ca_dir);
    let material = dir
        .ca()
        .with_context(|| format!("reading the CA in {}", ca_dir.display()))?;
    let cache: PathBuf = cache.join(format!("{}-365d", fingerprint(&material.cert_pem)));
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    // A year: the controller warns about certificates with less than 30 days left.
    let validity = Validity::days_from(time::OffsetDateTime::now_utc(), 365);
    let issue = |i: usize| -> anyhow::Result<NodeCert> {
        let name = node_name(i);
        let file = cache.join(format!("{name}.pem"));
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some((cert, key)) = text.split_once("-----BEGIN PRIVATE KEY-----")
        {
            return Ok(NodeCert {
                name,
                cert_pem: cert.to_string(),
                key_pem: format!("-----BEGIN PRIVATE KEY-----{key}"),
            });
        }
        let issued = ca::issue_node_cert(&material, &name, validity)
            .with_context(|| format!("issuing a certificate for {name}"))?;
        let key_pem = issued.key_pem.context("issued without a key")?;
        std::fs::write(&file, format!("{}{}", issued.cert_pem, key_pem))
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(NodeCert {
            name,
            cert_pem: issued.cert_pem,
            key_pem,
        })
    };
    // Both cores: issuing 10,000 keys takes a few seconds once.
    let halves: Vec<anyhow::Result<Vec<NodeCert>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| s.spawn(move || (w..n).step_by(2).map(issue).collect()))
            .collect();
        workers
            .into_iter()
            .map(|h| h.join().expect("issuing thread"))
            .collect()
    });
    let mut by_index: Vec<Option<NodeCert>> = (0..n).map(|_| None).collect();
    for (w, half) in halves.into_iter().enumerate() {
        for (k, cert) in half?.into_iter().enumerate() {
            by_index[w + 2 * k] = Some(cert);
        }
    }
    Ok(by_index.into_iter().flatten().collect())
}
