//! `interrupts`: per-CPU interrupt counts from /proc/interrupts, as node_exporter 1.12.1 parses
//! them: `node_interrupts_total{cpu,type,info,devices}`, `cpu` the column's position. A numbered
//! IRQ's `info` is its chip and `devices` the rest of the line (space-joined); a named one (NMI,
//! LOC …) has the whole description as `info` and empty `devices`. Lines with fewer fields than
//! CPUs plus one (ERR, MIS) are skipped; a repeated name keeps its last line, as node_exporter's
//! map does. `--collector.interrupts.name-include`/`-exclude` match (unanchored)
//! `<type>;<info>;<devices>`, both applying when both are given;
//! `--no-collector.interrupts.include-zeros` drops zero counts.
//!
//! The file is kept open (one read per scrape); unreadable fails the collection, as there.
//! Decision: a count that is not a number fails the whole collection there; here that line is
//! counted as a malformed line and skipped.

use clap::Command;

use super::filter::DeviceFilter;
use super::flags::{add_bool_flag, bool_flag, unanchored_regex_flag};
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, IndexLabels, Kind, MetricWriter,
    Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "interrupts",
    default_enabled: false,
    flags,
    build,
};

const NAME_INCLUDE: &str = "collector.interrupts.name-include";
const NAME_EXCLUDE: &str = "collector.interrupts.name-exclude";
const INCLUDE_ZEROS: &str = "collector.interrupts.include-zeros";

fn flags(command: Command) -> Command {
    let command = command
        .arg(clap::Arg::new(NAME_INCLUDE).long(NAME_INCLUDE).help(
            "Regexp of interrupts name to include (mutually exclusive to --collector.interrupts.name-exclude).",
        ))
        .arg(clap::Arg::new(NAME_EXCLUDE).long(NAME_EXCLUDE).help(
            "Regexp of interrupts name to exclude (mutually exclusive to --collector.interrupts.name-include).",
        ));
    add_bool_flag(
        command,
        INCLUDE_ZEROS,
        true,
        "Include interrupts that have a zero value",
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(InterruptsCollector::new(
        DeviceFilter {
            exclude: unanchored_regex_flag(ctx, NAME_EXCLUDE)?,
            include: unanchored_regex_flag(ctx, NAME_INCLUDE)?,
        },
        bool_flag(ctx, INCLUDE_ZEROS),
    )))
}

/// One interrupt line.
#[derive(Debug, Clone, PartialEq)]
pub struct Interrupt {
    pub name: String,
    pub info: String,
    pub devices: String,
    pub values: Vec<f64>,
}

/// Parses /proc/interrupts as node_exporter does, in file order (a repeated name replaces the
/// earlier line in place). A line whose counts are not numbers goes to `malformed`.
pub fn parse_interrupts(text: &str, mut malformed: impl FnMut(&str)) -> Vec<Interrupt> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cpus = header.split_ascii_whitespace().count();
    let mut out: Vec<Interrupt> = Vec::new();
    for line in lines {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
        if parts.len() < cpus + 1 {
            continue;
        }
        let Some(values) = parts[..cpus]
            .iter()
            .map(|v| v.parse::<f64>().ok())
            .collect::<Option<Vec<f64>>>()
        else {
            malformed(line);
            continue;
        };
        let name = name.trim_start_matches(' ');
        let (info, devices) = if name.parse::<i64>().is_ok() {
            (parts[cpus].to_string(), parts[cpus + 1..].join(" "))
        } else {
            (parts[cpus..].join(" "), String::new())
        };
        let interrupt = Interrupt {
            name: name.to_string(),
            info,
            devices,
            values,
        };
        match out.iter_mut().find(|i| i.name == interrupt.name) {
            Some(earlier) => *earlier = interrupt,
            None => out.push(interrupt),
        }
    }
    out
}

struct InterruptsCollector {
    filter: DeviceFilter,
    include_zeros: bool,
    file: SourceFile,
    buf: String,
    cpus: IndexLabels,
    filter_name: String,
}

impl InterruptsCollector {
    fn new(filter: DeviceFilter, include_zeros: bool) -> Self {
        InterruptsCollector {
            filter,
            include_zeros,
            file: SourceFile::proc("interrupts"),
            buf: String::new(),
            cpus: IndexLabels::default(),
            filter_name: String::new(),
        }
    }
}

impl Collector for InterruptsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.file.read_into(ctx.paths, &mut self.buf)?;
        let path = self.file.display_path().to_path_buf();
        let interrupts = parse_interrupts(&self.buf, |line| ctx.malformed(&path, line));
        // (interrupt, cpu) of each sample kept.
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for (n, interrupt) in interrupts.iter().enumerate() {
            self.filter_name.clear();
            self.filter_name.push_str(&interrupt.name);
            self.filter_name.push(';');
            self.filter_name.push_str(&interrupt.info);
            self.filter_name.push(';');
            self.filter_name.push_str(&interrupt.devices);
            if self.filter.ignored(&self.filter_name) {
                continue;
            }
            self.cpus.ensure(interrupt.values.len());
            for (cpu, &value) in interrupt.values.iter().enumerate() {
                if self.include_zeros || value != 0.0 {
                    kept.push((n, cpu));
                }
            }
        }
        if kept.is_empty() {
            return Ok(());
        }
        let mut f = out.family("node_interrupts_total", "Interrupt details.", Kind::Counter)?;
        for (n, cpu) in kept {
            let interrupt = &interrupts[n];
            f.sample(
                &[
                    ("cpu", self.cpus.get(cpu)),
                    ("type", &interrupt.name),
                    ("info", &interrupt.info),
                    ("devices", &interrupt.devices),
                ],
                interrupt.values[cpu],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, build_with, fixture, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-network", "interrupts", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn filters_and_zeros() {
        let paths = Paths::fixture(&fixture("hw-network"));
        let collector = build_with(
            &REGISTRATION,
            &[
                "--collector.interrupts.name-include=nvme|eno1",
                "--collector.interrupts.name-exclude=TxRx-1",
                "--no-collector.interrupts.include-zeros",
            ],
            &paths,
        );
        let text = render("interrupts", collector, paths);
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("node_interrupts_total{"))
            .collect();
        assert_eq!(samples.len(), 7, "{samples:?}");
        assert!(text.contains(
            "node_interrupts_total{cpu=\"0\",type=\"131\",info=\"IR-PCI-MSIX-0000:03:00.0\",devices=\"1-edge eno1-TxRx-0\"} 18771201"
        ));
        assert!(!text.contains("TxRx-1"));
    }

    #[test]
    fn parses_like_node_exporter() {
        let text = "  CPU0 CPU1\n  5: 1 2 GIC-0 27 Level arch_timer\nIPI0:3 4 Rescheduling interrupts\n\
                    ERR: 0\n  5: 7 8 GIC-0 27 Level again\n  6: x 1 chip dev\n";
        let mut bad = 0;
        let parsed = parse_interrupts(text, |_| bad += 1);
        assert_eq!(bad, 1);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].name, "5");
        assert_eq!(parsed[0].values, [7.0, 8.0]);
        assert_eq!(parsed[0].info, "GIC-0");
        assert_eq!(parsed[0].devices, "27 Level again");
        assert_eq!(parsed[1].name, "IPI0");
        assert_eq!(parsed[1].info, "Rescheduling interrupts");
        assert_eq!(parsed[1].devices, "");
    }
}
