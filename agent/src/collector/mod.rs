//! node_exporter-compatible collectors.
//!
//! One collector per file, as node_exporter does it: each file exports a `REGISTRATION` naming the
//! collector, whether it is on by default, its own command-line flags and how to build it from them.
//! [`registry::ALL`] lists every registration; the CLI and the scraper are driven from that list
//! alone. This file is the framework below the collectors; [`source`] is the layer between it
//! and them that reads the host; the registry sits above them.
//!
//! A collector reads its sources under [`Paths`] (so tests point it at a fixture tree) and writes
//! whole families through [`MetricWriter`]: all samples of one family must be written together,
//! because the text format requires a family's samples to be contiguous.
//! Collectors never panic on what they read: a malformed line is skipped and counted with
//! [`Context::malformed`], an unreadable source is an error (the scrape still succeeds and
//! `node_scrape_collector_success` says 0).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub mod arp;
pub mod bcache;
pub mod bcachefs;
pub mod bonding;
pub mod btrfs;
pub mod buddyinfo;
pub mod cgroups;
pub mod conntrack;
pub mod cpu;
pub mod cpu_vulnerabilities;
pub mod cpufreq;
pub mod dbus;
pub mod diskstats;
pub mod dmi;
pub mod dmmultipath;
pub mod drbd;
pub mod drm;
pub mod edac;
pub mod entropy;
pub mod ethtool;
pub mod expfmt;
pub mod fibrechannel;
pub mod filefd;
pub mod filesystem;
pub mod filter;
pub mod flags;
pub mod gosyntax;
pub mod hotplug;
pub mod hwmon;
pub mod infiniband;
pub mod interrupts;
pub mod ipvs;
pub mod kernel_hung;
pub mod ksmd;
pub mod lnstat;
pub mod loadavg;
pub mod logind;
pub mod mdadm;
pub mod meminfo;
pub mod meminfo_numa;
pub mod mountstats;
pub mod netclass;
pub mod netdev;
pub mod netlink;
pub mod netstat;
pub mod network_route;
pub mod nfs;
pub mod nfsd;
pub mod ntp;
pub mod nvme;
pub mod nvmesubsystem;
pub mod os;
pub mod pcidevice;
pub mod perf;
pub mod powersupplyclass;
pub mod pressure;
pub mod processes;
pub mod qdisc;
pub mod rapl;
pub mod registry;
pub mod runit;
pub mod schedstat;
pub mod selinux;
pub mod slabinfo;
pub mod sockstat;
pub mod softirqs;
pub mod softnet;
pub mod source;
pub mod stat;
pub mod supervisord;
pub mod swap;
pub mod sysctl;
pub mod systemd;
pub mod tapestats;
pub mod tcpstat;
pub mod textfile;
pub mod thermal_zone;
pub mod time;
pub mod timex;
pub mod udp_queues;
pub mod uname;
pub mod vmstat;
pub mod watchdog;
pub mod wifi;
pub mod xfrm;
pub mod xfs;
pub mod zfs;
pub mod zoneinfo;

/// The enabled collectors, by name, in the order they run.
pub type EnabledCollectors = Vec<(&'static str, Box<dyn Collector>)>;

/// How a collector plugs into the command line and the scraper.
pub struct Registration {
    /// The node_exporter collector name: `--collector.<name>` / `--no-collector.<name>`.
    pub name: &'static str,
    /// Whether node_exporter 1.12.1 enables it by default on Linux.
    pub default_enabled: bool,
    /// Adds the collector's own flags (such as `--collector.filesystem.mount-points-exclude`).
    pub flags: fn(clap::Command) -> clap::Command,
    /// Builds the collector from the parsed command line. Invalid flag values are errors here.
    pub build: fn(&BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError>,
}

/// What a collector may look at when it is built.
pub struct BuildContext<'a> {
    pub matches: &'a clap::ArgMatches,
    pub paths: &'a Paths,
}

impl BuildContext<'_> {
    /// The value of one of the collector's own string flags (declared with a default).
    pub fn flag(&self, id: &str) -> Option<&str> {
        self.matches
            .try_get_one::<String>(id)
            .ok()
            .flatten()
            .map(String::as_str)
    }

    /// A regex flag, compiled anchored as node_exporter (Go's regexp with `^(?:…)$`) does.
    pub fn regex_flag(&self, id: &str) -> Result<Option<regex::Regex>, BuildError> {
        match self.flag(id) {
            None | Some("") => Ok(None),
            Some(pattern) => regex::Regex::new(&format!("^(?:{pattern})$"))
                .map(Some)
                .map_err(|e| BuildError::Flag {
                    flag: id.to_string(),
                    reason: e.to_string(),
                }),
        }
    }
}

