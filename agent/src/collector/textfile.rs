//! `textfile`: re-exposes the metrics of `*.prom` files in `--collector.textfile.directory`, with
//! `node_textfile_mtime_seconds` per file read and `node_textfile_scrape_error`.
//!
//! Files are other people's output, so they are parsed by a strict, small parser of the
//! Prometheus text format (`super::expfmt`: what node_exporter's expfmt.TextParser accepts);
//! any problem in a file drops that whole file and sets `node_textfile_scrape_error` to 1.
//! Parsed files are cached by (inode, size, mtime), so an unchanged file is not re-read.
//!
//! Two things the encoder underneath cannot express are approximated, keeping node_exporter's
//! series (names and label values) but not the type: a counter whose name does not end in
//! `_total` is exposed as untyped, and histograms and summaries as untyped families
//! `<name>_bucket`/`<name>` (with Go-formatted `le`/`quantile`), `<name>_sum`, `<name>_count`.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Arg;

use super::expfmt::{FamilyType, Metric, ParsedFamily, Value, parse_text, same_labels};
use super::gosyntax::go_float;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "textfile",
    default_enabled: true,
    flags,
    build,
};

const DIRECTORY: &str = "collector.textfile.directory";

fn flags(command: clap::Command) -> clap::Command {
    command.arg(
        Arg::new(DIRECTORY)
            .long(DIRECTORY)
            .action(clap::ArgAction::Append)
            .default_value("")
            .help("Directory to read text files with metrics from, supports glob matching. (repeatable)"),
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let directories = ctx
        .matches
        .try_get_many::<String>(DIRECTORY)
        .ok()
        .flatten()
        .map(|d| d.map(PathBuf::from).collect())
        .unwrap_or_default();
    Ok(Box::new(TextfileCollector::with_directories(directories)))
}

// ---------------------------------------------------------------------------------------------
// Collecting

/// What a cached file came to.
/// What identifies an unchanged file: device, inode, size, mtime (s, ns).
type FileKey = (u64, u64, u64, i64, i64);

struct CachedFile {
    key: FileKey,
    mtime_seconds: f64,
    families: Result<Vec<ParsedFamily>, String>,
}

struct TextfileCollector {
    /// Each `--collector.textfile.directory`, with its glob compiled when it has glob
    /// characters.
    directories: Vec<(PathBuf, Option<Vec<GlobPart>>)>,
    cache: HashMap<PathBuf, CachedFile>,
}

impl TextfileCollector {
    #[cfg(test)]
    fn new(directory: PathBuf) -> Self {
        Self::with_directories(vec![directory])
    }

    fn with_directories(directories: Vec<PathBuf>) -> Self {
        TextfileCollector {
            directories: directories
                .into_iter()
                .map(|d| {
                    let pattern = compile_glob(&d.to_string_lossy());
                    (d, pattern)
                })
                .collect(),
            cache: HashMap::new(),
        }
    }

    /// Reads (or takes from the cache) one file.
    fn load(&mut self, path: &Path) {
        let metadata = std::fs::metadata(path);
        let key = metadata
            .as_ref()
            .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
            .ok();
        let fresh = matches!(
            (self.cache.get(path), key),
            (Some(cached), Some(key)) if cached.key == key
        );
        if !fresh {
            let loaded = load_file(path, key);
            self.cache.insert(path.to_path_buf(), loaded);
        }
    }
}

fn load_file(path: &Path, key: Option<FileKey>) -> CachedFile {
    let failed = |reason: String| CachedFile {
        key: key.unwrap_or_default(),
        mtime_seconds: 0.0,
        families: Err(reason),
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => return failed(format!("{}: not UTF-8", path.display())),
        },
        Err(e) => {
            return failed(format!(
                "failed to open textfile data file {}: {e}",
                path.display()
            ));
        }
    };
    match parse_text(&text) {
        Ok(families) => {
            // Only stat after parsing, so a file that failed never looks fresh.
            let mtime_seconds = std::fs::metadata(path)
                .map(|m| m.mtime() as f64)
                .unwrap_or(0.0);
            CachedFile {
                key: key.unwrap_or_default(),
                mtime_seconds,
                families: Ok(families),
            }
        }
        Err(e) => failed(format!(
            "failed to parse textfile data from {}: {e}",
            path.display()
        )),
    }
}

