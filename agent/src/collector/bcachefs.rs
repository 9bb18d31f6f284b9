//! `bcachefs`: bcachefs filesystem statistics from /sys/fs/bcachefs/<uuid>, as node_exporter
//! 1.12.1 reports them (prometheus/procfs 0.21.1's `bcachefs` package).
//!
//! Per filesystem: `btree_cache_size`, `compression_stats`, `errors`, every file in `counters/`
//! (one family `node_bcachefs_<counter>_total` each, its "since filesystem creation" value),
//! `btree_write_stats`, and per `dev-<N>` directory `label`, `state`, `bucket_size`,
//! `nbuckets`, `durability`, `io_done` and the "since filesystem creation" part of `io_errors`.
//! Sizes are bcachefs's human-readable values (`1.5G`, `542k`, `76.0`), read as procfs does:
//! the number times 1024^unit, truncated.
//!
//! Default: node_exporter 1.12.1 registers bcachefs `defaultEnabled` (collector/bcachefs_linux.go),
//! so it is on by default here too.
//!
//! As in 1.12.1: no /sys/fs/bcachefs, or no filesystem in it, is NoData; an unreadable or
//! unparsable file fails the collection and nothing is written. Missing files read as empty or 0.
//!
//! Cost: the directories are listed once per hotplug epoch (mounts move the epoch); each scrape
//! opens and reads, per filesystem, its 4 files, one file per counter (~100 on 6.x kernels),
//! and per device 5 attributes and 2 files; nothing is kept open (counters are many). On hosts
//! without bcachefs (nearly all) it costs nothing: /sys/fs/bcachefs is found absent once per
//! hotplug epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::{DirListing, read_into};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "bcachefs",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(BcachefsCollector::default()))
}

#[derive(Default)]
struct BcachefsCollector {
    base: DirListing,
    filesystems: Vec<FsDirs>,
    listed: Option<Arc<[String]>>,
    buf: String,
}

/// One filesystem's directory listings, kept for the hotplug epoch.
struct FsDirs {
    uuid: String,
    dir: PathBuf,
    entries: DirListing,
    counters: DirListing,
}

#[derive(Default, Debug, PartialEq)]
struct Stats {
    btree_cache_size: u64,
    /// (algorithm, compressed, uncompressed), sorted.
    compression: Vec<(String, u64, u64)>,
    /// (error type, count), sorted.
    errors: Vec<(String, u64)>,
    /// (counter, since filesystem creation), sorted.
    counters: Vec<(String, u64)>,
    /// (type, count, average size), sorted.
    btree_writes: Vec<(String, u64, u64)>,
    devices: Vec<Device>,
}

#[derive(Default, Debug, PartialEq)]
struct Device {
    name: String,
    label: String,
    state: String,
    bucket_size: u64,
    buckets: u64,
    durability: u64,
    /// (operation, data type, bytes), sorted.
    io_done: Vec<(String, String, u64)>,
    /// (error type, count), sorted.
    io_errors: Vec<(String, u64)>,
}

/// Why a file could not be used; becomes a [`CollectorError`] with its path.
#[derive(Debug, PartialEq)]
struct Bad(String);

/// procfs's `parseHumanReadableBytes`: `542k`, `1.5G`, `405`.
fn parse_human(s: &str) -> Result<u64, Bad> {
    let s = s.trim();
    let Some(&last) = s.as_bytes().last() else {
        return Err(Bad("empty string".into()));
    };
    let power = match last.to_ascii_lowercase() {
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        b'p' => 5,
        b'e' => 6,
        _ => 0,
    };
    let number = if power > 0 { &s[..s.len() - 1] } else { s };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| Bad(format!("invalid size {s:?}")))?;
    Ok((value * 1024f64.powi(power)) as u64)
}

fn parse_uint(s: &str) -> Result<u64, Bad> {
    s.parse().map_err(|_| Bad(format!("invalid number {s:?}")))
}

/// node_exporter's `SanitizeMetricName`: each run of `_*[^0-9A-Za-z_]+_*` becomes `_`.
fn sanitize(name: &str, out: &mut String) {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let mut j = i;
        while j < chars.len() && chars[j] == '_' {
            j += 1;
        }
        if j < chars.len() && !valid(chars[j]) {
            while j < chars.len() && !valid(chars[j]) {
                j += 1;
            }
            while j < chars.len() && chars[j] == '_' {
                j += 1;
            }
            out.push('_');
            i = j;
        } else if j > i {
            out.extend(&chars[i..j]);
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
}

/// `compression_stats` and `btree_write_stats`: a header line, then `<name>: <a> <b> …`.
fn table_rows(text: &str) -> impl Iterator<Item = (String, Vec<&str>)> {
    text.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            return None;
        }
        let name = fields[0].strip_suffix(':').unwrap_or(fields[0]).to_string();
        Some((name, fields))
    })
}

