//! `dmmultipath`: device-mapper multipath maps from /sys/block/dm-*, as node_exporter 1.12.1
//! reports them (prometheus/procfs 0.21.1's `DMMultipathDevices`).
//!
//! A `dm-*` entry is a multipath map when its `dm/uuid` starts with `mpath-` (kpartx partitions,
//! `part1-mpath-…`, and LVM volumes are not); one without `dm/uuid` is skipped. For each map:
//! `dm/name`, `dm/suspended`, `size` (512-byte sectors) and, for each entry of `slaves/`, the
//! path's `/sys/block/<path>/device/state`: "running" (SCSI) and "live" (NVMe) count as active,
//! anything else as failed.
//!
//! As in 1.12.1: /sys/block missing or unreadable, or any missing or forbidden file on the way
//! (procfs wraps the errors, node_exporter tests them with `errors.Is`), is NoData; any other
//! failure (an unparsable `size`, say) fails the collection; nothing is written either way.
//!
//! Cost: /sys/block and each map's `slaves/` are listed once per hotplug epoch (a table reload
//! raises a change uevent); per map, `dm/uuid`, 3 attributes and one state per path are kept
//! open ([`OpenAttr`]) and re-read each scrape. Other `dm-*` devices (LVM volumes, kpartx
//! partitions) cost one read of `dm/uuid` per hotplug epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::{Absence, DirListing, OpenAttr, same_listing};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "dmmultipath",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(DmMultipathCollector::default()))
}

type Attr = (PathBuf, OpenAttr);

fn attr(path: PathBuf) -> Attr {
    (path, OpenAttr::default())
}

#[derive(Default)]
struct DmMultipathCollector {
    block: DirListing,
    listed: Option<Arc<[String]>>,
    devices: Vec<DmDevice>,
    buf: String,
}

struct DmDevice {
    sysfs_name: String,
    uuid_attr: Attr,
    name_attr: Attr,
    suspended_attr: Attr,
    size_attr: Attr,
    slaves_dir: PathBuf,
    slaves: DirListing,
    slaves_listed: Option<Arc<[String]>>,
    paths: Vec<PathDev>,
    /// Found not to be a multipath map (no `dm/uuid`, or another target's) in this hotplug
    /// epoch: a dm device's uuid is set once, at creation or by a rename, both uevents.
    not_multipath: Absence,
    /// This scrape: whether it is a multipath map, and its values.
    multipath: bool,
    uuid: String,
    name: String,
    suspended: bool,
    size_bytes: f64,
}

struct PathDev {
    device: String,
    state_attr: Attr,
    state: String,
}

impl DmDevice {
    fn new(block: &Path, sysfs_name: &str) -> Self {
        let dir = block.join(sysfs_name);
        DmDevice {
            sysfs_name: sysfs_name.to_string(),
            uuid_attr: attr(dir.join("dm/uuid")),
            name_attr: attr(dir.join("dm/name")),
            suspended_attr: attr(dir.join("dm/suspended")),
            size_attr: attr(dir.join("size")),
            slaves_dir: dir.join("slaves"),
            slaves: DirListing::default(),
            slaves_listed: None,
            paths: Vec::new(),
            not_multipath: Absence::default(),
            multipath: false,
            uuid: String::new(),
            name: String::new(),
            suspended: false,
            size_bytes: 0.0,
        }
    }
}

/// A read error as node_exporter 1.12.1 reports it: NoData for a missing or forbidden file.
fn read_error(path: &Path, e: std::io::Error) -> CollectorError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return CollectorError::NoData;
    }
    CollectorError::io_or_no_data(path, e)
}

fn read(attr: &mut Attr, buf: &mut String) -> Result<(), CollectorError> {
    attr.1
        .read(&attr.0, buf)
        .map_err(|e| read_error(&attr.0, e))
}

/// procfs's `ReadUintFromFile`.
fn read_uint(attr: &mut Attr, buf: &mut String) -> Result<u64, CollectorError> {
    read(attr, buf)?;
    buf.parse().map_err(|e| CollectorError::Parse {
        path: attr.0.clone(),
        reason: format!("{e}: {buf:?}"),
    })
}

