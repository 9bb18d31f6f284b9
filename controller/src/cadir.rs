//! The CA directory: the files behind `nodewarden-controller ca ...` and the link's trust.
//!
//! ```text
//! ca.pem  ca.key          the CA (key mode 0600)
//! server.pem server.key   the controller's server certificate (key mode 0600)
//! issued.toml             every node certificate issued: node, serial, expiry
//! revoked.toml            revoked serials; the running controller re-reads it within a second
//! ca.lock                 held (flock) over every read-modify-write of the two lists
//! ```
//! Files are replaced by writing a temporary file of a unique name (created `O_EXCL`, mode 0600,
//! synced, then given its final mode), renaming it over the old one and syncing the directory,
//! so a reader never sees half a file, a replaced file never keeps an older file's mode, and a
//! rename survives a crash. Concurrent `ca` commands serialise their list updates on the lock
//! file, so a revocation and an issue made at the same time are both kept.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nodewarden_shared::ca::{CaMaterial, CertInfo};
use serde::{Deserialize, Serialize};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const ISSUED: &str = "issued.toml";
pub const REVOKED: &str = "revoked.toml";
/// The lock file list updates hold (flock, exclusive).
pub const LOCK: &str = "ca.lock";
/// How temporary files' names end (they start with `.` and the target's name).
pub const TEMP_SUFFIX: &str = ".tmp";

#[derive(Debug, thiserror::Error)]
pub enum CaDirError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", file.display())]
    Parse {
        file: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: {source}", file.display())]
    Serialize {
        file: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    #[error("{}: already exists; refusing to overwrite it", file.display())]
    Exists { file: PathBuf },
}

fn io(file: &Path) -> impl FnOnce(std::io::Error) -> CaDirError + '_ {
    move |source| CaDirError::Io {
        file: file.to_path_buf(),
        source,
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

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename or link in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), CaDirError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A temporary file beside `path`, removed when dropped unless it was renamed away.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    /// Creates a new file of a name no other writer uses (`O_EXCL`, mode 0600 whatever the
    /// umask leaves), beside `path`.
    fn beside(path: &Path) -> Result<TempFile, CaDirError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = parent_dir(path);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let tmp = dir.join(format!(
                ".{name}.{}.{}.{nanos:08x}{TEMP_SUFFIX}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(TempFile { path: tmp, file });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&tmp)(e)),
            }
        }
    }

    /// Writes `contents`, syncs them and sets `mode` (exactly: no umask applies to a chmod).
    fn fill(&mut self, contents: &[u8], mode: u32) -> Result<(), CaDirError> {
        let file = &mut self.file;
        file.write_all(contents)
            .and_then(|_| file.set_permissions(std::fs::Permissions::from_mode(mode)))
            .and_then(|_| file.sync_all())
            .map_err(io(&self.path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `contents` to `path` atomically with exactly `mode`, replacing any older file (whose
/// mode does not carry over), and syncs the directory.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaDirError> {
    let mut tmp = TempFile::beside(path)?;
    tmp.fill(contents, mode)?;
    std::fs::rename(&tmp.path, path).map_err(io(path))?;
    sync_dir(parent_dir(path))
}

/// Writes a file that must not exist yet (atomically: a file created meanwhile by another
/// writer is not replaced).
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaDirError> {
    let mut tmp = TempFile::beside(path)?;
    tmp.fill(contents, mode)?;
    // link(2) fails when `path` exists, where rename(2) would replace it.
    match std::fs::hard_link(&tmp.path, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CaDirError::Exists {
                file: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(path)(e)),
    }
    drop(tmp);
    sync_dir(parent_dir(path))
}

pub fn read(path: &Path) -> Result<String, CaDirError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// The CA directory's lock, held until dropped (closing the file releases the flock).
#[derive(Debug)]
pub struct CaLock {
    _file: File,
}

/// A serial as given on the command line (`0A:FF`, `0aff`, `00 0a ff`) in the canonical text
/// `issued.toml` and the link use (lower-case hex, no leading zero bytes); `None` if it is not
/// hexadecimal.
pub fn canonical_serial(text: &str) -> Option<String> {
    let digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes: Vec<u8> = padded
        .as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("00"), 16).unwrap_or(0))
        .collect();
    Some(nodewarden_shared::ca::serial_hex(&bytes))
}

/// What a revocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// Every certificate issued to this node.
    Node(String),
    /// One certificate, by its canonical serial ([`canonical_serial`]).
    Serial(String),
}

