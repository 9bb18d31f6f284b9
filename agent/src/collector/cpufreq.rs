//! `cpufreq`: per-CPU frequencies from /sys/devices/system/cpu/cpu*/cpufreq, in hertz (sysfs
//! counts kHz), and the scaling governor, as node_exporter 1.12 (with `cpuinfo_avg_freq`, the
//! hardware's average over the last tick on recent kernels). Attributes stay open between scrapes.

use std::path::PathBuf;

use super::gosyntax::parse_u64;
use super::source::{CpuPresence, OpenAttr, numbered_paths};
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
const ATTRIBUTES: [&str; 7] = [
    "cpuinfo_cur_freq",
    "cpuinfo_avg_freq",
    "cpuinfo_min_freq",
    "cpuinfo_max_freq",
    "scaling_cur_freq",
    "scaling_min_freq",
    "scaling_max_freq",
];

/// node_exporter 1.12's families and help texts.
const FAMILIES: [(&str, &str); 7] = [
    (
        "node_cpu_frequency_hertz",
        "Current CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_frequency_avg_hertz",
        "Average CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_frequency_min_hertz",
        "Minimum CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_frequency_max_hertz",
        "Maximum CPU thread frequency in hertz.",
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

/// One CPU's cpufreq attributes, kept open between scrapes (they are read every scrape).
struct CpuFreqDir {
    label: String,
    dir: PathBuf,
    attributes: [(PathBuf, OpenAttr); 7],
    governor: (PathBuf, OpenAttr),
    available_governors: (PathBuf, OpenAttr),
    /// This scrape's values in kHz; `None` when the attribute is absent or unreadable.
    values: [Option<u64>; 7],
    /// This scrape's `scaling_governor` and `scaling_available_governors` (empty: none).
    current_governor: String,
    governors: String,
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
                let attr = |name: &str| (dir.join(name), OpenAttr::default());
                CpuFreqDir {
                    label: number.to_string(),
                    attributes: ATTRIBUTES.map(attr),
                    governor: attr("scaling_governor"),
                    available_governors: attr("scaling_available_governors"),
                    dir: dir.clone(),
                    values: [None; 7],
                    current_governor: String::new(),
                    governors: String::new(),
                    absence: Default::default(),
                }
            })
            .collect();
        Ok(())
    }
}

/// Reads a kept-open attribute into `buf`: `Ok(false)` when absent or unreadable (cpuinfo_cur_freq
/// is root's only; node_exporter skips it too).
fn read((path, attr): &mut (PathBuf, OpenAttr), buf: &mut String) -> Result<bool, CollectorError> {
    attr.read_attr(path, buf)
        .map_err(|e| CollectorError::io(&*path, e))
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
            cpu.values = [None; 7];
            cpu.current_governor.clear();
            cpu.governors.clear();
            if cpu.absence.known(ctx) {
                continue;
            }
            let is_dir = cpu.dir.is_dir();
            cpu.absence.record(ctx, !is_dir);
            if !is_dir {
                continue;
            }
            for (value, attribute) in cpu.values.iter_mut().zip(&mut cpu.attributes) {
                if read(attribute, &mut self.buf)? {
                    match parse_u64(&self.buf) {
                        Some(v) => *value = Some(v),
                        None => ctx.malformed(&attribute.0, &self.buf),
                    }
                }
            }
            if read(&mut cpu.governor, &mut self.buf)? {
                cpu.current_governor.push_str(&self.buf);
            }
            if read(&mut cpu.available_governors, &mut self.buf)? {
                cpu.governors.push_str(&self.buf);
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
        // One sample per available governor, 1 for the one in use (1.12).
        if self.cpus.iter().any(|cpu| !cpu.current_governor.is_empty()) {
            let mut family = out.family(
                "node_cpu_scaling_governor",
                "Current enabled CPU frequency governor.",
                Kind::Gauge,
            )?;
            for cpu in self.cpus.iter().filter(|c| !c.current_governor.is_empty()) {
                for governor in cpu.governors.split(' ') {
                    let value = if governor == cpu.current_governor {
                        1.0
                    } else {
                        0.0
                    };
                    family.sample(&[("cpu", &cpu.label), ("governor", governor)], value)?;
                }
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

    /// amd-pstate on a 6.13+ kernel: cpuinfo_avg_freq, no cpuinfo_cur_freq.
    #[test]
    fn average_frequency_and_governors() {
        assert_renders_golden("storage", "cpufreq", |_| {
            Box::new(CpufreqCollector::default())
        });
    }

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
