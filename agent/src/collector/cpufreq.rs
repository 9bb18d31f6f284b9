//! `cpufreq`: per-CPU frequencies from /sys/devices/system/cpu/cpu*/cpufreq, in hertz (sysfs
//! counts kHz).

use std::path::PathBuf;

use super::gosyntax::parse_u64;
use super::source::read_attr;
use super::source::{CpuPresence, numbered_paths};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Paths,
    Registration, no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "cpufreq",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(CpufreqCollector::default()))
}

/// The sysfs attributes, in the order of [`FAMILIES`].
const ATTRIBUTES: [&str; 6] = [
    "cpuinfo_cur_freq",
    "cpuinfo_min_freq",
    "cpuinfo_max_freq",
    "scaling_cur_freq",
    "scaling_min_freq",
    "scaling_max_freq",
];

const FAMILIES: [(&str, &str); 6] = [
    (
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
];

struct CpuFreqDir {
    label: String,
    dir: PathBuf,
    attributes: [PathBuf; 6],
    /// This scrape's values in kHz; `None` when the attribute is absent or unreadable.
    values: [Option<u64>; 6],
    /// No `cpufreq` directory (no cpufreq driver, as on most VMs).
    absence: super::source::Absence,
}

/// The CPU directories are listed again only when /sys/devices/system/cpu/present changes.
#[derive(Default)]
struct CpufreqCollector {
    present: CpuPresence,
    cpus: Vec<CpuFreqDir>,
    buf: String,
}

impl CpufreqCollector {
    fn rescan(&mut self, paths: &Paths) -> Result<(), CollectorError> {
        let dir = paths.sys("devices/system/cpu");
        let numbered = match numbered_paths(&dir, "cpu") {
            Ok(numbered) => numbered,
            // No CPU directory: nothing to report, as node_exporter's empty glob.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(CollectorError::io(&dir, e)),
        };
        self.cpus = numbered
            .into_iter()
            .map(|(number, cpu)| {
                let dir = cpu.join("cpufreq");
                CpuFreqDir {
                    label: number.to_string(),
                    attributes: ATTRIBUTES.map(|a| dir.join(a)),
                    dir,
                    values: [None; 6],
                    absence: Default::default(),
                }
            })
            .collect();
        Ok(())
    }
}

impl Collector for CpufreqCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        if self.present.changed(ctx.paths) {
            self.rescan(ctx.paths)?;
        }
        for cpu in &mut self.cpus {
            cpu.values = [None; 6];
            if cpu.absence.known(ctx) {
                continue;
            }
            let is_dir = cpu.dir.is_dir();
            cpu.absence.record(ctx, !is_dir);
            if !is_dir {
                continue;
            }
            for (value, path) in cpu.values.iter_mut().zip(&cpu.attributes) {
                match read_attr(path, &mut self.buf) {
                    Ok(Some(())) => match parse_u64(&self.buf) {
                        Some(v) => *value = Some(v),
                        None => ctx.malformed(path, &self.buf),
                    },
                    Ok(None) => {}
                    // cpuinfo_cur_freq is readable by root only; node_exporter skips it too.
                    Err(CollectorError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::PermissionDenied => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for (i, (name, help)) in FAMILIES.iter().enumerate() {
            let mut values = self
                .cpus
                .iter()
                .filter_map(|cpu| Some((&cpu.label, (*cpu.values.get(i)?)?)))
                .peekable();
            if values.peek().is_none() {
                continue;
            }
            let mut family = out.family(name, help, Kind::Gauge)?;
            for (label, khz) in values {
                family.sample(&[("cpu", label)], khz as f64 * 1000.0)?;
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
        assert_renders_golden(
            "basic",
            "cpufreq",
            |_| Box::new(CpufreqCollector::default()),
        );
    }

    #[test]
    fn no_cpufreq_directories_is_success_without_families() {
        let root = fixture("odd");
        let text = render(
            "cpufreq",
            Box::new(CpufreqCollector::default()),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"cpufreq\"} 1"));
        assert!(!text.contains("node_cpu_"));
    }
}
