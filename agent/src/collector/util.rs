//! Small helpers shared by collectors: kingpin-style flags, cached field filters and label text
//! that is formatted once rather than every scrape.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use regex::Regex;

use super::{BuildContext, BuildError, CollectorError, Paths, read_file_into};

/// Adds a kingpin-style boolean flag as node_exporter has them: `--<name>`, `--<name>=false` and
/// `--no-<name>`. Read it with [`bool_flag`].
pub fn add_bool_flag(
    command: Command,
    name: &'static str,
    default: bool,
    help: &'static str,
) -> Command {
    let off = format!("no-{name}");
    command
        .arg(
            Arg::new(name)
                .long(name)
                .num_args(0..=1)
                .require_equals(true)
                .default_value(if default { "true" } else { "false" })
                .default_missing_value("true")
                .value_parser(clap::value_parser!(bool))
                .overrides_with(off.clone())
                .help(help),
        )
        .arg(
            Arg::new(off.clone())
                .long(off)
                .action(ArgAction::SetTrue)
                .overrides_with(name)
                .hide(true),
        )
}

/// The value of a flag added with [`add_bool_flag`]; the last of `--x` / `--no-x` wins.
pub fn bool_flag(ctx: &BuildContext<'_>, name: &str) -> bool {
    let off = format!("no-{name}");
    if ctx.matches.try_get_one::<bool>(&off).ok().flatten() == Some(&true) {
        return false;
    }
    ctx.matches
        .try_get_one::<bool>(name)
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
}

/// A regex flag matched anywhere in the subject, as node_exporter's `regexp.MatchString` on an
/// unanchored pattern does (its field filters carry their own `^…$` where they want them).
/// Empty means no filter.
pub fn unanchored_regex_flag(
    ctx: &BuildContext<'_>,
    id: &str,
) -> Result<Option<Regex>, BuildError> {
    match ctx.flag(id) {
        None | Some("") => Ok(None),
        Some(pattern) => Regex::new(pattern).map(Some).map_err(|e| BuildError::Flag {
            flag: id.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Remembers a filter's verdict per field position, so a source whose field names do not change
/// between scrapes (vmstat, netstat) runs the regex once per field, not once per field per scrape.
#[derive(Default)]
pub struct FilterCache {
    verdicts: Vec<(String, bool)>,
}

impl FilterCache {
    /// Whether `key`, the `index`th field of the source, matches `pattern`.
    pub fn matches(&mut self, index: usize, key: &str, pattern: &Regex) -> bool {
        if let Some((cached, verdict)) = self.verdicts.get(index)
            && cached == key
        {
            return *verdict;
        }
        let verdict = pattern.is_match(key);
        if self.verdicts.len() <= index {
            self.verdicts
                .resize_with(index + 1, || (String::new(), false));
        }
        if let Some(slot) = self.verdicts.get_mut(index) {
            slot.0.clear();
            slot.0.push_str(key);
            slot.1 = verdict;
        }
        verdict
    }
}

/// Decimal label values "0", "1", … formatted once and reused by every scrape.
#[derive(Default)]
pub struct IndexLabels {
    labels: Vec<String>,
}

impl IndexLabels {
    /// Makes `get(i)` valid for every `i < n`.
    pub fn ensure(&mut self, n: usize) {
        while self.labels.len() < n {
            self.labels.push(self.labels.len().to_string());
        }
    }

    /// The label for `i`; call [`IndexLabels::ensure`] first.
    pub fn get(&self, i: usize) -> &str {
        self.labels.get(i).map(String::as_str).unwrap_or("")
    }
}

/// Which mount a [`SourceFile`] lives under.
#[derive(Clone, Copy)]
enum Mount {
    Proc,
    Sys,
}

/// A procfs/sysfs file kept open between scrapes and read again from offset 0 each time: both
/// regenerate their content on such a read, and this saves the path walk, open and close of
/// every scrape. A file that has gone away (a module unloaded, a device removed) fails the
/// re-read and is opened afresh once.
pub struct SourceFile {
    mount: Mount,
    rel: &'static str,
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
}

impl SourceFile {
    /// `rel` under `--path.procfs`.
    pub const fn proc(rel: &'static str) -> Self {
        SourceFile {
            mount: Mount::Proc,
            rel,
            path: None,
            file: None,
        }
    }

    /// `rel` under `--path.sysfs`.
    pub const fn sys(rel: &'static str) -> Self {
        SourceFile {
            mount: Mount::Sys,
            rel,
            path: None,
            file: None,
        }
    }

    /// A file found by listing a directory (such as one clocksource's attribute).
    pub fn at(path: PathBuf) -> Self {
        SourceFile {
            mount: Mount::Sys,
            rel: "",
            path: Some(path),
            file: None,
        }
    }

    /// The full path (resolved once: a collector's `Paths` never change).
    pub fn path(&mut self, paths: &Paths) -> &Path {
        let (mount, rel) = (self.mount, self.rel);
        self.path.get_or_insert_with(|| match mount {
            Mount::Proc => paths.proc(rel),
            Mount::Sys => paths.sys(rel),
        })
    }

    /// The path, for messages: full once the file has been opened, else the relative one.
    pub fn display_path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(self.rel))
    }

    /// Reads the whole file into `buf`, like [`super::read_into`].
    pub fn read_into(&mut self, paths: &Paths, buf: &mut String) -> Result<(), CollectorError> {
        use std::io::{Seek, SeekFrom};
        if let Some(file) = &mut self.file {
            if file
                .seek(SeekFrom::Start(0))
                .and_then(|_| read_file_into(file, buf))
                .is_ok()
            {
                return Ok(());
            }
            self.file = None;
        }
        let path = self.path(paths);
        let mut file = std::fs::File::open(path).map_err(|e| CollectorError::io(path, e))?;
        read_file_into(&mut file, buf).map_err(|e| CollectorError::io(path, e))?;
        self.file = Some(file);
        Ok(())
    }
}

/// Watches /sys/devices/system/cpu/present, so that CPU directories are listed again only when
/// the set of CPUs changes rather than every scrape.
pub struct CpuPresence {
    source: SourceFile,
    last: Option<String>,
    buf: String,
}

impl Default for CpuPresence {
    fn default() -> Self {
        CpuPresence {
            source: SourceFile::sys("devices/system/cpu/present"),
            last: None,
            buf: String::new(),
        }
    }
}

impl CpuPresence {
    /// Whether the present CPUs changed since the last call; always true on the first call and
    /// whenever the file cannot be read.
    pub fn changed(&mut self, paths: &Paths) -> bool {
        if self.source.read_into(paths, &mut self.buf).is_err() {
            self.last = None;
            return true;
        }
        let now = self.buf.trim();
        if self.last.as_deref() == Some(now) {
            return false;
        }
        self.last = Some(now.to_owned());
        true
    }
}

/// The entries of `dir` named `<prefix><number>` (such as `cpu0`, `cpu12`), sorted by number.
pub fn numbered_entries(dir: &Path, prefix: &str) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut entries: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let number = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((number, e.path()))
        })
        .collect();
    entries.sort_unstable_by_key(|(n, _)| *n);
    Ok(entries)
}

