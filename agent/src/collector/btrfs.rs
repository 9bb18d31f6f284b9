//! `btrfs`: filesystem allocation and commit statistics from /sys/fs/btrfs/<uuid>, as
//! node_exporter 1.12.1 reports them from sysfs (`commit_stats` exists since Linux 6.0: absent,
//! the commit families read 0, as in procfs; a line that is not `<key> <value>` fails the
//! collection, as it fails procfs's `Stats()`).
//!
//! Mounted filesystems are also asked with ioctls (`BTRFS_IOC_FS_INFO`, `DEV_INFO`,
//! `GET_DEV_STATS` on the mount point, as node_exporter 1.12.1 does through dennwc/btrfs) for
//! each device's size, unused bytes and error counters; the mounts come from /proc/1/mountinfo
//! (or /proc/self/mountinfo), every btrfs mount, the first one that answers per device and per
//! filesystem. A filesystem no mount of which answers (not mounted here, no permission) falls
//! back to sysfs for `node_btrfs_device_size_bytes` (without `btrfs_dev_uuid`), as in 1.12.1.

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
    /// The devices as the ioctls report them, when a mount of this filesystem answered.
    pub ioctl_devices: Option<Vec<IoctlDevice>>,
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

/// One device as the ioctls report it.
#[derive(Debug, Clone, PartialEq)]
pub struct IoctlDevice {
    /// The last component of the device's path (`/dev/sdb` → `sdb`).
    pub name: String,
    /// The device's UUID, dashed (`btrfs_dev_uuid`).
    pub uuid: String,
    pub total_bytes: f64,
    pub bytes_used: f64,
    /// write, read, flush, corruption, generation.
    pub errors: [f64; 5],
}

const ERROR_TYPES: [&str; 5] = ["write", "read", "flush", "corruption", "generation"];

/// The ioctl side, apart from the collector: mount points in, devices by filesystem out.
mod ioctl {
    use std::collections::HashMap;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    use super::IoctlDevice;

    const MAGIC: u64 = 0x94;
    const fn ior(nr: u64, size: usize) -> u64 {
        (2 << 30) | ((size as u64) << 16) | (MAGIC << 8) | nr
    }
    const fn iowr(nr: u64, size: usize) -> u64 {
        (3 << 30) | ((size as u64) << 16) | (MAGIC << 8) | nr
    }

    /// `struct btrfs_ioctl_fs_info_args` (include/uapi/linux/btrfs.h): 1 KiB.
    #[repr(C)]
    struct FsInfoArgs {
        max_id: u64,
        num_devices: u64,
        fsid: [u8; 16],
        rest: [u8; 1024 - 32],
    }
    /// `struct btrfs_ioctl_dev_info_args`: 4 KiB, the path in its last 1 KiB.
    #[repr(C)]
    struct DevInfoArgs {
        devid: u64,
        uuid: [u8; 16],
        bytes_used: u64,
        total_bytes: u64,
        unused: [u64; 379],
        path: [u8; 1024],
    }
    /// `struct btrfs_ioctl_get_dev_stats`.
    #[repr(C)]
    struct DevStatsArgs {
        devid: u64,
        nr_items: u64,
        flags: u64,
        values: [u64; 5],
        unused: [u64; 121],
    }
    const _: () = assert!(std::mem::size_of::<FsInfoArgs>() == 1024);
    const _: () = assert!(std::mem::size_of::<DevInfoArgs>() == 4096);
    const _: () = assert!(std::mem::size_of::<DevStatsArgs>() == 1032);

    const FS_INFO: u64 = ior(31, std::mem::size_of::<FsInfoArgs>());
    const DEV_INFO: u64 = iowr(30, std::mem::size_of::<DevInfoArgs>());
    const GET_DEV_STATS: u64 = iowr(52, std::mem::size_of::<DevStatsArgs>());

