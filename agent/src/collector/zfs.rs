//! `zfs`: OpenZFS kstats from /proc/spl/kstat/zfs, as node_exporter 1.12.1 reports them.
//!
//! * The global named kstats `abdstats`, `arcstats`, `dbufstats`, `dmu_tx`, `dnodestats`, `fm`,
//!   `vdev_cache_stats`, `vdev_mirror_stats`, `xuio_stats`, `zfetchstats`, `zil`: every row after
//!   the `name type data` header whose type is 4 (uint64) or 3 (int64) becomes its own untyped
//!   family `node_<subsystem>_<name>` (`-` → `_`), HELP `kstat.zfs.misc.<file>.<name>`. A file
//!   that is missing is skipped (ZFS versions differ in which they have); an unparsable value, or
//!   a file without the header, fails the collection (what was written before stays, as in Go).
//! * Per pool (`<pool>/io`, `<pool>/objset-*`, `<pool>/state`): `node_zfs_zpool_<field>{zpool}`
//!   from the io kstat's columns, `node_zfs_zpool_dataset_<name>{zpool,dataset}` from each objset
//!   (uint64 rows; the dataset name is the line from the first occurrence of its value, Go's
//!   `strings.Index` quirk included), and `node_zfs_zpool_state{zpool,state}` over 1.12.1's seven
//!   states.
//! * No /proc/spl/kstat/zfs: NoData.
//!
//! Deviation: an io data row shorter than its header makes node_exporter panic (index out of
//! range); here it is skipped and counted as malformed.
//!
//! Cost: the kstat directory and each pool's directory are listed once per hotplug epoch (a new
//! dataset's objset shows when it is mounted, or within [`super::hotplug::REPROBE_INTERVAL`]);
//! the present global kstats (9 on OpenZFS 2.1) and each pool's io and state are kept open and
//! re-read every scrape; objset files are kept open up to [`KEPT_OPEN`] of them (one per mounted
//! dataset), further ones opened per scrape. Absent global kstats are not probed again in the
//! same epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::{Absence, DirListing, SourceFile, read_into};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "zfs",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(ZfsCollector::default()))
}

const BASE: &str = "spl/kstat/zfs";

/// node_exporter's `linuxPathMap`: (metric subsystem, kstat file, path under procfs).
const KSTATS: [(&str, &str, &str); 11] = [
    ("zfs_abd", "abdstats", "spl/kstat/zfs/abdstats"),
    ("zfs_arc", "arcstats", "spl/kstat/zfs/arcstats"),
    ("zfs_dbuf", "dbufstats", "spl/kstat/zfs/dbufstats"),
    ("zfs_dmu_tx", "dmu_tx", "spl/kstat/zfs/dmu_tx"),
    ("zfs_dnode", "dnodestats", "spl/kstat/zfs/dnodestats"),
    ("zfs_fm", "fm", "spl/kstat/zfs/fm"),
    (
        "zfs_vdev_cache",
        "vdev_cache_stats",
        "spl/kstat/zfs/vdev_cache_stats",
    ),
    (
        "zfs_vdev_mirror",
        "vdev_mirror_stats",
        "spl/kstat/zfs/vdev_mirror_stats",
    ),
    ("zfs_xuio", "xuio_stats", "spl/kstat/zfs/xuio_stats"),
    ("zfs_zfetch", "zfetchstats", "spl/kstat/zfs/zfetchstats"),
    ("zfs_zil", "zil", "spl/kstat/zfs/zil"),
];

/// 1.12.1's `zfsPoolStatesName`.
const POOL_STATES: [&str; 7] = [
    "online",
    "degraded",
    "faulted",
    "offline",
    "removed",
    "unavail",
    "suspended",
];

/// Which of [`POOL_STATES`] a state file's first line names, compared as Go's
/// `strings.ToLower(line) == state` does.
fn active_state(line: &str) -> Option<usize> {
    if line.is_ascii() {
        POOL_STATES
            .iter()
            .position(|s| line.eq_ignore_ascii_case(s))
    } else {
        let lower = line.to_lowercase();
        POOL_STATES.iter().position(|s| lower == *s)
    }
}

