//! `buddyinfo`: free blocks per order from /proc/buddyinfo (proc(5)), as node_exporter 1.12.1
//! reports them: `node_buddyinfo_blocks{node,size,zone}`, `size` the order (block of
//! 2^order pages). Samples are written in label order (node, size as text, zone), as
//! client_golang's gathering sorts them.
//!
//! Decision: a line with fewer than four fields, a bad count, or a number of orders other than
//! the first line's is skipped and counted as malformed (procfs fails the whole collection on
//! it). A missing /proc/buddyinfo is an error, as in 1.12.1. Cost: one file kept open, one
//! pread per scrape.

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, IndexLabels, Kind, MetricWriter,
    Registration, no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "buddyinfo",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(BuddyinfoCollector::default()))
}

struct BuddyinfoCollector {
    source: SourceFile,
    buf: String,
    sizes: IndexLabels,
    /// This scrape's counts, all zones' one after the other.
    counts: Vec<f64>,
}

impl Default for BuddyinfoCollector {
    fn default() -> Self {
        BuddyinfoCollector {
            source: SourceFile::proc("buddyinfo"),
            buf: String::new(),
            sizes: IndexLabels::default(),
            counts: Vec::new(),
        }
    }
}

/// One zone's line: node, zone, and its counts appended to `counts`; `None` (nothing appended)
/// when malformed.
fn parse_line<'a>(line: &'a str, counts: &mut Vec<f64>) -> Option<(&'a str, &'a str)> {
    let mut fields = line.split_whitespace();
    let _node_word = fields.next()?;
    let node = fields.next()?;
    let _zone_word = fields.next()?;
    let zone = fields.next()?;
    let start = counts.len();
    for field in fields {
        match field.parse() {
            Ok(count) => counts.push(count),
            Err(_) => {
                counts.truncate(start);
                return None;
            }
        }
    }
    Some((
        node.strip_suffix(',').unwrap_or(node),
        zone.strip_suffix(',').unwrap_or(zone),
    ))
}

impl Collector for BuddyinfoCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        self.counts.clear();
        // (node, zone, first count)
        let mut zones: Vec<(&str, &str, usize)> = Vec::new();
        let mut orders = None;
        for line in self.buf.lines() {
            let start = self.counts.len();
            let Some((node, zone)) = parse_line(line, &mut self.counts) else {
                ctx.malformed(path, line);
                continue;
            };
            let n = self.counts.len() - start;
            if *orders.get_or_insert(n) != n {
                self.counts.truncate(start);
                ctx.malformed(path, line);
                continue;
            }
            zones.push((node, zone, start));
        }
        let orders = orders.unwrap_or(0);
        if zones.is_empty() || orders == 0 {
            return Ok(());
        }
        self.sizes.ensure(orders);
        let sizes = &self.sizes;
        // (zone, order) in client_golang's order: node, size as text, zone.
        let mut samples: Vec<(usize, usize)> = (0..zones.len())
            .flat_map(|z| (0..orders).map(move |o| (z, o)))
            .collect();
        samples.sort_by(|a, b| {
            (zones[a.0].0, sizes.get(a.1), zones[a.0].1).cmp(&(
                zones[b.0].0,
                sizes.get(b.1),
                zones[b.0].1,
            ))
        });
        let mut f = out.family(
            "node_buddyinfo_blocks",
            "Count of free blocks according to size.",
            Kind::Gauge,
        )?;
        for (z, order) in samples {
            let (node, zone, start) = zones[z];
            f.sample(
                &[("node", node), ("size", sizes.get(order)), ("zone", zone)],
                self.counts[start + order],
            )?;
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
        assert_renders_golden("hw-system", "buddyinfo", |_| {
            Box::new(BuddyinfoCollector::default())
        });
    }

    #[test]
    fn lines() {
        let mut counts = Vec::new();
        assert_eq!(
            parse_line("Node 1, zone   Normal   3 2 1 ", &mut counts),
            Some(("1", "Normal"))
        );
        assert_eq!(counts, [3.0, 2.0, 1.0]);
        assert_eq!(parse_line("Node 1, zone", &mut counts), None);
        assert_eq!(parse_line("Node 1, zone Normal 4 x", &mut counts), None);
        assert_eq!(counts.len(), 3);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/buddyinfo"),
            "Node 0, zone      DMA      1      2\nNode 0, zone   Normal   5\nNode 0, zone  Movable  x 1\n",
        )
        .unwrap();
        let text = render(
            "buddyinfo",
            Box::new(BuddyinfoCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_buddyinfo_blocks{node=\"0\",size=\"1\",zone=\"DMA\"} 2\n"));
        assert!(!text.contains("Normal"));
        assert!(!text.contains("Movable"));
        assert!(text.contains("nodewarden_agent_malformed_lines_total 2\n"));
    }
}
