//! The node state the link reports: roles, storage devices measured on disk (not the DFS's own
//! accounting), managed services and a small health summary. Reads a few small files and calls
//! `statvfs`; the link runs it on the blocking pool with a deadline, since a hung mount can
//! block `statvfs`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nodewarden_shared::protocol::{
    Health, Role, ServiceState, ServiceStatus, StateReport, StorageDevice,
};

use crate::config::AgentConfig;
use crate::ops::StorageDeviceDecl;

#[derive(Debug)]
pub struct StateSource {
    pub roles: Vec<Role>,
    pub devices: Vec<StorageDeviceDecl>,
    pub services: Vec<String>,
    pub procfs: PathBuf,
    pub rootfs: PathBuf,
    /// Set while a collection runs (see the link's `collect`).
    pub collecting: std::sync::atomic::AtomicBool,
}

impl StateSource {
    pub fn new(config: &AgentConfig, procfs: &Path, rootfs: &Path) -> StateSource {
        StateSource {
            roles: config.roles.clone(),
            devices: config.ops.storage.devices.clone(),
            services: config.ops.services.iter().map(|s| s.name.clone()).collect(),
            procfs: procfs.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            collecting: Default::default(),
        }
    }

    /// A report (its `seq` is set by the session). Parts that cannot be read are zero, with
    /// the reason logged (devices carry it in `error`).
    pub fn collect(&self) -> StateReport {
        let storage = self
            .devices
            .iter()
            .map(|d| match fs_usage(&d.fragment_dir) {
                Ok(u) => StorageDevice {
                    device_id: d.id,
                    fragment_dir: d.fragment_dir.display().to_string(),
                    total_bytes: u.total,
                    free_bytes: u.available,
                    error: None,
                },
                Err(e) => StorageDevice {
                    device_id: d.id,
                    fragment_dir: d.fragment_dir.display().to_string(),
                    total_bytes: 0,
                    free_bytes: 0,
                    error: Some(format!("{}: {e}", d.fragment_dir.display())),
                },
            })
            .collect();
        let mut health = Health::default();
        match std::fs::read_to_string(self.procfs.join("loadavg")) {
            Ok(text) => health.load1 = parse_load1(&text).unwrap_or_default(),
            Err(e) => tracing::debug!("{}/loadavg: {e}", self.procfs.display()),
        }
        match std::fs::read_to_string(self.procfs.join("meminfo")) {
            Ok(text) => {
                if let Some((total, used)) = parse_memory(&text) {
                    health.memory_total_bytes = total;
                    health.memory_used_bytes = used;
                }
            }
            Err(e) => tracing::debug!("{}/meminfo: {e}", self.procfs.display()),
        }
        match fs_usage(&self.rootfs) {
            Ok(u) => {
                health.root_fs_total_bytes = u.total;
                health.root_fs_used_bytes = u.used;
            }
            Err(e) => tracing::debug!("{}: {e}", self.rootfs.display()),
        }
        StateReport {
            seq: 0,
            roles: self.roles.clone(),
            storage,
            services: self
                .services
                .iter()
                .map(|name| ServiceState {
                    name: name.clone(),
                    // The link fills in what the executor observes (async, with a deadline).
                    status: ServiceStatus::Unknown,
                })
                .collect(),
            health,
        }
    }
}

fn parse_load1(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `(total, used)` bytes: used is `MemTotal - MemAvailable`, or on kernels without
/// `MemAvailable` `MemTotal - (MemFree + Buffers + Cached)`.
fn parse_memory(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = field("MemTotal")?;
    let available = match field("MemAvailable") {
        Some(a) => a,
        None => field("MemFree")? + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0),
    };
    Some((total * 1024, total.saturating_sub(available) * 1024))
}

pub struct FsUsage {
    pub total: u64,
    pub available: u64,
    pub used: u64,
}

// The statvfs field types differ between targets; `u64::from` is a no-op only on some.
#[allow(clippy::useless_conversion)]
pub fn fs_usage(path: &Path) -> std::io::Result<FsUsage> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and st points to writable memory the
    // size of statvfs; it is only read after the call succeeded.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let frsize = u64::from(st.f_frsize);
    Ok(FsUsage {
        total: u64::from(st.f_blocks).saturating_mul(frsize),
        available: u64::from(st.f_bavail).saturating_mul(frsize),
        used: u64::from(st.f_blocks)
            .saturating_sub(u64::from(st.f_bfree))
            .saturating_mul(frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(tree: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(tree)
            .join("proc")
    }

    #[test]
    fn health_from_fixtures() {
        let tmp = tempfile::tempdir().unwrap();
        let source = StateSource {
            roles: vec![Role::Storage],
            devices: vec![
                StorageDeviceDecl {
                    id: 3,
                    fragment_dir: tmp.path().to_path_buf(),
                },
                StorageDeviceDecl {
                    id: 4,
                    fragment_dir: tmp.path().join("missing"),
                },
            ],
            services: vec!["dfs-client".into()],
            procfs: fixture("basic"),
            rootfs: tmp.path().to_path_buf(),
            collecting: Default::default(),
        };
        let r = source.collect();
        assert_eq!(r.health.load1, 0.21);
        assert_eq!(r.health.memory_total_bytes, 16256924 * 1024);
        assert_eq!(r.health.memory_used_bytes, (16256924 - 12829308) * 1024);
        assert!(r.health.root_fs_total_bytes > 0);
        assert_eq!(r.storage[0].device_id, 3);
        assert!(r.storage[0].total_bytes >= r.storage[0].free_bytes);
        assert!(r.storage[0].total_bytes > 0 && r.storage[0].error.is_none());
        let missing = r.storage[1].error.as_deref().unwrap();
        assert!(
            missing.contains("missing") && missing.contains("No such file"),
            "{missing}"
        );
        assert_eq!(r.services[0].status, ServiceStatus::Unknown);
    }

    #[test]
    fn memory_without_memavailable_uses_free_buffers_cached() {
        let text = std::fs::read_to_string(fixture("old-kernel").join("meminfo")).unwrap();
        let (total, used) = parse_memory(&text).unwrap();
        let field = |n: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(&format!("{n}:")))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(total, field("MemTotal") * 1024);
        assert_eq!(
            used,
            (field("MemTotal") - field("MemFree") - field("Buffers") - field("Cached")) * 1024
        );
        assert_eq!(parse_memory("garbage"), None);
        assert_eq!(parse_load1(""), None);
    }
}
