//! `entropy`: node_entropy_available_bits and node_entropy_pool_size_bits from
//! /proc/sys/kernel/random.

use super::util::parse_u64;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags, read_into,
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

#[derive(Default)]
struct EntropyCollector {
    buf: String,
}

impl EntropyCollector {
    fn read(&mut self, ctx: &Context<'_>, file: &str) -> Result<f64, CollectorError> {
        let path = ctx.paths.proc(file);
        read_into(&path, &mut self.buf)?;
        parse_u64(&self.buf)
            .map(|v| v as f64)
            .ok_or_else(|| CollectorError::Parse {
                path,
                reason: format!("not an unsigned integer: {:?}", self.buf.trim()),
            })
    }
}

impl Collector for EntropyCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let available = self.read(ctx, "sys/kernel/random/entropy_avail")?;
        let pool_size = self.read(ctx, "sys/kernel/random/poolsize")?;
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
    use crate::collector::testing::{assert_golden, fixture, render};

    #[test]
    fn golden() {
        let root = fixture("basic");
        let text = render(
            "entropy",
            Box::new(EntropyCollector::default()),
            Paths::fixture(&root),
        );
        assert_golden(&root.join("golden/entropy.prom"), &text);
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
