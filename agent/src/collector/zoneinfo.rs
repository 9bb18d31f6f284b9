//! `zoneinfo`: per-zone memory statistics from /proc/zoneinfo, parsed as prometheus/procfs
//! 0.21.1 does for node_exporter 1.12.1: the file is cut into blocks at each "\nNode"; in a
//! block, a line matching `(\d+), zone\s+(\w+)` names the node and zone, and a line whose first
//! word is one of 34 known keys sets that field (the last one wins; a value that does not parse
//! as Go's `ParseInt(s, 0, 64)` is 0, as procfs's unchecked value parser leaves it), and
//! `protection: (a, b, …)` sets the protection array (left as it was when a number does not
//! parse). A field a block lacks is not reported for that zone: the per-node stats
//! (`nr_dirtied`, `nr_kernel_stack`, …) appear only in a node's first populated zone, and an
//! unpopulated zone has only its watermarks and protection.
//!
//! Families are written in name order and samples in (node, zone) order, as client_golang's
//! gathering sorts them. A missing /proc/zoneinfo is an error, as in 1.12.1. Cost: one file
//! kept open, one pread per scrape (about 40 KB on a two-node host with 64 CPUs).

use super::gosyntax::{parse_go_decimal, parse_go_int};
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "zoneinfo",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(ZoneinfoCollector::default()))
}

/// (key in the file, metric, help, kind), in procfs's field order.
/// How many fields procfs parses.
const N: usize = 34;

const FIELDS: [(&str, &str, &str, Kind); N] = [
    (
        "nr_free_pages",
        "node_zoneinfo_nr_free_pages",
        "Total number of free pages in the zone",
        Kind::Gauge,
    ),
    (
        "min",
        "node_zoneinfo_min_pages",
        "Zone watermark pages_min",
        Kind::Gauge,
    ),
    (
        "low",
        "node_zoneinfo_low_pages",
        "Zone watermark pages_low",
        Kind::Gauge,
    ),
    (
        "high",
        "node_zoneinfo_high_pages",
        "Zone watermark pages_high",
        Kind::Gauge,
    ),
    (
        "scanned",
        "node_zoneinfo_scanned_pages",
        "Pages scanned since last reclaim",
        Kind::Gauge,
    ),
    (
        "spanned",
        "node_zoneinfo_spanned_pages",
        "Total pages spanned by the zone, including holes",
        Kind::Gauge,
    ),
    (
        "present",
        "node_zoneinfo_present_pages",
        "Physical pages existing within the zone",
        Kind::Gauge,
    ),
    (
        "managed",
        "node_zoneinfo_managed_pages",
        "Present pages managed by the buddy system",
        Kind::Gauge,
    ),
    (
        "nr_active_anon",
        "node_zoneinfo_nr_active_anon_pages",
        "Number of anonymous pages recently more used",
        Kind::Gauge,
    ),
    (
        "nr_inactive_anon",
        "node_zoneinfo_nr_inactive_anon_pages",
        "Number of anonymous pages recently less used",
        Kind::Gauge,
    ),
    (
        "nr_isolated_anon",
        "node_zoneinfo_nr_isolated_anon_pages",
        "Temporary isolated pages from anon lru",
        Kind::Gauge,
    ),
    (
        "nr_anon_pages",
        "node_zoneinfo_nr_anon_pages",
        "Number of anonymous pages currently used by the system",
        Kind::Gauge,
    ),
    (
        "nr_anon_transparent_hugepages",
        "node_zoneinfo_nr_anon_transparent_hugepages",
        "Number of anonymous transparent huge pages currently used by the system",
        Kind::Gauge,
    ),
    (
        "nr_active_file",
        "node_zoneinfo_nr_active_file_pages",
        "Number of active pages with file-backing",
        Kind::Gauge,
    ),
    (
        "nr_inactive_file",
        "node_zoneinfo_nr_inactive_file_pages",
        "Number of inactive pages with file-backing",
        Kind::Gauge,
    ),
    (
        "nr_isolated_file",
        "node_zoneinfo_nr_isolated_file_pages",
        "Temporary isolated pages from file lru",
        Kind::Gauge,
    ),
    (
        "nr_file_pages",
        "node_zoneinfo_nr_file_pages",
        "Number of file pages",
        Kind::Gauge,
    ),
    (
        "nr_slab_reclaimable",
        "node_zoneinfo_nr_slab_reclaimable_pages",
        "Number of reclaimable slab pages",
        Kind::Gauge,
    ),
    (
        "nr_slab_unreclaimable",
        "node_zoneinfo_nr_slab_unreclaimable_pages",
        "Number of unreclaimable slab pages",
        Kind::Gauge,
    ),
    (
        "nr_mlock_stack",
        "node_zoneinfo_nr_mlock_stack_pages",
        "mlock()ed pages found and moved off LRU",
        Kind::Gauge,
    ),
    (
        "nr_kernel_stack",
        "node_zoneinfo_nr_kernel_stacks",
        "Number of kernel stacks",
        Kind::Gauge,
    ),
    (
        "nr_mapped",
        "node_zoneinfo_nr_mapped_pages",
        "Number of mapped pages",
        Kind::Gauge,
    ),
    (
        "nr_dirty",
        "node_zoneinfo_nr_dirty_pages",
        "Number of dirty pages",
        Kind::Gauge,
    ),
    (
        "nr_writeback",
        "node_zoneinfo_nr_writeback_pages",
        "Number of writeback pages",
        Kind::Gauge,
    ),
    (
        "nr_unevictable",
        "node_zoneinfo_nr_unevictable_pages",
        "Number of unevictable pages",
        Kind::Gauge,
    ),
    (
        "nr_shmem",
        "node_zoneinfo_nr_shmem_pages",
        "Number of shmem pages (included tmpfs/GEM pages)",
        Kind::Gauge,
    ),
    (
        "nr_dirtied",
        "node_zoneinfo_nr_dirtied_total",
        "Page dirtyings since bootup",
        Kind::Counter,
    ),
    (
        "nr_written",
        "node_zoneinfo_nr_written_total",
        "Page writings since bootup",
        Kind::Counter,
    ),
    (
        "numa_hit",
        "node_zoneinfo_numa_hit_total",
        "Allocated in intended node",
        Kind::Counter,
    ),
    (
        "numa_miss",
        "node_zoneinfo_numa_miss_total",
        "Allocated in non intended node",
        Kind::Counter,
    ),
    (
        "numa_foreign",
        "node_zoneinfo_numa_foreign_total",
        "Was intended here, hit elsewhere",
        Kind::Counter,
    ),
    (
        "numa_interleave",
        "node_zoneinfo_numa_interleave_total",
        "Interleaver preferred this zone",
        Kind::Counter,
    ),
    (
        "numa_local",
        "node_zoneinfo_numa_local_total",
        "Allocation from local node",
        Kind::Counter,
    ),
    (
        "numa_other",
        "node_zoneinfo_numa_other_total",
        "Allocation from other node",
        Kind::Counter,
    ),
];

