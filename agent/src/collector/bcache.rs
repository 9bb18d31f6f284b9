//! `bcache`: cache-set, backing-device and cache-device statistics from /sys/fs/bcache/<uuid>,
//! as node_exporter 1.5 reports them (procfs's parsing of bcache's human-readable sizes, quirks
//! included: `1.5k` is 1 + 5/10.24 KiB, and the btree read duration, in µs, is scaled by 1e-9).

use std::path::Path;

use super::flags::{add_bool_flag, bool_flag};
use super::source::{DirListing, numbered_entries};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "bcache",
    default_enabled: true,
    flags,
    build,
};

const PRIORITY_STATS: &str = "collector.bcache.priorityStats";

fn flags(command: clap::Command) -> clap::Command {
    add_bool_flag(
        command,
        PRIORITY_STATS,
        false,
        "Expose expensive priority stats.",
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let priority = bool_flag(ctx, PRIORITY_STATS);
    Ok(Box::new(BcacheCollector {
        priority,
        sets: DirListing::default(),
    }))
}

/// procfs's `parsePseudoFloat`: the fraction digits are read as a number and divided by 10.24.
fn parse_pseudo_float(s: &str) -> Option<f64> {
    let mut parts = s.split('.');
    let int: f64 = parts.next()?.parse().ok()?;
    match parts.next() {
        None => Some(int),
        Some(frac) => Some(int + frac.parse::<f64>().ok()? / 10.24),
    }
}

/// procfs's `dehumanize`: `512`, `1.5k`, `3.2M` … to a byte count.
pub fn dehumanize(s: &str) -> Option<u64> {
    let last = *s.as_bytes().last()?;
    if last > b'9' {
        let multiplier = match last {
            b'k' => 1u64 << 10,
            b'M' => 1 << 20,
            b'G' => 1 << 30,
            b'T' => 1 << 40,
            b'P' => 1 << 50,
            b'E' => 1 << 60,
            // Z and Y overflow u64 multipliers in Go too; procfs maps unknown units to 0.
            _ => 0,
        };
        let mantissa = parse_pseudo_float(&s[..s.len() - 1])?;
        Some((mantissa * multiplier as f64) as u64)
    } else {
        let v: f64 = s.parse().ok()?;
        Some(v as u64)
    }
}

fn dehumanize_signed(s: &str) -> Option<i64> {
    let magnitude = dehumanize(s.trim_start_matches('-'))? as i64;
    Some(if s.starts_with('-') {
        magnitude.wrapping_neg()
    } else {
        magnitude
    })
}

/// Reads a value file: Ok(0) when absent, as procfs does.
fn read_value(path: &Path) -> Result<f64, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.strip_suffix('\n').unwrap_or(&text);
            dehumanize(text)
                .map(|v| v as f64)
                .ok_or_else(|| format!("{}: cannot parse {text:?}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0.0),
        Err(e) => Err(format!("failed to read {}: {e}", path.display())),
    }
}

/// writeback_rate_debug: (rate, target, proportional, integral, change).
pub fn parse_writeback_rate_debug(text: &str) -> Option<[f64; 5]> {
    let mut out = [0.0; 5];
    for line in text.lines() {
        let last = line.split_ascii_whitespace().last().unwrap_or("");
        if line.starts_with("rate:") {
            out[0] = dehumanize(last.trim_end_matches("/sec"))? as f64;
        } else if line.starts_with("target:") {
            out[1] = dehumanize(last)? as f64;
        } else if line.starts_with("proportional:") {
            out[2] = dehumanize_signed(last)? as f64;
        } else if line.starts_with("integral:") {
            out[3] = dehumanize_signed(last)? as f64;
        } else if line.starts_with("change:") {
            out[4] = dehumanize_signed(last.trim_end_matches("/sec"))? as f64;
        }
    }
    Some(out)
}

/// priority_stats: (unused percent, metadata percent).
pub fn parse_priority_stats(text: &str) -> Option<[f64; 2]> {
    let mut out = [0.0; 2];
    for line in text.lines() {
        let last = line.split_ascii_whitespace().last().unwrap_or("");
        let slot = if line.starts_with("Unused:") {
            0
        } else if line.starts_with("Metadata:") {
            1
        } else {
            continue;
        };
        out[slot] = last.trim_end_matches('%').parse::<u64>().ok()? as f64;
    }
    Some(out)
}

const SET_VALUES: [(&str, &str, &str, Kind, f64); 10] = [
    (
        "average_key_size",
        "node_bcache_average_key_size_sectors",
        "Average data per key in the btree (sectors).",
        Kind::Gauge,
        1.0,
    ),
    (
        "btree_cache_size",
        "node_bcache_btree_cache_size_bytes",
        "Amount of memory currently used by the btree cache.",
        Kind::Gauge,
        1.0,
    ),
    (
        "cache_available_percent",
        "node_bcache_cache_available_percent",
        "Percentage of cache device without dirty data, usable for writeback (may contain clean cached data).",
        Kind::Gauge,
        1.0,
    ),
    (
        "congested",
        "node_bcache_congested",
        "Congestion.",
        Kind::Gauge,
        1.0,
    ),
    (
        "root_usage_percent",
        "node_bcache_root_usage_percent",
        "Percentage of the root btree node in use (tree depth increases if too high).",
        Kind::Gauge,
        1.0,
    ),
    (
        "tree_depth",
        "node_bcache_tree_depth",
        "Depth of the btree.",
        Kind::Gauge,
        1.0,
    ),
    (
        "internal/active_journal_entries",
        "node_bcache_active_journal_entries",
        "Number of journal entries that are newer than the index.",
        Kind::Gauge,
        1.0,
    ),
    (
        "internal/btree_nodes",
        "node_bcache_btree_nodes",
        "Total nodes in the btree.",
        Kind::Gauge,
        1.0,
    ),
    (
        "internal/btree_read_average_duration_us",
        "node_bcache_btree_read_average_duration_seconds",
        "Average btree read duration.",
        Kind::Gauge,
        1e-9,
    ),
    (
        "internal/cache_read_races",
        "node_bcache_cache_read_races_total",
        "Counts instances where while data was being read from the cache, the bucket was reused and invalidated - i.e. where the pointer was stale after the read completed.",
        Kind::Counter,
        1.0,
    ),
];

/// Backing-device families: 6 from the device, then 7 from stats_total.
const BDEV_FAMILIES: [(&str, &str, Kind); 13] = [
    (
        "node_bcache_dirty_data_bytes",
        "Amount of dirty data for this backing device in the cache.",
        Kind::Gauge,
    ),
    (
        "node_bcache_dirty_target_bytes",
        "Current dirty data target threshold for this backing device in bytes.",
        Kind::Gauge,
    ),
    (
        "node_bcache_writeback_rate",
        "Current writeback rate for this backing device in bytes.",
        Kind::Gauge,
    ),
    (
        "node_bcache_writeback_rate_proportional_term",
        "Current result of proportional controller, part of writeback rate",
        Kind::Gauge,
    ),
    (
        "node_bcache_writeback_rate_integral_term",
        "Current result of integral controller, part of writeback rate",
        Kind::Gauge,
    ),
    (
        "node_bcache_writeback_change",
        "Last writeback rate change step for this backing device.",
        Kind::Gauge,
    ),
    (
        "node_bcache_bypassed_bytes_total",
        "Amount of IO (both reads and writes) that has bypassed the cache.",
        Kind::Counter,
    ),
    (
        "node_bcache_cache_hits_total",
        "Hits counted per individual IO as bcache sees them.",
        Kind::Counter,
    ),
    (
        "node_bcache_cache_misses_total",
        "Misses counted per individual IO as bcache sees them.",
        Kind::Counter,
    ),
    (
        "node_bcache_cache_bypass_hits_total",
        "Hits for IO intended to skip the cache.",
        Kind::Counter,
    ),
    (
        "node_bcache_cache_bypass_misses_total",
        "Misses for IO intended to skip the cache.",
        Kind::Counter,
    ),
    (
        "node_bcache_cache_miss_collisions_total",
        "Instances where data insertion from cache miss raced with write (data already present).",
        Kind::Counter,
    ),
    (
        "node_bcache_cache_readaheads_total",
        "Count of times readahead occurred.",
        Kind::Counter,
    ),
];
const BDEV_TOTAL_FILES: [&str; 7] = [
    "bypassed",
    "cache_hits",
    "cache_misses",
    "cache_bypass_hits",
    "cache_bypass_misses",
    "cache_miss_collisions",
    "cache_readaheads",
];

const CACHE_FAMILIES: [(&str, &str, &str, Kind); 5] = [
    (
        "io_errors",
        "node_bcache_io_errors",
        "Number of errors that have occurred, decayed by io_error_halflife.",
        Kind::Gauge,
    ),
    (
        "metadata_written",
        "node_bcache_metadata_written_bytes_total",
        "Sum of all non data writes (btree writes and all other metadata).",
        Kind::Counter,
    ),
    (
        "written",
        "node_bcache_written_bytes_total",
        "Sum of all data that has been written to the cache.",
        Kind::Counter,
    ),
    (
        "",
        "node_bcache_priority_stats_unused_percent",
        "The percentage of the cache that doesn't contain any data.",
        Kind::Gauge,
    ),
    (
        "",
        "node_bcache_priority_stats_metadata_percent",
        "Bcache's metadata overhead.",
        Kind::Gauge,
    ),
];

struct CacheSet {
    uuid: String,
    values: [f64; 10],
    bdevs: Vec<(String, [f64; 13])>,
    caches: Vec<(String, [f64; 5])>,
}

fn read_set(dir: &Path, uuid: String, priority: bool) -> Result<CacheSet, String> {
    let mut set = CacheSet {
        uuid,
        values: [0.0; 10],
        bdevs: Vec::new(),
        caches: Vec::new(),
    };
    for (slot, (file, _, _, _, factor)) in set.values.iter_mut().zip(SET_VALUES) {
        *slot = read_value(&dir.join(file))? * factor;
    }
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    for name in numbered_entries(dir, "bdev").map_err(io)? {
        let bdev = dir.join(&name);
        let mut v = [0.0; 13];
        v[0] = read_value(&bdev.join("dirty_data"))?;
        let debug_path = bdev.join("writeback_rate_debug");
        let debug = std::fs::read_to_string(&debug_path)
            .map_err(|e| format!("failed to read {}: {e}", debug_path.display()))?;
        let [rate, target, proportional, integral, change] = parse_writeback_rate_debug(&debug)
            .ok_or_else(|| format!("failed to parse {}", debug_path.display()))?;
        v[1] = target;
        v[2] = rate;
        v[3] = proportional;
        v[4] = integral;
        v[5] = change;
        for (slot, file) in v[6..].iter_mut().zip(BDEV_TOTAL_FILES) {
            *slot = read_value(&bdev.join("stats_total").join(file))?;
        }
        set.bdevs.push((name, v));
    }
    for name in numbered_entries(dir, "cache").map_err(io)? {
        let cache = dir.join(&name);
        let mut v = [0.0; 5];
        for (slot, (file, _, _, _)) in v.iter_mut().zip(&CACHE_FAMILIES[..3]) {
            *slot = read_value(&cache.join(file))?;
        }
        if priority {
            let path = cache.join("priority_stats");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
            let [unused, metadata] = parse_priority_stats(&text)
                .ok_or_else(|| format!("failed to parse {}", path.display()))?;
            v[3] = unused;
            v[4] = metadata;
        }
        set.caches.push((name, v));
    }
    Ok(set)
}

struct BcacheCollector {
    priority: bool,
    sets: DirListing,
}

impl Collector for BcacheCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let root = ctx.paths.sys("fs/bcache");
        let names = self
            .sets
            .names(ctx, &root, |_| true)
            .map_err(|e| CollectorError::io(&root, e))?
            .unwrap_or_default();
        let mut sets = Vec::new();
        for name in names.iter().filter(|n| n.contains('-')) {
            let dir = root.join(name);
            let set = read_set(&dir, name.clone(), self.priority)
                .map_err(|reason| CollectorError::Parse { path: dir, reason })?;
            sets.push(set);
        }
        if sets.is_empty() {
            return Ok(());
        }
        for (i, (_, name, help, kind, _)) in SET_VALUES.iter().enumerate() {
            let mut f = out.family(name, help, *kind)?;
            for s in &sets {
                f.sample(&[("uuid", &s.uuid)], s.values[i])?;
            }
        }
        if sets.iter().any(|s| !s.bdevs.is_empty()) {
            for (i, (name, help, kind)) in BDEV_FAMILIES.iter().enumerate() {
                let mut f = out.family(name, help, *kind)?;
                for s in &sets {
                    for (bdev, v) in &s.bdevs {
                        f.sample(&[("uuid", &s.uuid), ("backing_device", bdev)], v[i])?;
                    }
                }
            }
        }
        if sets.iter().any(|s| !s.caches.is_empty()) {
            let count = if self.priority { 5 } else { 3 };
            for (i, (_, name, help, kind)) in CACHE_FAMILIES.iter().enumerate().take(count) {
                let mut f = out.family(name, help, *kind)?;
                for s in &sets {
                    for (cache, v) in &s.caches {
                        f.sample(&[("uuid", &s.uuid), ("cache_device", cache)], v[i])?;
                    }
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
        assert_renders_golden("basic", "bcache", |_| {
            Box::new(BcacheCollector {
                priority: true,
                sets: DirListing::default(),
            })
        });
    }

    #[test]
    fn dehumanize_like_procfs() {
        assert_eq!(dehumanize("542"), Some(542));
        assert_eq!(dehumanize("1.5k"), Some(1524));
        assert_eq!(dehumanize("2M"), Some(2 << 20));
        assert_eq!(dehumanize(""), None);
        assert_eq!(dehumanize("x.yk"), None);
        assert_eq!(dehumanize_signed("-2.7k"), Some(-2748));
    }
}