/// One family merged from every file that has it.
struct Merged<'a> {
    name: &'a str,
    help: Option<&'a str>,
    kind: FamilyType,
    /// A counter named `<x>_total` while a family also takes `<x>`: rendered untyped, as the
    /// encoder would otherwise declare it as `<x>` a second time.
    counter_untyped: bool,
    files: Vec<&'a Path>,
    metrics: Vec<&'a Metric>,
}

/// Whether a family `name` of type `kind` collides with a family already collected, as
/// client_golang's registry decides when node_exporter gathers (`checkSuffixCollisions`): a
/// summary's `_sum`/`_count`, a histogram's `_bucket`/`_sum`/`_count`. The registry drops the
/// family collected second, so node_exporter serves the first; so does this collector.
fn collides(name: &str, kind: FamilyType, kept: &HashMap<&str, FamilyType>) -> bool {
    for suffix in ["_count", "_sum", "_bucket"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match kept.get(base) {
                Some(FamilyType::Summary) if suffix != "_bucket" => return true,
                Some(FamilyType::Histogram) => return true,
                _ => {}
            }
            break;
        }
    }
    match kind {
        FamilyType::Histogram | FamilyType::Summary => {
            kept.contains_key(format!("{name}_count").as_str())
                || kept.contains_key(format!("{name}_sum").as_str())
                || (kind == FamilyType::Histogram
                    && kept.contains_key(format!("{name}_bucket").as_str()))
        }
        _ => false,
    }
}

/// Drops (in merge order, i.e. the order node_exporter collects them) the families that collide
/// with one kept before, and marks the `_total` counters whose stem another family takes.
fn resolve_collisions(merged: &mut Vec<Merged<'_>>) {
    let mut kept: HashMap<&str, FamilyType> = HashMap::new();
    merged.retain(|family| {
        if collides(family.name, family.kind, &kept) {
            tracing::error!(
                metric = family.name,
                "metric family collides with the suffixes of another textfile family; dropped"
            );
            return false;
        }
        kept.insert(family.name, family.kind);
        true
    });
    // Names the rendered families declare besides a counter's stem.
    let mut declared: HashSet<String> = HashSet::new();
    for family in merged.iter() {
        match family.kind {
            FamilyType::Histogram => declared.insert(format!("{}_bucket", family.name)),
            FamilyType::Summary => declared.insert(family.name.to_string()),
            _ => declared.insert(family.name.to_string()),
        };
        if matches!(family.kind, FamilyType::Histogram | FamilyType::Summary) {
            declared.insert(format!("{}_sum", family.name));
            declared.insert(format!("{}_count", family.name));
        }
    }
    for family in merged.iter_mut() {
        if family.kind == FamilyType::Counter
            && let Some(stem) = family.name.strip_suffix("_total")
        {
            family.counter_untyped = declared.contains(stem);
        }
    }
}

/// A histogram's buckets or a summary's quantiles as node_exporter's conversion keeps them: in
/// a Go map keyed by bound, so a bound listed twice keeps its first spelling and its last value
/// (`1` and `1.0`, `0` and `-0` are one bound). A NaN bound never gets there (expfmt ignores
/// the sample).
fn go_map_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for &(bound, value) in points {
        if bound.is_nan() {
            continue;
        }
        match out.iter_mut().find(|(b, _)| *b == bound) {
            Some(point) => point.1 = value,
            None => out.push((bound, value)),
        }
    }
    out
}

