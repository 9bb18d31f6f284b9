//! `ethtool`: driver information, link modes and driver statistics of every network device
//! listed in /sys/class/net, through the `SIOCETHTOOL` ioctls node_exporter 1.12.1 makes (via
//! safchain/ethtool): `ETHTOOL_GSET` (the legacy `ethtool_cmd`: its 32-bit supported and
//! advertised link-mode masks and autoneg), `ETHTOOL_GDRVINFO`, then `ETHTOOL_GSTRINGS` and
//! `ETHTOOL_GSTATS` for the statistics.
//!
//! As in 1.12.1: the masks are 32 bits wide, so link modes from bit 32 on (25000baseKR and
//! faster, 2500baseT) are never reported; a device whose ioctls fail (loopback: EOPNOTSUPP) is
//! skipped for that part only; statistic names are sanitised, lower-cased and have `rx`/`tx`
//! spelled `received`/`transmitted`; names colliding after that are all dropped; the seven
//! common counters (`rx_bytes` …) keep node_exporter's pre-declared names and help; every
//! statistic is untyped. A missing or unreadable /sys/class/net is `NoData`, an empty one an
//! error.
//!
//! Decisions: one `AF_INET` datagram socket is kept for all ioctls; the driver information is
//! fetched once per device per scrape (safchain fetches it twice, once for the stats count);
//! the string table is fetched every scrape (drivers may rename statistics at any time, e.g. on
//! a channel count change) but only compared with the last one: names are sanitised and
//! filtered only when it changed. The kernel writes as many strings and values as the driver
//! has *now*, whatever count is passed in, so both buffers are sized for safchain's maximum of
//! 32768 statistics (untouched pages stay unallocated).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use super::filter::DeviceFilter;
use super::flags::unanchored_regex_flag;
use super::source::DirListing;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "ethtool",
    default_enabled: false,
    flags,
    build,
};

const DEVICE_INCLUDE: &str = "collector.ethtool.device-include";
const DEVICE_EXCLUDE: &str = "collector.ethtool.device-exclude";
const METRICS_INCLUDE: &str = "collector.ethtool.metrics-include";

fn flags(command: clap::Command) -> clap::Command {
    use clap::Arg;
    command
        .arg(
            Arg::new(DEVICE_INCLUDE).long(DEVICE_INCLUDE).help(
                "Regexp of ethtool devices to include (mutually exclusive to device-exclude).",
            ),
        )
        .arg(
            Arg::new(DEVICE_EXCLUDE).long(DEVICE_EXCLUDE).help(
                "Regexp of ethtool devices to exclude (mutually exclusive to device-include).",
            ),
        )
        .arg(
            Arg::new(METRICS_INCLUDE)
                .long(METRICS_INCLUDE)
                .default_value(".*")
                .help("Regexp of ethtool stats to include."),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    // node_exporter's newDeviceFilter: both patterns apply when both are given (no
    // mutual-exclusion check for ethtool), matched unanchored.
    let devices = DeviceFilter {
        exclude: unanchored_regex_flag(ctx, DEVICE_EXCLUDE)?,
        include: unanchored_regex_flag(ctx, DEVICE_INCLUDE)?,
    };
    // regexp.MustCompile(pattern).MatchString: unanchored; an empty pattern matches everything.
    let metrics = unanchored_regex_flag(ctx, METRICS_INCLUDE)?;
    Ok(Box::new(EthtoolCollector::new(
        devices,
        metrics,
        Box::new(IoctlSource::default()),
    )))
}

// linux/ethtool.h and linux/sockios.h.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSET: u32 = 0x01;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// safchain/ethtool's `MAX_GSTRINGS`: more statistics than this is an error.
const MAX_GSTRINGS: usize = 32768;
/// `sizeof(struct ethtool_cmd)`.
const ETHTOOL_CMD_LEN: usize = 44;
/// `sizeof(struct ethtool_drvinfo)`.
const DRVINFO_LEN: usize = 196;
/// `struct ethtool_gstrings` before its data: cmd, string_set, len.
const GSTRINGS_HEADER: usize = 12;

/// What `ETHTOOL_GSET` reports that node_exporter uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub supported: u32,
    pub advertising: u32,
    pub autoneg: u8,
}

/// `ETHTOOL_GDRVINFO`'s strings and statistics count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverInfo {
    pub driver: String,
    pub version: String,
    pub fw_version: String,
    pub bus_info: String,
    pub erom_version: String,
    pub n_stats: u32,
}

/// Decodes a `struct ethtool_cmd` as the kernel filled it.
pub fn parse_link_info(b: &[u8; ETHTOOL_CMD_LEN]) -> LinkInfo {
    let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    LinkInfo {
        supported: u32_at(4),
        advertising: u32_at(8),
        autoneg: b[18],
    }
}

/// A fixed-size C string field: up to its first NUL (safchain's goString).
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Decodes a `struct ethtool_drvinfo`.
pub fn parse_driver_info(b: &[u8; DRVINFO_LEN]) -> DriverInfo {
    DriverInfo {
        driver: c_string(&b[4..36]),
        version: c_string(&b[36..68]),
        fw_version: c_string(&b[68..100]),
        bus_info: c_string(&b[100..132]),
        erom_version: c_string(&b[132..164]),
        n_stats: u32::from_ne_bytes([b[180], b[181], b[182], b[183]]),
    }
}

/// The statistics names of a `ETHTOOL_GSTRINGS` answer's data (32-byte NUL-padded slots).
pub fn stat_names(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.chunks_exact(ETH_GSTRING_LEN).map(|slot| {
        let end = slot.iter().position(|&c| c == 0).unwrap_or(slot.len());
        &slot[..end]
    })
}

