//! `vmstat`: the /proc/vmstat fields matching `--collector.vmstat.fields`, as untyped
//! node_vmstat_<field>.

use super::filter::FieldFilter;
use super::flags::unanchored_regex_flag;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "vmstat",
    default_enabled: true,
    flags,
    build,
};

const FIELDS_FLAG: &str = "collector.vmstat.fields";

fn flags(command: clap::Command) -> clap::Command {
    command.arg(
        clap::Arg::new(FIELDS_FLAG)
            .long(FIELDS_FLAG)
            .default_value("^(oom_kill|pgpg|pswp|pg.*fault).*")
            .help("Regexp of fields to return for vmstat collector."),
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(VmstatCollector {
        // An empty pattern matches everything, as Go's regexp does.
        fields: FieldFilter::new(unanchored_regex_flag(ctx, FIELDS_FLAG)?),
        source: SourceFile::proc("vmstat"),
        buf: String::new(),
        name: String::new(),
        help: String::new(),
    }))
}

struct VmstatCollector {
    fields: FieldFilter,
    source: SourceFile,
    buf: String,
    name: String,
    help: String,
}

/// One `name value` line of /proc/vmstat (anything after the value is ignored, as in
/// node_exporter).
pub fn parse_vmstat_line(line: &str) -> Option<(&str, f64)> {
    let (name, value) = split_vmstat_line(line)?;
    Some((name, value.parse().ok()?))
}

/// The name and the unparsed value of a line: values are parsed only for reported fields
/// (≈ 10 of ≈ 180 with the default filter).
fn split_vmstat_line(line: &str) -> Option<(&str, &str)> {
    let mut fields = line.split_ascii_whitespace();
    Some((fields.next()?, fields.next()?))
}

impl Collector for VmstatCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        for (index, line) in self.buf.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((field, value)) = split_vmstat_line(line) else {
                ctx.malformed(path, line);
                continue;
            };
            if !self.fields.allows(index, field) {
                continue;
            }
            let Ok(value) = value.parse::<f64>() else {
                ctx.malformed(path, line);
                continue;
            };
            self.name.clear();
            self.name.push_str("node_vmstat_");
            self.name.push_str(field);
            self.help.clear();
            self.help.push_str("/proc/vmstat information field ");
            self.help.push_str(field);
            self.help.push('.');
            out.single(&self.name, &self.help, Kind::Untyped, &[], value)?;
        }
        self.fields.release_regex_cache();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, build_with, fixture, render};

    #[test]
    fn golden_default_fields() {
        assert_renders_golden("basic", "vmstat", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn custom_filter_is_unanchored_like_go() {
        let root = fixture("basic");
        let paths = Paths::fixture(&root);
        let collector = build_with(&REGISTRATION, &["--collector.vmstat.fields=free"], &paths);
        let text = render("vmstat", collector, paths);
        assert!(text.contains("\nnode_vmstat_nr_free_pages "));
        assert!(!text.contains("node_vmstat_pgfault"));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_renders_golden("odd", "vmstat", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn lines() {
        assert_eq!(parse_vmstat_line("pgfault 12"), Some(("pgfault", 12.0)));
        assert_eq!(parse_vmstat_line("pgfault"), None);
        assert_eq!(parse_vmstat_line("pgfault x"), None);
    }
}