/// Parses a trimmed unsigned decimal attribute (node_exporter's `readUintFromFile`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(args: &[&str]) -> clap::ArgMatches {
        add_bool_flag(Command::new("t"), "collector.x.on", true, "x")
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
    }

    fn value(args: &[&str]) -> bool {
        let m = matches(args);
        let paths = super::super::Paths::default();
        bool_flag(
            &BuildContext {
                matches: &m,
                paths: &paths,
            },
            "collector.x.on",
        )
    }

    #[test]
    fn kingpin_bool_flags() {
        assert!(value(&[]));
        assert!(!value(&["--no-collector.x.on"]));
        assert!(!value(&["--collector.x.on=false"]));
        assert!(value(&["--no-collector.x.on", "--collector.x.on"]));
        assert!(!value(&["--collector.x.on", "--no-collector.x.on"]));
    }

    #[test]
    fn filter_cache_follows_changed_fields() {
        let re = Regex::new("^pg").unwrap();
        let mut cache = FilterCache::default();
        assert!(cache.matches(0, "pgfault", &re));
        assert!(!cache.matches(1, "nr_free", &re));
        assert!(cache.matches(0, "pgfault", &re));
        assert!(!cache.matches(0, "other", &re));
        assert!(cache.matches(3, "pgx", &re));
    }

    #[test]
    fn read_into_reads_large_and_empty_files_and_rejects_invalid_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        std::fs::write(dir.path().join("bad"), [0xff, 0xfe]).unwrap();
        let mut buf = String::from("stale");
        super::super::read_into(&dir.path().join("big"), &mut buf).unwrap();
        assert_eq!(buf, big);
        super::super::read_into(&dir.path().join("empty"), &mut buf).unwrap();
        assert_eq!(buf, "");
        let err = super::super::read_into(&dir.path().join("bad"), &mut buf).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
        assert!(super::super::read_into(&dir.path().join("missing"), &mut buf).is_err());
    }

    #[test]
    fn source_file_rereads_through_the_same_descriptor() {
        use std::os::fd::AsRawFd;
        let paths = Paths::default();
        let mut uptime = SourceFile::proc("uptime");
        let mut first = String::new();
        uptime.read_into(&paths, &mut first).unwrap();
        let fd = uptime.file.as_ref().unwrap().as_raw_fd();
        // /proc/uptime ticks every 10 ms: a changed reading shows the content was regenerated.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut again = String::new();
        loop {
            uptime.read_into(&paths, &mut again).unwrap();
            if again != first || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
        assert_ne!(again, first);
        assert!(again.ends_with('\n'));
        assert_eq!(uptime.file.as_ref().unwrap().as_raw_fd(), fd);
    }

    #[test]
    fn source_file_reopens_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let paths = Paths::fixture(dir.path());
        let mut source = SourceFile::proc("thing");
        let mut buf = String::new();
        let err = source.read_into(&paths, &mut buf).unwrap_err();
        assert!(err.to_string().contains("thing"), "{err}");
        std::fs::write(dir.path().join("proc/thing"), "one\n").unwrap();
        source.read_into(&paths, &mut buf).unwrap();
        assert_eq!(buf, "one\n");
        std::fs::write(dir.path().join("proc/thing"), "two\n").unwrap();
        source.read_into(&paths, &mut buf).unwrap();
        assert_eq!(buf, "two\n");
    }

    #[test]
    fn index_labels() {
        let mut labels = IndexLabels::default();
        labels.ensure(11);
        assert_eq!(labels.get(10), "10");
        assert_eq!(labels.get(0), "0");
    }
}