/// Where the collector gets a device's ethtool data: the kernel, or a test's fake.
pub trait EthtoolSource: Send {
    fn link_info(&mut self, device: &str) -> io::Result<LinkInfo>;
    fn driver_info(&mut self, device: &str) -> io::Result<DriverInfo>;
    /// Fills `strings` with the raw `ETH_SS_STATS` string slots (32 bytes each) and `values`
    /// with the statistics, as many as the driver reports now.
    fn stats(
        &mut self,
        device: &str,
        info: &DriverInfo,
        strings: &mut Vec<u8>,
        values: &mut Vec<u64>,
    ) -> io::Result<()>;
}

/// `struct ifreq` with its `ifr_data` member.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The ioctls on one kept socket.
#[derive(Default)]
pub struct IoctlSource {
    socket: Option<OwnedFd>,
    /// `ethtool_gstrings` and `ethtool_stats` buffers, with room for [`MAX_GSTRINGS`] entries.
    strings_buf: Vec<u8>,
    stats_buf: Vec<u64>,
}

impl IoctlSource {
    fn fd(&mut self) -> io::Result<libc::c_int> {
        if let Some(fd) = &self.socket {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_IP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly created descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        self.socket = Some(owned);
        Ok(fd)
    }

    /// `SIOCETHTOOL` on `device` with the command structure at `data`.
    ///
    /// # Safety
    /// `data` must point to a command structure the kernel may read and write in full for the
    /// command it names (sized for what the kernel writes back).
    unsafe fn ioctl(&mut self, device: &str, data: *mut libc::c_void) -> io::Result<()> {
        let fd = self.fd()?;
        let mut ifr = IfreqData {
            name: [0; libc::IFNAMSIZ],
            data,
            _pad: [0; 16],
        };
        let name = device.as_bytes();
        if name.len() >= libc::IFNAMSIZ || name.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        ifr.name[..name.len()].copy_from_slice(name);
        // SAFETY: ifr is a valid ifreq whose data pointer the caller vouches for.
        let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr as *mut IfreqData) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl EthtoolSource for IoctlSource {
    fn link_info(&mut self, device: &str) -> io::Result<LinkInfo> {
        let mut cmd = [0u8; ETHTOOL_CMD_LEN];
        cmd[..4].copy_from_slice(&ETHTOOL_GSET.to_ne_bytes());
        // SAFETY: cmd is a whole ethtool_cmd, which is all GSET reads and writes.
        unsafe { self.ioctl(device, cmd.as_mut_ptr().cast())? };
        Ok(parse_link_info(&cmd))
    }

    fn driver_info(&mut self, device: &str) -> io::Result<DriverInfo> {
        let mut info = [0u8; DRVINFO_LEN];
        info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
        // SAFETY: info is a whole ethtool_drvinfo, which is all GDRVINFO reads and writes.
        unsafe { self.ioctl(device, info.as_mut_ptr().cast())? };
        Ok(parse_driver_info(&info))
    }

    fn stats(
        &mut self,
        device: &str,
        info: &DriverInfo,
        strings: &mut Vec<u8>,
        values: &mut Vec<u64>,
    ) -> io::Result<()> {
        strings.clear();
        values.clear();
        let n = info.n_stats as usize;
        if n > MAX_GSTRINGS {
            return Err(io::Error::other(format!(
                "ethtool currently doesn't support more than {MAX_GSTRINGS} entries, received {n}"
            )));
        }
        if n == 0 {
            return Ok(());
        }
        // The kernel writes the driver's current count of entries, whatever `len` says: room
        // for the maximum, zeroed once (pages the kernel never writes stay shared zero pages).
        let strings_len = GSTRINGS_HEADER + MAX_GSTRINGS * ETH_GSTRING_LEN;
        if self.strings_buf.len() != strings_len {
            self.strings_buf = vec![0; strings_len];
        }
        if self.stats_buf.len() != 1 + MAX_GSTRINGS {
            self.stats_buf = vec![0; 1 + MAX_GSTRINGS];
        }
        let buf = &mut self.strings_buf;
        buf[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
        buf[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
        buf[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
        let ptr = buf.as_mut_ptr().cast();
        // SAFETY: the buffer holds an ethtool_gstrings header and MAX_GSTRINGS slots.
        unsafe { self.ioctl(device, ptr)? };
        let buf = &self.strings_buf;
        let got = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        let got_strings = got.min(MAX_GSTRINGS);
        strings.extend_from_slice(
            &buf[GSTRINGS_HEADER..GSTRINGS_HEADER + got_strings * ETH_GSTRING_LEN],
        );

        // ethtool_stats: cmd then n_stats, both u32, in the first u64 slot.
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&ETHTOOL_GSTATS.to_ne_bytes());
        head[4..].copy_from_slice(&(n as u32).to_ne_bytes());
        self.stats_buf[0] = u64::from_ne_bytes(head);
        let ptr = self.stats_buf.as_mut_ptr().cast();
        // SAFETY: the buffer holds an ethtool_stats header and MAX_GSTRINGS values.
        unsafe { self.ioctl(device, ptr)? };
        let head = self.stats_buf[0].to_ne_bytes();
        let got_values = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]) as usize;
        // safchain pairs the first n_stats (GDRVINFO's count) strings and values.
        let pairs = n.min(got_strings).min(got_values.min(MAX_GSTRINGS));
        strings.truncate(pairs * ETH_GSTRING_LEN);
        values.extend_from_slice(&self.stats_buf[1..1 + pairs]);
        Ok(())
    }
}

/// The statistics families node_exporter declares up front, with their own names and help.
const PREDECLARED: [(&str, &str, &str); 7] = [
    (
        "rx_bytes",
        "node_ethtool_received_bytes_total",
        "Network interface bytes received",
    ),
    (
        "rx_dropped",
        "node_ethtool_received_dropped_total",
        "Number of received frames dropped",
    ),
    (
        "rx_errors",
        "node_ethtool_received_errors_total",
        "Number of received frames with errors",
    ),
    (
        "rx_packets",
        "node_ethtool_received_packets_total",
        "Network interface packets received",
    ),
    (
        "tx_bytes",
        "node_ethtool_transmitted_bytes_total",
        "Network interface bytes sent",
    ),
    (
        "tx_errors",
        "node_ethtool_transmitted_errors_total",
        "Number of sent frames with errors",
    ),
    (
        "tx_packets",
        "node_ethtool_transmitted_packets_total",
        "Network interface packets sent",
    ),
];

/// Link-mode bits node_exporter reports as speeds, as (bit, Mb/s, duplex, PHY). Only bits
/// below 32 can match (the legacy masks are 32 bits).
const SPEEDS: [(u32, u32, &str, &str); 22] = [
    (0, 10, "half", "T"),
    (1, 10, "full", "T"),
    (2, 100, "half", "T"),
    (3, 100, "full", "T"),
    (4, 1000, "half", "T"),
    (5, 1000, "full", "T"),
    (12, 10000, "full", "T"),
    (17, 1000, "full", "KX"),
    (18, 10000, "full", "KX4"),
    (19, 10000, "full", "KR"),
    (20, 10000, "full", "R_FEC"),
    (21, 20000, "full", "MLD2"),
    (22, 20000, "full", "KR2"),
    (23, 40000, "full", "KR4"),
    (24, 40000, "full", "CR4"),
    (25, 40000, "full", "SR4"),
    (26, 40000, "full", "LR4"),
    (27, 56000, "full", "KR4"),
    (28, 56000, "full", "CR4"),
    (29, 56000, "full", "SR4"),
    (30, 56000, "full", "LR4"),
    (31, 25000, "full", "CR"),
];
const PORTS: [(u32, &str); 6] = [
    (7, "TP"),
    (8, "AUI"),
    (9, "MII"),
    (10, "FIBRE"),
    (11, "BNC"),
    (16, "Backplane"),
];
const AUTONEG_BIT: u32 = 6;
const PAUSE_BIT: u32 = 13;
const ASYM_PAUSE_BIT: u32 = 14;

/// The fixed families, by name; the statistics families are added as they are seen.
const INFO: &str = "node_ethtool_info";
const INFO_HELP: &str = "A metric with a constant '1' value labeled by bus_info, device, driver, expansion_rom_version, firmware_version, version.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixed {
    Info,
    SupportedPort,
    SupportedSpeed,
    SupportedAutoneg,
    SupportedPause,
    SupportedAsymPause,
    AdvertisedSpeed,
    AdvertisedAutoneg,
    AdvertisedPause,
    AdvertisedAsymPause,
    Autoneg,
}

const FIXED: [(Fixed, &str, &str); 11] = [
    (Fixed::Info, INFO, INFO_HELP),
    (
        Fixed::SupportedPort,
        "node_network_supported_port_info",
        "Type of ports or PHYs supported by network device",
    ),
    (
        Fixed::SupportedSpeed,
        "node_network_supported_speed_bytes",
        "Combination of speeds and features supported by network device",
    ),
    (
        Fixed::SupportedAutoneg,
        "node_network_autonegotiate_supported",
        "If this port device supports autonegotiate",
    ),
    (
        Fixed::SupportedPause,
        "node_network_pause_supported",
        "If this port device supports pause frames",
    ),
    (
        Fixed::SupportedAsymPause,
        "node_network_asymmetricpause_supported",
        "If this port device supports asymmetric pause frames",
    ),
    (
        Fixed::AdvertisedSpeed,
        "node_network_advertised_speed_bytes",
        "Combination of speeds and features offered by network device",
    ),
    (
        Fixed::AdvertisedAutoneg,
        "node_network_autonegotiate_advertised",
        "If this port device offers autonegotiate",
    ),
    (
        Fixed::AdvertisedPause,
        "node_network_pause_advertised",
        "If this port device offers pause capability",
    ),
    (
        Fixed::AdvertisedAsymPause,
        "node_network_asymmetricpause_advertised",
        "If this port device offers asymmetric pause capability",
    ),
    (
        Fixed::Autoneg,
        "node_network_autonegotiate",
        "If this port is using autonegotiate",
    ),
];

/// One family of the output: a fixed one or a statistic's.
struct FamilyDesc {
    name: String,
    help: String,
    fixed: Option<Fixed>,
}

/// node_exporter's SanitizeMetricName, then buildEthtoolFQName's lower-casing, trimming and
/// rx/tx renaming: (sanitised name, family name).
struct Namer {
    invalid: regex::Regex,
    rx: regex::Regex,
    tx: regex::Regex,
}

impl Namer {
    fn new() -> Self {
        let compile = |p: &str| regex::Regex::new(p).unwrap_or_else(|_| unreachable!("{p}"));
        Namer {
            invalid: compile(r"_*[^0-9A-Za-z_]+_*"),
            rx: compile(r"(^|_)rx(_|$)"),
            tx: compile(r"(^|_)tx(_|$)"),
        }
    }

