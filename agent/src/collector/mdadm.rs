//! `mdadm`: software RAID state from /proc/mdstat, parsed as procfs parses it for node_exporter
//! 1.5 (disk counts from the `[n/m] [UU_]` status, sync progress from the recovery line).

use regex::Regex;

use super::source::read_into;
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
                Some(stat) => stats.push(stat),
                None => malformed(line),
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
}

impl MdadmCollector {
    fn new() -> Self {
        MdadmCollector {
            parser: MdstatParser::new(),
            buf: String::new(),
            absence: Default::default(),
        }
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
        if stats.is_empty() {
            return Ok(());
        }
        let mut f = out.family(
            "node_md_disks_required",
            "Total number of disks of device.",
            Kind::Gauge,
        )?;
        for s in &stats {
            f.sample(&[("device", &s.name)], s.disks_total as f64)?;
        }
        let mut f = out.family(
            "node_md_disks",
            "Number of active/failed/spare disks of device.",
            Kind::Gauge,
        )?;
        for s in &stats {
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
        for s in &stats {
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
        for s in &stats {
            f.sample(&[("device", &s.name)], s.blocks_total as f64)?;
        }
        let mut f = out.family(
            "node_md_blocks_synced",
            "Number of blocks synced on device.",
            Kind::Gauge,
        )?;
        for s in &stats {
            f.sample(&[("device", &s.name)], s.blocks_synced as f64)?;
        }
        Ok(())
    }
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