/// The most objset files kept open between scrapes (one per mounted dataset).
pub const KEPT_OPEN: usize = 256;

struct Kstat {
    subsystem: &'static str,
    file: &'static str,
    source: SourceFile,
    absence: Absence,
}

struct ZfsCollector {
    kstats: Vec<Kstat>,
    pools_listing: DirListing,
    pools_listed: Option<Arc<[String]>>,
    pools: Vec<Pool>,
    buf: String,
    name: String,
    help: String,
    /// This scrape's rows of the pool families, and the names seen (kept between scrapes).
    io: Rows,
    objset: Rows,
    /// This scrape's `(pool index, index into [`POOL_STATES`] of its state)`.
    states: Vec<(usize, Option<usize>)>,
}

impl Default for ZfsCollector {
    fn default() -> Self {
        ZfsCollector {
            kstats: KSTATS
                .iter()
                .map(|&(subsystem, file, rel)| Kstat {
                    subsystem,
                    file,
                    source: SourceFile::proc(rel),
                    absence: Absence::default(),
                })
                .collect(),
            pools_listing: DirListing::default(),
            pools_listed: None,
            pools: Vec::new(),
            buf: String::new(),
            name: String::new(),
            help: String::new(),
            io: Rows::default(),
            objset: Rows::default(),
            states: Vec::new(),
        }
    }
}

struct Pool {
    name: String,
    dir: PathBuf,
    entries: DirListing,
    listed: Option<Arc<[String]>>,
    io: Option<SourceFile>,
    state: Option<SourceFile>,
    /// `(path, kept open)` of each `objset-*`, in name order.
    objsets: Vec<(PathBuf, Option<SourceFile>)>,
}

/// Samples of grouped families: `(row label index, name index, value)`, and the distinct names
/// (kept between scrapes so that a scrape allocates nothing for names already seen).
#[derive(Default)]
struct Rows {
    names: Vec<String>,
    /// Per sample: (pool index, dataset label index into `datasets`, name index, value).
    samples: Vec<(usize, usize, usize, f64)>,
    datasets: Vec<String>,
    used_datasets: usize,
    /// The io kstat's column header as name indices (reused).
    header: Vec<usize>,
}

impl Rows {
    fn clear(&mut self) {
        self.samples.clear();
        self.used_datasets = 0;
    }

    fn name_index(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }

    /// A new dataset label slot holding `name`; its index.
    fn dataset(&mut self, name: &str) -> usize {
        if self.used_datasets == self.datasets.len() {
            self.datasets.push(String::new());
        }
        let slot = &mut self.datasets[self.used_datasets];
        slot.clear();
        slot.push_str(name);
        self.used_datasets += 1;
        self.used_datasets - 1
    }
}

/// node_exporter's `zfsSysctl.metricName`: the part after the key's last `.`, `-` → `_`.
fn metric_name(raw: &str, into: &mut String) {
    let last = raw.rsplit('.').next().unwrap_or(raw);
    into.extend(last.chars().map(|c| if c == '-' { '_' } else { c }));
}

/// The value of a named kstat row of type 4 (uint64) or 3 (int64); `Ok(None)` for other types.
fn row_value(kind: &str, data: &str) -> Result<Option<f64>, String> {
    match kind {
        "4" => data
            .parse::<u64>()
            .map(|v| Some(v as f64))
            .map_err(|e| format!("could not parse expected unsigned integer value: {e}")),
        "3" => data
            .parse::<i64>()
            .map(|v| Some(v as f64))
            .map_err(|e| format!("could not parse expected signed integer value: {e}")),
        _ => Ok(None),
    }
}

/// The first three whitespace-separated fields of a line and how many fields it has.
fn fields3(line: &str) -> ([&str; 3], usize) {
    let mut out = [""; 3];
    let mut n = 0;
    for (i, part) in line.split_ascii_whitespace().enumerate() {
        if let Some(slot) = out.get_mut(i) {
            *slot = part;
        }
        n = i + 1;
    }
    (out, n)
}

/// A named kstat's column header.
fn is_header((parts, n): ([&str; 3], usize)) -> bool {
    n == 3 && parts == ["name", "type", "data"]
}

