//! `softnet`: per-CPU packet processing counters from /proc/net/softnet_stat, with node_exporter
//! 1.12's seven families; the CPU label is the file's CPU column where the kernel has one.

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
    /// (CPU, the [`COLUMNS`] counters) for this scrape.
    rows: Vec<(u32, [u32; 7])>,
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

/// The families, in the order of [`parse_softnet_line`]'s values: (name, help, kind).
const COLUMNS: [(&str, &str, Kind); 7] = [
    (
        "node_softnet_processed_total",
        "Number of processed packets",
        Kind::Counter,
    ),
    (
        "node_softnet_dropped_total",
        "Number of dropped packets",
        Kind::Counter,
    ),
    (
        "node_softnet_times_squeezed_total",
        "Number of times processing packets ran out of quota",
        Kind::Counter,
    ),
    (
        "node_softnet_cpu_collision_total",
        "Number of collision occur while obtaining device lock while transmitting",
        Kind::Counter,
    ),
    (
        "node_softnet_received_rps_total",
        "Number of times cpu woken up received_rps",
        Kind::Counter,
    ),
    (
        "node_softnet_flow_limit_count_total",
        "Number of times flow limit has been reached",
        Kind::Counter,
    ),
    (
        "node_softnet_backlog_len",
        "Softnet backlog status",
        Kind::Gauge,
    ),
];

/// One line, as prometheus/procfs reads it for node_exporter 1.12: processed, dropped and
/// time_squeezed (columns 1-3), cpu_collision (9), received_rps (10, when present),
/// flow_limit_count (11), backlog_len (12), all hex; and the CPU of column 13 (kernels since
/// 5.10, which skip offline CPUs), else `None` (the line's position is the CPU then).
/// At least nine columns.
pub fn parse_softnet_line(line: &str) -> Option<([u32; 7], Option<u32>)> {
    let mut columns = [""; 13];
    let mut width = 0;
    for (slot, field) in columns.iter_mut().zip(line.split_ascii_whitespace()) {
        *slot = field;
        width += 1;
    }
    if width < 9 {
        return None;
    }
    let hex = |i: usize| u32::from_str_radix(columns[i], 16).ok();
    let optional = |i: usize| if width > i { hex(i) } else { Some(0) };
    let values = [
        hex(0)?,
        hex(1)?,
        hex(2)?,
        hex(8)?,
        optional(9)?,
        optional(10)?,
        if width >= 13 { hex(11)? } else { 0 },
    ];
    let cpu = if width >= 13 { Some(hex(12)?) } else { None };
    Some((values, cpu))
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
        for (position, line) in self.buf.lines().enumerate() {
            match parse_softnet_line(line) {
                Some((values, cpu)) => {
                    let cpu = cpu.unwrap_or(u32::try_from(position).unwrap_or(u32::MAX));
                    self.rows.push((cpu, values));
                }
                None => ctx.malformed(path, line),
            }
        }
        let Some(max_cpu) = self.rows.iter().map(|(cpu, _)| *cpu).max() else {
            return Ok(());
        };
        self.labels.ensure(max_cpu as usize + 1);
        for (column, (name, help, kind)) in COLUMNS.into_iter().enumerate() {
            let mut family = out.family(name, help, kind)?;
            for (cpu, values) in &self.rows {
                family.sample(
                    &[("cpu", self.labels.get(*cpu as usize))],
                    values[column] as f64,
                )?;
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
                "00000013 00000001 0000000a 00000000 00000000 00000000 00000000 00000000 00000002"
            ),
            Some(([0x13, 1, 10, 2, 0, 0, 0], None))
        );
        // Kernel 5.10+: received_rps, flow_limit_count, backlog_len, CPU id.
        assert_eq!(
            parse_softnet_line(
                "0001e240 00000000 0000002b 00000000 00000000 00000000 00000000 00000000 00000003 0000000c 00000004 00000001 00000005"
            ),
            Some(([0x1e240, 0, 0x2b, 3, 0xc, 4, 1], Some(5)))
        );
        assert_eq!(parse_softnet_line("00000013 00000001 0000000a"), None);
        assert_eq!(parse_softnet_line("zz 00000001 0000000a 0 0 0 0 0 0"), None);
    }

    /// A 5.10+ kernel with CPU 1 offline: the CPU column labels the lines, not their order.
    #[test]
    fn cpu_column_and_newer_families() {
        assert_renders_golden("storage", "softnet", |_| {
            Box::new(SoftnetCollector::default())
        });
    }
}
