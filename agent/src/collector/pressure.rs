//! `pressure`: pressure stall information (PSI) from /proc/pressure/{cpu,io,memory,irq} as
//! node_pressure_*_seconds_total (the kernel counts microseconds). `irq` (Linux 6.1+ with IRQ
//! time accounting) has only a `full` line; where it is missing it is not probed again until the
//! hotplug epoch moves.

use super::source::{Absence, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "pressure",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(PressureCollector::default()))
}

struct PressureCollector {
    cpu: SourceFile,
    io: SourceFile,
    memory: SourceFile,
    irq: SourceFile,
    irq_absence: Absence,
    buf: String,
}

impl Default for PressureCollector {
    fn default() -> Self {
        PressureCollector {
            cpu: SourceFile::proc("pressure/cpu"),
            io: SourceFile::proc("pressure/io"),
            memory: SourceFile::proc("pressure/memory"),
            irq: SourceFile::proc("pressure/irq"),
            irq_absence: Absence::default(),
            buf: String::new(),
        }
    }
}

/// The `total=` counters (microseconds) of a PSI file's `some` and `full` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Psi {
    pub some: Option<u64>,
    pub full: Option<u64>,
}

/// Parses a PSI file; lines it cannot read are passed to `malformed`.
pub fn parse_psi(text: &str, mut malformed: impl FnMut(&str)) -> Psi {
    let mut psi = Psi::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            None => continue,
            Some(_) => {
                malformed(line);
                continue;
            }
        };
        match fields
            .find_map(|f| f.strip_prefix("total="))
            .and_then(|t| t.parse().ok())
        {
            Some(total) => *slot = Some(total),
            None => malformed(line),
        }
    }
    psi
}

fn micros_to_seconds(v: u64) -> f64 {
    v as f64 / 1000.0 / 1000.0
}

fn read_psi(
    ctx: &Context<'_>,
    source: &mut SourceFile,
    buf: &mut String,
) -> Result<Psi, CollectorError> {
    match source.read_into(ctx.paths, buf) {
        Ok(()) => {}
        Err(CollectorError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound
                || source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            // No CONFIG_PSI, a kernel before 4.20, or PSI disabled without psi=1.
            return Err(CollectorError::NoData);
        }
        Err(e) => return Err(e),
    }
    Ok(parse_psi(buf, |line| {
        ctx.malformed(source.display_path(), line)
    }))
}

impl Collector for PressureCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let cpu = read_psi(ctx, &mut self.cpu, &mut self.buf)?;
        let io = read_psi(ctx, &mut self.io, &mut self.buf)?;
        let memory = read_psi(ctx, &mut self.memory, &mut self.buf)?;
        let (irq_source, buf) = (&mut self.irq, &mut self.buf);
        let irq = if self
            .irq_absence
            .read(ctx, || irq_source.read_into(ctx.paths, buf))?
        {
            parse_psi(buf, |line| ctx.malformed(irq_source.display_path(), line))
        } else {
            Psi::default()
        };
        let families = [
            (
                cpu.some,
                "node_pressure_cpu_waiting_seconds_total",
                "Total time in seconds that processes have waited for CPU time",
            ),
            (
                io.some,
                "node_pressure_io_waiting_seconds_total",
                "Total time in seconds that processes have waited due to IO congestion",
            ),
            (
                io.full,
                "node_pressure_io_stalled_seconds_total",
                "Total time in seconds no process could make progress due to IO congestion",
            ),
            (
                memory.some,
                "node_pressure_memory_waiting_seconds_total",
                "Total time in seconds that processes have waited for memory",
            ),
            (
                memory.full,
                "node_pressure_memory_stalled_seconds_total",
                "Total time in seconds no process could make progress due to memory congestion",
            ),
            (
                irq.full,
                "node_pressure_irq_stalled_seconds_total",
                "Total time in seconds no process could make progress due to IRQ congestion",
            ),
        ];
        for (value, name, help) in families {
            if let Some(micros) = value {
                out.single(name, help, Kind::Counter, &[], micros_to_seconds(micros))?;
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
        assert_renders_golden("basic", "pressure", |_| {
            Box::new(PressureCollector::default())
        });
    }

    /// Linux 6.1+: /proc/pressure/irq, with only a `full` line.
    #[test]
    fn irq_pressure() {
        assert_renders_golden("storage", "pressure", |_| {
            Box::new(PressureCollector::default())
        });
    }

    #[test]
    fn missing_psi_is_no_data() {
        let root = fixture("odd");
        let text = render(
            "pressure",
            Box::new(PressureCollector::default()),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"pressure\"} 0"));
        assert!(!text.contains("node_pressure_"));
    }

    #[test]
    fn lines() {
        let mut bad = Vec::new();
        let psi = parse_psi(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=15713395\nfull avg10=1 total=x\nodd\n",
            |l| bad.push(l.to_string()),
        );
        assert_eq!(
            psi,
            Psi {
                some: Some(15713395),
                full: None
            }
        );
        assert_eq!(bad, ["full avg10=1 total=x", "odd"]);
    }
}
