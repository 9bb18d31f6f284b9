//! `nodewarden-controller ca …`: the CA workflow on the command line (create the CA, issue and
//! renew certificates, revoke, list), over the CA directory's files ([`crate::cadir`]).
//!
//! Every certificate is recorded in `issued.toml` before it is written out, so a certificate in
//! use is always one `ca revoke NODE` finds; the lists are updated under the directory's lock.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use nodewarden_shared::ca::{self, Validity};
use nodewarden_shared::name::validate_node_name;
use time::OffsetDateTime;

use crate::cadir::{self, CaDir, RevokeTarget, write_file, write_new};
use crate::state::now_unix;

#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Create the CA and the controller's server certificate in DIR.
    Init {
        /// The CA directory to create (ca.pem, ca.key, server.pem, server.key).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP address agents use for the controller (repeatable; at least one).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// Days the CA certificate is valid.
        #[arg(long, default_value_t = 3650)]
        ca_days: u32,
        /// Days the controller's server certificate is valid.
        #[arg(long, default_value_t = 825)]
        server_days: u32,
    },
    /// Re-issue the controller's server certificate from the existing CA: to renew it before it
    /// expires, or to change the names agents use. The previous pair is kept as
    /// server.{pem,key}.previous. A running controller serves the new pair to new connections
    /// (agent link and HTTPS) within a second; connected agents stay. Node certificates are
    /// unaffected (same CA).
    Server {
        /// The CA directory (as given to `ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP address agents use for the controller (repeatable; at least one).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// Days the new server certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Issue a node certificate for a CSR made by `nodewarden-agent enroll --csr`.
    Sign {
        /// The CA directory (as given to `ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// The node's certificate signing request (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// The node's name, written into the certificate (the name the controller knows it by).
        #[arg(long)]
        node: String,
        /// Where the certificate goes (PEM).
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a node key and certificate in one step (labs and demos: the key leaves this host).
    Issue {
        /// The node's name, written into the certificate.
        node: String,
        /// The CA directory (as given to `ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// Receives NODE.pem, NODE.key and ca.pem.
        #[arg(long)]
        out_dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a controller's peer certificate (a cluster's controllers forward actions to each
    /// other over mutual TLS with it): writes peer-ID.pem and peer-ID.key in OUT_DIR, for
    /// `[cluster] peer_cert_file` and `peer_key_file`. Revoked like a node's, as
    /// `controller:ID`.
    IssueController {
        /// The controller's id (`[cluster] id`).
        id: String,
        /// The CA directory (as given to `ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP address the other controllers reach this one's peer endpoint by
        /// (repeatable; at least one).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// Receives peer-ID.pem and peer-ID.key.
        #[arg(long)]
        out_dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Revoke every certificate issued to NODE, or the certificates of the given serials; a
    /// running controller drops them within a second.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["node", "serial"])))]
    Revoke {
        /// The node whose every certificate is revoked.
        node: Option<String>,
        /// A certificate's serial (hex, as `ca list` or `openssl x509 -serial` show it;
        /// repeatable) instead of a node: to revoke one certificate of a node and keep its others.
        #[arg(long, conflicts_with = "node")]
        serial: Vec<String>,
        /// The CA directory (as given to `ca init`).
        #[arg(long)]
        dir: PathBuf,
    },
    /// List issued certificates with expiry and revocation.
    List {
        /// The CA directory (as given to `ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// Certificates expiring within this many days are marked EXPIRES SOON.
        #[arg(long, default_value_t = 30)]
        warn_days: u32,
    },
}

/// Runs one `ca` subcommand; errors name the file or directory concerned.
pub fn run(cmd: CaCmd) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        CaCmd::Init {
            dir,
            sans,
            ca_days,
            server_days,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let d = CaDir::new(&dir);
            for f in [
                cadir::CA_CERT,
                cadir::CA_KEY,
                cadir::SERVER_CERT,
                cadir::SERVER_KEY,
            ] {
                if d.path(f).exists() {
                    bail!(
                        "{}: already exists; refusing to overwrite a CA",
                        d.path(f).display()
                    );
                }
            }
            let material = ca::create_ca("nodewarden CA", Validity::days_from(now, ca_days))?;
            let server =
                ca::issue_server_cert(&material, &sans, Validity::days_from(now, server_days))?;
            write_new(&d.path(cadir::CA_KEY), material.key_pem.as_bytes(), 0o600)?;
            write_new(&d.path(cadir::CA_CERT), material.cert_pem.as_bytes(), 0o644)?;
            write_new(
                &d.path(cadir::SERVER_KEY),
                server.key_pem.unwrap_or_default().as_bytes(),
                0o600,
            )?;
            write_new(
                &d.path(cadir::SERVER_CERT),
                server.cert_pem.as_bytes(),
                0o644,
            )?;
            println!(
                "created CA and server certificate for {} in {}",
                sans.join(", "),
                dir.display()
            );
        }
        CaCmd::Server { dir, sans, days } => {
            let d = CaDir::new(&dir);
            let server = ca::issue_server_cert(&d.ca()?, &sans, Validity::days_from(now, days))
                .with_context(|| format!("issuing a server certificate from {}", dir.display()))?;
            for (name, mode) in [(cadir::SERVER_KEY, 0o600), (cadir::SERVER_CERT, 0o644)] {
                let current = d.path(name);
                match std::fs::read(&current) {
                    // Written afresh (not copied over an older file): the copy gets `mode`.
                    Ok(bytes) => write_file(&d.path(&format!("{name}.previous")), &bytes, mode)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("keeping {}", current.display()));
                    }
                }
            }
            // The key first: a controller started between the two writes fails on a key that
            // does not match the certificate, rather than serving a stale one.
            write_file(
                &d.path(cadir::SERVER_KEY),
                server.key_pem.unwrap_or_default().as_bytes(),
                0o600,
            )?;
            write_file(
                &d.path(cadir::SERVER_CERT),
                server.cert_pem.as_bytes(),
                0o644,
            )?;
            println!(
                "issued a server certificate for {} valid {days} days in {}; restart the controller to use it",
                sans.join(", "),
                dir.display()
            );
        }
        CaCmd::Sign {
            dir,
            csr,
            node,
            out,
            days,
        } => {
            let d = CaDir::new(&dir);
            let csr_pem = cadir::read(&csr)?;
            let issued =
                ca::sign_node_csr(&d.ca()?, &csr_pem, &node, Validity::days_from(now, days))
                    .with_context(|| format!("signing {}", csr.display()))?;
            d.record_issued(&node, &issued.info, now_unix())?;
            write_file(&out, issued.cert_pem.as_bytes(), 0o644)?;
            println!(
                "issued certificate {} for node {node} (serial {}, {days} days)",
                out.display(),
                issued.info.serial
            );
        }
        CaCmd::Issue {
            node,
            dir,
            out_dir,
            days,
        } => {
            validate_node_name(&node).map_err(anyhow::Error::msg)?;
            let d = CaDir::new(&dir);
            let material = d.ca()?;
            let issued = ca::issue_node_cert(&material, &node, Validity::days_from(now, days))?;
            std::fs::create_dir_all(&out_dir).with_context(|| format!("{}", out_dir.display()))?;
            d.record_issued(&node, &issued.info, now_unix())?;
            write_file(
                &out_dir.join(format!("{node}.key")),
                issued.key_pem.clone().unwrap_or_default().as_bytes(),
                0o600,
            )?;
            write_file(
                &out_dir.join(format!("{node}.pem")),
                issued.cert_pem.as_bytes(),
                0o644,
            )?;
            write_file(&out_dir.join("ca.pem"), material.cert_pem.as_bytes(), 0o644)?;
            println!(
                "issued {node}.pem and {node}.key in {} (serial {})",
                out_dir.display(),
                issued.info.serial
            );
        }
        CaCmd::IssueController {
            id,
            dir,
            sans,
            out_dir,
            days,
        } => {
            let d = CaDir::new(&dir);
            let material = d.ca()?;
            let issued =
                ca::issue_controller_cert(&material, &id, &sans, Validity::days_from(now, days))?;
            std::fs::create_dir_all(&out_dir).with_context(|| format!("{}", out_dir.display()))?;
            d.record_issued(
                &format!("{}{id}", ca::CONTROLLER_CN_PREFIX),
                &issued.info,
                now_unix(),
            )?;
            write_file(
                &out_dir.join(format!("peer-{id}.key")),
                issued.key_pem.clone().unwrap_or_default().as_bytes(),
                0o600,
            )?;
            write_file(
                &out_dir.join(format!("peer-{id}.pem")),
                issued.cert_pem.as_bytes(),
                0o644,
            )?;
            println!(
                "issued peer-{id}.pem and peer-{id}.key in {} (serial {})",
                out_dir.display(),
                issued.info.serial
            );
        }
        CaCmd::Revoke { node, serial, dir } => revoke(&CaDir::new(&dir), node, &serial)?,
        CaCmd::List { dir, warn_days } => {
            let d = CaDir::new(&dir);
            let revoked = d.revoked()?.serials();
            let now = now_unix();
            for c in d.issued()?.certs {
                let left = (c.not_after_unix - now) / 86400;
                let state = if revoked.contains(&c.serial) {
                    "revoked".to_string()
                } else if c.not_after_unix <= now {
                    "EXPIRED".to_string()
                } else if left < i64::from(warn_days) {
                    format!("EXPIRES SOON ({left} days)")
                } else {
                    format!("valid ({left} days)")
                };
                println!("{}\t{}\t{state}", c.node, c.serial);
            }
        }
    }
    Ok(())
}