/// What [`CaDir::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revoked {
    /// `(node, serial)` revoked now.
    pub new: Vec<(String, String)>,
    /// Serials asked for that were revoked already.
    pub already: Vec<String>,
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

    /// Waits for and takes the directory's lock (`ca.lock`, created 0600 if absent).
    pub fn lock(&self) -> Result<CaLock, CaDirError> {
        let path = self.path(LOCK);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(CaLock { _file: file })
    }

    fn load_toml<T: for<'de> Deserialize<'de> + Default>(
        &self,
        name: &str,
    ) -> Result<T, CaDirError> {
        let path = self.path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|source| CaDirError::Parse {
                file: path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn store_toml<T: Serialize>(
        &self,
        _lock: &CaLock,
        name: &str,
        value: &T,
    ) -> Result<(), CaDirError> {
        let path = self.path(name);
        let text = toml::to_string(value).map_err(|source| CaDirError::Serialize {
            file: path.clone(),
            source,
        })?;
        write_file(&path, text.as_bytes(), 0o644)
    }

    pub fn issued(&self) -> Result<IssuedList, CaDirError> {
        self.load_toml(ISSUED)
    }

    pub fn revoked(&self) -> Result<RevokedList, CaDirError> {
        self.load_toml(REVOKED)
    }

    /// Adds a certificate to `issued.toml` (under the lock). Callers record a certificate
    /// before handing it out, so none is in use that the list does not know (and that
    /// `ca revoke NODE` would miss).
    pub fn record_issued(
        &self,
        node: &str,
        info: &CertInfo,
        now_unix: i64,
    ) -> Result<(), CaDirError> {
        let lock = self.lock()?;
        let mut list = self.issued()?;
        list.certs.push(IssuedEntry {
            node: node.to_string(),
            serial: info.serial.clone(),
            not_after_unix: info.not_after_unix,
            issued_unix: now_unix,
        });
        self.store_toml(&lock, ISSUED, &list)
    }

    /// Revokes every certificate issued to `node` that is not revoked yet; returns their serials.
    pub fn revoke_node(&self, node: &str, now_unix: i64) -> Result<Vec<String>, CaDirError> {
        let done = self.revoke(&RevokeTarget::Node(node.to_string()), now_unix)?;
        Ok(done.new.into_iter().map(|(_, serial)| serial).collect())
    }

    /// Adds what `target` names to `revoked.toml` (under the lock, so an issue or another
    /// revocation made meanwhile is not lost). A serial `issued.toml` does not know is revoked
    /// all the same (its node recorded as `?`): refusing a certificate is always safe.
    pub fn revoke(&self, target: &RevokeTarget, now_unix: i64) -> Result<Revoked, CaDirError> {
        let lock = self.lock()?;
        let issued = self.issued()?;
        let mut revoked = self.revoked()?;
        let already = revoked.serials();
        let wanted: Vec<(String, String)> = match target {
            RevokeTarget::Node(node) => issued
                .certs
                .iter()
                .filter(|c| &c.node == node)
                .map(|c| (c.node.clone(), c.serial.clone()))
                .collect(),
            RevokeTarget::Serial(serial) => {
                let node = issued
                    .certs
                    .iter()
                    .find(|c| &c.serial == serial)
                    .map_or_else(|| "?".to_string(), |c| c.node.clone());
                vec![(node, serial.clone())]
            }
        };
        let mut done = Revoked::default();
        for (node, serial) in wanted {
            if already.contains(&serial) {
                done.already.push(serial);
            } else if !done.new.iter().any(|(_, s)| s == &serial) {
                done.new.push((node, serial));
            }
        }
        if done.new.is_empty() {
            return Ok(done);
        }
        revoked
            .entries
            .extend(done.new.iter().map(|(node, serial)| RevokedEntry {
                node: node.clone(),
                serial: serial.clone(),
                revoked_unix: now_unix,
            }));
        self.store_toml(&lock, REVOKED, &revoked)?;
        Ok(done)
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
    fn revoking_by_serial_names_its_node_and_counts_repeats() {
        let tmp = tempfile::tempdir().unwrap();
        let d = CaDir::new(tmp.path());
        d.record_issued("a", &info("0aff"), 1).unwrap();
        d.record_issued("a", &info("0b00"), 1).unwrap();
        let done = d.revoke(&RevokeTarget::Serial("0aff".into()), 5).unwrap();
        assert_eq!(done.new, [("a".to_string(), "0aff".to_string())]);
        let again = d.revoke(&RevokeTarget::Serial("0aff".into()), 6).unwrap();
        assert!(again.new.is_empty());
        assert_eq!(again.already, ["0aff"]);
        // The node's other certificate is still valid, and revoking the node takes only it.
        assert_eq!(d.revoke_node("a", 7).unwrap(), ["0b00"]);
        // A serial the list does not know is revoked all the same.
        let unknown = d.revoke(&RevokeTarget::Serial("01".into()), 8).unwrap();
        assert_eq!(unknown.new, [("?".to_string(), "01".to_string())]);
        assert_eq!(d.revoked().unwrap().entries.len(), 3);
    }

    #[test]
    fn serials_are_read_as_openssl_and_the_list_write_them() {
        assert_eq!(canonical_serial("0A:FF").as_deref(), Some("0aff"));
        assert_eq!(canonical_serial("00:0a:ff").as_deref(), Some("0aff"));
        assert_eq!(canonical_serial("aff").as_deref(), Some("0aff"));
        assert_eq!(canonical_serial("0aff").as_deref(), Some("0aff"));
        assert_eq!(canonical_serial("node-1"), None);
        assert_eq!(canonical_serial(""), None);
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaced_files_take_the_new_mode_and_leave_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("server.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
        // What the old fixed temporary name was: a file there must not lend its mode.
        let stale = tmp.path().join("server.tmp");
        std::fs::write(&stale, "").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_file(&key, b"new", 0o600).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"new");
        write_file(&tmp.path().join("server.pem"), b"cert", 0o644).unwrap();
        assert_eq!(mode(&tmp.path().join("server.pem")), 0o644);
        assert_eq!(
            names(tmp.path()),
            ["server.key", "server.pem", "server.tmp"]
        );
        // A failed write (no such directory) leaves nothing behind either.
        assert!(write_file(&tmp.path().join("none/x"), b"1", 0o600).is_err());
        assert!(write_new(&key, b"2", 0o600).is_err());
        assert_eq!(
            names(tmp.path()),
            ["server.key", "server.pem", "server.tmp"]
        );
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