/// One block of the file.
struct Zone<'a> {
    node: &'a str,
    zone: &'a str,
    values: [Option<i64>; N],
    /// Into the collector's protection buffer: (start, len); `None` when absent.
    protection: Option<(usize, usize)>,
}

struct ZoneinfoCollector {
    source: SourceFile,
    buf: String,
    /// All zones' protection arrays, one after the other.
    protection: Vec<i64>,
    /// "node_zoneinfo_protection_<i>" and its help, by i.
    protection_names: Vec<(String, String)>,
}

impl Default for ZoneinfoCollector {
    fn default() -> Self {
        ZoneinfoCollector {
            source: SourceFile::proc("zoneinfo"),
            buf: String::new(),
            protection: Vec::new(),
            protection_names: Vec::new(),
        }
    }
}

/// procfs's `nodeZoneRE` `(\d+), zone\s+(\w+)`: the leftmost match in `line`.
fn node_zone(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(at) = line[from..].find(", zone") {
        let comma = from + at;
        let digits_start = bytes[..comma]
            .iter()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |i| i + 1);
        let after = comma + ", zone".len();
        let rest = &line[after..];
        let spaces = rest.len() - rest.trim_start_matches(is_re2_space).len();
        let word = &rest[spaces..];
        let word_len = word
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(word.len());
        if digits_start < comma && spaces > 0 && word_len > 0 {
            return Some((&line[digits_start..comma], &word[..word_len]));
        }
        from = comma + 1;
    }
    None
}

/// RE2's `\s`: `[\t\n\f\r ]`.
fn is_re2_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// procfs's protection parse: `None` when a number does not parse.
fn parse_protection(line: &str, into: &mut Vec<i64>) -> Option<(usize, usize)> {
    let after = line.split(':').nth(1)?;
    let start = into.len();
    let values = after.replacen('(', "", 1).replacen(')', "", 1);
    for value in values.trim().split(", ") {
        match parse_go_decimal(value) {
            Some(v) => into.push(v),
            None => {
                into.truncate(start);
                return None;
            }
        }
    }
    Some((start, into.len() - start))
}

