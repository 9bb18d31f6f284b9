//! `meminfo_numa`: per-NUMA-node memory from /sys/devices/system/node/node<N>/meminfo and
//! numastat, as node_exporter 1.12.1 reports them: `Node 0 Active(anon): 12 kB` becomes
//! `node_memory_numa_Active_anon{node="0"}` in bytes (a gauge, with no `_bytes` suffix, the
//! node label from the line), `numa_hit 5` in numastat `node_memory_numa_numa_hit_total` (a
//! counter, the node label from the directory name).
//!
//! Decisions: a line node_exporter rejects (or, with fewer than four fields, panics on) is
//! skipped and counted as malformed, where 1.12.1 fails the whole collection; so is a line
//! repeating a name already seen for that node, or one whose name is no metric name
//! (client_golang would drop or refuse it). A node directory without meminfo or numastat is an
//! error, as in 1.12.1; no node directories is an empty success. Families are written in name
//! order and samples in node order (as text), as client_golang's gathering sorts them.
//! Cost: the node directories are listed once per hotplug epoch; two files per node kept open,
//! two preads per node per scrape.

use super::source::{DirListing, SourceFile, entry_digits};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "meminfo_numa",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(MeminfoNumaCollector::default()))
}

struct Node {
    /// `node<N>`.
    dir_name: String,
    /// The digits of the directory name (the numastat samples' label).
    number: String,
    meminfo: SourceFile,
    numastat: SourceFile,
}

/// One sample: the part of the name after `node_memory_numa_`, whether a counter, the node,
/// the value.
#[derive(Default)]
struct Entry {
    name: String,
    counter: bool,
    node: String,
    value: f64,
}

#[derive(Default)]
struct MeminfoNumaCollector {
    listing: DirListing,
    nodes: Vec<Node>,
    buf: String,
    name: String,
    /// This scrape's samples: the first `len` (kept with their allocations across scrapes).
    entries: Vec<Entry>,
    len: usize,
    order: Vec<usize>,
    metric: String,
    help: String,
}

/// One meminfo line: node and value in bytes, the metric name written into `name`.
fn parse_meminfo_line<'a>(line: &'a str, name: &mut String) -> Option<(&'a str, f64)> {
    let mut fields = line.split_whitespace();
    let (_, node, key, value) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let unit = fields.next();
    if fields.next().is_some() {
        return None;
    }
    let mut value: f64 = value.parse().ok()?;
    match unit {
        None => {}
        Some("kB") => value *= 1024.0,
        Some(_) => return None,
    }
    let key = key.trim_end_matches(':');
    name.clear();
    // node_exporter's `\((.*)\)` → `_$1`: from the first '(' to the last ')'.
    match (key.find('('), key.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            name.push_str(&key[..open]);
            name.push('_');
            name.push_str(&key[open + 1..close]);
            name.push_str(&key[close + 1..]);
        }
        _ => name.push_str(key),
    }
    Some((node, value))
}