/// Parses one global named kstat, writing a family per row.
fn write_kstat(
    out: &mut MetricWriter<'_, '_>,
    path: &Path,
    text: &str,
    (subsystem, file): (&str, &str),
    name: &mut String,
    help: &mut String,
) -> Result<(), CollectorError> {
    let mut started = false;
    for line in text.lines() {
        let (parts, n) = fields3(line);
        if !started && is_header((parts, n)) {
            started = true;
            continue;
        }
        if !started || n < 3 {
            continue;
        }
        let value = row_value(parts[1], parts[2]).map_err(|reason| CollectorError::Parse {
            path: path.to_path_buf(),
            reason: format!("kstat.zfs.misc.{file}.{}: {reason}", parts[0]),
        })?;
        let Some(value) = value else { continue };
        name.clear();
        name.push_str("node_");
        name.push_str(subsystem);
        name.push('_');
        metric_name(parts[0], name);
        help.clear();
        help.push_str("kstat.zfs.misc.");
        help.push_str(file);
        help.push('.');
        help.push_str(parts[0]);
        out.single(name, help, Kind::Untyped, &[], value)?;
    }
    if !started {
        return Err(CollectorError::Parse {
            path: path.to_path_buf(),
            reason: format!("did not parse a single {file:?} metric"),
        });
    }
    Ok(())
}

/// Parses a pool's io kstat into `rows` (pool `pool`).
fn parse_io(
    ctx: &Context<'_>,
    path: &Path,
    text: &str,
    pool: usize,
    rows: &mut Rows,
) -> Result<(), CollectorError> {
    let mut fields = std::mem::take(&mut rows.header);
    fields.clear();
    let mut started = false;
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        if !started {
            if line.split_ascii_whitespace().count() >= 12 && parts.next() == Some("nread") {
                started = true;
                fields.extend(line.split_ascii_whitespace().map(|f| rows.name_index(f)));
            }
            continue;
        }
        if line.split_ascii_whitespace().count() < fields.len() {
            ctx.malformed(path, line);
            continue;
        }
        for &field in &fields {
            let value = parts.next().unwrap_or_default();
            let value = value.parse::<u64>().map_err(|e| CollectorError::Parse {
                path: path.to_path_buf(),
                reason: format!(
                    "could not parse expected integer value for \"kstat.zfs.misc.io.{}\": {e}",
                    rows.names[field]
                ),
            })?;
            rows.samples.push((pool, 0, field, value as f64));
        }
    }
    rows.header = fields;
    Ok(())
}

/// Parses one objset kstat into `rows`.
fn parse_objset(
    path: &Path,
    text: &str,
    pool: usize,
    rows: &mut Rows,
) -> Result<(), CollectorError> {
    let mut started = false;
    let mut dataset = None;
    for line in text.lines() {
        let (parts, n) = fields3(line);
        if !started && is_header((parts, n)) {
            started = true;
            continue;
        }
        if !started || n < 3 {
            continue;
        }
        if parts[0] == "dataset_name" {
            // Go: line[strings.Index(line, parts[2]):]
            let at = line.find(parts[2]).unwrap_or(0);
            dataset = Some(rows.dataset(&line[at..]));
            continue;
        }
        if parts[1] == "4" {
            let value = parts[2].parse::<u64>().map_err(|_| CollectorError::Parse {
                path: path.to_path_buf(),
                reason: format!(
                    "could not parse expected integer value for \"kstat.zfs.misc.objset.{}\"",
                    parts[0]
                ),
            })?;
            let dataset = match dataset {
                Some(d) => d,
                // Rows before any dataset_name: empty labels, as in Go.
                None => *dataset.insert(rows.dataset("")),
            };
            let name = rows.name_index(parts[0]);
            rows.samples.push((pool, dataset, name, value as f64));
        }
    }
    if !started {
        return Err(CollectorError::Parse {
            path: path.to_path_buf(),
            reason: "did not parse a single objset metric".into(),
        });
    }
    Ok(())
}