/// procfs's `parseZoneinfo`.
fn parse<'a>(text: &'a str, protection: &mut Vec<i64>) -> Vec<Zone<'a>> {
    let mut zones = Vec::new();
    for block in text.split("\nNode") {
        let mut zone = Zone {
            node: "",
            zone: "",
            values: [None; N],
            protection: None,
        };
        for line in block.split('\n') {
            if let Some((node, name)) = node_zone(line) {
                zone.node = node;
                zone.zone = name;
                continue;
            }
            let trimmed = line.trim();
            if trimmed.starts_with("per-node stats") {
                continue;
            }
            let mut parts = trimmed.split_whitespace();
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            if key == "protection:" {
                if let Some(range) = parse_protection(line, protection) {
                    zone.protection = Some(range);
                }
                continue;
            }
            if let Some(i) = FIELDS.iter().position(|(k, ..)| *k == key) {
                zone.values[i] = Some(parse_go_int(value).unwrap_or(0));
            }
        }
        zones.push(zone);
    }
    zones
}

/// A family to write: a field of [`FIELDS`] or a protection index.
#[derive(Clone, Copy)]
enum Source {
    Field(usize),
    Protection(usize),
}

impl Collector for ZoneinfoCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        self.protection.clear();
        let mut zones = parse(&self.buf, &mut self.protection);
        zones.sort_by(|a, b| (a.node, a.zone).cmp(&(b.node, b.zone)));
        let longest = zones
            .iter()
            .filter_map(|z| z.protection.map(|(_, n)| n))
            .max()
            .unwrap_or(0);
        while self.protection_names.len() < longest {
            let i = self.protection_names.len();
            self.protection_names.push((
                format!("node_zoneinfo_protection_{i}"),
                format!("Protection array {i}. field"),
            ));
        }
        let mut families: Vec<(&str, Source)> = FIELDS
            .iter()
            .enumerate()
            .filter(|(i, _)| zones.iter().any(|z| z.values[*i].is_some()))
            .map(|(i, (_, name, ..))| (*name, Source::Field(i)))
            .collect();
        families.extend(
            self.protection_names[..longest]
                .iter()
                .enumerate()
                .map(|(i, (name, _))| (name.as_str(), Source::Protection(i))),
        );
        families.sort_by(|a, b| a.0.cmp(b.0));
        for (name, source) in families {
            let (help, kind) = match source {
                Source::Field(i) => (FIELDS[i].2, FIELDS[i].3),
                Source::Protection(i) => (self.protection_names[i].1.as_str(), Kind::Gauge),
            };
            let mut f = out.family(name, help, kind)?;
            for zone in &zones {
                let value = match source {
                    Source::Field(i) => zone.values[i],
                    Source::Protection(i) => zone
                        .protection
                        .filter(|(_, n)| i < *n)
                        .map(|(start, _)| self.protection[start + i]),
                };
                if let Some(value) = value {
                    f.sample(&[("node", zone.node), ("zone", zone.zone)], value as f64)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("hw-system", "zoneinfo", |_| {
            Box::new(ZoneinfoCollector::default())
        });
    }

    #[test]
    fn node_zone_headers() {
        assert_eq!(node_zone("Node 0, zone      DMA"), Some(("0", "DMA")));
        assert_eq!(node_zone(" 12, zone   Normal"), Some(("12", "Normal")));
        assert_eq!(
            node_zone("x, zone Normal 3, zone DMA32"),
            Some(("3", "DMA32"))
        );
        assert_eq!(node_zone("Node 0, zone"), None);
        assert_eq!(node_zone("Node 0, zoneNormal"), None);
        assert_eq!(node_zone("  pages free     3840"), None);
    }

    #[test]
    fn blocks_fields_and_protection() {
        let text = "Node 0, zone      DMA\n  pages free     3\n        min      0x10\n        high     junk\n        protection: (0, 7, 9)\n      nr_free_pages 3\n  pagesets\n    cpu: 0\n              high:  5\nNode 1, zone   Normal\n        protection: (1, x)\n        min 4\n        min 5\n";
        let mut protection = Vec::new();
        let zones = parse(text, &mut protection);
        assert_eq!(zones.len(), 2);
        let min = FIELDS.iter().position(|f| f.0 == "min").unwrap();
        let high = FIELDS.iter().position(|f| f.0 == "high").unwrap();
        assert_eq!((zones[0].node, zones[0].zone), ("0", "DMA"));
        assert_eq!(zones[0].values[min], Some(16));
        assert_eq!(zones[0].values[high], Some(0), "unparsable is 0");
        assert_eq!(zones[0].values[0], Some(3));
        assert_eq!(zones[0].protection, Some((0, 3)));
        assert_eq!(protection, [0, 7, 9]);
        assert_eq!((zones[1].node, zones[1].zone), ("1", "Normal"));
        assert_eq!(zones[1].protection, None);
        assert_eq!(zones[1].values[min], Some(5), "the last one wins");
        assert_eq!(zones[1].values[high], None);
    }
}
