//! `diskstats`: block device I/O statistics from /proc/diskstats, with node_exporter 1.5's units
//! (sectors × 512 → bytes, milliseconds → seconds) and its udev-derived info families;
//! `node_disk_info` carries `rotational` from /sys/block/<device>/queue/rotational (1.12).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Arg;

use super::filter::{DeviceFilter, device_filter};
use super::source::read_into;
use super::source::{Absence, OpenAttr, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "diskstats",
    default_enabled: true,
    flags,
    build,
};

const DEVICE_EXCLUDE: &str = "collector.diskstats.device-exclude";
const OLD_DEVICE_EXCLUDE: &str = "collector.diskstats.ignored-devices";
const DEVICE_INCLUDE: &str = "collector.diskstats.device-include";
pub const DEFAULT_DEVICE_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

fn flags(command: clap::Command) -> clap::Command {
    command
        .arg(
            Arg::new(DEVICE_EXCLUDE)
                .long(DEVICE_EXCLUDE)
                .default_value(DEFAULT_DEVICE_EXCLUDE)
                .help("Regexp of diskstats devices to exclude (mutually exclusive to device-include)."),
        )
        .arg(
            Arg::new(OLD_DEVICE_EXCLUDE)
                .long(OLD_DEVICE_EXCLUDE)
                .hide(true)
                .help("DEPRECATED: Use collector.diskstats.device-exclude"),
        )
        .arg(
            Arg::new(DEVICE_INCLUDE)
                .long(DEVICE_INCLUDE)
                .help("Regexp of diskstats devices to include (mutually exclusive to device-exclude)."),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let filter = device_filter(
        ctx,
        DEVICE_EXCLUDE,
        Some(OLD_DEVICE_EXCLUDE),
        DEVICE_INCLUDE,
        None,
    )?;
    Ok(Box::new(DiskstatsCollector::new(filter)))
}

/// The per-device counters node_exporter derives from /proc/diskstats, in field order, with the
/// factor each raw field is multiplied by.
const STATS: [(&str, &str, Kind, f64); 17] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        Kind::Counter,
        512.0,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        Kind::Counter,
        512.0,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        Kind::Gauge,
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        Kind::Counter,
        1.0,
    ),
    (
        // node_exporter 1.5 reports discarded sectors unscaled.
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        Kind::Counter,
        0.001,
    ),
];

/// One /proc/diskstats line: device, numbers, and how many of the 17 counters it has.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskLine<'a> {
    pub major: u32,
    pub minor: u32,
    pub device: &'a str,
    pub stats: [u64; 17],
    pub count: usize,
}

/// Parses a /proc/diskstats line as procfs does: fields in order until the first that does not
/// parse; a line needs at least 11 counters (14 fields) to count. `None` for too-short lines.
pub fn parse_diskstats_line(line: &str) -> Option<DiskLine<'_>> {
    let mut fields = line.split_ascii_whitespace();
    let major = fields.next()?.parse().ok()?;
    let minor = fields.next()?.parse().ok()?;
    let device = fields.next()?;
    let mut stats = [0u64; 17];
    let mut count = 0;
    for slot in &mut stats {
        match fields.next().map(str::parse::<u64>) {
            Some(Ok(v)) => {
                *slot = v;
                count += 1;
            }
            _ => break,
        }
    }
    (count >= 11).then_some(DiskLine {
        major,
        minor,
        device,
        stats,
        count,
    })
}

/// `major minor name` and four numbers: a partition line of a 2.6 kernel.
fn is_short_partition_line(line: &str) -> bool {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    fields.len() == 7
        && fields
            .iter()
            .enumerate()
            .all(|(i, f)| i == 2 || f.parse::<u64>().is_ok())
}

/// The udev properties (`E:` lines of /run/udev/data/b<major>:<minor>) node_exporter uses.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UdevInfo {
    pub path: String,
    pub wwn: String,
    pub model: String,
    pub serial: String,
    pub revision: String,
    pub fs_type: String,
    pub fs_usage: String,
    pub fs_uuid: String,
    pub fs_version: String,
    pub dm_name: String,
    pub dm_uuid: String,
    pub dm_vg_name: String,
    pub dm_lv_name: String,
    pub dm_lv_layer: String,
    pub ata: bool,
    pub write_cache: Option<String>,
    pub write_cache_enabled: Option<String>,
    pub rotation_rate_rpm: Option<String>,
}