/// Whether a path device's state counts as active (SCSI "running", NVMe "live").
fn active(state: &str) -> bool {
    state == "running" || state == "live"
}

impl DmMultipathCollector {
    fn read(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        let block = ctx.paths.sys("block");
        let names = self
            .block
            .names(ctx, &block, |e| {
                e.file_name().to_string_lossy().starts_with("dm-")
            })
            .map_err(|e| read_error(&block, e))?;
        if names.is_none() {
            return Err(CollectorError::NoData);
        }
        if !same_listing(&names, &self.listed) {
            self.devices = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|name| DmDevice::new(&block, name))
                .collect();
            self.listed = names;
        }
        let buf = &mut self.buf;
        for dev in &mut self.devices {
            dev.multipath = false;
            if dev.not_multipath.known(ctx) {
                continue;
            }
            match dev.uuid_attr.1.read(&dev.uuid_attr.0, buf) {
                Ok(()) => {}
                // Not a device-mapper device.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    dev.not_multipath.record(ctx, true);
                    continue;
                }
                Err(e) => return Err(read_error(&dev.uuid_attr.0, e)),
            }
            if !buf.starts_with("mpath-") {
                dev.not_multipath.record(ctx, true);
                continue;
            }
            dev.uuid.clone_from(buf);
            read(&mut dev.name_attr, buf)?;
            dev.name.clone_from(buf);
            dev.suspended = read_uint(&mut dev.suspended_attr, buf)? == 1;
            dev.size_bytes = read_uint(&mut dev.size_attr, buf)?.wrapping_mul(512) as f64;
            let slaves = dev
                .slaves
                .names(ctx, &dev.slaves_dir, |_| true)
                .map_err(|e| read_error(&dev.slaves_dir, e))?;
            if !same_listing(&slaves, &dev.slaves_listed) {
                dev.paths = slaves
                    .iter()
                    .flat_map(|n| n.iter())
                    .map(|name| PathDev {
                        device: name.clone(),
                        state_attr: attr(block.join(name).join("device/state")),
                        state: String::new(),
                    })
                    .collect();
                dev.slaves_listed = slaves;
            }
            for path in &mut dev.paths {
                read(&mut path.state_attr, buf)?;
                path.state.clone_from(buf);
            }
            dev.multipath = true;
        }
        Ok(())
    }

    fn write(&self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        let maps = || self.devices.iter().filter(|d| d.multipath);
        if maps().next().is_none() {
            return Ok(());
        }
        let mut f = out.family(
            "node_dmmultipath_device_info",
            "Non-numeric information about a DM-multipath device.",
            Kind::Gauge,
        )?;
        for d in maps() {
            f.sample(
                &[
                    ("device", &d.name),
                    ("sysfs_name", &d.sysfs_name),
                    ("uuid", &d.uuid),
                ],
                1.0,
            )?;
        }
        type Value = fn(&DmDevice) -> f64;
        let per_device: [(&str, &str, Value); 2] = [
            (
                "node_dmmultipath_device_active",
                "Whether the multipath device-mapper device is active (1) or suspended (0).",
                |d| if d.suspended { 0.0 } else { 1.0 },
            ),
            (
                "node_dmmultipath_device_size_bytes",
                "Size of the multipath device in bytes, read from /sys/block/<dm>/size.",
                |d| d.size_bytes,
            ),
        ];
        let paths: [(&str, &str, Value); 3] = [
            (
                "node_dmmultipath_device_paths",
                "Number of paths for a multipath device.",
                |d| d.paths.len() as f64,
            ),
            (
                "node_dmmultipath_device_paths_active",
                "Number of paths in active state (SCSI running or NVMe live) for a multipath device.",
                |d| d.paths.iter().filter(|p| active(&p.state)).count() as f64,
            ),
            (
                "node_dmmultipath_device_paths_failed",
                "Number of paths not in active state for a multipath device.",
                |d| d.paths.iter().filter(|p| !active(&p.state)).count() as f64,
            ),
        ];
        for (name, help, value) in per_device {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for d in maps() {
                f.sample(
                    &[("device", &d.name), ("sysfs_name", &d.sysfs_name)],
                    value(d),
                )?;
            }
        }
        if maps().any(|d| !d.paths.is_empty()) {
            let mut f = out.family(
                "node_dmmultipath_path_state",
                "Reports the underlying device state for a multipath path, as read from /sys/block/<dev>/device/state.",
                Kind::Gauge,
            )?;
            for d in maps() {
                for p in &d.paths {
                    f.sample(
                        &[
                            ("device", &d.name),
                            ("path", &p.device),
                            ("state", &p.state),
                        ],
                        1.0,
                    )?;
                }
            }
        }
        for (name, help, value) in paths {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for d in maps() {
                f.sample(
                    &[("device", &d.name), ("sysfs_name", &d.sysfs_name)],
                    value(d),
                )?;
            }
        }
        Ok(())
    }
}

