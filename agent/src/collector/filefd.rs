//! `filefd`: node_filefd_allocated and node_filefd_maximum from /proc/sys/fs/file-nr.

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "filefd",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(FilefdCollector::default()))
}

struct FilefdCollector {
    source: SourceFile,
    buf: String,
}

impl Default for FilefdCollector {
    fn default() -> Self {
        FilefdCollector {
            source: SourceFile::proc("sys/fs/file-nr"),
            buf: String::new(),
        }
    }
}

/// Allocated and maximum handles: the first and third tab-separated fields (the second is
/// always 0 since Linux 2.6).
pub fn parse_file_nr(text: &str) -> Option<(f64, f64)> {
    let mut parts = text.trim().split('\t');
    let allocated = parts.next()?.parse().ok()?;
    let _unused = parts.next()?;
    let maximum = parts.next()?.parse().ok()?;
    Some((allocated, maximum))
}

impl Collector for FilefdCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let (allocated, maximum) =
            parse_file_nr(&self.buf).ok_or_else(|| CollectorError::Parse {
                path: self.source.display_path().to_path_buf(),
                reason: format!("unexpected content {:?}", self.buf.trim_end()),
            })?;
        out.gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            allocated,
        )?;
        out.gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            maximum,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "filefd", |_| Box::new(FilefdCollector::default()));
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse_file_nr("1024\t0\t1631329\n"),
            Some((1024.0, 1631329.0))
        );
        assert_eq!(parse_file_nr("1024 0 1631329\n"), None);
        assert_eq!(parse_file_nr("1024\t0\n"), None);
        assert_eq!(parse_file_nr("x\t0\t1\n"), None);
    }
}