impl Collector for TextfileCollector {
    fn update(
        &mut self,
        _ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let mut errored = false;
        let mut files: Vec<PathBuf> = Vec::new();
        // Like node_exporter, the flag may be a glob of directories; a pattern matching
        // nothing (or no pattern) is read as a plain directory.
        let mut directories = Vec::new();
        for (directory, pattern) in &self.directories {
            let matched = pattern.as_ref().map(|p| glob(p)).unwrap_or_default();
            if matched.is_empty() {
                directories.push(directory.clone());
            } else {
                directories.extend(matched);
            }
        }
        for directory in directories {
            if directory.as_os_str().is_empty() {
                continue;
            }
            match std::fs::read_dir(&directory) {
                Ok(entries) => {
                    for entry in entries.flatten() {
                        let name = entry.file_name();
                        if name.to_string_lossy().ends_with(".prom") {
                            files.push(directory.join(name));
                        }
                    }
                }
                Err(e) => {
                    errored = true;
                    tracing::error!(
                        path = %directory.display(),
                        error = %e,
                        "failed to read textfile collector directory"
                    );
                }
            }
        }
        files.sort();
        self.cache.retain(|path, _| files.contains(path));
        for path in &files {
            self.load(path);
        }

        let mut mtimes: Vec<(String, f64)> = Vec::new();
        let mut merged: Vec<Merged<'_>> = Vec::new();
        for path in &files {
            let Some(cached) = self.cache.get(path) else {
                continue;
            };
            match &cached.families {
                Err(reason) => {
                    errored = true;
                    tracing::error!(error = %reason, "failed to collect textfile data");
                }
                Ok(families) => {
                    mtimes.push((path.to_string_lossy().into_owned(), cached.mtime_seconds));
                    for family in families {
                        match merged.iter_mut().find(|m| m.name == family.name) {
                            Some(m) => {
                                if m.kind != family.kind
                                    || (family.help.is_some() && m.help != family.help.as_deref())
                                {
                                    errored = true;
                                    tracing::error!(
                                        metric = family.name,
                                        file = %path.display(),
                                        "metric family has inconsistent type or help across textfiles"
                                    );
                                    continue;
                                }
                                m.files.push(path);
                                for metric in &family.metrics {
                                    if !m
                                        .metrics
                                        .iter()
                                        .any(|seen| same_labels(&seen.labels, &metric.labels))
                                    {
                                        m.metrics.push(metric);
                                    }
                                }
                            }
                            None => merged.push(Merged {
                                name: &family.name,
                                help: family.help.as_deref(),
                                kind: family.kind,
                                counter_untyped: false,
                                files: vec![path],
                                metrics: family.metrics.iter().collect(),
                            }),
                        }
                    }
                }
            }
        }
        resolve_collisions(&mut merged);
        merged.sort_by(|a, b| a.name.cmp(b.name));
        for family in &merged {
            write_family(out, family)?;
        }
        if !mtimes.is_empty() {
            let mut family = out.family(
                "node_textfile_mtime_seconds",
                "Unixtime mtime of textfiles successfully read.",
                Kind::Gauge,
            )?;
            for (file, mtime) in &mtimes {
                family.sample(&[("file", file.as_str())], *mtime)?;
            }
        }
        out.gauge(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
            if errored { 1.0 } else { 0.0 },
        )?;
        Ok(())
    }
}

/// One path component of a glob.
enum GlobPart {
    Literal(String),
    Pattern(regex::Regex),
}

/// Go's `filepath.Match` syntax for one component (`*`, `?`, `[...]`/`[^...]`, `\\` escapes)
/// as an anchored regex; `None` for a malformed pattern.
fn component_regex(component: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => re.push_str(&regex::escape(&chars.next()?.to_string())),
            '[' => {
                re.push('[');
                let mut first = true;
                loop {
                    let c = chars.next()?;
                    match c {
                        ']' if !first => break,
                        '^' if first => re.push('^'),
                        '\\' => re.push_str(&regex::escape(&chars.next()?.to_string())),
                        '-' => re.push('-'),
                        other => re.push_str(&regex::escape(&other.to_string())),
                    }
                    first = false;
                }
                re.push(']');
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}

/// Compiles `pattern` when it has glob characters; `None` for a plain (or malformed) path.
fn compile_glob(pattern: &str) -> Option<Vec<GlobPart>> {
    if !pattern.contains(['*', '?', '[']) {
        return None;
    }
    let mut parts = Vec::new();
    if pattern.starts_with('/') {
        parts.push(GlobPart::Literal("/".into()));
    }
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        if component.contains(['*', '?', '[', '\\']) {
            parts.push(GlobPart::Pattern(component_regex(component)?));
        } else {
            parts.push(GlobPart::Literal(component.into()));
        }
    }
    Some(parts)
}

