//! `btrfs`: filesystem allocation and commit statistics from /sys/fs/btrfs/<uuid>, as
//! node_exporter 1.12.1 reports them from sysfs (`commit_stats` exists since Linux 6.0: absent,
//! the commit families read 0, as in procfs; a line that is not `<key> <value>` fails the
//! collection, as it fails procfs's `Stats()`).
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
    pub commits: CommitStats,
}

/// `commit_stats`: the number of transaction commits and their durations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CommitStats {
    pub commits: f64,
    pub last_commit_ms: f64,
    pub max_commit_ms: f64,
    pub total_commit_ms: f64,
}

/// Why a `commit_stats` file could not be read as procfs reads it.
#[derive(Debug, thiserror::Error)]
pub enum CommitStatsError {
    #[error("invalid commit_stats line {0:?}")]
    Line(String),
    #[error("commit_stats line {line:?}: {source}")]
    Value {
        line: String,
        source: std::num::ParseIntError,
    },
}

/// Parses `commit_stats` (`<key> <value>` lines; unknown keys such as `cur_commit_ms` ignored).
pub fn parse_commit_stats(text: &str) -> Result<CommitStats, CommitStatsError> {
    let mut stats = CommitStats::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(CommitStatsError::Line(line.to_string()));
        };
        let value = value
            .parse::<u64>()
            .map_err(|source| CommitStatsError::Value {
                line: line.to_string(),
                source,
            })? as f64;
        match key {
            "commits" => stats.commits = value,
            "last_commit_ms" => stats.last_commit_ms = value,
            "max_commit_ms" => stats.max_commit_ms = value,
            "total_commit_ms" => stats.total_commit_ms = value,
            _ => {}
        }
    }
    Ok(stats)
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
    let commit_stats = dir.join("commit_stats");
    match std::fs::read_to_string(&commit_stats) {
        Ok(text) => {
            stats.commits = parse_commit_stats(&text)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
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
    type CommitValue = fn(&CommitStats) -> f64;
    let commit_families: [(&str, &str, Kind, CommitValue); 4] = [
        (
            "node_btrfs_commits_total",
            "The total number of commits that have occurred.",
            Kind::Counter,
            |c| c.commits,
        ),
        (
            "node_btrfs_last_commit_seconds",
            "Duration of the most recent commit, in seconds.",
            Kind::Gauge,
            |c| c.last_commit_ms / 1000.0,
        ),
        (
            "node_btrfs_max_commit_seconds",
            "Duration of the slowest commit, in seconds.",
            Kind::Gauge,
            |c| c.max_commit_ms / 1000.0,
        ),
        (
            "node_btrfs_commit_seconds_total",
            "Sum of the duration of all commits, in seconds.",
            Kind::Counter,
            |c| c.total_commit_ms / 1000.0,
        ),
    ];
    for (name, help, kind, value) in commit_families {
        let mut f = out.family(name, help, kind)?;
        for s in all {
            f.sample(&[("uuid", &s.uuid)], value(&s.commits))?;
        }
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
    fn commit_stats_as_procfs_reads_them() {
        let text = "commits 5921\ncur_commit_ms 0\nlast_commit_ms 14\nmax_commit_ms 2391\ntotal_commit_ms 184230\n";
        assert_eq!(
            parse_commit_stats(text).unwrap(),
            CommitStats {
                commits: 5921.0,
                last_commit_ms: 14.0,
                max_commit_ms: 2391.0,
                total_commit_ms: 184230.0,
            }
        );
        assert!(parse_commit_stats("commits\n").is_err());
        assert!(parse_commit_stats("commits 1 2\n").is_err());
        assert!(parse_commit_stats("commits -1\n").is_err());
        assert_eq!(parse_commit_stats("").unwrap(), CommitStats::default());
    }

    #[test]
    fn raid_ratios() {
        assert_eq!(ratio("raid5", 3), 1.5);
        assert_eq!(ratio("raid6", 4), 2.0);
        assert_eq!(ratio("raid1", 2), 2.0);
        assert_eq!(ratio("weird", 2), 0.0);
    }
}
