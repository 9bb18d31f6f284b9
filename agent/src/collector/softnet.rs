//! `softnet`: per-CPU packet processing counters from /proc/net/softnet_stat.

use super::IndexLabels;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "softnet",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(SoftnetCollector::default()))
}

struct SoftnetCollector {
    source: SourceFile,
    buf: String,
    /// (line number, [processed, dropped, time_squeezed]) for this scrape.
    rows: Vec<(usize, [u32; 3])>,
    labels: IndexLabels,
}

impl Default for SoftnetCollector {
    fn default() -> Self {
        SoftnetCollector {
            source: SourceFile::proc("net/softnet_stat"),
            buf: String::new(),
            rows: Vec::new(),
            labels: IndexLabels::default(),
        }
    }
}

/// The processed, dropped and time_squeezed counters (hex) of one line, which has at least
/// nine columns on every kernel node_exporter supports.
pub fn parse_softnet_line(line: &str) -> Option<[u32; 3]> {
    let mut fields = line.split_ascii_whitespace();
    let mut values = [0u32; 3];
    for v in &mut values {
        *v = u32::from_str_radix(fields.next()?, 16).ok()?;
    }
    (fields.count() >= 6).then_some(values)
}

impl Collector for SoftnetCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        self.rows.clear();
        // node_exporter 1.5 labels each line with its position, not the CPU id column.
        for (i, line) in self.buf.lines().enumerate() {
            match parse_softnet_line(line) {
                Some(values) => self.rows.push((i, values)),
                None => ctx.malformed(path, line),
            }
        }
        if self.rows.is_empty() {
            return Ok(());
        }
        self.labels
            .ensure(self.rows.last().map_or(0, |(i, _)| i + 1));
        let families = [
            (
                "node_softnet_processed_total",
                "Number of processed packets",
            ),
            ("node_softnet_dropped_total", "Number of dropped packets"),
            (
                "node_softnet_times_squeezed_total",
                "Number of times processing packets ran out of quota",
            ),
        ];
        for (column, (name, help)) in families.into_iter().enumerate() {
            let mut family = out.family(name, help, Kind::Counter)?;
            for (i, values) in &self.rows {
                family.sample(&[("cpu", self.labels.get(*i))], values[column] as f64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden(
            "basic",
            "softnet",
            |_| Box::new(SoftnetCollector::default()),
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_renders_golden("odd", "softnet", |_| Box::new(SoftnetCollector::default()));
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_softnet_line(
                "00000013 00000001 0000000a 00000000 00000000 00000000 00000000 00000000 00000000"
            ),
            Some([0x13, 1, 10])
        );
        assert_eq!(parse_softnet_line("00000013 00000001 0000000a"), None);
        assert_eq!(parse_softnet_line("zz 00000001 0000000a 0 0 0 0 0 0"), None);
    }
}
