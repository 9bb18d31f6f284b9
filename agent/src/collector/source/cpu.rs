//! [`CpuPresence`]: rescans of the CPU directories only when the set of CPUs changes.

use super::file::SourceFile;
use crate::collector::Paths;

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
