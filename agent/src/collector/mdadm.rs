//! `mdadm`: software RAID state from /proc/mdstat, parsed as procfs parses it for node_exporter
//! (disk counts from the `[n/m] [UU_]` status, sync progress from the recovery line), and, as
//! 1.12, each array's `raid_disks` and `degraded` from /sys/block/md*/md (those attributes kept
//! open: arrays are few and read every scrape).

use std::path::PathBuf;
use std::sync::Arc;

use regex::Regex;

use super::source::{DirListing, OpenAttr, read_into};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "mdadm",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(MdadmCollector::new()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct MdStat {
    pub name: String,
    pub state: String,
    pub disks_active: i64,
    pub disks_total: i64,
    pub disks_failed: i64,
    pub disks_spare: i64,
    pub blocks_total: i64,
    pub blocks_synced: i64,
}

pub struct MdstatParser {
    status: Regex,
    recovery_blocks: Regex,
}

impl MdstatParser {
    pub fn new() -> Self {
        MdstatParser {
            status: Regex::new(r"([0-9]+) blocks .*\[([0-9]+)/([0-9]+)\] \[([U_]+)\]")
                .expect("static regex"),
            recovery_blocks: Regex::new(r"\(([0-9]+)/[0-9]+\)").expect("static regex"),
        }
    }

    /// (active, total, size) from a device line and its status line.
    fn status(&self, device_line: &str, status_line: &str) -> Option<(i64, i64, i64)> {
        let size: i64 = status_line.split_ascii_whitespace().next()?.parse().ok()?;
        if device_line.contains("raid0") || device_line.contains("linear") {
            let total = device_line.matches('[').count() as i64;
            return Some((total, total, size));
        }
        if device_line.contains("inactive") {
            return Some((0, 0, size));
        }
        let caps = self.status.captures(status_line)?;
        let total = caps.get(2)?.as_str().parse().ok()?;
        let active = caps.get(3)?.as_str().parse().ok()?;
        Some((active, total, size))
    }

    /// Parses /proc/mdstat; a device whose lines do not parse is passed to `malformed` and left
    /// out.
    pub fn parse(&self, text: &str, mut malformed: impl FnMut(&str)) -> Vec<MdStat> {
        let lines: Vec<&str> = text.split('\n').collect();
        let mut stats = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty()
                || line.starts_with(' ')
                || line.starts_with('\t')
                || line.starts_with("Personalities")
                || line.starts_with("unused")
            {
                continue;
            }
            match self.device(&lines, i) {
                // A repeated device would repeat its samples: the first one counts.
                Some(stat) if !stats.iter().any(|s: &MdStat| s.name == stat.name) => {
                    stats.push(stat)
                }
                _ => malformed(line),
            }
        }
        stats
    }

    fn device(&self, lines: &[&str], i: usize) -> Option<MdStat> {
        let line = lines.get(i)?;
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let name = *fields.first()?;
        let mut state = fields.get(2)?.to_string();
        if lines.len() <= i + 3 {
            return None;
        }
        let failed = line.matches("(F)").count() as i64;
        let spare = line.matches("(S)").count() as i64;
        let (active, total, size) = self.status(line, lines.get(i + 1)?)?;
        let mut sync_index = i + 2;
        if lines.get(i + 2)?.contains("bitmap") {
            sync_index += 1;
        }
        let sync_line = lines.get(sync_index).copied().unwrap_or("");
        let mut synced = size;
        let recovering = sync_line.contains("recovery");
        let resyncing = sync_line.contains("resync");
        let checking = sync_line.contains("check");
        if recovering || resyncing || checking {
            state = if recovering {
                "recovering"
            } else if checking {
                "checking"
            } else {
                "resyncing"
            }
            .to_string();
            if sync_line.contains("PENDING") || sync_line.contains("DELAYED") {
                synced = 0;
            } else {
                synced = self
                    .recovery_blocks
                    .captures(sync_line)?
                    .get(1)?
                    .as_str()
                    .parse()
                    .ok()?;
            }
        }
        Some(MdStat {
            name: name.to_string(),
            state,
            disks_active: active,
            disks_total: total,
            disks_failed: failed,
            disks_spare: spare,
            blocks_total: size,
            blocks_synced: synced,
        })
    }
}

impl Default for MdstatParser {
    fn default() -> Self {
        Self::new()
    }
}

struct MdadmCollector {
    parser: MdstatParser,
    buf: String,
    /// /proc/mdstat exists once the md driver is loaded.
    absence: super::source::Absence,
    /// The md arrays in /sys/block (entries with an `md` directory), per hotplug epoch.
    blocks: DirListing,
    /// The listing `arrays` was built from.
    listed: Option<Arc<[String]>>,
    arrays: Vec<MdSysfs>,
    /// This scrape's `(array index, raid_disks, degraded)`.
    rows: Vec<(usize, Option<u64>, u64)>,
}

