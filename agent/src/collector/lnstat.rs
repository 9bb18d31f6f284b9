//! `lnstat`: the per-CPU network cache statistics of /proc/net/stat/* (arp_cache, ndisc_cache,
//! rt_cache, nf_conntrack …), as node_exporter 1.12.1 reads them through procfs 0.21.1: each
//! column header `h` becomes the counter `node_lnstat_<h>_total{subsystem=<file>,cpu=<row>}`,
//! the values read as hex. A header several files have (`entries`) is one family across them.
//!
//! No /proc/net/stat is an empty, successful collection, as there (procfs's glob matches
//! nothing). The directory is listed once per hotplug epoch and its files are kept open (one
//! read per file per scrape). Decision: a row procfs would reject (a non-hex value; more values
//! than headers, where procfs panics) fails the collection there; here the row is counted as a
//! malformed line and skipped.

use super::bonding::OpenFiles;
use super::source::DirListing;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, IndexLabels, Kind, MetricWriter,
    Registration, no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "lnstat",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(LnstatCollector::default()))
}

/// One column of one file: its header and its values, one per row (CPU).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub header: String,
    pub values: Vec<u64>,
}

/// Parses one /proc/net/stat file as procfs does: headers from the first line, then each row's
/// hex values appended to their column. A row procfs would reject is passed to `malformed`.
pub fn parse_stat_file(text: &str, mut malformed: impl FnMut(&str)) -> Vec<Column> {
    let mut lines = text.lines();
    let mut columns: Vec<Column> = lines
        .next()
        .unwrap_or("")
        .split_ascii_whitespace()
        .map(|h| Column {
            header: h.to_string(),
            values: Vec::new(),
        })
        .collect();
    let mut row = Vec::new();
    for line in lines {
        row.clear();
        let valid = line.split_ascii_whitespace().try_for_each(|v| {
            row.push(u64::from_str_radix(v, 16).ok()?);
            Some(())
        });
        if valid.is_none() || row.len() > columns.len() {
            malformed(line);
            continue;
        }
        for (column, &value) in columns.iter_mut().zip(&row) {
            column.values.push(value);
        }
    }
    columns
}

#[derive(Default)]
struct LnstatCollector {
    listing: DirListing,
    files: OpenFiles,
    buf: String,
    cpus: IndexLabels,
}

impl Collector for LnstatCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let dir = ctx.paths.proc("net/stat");
        let names = self
            .listing
            .names(ctx, &dir, |_| true)
            .map_err(|e| CollectorError::io(&dir, e))?
            .unwrap_or_default();
        // (file, its columns), in the glob's order.
        let mut parsed: Vec<(&str, Vec<Column>)> = Vec::with_capacity(names.len());
        let result = (|| {
            for name in names.iter() {
                let path = dir.join(name);
                self.files.read(ctx.paths, path.clone(), &mut self.buf)?;
                let columns = parse_stat_file(&self.buf, |line| ctx.malformed(&path, line));
                parsed.push((name.as_str(), columns));
            }
            Ok::<(), CollectorError>(())
        })();
        self.files.finish_scrape();
        result?;

        // Families by header, in order of first appearance.
        let mut headers: Vec<&str> = Vec::new();
        for (_, columns) in &parsed {
            for column in columns {
                if !headers.contains(&column.header.as_str()) {
                    headers.push(&column.header);
                }
            }
        }
        let rows = parsed
            .iter()
            .flat_map(|(_, columns)| columns.iter().map(|c| c.values.len()))
            .max()
            .unwrap_or(0);
        self.cpus.ensure(rows);
        let mut name = String::new();
        for header in headers {
            let samples = parsed.iter().flat_map(|(file, columns)| {
                columns
                    .iter()
                    .filter(move |c| c.header == header)
                    .map(move |c| (*file, c))
            });
            if samples.clone().all(|(_, c)| c.values.is_empty()) {
                continue;
            }
            name.clear();
            name.push_str("node_lnstat_");
            name.push_str(header);
            name.push_str("_total");
            let mut f = out.family(&name, "linux network cache stats", Kind::Counter)?;
            for (file, column) in samples {
                for (cpu, &value) in column.values.iter().enumerate() {
                    f.sample(
                        &[("subsystem", file), ("cpu", self.cpus.get(cpu))],
                        value as f64,
                    )?;
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
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-network", "lnstat", |_| {
            Box::new(LnstatCollector::default())
        });
    }

    #[test]
    fn rows_and_absence() {
        let mut bad = Vec::new();
        let columns = parse_stat_file(
            "entries  hits\n0000001c 000000ff\n0000001c\n0000001c 0000000g\n1 2 3\n\n",
            |l| bad.push(l.to_string()),
        );
        assert_eq!(bad, ["0000001c 0000000g", "1 2 3"]);
        assert_eq!(columns[0].values, [0x1c, 0x1c]);
        assert_eq!(columns[1].values, [0xff]);
        assert!(parse_stat_file("", |_| {}).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "lnstat",
            Box::new(LnstatCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"lnstat\"} 1"));
        assert!(!text.contains("node_lnstat_"));
    }
}
