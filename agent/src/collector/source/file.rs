//! [`SourceFile`]: a procfs/sysfs file kept open between scrapes.

use std::path::{Path, PathBuf};

use super::read::{read_file_at_into, read_file_into};
use crate::collector::{CollectorError, Paths};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