impl ZfsCollector {
    fn list_pools(&mut self, ctx: &Context<'_>) -> Result<bool, CollectorError> {
        let base = ctx.paths.proc(BASE);
        let names = match self.pools_listing.names(ctx, &base, |e| {
            e.file_type().map(|t| t.is_dir()).unwrap_or(false)
        }) {
            Ok(Some(names)) => names,
            // node_exporter: any failure to open the kstat directory is "not available".
            Ok(None) | Err(_) => return Ok(false),
        };
        let same = self
            .pools_listed
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &names) || l[..] == names[..]);
        if !same {
            self.pools = names
                .iter()
                .map(|name| Pool {
                    name: name.clone(),
                    dir: base.join(name),
                    entries: DirListing::default(),
                    listed: None,
                    io: None,
                    state: None,
                    objsets: Vec::new(),
                })
                .collect();
            self.pools_listed = Some(names);
        }
        let mut kept = 0;
        for pool in &mut self.pools {
            let entries = pool
                .entries
                .names(ctx, &pool.dir, |_| true)
                .map_err(|e| CollectorError::io(&pool.dir, e))?
                .unwrap_or_else(|| Arc::from(Vec::new()));
            let same = pool
                .listed
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, &entries) || l[..] == entries[..]);
            if !same {
                let has = |n: &str| entries.iter().any(|e| e == n);
                pool.io = has("io").then(|| SourceFile::at(pool.dir.join("io")));
                pool.state = has("state").then(|| SourceFile::at(pool.dir.join("state")));
                pool.objsets = entries
                    .iter()
                    .filter(|e| e.starts_with("objset-"))
                    .map(|e| (pool.dir.join(e), None))
                    .collect();
                pool.listed = Some(entries);
            }
            for (path, file) in &mut pool.objsets {
                if kept < KEPT_OPEN {
                    file.get_or_insert_with(|| SourceFile::at(path.clone()));
                    kept += 1;
                } else {
                    *file = None;
                }
            }
        }
        Ok(true)
    }

    fn read_pools(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        self.io.clear();
        self.objset.clear();
        self.states.clear();
        for (index, pool) in self.pools.iter_mut().enumerate() {
            let Some(io) = &mut pool.io else { continue };
            io.read_into(ctx.paths, &mut self.buf)?;
            parse_io(ctx, io.display_path(), &self.buf, index, &mut self.io)?;
        }
        for (index, pool) in self.pools.iter_mut().enumerate() {
            for (path, file) in &mut pool.objsets {
                match file {
                    Some(file) => file.read_into(ctx.paths, &mut self.buf)?,
                    None => read_into(path, &mut self.buf)?,
                }
                parse_objset(path, &self.buf, index, &mut self.objset)?;
            }
        }
        for (index, pool) in self.pools.iter_mut().enumerate() {
            let Some(state) = &mut pool.state else {
                continue;
            };
            state.read_into(ctx.paths, &mut self.buf)?;
            let first = self.buf.lines().next().unwrap_or("");
            self.states.push((index, active_state(first)));
        }
        Ok(())
    }

    fn write_pools(&mut self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        let pool = |i: usize| self.pools.get(i).map_or("", |p| p.name.as_str());
        for (rows, prefix, file) in [
            (&self.io, "node_zfs_zpool_", "io"),
            (&self.objset, "node_zfs_zpool_dataset_", "objset"),
        ] {
            for (index, raw) in rows.names.iter().enumerate() {
                if !rows.samples.iter().any(|s| s.2 == index) {
                    continue;
                }
                self.name.clear();
                self.name.push_str(prefix);
                metric_name(raw, &mut self.name);
                self.help.clear();
                self.help.push_str("kstat.zfs.misc.");
                self.help.push_str(file);
                self.help.push('.');
                self.help.push_str(raw);
                let mut f = out.family(&self.name, &self.help, Kind::Untyped)?;
                for &(p, d, _, value) in rows.samples.iter().filter(|s| s.2 == index) {
                    if file == "io" {
                        f.sample(&[("zpool", pool(p))], value)?;
                    } else {
                        let dataset = rows.datasets.get(d).map_or("", String::as_str);
                        f.sample(&[("zpool", pool(p)), ("dataset", dataset)], value)?;
                    }
                }
            }
        }
        if !self.states.is_empty() {
            let mut f = out.family("node_zfs_zpool_state", "kstat.zfs.misc.state", Kind::Gauge)?;
            for (p, actual) in &self.states {
                for (i, state) in POOL_STATES.iter().enumerate() {
                    let active = if *actual == Some(i) { 1.0 } else { 0.0 };
                    f.sample(&[("zpool", pool(*p)), ("state", state)], active)?;
                }
            }
        }
        Ok(())
    }
}

