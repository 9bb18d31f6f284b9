//! `fibrechannel`: Fibre Channel host ports from /sys/class/fc_host, as node_exporter 1.12.1
//! reports them (prometheus/procfs 0.21.1's `FibreChannelClass`).
//!
//! Per host: `node_fibrechannel_info` from its attributes (a missing one is an empty label;
//! `port_id`, `port_name` and `fabric_name` lose their `0x`), and 14 counters from
//! `statistics/`, which the transport class prints in hex (`0x1a`; parsed as Go's
//! `ParseUint(s, 0, 64)`). A counter reading all ones (2^64-1) is one the HBA does not implement
//! and is left out, as in 1.12.1.
//!
//! No /sys/class/fc_host: NoData. An unreadable attribute or an unparsable counter fails the
//! collection, writing nothing.
//!
//! Deviations: a counter file missing from `statistics/` (or no `statistics/` at all) makes
//! node_exporter dereference a nil pointer and panic; here that counter is left out. Only the
//! 14 exported counters are read: a read error on one of the others does not fail the
//! collection as it does in procfs.
//!
//! Cost: the class and each host's `statistics/` are listed once per hotplug epoch; per host,
//! 11 attributes and 14 counters are kept open ([`OpenAttr`]) and re-read each scrape.

use std::path::PathBuf;
use std::sync::Arc;

use super::gosyntax::parse_go_uint;
use super::source::{DirListing, OpenAttr, same_listing};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "fibrechannel",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(FibreChannelCollector::default()))
}

/// The attributes in the info metric's label order (after `fc_host`), and whether procfs strips
/// their first two characters.
const ATTRS: [(&str, &str, bool); 10] = [
    ("speed", "speed", false),
    ("port_state", "port_state", false),
    ("port_type", "port_type", false),
    ("port_id", "port_id", true),
    ("port_name", "port_name", true),
    ("fabric_name", "fabric_name", true),
    ("symbolic_name", "symbolic_name", false),
    ("supported_classes", "supported_classes", false),
    ("supported_speeds", "supported_speeds", false),
    ("dev_loss_tmo", "dev_loss_tmo", false),
];

/// (statistics file, metric name, help), in 1.12.1's order.
const COUNTERS: [(&str, &str, &str); 14] = [
    (
        "dumped_frames",
        "node_fibrechannel_dumped_frames_total",
        "Number of dumped frames",
    ),
    (
        "error_frames",
        "node_fibrechannel_error_frames_total",
        "Number of errors in frames",
    ),
    (
        "invalid_crc_count",
        "node_fibrechannel_invalid_crc_total",
        "Invalid Cyclic Redundancy Check count",
    ),
    (
        "rx_frames",
        "node_fibrechannel_rx_frames_total",
        "Number of frames received",
    ),
    (
        "rx_words",
        "node_fibrechannel_rx_words_total",
        "Number of words received by host port",
    ),
    (
        "tx_frames",
        "node_fibrechannel_tx_frames_total",
        "Number of frames transmitted by host port",
    ),
    (
        "tx_words",
        "node_fibrechannel_tx_words_total",
        "Number of words transmitted by host port",
    ),
    (
        "seconds_since_last_reset",
        "node_fibrechannel_seconds_since_last_reset_total",
        "Number of seconds since last host port reset",
    ),
    (
        "invalid_tx_word_count",
        "node_fibrechannel_invalid_tx_words_total",
        "Number of invalid words transmitted by host port",
    ),
    (
        "link_failure_count",
        "node_fibrechannel_link_failure_total",
        "Number of times the host port link has failed",
    ),
    (
        "loss_of_sync_count",
        "node_fibrechannel_loss_of_sync_total",
        "Number of failures on either bit or transmission word boundaries",
    ),
    (
        "loss_of_signal_count",
        "node_fibrechannel_loss_of_signal_total",
        "Number of times signal has been lost",
    ),
    (
        "nos_count",
        "node_fibrechannel_nos_total",
        "Number Not_Operational Primitive Sequence received by host port",
    ),
    (
        "fcp_packet_aborts",
        "node_fibrechannel_fcp_packet_aborts_total",
        "Number of aborted packets",
    ),
];

type Attr = (PathBuf, OpenAttr);

#[derive(Default)]
struct FibreChannelCollector {
    class: DirListing,
    listed: Option<Arc<[String]>>,
    hosts: Vec<Host>,
    buf: String,
}

struct Host {
    name: String,
    attrs: [Attr; 10],
    /// This scrape's attribute values ("" when absent).
    values: [String; 10],
    stats_dir: PathBuf,
    stats: DirListing,
    stats_listed: Option<Arc<[String]>>,
    /// The counters present in `statistics/` (by index into [`COUNTERS`]).
    counters: Vec<(usize, Attr)>,
    /// This scrape's implemented counters: (index into [`COUNTERS`], value).
    counts: Vec<(usize, u64)>,
}

impl Host {
    fn new(dir: PathBuf, name: &str) -> Self {
        Host {
            name: name.to_string(),
            attrs: ATTRS.map(|(file, _, _)| (dir.join(file), OpenAttr::default())),
            values: Default::default(),
            stats_dir: dir.join("statistics"),
            stats: DirListing::default(),
            stats_listed: None,
            counters: Vec::new(),
            counts: Vec::new(),
        }
    }
}