    /// Runs one ioctl whose argument is `arg`.
    fn call<T>(file: &std::fs::File, request: u64, arg: &mut T) -> std::io::Result<()> {
        // SAFETY: `arg` is a `repr(C)` struct of exactly the size the request encodes, which
        // the kernel reads and writes within; the fd is open for the call's duration.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                request as libc::Ioctl,
                arg as *mut T as *mut libc::c_void,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn zeroed<T>() -> Box<T> {
        // SAFETY: every type used here is plain integers and byte arrays, for which all-zero
        // bytes are a valid value.
        unsafe { Box::new(std::mem::zeroed()) }
    }

    /// dennwc/btrfs's UUID formatting: 8-4-4-4-12 lower-case hex.
    pub fn dashed_uuid(bytes: &[u8; 16]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// The devices of the filesystem mounted at `mount_point`: `(fsid as 32 hex digits,
    /// devices)`. Device ids need not start at 0 nor be contiguous (ENODEV is skipped).
    pub fn filesystem(mount_point: &Path) -> std::io::Result<(String, Vec<IoctlDevice>)> {
        let file = std::fs::File::open(mount_point)?;
        let mut info = zeroed::<FsInfoArgs>();
        call(&file, FS_INFO, &mut *info)?;
        let fsid: String = info.fsid.iter().map(|b| format!("{b:02x}")).collect();
        let mut devices = Vec::new();
        for id in 0..=info.max_id {
            let mut dev = zeroed::<DevInfoArgs>();
            dev.devid = id;
            match call(&file, DEV_INFO, &mut *dev) {
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
                other => other?,
            }
            let mut stats = zeroed::<DevStatsArgs>();
            stats.devid = id;
            stats.nr_items = 5;
            call(&file, GET_DEV_STATS, &mut *stats)?;
            let path_len = dev
                .path
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(dev.path.len());
            let path = String::from_utf8_lossy(&dev.path[..path_len]);
            devices.push(IoctlDevice {
                name: path.rsplit('/').next().unwrap_or_default().to_string(),
                uuid: dashed_uuid(&dev.uuid),
                total_bytes: dev.total_bytes as f64,
                bytes_used: dev.bytes_used as f64,
                errors: stats.values.map(|v| v as f64),
            });
            if devices.len() as u64 == info.num_devices {
                break;
            }
        }
        Ok((fsid, devices))
    }

    /// Every mounted btrfs filesystem that answers, by fsid: `mounts` are (source device,
    /// mount point as the agent reaches it); the first that answers per device and per fsid.
    pub fn all(mounts: &[(String, std::path::PathBuf)]) -> HashMap<String, Vec<IoctlDevice>> {
        let mut done_devices: Vec<&str> = Vec::new();
        let mut found = HashMap::new();
        for (device, mount_point) in mounts {
            if done_devices.contains(&device.as_str()) {
                continue;
            }
            match filesystem(mount_point) {
                Ok((fsid, devices)) => {
                    if found.contains_key(&fsid) {
                        continue;
                    }
                    done_devices.push(device);
                    found.insert(fsid, devices);
                }
                Err(e) => tracing::debug!(
                    mount_point = %mount_point.display(),
                    error = %e,
                    "btrfs ioctl failed; this mount is skipped"
                ),
            }
        }
        found
    }
}

/// The btrfs mounts of a mountinfo text: (source device, mount point).
fn btrfs_mounts(mountinfo: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let mount_point = fields.nth(4)?;
            fields.by_ref().find(|f| *f == "-")?;
            let (fs_type, source) = (fields.next()?, fields.next()?);
            (fs_type == "btrfs").then(|| {
                (
                    source.to_string(),
                    mount_point.replace("\\040", " ").replace("\\011", "\t"),
                )
            })
        })
        .collect()
}

#[derive(Default)]
struct BtrfsCollector {
    buf: String,
    filesystems: DirListing,
}

