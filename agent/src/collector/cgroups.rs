//! `cgroups`: the controllers of /proc/cgroups (cgroups(7)), as node_exporter 1.12.1 reports
//! them through prometheus/procfs: per controller its number of cgroups and whether it is
//! enabled (both families carry 1.12.1's help, "Current cgroup number of the subsystem.").
//! `#` comment lines are skipped.
//!
//! Decisions: a line with fewer than four fields or a non-integer hierarchy, count or enabled
//! is skipped and counted as malformed (procfs fails the whole collection on it); a controller
//! listed twice keeps its first line (client_golang drops the repeat). A missing /proc/cgroups
//! is an error, as in 1.12.1. Samples are written in controller name order, as client_golang's
//! gathering sorts them. Cost: one file kept open, one pread per scrape.

use super::gosyntax::parse_go_decimal;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "cgroups",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(CgroupsCollector::default()))
}

struct CgroupsCollector {
    source: SourceFile,
    buf: String,
}

impl Default for CgroupsCollector {
    fn default() -> Self {
        CgroupsCollector {
            source: SourceFile::proc("cgroups"),
            buf: String::new(),
        }
    }
}

/// One line: controller, number of cgroups, enabled.
fn parse_line(line: &str) -> Option<(&str, i64, i64)> {
    let mut fields = line.split_whitespace();
    let name = fields.next()?;
    let _hierarchy = parse_go_decimal(fields.next()?)?;
    let cgroups = parse_go_decimal(fields.next()?)?;
    let enabled = parse_go_decimal(fields.next()?)?;
    Some((name, cgroups, enabled))
}

impl Collector for CgroupsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        let mut controllers = Vec::new();
        for line in self.buf.lines() {
            if line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some(c) => controllers.push(c),
                None => ctx.malformed(path, line),
            }
        }
        controllers.sort_by(|a, b| a.0.cmp(b.0));
        let before = controllers.len();
        controllers.dedup_by(|later, earlier| later.0 == earlier.0);
        for _ in controllers.len()..before {
            ctx.malformed(path, "a repeated controller");
        }
        if controllers.is_empty() {
            return Ok(());
        }
        let help = "Current cgroup number of the subsystem.";
        let mut f = out.family("node_cgroups_cgroups", help, Kind::Gauge)?;
        for (name, cgroups, _) in &controllers {
            f.sample(&[("subsys_name", name)], *cgroups as f64)?;
        }
        let mut f = out.family("node_cgroups_enabled", help, Kind::Gauge)?;
        for (name, _, enabled) in &controllers {
            f.sample(&[("subsys_name", name)], *enabled as f64)?;
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
        assert_renders_golden("hw-system", "cgroups", |_| {
            Box::new(CgroupsCollector::default())
        });
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(parse_line("cpu\t0\t142\t1"), Some(("cpu", 142, 1)));
        assert_eq!(parse_line("cpu\t0\t142"), None);
        assert_eq!(parse_line("cpu\tx\t142\t1"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/cgroups"),
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\nmemory\t0\t97\t1\n",
        )
        .unwrap();
        let text = render(
            "cgroups",
            Box::new(CgroupsCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_cgroups_cgroups{subsys_name=\"memory\"} 97\n"));
        assert!(!text.contains("\"cpu\""));
        assert!(text.contains("nodewarden_agent_malformed_lines_total 1\n"));
    }
}
