//! `slabinfo`: slab caches from /proc/slabinfo (version 2.1, slabinfo(5); readable by root only),
//! as node_exporter 1.12.1 reports them through prometheus/procfs: per cache, active objects,
//! objects, object size, objects per slab and pages per slab, for the caches whose name passes
//! `--collector.slabinfo.slabs-include` / `-exclude` (unanchored, both applied).
//!
//! Decisions: a line procfs rejects (not exactly 16 space-separated fields, or a number that
//! does not parse, the unreported tunables and slabdata included) is skipped and counted as
//! malformed, where 1.12.1 fails the whole collection; a cache name seen twice keeps its first
//! line (client_golang drops the repeat). An unreadable or missing file is an error, as in
//! 1.12.1. Families are written in name order and samples in cache name order, as
//! client_golang's gathering sorts them. Cost: one file kept open, one pread per scrape
//! (about 25 KB).

use clap::Arg;

use super::filter::DeviceFilter;
use super::flags::unanchored_regex_flag;
use super::gosyntax::parse_go_decimal;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "slabinfo",
    default_enabled: false,
    flags,
    build,
};

const INCLUDE: &str = "collector.slabinfo.slabs-include";
const EXCLUDE: &str = "collector.slabinfo.slabs-exclude";

fn flags(command: clap::Command) -> clap::Command {
    command
        .arg(
            Arg::new(INCLUDE)
                .long(INCLUDE)
                .default_value(".*")
                .help("Regexp of slabs to include in slabinfo collector."),
        )
        .arg(
            Arg::new(EXCLUDE)
                .long(EXCLUDE)
                .default_value("")
                .help("Regexp of slabs to exclude in slabinfo collector."),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let filter = DeviceFilter {
        exclude: unanchored_regex_flag(ctx, EXCLUDE)?,
        include: unanchored_regex_flag(ctx, INCLUDE)?,
    };
    Ok(Box::new(SlabinfoCollector::new(filter)))
}

/// The families in name order: (metric, help, index into a cache's values).
const FAMILIES: [(&str, &str, usize); 5] = [
    (
        "node_slabinfo_active_objects",
        "The number of objects that are currently active (i.e., in use).",
        0,
    ),
    (
        "node_slabinfo_object_size_bytes",
        "The size of objects in this slab, in bytes.",
        2,
    ),
    (
        "node_slabinfo_objects",
        "The total number of allocated objects (i.e., objects that are both in use and not in use).",
        1,
    ),
    (
        "node_slabinfo_objects_per_slab",
        "The number of objects stored in each slab.",
        3,
    ),
    (
        "node_slabinfo_pages_per_slab",
        "The number of pages allocated for each slab.",
        4,
    ),
];

struct SlabinfoCollector {
    filter: DeviceFilter,
    source: SourceFile,
    buf: String,
}

impl SlabinfoCollector {
    fn new(filter: DeviceFilter) -> Self {
        SlabinfoCollector {
            filter,
            source: SourceFile::proc("slabinfo"),
            buf: String::new(),
        }
    }
}

/// procfs's `parseV21SlabEntry`: the name and active objects, objects, object size, objects per
/// slab, pages per slab.
fn parse_line(line: &str) -> Option<(&str, [i64; 5])> {
    let re2_space = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    // `\s+` → " " then split on " ": white space at either end makes an empty field.
    if line.starts_with(re2_space) || line.ends_with(re2_space) {
        return None;
    }
    let mut fields = line.split(re2_space).filter(|f| !f.is_empty());
    let name = fields.next()?;
    let mut numbers = [0i64; 15];
    let mut n = 0;
    for field in fields {
        if n == numbers.len() {
            return None;
        }
        // Fields 6, 7, 11, 12 (after the name) are ":", "tunables", ":", "slabdata".
        if !matches!(n, 5 | 6 | 10 | 11) {
            numbers[n] = parse_go_decimal(field)?;
        }
        n += 1;
    }
    if n != numbers.len() {
        return None;
    }
    let mut values = [0; 5];
    values.copy_from_slice(&numbers[..5]);
    Some((name, values))
}

impl Collector for SlabinfoCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        let mut slabs: Vec<(&str, [i64; 5])> = Vec::new();
        for line in self.buf.lines() {
            if line.contains("slabinfo -") || line.contains("# name") {
                continue;
            }
            match parse_line(line) {
                Some((name, values)) => {
                    if !self.filter.ignored(name) {
                        slabs.push((name, values));
                    }
                }
                None => ctx.malformed(path, line),
            }
        }
        slabs.sort_by(|a, b| a.0.cmp(b.0));
        let before = slabs.len();
        slabs.dedup_by(|later, earlier| later.0 == earlier.0);
        for _ in slabs.len()..before {
            ctx.malformed(path, "a repeated slab cache name");
        }
        if slabs.is_empty() {
            return Ok(());
        }
        for (metric, help, index) in FAMILIES {
            let mut f = out.family(metric, help, Kind::Gauge)?;
            for (name, values) in &slabs {
                f.sample(&[("slab", name)], values[index] as f64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, build_with, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-system", "slabinfo", |_| {
            Box::new(SlabinfoCollector::new(DeviceFilter::default()))
        });
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_line(
                "kmalloc-8k           428    452   8192    4    8 : tunables    0    0    0 : slabdata    113    113      0"
            ),
            Some(("kmalloc-8k", [428, 452, 8192, 4, 8]))
        );
        assert_eq!(
            parse_line("kmalloc-8k 428 452 8192 4 8 : tunables 0 0 0 : slabdata 113 113 0 "),
            None
        );
        assert_eq!(
            parse_line("kmalloc-8k 428 452 8192 4 8 : tunables 0 0 x : slabdata 113 113 0"),
            None
        );
        assert_eq!(
            parse_line("kmalloc-8k 428 452 8192 4 8 : tunables 0 0 0 : slabdata 113 113"),
            None
        );
    }

    #[test]
    fn flags_filter_caches() {
        let root = crate::collector::testing::fixture("hw-system");
        let paths = Paths::fixture(&root);
        let collector = build_with(
            &REGISTRATION,
            &[
                "--collector.slabinfo.slabs-include=^kmalloc",
                "--collector.slabinfo.slabs-exclude=rcl",
            ],
            &paths,
        );
        let text = render("slabinfo", collector, paths);
        assert!(text.contains("node_slabinfo_objects{slab=\"kmalloc-8k\"}"));
        assert!(!text.contains("kmalloc-rcl-"));
        assert!(!text.contains("slab=\"dentry\""));
    }
}