/// One array's sysfs attributes node_exporter 1.12 reads (procfs's `Mdraid`).
struct MdSysfs {
    device: String,
    level: (PathBuf, OpenAttr),
    raid_disks: (PathBuf, OpenAttr),
    degraded: (PathBuf, OpenAttr),
}

impl MdSysfs {
    fn new(dir: PathBuf, device: &str) -> Self {
        let attr = |name: &str| (dir.join(name), OpenAttr::default());
        MdSysfs {
            device: device.to_string(),
            level: attr("level"),
            raid_disks: attr("raid_disks"),
            degraded: attr("degraded"),
        }
    }
}

/// Reads one attribute; a missing one is an error, as procfs's `Mdraids` makes it.
fn read_md_attr(
    (path, attr): &mut (PathBuf, OpenAttr),
    buf: &mut String,
) -> Result<(), CollectorError> {
    attr.read(path, buf)
        .map_err(|e| CollectorError::io(&*path, e))
}

/// `raid_disks`: a count, or during a reshape "current (previous)"; `None` when neither.
fn parse_raid_disks(text: &str) -> Option<u64> {
    let text = text.trim();
    text.parse()
        .ok()
        .or_else(|| text.split_once(' ')?.0.parse().ok())
}

impl MdadmCollector {
    fn new() -> Self {
        MdadmCollector {
            parser: MdstatParser::new(),
            buf: String::new(),
            absence: Default::default(),
            blocks: DirListing::default(),
            listed: None,
            arrays: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// `(device, raid_disks, degraded)` of every array in sysfs, into `out`.
    fn read_sysfs(
        &mut self,
        ctx: &Context<'_>,
        out: &mut Vec<(usize, Option<u64>, u64)>,
    ) -> Result<(), CollectorError> {
        let block = ctx.paths.sys("block");
        let names = self
            .blocks
            .names(ctx, &block, |entry| {
                entry.file_name().to_string_lossy().starts_with("md")
                    && entry.path().join("md").is_dir()
            })
            .map_err(|e| CollectorError::io(&block, e))?;
        let same = match (&names, &self.listed) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.arrays = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|name| MdSysfs::new(block.join(name).join("md"), name))
                .collect();
            self.listed = names;
        }
        for (index, array) in self.arrays.iter_mut().enumerate() {
            read_md_attr(&mut array.level, &mut self.buf)?;
            let level = self.buf.trim();
            let has_disks = !matches!(level, "container" | "imsm" | "ddf" | "");
            let has_degraded = matches!(level, "raid1" | "raid4" | "raid5" | "raid6" | "raid10");
            let disks = if has_disks {
                read_md_attr(&mut array.raid_disks, &mut self.buf)?;
                parse_raid_disks(&self.buf)
            } else {
                None
            };
            let degraded = if has_degraded {
                read_md_attr(&mut array.degraded, &mut self.buf)?;
                self.buf.trim().parse().map_err(|_| CollectorError::Parse {
                    path: array.degraded.0.clone(),
                    reason: format!("not an unsigned integer: {:?}", self.buf),
                })?
            } else {
                0
            };
            out.push((index, disks, degraded));
        }
        Ok(())
    }
}

impl Collector for MdadmCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let path = ctx.paths.proc("mdstat");
        if !self.absence.read(ctx, || read_into(&path, &mut self.buf))? {
            return Err(CollectorError::NoData);
        }
        let stats = self
            .parser
            .parse(&self.buf, |line| ctx.malformed(&path, line));
        if !stats.is_empty() {
            write_mdstat(out, &stats)?;
        }
        // Reused between scrapes: taken out while `read_sysfs` borrows the collector.
        let mut arrays = std::mem::take(&mut self.rows);
        arrays.clear();
        let read = self.read_sysfs(ctx, &mut arrays);
        let written = read.and_then(|()| self.write_sysfs(out, &arrays));
        self.rows = arrays;
        written
    }
}

impl MdadmCollector {
    fn write_sysfs(
        &self,
        out: &mut MetricWriter<'_, '_>,
        arrays: &[(usize, Option<u64>, u64)],
    ) -> Result<(), CollectorError> {
        if arrays.is_empty() {
            return Ok(());
        }
        let device = |i: usize| self.arrays.get(i).map_or("", |a| a.device.as_str());
        if arrays.iter().any(|(_, disks, _)| disks.is_some()) {
            let mut f = out.family(
                "node_md_raid_disks",
                "Number of raid disks on device.",
                Kind::Gauge,
            )?;
            for (i, disks, _) in arrays {
                if let Some(disks) = disks {
                    f.sample(&[("device", device(*i))], *disks as f64)?;
                }
            }
        }
        let mut f = out.family(
            "node_md_degraded",
            "Number of degraded disks on device.",
            Kind::Gauge,
        )?;
        for (i, _, degraded) in arrays {
            f.sample(&[("device", device(*i))], *degraded as f64)?;
        }
        Ok(())
    }
}

