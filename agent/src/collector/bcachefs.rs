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
    filesystems: Vec<Filesystem>,
    listed: Option<Arc<[String]>>,
    buf: String,
}

/// One filesystem: its listings (kept for the hotplug epoch), paths, and this scrape's values,
/// all kept between scrapes so that a scrape allocates little.
struct Filesystem {
    uuid: String,
    dir: PathBuf,
    /// btree_cache_size, compression_stats, errors, btree_write_stats.
    files: [PathBuf; 4],
    entries: DirListing,
    entries_listed: Option<Arc<[String]>>,
    counters_dir: PathBuf,
    counters_listing: DirListing,
    counters_listed: Option<Arc<[String]>>,
    /// (counter, its file, since filesystem creation).
    counters: Vec<(String, PathBuf, u64)>,
    btree_cache_size: u64,
    /// key: algorithm; a: compressed, b: uncompressed.
    compression: Rows,
    /// key: error type; a: count.
    errors: Rows,
    /// key: write type; a: count, b: average size.
    btree_writes: Rows,
    devices: Vec<Device>,
}

impl Filesystem {
    fn new(base: &Path, uuid: &str) -> Self {
        let dir = base.join(uuid);
        Filesystem {
            uuid: uuid.to_string(),
            files: [
                "btree_cache_size",
                "compression_stats",
                "errors",
                "btree_write_stats",
            ]
            .map(|f| dir.join(f)),
            counters_dir: dir.join("counters"),
            dir,
            entries: DirListing::default(),
            entries_listed: None,
            counters_listing: DirListing::default(),
            counters_listed: None,
            counters: Vec::new(),
            btree_cache_size: 0,
            compression: Rows::default(),
            errors: Rows::default(),
            btree_writes: Rows::default(),
            devices: Vec::new(),
        }
    }
}

struct Device {
    name: String,
    /// label, state, bucket_size, nbuckets, durability, io_done, io_errors.
    files: [PathBuf; 7],
    label: String,
    state: String,
    bucket_size: u64,
    buckets: u64,
    durability: u64,
    /// sub: operation; key: data type; a: bytes.
    io_done: Rows,
    /// key: error type; a: count.
    io_errors: Rows,
}

impl Device {
    fn new(dir: &Path, name: &str) -> Self {
        Device {
            name: name.to_string(),
            files: [
                "label",
                "state",
                "bucket_size",
                "nbuckets",
                "durability",
                "io_done",
                "io_errors",
            ]
            .map(|f| dir.join(f)),
            label: String::new(),
            state: String::new(),
            bucket_size: 0,
            buckets: 0,
            durability: 0,
            io_done: Rows::default(),
            io_errors: Rows::default(),
        }
    }
}

/// One row of a parsed table.
#[derive(Default, Debug, PartialEq)]
struct Row {
    /// "read"/"write" for io_done, else "".
    sub: &'static str,
    key: String,
    a: u64,
    b: u64,
}

/// A table parsed into reused rows: procfs fills a map, so rows are sorted by key and the last
/// of a repeated key wins.
#[derive(Default, Debug)]
struct Rows {
    rows: Vec<Row>,
    used: usize,
}

impl Rows {
    fn clear(&mut self) {
        self.used = 0;
    }

    fn push(&mut self, sub: &'static str, key: &str, a: u64, b: u64) {
        if self.used == self.rows.len() {
            self.rows.push(Row::default());
        }
        let row = &mut self.rows[self.used];
        row.sub = sub;
        row.key.clear();
        row.key.push_str(key);
        row.a = a;
        row.b = b;
        self.used += 1;
    }

    /// Sorts the rows and keeps the last of each key (stable sort: file order among equals).
    fn finish(&mut self) {
        let rows = &mut self.rows[..self.used];
        rows.sort_by(|x, y| (x.sub, &x.key).cmp(&(y.sub, &y.key)));
        let mut kept = 0;
        for i in 0..rows.len() {
            if kept > 0 && rows[kept - 1].sub == rows[i].sub && rows[kept - 1].key == rows[i].key {
                rows[kept - 1].a = rows[i].a;
                rows[kept - 1].b = rows[i].b;
            } else {
                rows.swap(kept, i);
                kept += 1;
            }
        }
        self.used = kept;
    }