    fn sanitize(&self, raw: &[u8]) -> String {
        let text = String::from_utf8_lossy(raw);
        self.invalid.replace_all(&text, "_").into_owned()
    }

    fn family_name(&self, sanitized: &str) -> String {
        let lower = sanitized.to_ascii_lowercase();
        let trimmed = lower.trim_start_matches('_');
        let renamed = self.rx.replace_all(trimmed, "${1}received${2}");
        let renamed = self.tx.replace_all(&renamed, "${1}transmitted${2}");
        if renamed.is_empty() {
            "node_ethtool".to_string()
        } else {
            format!("node_ethtool_{renamed}")
        }
    }
}

/// A device's statistics plan, valid while its string table is byte-for-byte the same.
#[derive(Default)]
struct StatPlan {
    strings: Vec<u8>,
    /// (index into the values, family id), one per reported statistic.
    entries: Vec<(u32, u32)>,
}

/// What one device reported this scrape.
struct DeviceData {
    name: Arc<str>,
    link: Option<LinkInfo>,
    info: Option<DriverInfo>,
}

struct EthtoolCollector {
    devices: DeviceFilter,
    metrics: Option<regex::Regex>,
    source: Box<dyn EthtoolSource>,
    listing: DirListing,
    namer: Option<Namer>,
    families: Vec<FamilyDesc>,
    by_name: HashMap<String, u32>,
    /// Rank of each family by name; recomputed when a family is added.
    ranks: Vec<u32>,
    plans: HashMap<Arc<str>, StatPlan>,
    strings: Vec<u8>,
    values: Vec<u64>,
    data: Vec<DeviceData>,
    /// (family id, until [`EthtoolCollector::write`] makes it the family's rank; device
    /// position; value) of this scrape's statistics.
    stat_samples: Vec<(u32, u32, u64)>,
    /// Scratch for a changed string table: names by raw string.
    scratch: HashMap<Vec<u8>, (usize, String)>,
}

fn log_error(what: &str, device: &str, e: &io::Error) {
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        tracing::debug!(device, error = %e, "ethtool {what} error");
    } else {
        tracing::warn!(device, error = %e, "ethtool {what} error");
    }
}