/// Parses a udev database file into `info` (reset first).
pub fn parse_udev(text: &str, info: &mut UdevInfo) {
    *info = UdevInfo::default();
    // The serial label, as 1.12: SCSI_IDENT_SERIAL (printed on the disk), else ID_SERIAL_SHORT,
    // else ID_SERIAL (virtio disks have only that).
    let (mut scsi_serial, mut serial_short, mut serial) = ("", "", "");
    for line in text.lines() {
        if let Some((key, value)) = line.strip_prefix("E:").and_then(|p| p.split_once('=')) {
            match key {
                "SCSI_IDENT_SERIAL" => scsi_serial = value,
                "ID_SERIAL_SHORT" => serial_short = value,
                "ID_SERIAL" => serial = value,
                _ => {}
            }
        }
    }
    info.serial = [scsi_serial, serial_short, serial]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string();
    for line in text.lines() {
        let Some((key, value)) = line.strip_prefix("E:").and_then(|p| p.split_once('=')) else {
            continue;
        };
        let value = value.to_string();
        match key {
            "ID_PATH" => info.path = value,
            "ID_WWN" => info.wwn = value,
            "ID_MODEL" => info.model = value,
            "ID_REVISION" => info.revision = value,
            "ID_FS_TYPE" => info.fs_type = value,
            "ID_FS_USAGE" => info.fs_usage = value,
            "ID_FS_UUID" => info.fs_uuid = value,
            "ID_FS_VERSION" => info.fs_version = value,
            "DM_NAME" => info.dm_name = value,
            "DM_UUID" => info.dm_uuid = value,
            "DM_VG_NAME" => info.dm_vg_name = value,
            "DM_LV_NAME" => info.dm_lv_name = value,
            "DM_LV_LAYER" => info.dm_lv_layer = value,
            "ID_ATA" => info.ata = !value.is_empty(),
            "ID_ATA_WRITE_CACHE" => info.write_cache = Some(value),
            "ID_ATA_WRITE_CACHE_ENABLED" => info.write_cache_enabled = Some(value),
            "ID_ATA_ROTATION_RATE_RPM" => info.rotation_rate_rpm = Some(value),
            _ => {}
        }
    }
}

struct Disk {
    device: String,
    major: String,
    minor: String,
    values: [f64; 17],
    count: usize,
    udev: UdevInfo,
    /// /sys/block/<device>/queue/rotational, kept open; reset when the slot's device changes.
    rotational: OpenAttr,
    /// The attribute was missing (a partition, a fixture without sysfs) in this epoch.
    rotational_absent: Absence,
    /// "1" (rotational) or "0", as node_exporter 1.12 labels `node_disk_info`.
    rotational_label: &'static str,
}

struct DiskstatsCollector {
    filter: DeviceFilter,
    source: SourceFile,
    text: String,
    udev_text: String,
    udev_path: PathBuf,
    /// Scratch: a disk's sysfs attribute path.
    attr_path: PathBuf,
    disks: Vec<Disk>,
    /// How many entries of `disks` are filled this scrape (the rest are kept for reuse).
    used: usize,
}

impl DiskstatsCollector {
    fn new(filter: DeviceFilter) -> Self {
        DiskstatsCollector {
            filter,
            source: SourceFile::proc("diskstats"),
            text: String::new(),
            udev_text: String::new(),
            udev_path: PathBuf::new(),
            attr_path: PathBuf::new(),
            disks: Vec::new(),
            used: 0,
        }
    }
}

