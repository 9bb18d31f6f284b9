//! `softirqs`: per-CPU softirq counts from /proc/softirqs, as node_exporter 1.12.1 reads them
//! through procfs 0.21.1: `node_softirqs_functions_total{cpu,type}` for the ten softirq types
//! procfs knows, in its order, `cpu` being the column's position (0, 1, …) whatever the header
//! names. A type missing from the file has no series; unknown lines are ignored.
//!
//! The file is kept open (one read per scrape); an empty or unreadable file fails the
//! collection, as there. Decision: a count procfs would reject (not a number) fails the whole
//! collection there; here that type's line is counted as a malformed line and skipped.

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, IndexLabels, Kind, MetricWriter,
    Registration, no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "softirqs",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(SoftirqsCollector::default()))
}

/// The types procfs parses: the line's key and the `type` label, in node_exporter's order.
const TYPES: [(&str, &str); 10] = [
    ("HI:", "HI"),
    ("TIMER:", "TIMER"),
    ("NET_TX:", "NET_TX"),
    ("NET_RX:", "NET_RX"),
    ("BLOCK:", "BLOCK"),
    ("IRQ_POLL:", "IRQ_POLL"),
    ("TASKLET:", "TASKLET"),
    ("SCHED:", "SCHED"),
    ("HRTIMER:", "HRTIMER"),
    ("RCU:", "RCU"),
];

/// Parses /proc/softirqs into `counts` (indexed like [`TYPES`], `None` for a type not in the
/// file); `false` when the file is empty. A line procfs would reject goes to `malformed`.
pub fn parse_softirqs(
    text: &str,
    counts: &mut [Option<Vec<u64>>; 10],
    mut malformed: impl FnMut(&str),
) -> bool {
    for slot in counts.iter_mut() {
        *slot = None;
    }
    let mut lines = text.lines();
    if lines.next().is_none() {
        return false;
    }
    for line in lines {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let Some(i) = TYPES.iter().position(|(k, _)| *k == key) else {
            continue;
        };
        let mut values = Vec::new();
        if fields
            .try_for_each(|f| {
                values.push(f.parse().ok()?);
                Some(())
            })
            .is_none()
        {
            malformed(line);
            continue;
        }
        // procfs needs a key and at least one value.
        if !values.is_empty() {
            counts[i] = Some(values);
        }
    }
    true
}

struct SoftirqsCollector {
    file: SourceFile,
    buf: String,
    counts: [Option<Vec<u64>>; 10],
    cpus: IndexLabels,
}

impl Default for SoftirqsCollector {
    fn default() -> Self {
        SoftirqsCollector {
            file: SourceFile::proc("softirqs"),
            buf: String::new(),
            counts: Default::default(),
            cpus: IndexLabels::default(),
        }
    }
}

impl Collector for SoftirqsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.file.read_into(ctx.paths, &mut self.buf)?;
        let path = self.file.display_path().to_path_buf();
        if !parse_softirqs(&self.buf, &mut self.counts, |line| {
            ctx.malformed(&path, line)
        }) {
            return Err(CollectorError::Parse {
                path,
                reason: "softirqs empty".into(),
            });
        }
        let widest = self.counts.iter().flatten().map(Vec::len).max();
        let Some(widest) = widest else {
            return Ok(());
        };
        self.cpus.ensure(widest);
        let mut f = out.family(
            "node_softirqs_functions_total",
            "Softirq counts per CPU.",
            Kind::Counter,
        )?;
        for ((_, kind), values) in TYPES.iter().zip(&self.counts) {
            for (cpu, &value) in values.iter().flatten().enumerate() {
                f.sample(&[("cpu", self.cpus.get(cpu)), ("type", kind)], value as f64)?;
            }
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
        assert_renders_golden("hw-network", "softirqs", |_| {
            Box::new(SoftirqsCollector::default())
        });
    }

    #[test]
    fn malformed_missing_and_empty() {
        let mut counts = Default::default();
        let mut bad = Vec::new();
        assert!(parse_softirqs(
            "  CPU0 CPU1\n HI: 1 2\n TIMER: 3 x\n NEW_ONE: 5 6\n RCU:\n",
            &mut counts,
            |l| bad.push(l.trim().to_string()),
        ));
        assert_eq!(bad, ["TIMER: 3 x"]);
        assert_eq!(counts[0], Some(vec![1, 2]));
        assert_eq!(counts[1], None);
        assert_eq!(counts[9], None);
        assert!(!parse_softirqs("", &mut counts, |_| {}));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/softirqs"), "").unwrap();
        let text = render(
            "softirqs",
            Box::new(SoftirqsCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"softirqs\"} 0"));
    }
}