/// The existing paths matching a compiled glob, sorted (Go's `filepath.Glob`).
fn glob(parts: &[GlobPart]) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::new()];
    for part in parts {
        let mut next = Vec::new();
        for base in &current {
            match part {
                GlobPart::Literal(name) => next.push(base.join(name)),
                GlobPart::Pattern(re) => {
                    let dir = if base.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        base.as_path()
                    };
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    let mut names: Vec<String> = entries
                        .flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| re.is_match(n))
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| base.join(n)));
                }
            }
        }
        current = next;
    }
    current.retain(|p| p.exists());
    current
}

/// HELP text escaped for the exposition (the encoder writes it verbatim).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Labels of `metric` completed with "" for the family's other label names, sorted by name (as
/// node_exporter's output has them).
fn full_labels<'a>(metric: &'a Metric, all: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    let mut labels: Vec<(&str, &str)> = all
        .iter()
        .map(|name| {
            let value = metric
                .labels
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str());
            (*name, value)
        })
        .collect();
    labels.sort_by(|a, b| a.0.cmp(b.0));
    labels
}

fn write_family(
    out: &mut MetricWriter<'_, '_>,
    family: &Merged<'_>,
) -> Result<(), std::fmt::Error> {
    let help = match family.help {
        Some(help) => escape_help(help),
        None => {
            let files: Vec<_> = family.files.iter().map(|p| p.to_string_lossy()).collect();
            escape_help(&format!("Metric read from {}", files.join(", ")))
        }
    };
    let mut all: Vec<&str> = Vec::new();
    for metric in &family.metrics {
        for (name, _) in &metric.labels {
            if !all.contains(&name.as_str()) {
                all.push(name);
            }
        }
    }
    // Each metric with its labels completed ("" for the family's other names). Two metrics
    // that differ only by a label given as "" in one and absent in the other are one series:
    // the first is kept, as client_golang's registry keeps the first of a repeated series.
    let mut seen: HashSet<Vec<(&str, &str)>> = HashSet::new();
    let metrics: Vec<(&Metric, Vec<(&str, &str)>)> = family
        .metrics
        .iter()
        .map(|metric| (*metric, full_labels(metric, &all)))
        .filter(|(_, labels)| seen.insert(labels.clone()))
        .collect();
    match family.kind {
        FamilyType::Counter | FamilyType::Gauge | FamilyType::Untyped => {
            let kind = match family.kind {
                FamilyType::Counter if !family.counter_untyped => Kind::Counter,
                FamilyType::Gauge => Kind::Gauge,
                _ => Kind::Untyped,
            };
            let mut f = out.family(family.name, &help, kind)?;
            for (metric, labels) in &metrics {
                if let Value::Simple(v) = metric.value {
                    f.sample(labels, v)?;
                }
            }
        }
        FamilyType::Histogram | FamilyType::Summary => {
            // Untyped families with node_exporter's sample names and `le`/`quantile` values
            // formatted as Go formats them, so the series are the ones node_exporter serves.
            let histogram = family.kind == FamilyType::Histogram;
            let (first, special) = if histogram {
                (format!("{}_bucket", family.name), "le")
            } else {
                (family.name.to_string(), "quantile")
            };
            let mut f = out.family(&first, &help, Kind::Untyped)?;
            for (metric, labels) in &metrics {
                let points: Vec<(f64, f64)> = match &metric.value {
                    Value::Histogram { buckets, count, .. } => {
                        let mut points: Vec<(f64, f64)> = go_map_points(buckets);
                        points.retain(|(b, _)| *b != f64::INFINITY);
                        points.sort_by(|a, b| a.0.total_cmp(&b.0));
                        // Go's constant histogram always ends with +Inf = the sample count.
                        points.push((f64::INFINITY, (*count as u64) as f64));
                        points
                            .iter()
                            .map(|&(b, c)| (b, (c as u64) as f64))
                            .collect()
                    }
                    Value::Summary { quantiles, .. } => {
                        let mut points = go_map_points(quantiles);
                        points.sort_by(|a, b| a.0.total_cmp(&b.0));
                        points
                    }
                    Value::Simple(_) => continue,
                };
                for (bound, value) in points {
                    let bound = go_float(bound);
                    let mut labels = labels.clone();
                    labels.push((special, &bound));
                    f.sample(&labels, value)?;
                }
            }
            for suffix in ["_sum", "_count"] {
                let name = format!("{}{suffix}", family.name);
                let mut f = out.family(&name, &help, Kind::Untyped)?;
                for (metric, labels) in &metrics {
                    let (sum, count) = match &metric.value {
                        Value::Histogram { sum, count, .. } | Value::Summary { sum, count, .. } => {
                            (*sum, (*count as u64) as f64)
                        }
                        Value::Simple(_) => continue,
                    };
                    let v = if suffix == "_sum" { sum } else { count };
                    f.sample(labels, v)?;
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
    use crate::collector::testing::{assert_golden, fixture, render};

    /// The golden has absolute paths and mtimes in it; replace them with stable text.
    fn normalise(text: &str, dir: &Path) -> String {
        text.replace(&dir.to_string_lossy().into_owned(), "DIR")
            .lines()
            .map(|l| {
                if l.starts_with("node_textfile_mtime_seconds{") {
                    let (head, _) = l.rsplit_once(' ').unwrap_or((l, ""));
                    format!("{head} MTIME\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    }

    #[test]
    fn golden_good_files() {
        let root = fixture("basic");
        let dir = root.join("textfile");
        let text = render(
            "textfile",
            Box::new(TextfileCollector::new(dir.clone())),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_textfile_scrape_error 0"), "{text}");
        assert_golden(&root.join("golden/textfile.prom"), &normalise(&text, &dir));
    }

    #[test]
    fn malformed_files_set_scrape_error_and_are_dropped() {
        let root = fixture("odd");
        let dir = root.join("textfile");
        let text = render(
            "textfile",
            Box::new(TextfileCollector::new(dir.clone())),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_textfile_scrape_error 1"), "{text}");
        assert!(text.contains("good_metric"), "{text}");
        assert!(!text.contains("from_bad_file"), "{text}");
        assert_golden(&root.join("golden/textfile.prom"), &normalise(&text, &dir));
    }

    #[test]
    fn empty_directory_flag_reports_no_error() {
        let root = fixture("basic");
        let text = render(
            "textfile",
            Box::new(TextfileCollector::new(PathBuf::new())),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_textfile_scrape_error 0"), "{text}");
        assert!(!text.contains("node_textfile_mtime_seconds"), "{text}");
    }

    #[test]
    fn missing_directory_is_a_scrape_error() {
        let text = render(
            "textfile",
            Box::new(TextfileCollector::new("/nonexistent/textfiles".into())),
            Paths::fixture(&fixture("basic")),
        );
        assert!(text.contains("node_textfile_scrape_error 1"), "{text}");
    }

    #[test]
    fn the_directory_flag_repeats() {
        let root = fixture("basic");
        let odd = root.parent().unwrap().join("odd/textfile");
        let paths = Paths::fixture(&root);
        let first = format!(
            "--collector.textfile.directory={}",
            root.join("textfile").display()
        );
        let second = format!("--collector.textfile.directory={}", odd.display());
        let collector =
            crate::collector::testing::build_with(&REGISTRATION, &[&first, &second], &paths);
        let text = render("textfile", collector, paths);
        assert!(text.contains("apt_upgrades_pending"), "{text}");
        assert!(text.contains("good_metric{a=\"x\"} 1"), "{text}");
    }

    /// Renders the collector over a scratch directory holding `files`; the body must parse.
    fn render_files(name: &str, files: &[(&str, &str)]) -> String {
        let dir =
            std::env::temp_dir().join(format!("nodewarden-textfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let text = render(
            "textfile",
            Box::new(TextfileCollector::new(dir.clone())),
            Paths::fixture(&fixture("basic")),
        );
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = super::super::expfmt::parse_text(&text) {
            panic!("invalid exposition ({e}):\n{text}");
        }
        text
    }

    #[test]
    fn a_repeated_quantile_or_bucket_is_one_series() {
        // fuzz/regressions/agent_textfile/duplicate-quantile: node_exporter's conversion keys
        // quantiles and buckets by value (a Go map): one series, the last value, no error.
        let text = render_files(
            "quantile",
            &[(
                "s.prom",
                "# TYPE s summary\ns{quantile=\"0.99\"} 0.2\ns{quantile=\"0.99\"} 0.3\n\
                 s{quantile=\"NaN\"} 7\ns_sum 1\ns_count 2\n\
                 # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 2\n\
                 h_bucket{le=\"+Inf\"} 3\nh_sum{le=\"5\"} 4\nh_count 3\n",
            )],
        );
        assert_eq!(text.matches("s{quantile=\"0.99\"}").count(), 1, "{text}");
        assert!(text.contains("s{quantile=\"0.99\"} 0.3"), "{text}");
        assert!(!text.contains("NaN"), "{text}");
        assert_eq!(text.matches("h_bucket{le=\"1\"}").count(), 1, "{text}");
        assert!(text.contains("h_bucket{le=\"1\"} 2"), "{text}");
        assert!(text.contains("h_sum 4"), "{text}");
        assert!(text.contains("node_textfile_scrape_error 0"), "{text}");
    }

    #[test]
    fn series_equal_once_labels_are_completed_are_served_once() {
        // `m` and `m{a=""}` are one series once `a` is completed with "": the first is kept.
        let text = render_files(
            "completed",
            &[
                ("a.prom", "m 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\n"),
                (
                    "b.prom",
                    "m{a=\"\"} 2\n# TYPE s summary\ns{quantile=\"0.5\",a=\"\"} 2\n",
                ),
            ],
        );
        assert!(text.contains("m{a=\"\"} 1\n"), "{text}");
        assert!(!text.contains("m{a=\"\"} 2"), "{text}");
        assert_eq!(
            text.matches("s{a=\"\",quantile=\"0.5\"}").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn suffix_collisions_keep_the_family_collected_first() {
        // client_golang's registry drops a family that takes a summary's or histogram's
        // `_sum`/`_count`/`_bucket` (checkSuffixCollisions); node_exporter serves the first.
        let text = render_files(
            "suffix",
            &[
                ("a.prom", "# TYPE s summary\ns_sum 1\ns_count 1\n"),
                ("b.prom", "s_count 9\n"),
            ],
        );
        assert!(!text.contains("s_count 9"), "{text}");
        assert!(text.contains("s_count 1"), "{text}");
        // A `_total` counter beside a family named as its stem keeps its series (untyped).
        let text = render_files(
            "stem",
            &[("a.prom", "# TYPE x_total counter\nx_total 4\nx 5\n")],
        );
        assert!(text.contains("x_total 4") && text.contains("x 5"), "{text}");
    }

    #[test]
    fn directory_globs() {
        let root = fixture("basic");
        let pattern = format!("{}/textf?le", root.display());
        let text = render(
            "textfile",
            Box::new(TextfileCollector::new(PathBuf::from(&pattern))),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_textfile_scrape_error 0"), "{text}");
        assert!(text.contains("apt_upgrades_pending"), "{text}");
        let parts =
            compile_glob(&format!("{}/*/textfile", root.parent().unwrap().display())).unwrap();
        let found = glob(&parts);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].ends_with("basic/textfile") && found[1].ends_with("odd/textfile"));
        assert!(compile_glob("/var/lib/node_exporter").is_none());
        assert!(component_regex("[a-").is_none());
        assert!(component_regex("[!x]*.prom").unwrap().is_match("!abc.prom"));
        assert!(component_regex("[^x]?").unwrap().is_match("ab"));
    }
}