impl Collector for DiskstatsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.text)?;
        let path = self.source.display_path();
        self.used = 0;
        for line in self.text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let Some(parsed) = parse_diskstats_line(line) else {
                // Partitions on 2.6 kernels have only 4 counters: skipped silently, as procfs
                // does; anything else that does not parse is malformed.
                if !is_short_partition_line(line) {
                    ctx.malformed(path, line);
                }
                continue;
            };
            if self.filter.ignored(parsed.device) {
                continue;
            }
            // A repeated device would repeat its samples: the first line counts.
            if self.disks[..self.used]
                .iter()
                .any(|d| d.device == parsed.device)
            {
                ctx.malformed(path, line);
                continue;
            }
            if self.used == self.disks.len() {
                self.disks.push(Disk {
                    device: String::new(),
                    major: String::new(),
                    minor: String::new(),
                    values: [0.0; 17],
                    count: 0,
                    udev: UdevInfo::default(),
                    rotational: OpenAttr::default(),
                    rotational_absent: Absence::default(),
                    rotational_label: "0",
                });
            }
            let Some(disk) = self.disks.get_mut(self.used) else {
                continue;
            };
            self.used += 1;
            if disk.device != parsed.device {
                disk.rotational = OpenAttr::default();
                disk.rotational_absent = Absence::default();
                disk.device.clear();
                disk.device.push_str(parsed.device);
            }
            disk.major.clear();
            let _ = write!(disk.major, "{}", parsed.major);
            disk.minor.clear();
            let _ = write!(disk.minor, "{}", parsed.minor);
            for ((value, raw), (_, _, _, factor)) in
                disk.values.iter_mut().zip(parsed.stats).zip(STATS)
            {
                *value = raw as f64 * factor;
            }
            disk.count = parsed.count;
            self.udev_path.clear();
            self.udev_path.push(&ctx.paths.udev_data);
            self.udev_path
                .push(format!("b{}:{}", parsed.major, parsed.minor));
            match read_into(&self.udev_path, &mut self.udev_text) {
                Ok(()) => parse_udev(&self.udev_text, &mut disk.udev),
                Err(_) => disk.udev = UdevInfo::default(),
            }
            disk.rotational_label = "0";
            if !disk.rotational_absent.known(ctx) {
                self.attr_path.clear();
                self.attr_path.push(&ctx.paths.sysfs);
                self.attr_path.push("block");
                self.attr_path.push(&disk.device);
                self.attr_path.push("queue/rotational");
                // Any failure reads as "0", as node_exporter's.
                let read = disk
                    .rotational
                    .read_attr(&self.attr_path, &mut self.udev_text);
                disk.rotational_absent
                    .record(ctx, matches!(read, Ok(false)));
                if matches!(read, Ok(true)) && self.udev_text.trim() == "1" {
                    disk.rotational_label = "1";
                }
            }
        }
        let disks = self.disks.get(..self.used).unwrap_or_default();
        write_families(out, disks)?;
        Ok(())
    }
}