/// Collector registrations that need nothing from the command line use this for `flags`.
pub fn no_flags(command: clap::Command) -> clap::Command {
    command
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("--{flag}: {reason}")]
    Flag { flag: String, reason: String },
}

/// Where the host's sources are; node_exporter's `--path.*` flags.
#[derive(Debug, Clone)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    pub udev_data: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            rootfs: "/".into(),
            udev_data: "/run/udev/data".into(),
        }
    }
}

impl Paths {
    /// All sources under one fixture directory: `<root>/proc`, `<root>/sys`, `<root>/run/udev/data`.
    pub fn fixture(root: &Path) -> Self {
        Paths {
            procfs: root.join("proc"),
            sysfs: root.join("sys"),
            rootfs: root.to_path_buf(),
            udev_data: root.join("run/udev/data"),
        }
    }
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }
    /// A path as seen from the host's root (for mount points under `--path.rootfs`).
    pub fn root(&self, abs: &str) -> PathBuf {
        self.rootfs.join(abs.trim_start_matches('/'))
    }
}

/// Passed to every collector on every scrape.
pub struct Context<'a> {
    pub paths: &'a Paths,
    malformed: &'a AtomicU64,
    /// The scraper's rtnetlink socket, kept between scrapes (`None`: open one for this scrape).
    route_socket: Option<&'a std::sync::Mutex<Option<netlink::RouteSocket>>>,
    links: std::cell::OnceCell<Option<Vec<netlink::Link>>>,
    /// See [`hotplug`]; `None`: probe every source every scrape.
    hotplug_epoch: Option<u64>,
}

impl<'a> Context<'a> {
    pub fn new(paths: &'a Paths, malformed: &'a AtomicU64) -> Self {
        Context {
            paths,
            malformed,
            route_socket: None,
            links: std::cell::OnceCell::new(),
            hotplug_epoch: None,
        }
    }

    /// The same context with the scrape's hotplug epoch ([`hotplug::HotplugWatch::epoch`]).
    pub fn with_hotplug_epoch(self, epoch: Option<u64>) -> Self {
        Context {
            hotplug_epoch: epoch,
            ..self
        }
    }

    /// The hotplug epoch of this scrape: sources found absent, and directory listings, taken
    /// in the same epoch still hold. `None`: nothing may be assumed.
    pub fn hotplug_epoch(&self) -> Option<u64> {
        self.hotplug_epoch
    }

    /// A scrape's context whose link dump goes through `socket` (kept by the scraper).
    pub fn with_route_socket(
        paths: &'a Paths,
        malformed: &'a AtomicU64,
        socket: &'a std::sync::Mutex<Option<netlink::RouteSocket>>,
    ) -> Self {
        Context {
            route_socket: Some(socket),
            ..Context::new(paths, malformed)
        }
    }

    /// This network namespace's links over rtnetlink, dumped once per scrape for every
    /// collector that asks (netdev, netclass: one dump instead of two). `None` when netlink is
    /// unavailable (a seccomp filter, say): the callers fall back to /proc and sysfs.
    pub fn links(&self) -> Option<&[netlink::Link]> {
        self.links
            .get_or_init(|| {
                let mut own = None;
                let mut guard = self
                    .route_socket
                    .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
                let socket = guard.as_deref_mut().unwrap_or(&mut own);
                if socket.is_none() {
                    match netlink::RouteSocket::open() {
                        Ok(opened) => *socket = Some(opened),
                        Err(e) => {
                            tracing::debug!(error = %e, "no rtnetlink socket");
                            return None;
                        }
                    }
                }
                let mut links = Vec::new();
                match socket.as_mut()?.links(&mut links) {
                    Ok(()) => Some(links),
                    Err(e) => {
                        tracing::debug!(error = %e, "rtnetlink link dump failed");
                        *socket = None;
                        None
                    }
                }
            })
            .as_deref()
    }
    /// Records a source line that could not be parsed and was skipped.
    pub fn malformed(&self, path: &Path, line: &str) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(path = %path.display(), line, "skipped malformed line");
    }
}

/// Why a collector produced no (or partial) data this scrape.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// The source does not exist on this host (node_exporter's ErrNoData).
    #[error("no data")]
    NoData,
    #[error("encoding: {0}")]
    Encode(#[from] fmt::Error),
}