fn skipped(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

impl FibreChannelCollector {
    fn read(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/fc_host");
        let names = self
            .class
            .names(ctx, &class, |_| true)
            .map_err(|e| CollectorError::io(&class, e))?;
        if names.is_none() {
            return Err(CollectorError::NoData);
        }
        if !same_listing(&names, &self.listed) {
            self.hosts = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|name| Host::new(class.join(name), name))
                .collect();
            self.listed = names;
        }
        let buf = &mut self.buf;
        for host in &mut self.hosts {
            for (i, ((path, attr), value)) in host
                .attrs
                .iter_mut()
                .zip(host.values.iter_mut())
                .enumerate()
            {
                value.clear();
                match attr.read(path, buf) {
                    Ok(()) => {}
                    // Drivers may leave attributes out.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(CollectorError::io(&*path, e)),
                }
                let strip = ATTRS[i].2 && buf.len() > 2;
                value.push_str(if strip {
                    buf.get(2..).unwrap_or("")
                } else {
                    buf
                });
            }
            let stats = host
                .stats
                .names(ctx, &host.stats_dir, |e| {
                    e.file_type().is_ok_and(|t| t.is_file())
                })
                .map_err(|e| CollectorError::io(&host.stats_dir, e))?;
            if !same_listing(&stats, &host.stats_listed) {
                let present = |file: &str| stats.iter().flat_map(|n| n.iter()).any(|n| n == file);
                host.counters = COUNTERS
                    .iter()
                    .enumerate()
                    .filter(|(_, (file, _, _))| present(file))
                    .map(|(i, (file, _, _))| (i, (host.stats_dir.join(file), OpenAttr::default())))
                    .collect();
                host.stats_listed = stats;
            }
            host.counts.clear();
            for (i, (path, attr)) in &mut host.counters {
                match attr.read(path, buf) {
                    Ok(()) => {}
                    Err(e) if skipped(&e) => continue,
                    Err(e) => return Err(CollectorError::io(&*path, e)),
                }
                let value = parse_go_uint(buf).ok_or_else(|| CollectorError::Parse {
                    path: path.clone(),
                    reason: format!("not an unsigned integer: {buf:?}"),
                })?;
                // All ones: not implemented by the HBA's firmware.
                if value != u64::MAX {
                    host.counts.push((*i, value));
                }
            }
        }
        Ok(())
    }

    fn write(&self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        let mut f = out.family(
            "node_fibrechannel_info",
            "Non-numeric data from /sys/class/fc_host/<host>, value is always 1.",
            Kind::Gauge,
        )?;
        for host in &self.hosts {
            let v = &host.values;
            let mut labels = [("fc_host", host.name.as_str()); 11];
            for (i, (_, label, _)) in ATTRS.iter().enumerate() {
                labels[i + 1] = (label, v[i].as_str());
            }
            f.sample(&labels, 1.0)?;
        }
        for (index, (_, name, help)) in COUNTERS.iter().enumerate() {
            let mut samples = self.hosts.iter().flat_map(|h| {
                h.counts
                    .iter()
                    .filter(move |(i, _)| *i == index)
                    .map(move |(_, v)| (h.name.as_str(), *v))
            });
            let Some(first) = samples.next() else {
                continue;
            };
            let mut f = out.family(name, help, Kind::Counter)?;
            for (host, value) in std::iter::once(first).chain(samples) {
                f.sample(&[("fc_host", host)], value as f64)?;
            }
        }
        Ok(())
    }
}

impl Collector for FibreChannelCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.read(ctx)?;
        self.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};
    use std::path::Path;

    /// The path a host's attribute would have.
    fn attr_path(root: &Path, host: &str, file: &str) -> PathBuf {
        root.join("sys/class/fc_host").join(host).join(file)
    }

    #[test]
    fn golden() {
        assert_renders_golden("hw-storage", "fibrechannel", |_| {
            Box::new(FibreChannelCollector::default())
        });
    }

    #[test]
    fn go_base_zero() {
        assert_eq!(parse_go_uint("0x1a"), Some(26));
        assert_eq!(parse_go_uint("0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_go_uint("017"), Some(15));
        assert_eq!(parse_go_uint("0"), Some(0));
        assert_eq!(parse_go_uint("42"), Some(42));
        assert_eq!(parse_go_uint("0b101"), Some(5));
        assert_eq!(parse_go_uint("0x_ff"), Some(255));
        assert_eq!(parse_go_uint("08"), None);
        assert_eq!(parse_go_uint("-1"), None);
        assert_eq!(parse_go_uint("0x"), None);
        assert_eq!(parse_go_uint(""), None);
    }

    #[test]
    fn absent_class_and_bad_counters() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class")).unwrap();
        let scrape = || {
            render(
                "fibrechannel",
                Box::new(FibreChannelCollector::default()),
                Paths::fixture(dir.path()),
            )
        };
        let failed = "node_scrape_collector_success{collector=\"fibrechannel\"} 0";
        assert!(scrape().contains(failed));
        // A host with no attributes and no statistics: empty labels, no counters.
        std::fs::create_dir_all(attr_path(dir.path(), "host9", "")).unwrap();
        let text = scrape();
        assert!(
            text.contains("node_fibrechannel_info{fc_host=\"host9\",speed=\"\",port_state=\"\"")
        );
        assert!(!text.contains("node_fibrechannel_rx_frames"));
        std::fs::create_dir_all(attr_path(dir.path(), "host9", "statistics")).unwrap();
        std::fs::write(attr_path(dir.path(), "host9", "port_id"), "0x\n").unwrap();
        std::fs::write(
            attr_path(dir.path(), "host9", "statistics/rx_frames"),
            "0x10\n",
        )
        .unwrap();
        let text = scrape();
        assert!(text.contains("port_id=\"0x\""));
        assert!(text.contains("node_fibrechannel_rx_frames_total{fc_host=\"host9\"} 16"));
        std::fs::write(
            attr_path(dir.path(), "host9", "statistics/tx_frames"),
            "lots\n",
        )
        .unwrap();
        let text = scrape();
        assert!(text.contains(failed) && !text.contains("node_fibrechannel_info"));
    }
}
