//! Small helpers shared by collectors: kingpin-style flags, node_exporter's (unanchored) regex
//! flags and device filter, cached field filters, label text formatted once rather than every
//! scrape, Go's integer, duration and float syntax, and procfs-style sysfs attribute reads.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use regex::Regex;

use super::{
    BuildContext, BuildError, CollectorError, Context, Paths, read_file_at_into, read_file_into,
};

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

/// A field filter (`--collector.{vmstat,netstat}.fields`) that remembers its verdict per field
/// position, so a source whose field names do not change between scrapes runs the regex once
/// per field, not once per field per scrape. No pattern (an empty flag) lets every field through.
pub struct FieldFilter {
    pattern: Option<Regex>,
    verdicts: Vec<(String, bool)>,
    /// Whether the regex ran since the last [`FieldFilter::release_regex_cache`].
    ran: bool,
}

impl FieldFilter {
    pub fn new(pattern: Option<Regex>) -> Self {
        FieldFilter {
            pattern,
            verdicts: Vec::new(),
            ran: false,
        }
    }

    /// Whether `key`, the `index`th field of the source, is to be reported.
    pub fn allows(&mut self, index: usize, key: &str) -> bool {
        let Some(pattern) = &self.pattern else {
            return true;
        };
        if let Some((cached, verdict)) = self.verdicts.get(index)
            && cached == key
        {
            return *verdict;
        }
        let verdict = pattern.is_match(key);
        self.ran = true;
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

    /// Call after a scrape: if the regex ran (the first scrape, or fields changed), replaces it
    /// with a fresh copy, dropping the search cache it grew (≈120 KiB for netstat's default
    /// filter) that steady-state scrapes, served from the verdicts, never use.
    pub fn release_regex_cache(&mut self) {
        if std::mem::take(&mut self.ran)
            && let Some(regex) = &mut self.pattern
            && let Ok(fresh) = Regex::new(regex.as_str())
        {
            *regex = fresh;
        }
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
        if let Some(file) = &self.file {
            if read_file_at_into(file, buf).is_ok() {
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

/// node_exporter's `deviceFilter`: a device is ignored when it matches the exclude pattern or
/// fails to match the include pattern.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    pub exclude: Option<regex::Regex>,
    pub include: Option<regex::Regex>,
}

impl DeviceFilter {
    pub fn ignored(&self, name: &str) -> bool {
        self.exclude.as_ref().is_some_and(|r| r.is_match(name))
            || self.include.as_ref().is_some_and(|r| !r.is_match(name))
    }
}

/// Builds a [`DeviceFilter`] from an exclude flag, an include flag and their deprecated aliases,
/// with node_exporter's rules: an alias only applies when its new flag is not given, and exclude
/// and include are mutually exclusive. `exclude_default` is the exclude flag's default value:
/// giving only the include flag replaces that default (as node_exporter's flag checks require).
pub fn device_filter(
    ctx: &BuildContext<'_>,
    exclude: &str,
    old_exclude: Option<&str>,
    include: &str,
    old_include: Option<&str>,
) -> Result<DeviceFilter, BuildError> {
    let explicit =
        |id: &str| ctx.matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let conflict = |a: &str, b: &str| BuildError::Flag {
        flag: a.to_string(),
        reason: format!("--{a} and --{b} are mutually exclusive"),
    };
    let mut exclude_id = exclude;
    if let Some(old) = old_exclude.filter(|old| ctx.flag(old).is_some_and(|v| !v.is_empty())) {
        if explicit(exclude) {
            return Err(conflict(old, exclude));
        }
        exclude_id = old;
    }
    let mut include_id = include;
    if let Some(old) = old_include.filter(|old| ctx.flag(old).is_some_and(|v| !v.is_empty())) {
        if explicit(include) {
            return Err(conflict(old, include));
        }
        include_id = old;
    }
    let include_re = unanchored_regex_flag(ctx, include_id)?;
    let mut exclude_re = unanchored_regex_flag(ctx, exclude_id)?;
    if include_re.is_some() && exclude_re.is_some() {
        if explicit(exclude_id) {
            return Err(conflict(exclude_id, include_id));
        }
        // Only the default exclude pattern is set: the user asked for an include list.
        exclude_re = None;
    }
    Ok(DeviceFilter {
        exclude: exclude_re,
        include: include_re,
    })
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then decimal, `0x` hex, `0o`/`0` octal or
/// `0b` binary (underscores allowed only after a prefix).
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, body, prefixed) = if let Some(rest) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, rest, true)
    } else if let Some(rest) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, rest, true)
    } else if let Some(rest) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, rest, true)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..], true)
    } else {
        (10, digits, false)
    };
    if body.is_empty() || body.starts_with('+') || body.starts_with('-') {
        return None;
    }
    let magnitude = if prefixed && body.contains('_') {
        let cleaned: String = body.chars().filter(|&c| c != '_').collect();
        u64::from_str_radix(&cleaned, radix).ok()?
    } else {
        u64::from_str_radix(body, radix).ok()?
    };
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `time.ParseDuration` for the forms flags use: `5s`, `1m30s`, `1.5s`, `250ms`, `0`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` (and so Prometheus's Go client) writes
/// it: shortest round-trip digits, in exponent form when the decimal exponent is < -4 or >= 6
/// (Go's rule for shortest 'g': 1234567 is `1.234567e+06`); `+Inf`, `-Inf`, `NaN`.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        // Plain notation; Rust's Display is shortest round-trip and never uses an exponent.
        return format!("{f}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// procfs's `SysReadFile`: one read of at most 128 bytes (some hwmon drivers never finish a
/// longer read), whitespace-trimmed, into `buf`.
pub fn read_sys_file(path: &Path, buf: &mut String) -> std::io::Result<()> {
    let mut bytes = [0u8; 128];
    let n = std::fs::File::open(path)?.read(&mut bytes)?;
    buf.clear();
    buf.push_str(String::from_utf8_lossy(&bytes[..n]).trim());
    Ok(())
}

/// A sysfs attribute whose path is known only at run time (one interface's `speed`), kept
/// open between scrapes and re-read from offset 0 as [`SourceFile`] does: for attributes read
/// every scrape, the path walk and open/close cost more than generating the value. Reads as
/// [`read_sys_file`] does.
#[derive(Default)]
pub struct OpenAttr {
    file: Option<std::fs::File>,
}

impl OpenAttr {
    pub fn read(&mut self, path: &Path, buf: &mut String) -> std::io::Result<()> {
        if let Some(file) = &self.file {
            match read_sys_at(file, buf) {
                // The attribute's kernfs node is gone (the device was removed, perhaps replaced
                // by another of the same name): open the path again.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => self.file = None,
                result => return result,
            }
        }
        let file = std::fs::File::open(path)?;
        let result = read_sys_at(&file, buf);
        // Kept even when the driver refuses the read now (the speed of a link that is down):
        // it may answer at the next scrape.
        self.file = Some(file);
        result
    }

    /// Like [`read_sys_attr`].
    pub fn read_attr(&mut self, path: &Path, buf: &mut String) -> std::io::Result<bool> {
        match self.read(path, buf) {
            Ok(()) => Ok(true),
            Err(e) if sys_attr_absent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn read_sys_at(file: &std::fs::File, buf: &mut String) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; 128];
    let n = file.read_at(&mut bytes, 0)?;
    buf.clear();
    buf.push_str(String::from_utf8_lossy(bytes.get(..n).unwrap_or_default()).trim());
    Ok(())
}

/// Like [`read_sys_file`], but `Ok(false)` for the errors procfs treats as "attribute absent":
/// not found, permission denied, operation not supported, invalid argument (e.g. the speed of a
/// link that is down) and, for sysfs attributes backed by drivers, no such device.
pub fn read_sys_attr(path: &Path, buf: &mut String) -> std::io::Result<bool> {
    match read_sys_file(path, buf) {
        Ok(()) => Ok(true),
        Err(e) if sys_attr_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn sys_attr_absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
        || matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENODEV | libc::ENXIO)
        )
}

/// Remembers that a source was absent, for the rest of the hotplug epoch
/// ([`super::hotplug`]): a source that does not exist is not probed again every scrape.
#[derive(Debug, Default)]
pub struct Absence {
    absent_in: Option<u64>,
}

impl Absence {
    /// Whether the source was found absent in this scrape's epoch (skip the probe).
    pub fn known(&self, ctx: &Context<'_>) -> bool {
        self.absent_in.is_some() && self.absent_in == ctx.hotplug_epoch()
    }

    /// Records what a probe found.
    pub fn record(&mut self, ctx: &Context<'_>, absent: bool) {
        self.absent_in = if absent { ctx.hotplug_epoch() } else { None };
    }

    /// Reads a source that may not exist with `read`, unless it is known absent: `Ok(true)`
    /// when read, `Ok(false)` when absent (known, or `read` failed with NotFound).
    pub fn read(
        &mut self,
        ctx: &Context<'_>,
        read: impl FnOnce() -> Result<(), CollectorError>,
    ) -> Result<bool, CollectorError> {
        if self.known(ctx) {
            return Ok(false);
        }
        match read() {
            Ok(()) => {
                self.record(ctx, false);
                Ok(true)
            }
            Err(CollectorError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.record(ctx, true);
                Ok(false)
            }
            Err(e) => {
                self.record(ctx, false);
                Err(e)
            }
        }
    }
}

/// A directory's sorted entry names, listed again only when the hotplug epoch moves
/// ([`super::hotplug`]): sysfs class and /sys/fs directories change with uevents and mounts.
#[derive(Debug, Default)]
pub struct DirListing {
    /// The epoch of `names`; `None`: list next time.
    epoch: Option<u64>,
    /// `None`: the directory does not exist.
    names: Option<std::sync::Arc<[String]>>,
}

impl DirListing {
    /// The sorted names in `dir` for which `keep` holds (`None` when `dir` does not exist), as
    /// [`sorted_dir_names`]. `dir` must be the same on every call.
    pub fn names(
        &mut self,
        ctx: &Context<'_>,
        dir: &Path,
        mut keep: impl FnMut(&std::fs::DirEntry) -> bool,
    ) -> std::io::Result<Option<std::sync::Arc<[String]>>> {
        if self.epoch.is_some() && self.epoch == ctx.hotplug_epoch() {
            return Ok(self.names.clone());
        }
        self.epoch = None;
        self.names = sorted_dir_names_where(dir, &mut keep)?.map(Into::into);
        self.epoch = ctx.hotplug_epoch();
        Ok(self.names.clone())
    }
}

/// The sorted names of the entries of a directory; `Ok(None)` when it does not exist.
pub fn sorted_dir_names(dir: &Path) -> std::io::Result<Option<Vec<String>>> {
    sorted_dir_names_where(dir, |_| true)
}

fn sorted_dir_names_where(
    dir: &Path,
    mut keep: impl FnMut(&std::fs::DirEntry) -> bool,
) -> std::io::Result<Option<Vec<String>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !keep(&entry) {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(Some(names))
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
    fn field_filter_follows_changed_fields() {
        let mut filter = FieldFilter::new(Some(Regex::new("^pg").unwrap()));
        assert!(filter.allows(0, "pgfault"));
        assert!(!filter.allows(1, "nr_free"));
        assert!(filter.allows(0, "pgfault"));
        assert!(!filter.allows(0, "other"));
        assert!(filter.allows(3, "pgx"));
        // Releasing the regex's search cache keeps the pattern and the verdicts.
        filter.release_regex_cache();
        assert!(filter.allows(4, "pgy"));
        assert!(!filter.allows(1, "nr_free"));
        // No pattern: everything passes.
        assert!(FieldFilter::new(None).allows(0, "anything"));
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

#[cfg(test)]
mod device_and_go_syntax_tests {
    use super::*;

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("0x1003"), Some(4099));
        assert_eq!(parse_go_int("-1"), Some(-1));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("0"), Some(0));
        assert_eq!(parse_go_int("1500"), Some(1500));
        assert_eq!(parse_go_int("0b101"), Some(5));
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("0x"), None);
        assert_eq!(parse_go_int("12a"), None);
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int("9223372036854775808"), None);
    }

    #[test]
    fn go_floats() {
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(10.0), "10");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(1e21), "1e+21");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn device_filter_semantics() {
        let f = DeviceFilter {
            exclude: Some(regex::Regex::new("^lo$").unwrap()),
            include: None,
        };
        assert!(f.ignored("lo"));
        assert!(!f.ignored("eth0"));
        let f = DeviceFilter {
            exclude: None,
            include: Some(regex::Regex::new("eth").unwrap()),
        };
        assert!(!f.ignored("veth-eth1"));
        assert!(f.ignored("lo"));
    }

    fn matches(args: &[&str]) -> clap::ArgMatches {
        crate::cli::command()
            .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn every_collector_builds_from_default_and_node_exporter_style_flags() {
        let paths = super::super::Paths::default();
        let all: Vec<String> = super::super::ALL
            .iter()
            .map(|r| format!("--collector.{}", r.name))
            .collect();
        let mut args: Vec<&str> = all.iter().map(String::as_str).collect();
        let built = crate::cli::build_collectors(&matches(&args), &paths).unwrap();
        assert_eq!(built.len(), super::super::ALL.len());
        args.extend([
            "--collector.netdev.netlink=false",
            "--collector.netdev.address-info",
            "--collector.netdev.device-exclude=^lo$",
            "--collector.filesystem.mount-timeout=500ms",
            "--collector.diskstats.device-include=^sd",
            "--collector.textfile.directory=/nonexistent",
            "--collector.netclass.ignore-invalid-speed",
            "--collector.bcache.priorityStats",
            "--collector.netclass.netlink",
            "--collector.netdev.enable-detailed-metrics",
        ]);
        crate::cli::build_collectors(&matches(&args), &paths).unwrap();
    }

    #[test]
    fn bad_flag_values_are_build_errors() {
        let paths = super::super::Paths::default();
        for bad in [
            "--collector.filesystem.mount-timeout=soon",
            "--collector.filesystem.mount-points-exclude=(",
            "--collector.netdev.device-exclude=[",
        ] {
            assert!(
                crate::cli::build_collectors(&matches(&[bad]), &paths).is_err(),
                "{bad} accepted"
            );
        }
        let both = matches(&[
            "--collector.netdev.device-exclude=^lo$",
            "--collector.netdev.device-include=^eth",
        ]);
        assert!(crate::cli::build_collectors(&both, &paths).is_err());
    }
}

#[cfg(test)]
mod epoch_cache_tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_listing_holds_for_its_epoch_only() {
        let dir = tempfile::tempdir().unwrap();
        let class = dir.path().join("class");
        let (paths, malformed) = (Paths::fixture(dir.path()), AtomicU64::new(0));
        let at = |epoch| Context::new(&paths, &malformed).with_hotplug_epoch(epoch);
        let mut listing = DirListing::default();
        let names = |l: &mut DirListing, epoch| {
            l.names(&at(epoch), &class, |e| {
                !e.file_name().to_string_lossy().starts_with('x')
            })
            .unwrap()
            .map(|n| n.to_vec())
        };
        assert_eq!(names(&mut listing, Some(1)), None);
        std::fs::create_dir(&class).unwrap();
        // Absent in epoch 1, and remembered as such until the epoch moves.
        assert_eq!(names(&mut listing, Some(1)), None);
        assert_eq!(names(&mut listing, Some(2)), Some(vec![]));
        std::fs::create_dir(class.join("b")).unwrap();
        std::fs::create_dir(class.join("a")).unwrap();
        std::fs::create_dir(class.join("x1")).unwrap();
        assert_eq!(names(&mut listing, Some(2)), Some(vec![]));
        assert_eq!(
            names(&mut listing, Some(3)),
            Some(vec!["a".into(), "b".into()])
        );
        // Without an epoch every call lists.
        std::fs::create_dir(class.join("c")).unwrap();
        assert_eq!(names(&mut listing, None).map(|n| n.len()), Some(3));
        std::fs::create_dir(class.join("d")).unwrap();
        assert_eq!(names(&mut listing, None).map(|n| n.len()), Some(4));
    }

    #[test]
    fn an_absence_holds_for_its_epoch_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mdstat");
        let (paths, malformed) = (Paths::fixture(dir.path()), AtomicU64::new(0));
        let at = |epoch| Context::new(&paths, &malformed).with_hotplug_epoch(epoch);
        let mut absence = Absence::default();
        let mut buf = String::new();
        let probes = std::cell::Cell::new(0);
        let mut read = |absence: &mut Absence, epoch| {
            absence.read(&at(epoch), || {
                probes.set(probes.get() + 1);
                super::super::read_into(&file, &mut buf)
            })
        };
        assert!(!read(&mut absence, Some(1)).unwrap());
        std::fs::write(&file, "Personalities :\n").unwrap();
        assert!(
            !read(&mut absence, Some(1)).unwrap(),
            "known absent in epoch 1"
        );
        assert!(read(&mut absence, Some(2)).unwrap());
        assert!(
            read(&mut absence, Some(2)).unwrap(),
            "a present source is read every time"
        );
        std::fs::remove_file(&file).unwrap();
        assert!(!read(&mut absence, None).unwrap());
        assert!(!read(&mut absence, None).unwrap());
        assert_eq!(probes.get(), 5);
        // Errors other than absence are neither hidden nor remembered.
        std::fs::create_dir(&file).unwrap();
        assert!(read(&mut absence, Some(3)).is_err());
        assert!(read(&mut absence, Some(3)).is_err());
    }
}