    fn get(&self) -> &[Row] {
        &self.rows[..self.used]
    }
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
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        let underscores = rest.len() - rest.trim_start_matches('_').len();
        let after = &rest[underscores..];
        if after.chars().next().is_some_and(|c| !valid(c)) {
            let after = after.trim_start_matches(|c: char| !valid(c));
            rest = after.trim_start_matches('_');
            out.push('_');
        } else if underscores > 0 {
            out.push_str(&rest[..underscores]);
            rest = after;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
}

/// The first four whitespace-separated fields of a line and how many there are.
fn fields4(line: &str) -> ([&str; 4], usize) {
    let mut out = [""; 4];
    let mut n = 0;
    for (i, part) in line.split_whitespace().enumerate() {
        if let Some(slot) = out.get_mut(i) {
            *slot = part;
        }
        n = i + 1;
    }
    (out, n)
}

/// `compression_stats`: a header line, then `<algorithm>: <compressed> <uncompressed> [<avg>]`.
fn parse_compression(text: &str, rows: &mut Rows) -> Result<(), Bad> {
    for line in text.lines().skip(1) {
        let (f, n) = fields4(line);
        if n < 3 {
            continue;
        }
        let compressed = parse_human(f[1])?;
        let uncompressed = parse_human(f[2])?;
        if n >= 4 {
            parse_human(f[3])?;
        }
        rows.push(
            "",
            f[0].strip_suffix(':').unwrap_or(f[0]),
            compressed,
            uncompressed,
        );
    }
    Ok(())
}

/// `btree_write_stats`: a header line, then `<type>: <nr> <size>`.
fn parse_btree_writes(text: &str, rows: &mut Rows) -> Result<(), Bad> {
    for line in text.lines().skip(1) {
        let (f, n) = fields4(line);
        if n < 3 {
            continue;
        }
        let count = parse_uint(f[1])?;
        let size = parse_human(f[2])?;
        rows.push("", f[0].strip_suffix(':').unwrap_or(f[0]), count, size);
    }
    Ok(())
}

/// `errors`: `<type> <count> [<time>]`.
fn parse_errors(text: &str, rows: &mut Rows) -> Result<(), Bad> {
    for line in text.lines() {
        let (f, n) = fields4(line);
        if n < 2 {
            continue;
        }
        let count = parse_uint(f[1])?;
        if n >= 3 {
            parse_uint(f[2])?;
        }
        rows.push("", f[0], count, 0);
    }
    Ok(())
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

/// A device's `io_done`: `read:`/`write:` sections of `<data type>: <bytes>`.
fn parse_io_done(text: &str, rows: &mut Rows) -> Result<(), Bad> {
    let mut op = None;
    for line in text.lines() {
        let line = line.trim();
        match line {
            "" => continue,
            "read:" => op = Some("read"),
            "write:" => op = Some("write"),
            _ => {
                let (Some(op), Some((kind, value))) = (op, line.split_once(':')) else {
                    continue;
                };
                rows.push(op, kind.trim(), parse_uint(value.trim())?, 0);
            }
        }
    }
    Ok(())
}

/// A device's `io_errors`: the "since filesystem creation" section's `<type>: <count>`.
fn parse_io_errors(text: &str, rows: &mut Rows) -> Result<(), Bad> {
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
        rows.push("", kind.trim(), parse_uint(value.trim())?, 0);
    }
    Ok(())
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

fn bad(path: &Path) -> impl FnOnce(Bad) -> CollectorError + '_ {
    move |Bad(reason)| CollectorError::Parse {
        path: path.to_path_buf(),
        reason,
    }
}

/// Parses an optional table file into `rows` (empty when the file is missing).
fn read_table(
    path: &Path,
    buf: &mut String,
    rows: &mut Rows,
    parse: fn(&str, &mut Rows) -> Result<(), Bad>,
) -> Result<(), CollectorError> {
    rows.clear();
    if read_optional(path, buf)? {
        parse(buf, rows).map_err(bad(path))?;
    }
    rows.finish();
    Ok(())
}

/// procfs's `readUintFile`: 0 when missing.
fn read_uint(path: &Path, buf: &mut String) -> Result<u64, CollectorError> {
    if !read_optional(path, buf)? {
        return Ok(0);
    }
    parse_uint(buf.trim()).map_err(bad(path))
}

/// procfs's `readSysfsFile`: any error reads as "".
fn read_text(path: &Path, buf: &mut String, into: &mut String) {
    into.clear();
    if read_into(path, buf).is_ok() {
        into.push_str(buf.trim());
    }
}

fn same(a: &Option<Arc<[String]>>, b: &Option<Arc<[String]>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a[..] == b[..],
        (None, None) => true,
        _ => false,
    }
}

