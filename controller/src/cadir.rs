//! The CA directory: the files behind `nodewarden-controller ca ...` and the link's trust.
//!
//! ```text
//! ca.pem  ca.key          the CA (key mode 0600)
//! server.pem server.key   the controller's server certificate
//! issued.toml             every node certificate issued: node, serial, expiry
//! revoked.toml            revoked serials; the running controller re-reads it within a second
//! ```
//! Files are replaced by writing a temporary file and renaming it, so a reader never sees half.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use nodewarden_shared::ca::{CaMaterial, CertInfo};
use serde::{Deserialize, Serialize};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const ISSUED: &str = "issued.toml";
pub const REVOKED: &str = "revoked.toml";

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct CaDirError {
    pub file: PathBuf,
    pub message: String,
}

fn err(file: &Path, message: impl ToString) -> CaDirError {
    CaDirError {
        file: file.to_path_buf(),
        message: message.to_string(),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IssuedList {
    #[serde(default, rename = "cert")]
    pub certs: Vec<IssuedEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IssuedEntry {
    pub node: String,
    pub serial: String,
    pub not_after_unix: i64,
    pub issued_unix: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RevokedList {
    #[serde(default, rename = "revoked")]
    pub entries: Vec<RevokedEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RevokedEntry {
    pub node: String,
    pub serial: String,
    pub revoked_unix: i64,
}

impl RevokedList {
    pub fn serials(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.serial.clone()).collect()
    }
}

/// Writes `contents` to `path` atomically with `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaDirError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| err(&tmp, e))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}

/// Writes a file that must not exist yet.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaDirError> {
    if path.exists() {
        return Err(err(path, "already exists; refusing to overwrite it"));
    }
    write_file(path, contents, mode)
}

pub fn read(path: &Path) -> Result<String, CaDirError> {
    std::fs::read_to_string(path).map_err(|e| err(path, e))
}

#[derive(Debug)]
pub struct CaDir {
    pub dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> CaDir {
        CaDir { dir: dir.into() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn ca(&self) -> Result<CaMaterial, CaDirError> {
        Ok(CaMaterial {
            cert_pem: read(&self.path(CA_CERT))?,
            key_pem: read(&self.path(CA_KEY))?,
        })
    }

    fn load_toml<T: for<'de> Deserialize<'de> + Default>(
        &self,
        name: &str,
    ) -> Result<T, CaDirError> {
        let path = self.path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(err(&path, e)),
        }
    }

    fn store_toml<T: Serialize>(&self, name: &str, value: &T) -> Result<(), CaDirError> {
        let path = self.path(name);
        let text = toml::to_string(value).map_err(|e| err(&path, e))?;
        write_file(&path, text.as_bytes(), 0o644)
    }

    pub fn issued(&self) -> Result<IssuedList, CaDirError> {
        self.load_toml(ISSUED)
    }

    pub fn revoked(&self) -> Result<RevokedList, CaDirError> {
        self.load_toml(REVOKED)
    }

    pub fn record_issued(
        &self,
        node: &str,
        info: &CertInfo,
        now_unix: i64,
    ) -> Result<(), CaDirError> {
        let mut list = self.issued()?;
        list.certs.push(IssuedEntry {
            node: node.to_string(),
            serial: info.serial.clone(),
            not_after_unix: info.not_after_unix,
            issued_unix: now_unix,
        });
        self.store_toml(ISSUED, &list)
    }

    /// Revokes every certificate issued to `node` that is not revoked yet; returns their serials.
    pub fn revoke_node(&self, node: &str, now_unix: i64) -> Result<Vec<String>, CaDirError> {
        let issued = self.issued()?;
        let mut revoked = self.revoked()?;
        let already = revoked.serials();
        let new: Vec<String> = issued
            .certs
            .iter()
            .filter(|c| c.node == node && !already.contains(&c.serial))
            .map(|c| c.serial.clone())
            .collect();
        if new.is_empty() {
            return Ok(new);
        }
        revoked
            .entries
            .extend(new.iter().map(|serial| RevokedEntry {
                node: node.to_string(),
                serial: serial.clone(),
                revoked_unix: now_unix,
            }));
        self.store_toml(REVOKED, &revoked)?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(serial: &str) -> CertInfo {
        CertInfo {
            common_name: None,
            serial: serial.into(),
            not_before_unix: 0,
            not_after_unix: 10,
            client_auth: true,
            server_auth: false,
            is_ca: false,
        }
    }

    #[test]
    fn revoking_a_node_covers_all_its_certificates_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = CaDir::new(tmp.path());
        d.record_issued("a", &info("01"), 1).unwrap();
        d.record_issued("b", &info("02"), 1).unwrap();
        d.record_issued("a", &info("03"), 2).unwrap();
        assert_eq!(d.revoke_node("a", 5).unwrap(), vec!["01", "03"]);
        assert!(d.revoke_node("a", 6).unwrap().is_empty());
        assert_eq!(
            d.revoked().unwrap().serials(),
            ["01".to_string(), "03".to_string()].into()
        );
        assert!(d.revoke_node("nobody", 6).unwrap().is_empty());
    }

    #[test]
    fn broken_list_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(REVOKED), "[[revoked]]\nnode = 1\n").unwrap();
        let e = CaDir::new(tmp.path()).revoked().unwrap_err().to_string();
        assert!(e.contains("revoked.toml"), "{e}");
    }

    #[test]
    fn write_new_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x");
        write_new(&p, b"1", 0o600).unwrap();
        assert!(write_new(&p, b"2", 0o600).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"1");
    }
}
