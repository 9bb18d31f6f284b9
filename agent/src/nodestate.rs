//! The node state the link reports: roles, storage devices measured on disk (not the DFS's own
//! accounting), managed services and a small health summary. Reads a few small files (with the
//! collectors' parsers) and calls `statfs` (the collectors' wrapper); the link runs it on the
//! blocking pool with a deadline, since a hung mount can block `statfs`.

use std::path::{Path, PathBuf};

use nodewarden_shared::protocol::{
    Health, Role, ServiceState, ServiceStatus, StateReport, StorageDevice,
};

use crate::collector::source::{parse_loadavg, parse_meminfo_line, statfs};
use crate::config::AgentConfig;
use crate::ops::StorageDeviceDecl;

/// What the agent's own `/metrics` says about the link and the storage devices: the figures of
/// the last node-state collection (so a scrape never calls `statvfs` and never waits on a hung
/// mount) and whether the link is up.
#[derive(Debug, Default)]
pub struct LinkStatus {
    pub connected: std::sync::atomic::AtomicBool,
    pub devices: std::sync::Mutex<Vec<StorageDevice>>,
}

impl prometheus_client::collector::Collector for LinkStatus {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::collector::{Kind, MetricWriter};
        let mut out = MetricWriter::new(&mut encoder);
        out.gauge(
            "nodewarden_agent_controller_connected",
            "Whether the link to the controller is up (1) or not (0).",
            if self.connected.load(std::sync::atomic::Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        )?;
        let devices = self
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // A device whose folder could not be measured has no sample (rather than a false 0).
        let measured: Vec<(String, &StorageDevice)> = devices
            .iter()
            .filter(|d| d.error.is_none())
            .map(|d| (d.device_id.to_string(), d))
            .collect();
        let mut family = out.family(
            "nodewarden_storage_device_size_bytes",
            "Size of the filesystem holding the storage device's fragment folder.",
            Kind::Gauge,
        )?;
        for (id, d) in &measured {
            family.sample(&[("id", id)], d.total_bytes as f64)?;
        }
        let mut family = out.family(
            "nodewarden_storage_device_free_bytes",
            "Bytes available to the DFS on the filesystem holding the storage device's fragment folder.",
            Kind::Gauge,
        )?;
        for (id, d) in &measured {
            family.sample(&[("id", id)], d.free_bytes as f64)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct StateSource {
    pub roles: Vec<Role>,
    pub devices: Vec<StorageDeviceDecl>,
    pub services: Vec<String>,
    pub procfs: PathBuf,
    pub rootfs: PathBuf,
    /// Set while a collection runs (see the link's `collect`).
    pub collecting: std::sync::atomic::AtomicBool,
    /// The port `/metrics` is bound to, once bound (0: not yet); reported for service discovery.
    pub metrics_port: std::sync::atomic::AtomicU16,
    /// Shared with the metrics server (see [`LinkStatus`]).
    pub status: std::sync::Arc<LinkStatus>,
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
            metrics_port: Default::default(),
            status: Default::default(),
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
            .collect::<Vec<_>>();
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
        *self
            .status
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = storage.clone();
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
            metrics_port: match self.metrics_port.load(std::sync::atomic::Ordering::Relaxed) {
                0 => None,
                port => Some(port),
            },
            cpus: online_cpus(),
        }
    }
}

fn parse_load1(text: &str) -> Option<f64> {
    parse_loadavg(text).map(|[load1, _, _]| load1)
}

/// `(total, used)` bytes: used is `MemTotal - MemAvailable`, or on kernels without
/// `MemAvailable` `MemTotal - (MemFree + Buffers + Cached)`. Lines read as the meminfo
/// collector reads them.
fn parse_memory(text: &str) -> Option<(u64, u64)> {
    let (mut total, mut available, mut free, mut buffers, mut cached) =
        (None, None, None, 0.0, 0.0);
    let mut name = String::new();
    for line in text.lines() {
        let Some(value) = parse_meminfo_line(line, &mut name) else {
            continue;
        };
        match name.as_str() {
            "MemTotal_bytes" => total = Some(value),
            "MemAvailable_bytes" => available = Some(value),
            "MemFree_bytes" => free = Some(value),
            "Buffers_bytes" => buffers = value,
            "Cached_bytes" => cached = value,
            _ => {}
        }
    }
    let total = total?;
    let available = match available {
        Some(a) => a,
        None => free? + buffers + cached,
    };
    Some((total as u64, (total - available).max(0.0) as u64))
}

pub struct FsUsage {
    pub total: u64,
    pub available: u64,
    pub used: u64,
}

/// Sizes of the filesystem holding `path`, in `f_frsize` units as statvfs(3) gives them.
pub fn fs_usage(path: &Path) -> std::io::Result<FsUsage> {
    let st = statfs(path)?;
    let unit = if st.fragment_size > 0 {
        st.fragment_size
    } else {
        st.block_size
    };
    Ok(FsUsage {
        total: st.blocks.saturating_mul(unit),
        available: st.blocks_avail.saturating_mul(unit),
        used: st
            .blocks
            .saturating_sub(st.blocks_free)
            .saturating_mul(unit),
    })
}

/// Online CPUs, as node_exporter's `node_cpu_seconds_total{mode="idle"}` counts them.
fn online_cpus() -> Option<u32> {
    // SAFETY: sysconf(3) has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|n| *n > 0)
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
            metrics_port: 9100.into(),
            status: Default::default(),
        };
        let r = source.collect();
        assert_eq!(r.metrics_port, Some(9100));
        // The machine's online CPUs (this test runs on the real host), at least the ones it may use.
        let usable = std::thread::available_parallelism().unwrap().get() as u32;
        assert!(r.cpus.is_some_and(|n| n >= usable), "{:?}", r.cpus);
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

        // The agent's /metrics shows the measured device, not the unmeasurable one.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(source.status.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &registry).unwrap();
        assert!(
            text.contains("nodewarden_agent_controller_connected 0"),
            "{text}"
        );
        let free = format!(
            "nodewarden_storage_device_free_bytes{{id=\"3\"}} {}",
            r.storage[0].free_bytes
        );
        assert!(text.contains(&free), "{text}");
        assert!(
            text.contains("nodewarden_storage_device_size_bytes{id=\"3\"}"),
            "{text}"
        );
        assert!(!text.contains("id=\"4\""), "{text}");
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