impl EthtoolCollector {
    fn new(
        devices: DeviceFilter,
        metrics: Option<regex::Regex>,
        source: Box<dyn EthtoolSource>,
    ) -> Self {
        let mut collector = EthtoolCollector {
            devices,
            metrics,
            source,
            listing: DirListing::default(),
            namer: None,
            families: Vec::new(),
            by_name: HashMap::new(),
            ranks: Vec::new(),
            plans: HashMap::new(),
            strings: Vec::new(),
            values: Vec::new(),
            data: Vec::new(),
            stat_samples: Vec::new(),
            scratch: HashMap::new(),
        };
        for (fixed, name, help) in FIXED {
            collector.add_family(name.to_string(), help.to_string(), Some(fixed));
        }
        collector
    }

    fn add_family(&mut self, name: String, help: String, fixed: Option<Fixed>) -> u32 {
        if let Some(&id) = self.by_name.get(&name) {
            return id;
        }
        let id = self.families.len() as u32;
        self.by_name.insert(name.clone(), id);
        self.families.push(FamilyDesc { name, help, fixed });
        let mut order: Vec<u32> = (0..self.families.len() as u32).collect();
        order.sort_by(|&a, &b| {
            self.families[a as usize]
                .name
                .cmp(&self.families[b as usize].name)
        });
        self.ranks = vec![0; order.len()];
        for (rank, id) in order.into_iter().enumerate() {
            self.ranks[id as usize] = rank as u32;
        }
        id
    }

    /// Rebuilds `device`'s plan from the string table in `self.strings`.
    fn plan(&mut self, device: &Arc<str>) {
        let namer = self.namer.get_or_insert_with(Namer::new);
        // Go's map[string]uint64: the last value of a repeated name wins; empty names are
        // skipped.
        self.scratch.clear();
        for (index, raw) in stat_names(&self.strings).enumerate() {
            if !raw.is_empty() {
                self.scratch.insert(raw.to_vec(), (index, String::new()));
            }
        }
        // Sanitise, filter, and group by family name: a family name reached from two different
        // statistics is dropped altogether.
        let mut by_family: HashMap<String, Option<(usize, String)>> = HashMap::new();
        for (raw, (index, _)) in &self.scratch {
            let sanitized = namer.sanitize(raw);
            if self
                .metrics
                .as_ref()
                .is_some_and(|m| !m.is_match(&sanitized))
            {
                continue;
            }
            let family = namer.family_name(&sanitized);
            by_family
                .entry(family)
                .and_modify(|slot| *slot = None)
                .or_insert(Some((*index, sanitized)));
        }
        let mut entries = Vec::new();
        for (family, kept) in by_family {
            let Some((index, sanitized)) = kept else {
                tracing::debug!(device = &**device, family, "dropping duplicate metric name");
                continue;
            };
            let (name, help) = match PREDECLARED.iter().find(|(key, _, _)| *key == sanitized) {
                Some((_, name, help)) => (name.to_string(), help.to_string()),
                None => (family, format!("Network interface {sanitized}")),
            };
            if let Some(&id) = self.by_name.get(&name)
                && self.families[id as usize].fixed.is_some()
            {
                continue; // a statistic named like a fixed family: not reported
            }
            let id = self.add_family(name, help, None);
            entries.push((index as u32, id));
        }
        let plan = self.plans.entry(device.clone()).or_default();
        plan.strings.clear();
        plan.strings.extend_from_slice(&self.strings);
        plan.entries = entries;
    }