impl Collector for DmMultipathCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.read(ctx)?;
        self.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-storage", "dmmultipath", |_| {
            Box::new(DmMultipathCollector::default())
        });
    }

    fn scrape(root: &Path) -> String {
        render(
            "dmmultipath",
            Box::new(DmMultipathCollector::default()),
            Paths::fixture(root),
        )
    }

    #[test]
    fn other_dm_devices_are_skipped_for_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let dm = dir.path().join("sys/block/dm-0");
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        for (name, value) in [
            ("dm/uuid", "LVM-abc"),
            ("dm/name", "vg-lv"),
            ("dm/suspended", "0"),
            ("size", "8"),
        ] {
            std::fs::write(dm.join(name), format!("{value}\n")).unwrap();
        }
        let (paths, malformed) = (Paths::fixture(dir.path()), Default::default());
        let at = |epoch| Context::new(&paths, &malformed).with_hotplug_epoch(Some(epoch));
        let mut c = DmMultipathCollector::default();
        c.read(&at(1)).unwrap();
        assert!(!c.devices[0].multipath);
        std::fs::write(dm.join("dm/uuid"), "mpath-36000\n").unwrap();
        c.read(&at(1)).unwrap();
        assert!(!c.devices[0].multipath, "not read again in the same epoch");
        c.read(&at(2)).unwrap();
        assert!(c.devices[0].multipath);
        assert_eq!(c.devices[0].name, "vg-lv");
    }

    #[test]
    fn absent_sources_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys")).unwrap();
        let failed = "node_scrape_collector_success{collector=\"dmmultipath\"} 0";
        assert!(scrape(dir.path()).contains(failed));
        let dm = dir.path().join("sys/block/dm-0");
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        std::fs::create_dir_all(dir.path().join("sys/block/dm-1")).unwrap();
        for (name, value) in [
            ("dm/uuid", "mpath-36000"),
            ("dm/name", "mpatha"),
            ("dm/suspended", "0"),
            ("size", "many"),
        ] {
            std::fs::write(dm.join(name), format!("{value}\n")).unwrap();
        }
        assert!(scrape(dir.path()).contains(failed));
        std::fs::write(dm.join("size"), "8\n").unwrap();
        // No slaves directory: no paths.
        let text = scrape(dir.path());
        assert!(
            text.contains("node_dmmultipath_device_paths{device=\"mpatha\",sysfs_name=\"dm-0\"} 0")
        );
        assert!(text.contains(
            "node_dmmultipath_device_size_bytes{device=\"mpatha\",sysfs_name=\"dm-0\"} 4096"
        ));
        assert!(!text.contains("node_dmmultipath_path_state"));
        // A path without a device state: NoData.
        std::fs::create_dir_all(dm.join("slaves/sdx")).unwrap();
        let text = scrape(dir.path());
        assert!(text.contains(failed) && !text.contains("node_dmmultipath_device_info"));
    }
}
