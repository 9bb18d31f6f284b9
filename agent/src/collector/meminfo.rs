//! `meminfo`: every line of /proc/meminfo as `node_memory_<Field>[_bytes]`, as node_exporter names
//! them (`Active(anon)` becomes `Active_anon`; values with a `kB` unit are converted to bytes).

use super::source::{SourceFile, parse_meminfo_line};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "meminfo",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(MeminfoCollector::default()))
}

struct MeminfoCollector {
    source: SourceFile,
    buf: String,
    name: String,
    help: String,
    /// The fields of this scrape so far (the first `seen` entries; kept across scrapes).
    seen: Vec<String>,
}

impl Default for MeminfoCollector {
    fn default() -> Self {
        MeminfoCollector {
            source: SourceFile::proc("meminfo"),
            buf: String::new(),
            name: String::new(),
            help: String::new(),
            seen: Vec::new(),
        }
    }
}

impl Collector for MeminfoCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        let mut field = String::new();
        let mut seen = 0;
        for line in self.buf.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let Some(value) = parse_meminfo_line(line, &mut field) else {
                ctx.malformed(path, line);
                continue;
            };
            // A repeated field (or two that name the same metric, `X: n kB` and `X_bytes: n`)
            // would repeat the family: the first counts. A field that makes no metric name
            // (`Swap!: 1`) is malformed too. Both found by fuzzing.
            if self.seen[..seen].contains(&field)
                || !field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
            {
                ctx.malformed(path, line);
                continue;
            }
            if seen == self.seen.len() {
                self.seen.push(String::new());
            }
            self.seen[seen].clone_from(&field);
            seen += 1;
            self.name.clear();
            self.name.push_str("node_memory_");
            self.name.push_str(&field);
            self.help.clear();
            self.help.push_str("Memory information field ");
            self.help.push_str(&field);
            self.help.push('.');
            let kind = if field.ends_with("_total") {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            out.single(&self.name, &self.help, kind, &[], value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden(
            "basic",
            "meminfo",
            |_| Box::new(MeminfoCollector::default()),
        );
    }

    #[test]
    fn old_kernel_with_few_fields() {
        assert_renders_golden("old-kernel", "meminfo", |_| {
            Box::new(MeminfoCollector::default())
        });
    }
}