fn write_families(out: &mut MetricWriter<'_, '_>, disks: &[Disk]) -> Result<(), std::fmt::Error> {
    if disks.is_empty() {
        return Ok(());
    }
    let mut family = out.family(
        "node_disk_info",
        "Info of /sys/block/<block_device>.",
        Kind::Gauge,
    )?;
    for d in disks {
        family.sample(
            &[
                ("device", d.device.as_str()),
                ("major", d.major.as_str()),
                ("minor", d.minor.as_str()),
                ("path", d.udev.path.as_str()),
                ("wwn", d.udev.wwn.as_str()),
                ("model", d.udev.model.as_str()),
                ("serial", d.udev.serial.as_str()),
                ("revision", d.udev.revision.as_str()),
                ("rotational", d.rotational_label),
            ],
            1.0,
        )?;
    }
    for (i, (name, help, kind, _)) in STATS.iter().enumerate() {
        if !disks.iter().any(|d| d.count > i) {
            continue;
        }
        let mut family = out.family(name, help, *kind)?;
        for d in disks.iter().filter(|d| d.count > i) {
            if let Some(v) = d.values.get(i) {
                family.sample(&[("device", d.device.as_str())], *v)?;
            }
        }
    }
    if disks.iter().any(|d| !d.udev.fs_type.is_empty()) {
        let mut family = out.family(
            "node_disk_filesystem_info",
            "Info about disk filesystem.",
            Kind::Gauge,
        )?;
        for d in disks.iter().filter(|d| !d.udev.fs_type.is_empty()) {
            family.sample(
                &[
                    ("device", d.device.as_str()),
                    ("type", d.udev.fs_type.as_str()),
                    ("usage", d.udev.fs_usage.as_str()),
                    ("uuid", d.udev.fs_uuid.as_str()),
                    ("version", d.udev.fs_version.as_str()),
                ],
                1.0,
            )?;
        }
    }
    if disks.iter().any(|d| !d.udev.dm_name.is_empty()) {
        let mut family = out.family(
            "node_disk_device_mapper_info",
            "Info about disk device mapper.",
            Kind::Gauge,
        )?;
        for d in disks.iter().filter(|d| !d.udev.dm_name.is_empty()) {
            family.sample(
                &[
                    ("device", d.device.as_str()),
                    ("name", d.udev.dm_name.as_str()),
                    ("uuid", d.udev.dm_uuid.as_str()),
                    ("vg_name", d.udev.dm_vg_name.as_str()),
                    ("lv_name", d.udev.dm_lv_name.as_str()),
                    ("lv_layer", d.udev.dm_lv_layer.as_str()),
                ],
                1.0,
            )?;
        }
    }
    type Attr = fn(&UdevInfo) -> Option<&String>;
    let ata: [(&str, &str, Attr); 3] = [
        (
            "node_disk_ata_write_cache",
            "ATA disk has a write cache.",
            |u| u.write_cache.as_ref(),
        ),
        (
            "node_disk_ata_write_cache_enabled",
            "ATA disk has its write cache enabled.",
            |u| u.write_cache_enabled.as_ref(),
        ),
        (
            "node_disk_ata_rotation_rate_rpm",
            "ATA disk rotation rate in RPMs (0 for SSDs).",
            |u| u.rotation_rate_rpm.as_ref(),
        ),
    ];
    for (name, help, attr) in ata {
        let value = |d: &Disk| {
            d.udev
                .ata
                .then(|| attr(&d.udev))
                .flatten()
                .and_then(|s| s.trim().parse::<f64>().ok())
        };
        if !disks.iter().any(|d| value(d).is_some()) {
            continue;
        }
        let mut family = out.family(name, help, Kind::Gauge)?;
        for d in disks {
            if let Some(v) = value(d) {
                family.sample(&[("device", d.device.as_str())], v)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    fn default_filter() -> DeviceFilter {
        DeviceFilter {
            exclude: Some(regex::Regex::new(DEFAULT_DEVICE_EXCLUDE).unwrap()),
            include: None,
        }
    }

    #[test]
    fn golden() {
        assert_renders_golden("basic", "diskstats", |_| {
            Box::new(DiskstatsCollector::new(default_filter()))
        });
    }

    /// A storage node: spinning disks under an md array, NVMe, a partition (no queue
    /// directory: rotational "0", as node_exporter).
    #[test]
    fn rotational_disks() {
        assert_renders_golden("storage", "diskstats", |_| {
            Box::new(DiskstatsCollector::new(default_filter()))
        });
    }

    #[test]
    fn old_kernel_and_malformed_lines() {
        assert_renders_golden("odd", "diskstats", |_| {
            Box::new(DiskstatsCollector::new(default_filter()))
        });
    }

    #[test]
    fn line_forms() {
        let l = parse_diskstats_line(
            " 254 0 vda 66709 7715 5690946 60012 43262 54154 21792264 56749 0 11360 118302 13423 43 2343648 1368 5868 171",
        )
        .unwrap();
        assert_eq!((l.major, l.minor, l.device, l.count), (254, 0, "vda", 17));
        assert_eq!(l.stats[2], 5690946);
        let l = parse_diskstats_line("8 0 sda 1 2 3 4 5 6 7 8 9 10 11").unwrap();
        assert_eq!(l.count, 11);
        // Partitions on 2.6 kernels have 4 counters only: skipped, as procfs does.
        assert_eq!(parse_diskstats_line("8 1 sda1 1 2 3 4"), None);
        assert_eq!(parse_diskstats_line("garbage"), None);
        assert_eq!(
            parse_diskstats_line("8 x sda 1 2 3 4 5 6 7 8 9 10 11"),
            None
        );
    }
}
