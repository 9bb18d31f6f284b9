//! `entropy`: node_entropy_available_bits and node_entropy_pool_size_bits from
//! /proc/sys/kernel/random.

use super::gosyntax::parse_u64;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "entropy",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(EntropyCollector::default()))
}

struct EntropyCollector {
    available: SourceFile,
    pool_size: SourceFile,
    buf: String,
}

impl Default for EntropyCollector {
    fn default() -> Self {
        EntropyCollector {
            available: SourceFile::proc("sys/kernel/random/entropy_avail"),
            pool_size: SourceFile::proc("sys/kernel/random/poolsize"),
            buf: String::new(),
        }
    }
}

fn read_u64(
    ctx: &Context<'_>,
    source: &mut SourceFile,
    buf: &mut String,
) -> Result<f64, CollectorError> {
    source.read_into(ctx.paths, buf)?;
    parse_u64(buf)
        .map(|v| v as f64)
        .ok_or_else(|| CollectorError::Parse {
            path: source.display_path().to_path_buf(),
            reason: format!("not an unsigned integer: {:?}", buf.trim()),
        })
}

impl Collector for EntropyCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let available = read_u64(ctx, &mut self.available, &mut self.buf)?;
        let pool_size = read_u64(ctx, &mut self.pool_size, &mut self.buf)?;
        out.gauge(
            "node_entropy_available_bits",
            "Bits of available entropy.",
            available,
        )?;
        out.gauge(
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
            pool_size,
        )?;
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
        assert_renders_golden(
            "basic",
            "entropy",
            |_| Box::new(EntropyCollector::default()),
        );
    }

    #[test]
    fn missing_source_fails_the_collector_only() {
        let root = fixture("odd");
        let text = render(
            "entropy",
            Box::new(EntropyCollector::default()),
            Paths::fixture(&root),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"entropy\"} 0"));
        assert!(!text.contains("node_entropy_available_bits"));
    }
}