impl Filesystem {
    fn read(&mut self, ctx: &Context<'_>, buf: &mut String) -> Result<(), CollectorError> {
        let [cache_size, compression, errors, btree_writes] = &self.files;
        self.btree_cache_size = if read_optional(cache_size, buf)? && !buf.trim().is_empty() {
            parse_human(buf).map_err(bad(cache_size))?
        } else {
            0
        };
        read_table(compression, buf, &mut self.compression, parse_compression)?;
        read_table(errors, buf, &mut self.errors, parse_errors)?;
        let names = self
            .counters_listing
            .names(ctx, &self.counters_dir, |e| {
                !e.file_type().is_ok_and(|t| t.is_dir())
            })
            .map_err(|e| CollectorError::io(&self.counters_dir, e))?;
        if !same(&names, &self.counters_listed) {
            self.counters = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|n| (n.clone(), self.counters_dir.join(n), 0))
                .collect();
            self.counters_listed = names;
        }
        for (_, path, value) in &mut self.counters {
            *value = if read_optional(path, buf)? {
                parse_counter(buf).map_err(bad(path))?
            } else {
                0
            };
        }
        read_table(
            btree_writes,
            buf,
            &mut self.btree_writes,
            parse_btree_writes,
        )?;
        let entries = self
            .entries
            .names(ctx, &self.dir, |e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map_err(|e| CollectorError::io(&self.dir, e))?;
        if entries.is_none() {
            return Err(CollectorError::io(
                &self.dir,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        if !same(&entries, &self.entries_listed) {
            self.devices = entries
                .iter()
                .flat_map(|n| n.iter())
                .filter_map(|entry| {
                    let name = entry.strip_prefix("dev-")?;
                    Some(Device::new(&self.dir.join(entry), name))
                })
                .collect();
            self.entries_listed = entries;
        }
        for d in &mut self.devices {
            let [
                label,
                state,
                bucket_size,
                nbuckets,
                durability,
                io_done,
                io_errors,
            ] = &d.files;
            read_text(label, buf, &mut d.label);
            read_text(state, buf, &mut d.state);
            d.bucket_size = match read_into(bucket_size, buf) {
                Ok(()) if !buf.trim().is_empty() => parse_human(buf).map_err(bad(bucket_size))?,
                _ => 0,
            };
            d.buckets = read_uint(nbuckets, buf)?;
            d.durability = read_uint(durability, buf)?;
            read_table(io_done, buf, &mut d.io_done, parse_io_done)?;
            read_table(io_errors, buf, &mut d.io_errors, parse_io_errors)?;
        }
        Ok(())
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
        if names.is_none() {
            return Err(CollectorError::NoData);
        }
        if !same(&names, &self.listed) {
            self.filesystems = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|uuid| Filesystem::new(&base, uuid))
                .collect();
            self.listed = names;
        }
        if self.filesystems.is_empty() {
            return Err(CollectorError::NoData);
        }
        for fs in &mut self.filesystems {
            fs.read(ctx, &mut self.buf)?;
        }
        write(out, &self.filesystems, &mut self.buf)
    }
}

fn write(
    out: &mut MetricWriter<'_, '_>,
    all: &[Filesystem],
    help: &mut String,
) -> Result<(), CollectorError> {
    let mut f = out.family("node_bcachefs_info", "Filesystem information.", Kind::Gauge)?;
    for fs in all {
        f.sample(&[("uuid", &fs.uuid)], 1.0)?;
    }
    let mut f = out.family(
        "node_bcachefs_btree_cache_size_bytes",
        "Btree cache memory usage in bytes.",
        Kind::Gauge,
    )?;
    for fs in all {
        f.sample(&[("uuid", &fs.uuid)], fs.btree_cache_size as f64)?;
    }
    if all.iter().any(|fs| !fs.compression.get().is_empty()) {
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
            for fs in all {
                for r in fs.compression.get() {
                    let v = if compressed { r.a } else { r.b };
                    f.sample(&[("uuid", &fs.uuid), ("algorithm", &r.key)], v as f64)?;
                }
            }
        }
    }
    if all.iter().any(|fs| !fs.errors.get().is_empty()) {
        let mut f = out.family(
            "node_bcachefs_errors_total",
            "Error count by error type.",
            Kind::Counter,
        )?;
        for fs in all {
            for r in fs.errors.get() {
                f.sample(&[("uuid", &fs.uuid), ("error_type", &r.key)], r.a as f64)?;
            }
        }
    }
    // One family per counter name, over every filesystem that has it.
    let mut name = String::new();
    for (index, fs) in all.iter().enumerate() {
        for (counter, _, _) in &fs.counters {
            let earlier = all[..index]
                .iter()
                .any(|other| other.counters.iter().any(|(n, _, _)| n == counter));
            if earlier {
                continue;
            }
            name.clear();
            name.push_str("node_bcachefs_");
            sanitize(counter, &mut name);
            name.push_str("_total");
            help.clear();
            help.push_str("Bcachefs counter ");
            help.push_str(counter);
            help.push_str(" since filesystem creation.");
            let mut f = out.family(&name, help, Kind::Counter)?;
            for other in &all[index..] {
                for (_, _, v) in other.counters.iter().filter(|(n, _, _)| n == counter) {
                    f.sample(&[("uuid", &other.uuid)], *v as f64)?;
                }
            }
        }
    }
    if all.iter().any(|fs| !fs.btree_writes.get().is_empty()) {
        let mut f = out.family(
            "node_bcachefs_btree_writes_total",
            "Number of btree writes by type.",
            Kind::Counter,
        )?;
        for fs in all {
            for r in fs.btree_writes.get() {
                f.sample(&[("uuid", &fs.uuid), ("type", &r.key)], r.a as f64)?;
            }
        }
        let mut f = out.family(
            "node_bcachefs_btree_write_average_size_bytes",
            "Average btree write size by type.",
            Kind::Gauge,
        )?;
        for fs in all {
            for r in fs.btree_writes.get() {
                f.sample(&[("uuid", &fs.uuid), ("type", &r.key)], r.b as f64)?;
            }
        }
    }
    let devices = || {
        all.iter()
            .flat_map(|fs| fs.devices.iter().map(move |d| (fs, d)))
    };
    if devices().next().is_none() {
        return Ok(());
    }
    let mut f = out.family(
        "node_bcachefs_device_info",
        "Device information.",
        Kind::Gauge,
    )?;
    for (fs, d) in devices() {
        f.sample(
            &[
                ("uuid", &fs.uuid),
                ("device", &d.name),
                ("label", &d.label),
                ("state", &d.state),
            ],
            1.0,
        )?;
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
        for (fs, d) in devices() {
            f.sample(&[("uuid", &fs.uuid), ("device", &d.name)], value(d) as f64)?;
        }
    }
    if devices().any(|(_, d)| !d.io_done.get().is_empty()) {
        let mut f = out.family(
            "node_bcachefs_device_io_done_bytes_total",
            "IO bytes by operation type and data type.",
            Kind::Counter,
        )?;
        for (fs, d) in devices() {
            for r in d.io_done.get() {
                f.sample(
                    &[
                        ("uuid", &fs.uuid),
                        ("device", &d.name),
                        ("operation", r.sub),
                        ("data_type", &r.key),
                    ],
                    r.a as f64,
                )?;
            }
        }
    }
    if devices().any(|(_, d)| !d.io_errors.get().is_empty()) {
        let mut f = out.family(
            "node_bcachefs_device_io_errors_total",
            "IO errors by error type.",
            Kind::Counter,
        )?;
        for (fs, d) in devices() {
            for r in d.io_errors.get() {
                f.sample(
                    &[("uuid", &fs.uuid), ("device", &d.name), ("type", &r.key)],
                    r.a as f64,
                )?;
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

    fn rows(
        parse: fn(&str, &mut Rows) -> Result<(), Bad>,
        text: &str,
    ) -> Result<Vec<(String, u64, u64)>, Bad> {
        let mut rows = Rows::default();
        parse(text, &mut rows)?;
        rows.finish();
        Ok(rows
            .get()
            .iter()
            .map(|r| (format!("{}{}", r.sub, r.key), r.a, r.b))
            .collect())
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
            rows(
                parse_io_errors,
                "IO errors since filesystem creation\n  read:\t3\n  write:\t0\n  read:\t5\nIO errors since 2 w ago\n  read:\t1\n"
            ),
            Ok(vec![("read".into(), 5, 0), ("write".into(), 0, 0)])
        );
        assert_eq!(
            rows(
                parse_io_done,
                "read:\nsb          :     4096\nbtree       :  8192\nwrite:\nsb          :  12288\n"
            ),
            Ok(vec![
                ("readbtree".into(), 8192, 0),
                ("readsb".into(), 4096, 0),
                ("writesb".into(), 12288, 0)
            ])
        );
        assert!(rows(parse_errors, "journal_entry_bad_size 2 x\n").is_err());
        assert_eq!(
            rows(
                parse_btree_writes,
                "\tnr\tsize\ninitial:\t10\t108k\nshort: 1\n"
            ),
            Ok(vec![("initial".into(), 10, 110592)])
        );
        assert_eq!(
            rows(
                parse_compression,
                "type compressed uncompressed avg\nlz4: 1k 2k 3k\ngzip: 0 0\nzstd: 5\n"
            ),
            Ok(vec![("gzip".into(), 0, 0), ("lz4".into(), 1024, 2048)])
        );
    }

    #[test]
    fn rows_are_reused() {
        let mut rows = Rows::default();
        parse_errors("b 1\na 2\nb 3\n", &mut rows).unwrap();
        rows.finish();
        assert_eq!(rows.get().len(), 2);
        assert_eq!((rows.get()[1].key.as_str(), rows.get()[1].a), ("b", 3));
        rows.clear();
        parse_errors("c 4\n", &mut rows).unwrap();
        rows.finish();
        assert_eq!(rows.get().len(), 1);
        assert_eq!(rows.get()[0].key, "c");
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