impl CollectorError {
    /// An unreadable source as node_exporter's sysfs collectors report it: a missing file is
    /// no data (`ErrNoData`), anything else an I/O error.
    pub fn io_or_no_data(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            CollectorError::NoData
        } else {
            CollectorError::io(path, source)
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CollectorError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A node_exporter collector. `update` runs once per scrape; scrapes are serialised, so
/// collectors may keep reusable buffers and caches in `self`.
pub trait Collector: Send {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError>;
}

/// The Prometheus type of a family, as node_exporter declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

/// Labels of one sample: `(name, value)` pairs in node_exporter's order.
pub type Labels<'l> = &'l [(&'l str, &'l str)];

/// Writes families through prometheus-client's encoder.
pub struct MetricWriter<'a, 'e> {
    encoder: &'a mut DescriptorEncoder<'e>,
}

impl<'a, 'e> MetricWriter<'a, 'e> {
    pub fn new(encoder: &'a mut DescriptorEncoder<'e>) -> Self {
        MetricWriter { encoder }
    }

    /// Starts a family. `name` is the full node_exporter name; counters nearly always end in
    /// `_total`, and the few node_exporter names without it (`node_supervisord_start_time_seconds`,
    /// perf's tracepoints, a textfile's) are served as they are named.
    pub fn family<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        kind: Kind,
    ) -> Result<Family<'s>, fmt::Error> {
        let (name, metric_type, bare_counter) = match kind {
            // prometheus-client appends `_total` to counter samples itself; a counter named
            // without it has its samples written plain, and the text format 0.0.4 rewrite names
            // the family as its samples are.
            Kind::Counter => match name.strip_suffix("_total") {
                Some(stem) => (stem, MetricType::Counter, false),
                None => (name, MetricType::Counter, true),
            },
            Kind::Gauge => (name, MetricType::Gauge, false),
            Kind::Untyped => (name, MetricType::Unknown, false),
        };
        let encoder = self
            .encoder
            .encode_descriptor(name, help, None, metric_type)?;
        let kind = if bare_counter { Kind::Untyped } else { kind };
        Ok(Family { encoder, kind })
    }

    /// A family with a single sample.
    pub fn single(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: Labels<'_>,
        value: f64,
    ) -> Result<(), fmt::Error> {
        self.family(name, help, kind)?.sample(labels, value)
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> Result<(), fmt::Error> {
        self.single(name, help, Kind::Gauge, &[], value)
    }

    pub fn counter(&mut self, name: &str, help: &str, value: f64) -> Result<(), fmt::Error> {
        self.single(name, help, Kind::Counter, &[], value)
    }
}

/// One family being written; add its samples with [`Family::sample`].
pub struct Family<'s> {
    encoder: MetricEncoder<'s>,
    /// How samples are encoded: `Untyped` (plain) for a counter named without `_total`.
    kind: Kind,
}

impl Family<'_> {
    pub fn sample(&mut self, labels: Labels<'_>, value: f64) -> Result<(), fmt::Error> {
        let encoder = self.encoder.encode_family(&labels)?;
        // Most values are whole numbers (counts, bytes, states): printed as integers they read
        // as Go prints them below 1e6 ("0", not "0.0"), and cost a fifth of a float's
        // formatting. Exact only below 2^53; beyond that, and for fractions, a float.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        let integral = value.fract() == 0.0 && value.abs() < EXACT;
        match self.kind {
            Kind::Counter if integral && value >= 0.0 => {
                ConstCounter::new(value as u64).encode(encoder)
            }
            Kind::Counter => ConstCounter::new(value).encode(encoder),
            Kind::Gauge | Kind::Untyped if integral => {
                ConstGauge::new(value as i64).encode(encoder)
            }
            Kind::Gauge | Kind::Untyped => ConstGauge::new(value).encode(encoder),
        }
    }
}

/// Decimal label values "0", "1", … formatted once and reused by every scrape.
#[derive(Default)]
pub struct IndexLabels {
    labels: Vec<String>,
}

impl IndexLabels {
    /// Makes `get(i)` valid for every `i < n`.
    pub fn ensure(&mut self, n: usize) {
        while self.labels.len() < n {
            self.labels.push(self.labels.len().to_string());
        }
    }

    /// The label for `i`; call [`IndexLabels::ensure`] first.
    pub fn get(&self, i: usize) -> &str {
        self.labels.get(i).map(String::as_str).unwrap_or("")
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_labels() {
        let mut labels = IndexLabels::default();
        labels.ensure(11);
        assert_eq!(labels.get(10), "10");
        assert_eq!(labels.get(0), "0");
    }
}
