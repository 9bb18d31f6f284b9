//! `btrfs`: filesystem allocation statistics from /sys/fs/btrfs/<uuid>, as node_exporter 1.5
//! reports them from sysfs.
//!
//! Not (yet) done: node_exporter additionally queries mounted btrfs filesystems with ioctls
//! (`BTRFS_IOC_FS_INFO`/`DEV_INFO`/`GET_DEV_STATS`) for per-device error counters and unused
//! bytes; without those it reports `node_btrfs_device_size_bytes` from sysfs, as done here.

use std::path::Path;

use super::source::{DirListing, read_sys_file, sorted_dir_names};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "btrfs",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(BtrfsCollector::default()))
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Layout {
    pub mode: String,
    pub total_bytes: f64,
    pub used_bytes: f64,
    pub ratio: f64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Allocation {
    pub reserved_bytes: f64,
    pub layouts: Vec<Layout>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct FsStats {
    pub uuid: String,
    pub label: String,
    pub global_rsv_size: f64,
    /// data, metadata, system.
    pub allocation: [Allocation; 3],
    /// (device name, size in bytes).
    pub devices: Vec<(String, f64)>,
}

const BLOCK_GROUP_TYPES: [&str; 3] = ["data", "metadata", "system"];

/// An attribute as procfs reads it: trimmed text, "" when absent.
fn read_text(path: &Path, buf: &mut String) -> String {
    match read_sys_file(path, buf) {
        Ok(()) => buf.clone(),
        Err(_) => String::new(),
    }
}

/// A numeric attribute: 0 when absent or unparsable (procfs ignores the parse error).
fn read_value(path: &Path, buf: &mut String) -> f64 {
    match read_sys_file(path, buf) {
        Ok(()) => buf.parse::<u64>().map_or(0.0, |v| v as f64),
        Err(_) => 0.0,
    }
}

/// procfs's allocation ratio of a RAID profile.
fn ratio(mode: &str, devices: usize) -> f64 {
    let n = devices as f64;
    match mode {
        "single" | "raid0" => 1.0,
        "dup" | "raid1" | "raid10" => 2.0,
        "raid5" => n / (n - 1.0),
        "raid6" => n / (n - 2.0),
        _ => 0.0,
    }
}

/// Reads one filesystem's statistics from its sysfs directory.
pub fn read_fs(dir: &Path, buf: &mut String) -> std::io::Result<FsStats> {
    let mut stats = FsStats::default();
    for name in sorted_dir_names(&dir.join("devices"))?.unwrap_or_default() {
        let size = 512.0 * read_value(&dir.join("devices").join(&name).join("size"), buf);
        stats.devices.push((name, size));
    }
    stats.label = read_text(&dir.join("label"), buf);
    stats.uuid = read_text(&dir.join("metadata_uuid"), buf);
    if stats.uuid.is_empty() {
        stats.uuid = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    let allocation = dir.join("allocation");
    stats.global_rsv_size = read_value(&allocation.join("global_rsv_size"), buf);
    for (slot, group) in stats.allocation.iter_mut().zip(BLOCK_GROUP_TYPES) {
        let group_dir = allocation.join(group);
        slot.reserved_bytes = read_value(&group_dir.join("bytes_reserved"), buf);
        for mode in sorted_dir_names(&group_dir)?.unwrap_or_default() {
            let layout_dir = group_dir.join(&mode);
            if !layout_dir.is_dir() {
                continue;
            }
            slot.layouts.push(Layout {
                total_bytes: read_value(&layout_dir.join("total_bytes"), buf),
                used_bytes: read_value(&layout_dir.join("used_bytes"), buf),
                ratio: ratio(&mode, stats.devices.len()),
                mode,
            });
        }
    }
    Ok(stats)
}

#[derive(Default)]
struct BtrfsCollector {
    buf: String,
    filesystems: DirListing,
}

impl Collector for BtrfsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let root = ctx.paths.sys("fs/btrfs");
        let names = self
            .filesystems
            .names(ctx, &root, |_| true)
            .map_err(|e| CollectorError::io(&root, e))?
            .unwrap_or_default();
        let mut filesystems = Vec::new();
        for name in names.iter().filter(|n| n.contains('-')) {
            let dir = root.join(name);
            let stats = read_fs(&dir, &mut self.buf).map_err(|e| CollectorError::io(&dir, e))?;
            filesystems.push(stats);
        }
        write_families(out, &filesystems)?;
        Ok(())
    }
}

fn write_families(out: &mut MetricWriter<'_, '_>, all: &[FsStats]) -> Result<(), std::fmt::Error> {
    if all.is_empty() {
        return Ok(());
    }
    let mut f = out.family("node_btrfs_info", "Filesystem information", Kind::Gauge)?;
    for s in all {
        f.sample(&[("uuid", &s.uuid), ("label", &s.label)], 1.0)?;
    }
    let mut f = out.family(
        "node_btrfs_global_rsv_size_bytes",
        "Size of global reserve.",
        Kind::Gauge,
    )?;
    for s in all {
        f.sample(&[("uuid", &s.uuid)], s.global_rsv_size)?;
    }
    let mut f = out.family(
        "node_btrfs_reserved_bytes",
        "Amount of space reserved for a data type",
        Kind::Gauge,
    )?;
    for s in all {
        for (a, group) in s.allocation.iter().zip(BLOCK_GROUP_TYPES) {
            f.sample(
                &[("uuid", &s.uuid), ("block_group_type", group)],
                a.reserved_bytes,
            )?;
        }
    }
    type LayoutValue = fn(&Layout) -> f64;
    let layout_families: [(&str, &str, LayoutValue); 3] = [
        (
            "node_btrfs_used_bytes",
            "Amount of used space by a layout/data type",
            |l| l.used_bytes,
        ),
        (
            "node_btrfs_size_bytes",
            "Amount of space allocated for a layout/data type",
            |l| l.total_bytes,
        ),
        (
            "node_btrfs_allocation_ratio",
            "Data allocation ratio for a layout/data type",
            |l| l.ratio,
        ),
    ];
    let any_layout = all
        .iter()
        .any(|s| s.allocation.iter().any(|a| !a.layouts.is_empty()));
    if any_layout {
        for (name, help, value) in layout_families {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for s in all {
                for (a, group) in s.allocation.iter().zip(BLOCK_GROUP_TYPES) {
                    for l in &a.layouts {
                        f.sample(
                            &[
                                ("uuid", &s.uuid),
                                ("block_group_type", group),
                                ("mode", &l.mode),
                            ],
                            value(l),
                        )?;
                    }
                }
            }
        }
    }
    if all.iter().any(|s| !s.devices.is_empty()) {
        let mut f = out.family(
            "node_btrfs_device_size_bytes",
            "Size of a device that is part of the filesystem.",
            Kind::Gauge,
        )?;
        for s in all {
            for (device, size) in &s.devices {
                f.sample(&[("uuid", &s.uuid), ("device", device)], *size)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "btrfs", |_| Box::new(BtrfsCollector::default()));
    }

    #[test]
    fn raid_ratios() {
        assert_eq!(ratio("raid5", 3), 1.5);
        assert_eq!(ratio("raid6", 4), 2.0);
        assert_eq!(ratio("raid1", 2), 2.0);
        assert_eq!(ratio("weird", 2), 0.0);
    }
}
