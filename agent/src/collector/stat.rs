//! `stat`: the system-wide counters of /proc/stat (boot time, context switches, forks,
//! interrupts, runnable/blocked processes and, with `--collector.stat.softirq`, softirqs per
//! vector). Per-CPU times are the `cpu` collector's.

use super::flags::{add_bool_flag, bool_flag};
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "stat",
    default_enabled: true,
    flags,
    build,
};

const SOFTIRQ_FLAG: &str = "collector.stat.softirq";

fn flags(command: clap::Command) -> clap::Command {
    add_bool_flag(
        command,
        SOFTIRQ_FLAG,
        false,
        "Export softirq calls per vector",
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(StatCollector {
        softirq: bool_flag(ctx, SOFTIRQ_FLAG),
        source: SourceFile::proc("stat"),
        buf: String::new(),
    }))
}

struct StatCollector {
    softirq: bool,
    source: SourceFile,
    buf: String,
}

/// The softirq vectors in the order the kernel prints them.
const SOFTIRQ_VECTORS: [&str; 10] = [
    "hi",
    "timer",
    "net_tx",
    "net_rx",
    "block",
    "block_iopoll",
    "tasklet",
    "sched",
    "hrtimer",
    "rcu",
];

/// The /proc/stat values this collector exports; absent lines read as 0, as in node_exporter.
#[derive(Debug, Default, PartialEq)]
pub struct Stat {
    pub boot_time: u64,
    pub interrupts: u64,
    pub context_switches: u64,
    pub forks: u64,
    pub procs_running: u64,
    pub procs_blocked: u64,
    pub softirq: [u64; 10],
}

/// Parses /proc/stat, handing lines it cannot read to `malformed`.
pub fn parse_stat(text: &str, mut malformed: impl FnMut(&str)) -> Stat {
    let mut stat = Stat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(first)) = (fields.next(), fields.next()) else {
            continue;
        };
        let slot = match key {
            "btime" => &mut stat.boot_time,
            "intr" => &mut stat.interrupts,
            "ctxt" => &mut stat.context_switches,
            "processes" => &mut stat.forks,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            "softirq" => {
                // The first number is the total; the vectors follow.
                let mut vectors = [0u64; 10];
                let mut ok = first.parse::<u64>().is_ok();
                for v in &mut vectors {
                    match fields.next().map(str::parse) {
                        Some(Ok(n)) => *v = n,
                        _ => ok = false,
                    }
                }
                if ok {
                    stat.softirq = vectors;
                } else {
                    malformed(line);
                }
                continue;
            }
            _ => continue,
        };
        match first.parse() {
            Ok(v) => *slot = v,
            Err(_) => malformed(line),
        }
    }
    stat
}

impl Collector for StatCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        let stat = parse_stat(&self.buf, |line| ctx.malformed(path, line));
        out.counter(
            "node_intr_total",
            "Total number of interrupts serviced.",
            stat.interrupts as f64,
        )?;
        out.counter(
            "node_context_switches_total",
            "Total number of context switches.",
            stat.context_switches as f64,
        )?;
        out.counter(
            "node_forks_total",
            "Total number of forks.",
            stat.forks as f64,
        )?;
        out.gauge(
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            stat.boot_time as f64,
        )?;
        out.gauge(
            "node_procs_running",
            "Number of processes in runnable state.",
            stat.procs_running as f64,
        )?;
        out.gauge(
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            stat.procs_blocked as f64,
        )?;
        if self.softirq {
            let mut family = out.family(
                "node_softirqs_total",
                "Number of softirq calls.",
                Kind::Counter,
            )?;
            for (vector, value) in SOFTIRQ_VECTORS.iter().zip(stat.softirq) {
                family.sample(&[("vector", vector)], value as f64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{
        assert_golden, assert_renders_golden, build_with, fixture, render,
    };

    #[test]
    fn golden() {
        assert_renders_golden("basic", "stat", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn golden_with_softirq() {
        let root = fixture("basic");
        let paths = Paths::fixture(&root);
        let collector = build_with(&REGISTRATION, &["--collector.stat.softirq"], &paths);
        let text = render("stat", collector, paths);
        assert_golden(&root.join("golden/stat-softirq.prom"), &text);
    }

    #[test]
    fn old_kernel_and_malformed_lines() {
        let mut bad = Vec::new();
        let stat = parse_stat(
            "cpu  1 2 3 4\nintr 12 1 2\nctxt x\nbtime 1700000000\nprocesses 7\nsoftirq 3 1 2\n",
            |l| bad.push(l.to_string()),
        );
        assert_eq!(bad, ["ctxt x", "softirq 3 1 2"]);
        assert_eq!(
            stat,
            Stat {
                boot_time: 1_700_000_000,
                interrupts: 12,
                forks: 7,
                ..Stat::default()
            }
        );
    }
}