fn parse_compression(text: &str) -> Result<Vec<(String, u64, u64)>, Bad> {
    let mut rows = Vec::new();
    for (name, fields) in table_rows(text) {
        let compressed = parse_human(fields[1])?;
        let uncompressed = parse_human(fields[2])?;
        if let Some(average) = fields.get(3) {
            parse_human(average)?;
        }
        rows.push((name, compressed, uncompressed));
    }
    Ok(dedup_sorted(rows, |r| &r.0))
}

fn parse_btree_writes(text: &str) -> Result<Vec<(String, u64, u64)>, Bad> {
    let mut rows = Vec::new();
    for (name, fields) in table_rows(text) {
        rows.push((name, parse_uint(fields[1])?, parse_human(fields[2])?));
    }
    Ok(dedup_sorted(rows, |r| &r.0))
}

fn parse_errors(text: &str) -> Result<Vec<(String, u64)>, Bad> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let count = parse_uint(fields[1])?;
        if let Some(time) = fields.get(2) {
            parse_uint(time)?;
        }
        rows.push((fields[0].to_string(), count));
    }
    Ok(dedup_sorted(rows, |r| &r.0))
}

/// A counter file: its "since filesystem creation" value (0 when only "since mount" is there).
fn parse_counter(text: &str) -> Result<u64, Bad> {
    let (mut creation, mut seen) = (0, false);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("since mount:") {
            parse_human(v)?;
            seen = true;
        } else if let Some(v) = line.strip_prefix("since filesystem creation:") {
            creation = parse_human(v)?;
            seen = true;
        }
    }
    if !seen {
        return Err(Bad("counter file format not recognized".into()));
    }
    Ok(creation)
}

fn parse_io_done(text: &str) -> Result<Vec<(String, String, u64)>, Bad> {
    let mut rows = Vec::new();
    let mut op: Option<&str> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "read:" || line == "write:" {
            op = line.strip_suffix(':');
            continue;
        }
        let Some(op) = op else { continue };
        let Some((kind, value)) = line.split_once(':') else {
            continue;
        };
        rows.push((
            op.to_string(),
            kind.trim().to_string(),
            parse_uint(value.trim())?,
        ));
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    // A map in procfs: the last of a repeated key wins.
    let mut out: Vec<(String, String, u64)> = Vec::with_capacity(rows.len());
    for row in rows {
        match out.last_mut() {
            Some(last) if last.0 == row.0 && last.1 == row.1 => *last = row,
            _ => out.push(row),
        }
    }
    Ok(out)
}

fn parse_io_errors(text: &str) -> Result<Vec<(String, u64)>, Bad> {
    let mut rows = Vec::new();
    let mut in_creation = false;
    for line in text.lines() {
        if line.starts_with("IO errors since filesystem creation") {
            in_creation = true;
            continue;
        }
        if line.starts_with("IO errors since ") {
            break;
        }
        if !in_creation {
            continue;
        }
        let Some((kind, value)) = line.trim().split_once(':') else {
            continue;
        };
        rows.push((kind.trim().to_string(), parse_uint(value.trim())?));
    }
    Ok(dedup_sorted(rows, |r| &r.0))
}

/// Sorted by key, the last of a repeated key kept (procfs fills maps).
fn dedup_sorted<T>(mut rows: Vec<T>, key: impl Fn(&T) -> &String) -> Vec<T> {
    // Stable: among equal keys the file's order is kept, and the last one wins below.
    rows.sort_by(|a, b| key(a).cmp(key(b)));
    let mut out: Vec<T> = Vec::with_capacity(rows.len());
    for row in rows {
        match out.last_mut() {
            Some(last) if key(last) == key(&row) => *last = row,
            _ => out.push(row),
        }
    }
    out
}

