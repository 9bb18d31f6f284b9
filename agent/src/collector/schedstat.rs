//! `schedstat`: per-CPU scheduler statistics from /proc/schedstat.

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "schedstat",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(SchedstatCollector::default()))
}

struct SchedstatCollector {
    source: SourceFile,
    buf: String,
    /// This scrape's rows: (byte range of the CPU number in `buf`, running ns, waiting ns,
    /// timeslices).
    rows: Vec<(std::ops::Range<usize>, [u64; 3])>,
    /// /proc/schedstat exists only in kernels built with CONFIG_SCHEDSTATS.
    absence: super::source::Absence,
}

impl Default for SchedstatCollector {
    fn default() -> Self {
        SchedstatCollector {
            source: SourceFile::proc("schedstat"),
            buf: String::new(),
            rows: Vec::new(),
            absence: Default::default(),
        }
    }
}

/// A `cpuN` line: the CPU number and the last three of its nine counters (running and waiting
/// nanoseconds, timeslices). Other lines (version, timestamp, domain*) give `None`.
pub fn parse_schedstat_line(line: &str) -> Option<Result<(&str, [u64; 3]), ()>> {
    let mut fields = line.split_ascii_whitespace();
    let cpu = fields.next()?.strip_prefix("cpu")?;
    if cpu.is_empty() || !cpu.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    let mut counters = [0u64; 9];
    for slot in &mut counters {
        match fields.next().map(str::parse) {
            Some(Ok(v)) => *slot = v,
            _ => return Some(Err(())),
        }
    }
    Some(Ok((cpu, [counters[6], counters[7], counters[8]])))
}

impl Collector for SchedstatCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let (source, buf) = (&mut self.source, &mut self.buf);
        if !self
            .absence
            .read(ctx, || source.read_into(ctx.paths, buf))?
        {
            return Err(CollectorError::NoData);
        }
        self.rows.clear();
        let path = self.source.display_path();
        let base = self.buf.as_ptr() as usize;
        for line in self.buf.lines() {
            match parse_schedstat_line(line) {
                None => {}
                Some(Err(())) => ctx.malformed(path, line),
                Some(Ok((cpu, values))) => {
                    let start = cpu.as_ptr() as usize - base;
                    self.rows.push((start..start + cpu.len(), values));
                }
            }
        }
        if self.rows.is_empty() {
            return Ok(());
        }
        let families = [
            (
                "node_schedstat_running_seconds_total",
                "Number of seconds CPU spent running a process.",
                1e9,
            ),
            (
                "node_schedstat_waiting_seconds_total",
                "Number of seconds spent by processing waiting for this CPU.",
                1e9,
            ),
            (
                "node_schedstat_timeslices_total",
                "Number of timeslices executed by CPU.",
                1.0,
            ),
        ];
        for (i, (name, help, divisor)) in families.into_iter().enumerate() {
            let mut family = out.family(name, help, Kind::Counter)?;
            for (cpu, values) in &self.rows {
                let cpu = self.buf.get(cpu.clone()).unwrap_or("");
                family.sample(&[("cpu", cpu)], values[i] as f64 / divisor)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, fixture, render};

    #[test]
    fn golden() {
        assert_renders_golden("basic", "schedstat", |_| {
            Box::new(SchedstatCollector::default())
        });
    }

    #[test]
    fn missing_file_is_no_data() {
        let root = fixture("odd");
        let text = render(
            "schedstat",
            Box::new(SchedstatCollector::default()),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"schedstat\"} 0"));
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_schedstat_line("cpu3 0 0 0 0 0 0 2045936778163039 343796328169361 4767485306"),
            Some(Ok(("3", [2045936778163039, 343796328169361, 4767485306])))
        );
        assert_eq!(parse_schedstat_line("version 15"), None);
        assert_eq!(parse_schedstat_line("domain0 00000000,00000003 1 2"), None);
        assert_eq!(parse_schedstat_line("cpu1 1 2 3"), Some(Err(())));
        assert_eq!(
            parse_schedstat_line("cpux 1 2 3 4 5 6 7 8 9"),
            Some(Err(()))
        );
    }
}
