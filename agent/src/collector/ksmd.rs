//! `ksmd`: kernel samepage merging from /sys/kernel/mm/ksm (Documentation/admin-guide/mm/ksm.rst),
//! the nine files node_exporter 1.12.1 reads, in its order: `full_scans` as a counter,
//! `sleep_millisecs` in seconds, the rest as gauges. As there, every file must exist and parse
//! (`merge_across_nodes` exists only on NUMA kernels): the first that does not fails the
//! collection, after the files before it were reported. No NoData case: a kernel without KSM is
//! a failed collection, as in 1.12.1. Cost: nine files kept open, one pread each per scrape.

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "ksmd",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(KsmdCollector::default()))
}

/// (file, metric, help, kind, scale), in node_exporter's order.
const FILES: [(&str, &str, &str, Kind, f64); 9] = [
    (
        "kernel/mm/ksm/full_scans",
        "node_ksmd_full_scans_total",
        "ksmd 'full_scans' file.",
        Kind::Counter,
        1.0,
    ),
    (
        "kernel/mm/ksm/merge_across_nodes",
        "node_ksmd_merge_across_nodes",
        "ksmd 'merge_across_nodes' file.",
        Kind::Gauge,
        1.0,
    ),
    (
        "kernel/mm/ksm/pages_shared",
        "node_ksmd_pages_shared",
        "ksmd 'pages_shared' file.",
        Kind::Gauge,
        1.0,
    ),
    (
        "kernel/mm/ksm/pages_sharing",
        "node_ksmd_pages_sharing",
        "ksmd 'pages_sharing' file.",
        Kind::Gauge,
        1.0,
    ),
    (
        "kernel/mm/ksm/pages_to_scan",
        "node_ksmd_pages_to_scan",
        "ksmd 'pages_to_scan' file.",
        Kind::Gauge,
        1.0,
    ),
    (
        "kernel/mm/ksm/pages_unshared",
        "node_ksmd_pages_unshared",
        "ksmd 'pages_unshared' file.",
        Kind::Gauge,
        1.0,
    ),
    (
        "kernel/mm/ksm/pages_volatile",
        "node_ksmd_pages_volatile",
        "ksmd 'pages_volatile' file.",
        Kind::Gauge,
        1.0,
    ),
    (
        "kernel/mm/ksm/run",
        "node_ksmd_run",
        "ksmd 'run' file.",
        Kind::Gauge,
        1.0,
    ),
    (
        "kernel/mm/ksm/sleep_millisecs",
        "node_ksmd_sleep_seconds",
        "ksmd 'sleep_millisecs' file.",
        Kind::Gauge,
        1000.0,
    ),
];

struct KsmdCollector {
    files: [SourceFile; 9],
    buf: String,
}

impl Default for KsmdCollector {
    fn default() -> Self {
        KsmdCollector {
            files: FILES.map(|(rel, ..)| SourceFile::sys(rel)),
            buf: String::new(),
        }
    }
}

impl Collector for KsmdCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        for (file, (_, metric, help, kind, scale)) in self.files.iter_mut().zip(FILES) {
            file.read_into(ctx.paths, &mut self.buf)?;
            let value: u64 = self.buf.trim().parse().map_err(|_| CollectorError::Parse {
                path: file.display_path().to_path_buf(),
                reason: format!("not an unsigned integer: {:?}", self.buf.trim()),
            })?;
            out.single(metric, help, kind, &[], value as f64 / scale)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-system", "ksmd", |_| Box::new(KsmdCollector::default()));
    }

    #[test]
    fn a_missing_file_fails_after_the_ones_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let ksm = dir.path().join("sys/kernel/mm/ksm");
        std::fs::create_dir_all(&ksm).unwrap();
        std::fs::write(ksm.join("full_scans"), "7\n").unwrap();
        std::fs::write(ksm.join("pages_shared"), "1\n").unwrap();
        let text = render(
            "ksmd",
            Box::new(KsmdCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_ksmd_full_scans_total 7\n"));
        assert!(!text.contains("node_ksmd_pages_shared"));
        assert!(text.contains("node_scrape_collector_success{collector=\"ksmd\"} 0"));
    }
}