/// Reads an optional file: `Ok(false)` when missing (procfs ignores those).
fn read_optional(path: &Path, buf: &mut String) -> Result<bool, CollectorError> {
    match read_into(path, buf) {
        Ok(()) => Ok(true),
        Err(CollectorError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            buf.clear();
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn parse_file<T: Default>(
    path: &Path,
    buf: &mut String,
    parse: impl FnOnce(&str) -> Result<T, Bad>,
) -> Result<T, CollectorError> {
    if !read_optional(path, buf)? {
        return Ok(T::default());
    }
    parse(buf).map_err(|Bad(reason)| CollectorError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

impl BcachefsCollector {
    fn read_fs(
        fs: &mut FsDirs,
        ctx: &Context<'_>,
        buf: &mut String,
    ) -> Result<Stats, CollectorError> {
        let dir = &fs.dir;
        let mut stats = Stats {
            btree_cache_size: parse_file(&dir.join("btree_cache_size"), buf, |s| {
                if s.trim().is_empty() {
                    Ok(0)
                } else {
                    parse_human(s)
                }
            })?,
            compression: parse_file(&dir.join("compression_stats"), buf, parse_compression)?,
            errors: parse_file(&dir.join("errors"), buf, parse_errors)?,
            ..Stats::default()
        };
        let counters_dir = dir.join("counters");
        let names = fs
            .counters
            .names(ctx, &counters_dir, |e| {
                !e.file_type().is_ok_and(|t| t.is_dir())
            })
            .map_err(|e| CollectorError::io(&counters_dir, e))?;
        for name in names.iter().flat_map(|n| n.iter()) {
            let path = counters_dir.join(name);
            if read_optional(&path, buf)? {
                let value = parse_counter(buf).map_err(|Bad(reason)| CollectorError::Parse {
                    path: path.clone(),
                    reason,
                })?;
                stats.counters.push((name.clone(), value));
            } else {
                stats.counters.push((name.clone(), 0));
            }
        }
        stats.btree_writes = parse_file(&dir.join("btree_write_stats"), buf, parse_btree_writes)?;
        let entries = fs
            .entries
            .names(ctx, dir, |e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map_err(|e| CollectorError::io(dir, e))?
            .ok_or_else(|| {
                CollectorError::io(dir, std::io::Error::from(std::io::ErrorKind::NotFound))
            })?;
        for entry in entries.iter() {
            let Some(name) = entry.strip_prefix("dev-") else {
                continue;
            };
            let dev = dir.join(entry);
            let text = |file: &str, buf: &mut String| {
                // procfs's readSysfsFile: any error reads as "".
                match read_into(&dev.join(file), buf) {
                    Ok(()) => buf.trim().to_string(),
                    Err(_) => String::new(),
                }
            };
            let label = text("label", buf);
            let state = text("state", buf);
            let bucket_size = match text("bucket_size", buf) {
                s if s.is_empty() => 0,
                s => parse_human(&s).map_err(|Bad(reason)| CollectorError::Parse {
                    path: dev.join("bucket_size"),
                    reason,
                })?,
            };
            let uint = |file: &str, buf: &mut String| {
                parse_file(&dev.join(file), buf, |s| parse_uint(s.trim()))
            };
            let buckets = uint("nbuckets", buf)?;
            let durability = uint("durability", buf)?;
            stats.devices.push(Device {
                name: name.to_string(),
                label,
                state,
                bucket_size,
                buckets,
                durability,
                io_done: parse_file(&dev.join("io_done"), buf, parse_io_done)?,
                io_errors: parse_file(&dev.join("io_errors"), buf, parse_io_errors)?,
            });
        }
        Ok(stats)
    }
}

impl Collector for BcachefsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let base = ctx.paths.sys("fs/bcachefs");
        let names = self
            .base
            .names(ctx, &base, |e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map_err(|e| CollectorError::io(&base, e))?;
        let Some(names) = names else {
            return Err(CollectorError::NoData);
        };
        let same = self
            .listed
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &names) || l[..] == names[..]);
        if !same {
            self.filesystems = names
                .iter()
                .map(|uuid| FsDirs {
                    uuid: uuid.clone(),
                    dir: base.join(uuid),
                    entries: DirListing::default(),
                    counters: DirListing::default(),
                })
                .collect();
            self.listed = Some(names);
        }
        if self.filesystems.is_empty() {
            return Err(CollectorError::NoData);
        }
        let mut all = Vec::with_capacity(self.filesystems.len());
        for fs in &mut self.filesystems {
            all.push(Self::read_fs(fs, ctx, &mut self.buf)?);
        }
        let uuids: Vec<&str> = self.filesystems.iter().map(|f| f.uuid.as_str()).collect();
        write(out, &uuids, &all)
    }
}

fn write(
    out: &mut MetricWriter<'_, '_>,
    uuids: &[&str],
    all: &[Stats],
) -> Result<(), CollectorError> {
    let fss = || uuids.iter().copied().zip(all.iter());
    let mut f = out.family("node_bcachefs_info", "Filesystem information.", Kind::Gauge)?;
    for (uuid, _) in fss() {
        f.sample(&[("uuid", uuid)], 1.0)?;
    }
    let mut f = out.family(
        "node_bcachefs_btree_cache_size_bytes",
        "Btree cache memory usage in bytes.",
        Kind::Gauge,
    )?;
    for (uuid, s) in fss() {
        f.sample(&[("uuid", uuid)], s.btree_cache_size as f64)?;
    }
    if all.iter().any(|s| !s.compression.is_empty()) {
        for (name, help, compressed) in [
            (
                "node_bcachefs_compression_compressed_bytes",
                "Compressed size by algorithm.",
                true,
            ),
            (
                "node_bcachefs_compression_uncompressed_bytes",
                "Uncompressed size by algorithm.",
                false,
            ),
        ] {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for (uuid, s) in fss() {
                for (algorithm, c, u) in &s.compression {
                    let v = if compressed { *c } else { *u };
                    f.sample(&[("uuid", uuid), ("algorithm", algorithm)], v as f64)?;
                }
            }
        }
    }
    if all.iter().any(|s| !s.errors.is_empty()) {
        let mut f = out.family(
            "node_bcachefs_errors_total",
            "Error count by error type.",
            Kind::Counter,
        )?;
        for (uuid, s) in fss() {
            for (kind, count) in &s.errors {
                f.sample(&[("uuid", uuid), ("error_type", kind)], *count as f64)?;
            }
        }
    }
    // One family per counter name, over every filesystem that has it.
    let mut counter_names: Vec<&str> = all
        .iter()
        .flat_map(|s| s.counters.iter().map(|(n, _)| n.as_str()))
        .collect();
    counter_names.sort_unstable();
    counter_names.dedup();
    let (mut name, mut help) = (String::new(), String::new());
    for counter in counter_names {
        name.clear();
        name.push_str("node_bcachefs_");
        sanitize(counter, &mut name);
        name.push_str("_total");
        help.clear();
        help.push_str("Bcachefs counter ");
        help.push_str(counter);
        help.push_str(" since filesystem creation.");
        let mut f = out.family(&name, &help, Kind::Counter)?;
        for (uuid, s) in fss() {
            for (_, v) in s.counters.iter().filter(|(n, _)| n == counter) {
                f.sample(&[("uuid", uuid)], *v as f64)?;
            }
        }
    }
    if all.iter().any(|s| !s.btree_writes.is_empty()) {
        let mut f = out.family(
            "node_bcachefs_btree_writes_total",
            "Number of btree writes by type.",
            Kind::Counter,
        )?;
        for (uuid, s) in fss() {
            for (kind, count, _) in &s.btree_writes {
                f.sample(&[("uuid", uuid), ("type", kind)], *count as f64)?;
            }
        }
        let mut f = out.family(
            "node_bcachefs_btree_write_average_size_bytes",
            "Average btree write size by type.",
            Kind::Gauge,
        )?;
        for (uuid, s) in fss() {
            for (kind, _, size) in &s.btree_writes {
                f.sample(&[("uuid", uuid), ("type", kind)], *size as f64)?;
            }
        }
    }
    if !all.iter().any(|s| !s.devices.is_empty()) {
        return Ok(());
    }
    let mut f = out.family(
        "node_bcachefs_device_info",
        "Device information.",
        Kind::Gauge,
    )?;
    for (uuid, s) in fss() {
        for d in &s.devices {
            f.sample(
                &[
                    ("uuid", uuid),
                    ("device", &d.name),
                    ("label", &d.label),
                    ("state", &d.state),
                ],
                1.0,
            )?;
        }
    }
    type Value = fn(&Device) -> u64;
    let gauges: [(&str, &str, Value); 3] = [
        (
            "node_bcachefs_device_bucket_size_bytes",
            "Bucket size in bytes.",
            |d| d.bucket_size,
        ),
        (
            "node_bcachefs_device_buckets",
            "Total number of buckets.",
            |d| d.buckets,
        ),
        (
            "node_bcachefs_device_durability",
            "Device durability setting.",
            |d| d.durability,
        ),
    ];
    for (name, help, value) in gauges {
        let mut f = out.family(name, help, Kind::Gauge)?;
        for (uuid, s) in fss() {
            for d in &s.devices {
                f.sample(&[("uuid", uuid), ("device", &d.name)], value(d) as f64)?;
            }
        }
    }
    if all
        .iter()
        .flat_map(|s| &s.devices)
        .any(|d| !d.io_done.is_empty())
    {
        let mut f = out.family(
            "node_bcachefs_device_io_done_bytes_total",
            "IO bytes by operation type and data type.",
            Kind::Counter,
        )?;
        for (uuid, s) in fss() {
            for d in &s.devices {
                for (op, kind, v) in &d.io_done {
                    f.sample(
                        &[
                            ("uuid", uuid),
                            ("device", &d.name),
                            ("operation", op),
                            ("data_type", kind),
                        ],
                        *v as f64,
                    )?;
                }
            }
        }
    }
    if all
        .iter()
        .flat_map(|s| &s.devices)
        .any(|d| !d.io_errors.is_empty())
    {
        let mut f = out.family(
            "node_bcachefs_device_io_errors_total",
            "IO errors by error type.",
            Kind::Counter,
        )?;
        for (uuid, s) in fss() {
            for d in &s.devices {
                for (kind, v) in &d.io_errors {
                    f.sample(
                        &[("uuid", uuid), ("device", &d.name), ("type", kind)],
                        *v as f64,
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-storage", "bcachefs", |_| {
            Box::new(BcachefsCollector::default())
        });
    }

    #[test]
    fn human_sizes() {
        assert_eq!(parse_human("542k"), Ok(555008));
        assert_eq!(parse_human("1.5G"), Ok(1610612736));
        assert_eq!(parse_human(" 76.0 "), Ok(76));
        assert_eq!(parse_human("2T"), Ok(2 << 40));
        assert!(parse_human("").is_err());
        assert!(parse_human("GiB").is_err());
    }

    #[test]
    fn metric_names_are_sanitized_as_go() {
        let s = |n: &str| {
            let mut out = String::new();
            sanitize(n, &mut out);
            out
        };
        assert_eq!(s("io_read"), "io_read");
        assert_eq!(s("a-b"), "a_b");
        assert_eq!(s("a__-__b"), "a_b");
        assert_eq!(s("__x"), "__x");
        assert_eq!(s("x.y.z"), "x_y_z");
        assert_eq!(s("é_t"), "_t");
    }

    #[test]
    fn file_formats() {
        assert_eq!(
            parse_counter("since mount:   1.5k\nsince filesystem creation:  3M\n"),
            Ok(3 << 20)
        );
        assert_eq!(parse_counter("since mount: 7\n"), Ok(0));
        assert!(parse_counter("nothing\n").is_err());
        assert_eq!(
            parse_io_errors(
                "IO errors since filesystem creation\n  read:\t3\n  write:\t0\nIO errors since 2 w ago\n  read:\t1\n"
            ),
            Ok(vec![("read".into(), 3), ("write".into(), 0)])
        );
        assert_eq!(
            parse_io_done(
                "read:\nsb          :     4096\nbtree       :  8192\nwrite:\nsb          :  12288\n"
            ),
            Ok(vec![
                ("read".into(), "btree".into(), 8192),
                ("read".into(), "sb".into(), 4096),
                ("write".into(), "sb".into(), 12288)
            ])
        );
        assert!(parse_errors("journal_entry_bad_size 2 x\n").is_err());
        assert_eq!(
            parse_btree_writes("\tnr\tsize\ninitial:\t10\t108k\nshort: 1\n"),
            Ok(vec![("initial".into(), 10, 110592)])
        );
    }

    #[test]
    fn no_filesystems_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let scrape = || {
            render(
                "bcachefs",
                Box::new(BcachefsCollector::default()),
                Paths::fixture(dir.path()),
            )
        };
        let failed = "node_scrape_collector_success{collector=\"bcachefs\"} 0";
        assert!(scrape().contains(failed));
        std::fs::create_dir_all(dir.path().join("sys/fs/bcachefs")).unwrap();
        assert!(scrape().contains(failed));
        let fs = dir
            .path()
            .join("sys/fs/bcachefs/0f1e2d3c-aaaa-bbbb-cccc-000000000000");
        std::fs::create_dir_all(fs.join("counters")).unwrap();
        let text = scrape();
        assert!(text.contains(
            "node_bcachefs_btree_cache_size_bytes{uuid=\"0f1e2d3c-aaaa-bbbb-cccc-000000000000\"} 0"
        ));
        std::fs::write(fs.join("counters/io_read"), "garbage\n").unwrap();
        assert!(scrape().contains(failed));
    }
}
