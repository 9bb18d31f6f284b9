//! `loadavg`: node_load1, node_load5, node_load15 from /proc/loadavg.

use super::source::{SourceFile, parse_loadavg};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "loadavg",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(LoadavgCollector::default()))
}

struct LoadavgCollector {
    source: SourceFile,
    buf: String,
}

impl Default for LoadavgCollector {
    fn default() -> Self {
        LoadavgCollector {
            source: SourceFile::proc("loadavg"),
            buf: String::new(),
        }
    }
}

impl Collector for LoadavgCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let [l1, l5, l15] = parse_loadavg(&self.buf).ok_or_else(|| CollectorError::Parse {
            path: self.source.display_path().to_path_buf(),
            reason: format!("unexpected content {:?}", self.buf.trim_end()),
        })?;
        out.gauge("node_load1", "1m load average.", l1)?;
        out.gauge("node_load5", "5m load average.", l5)?;
        out.gauge("node_load15", "15m load average.", l15)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "loadavg", |_| build_default());
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/loadavg"), "0.5 1.5\n").unwrap();
        let text = crate::collector::testing::render(
            "loadavg",
            build_default(),
            crate::collector::Paths::fixture(dir.path()),
        );
        assert!(
            text.contains("node_scrape_collector_success{collector=\"loadavg\"} 0"),
            "{text}"
        );
        assert!(!text.contains("node_load1 "), "{text}");
    }

    fn build_default() -> Box<dyn Collector> {
        Box::new(LoadavgCollector::default())
    }
}
