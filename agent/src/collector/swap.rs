//! `swap`: swap devices from /proc/swaps (proc(5)), as node_exporter 1.12.1 reports them: size
//! and used (KiB in the file) in bytes, and the priority, labelled by the device path as the
//! kernel prints it (`\040` for a space) and its type. The header line is skipped.
//!
//! Decisions: a line with fewer than five fields or a non-integer size/used/priority is skipped
//! and counted as malformed (procfs fails the whole collection on it); a missing /proc/swaps
//! (CONFIG_SWAP=n) is an error, as in 1.12.1. Samples are written in label order, as
//! client_golang's gathering sorts them. Cost: one file kept open, one pread per scrape.

use super::gosyntax::parse_go_decimal;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "swap",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(SwapCollector::default()))
}

struct SwapCollector {
    source: SourceFile,
    buf: String,
}

impl Default for SwapCollector {
    fn default() -> Self {
        SwapCollector {
            source: SourceFile::proc("swaps"),
            buf: String::new(),
        }
    }
}

/// One /proc/swaps line: device, type, size, used, priority (KiB, KiB, as is).
#[derive(Debug, PartialEq)]
struct Swap<'a> {
    device: &'a str,
    kind: &'a str,
    size: i64,
    used: i64,
    priority: i64,
}

/// How a family's value is taken from a line.
type ValueOf = fn(&Swap<'_>) -> f64;

/// procfs's `parseSwapString`; `None` for a malformed line.
fn parse_line(line: &str) -> Option<Swap<'_>> {
    let mut fields = line.split_whitespace();
    let device = fields.next()?;
    let kind = fields.next()?;
    let size = parse_go_decimal(fields.next()?)?;
    let used = parse_go_decimal(fields.next()?)?;
    let priority = parse_go_decimal(fields.next()?)?;
    Some(Swap {
        device,
        kind,
        size,
        used,
        priority,
    })
}

impl Collector for SwapCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        let mut swaps: Vec<Swap<'_>> = Vec::new();
        for line in self.buf.lines().skip(1) {
            match parse_line(line) {
                Some(swap) => swaps.push(swap),
                None => ctx.malformed(path, line),
            }
        }
        if swaps.is_empty() {
            return Ok(());
        }
        swaps.sort_by(|a, b| (a.device, a.kind).cmp(&(b.device, b.kind)));
        let families: [(&str, &str, ValueOf); 3] = [
            ("node_swap_priority", "Swap device priority.", |s| {
                s.priority as f64
            }),
            ("node_swap_size_bytes", "Swap device size in bytes.", |s| {
                s.size.wrapping_mul(1024) as f64
            }),
            ("node_swap_used_bytes", "Swap device used in bytes.", |s| {
                s.used.wrapping_mul(1024) as f64
            }),
        ];
        for (name, help, value) in families {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for swap in &swaps {
                f.sample(
                    &[("device", swap.device), ("swap_type", swap.kind)],
                    value(swap),
                )?;
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
        assert_renders_golden("hw-system", "swap", |_| Box::new(SwapCollector::default()));
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_line("/dev/dm-1  partition\t8388604\t1048576\t-2"),
            Some(Swap {
                device: "/dev/dm-1",
                kind: "partition",
                size: 8388604,
                used: 1048576,
                priority: -2
            })
        );
        assert_eq!(parse_line("/swapfile file 100 0"), None);
        assert_eq!(parse_line("/swapfile file 100 x 1"), None);
        assert_eq!(parse_line("/swapfile file 1_0 0 1"), None);
        assert_eq!(parse_go_decimal("+5"), Some(5));
        assert_eq!(parse_go_decimal("-"), None);
    }

    #[test]
    fn malformed_lines_are_skipped_and_no_swap_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/swaps"),
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        )
        .unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render("swap", Box::new(SwapCollector::default()), paths.clone());
        assert!(text.contains("node_scrape_collector_success{collector=\"swap\"} 1"));
        assert!(!text.contains("node_swap_"));
        std::fs::write(
            dir.path().join("proc/swaps"),
            "Filename\tType\tSize\tUsed\tPriority\n/swapfile file lots 0 -2\n/dev/zram0 partition 4194300 0 100\n",
        )
        .unwrap();
        let text = render("swap", Box::new(SwapCollector::default()), paths);
        assert!(
            text.contains(
                "node_swap_priority{device=\"/dev/zram0\",swap_type=\"partition\"} 100\n"
            )
        );
        assert!(!text.contains("/swapfile"));
        assert!(text.contains("nodewarden_agent_malformed_lines_total 1\n"));
    }
}