impl Collector for ZfsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        if !self.list_pools(ctx)? {
            return Err(CollectorError::NoData);
        }
        for kstat in &mut self.kstats {
            let read = kstat
                .absence
                .read(ctx, || kstat.source.read_into(ctx.paths, &mut self.buf));
            match read {
                Ok(true) => {}
                // Missing (this ZFS has no such kstat) or unopenable: skipped, as in 1.12.1.
                Ok(false) | Err(CollectorError::Io { .. }) => continue,
                Err(e) => return Err(e),
            }
            let path = kstat.source.display_path();
            write_kstat(
                out,
                path,
                &self.buf,
                (kstat.subsystem, kstat.file),
                &mut self.name,
                &mut self.help,
            )?;
        }
        // Pool families are grouped across pools: whatever was read before a failure is still
        // written, as node_exporter sends each sample as it goes.
        let read = self.read_pools(ctx);
        self.write_pools(out)?;
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-storage", "zfs", |_| Box::new(ZfsCollector::default()));
    }

    #[test]
    fn metric_names() {
        let mut name = String::new();
        metric_name("erpt-set-failed", &mut name);
        assert_eq!(name, "erpt_set_failed");
        name.clear();
        metric_name("a.b-c", &mut name);
        assert_eq!(name, "b_c");
    }

    #[test]
    fn objset_dataset_names_follow_go() {
        let mut rows = Rows::default();
        let text = "1 1 0x01 3 0 1 2\nname type data\ndataset_name 7 a\nwrites 4 9\nnread 4 x\n";
        assert!(parse_objset(Path::new("o"), text, 0, &mut rows).is_err());
        // strings.Index finds "a" inside "dataset_name" first.
        assert_eq!(rows.datasets[0], "ataset_name 7 a");
        assert_eq!(rows.samples, [(0, 0, 0, 9.0)]);
        let mut rows = Rows::default();
        assert!(parse_objset(Path::new("o"), "no header\n", 0, &mut rows).is_err());
    }

    #[test]
    fn kstat_types_and_errors() {
        assert_eq!(
            row_value("4", "18446744073709551615"),
            Ok(Some(u64::MAX as f64))
        );
        assert_eq!(row_value("3", "-4096"), Ok(Some(-4096.0)));
        assert_eq!(row_value("7", "text"), Ok(None));
        assert!(row_value("4", "-1").is_err());
        assert!(row_value("3", "x").is_err());
    }

    fn scrape(root: &Path) -> String {
        render(
            "zfs",
            Box::new(ZfsCollector::default()),
            Paths::fixture(root),
        )
    }

    #[test]
    fn absent_zfs_is_no_data_and_short_io_rows_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        assert!(scrape(dir.path()).contains("node_scrape_collector_success{collector=\"zfs\"} 0"));
        let pool = dir.path().join("proc/spl/kstat/zfs/p");
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::write(
            pool.join("io"),
            "1 3 0x00 1 80 1 2\nnread nwritten reads writes wtime wlentime wupdate rtime rlentime rupdate wcnt rcnt\n1 2 3\n",
        )
        .unwrap();
        std::fs::write(pool.join("state"), "SUSPENDED\n").unwrap();
        let text = scrape(dir.path());
        assert!(text.contains("node_scrape_collector_success{collector=\"zfs\"} 1"));
        assert!(text.contains("nodewarden_agent_malformed_lines_total 1"));
        assert!(text.contains("node_zfs_zpool_state{zpool=\"p\",state=\"suspended\"} 1"));
        assert!(!text.contains("node_zfs_zpool_nread"));
        std::fs::write(pool.join("../arcstats"), "name type data\nhits 4 -1\n").unwrap();
        let text = scrape(dir.path());
        assert!(text.contains("node_scrape_collector_success{collector=\"zfs\"} 0"));
    }
}