/// `ca revoke NODE` or `ca revoke --serial S…`: fails when nothing new was revoked.
fn revoke(d: &CaDir, node: Option<String>, serials: &[String]) -> anyhow::Result<()> {
    let issued_file = d.path(cadir::ISSUED);
    if let Some(node) = node {
        let serials = d.revoke_node(&node, now_unix())?;
        if serials.is_empty() {
            bail!(
                "{}: no unrevoked certificate of node {node}",
                issued_file.display()
            );
        }
        println!("revoked node {node}: serials {}", serials.join(", "));
        return Ok(());
    }
    let mut revoked_any = false;
    for text in serials {
        let Some(serial) = cadir::canonical_serial(text) else {
            bail!("--serial {text:?}: not a hexadecimal serial number");
        };
        let done = d.revoke(&RevokeTarget::Serial(serial.clone()), now_unix())?;
        for (node, serial) in &done.new {
            revoked_any = true;
            if node == "?" {
                println!(
                    "revoked serial {serial} (not in {}: no node known)",
                    issued_file.display()
                );
            } else {
                println!("revoked serial {serial} of node {node}");
            }
        }
        for serial in &done.already {
            println!("serial {serial} was revoked already");
        }
    }
    if !revoked_any {
        bail!(
            "{}: every serial given was revoked already",
            d.path(cadir::REVOKED).display()
        );
    }
    Ok(())
}