/// The /proc/mdstat families.
fn write_mdstat(out: &mut MetricWriter<'_, '_>, stats: &[MdStat]) -> Result<(), CollectorError> {
    let mut f = out.family(
        "node_md_disks_required",
        "Total number of disks of device.",
        Kind::Gauge,
    )?;
    for s in stats {
        f.sample(&[("device", &s.name)], s.disks_total as f64)?;
    }
    let mut f = out.family(
        "node_md_disks",
        "Number of active/failed/spare disks of device.",
        Kind::Gauge,
    )?;
    for s in stats {
        for (state, n) in [
            ("active", s.disks_active),
            ("failed", s.disks_failed),
            ("spare", s.disks_spare),
        ] {
            f.sample(&[("device", &s.name), ("state", state)], n as f64)?;
        }
    }
    let mut f = out.family(
        "node_md_state",
        "Indicates the state of md-device.",
        Kind::Gauge,
    )?;
    for s in stats {
        for (label, state) in [
            ("active", "active"),
            ("inactive", "inactive"),
            ("recovering", "recovering"),
            ("resync", "resyncing"),
            ("check", "checking"),
        ] {
            let value = if s.state == state { 1.0 } else { 0.0 };
            f.sample(&[("device", &s.name), ("state", label)], value)?;
        }
    }
    let mut f = out.family(
        "node_md_blocks",
        "Total number of blocks on device.",
        Kind::Gauge,
    )?;
    for s in stats {
        f.sample(&[("device", &s.name)], s.blocks_total as f64)?;
    }
    let mut f = out.family(
        "node_md_blocks_synced",
        "Number of blocks synced on device.",
        Kind::Gauge,
    )?;
    for s in stats {
        f.sample(&[("device", &s.name)], s.blocks_synced as f64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, fixture, render};

    #[test]
    fn golden() {
        assert_renders_golden("basic", "mdadm", |_| Box::new(MdadmCollector::new()));
    }

    /// Found by fuzzing (fuzz/regressions/agent_proc_mdstat): a device listed twice was
    /// rendered twice, text no parser takes. The first listing counts, the second is malformed.
    #[test]
    fn a_repeated_device_counts_once() {
        let text = "md1 : active raid1 sdb1[1] sda1[0]\n      100 blocks [2/2] [UU]\n\n\
                    md1 : active raid1 sdd1[1] sdc1[0]\n      200 blocks [2/1] [U_]\n";
        let mut malformed = Vec::new();
        let stats = MdstatParser::new().parse(text, |l| malformed.push(l.to_string()));
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].blocks_total, 100);
        assert_eq!(malformed, ["md1 : active raid1 sdd1[1] sdc1[0]"]);
    }

    /// A degraded RAID 6 (one member faulty), a clean RAID 1 and a RAID 0 (which has no
    /// `degraded` attribute: 0, as node_exporter).
    #[test]
    fn degraded_array_from_sysfs() {
        assert_renders_golden("storage", "mdadm", |_| Box::new(MdadmCollector::new()));
        let text = render(
            "mdadm",
            Box::new(MdadmCollector::new()),
            Paths::fixture(&fixture("storage")),
        );
        for line in [
            "node_md_degraded{device=\"md127\"} 1",
            "node_md_degraded{device=\"md125\"} 0",
            "node_md_raid_disks{device=\"md127\"} 6",
            "node_md_disks{device=\"md127\",state=\"failed\"} 1",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
        assert_eq!(parse_raid_disks("11 (10)"), Some(11));
        assert_eq!(parse_raid_disks("x"), None);
    }

    #[test]
    fn a_missing_md_attribute_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/mdstat"),
            "Personalities : \nunused devices: <none>\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("sys/block/md0/md")).unwrap();
        std::fs::write(dir.path().join("sys/block/md0/md/level"), "raid1\n").unwrap();
        let text = render(
            "mdadm",
            Box::new(MdadmCollector::new()),
            Paths::fixture(dir.path()),
        );
        assert!(
            text.contains("node_scrape_collector_success{collector=\"mdadm\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn malformed_device_is_skipped() {
        let mut bad = Vec::new();
        let stats = MdstatParser::new().parse(
            "Personalities : [raid1]\nmd9 : active raid1 sda1[0]\n      garbage\n\nunused devices: <none>\n",
            |l| bad.push(l.to_string()),
        );
        assert!(stats.is_empty());
        assert_eq!(bad, ["md9 : active raid1 sda1[0]"]);
    }

    #[test]
    fn missing_mdstat_is_no_data() {
        let root = fixture("odd");
        let text = render(
            "mdadm",
            Box::new(MdadmCollector::new()),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"mdadm\"} 0"));
    }
}
