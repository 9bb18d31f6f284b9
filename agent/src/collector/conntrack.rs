//! `conntrack`: netfilter connection tracking table size, limit and statistics.

use super::gosyntax::parse_u64;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "conntrack",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(ConntrackCollector::default()))
}

struct ConntrackCollector {
    count: SourceFile,
    max: SourceFile,
    stat: SourceFile,
    buf: String,
}

impl Default for ConntrackCollector {
    fn default() -> Self {
        ConntrackCollector {
            count: SourceFile::proc("sys/net/netfilter/nf_conntrack_count"),
            max: SourceFile::proc("sys/net/netfilter/nf_conntrack_max"),
            stat: SourceFile::proc("net/stat/nf_conntrack"),
            buf: String::new(),
        }
    }
}

/// The statistics exported, as (column in /proc/net/stat/nf_conntrack, name, help).
const STATS: [(usize, &str, &str); 8] = [
    (
        2,
        "node_nf_conntrack_stat_found",
        "Number of searched entries which were successful.",
    ),
    (
        4,
        "node_nf_conntrack_stat_invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        5,
        "node_nf_conntrack_stat_ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    (
        8,
        "node_nf_conntrack_stat_insert",
        "Number of entries inserted into the list.",
    ),
    (
        9,
        "node_nf_conntrack_stat_insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        10,
        "node_nf_conntrack_stat_drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        11,
        "node_nf_conntrack_stat_early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        16,
        "node_nf_conntrack_stat_search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

/// Sums the per-CPU rows (17 hex columns each, after a header) of /proc/net/stat/nf_conntrack
/// into the [`STATS`] columns.
pub fn sum_conntrack_stats(text: &str, mut malformed: impl FnMut(&str)) -> [u64; 8] {
    let mut sums = [0u64; 8];
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut columns = [0u64; 17];
        let mut count = 0;
        let mut ok = true;
        for field in line.split_ascii_whitespace() {
            match (columns.get_mut(count), u64::from_str_radix(field, 16)) {
                (Some(slot), Ok(v)) => *slot = v,
                _ => ok = false,
            }
            count += 1;
        }
        if !ok || count != 17 {
            malformed(line);
            continue;
        }
        for (sum, (column, _, _)) in sums.iter_mut().zip(STATS) {
            *sum = sum.wrapping_add(columns[column]);
        }
    }
    sums
}

fn not_found(e: &CollectorError) -> bool {
    matches!(e, CollectorError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn read_u64(
    ctx: &Context<'_>,
    source: &mut SourceFile,
    buf: &mut String,
) -> Result<f64, CollectorError> {
    match source.read_into(ctx.paths, buf) {
        // The nf_conntrack module is not loaded.
        Err(e) if not_found(&e) => Err(CollectorError::NoData),
        Err(e) => Err(e),
        Ok(()) => parse_u64(buf)
            .map(|v| v as f64)
            .ok_or_else(|| CollectorError::Parse {
                path: source.display_path().to_path_buf(),
                reason: format!("not an unsigned integer: {:?}", buf.trim()),
            }),
    }
}

impl Collector for ConntrackCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let count = read_u64(ctx, &mut self.count, &mut self.buf)?;
        out.gauge(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            count,
        )?;
        let max = read_u64(ctx, &mut self.max, &mut self.buf)?;
        out.gauge(
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
            max,
        )?;
        match self.stat.read_into(ctx.paths, &mut self.buf) {
            Err(e) if not_found(&e) => return Err(CollectorError::NoData),
            r => r?,
        }
        let path = self.stat.display_path();
        let sums = sum_conntrack_stats(&self.buf, |line| ctx.malformed(path, line));
        for ((_, name, help), value) in STATS.iter().zip(sums) {
            out.gauge(name, help, value as f64)?;
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
        assert_renders_golden("basic", "conntrack", |_| {
            Box::new(ConntrackCollector::default())
        });
    }

    #[test]
    fn module_not_loaded_is_no_data() {
        let root = fixture("odd");
        let text = render(
            "conntrack",
            Box::new(ConntrackCollector::default()),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"conntrack\"} 0"));
        assert!(!text.contains("node_nf_conntrack"));
    }

    #[test]
    fn rows_are_summed_and_short_rows_skipped() {
        let header = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n";
        let row = "00000001  00000000 00000010 00000000 00000002 00000003 00000000 00000000 00000004 00000005 00000006 00000007 00000000  00000000 00000000 00000000 0000000a\n";
        let text = format!("{header}{row}{row}00000001 00000002\n");
        let mut bad = 0;
        let sums = sum_conntrack_stats(&text, |_| bad += 1);
        assert_eq!(bad, 1);
        assert_eq!(sums, [32, 4, 6, 8, 10, 12, 14, 20]);
    }
}