    fn collect_device(&mut self, name: &Arc<str>) {
        let position = self.data.len() as u32;
        let link = match self.source.link_info(name) {
            Ok(link) => Some(link),
            Err(e) => {
                log_error("link info", name, &e);
                None
            }
        };
        let info = match self.source.driver_info(name) {
            Ok(info) => Some(info),
            Err(e) => {
                log_error("driver info", name, &e);
                None
            }
        };
        if let Some(info) = &info {
            match self
                .source
                .stats(name, info, &mut self.strings, &mut self.values)
            {
                Ok(()) => {
                    let fresh = self
                        .plans
                        .get(name)
                        .is_some_and(|p| p.strings == self.strings);
                    if !fresh {
                        self.plan(name);
                    }
                    if let Some(plan) = self.plans.get(name) {
                        for &(index, id) in &plan.entries {
                            if let Some(&value) = self.values.get(index as usize) {
                                self.stat_samples.push((id, position, value));
                            }
                        }
                    }
                }
                Err(e) => log_error("stats", name, &e),
            }
        }
        self.data.push(DeviceData {
            name: name.clone(),
            link,
            info,
        });
    }

    fn write(&mut self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        // Families may have been added during this scrape: ranks are taken now.
        for sample in &mut self.stat_samples {
            sample.0 = self.ranks[sample.0 as usize];
        }
        self.stat_samples.sort_unstable();
        let mut order: Vec<u32> = (0..self.families.len() as u32).collect();
        order.sort_by_key(|&id| self.ranks[id as usize]);
        let mut stats = self.stat_samples.iter().peekable();
        for id in order {
            let desc = &self.families[id as usize];
            let rank = self.ranks[id as usize];
            match desc.fixed {
                None => {
                    if stats.peek().is_none_or(|s| s.0 != rank) {
                        continue;
                    }
                    let mut f = out.family(&desc.name, &desc.help, Kind::Untyped)?;
                    while let Some(&&(r, device, value)) = stats.peek()
                        && r == rank
                    {
                        let device = &self.data[device as usize].name;
                        f.sample(&[("device", device)], value as f64)?;
                        stats.next();
                    }
                }
                Some(fixed) => write_fixed(out, desc, fixed, &self.data)?,
            }
        }
        Ok(())
    }
}

fn bit(mask: u32, bit: u32) -> bool {
    mask & (1 << bit) != 0
}

/// Speeds sorted by their labels (duplex, then mode), with the mode label formatted.
fn speed_labels() -> Vec<(u32, f64, &'static str, String)> {
    let mut speeds: Vec<_> = SPEEDS
        .iter()
        .map(|&(bit, mbps, duplex, phy)| {
            (
                bit,
                f64::from(mbps) * 1_000_000.0 / 8.0,
                duplex,
                format!("{mbps}base{phy}"),
            )
        })
        .collect();
    speeds.sort_by(|a, b| (a.2, &a.3).cmp(&(b.2, &b.3)));
    speeds
}

fn write_fixed(
    out: &mut MetricWriter<'_, '_>,
    desc: &FamilyDesc,
    fixed: Fixed,
    data: &[DeviceData],
) -> Result<(), CollectorError> {
    let links = || data.iter().filter_map(|d| Some((&*d.name, d.link?)));
    match fixed {
        Fixed::Info => {
            let mut infos: Vec<_> = data
                .iter()
                .filter_map(|d| Some((&*d.name, d.info.as_ref()?)))
                .collect();
            if infos.is_empty() {
                return Ok(());
            }
            // Go sorts a family's samples by their label values, in label-name order.
            infos.sort_by(|a, b| {
                (&a.1.bus_info, a.0, &a.1.driver, &a.1.erom_version)
                    .cmp(&(&b.1.bus_info, b.0, &b.1.driver, &b.1.erom_version))
                    .then_with(|| {
                        (&a.1.fw_version, &a.1.version).cmp(&(&b.1.fw_version, &b.1.version))
                    })
            });
            let mut f = out.family(&desc.name, &desc.help, Kind::Gauge)?;
            for (device, info) in infos {
                f.sample(
                    &[
                        ("bus_info", &info.bus_info),
                        ("device", device),
                        ("driver", &info.driver),
                        ("expansion_rom_version", &info.erom_version),
                        ("firmware_version", &info.fw_version),
                        ("version", &info.version),
                    ],
                    1.0,
                )?;
            }
        }
        Fixed::SupportedPort => {
            let mut ports = PORTS;
            ports.sort_by_key(|p| p.1);
            if !links().any(|(_, l)| ports.iter().any(|p| bit(l.supported, p.0))) {
                return Ok(());
            }
            let mut f = out.family(&desc.name, &desc.help, Kind::Gauge)?;
            for (device, link) in links() {
                for (b, kind) in ports {
                    if bit(link.supported, b) {
                        f.sample(&[("device", device), ("type", kind)], 1.0)?;
                    }
                }
            }
        }
        Fixed::SupportedSpeed | Fixed::AdvertisedSpeed => {
            let mask = |l: &LinkInfo| {
                if fixed == Fixed::SupportedSpeed {
                    l.supported
                } else {
                    l.advertising
                }
            };
            let speeds = speed_labels();
            if !links().any(|(_, l)| speeds.iter().any(|s| bit(mask(&l), s.0))) {
                return Ok(());
            }
            let mut f = out.family(&desc.name, &desc.help, Kind::Gauge)?;
            for (device, link) in links() {
                for (b, value, duplex, mode) in &speeds {
                    if bit(mask(&link), *b) {
                        f.sample(
                            &[("device", device), ("duplex", duplex), ("mode", mode)],
                            *value,
                        )?;
                    }
                }
            }
        }
        _ => {
            if links().next().is_none() {
                return Ok(());
            }
            let value = |l: &LinkInfo| -> f64 {
                let flag = match fixed {
                    Fixed::SupportedAutoneg => bit(l.supported, AUTONEG_BIT),
                    Fixed::SupportedPause => bit(l.supported, PAUSE_BIT),
                    Fixed::SupportedAsymPause => bit(l.supported, ASYM_PAUSE_BIT),
                    Fixed::AdvertisedAutoneg => bit(l.advertising, AUTONEG_BIT),
                    Fixed::AdvertisedPause => bit(l.advertising, PAUSE_BIT),
                    Fixed::AdvertisedAsymPause => bit(l.advertising, ASYM_PAUSE_BIT),
                    _ => return f64::from(l.autoneg),
                };
                if flag { 1.0 } else { 0.0 }
            };
            let mut f = out.family(&desc.name, &desc.help, Kind::Gauge)?;
            for (device, link) in links() {
                f.sample(&[("device", device)], value(&link))?;
            }
        }
    }
    Ok(())
}