/// One numastat line: name and value.
fn parse_numastat_line(line: &str) -> Option<(&str, f64)> {
    let mut fields = line.split_whitespace();
    let (name, value) = (fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    Some((name, value.parse().ok()?))
}

/// Whether `node_memory_numa_<name>` is a valid metric name.
fn valid_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

impl MeminfoNumaCollector {
    /// Adds a sample unless its (name, node) was seen already this scrape.
    fn push(&mut self, name: &str, counter: bool, node: &str, value: f64) -> bool {
        if !valid_name(name)
            || self.entries[..self.len]
                .iter()
                .any(|e| e.name == name && e.node == node)
        {
            return false;
        }
        if self.len == self.entries.len() {
            self.entries.push(Entry::default());
        }
        let entry = &mut self.entries[self.len];
        entry.name.clear();
        entry.name.push_str(name);
        if counter {
            entry.name.push_str("_total");
        }
        entry.counter = counter;
        entry.node.clear();
        entry.node.push_str(node);
        entry.value = value;
        self.len += 1;
        true
    }

    fn refresh_nodes(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        let root = ctx.paths.sys("devices/system/node");
        let names = self
            .listing
            .names(ctx, &root, |_| true)
            .map_err(|e| CollectorError::io(&root, e))?
            .unwrap_or_default();
        let wanted = names.iter().filter(|n| entry_digits(n, "node").is_some());
        if self.nodes.iter().map(|n| &n.dir_name).eq(wanted.clone()) {
            return Ok(());
        }
        self.nodes = wanted
            .map(|name| {
                let dir = root.join(name);
                // `.*devices/system/node/node([0-9]*)`: the directory's number.
                let number = entry_digits(name, "node").unwrap_or("").to_string();
                Node {
                    dir_name: name.clone(),
                    number,
                    meminfo: SourceFile::at(dir.join("meminfo")),
                    numastat: SourceFile::at(dir.join("numastat")),
                }
            })
            .collect();
        Ok(())
    }
}

impl Collector for MeminfoNumaCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.refresh_nodes(ctx)?;
        self.len = 0;
        let mut buf = std::mem::take(&mut self.buf);
        let mut name = std::mem::take(&mut self.name);
        let mut nodes = std::mem::take(&mut self.nodes);
        let result = (|| {
            for node in &mut nodes {
                node.meminfo.read_into(ctx.paths, &mut buf)?;
                for line in buf.lines() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let added = match parse_meminfo_line(line, &mut name) {
                        Some((label, value)) => self.push(&name, false, label, value),
                        None => false,
                    };
                    if !added {
                        ctx.malformed(node.meminfo.display_path(), line);
                    }
                }
                node.numastat.read_into(ctx.paths, &mut buf)?;
                for line in buf.lines() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let added = match parse_numastat_line(line) {
                        Some((stat, value)) => self.push(stat, true, &node.number, value),
                        None => false,
                    };
                    if !added {
                        ctx.malformed(node.numastat.display_path(), line);
                    }
                }
            }
            Ok::<(), CollectorError>(())
        })();
        self.buf = buf;
        self.name = name;
        self.nodes = nodes;
        result?;
        let entries = &self.entries[..self.len];
        self.order.clear();
        self.order.extend(0..self.len);
        self.order.sort_by(|&a, &b| {
            (&entries[a].name, &entries[a].node).cmp(&(&entries[b].name, &entries[b].node))
        });
        let mut i = 0;
        while i < self.order.len() {
            let first = &entries[self.order[i]];
            self.metric.clear();
            self.metric.push_str("node_memory_numa_");
            self.metric.push_str(&first.name);
            self.help.clear();
            self.help.push_str("Memory information field ");
            self.help.push_str(&first.name);
            self.help.push('.');
            let kind = if first.counter {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let mut f = out.family(&self.metric, &self.help, kind)?;
            while i < self.order.len() && entries[self.order[i]].name == first.name {
                let e = &entries[self.order[i]];
                f.sample(&[("node", &e.node)], e.value)?;
                i += 1;
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
        assert_renders_golden("hw-system", "meminfo_numa", |_| {
            Box::new(MeminfoNumaCollector::default())
        });
    }

    #[test]
    fn lines() {
        let mut name = String::new();
        assert_eq!(
            parse_meminfo_line("Node 1 Active(anon):    1651504 kB", &mut name),
            Some(("1", 1651504.0 * 1024.0))
        );
        assert_eq!(name, "Active_anon");
        assert_eq!(
            parse_meminfo_line("Node 0 HugePages_Total:     4", &mut name),
            Some(("0", 4.0))
        );
        assert_eq!(name, "HugePages_Total");
        assert_eq!(parse_meminfo_line("Node 0 MemFree:", &mut name), None);
        assert_eq!(parse_meminfo_line("Node 0 MemFree: 1 MB", &mut name), None);
        assert_eq!(parse_meminfo_line("Node 0 MemFree: x kB", &mut name), None);
        assert_eq!(parse_numastat_line("numa_hit 12"), Some(("numa_hit", 12.0)));
        assert_eq!(parse_numastat_line("numa_hit 12 3"), None);
    }

    #[test]
    fn malformed_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render(
            "meminfo_numa",
            Box::new(MeminfoNumaCollector::default()),
            paths.clone(),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"meminfo_numa\"} 1"));
        let node = dir.path().join("sys/devices/system/node/node0");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(
            node.join("meminfo"),
            "Node 0 MemFree: 4 kB\nNode 0 MemFree: 5 kB\nNode 0 Bad!: 1\nNode 0\n",
        )
        .unwrap();
        let text = render(
            "meminfo_numa",
            Box::new(MeminfoNumaCollector::default()),
            paths.clone(),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"meminfo_numa\"} 0"));
        std::fs::write(node.join("numastat"), "numa_hit 3\nlocal_node\n").unwrap();
        let text = render(
            "meminfo_numa",
            Box::new(MeminfoNumaCollector::default()),
            paths,
        );
        assert!(text.contains("node_memory_numa_MemFree{node=\"0\"} 4096\n"));
        assert!(text.contains("node_memory_numa_numa_hit_total{node=\"0\"} 3\n"));
        assert!(text.contains("nodewarden_agent_malformed_lines_total 4\n"));
    }
}