impl BtrfsCollector {
    /// Devices by fsid from every btrfs mount that answers (empty when mountinfo is unreadable,
    /// as node_exporter then goes on with sysfs alone).
    fn ioctl_devices(ctx: &Context<'_>) -> std::collections::HashMap<String, Vec<IoctlDevice>> {
        let text = std::fs::read_to_string(ctx.paths.proc("1/mountinfo"))
            .or_else(|_| std::fs::read_to_string(ctx.paths.proc("self/mountinfo")));
        let Ok(text) = text else {
            return Default::default();
        };
        let mounts: Vec<(String, std::path::PathBuf)> = btrfs_mounts(&text)
            .into_iter()
            .map(|(device, mount_point)| (device, ctx.paths.root(&mount_point)))
            .collect();
        if mounts.is_empty() {
            return Default::default();
        }
        ioctl::all(&mounts)
    }
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
        if !filesystems.is_empty() {
            let mut by_fsid = Self::ioctl_devices(ctx);
            for fs in &mut filesystems {
                fs.ioctl_devices = by_fsid.remove(&fs.uuid.replace('-', ""));
            }
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
    let any_ioctl = all
        .iter()
        .any(|s| s.ioctl_devices.as_ref().is_some_and(|d| !d.is_empty()));
    let any_device = any_ioctl
        || all
            .iter()
            .any(|s| s.ioctl_devices.is_none() && !s.devices.is_empty());
    if any_device {
        let mut f = out.family(
            "node_btrfs_device_size_bytes",
            "Size of a device that is part of the filesystem.",
            Kind::Gauge,
        )?;
        for s in all {
            match &s.ioctl_devices {
                Some(devices) => {
                    for d in devices {
                        f.sample(&device_labels(s, d), d.total_bytes)?;
                    }
                }
                None => {
                    for (device, size) in &s.devices {
                        f.sample(&[("uuid", &s.uuid), ("device", device)], *size)?;
                    }
                }
            }
        }
    }
    if any_ioctl {
        let mut f = out.family(
            "node_btrfs_device_unused_bytes",
            "Unused bytes unused on a device that is part of the filesystem.",
            Kind::Gauge,
        )?;
        for s in all {
            for d in s.ioctl_devices.iter().flatten() {
                f.sample(&device_labels(s, d), d.total_bytes - d.bytes_used)?;
            }
        }
        let mut f = out.family(
            "node_btrfs_device_errors_total",
            "Errors reported for the device",
            Kind::Counter,
        )?;
        for s in all {
            for d in s.ioctl_devices.iter().flatten() {
                for (kind, value) in ERROR_TYPES.iter().zip(d.errors) {
                    f.sample(
                        &[
                            ("uuid", &s.uuid),
                            ("type", kind),
                            ("device", &d.name),
                            ("btrfs_dev_uuid", &d.uuid),
                        ],
                        value,
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn device_labels<'a>(s: &'a FsStats, d: &'a IoctlDevice) -> [(&'static str, &'a str); 3] {
    [
        ("uuid", &s.uuid),
        ("device", &d.name),
        ("btrfs_dev_uuid", &d.uuid),
    ]
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
    fn mounts_and_uuids_as_node_exporter_reads_them() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
41 22 0:40 / /srv/data rw,relatime shared:20 - btrfs /dev/sdb rw,space_cache=v2
42 22 0:40 /snap /srv/snap\\040x rw - btrfs /dev/sdb rw
bad line
";
        assert_eq!(
            btrfs_mounts(text),
            [
                ("/dev/sdb".to_string(), "/srv/data".to_string()),
                ("/dev/sdb".to_string(), "/srv/snap x".to_string()),
            ]
        );
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = (i as u8) * 17;
        }
        assert_eq!(
            ioctl::dashed_uuid(&id),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
    }

    #[test]
    fn a_directory_that_is_not_btrfs_is_an_ioctl_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ioctl::filesystem(dir.path()).is_err());
        let found = ioctl::all(&[("/dev/none".into(), dir.path().to_path_buf())]);
        assert!(found.is_empty());
    }

    #[test]
    fn raid_ratios() {
        assert_eq!(ratio("raid5", 3), 1.5);
        assert_eq!(ratio("raid6", 4), 2.0);
        assert_eq!(ratio("raid1", 2), 2.0);
        assert_eq!(ratio("weird", 2), 0.0);
    }
}