impl Collector for EthtoolCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let dir = ctx.paths.sys("class/net");
        // procfs's NetClassDevices: every entry but regular files (bonding_masters).
        let names = match self
            .listing
            .names(ctx, &dir, |e| e.file_type().map_or(true, |t| !t.is_file()))
        {
            Ok(Some(names)) => names,
            Ok(None) => return Err(CollectorError::NoData),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(CollectorError::NoData);
            }
            Err(e) => return Err(CollectorError::io(&dir, e)),
        };
        if names.is_empty() {
            return Err(CollectorError::Parse {
                path: dir,
                reason: "no network devices found".into(),
            });
        }
        self.data.clear();
        self.stat_samples.clear();
        for name in names.iter() {
            if self.devices.ignored(name) {
                continue;
            }
            let name: Arc<str> = match self.plans.get_key_value(name.as_str()) {
                Some((key, _)) => key.clone(),
                None => Arc::from(name.as_str()),
            };
            self.collect_device(&name);
        }
        // Forget devices that are gone.
        if self.plans.len() > self.data.len() {
            let present = &self.data;
            self.plans
                .retain(|name, _| present.iter().any(|d| d.name == *name));
        }
        self.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, fixture, render};

    /// An `ethtool_cmd` as the kernel fills it for GSET.
    fn cmd_bytes(supported: u32, advertising: u32, speed: u32, autoneg: u8) -> [u8; 44] {
        let mut b = [0u8; 44];
        b[0..4].copy_from_slice(&ETHTOOL_GSET.to_ne_bytes());
        b[4..8].copy_from_slice(&supported.to_ne_bytes());
        b[8..12].copy_from_slice(&advertising.to_ne_bytes());
        b[12..14].copy_from_slice(&(speed as u16).to_ne_bytes());
        b[14] = 1; // DUPLEX_FULL
        b[15] = 3; // PORT_FIBRE
        b[18] = autoneg;
        b[28..30].copy_from_slice(&((speed >> 16) as u16).to_ne_bytes());
        b
    }

    fn put_str(b: &mut [u8], at: usize, s: &str) {
        b[at..at + s.len()].copy_from_slice(s.as_bytes());
    }

    /// An `ethtool_drvinfo`.
    fn drvinfo_bytes(driver: &str, version: &str, fw: &str, bus: &str, n_stats: u32) -> [u8; 196] {
        let mut b = [0u8; 196];
        b[0..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
        put_str(&mut b, 4, driver);
        put_str(&mut b, 36, version);
        put_str(&mut b, 68, fw);
        put_str(&mut b, 100, bus);
        b[180..184].copy_from_slice(&n_stats.to_ne_bytes());
        b
    }

    /// The data of an `ETHTOOL_GSTRINGS` answer.
    fn gstrings(names: &[&str]) -> Vec<u8> {
        let mut data = vec![0u8; names.len() * ETH_GSTRING_LEN];
        for (i, name) in names.iter().enumerate() {
            // A full 32-byte name has no NUL.
            let n = name.len().min(ETH_GSTRING_LEN);
            data[i * ETH_GSTRING_LEN..i * ETH_GSTRING_LEN + n]
                .copy_from_slice(&name.as_bytes()[..n]);
        }
        data
    }

    struct FakeDevice {
        cmd: Option<[u8; 44]>,
        drvinfo: Option<[u8; 196]>,
        strings: Vec<u8>,
        values: Vec<u64>,
    }

    #[derive(Default)]
    struct Fake {
        devices: HashMap<String, FakeDevice>,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    fn unsupported() -> io::Error {
        io::Error::from_raw_os_error(libc::EOPNOTSUPP)
    }

    impl EthtoolSource for Fake {
        fn link_info(&mut self, device: &str) -> io::Result<LinkInfo> {
            let d = self.devices.get(device).ok_or_else(unsupported)?;
            d.cmd.as_ref().map(parse_link_info).ok_or_else(unsupported)
        }
        fn driver_info(&mut self, device: &str) -> io::Result<DriverInfo> {
            let d = self.devices.get(device).ok_or_else(unsupported)?;
            d.drvinfo
                .as_ref()
                .map(parse_driver_info)
                .ok_or_else(unsupported)
        }
        fn stats(
            &mut self,
            device: &str,
            _: &DriverInfo,
            strings: &mut Vec<u8>,
            values: &mut Vec<u64>,
        ) -> io::Result<()> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let d = self.devices.get(device).ok_or_else(unsupported)?;
            strings.clear();
            strings.extend_from_slice(&d.strings);
            values.clear();
            values.extend_from_slice(&d.values);
            Ok(())
        }
    }

    const MLX5_STATS: &[&str] = &[
        "rx_packets",
        "rx_bytes",
        "tx_packets",
        "tx_bytes",
        "tx_tso_packets",
        "rx_csum_complete",
        "rx_out_of_buffer",
        "rx_vport_unicast_packets",
        "tx_vport_multicast_bytes",
        "rx_pause_ctrl_phy",
        "ch0_events",
        "rx0_packets",
        "tx0_xmit_more",
        "module_unplug",
        // Two names that collide after lower-casing: both dropped.
        "RX_steer_missed",
        "rx_steer_missed",
        // A name that needs sanitising, and one repeated (the last value wins).
        "rx-discards.phy",
        "tx_errors",
        "tx_errors",
    ];

    const IXGBE_STATS: &[&str] = &[
        "rx_packets",
        "tx_packets",
        "rx_bytes",
        "tx_bytes",
        "rx_errors",
        "tx_errors",
        "rx_dropped",
        "tx_dropped",
        "multicast",
        "collisions",
        "rx_crc_errors",
        "fdir_match",
        "tx_queue_0_packets",
        "rx_queue_0_bytes",
        "os2bmc_rx_by_bmc",
        "rx_pb_0_pxon",
        "",
    ];

    fn fake() -> Fake {
        let mut devices = HashMap::new();
        // ConnectX-4 Lx, 25G DAC: FIBRE, autoneg, pause; 1G KX, 10G KR, 40G CR4, 25G CR.
        let bits = |bits: &[u32]| bits.iter().fold(0u32, |m, b| m | 1 << b);
        let mlx_supported = bits(&[6, 10, 13, 17, 19, 24, 31]);
        let mlx_advertised = bits(&[6, 10, 17, 19, 31]);
        devices.insert(
            "enp65s0f0np0".to_string(),
            FakeDevice {
                cmd: Some(cmd_bytes(mlx_supported, mlx_advertised, 25000, 1)),
                drvinfo: Some(drvinfo_bytes(
                    "mlx5_core",
                    "6.8.0-45-generic",
                    "14.32.1010 (MT_2420110034)",
                    "0000:41:00.0",
                    MLX5_STATS.len() as u32,
                )),
                strings: gstrings(MLX5_STATS),
                values: (0..MLX5_STATS.len() as u64).map(|i| 1000 + i).collect(),
            },
        );
        // X550 10GBASE-T.
        devices.insert(
            "eno1".to_string(),
            FakeDevice {
                cmd: Some(cmd_bytes(
                    bits(&[3, 5, 6, 7, 12, 13]),
                    bits(&[3, 5, 6, 7, 12]),
                    10000,
                    1,
                )),
                drvinfo: Some(drvinfo_bytes(
                    "ixgbe",
                    "6.8.0",
                    "0x80000aee, 1.1876.0",
                    "0000:03:00.0",
                    IXGBE_STATS.len() as u32,
                )),
                strings: gstrings(IXGBE_STATS),
                values: (0..IXGBE_STATS.len() as u64).map(|i| 7 * i).collect(),
            },
        );
        // A bridge: driver info, no link settings, no statistics.
        devices.insert(
            "br0".to_string(),
            FakeDevice {
                cmd: None,
                drvinfo: Some(drvinfo_bytes("bridge", "2.3", "N/A", "N/A", 0)),
                strings: Vec::new(),
                values: Vec::new(),
            },
        );
        Fake {
            devices,
            ..Fake::default()
        }
    }

    /// A sysfs tree listing these devices under class/net (and bonding_masters, a file).
    fn sys_tree(devices: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("class/net");
        std::fs::create_dir_all(&net).unwrap();
        for d in devices {
            std::fs::create_dir(net.join(d)).unwrap();
        }
        std::fs::write(net.join("bonding_masters"), "").unwrap();
        dir
    }

    fn paths(sys: &std::path::Path) -> Paths {
        Paths {
            sysfs: sys.to_path_buf(),
            ..Paths::default()
        }
    }

    fn collector(source: Fake, args: (Option<&str>, Option<&str>, &str)) -> Box<dyn Collector> {
        let re = |p: &str| regex::Regex::new(p).unwrap();
        Box::new(EthtoolCollector::new(
            DeviceFilter {
                exclude: args.1.map(re),
                include: args.0.map(re),
            },
            Some(re(args.2)),
            Box::new(source),
        ))
    }

    #[test]
    fn decodes_uapi_structures() {
        let link = parse_link_info(&cmd_bytes(0x8000_00ff, 0x40, 25000, 1));
        assert_eq!(
            link,
            LinkInfo {
                supported: 0x8000_00ff,
                advertising: 0x40,
                autoneg: 1
            }
        );
        let mut raw = drvinfo_bytes("veth", "1.0", "", "", 3);
        // A driver string filling its whole field has no NUL.
        put_str(&mut raw, 100, &"b".repeat(32));
        let info = parse_driver_info(&raw);
        assert_eq!(info.driver, "veth");
        assert_eq!(info.version, "1.0");
        assert_eq!(info.bus_info, "b".repeat(32));
        assert_eq!(info.n_stats, 3);
        let data = gstrings(&["peer_ifindex", "", &"x".repeat(32)]);
        let names: Vec<&[u8]> = stat_names(&data).collect();
        assert_eq!(
            names,
            [&b"peer_ifindex"[..], b"", "x".repeat(32).as_bytes()]
        );
    }

    #[test]
    fn names_as_node_exporter() {
        let namer = Namer::new();
        let full = |raw: &str| namer.family_name(&namer.sanitize(raw.as_bytes()));
        assert_eq!(namer.sanitize(b"rx-discards.phy"), "rx_discards_phy");
        assert_eq!(namer.sanitize(b"a__-__b"), "a_b");
        assert_eq!(namer.sanitize(b"a-_-b"), "a__b");
        assert_eq!(
            full("rx_queue_0_xdp_packets"),
            "node_ethtool_received_queue_0_xdp_packets"
        );
        assert_eq!(full("tx0_xmit_more"), "node_ethtool_tx0_xmit_more");
        assert_eq!(full("__Rx_TX"), "node_ethtool_received_transmitted");
        assert_eq!(full("rx_rx_x"), "node_ethtool_received_rx_x");
        assert_eq!(full("-"), "node_ethtool");
    }

    #[test]
    fn renders_fake_nics_golden() {
        let sys = sys_tree(&["br0", "eno1", "enp65s0f0np0", "lo"]);
        let text = render(
            "ethtool",
            collector(fake(), (None, None, ".*")),
            paths(sys.path()),
        );
        assert_golden(&fixture("hw-netlink/golden/ethtool.prom"), &text);
    }

    #[test]
    fn filters_devices_and_metrics() {
        let sys = sys_tree(&["br0", "eno1", "enp65s0f0np0"]);
        let text = render(
            "ethtool",
            collector(fake(), (Some("^en"), Some("np0$"), "^rx_")),
            paths(sys.path()),
        );
        assert!(
            text.contains("node_ethtool_received_crc_errors{device=\"eno1\"} 70\n"),
            "{text}"
        );
        assert!(!text.contains("enp65s0f0np0"), "{text}");
        assert!(!text.contains("br0"), "{text}");
        assert!(!text.contains("multicast"), "{text}");
        // The link families are not statistics: not filtered.
        assert!(
            text.contains("node_network_autonegotiate{device=\"eno1\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn no_sysfs_is_no_data_and_empty_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "ethtool",
            collector(fake(), (None, None, ".*")),
            paths(dir.path()),
        );
        assert!(
            text.contains("node_scrape_collector_success{collector=\"ethtool\"} 0"),
            "{text}"
        );
        let empty = sys_tree(&[]);
        std::fs::remove_file(empty.path().join("class/net/bonding_masters")).unwrap();
        let text = render(
            "ethtool",
            collector(fake(), (None, None, ".*")),
            paths(empty.path()),
        );
        assert!(
            text.contains("node_scrape_collector_success{collector=\"ethtool\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn changed_string_tables_are_replanned() {
        let sys = sys_tree(&["eno1"]);
        let mut c = EthtoolCollector::new(DeviceFilter::default(), None, Box::new(fake()));
        let malformed = std::sync::atomic::AtomicU64::new(0);
        let p = paths(sys.path());
        let ctx = Context::new(&p, &malformed);
        c.data.clear();
        c.stat_samples.clear();
        let eno1: Arc<str> = Arc::from("eno1");
        c.collect_device(&eno1);
        let first = c.stat_samples.len();
        assert_eq!(first, 16);
        // The driver renames its statistics (same count): the new names are used.
        c.source = Box::new({
            let mut f = fake();
            let d = f.devices.get_mut("eno1").unwrap();
            d.strings = gstrings(
                &IXGBE_STATS
                    .iter()
                    .map(|s| if *s == "fdir_match" { "fdir_miss" } else { s })
                    .collect::<Vec<_>>(),
            );
            f
        });
        c.data.clear();
        c.stat_samples.clear();
        c.collect_device(&eno1);
        assert!(c.by_name.contains_key("node_ethtool_fdir_miss"));
        drop(ctx);
    }

    #[test]
    fn veth_in_a_namespace() {
        let Some(text) = crate::collector::netlink::test_netns::run(
            &[
                "ip link add nwa0 type veth peer name nwb0",
                "ip link set nwa0 up",
                "ip link set nwb0 up",
            ],
            |sys| {
                let registration = &REGISTRATION;
                let p = paths(sys);
                let c = crate::collector::testing::build_with(
                    registration,
                    &[
                        "--collector.ethtool",
                        "--collector.ethtool.device-exclude=^nwb",
                    ],
                    &p,
                );
                render("ethtool", c, p)
            },
        ) else {
            return;
        };
        assert!(
            text.contains("node_scrape_collector_success{collector=\"ethtool\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("node_ethtool_info{bus_info=\"\",device=\"nwa0\",driver=\"veth\",expansion_rom_version=\"\",firmware_version=\"\",version=\"1.0\"} 1\n"),
            "{text}"
        );
        // lo answers nothing but EOPNOTSUPP; the excluded peer is not asked.
        assert!(!text.contains("device=\"lo\""), "{text}");
        assert!(!text.contains("nwb0"), "{text}");
        // veth's own statistic: its peer's ifindex (lo is 1, the pair 2 and 3).
        assert!(
            text.contains("# TYPE node_ethtool_peer_ifindex untyped\n"),
            "{text}"
        );
        assert!(
            text.contains("node_ethtool_peer_ifindex{device=\"nwa0\"} 2\n"),
            "{text}"
        );
        // Per-queue statistics, renamed.
        assert!(
            text.contains("node_ethtool_received_queue_0_xdp_packets{device=\"nwa0\"} "),
            "{text}"
        );
        // veth reports settings with no link modes and autoneg off.
        assert!(
            text.contains("node_network_autonegotiate{device=\"nwa0\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("node_network_pause_supported{device=\"nwa0\"} 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("node_network_supported_speed_bytes"),
            "{text}"
        );
    }
}
