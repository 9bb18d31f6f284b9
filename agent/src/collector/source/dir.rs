//! Absence and directory listings, trusted for one hotplug epoch ([`crate::collector::hotplug`]),
//! and directory entry helpers.

use std::path::{Path, PathBuf};

use crate::collector::{CollectorError, Context};

/// Remembers that a source was absent, for the rest of the hotplug epoch
/// ([`crate::collector::hotplug`]): a source that does not exist is not probed again every scrape.
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
/// ([`crate::collector::hotplug`]): sysfs class and /sys/fs directories change with uevents and mounts.
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

/// Whether two listings from [`DirListing::names`] are the same (the same `Arc` when the epoch
/// held, else equal names): a collector keeps what it built from a listing while this holds.
pub fn same_listing(
    a: &Option<std::sync::Arc<[String]>>,
    b: &Option<std::sync::Arc<[String]>>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b) || a[..] == b[..],
        (None, None) => true,
        _ => false,
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

/// The digits right after `prefix` in a name of the form `<prefix><digit>…` — what the glob
/// `<prefix>[0-9]*` that node_exporter and prometheus/procfs use for numbered sysfs entries
/// (`cpu12`, `mc0`, `thermal_zone3`, `bdev1`) matches. `None` for any other name.
pub fn entry_digits<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The names among `names` that [`entry_digits`] matches, in their order.
pub fn numbered_names<'a>(
    names: &'a [String],
    prefix: &'a str,
) -> impl Iterator<Item = &'a String> {
    names
        .iter()
        .filter(move |n| entry_digits(n, prefix).is_some())
}

/// The entries of `dir` that [`entry_digits`] matches, sorted by name (the glob's order);
/// none when `dir` does not exist.
pub fn numbered_entries(dir: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
    let names = sorted_dir_names(dir)?.unwrap_or_default();
    Ok(numbered_names(&names, prefix).cloned().collect())
}

/// The entries of `dir` that [`entry_digits`] matches as `(number, path)`, sorted by number
/// (CPU directories: `cpu2` before `cpu10`); none when `dir` does not exist.
pub fn numbered_paths(dir: &Path, prefix: &str) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut entries: Vec<(u32, PathBuf)> = numbered_entries(dir, prefix)?
        .into_iter()
        .filter_map(|name| {
            let number = entry_digits(&name, prefix)?.parse().ok()?;
            Some((number, dir.join(name)))
        })
        .collect();
    entries.sort_by_key(|(n, _)| *n);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
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
                crate::collector::source::read_into(&file, &mut buf)
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

    #[test]
    fn numbered_entries_follow_the_glob() {
        assert_eq!(entry_digits("cpu12", "cpu"), Some("12"));
        assert_eq!(entry_digits("thermal_zone3x", "thermal_zone"), Some("3"));
        assert_eq!(entry_digits("cpufreq", "cpu"), None);
        assert_eq!(entry_digits("cpu", "cpu"), None);
        let dir = tempfile::tempdir().unwrap();
        for name in ["cpu10", "cpu2", "cpuidle", "cpu0", "mc0"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(
            numbered_entries(dir.path(), "cpu").unwrap(),
            ["cpu0", "cpu10", "cpu2"]
        );
        let numbers: Vec<u32> = numbered_paths(dir.path(), "cpu")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(numbers, [0, 2, 10]);
        assert!(
            numbered_entries(&dir.path().join("missing"), "cpu")
                .unwrap()
                .is_empty()
        );
    }
}
