//! `udp_queues`: bytes queued in UDP sockets' send and receive buffers, summed over
//! /proc/net/udp and /proc/net/udp6.

use super::util::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "udp_queues",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(UdpQueuesCollector::default()))
}

struct UdpQueuesCollector {
    /// /proc/net/udp and udp6.
    sources: [SourceFile; 2],
    buf: String,
}

impl Default for UdpQueuesCollector {
    fn default() -> Self {
        UdpQueuesCollector {
            sources: [SourceFile::proc("net/udp"), SourceFile::proc("net/udp6")],
            buf: String::new(),
        }
    }
}

/// The `tx_queue:rx_queue` column (hex) of one socket line.
pub fn parse_queues(line: &str) -> Option<(u64, u64)> {
    let fields: [&str; 10] = {
        let mut it = line.split_ascii_whitespace();
        std::array::from_fn(|_| it.next().unwrap_or(""))
    };
    if fields.iter().any(|f| f.is_empty()) {
        return None;
    }
    let (tx, rx) = fields[4].split_once(':')?;
    Some((
        u64::from_str_radix(tx, 16).ok()?,
        u64::from_str_radix(rx, 16).ok()?,
    ))
}

/// Sums the queues of a socket table (the first line is the header).
pub fn sum_queues(text: &str, mut malformed: impl FnMut(&str)) -> (u64, u64) {
    let (mut tx, mut rx) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        match parse_queues(line) {
            Some((t, r)) => {
                tx = tx.saturating_add(t);
                rx = rx.saturating_add(r);
            }
            None => malformed(line),
        }
    }
    (tx, rx)
}

impl Collector for UdpQueuesCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let mut sums = [None; 2];
        for (slot, source) in sums.iter_mut().zip(&mut self.sources) {
            match source.read_into(ctx.paths, &mut self.buf) {
                Ok(()) => {
                    let path = source.display_path();
                    *slot = Some(sum_queues(&self.buf, |line| ctx.malformed(path, line)))
                }
                // That IP version is disabled.
                Err(CollectorError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if sums.iter().all(Option::is_none) {
            return Err(CollectorError::NoData);
        }
        let mut family = out.family(
            "node_udp_queues",
            "Number of allocated memory in the kernel for UDP datagrams in bytes.",
            Kind::Gauge,
        )?;
        for (sum, ip) in sums.iter().zip(["v4", "v6"]) {
            if let Some((tx, rx)) = sum {
                family.sample(&[("queue", "tx"), ("ip", ip)], *tx as f64)?;
                family.sample(&[("queue", "rx"), ("ip", ip)], *rx as f64)?;
            }
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
        assert_renders_golden("basic", "udp_queues", |_| {
            Box::new(UdpQueuesCollector::default())
        });
    }

    #[test]
    fn ipv4_only_with_a_bad_line() {
        assert_renders_golden("odd", "udp_queues", |_| {
            Box::new(UdpQueuesCollector::default())
        });
    }

    #[test]
    fn lines() {
        let line = "  1: 00000000:0044 00000000:0000 07 00000100:00000200 00:00000000 00000000     0        0 17963 2 0000000000000000 0";
        assert_eq!(parse_queues(line), Some((0x100, 0x200)));
        assert_eq!(
            parse_queues("  1: 00000000:0044 00000000:0000 07 0100"),
            None
        );
        assert_eq!(
            parse_queues(
                "  1: 00000000:0044 00000000:0000 07 zz:00 00:00000000 00000000 0 0 17963"
            ),
            None
        );
    }
}
