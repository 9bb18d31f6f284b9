//! `netdev`: per-interface traffic counters, named as node_exporter 1.5 names them.
//!
//! node_exporter 1.5 reads them over netlink (`IFLA_STATS64`) and folds the detailed error
//! counters into the legacy /proc/net/dev columns; the kernel computes /proc/net/dev from the
//! very same `rtnl_link_stats64` with the same folding, so this collector reads /proc/net/dev and
//! adds the one counter netlink has beyond it, `rx_nohandler`, from sysfs.
//! With `--collector.netdev.netlink=false` it behaves like node_exporter's /proc/net/dev mode
//! (no `receive_nohandler`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Arg;

use super::filter::{DeviceFilter, device_filter};
use super::flags::{add_bool_flag, bool_flag};
use super::netlink;
use super::source::read_into;
use super::source::read_sys_file;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "netdev",
    default_enabled: true,
    flags,
    build,
};

const DEVICE_INCLUDE: &str = "collector.netdev.device-include";
const OLD_DEVICE_INCLUDE: &str = "collector.netdev.device-whitelist";
const DEVICE_EXCLUDE: &str = "collector.netdev.device-exclude";
const OLD_DEVICE_EXCLUDE: &str = "collector.netdev.device-blacklist";
const ADDRESS_INFO: &str = "collector.netdev.address-info";
const NETLINK: &str = "collector.netdev.netlink";
const DETAILED: &str = "collector.netdev.enable-detailed-metrics";
const LABEL_IFALIAS: &str = "collector.netdev.label-ifalias";

fn flags(command: clap::Command) -> clap::Command {
    let command = command
        .arg(
            Arg::new(DEVICE_INCLUDE)
                .long(DEVICE_INCLUDE)
                .help("Regexp of net devices to include (mutually exclusive to device-exclude)."),
        )
        .arg(
            Arg::new(OLD_DEVICE_INCLUDE)
                .long(OLD_DEVICE_INCLUDE)
                .hide(true)
                .help("DEPRECATED: Use collector.netdev.device-include"),
        )
        .arg(
            Arg::new(DEVICE_EXCLUDE)
                .long(DEVICE_EXCLUDE)
                .help("Regexp of net devices to exclude (mutually exclusive to device-include)."),
        )
        .arg(
            Arg::new(OLD_DEVICE_EXCLUDE)
                .long(OLD_DEVICE_EXCLUDE)
                .hide(true)
                .help("DEPRECATED: Use collector.netdev.device-exclude"),
        );
    let command = add_bool_flag(
        command,
        ADDRESS_INFO,
        false,
        "Collect address-info for every device",
    );
    let command = add_bool_flag(
        command,
        NETLINK,
        true,
        "Use netlink to gather stats instead of /proc/net/dev.",
    );
    let command = add_bool_flag(command, LABEL_IFALIAS, false, "Add ifAlias label");
    add_bool_flag(
        command,
        DETAILED,
        false,
        "Use (incompatible) metric names that provide more detailed stats on Linux",
    )
}
fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let filter = device_filter(
        ctx,
        DEVICE_EXCLUDE,
        Some(OLD_DEVICE_EXCLUDE),
        DEVICE_INCLUDE,
        Some(OLD_DEVICE_INCLUDE),
    )?;
    let netlink = bool_flag(ctx, NETLINK);
    let address_info = bool_flag(ctx, ADDRESS_INFO);
    let detailed = bool_flag(ctx, DETAILED);
    let label_ifalias = bool_flag(ctx, LABEL_IFALIAS);
    let mut collector = NetdevCollector::new(filter, netlink, address_info, detailed);
    collector.label_ifalias = label_ifalias;
    Ok(Box::new(collector))
}

/// The /proc/net/dev columns, in order, with node_exporter's family names.
const COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// One interface's line of /proc/net/dev.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDevLine<'a> {
    pub name: &'a str,
    pub values: [u64; 16],
}

/// Parses a /proc/net/dev data line. The name is everything before the last `:` (names may hold
/// dots and dashes); the header lines and malformed lines give `None`.
pub fn parse_netdev_line(line: &str) -> Option<NetDevLine<'_>> {
    let (name, rest) = line.rsplit_once(':')?;
    let name = name.trim();
    if name.is_empty() || name.contains('|') {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let mut values = [0u64; 16];
    for v in &mut values {
        *v = fields.next()?.parse().ok()?;
    }
    Some(NetDevLine { name, values })
}

struct Device {
    name: String,
    /// The interface's alias, with `--collector.netdev.label-ifalias` (else empty, unused).
    ifalias: String,
    values: [u64; 16],
    nohandler: u64,
    /// The unfolded counters, when read over netlink (for the detailed metrics).
    raw: Option<[u64; netlink::STATS64_FIELDS]>,
}

/// `--collector.netdev.enable-detailed-metrics` names over netlink, in `rtnl_link_stats64` order.
const DETAILED_NETLINK: [&str; netlink::STATS64_FIELDS] = [
    "receive_packets",
    "transmit_packets",
    "receive_bytes",
    "transmit_bytes",
    "receive_errors",
    "transmit_errors",
    "receive_dropped",
    "transmit_dropped",
    "multicast",
    "collisions",
    "receive_length_errors",
    "receive_over_errors",
    "receive_crc_errors",
    "receive_frame_errors",
    "receive_fifo_errors",
    "receive_missed_errors",
    "transmit_aborted_errors",
    "transmit_carrier_errors",
    "transmit_fifo_errors",
    "transmit_heartbeat_errors",
    "transmit_window_errors",
    "receive_compressed",
    "transmit_compressed",
    "receive_nohandler",
];

/// The detailed names of the /proc/net/dev columns (COLUMNS order).
const DETAILED_PROC: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errors",
    "receive_dropped",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errors",
    "transmit_dropped",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

struct NetdevCollector {
    filter: DeviceFilter,
    netlink: bool,
    address_info: bool,
    detailed: bool,
    text: String,
    attr: String,
    attr_path: PathBuf,
    devices: Vec<Device>,
    names: Vec<String>,
    help: String,
    /// Off in fixture tests, which exercise the /proc/net/dev fallback of netlink mode.
    try_socket: bool,
    /// `--collector.netdev.label-ifalias`: an `ifalias` label on every sample.
    label_ifalias: bool,
}

impl NetdevCollector {
    fn new(filter: DeviceFilter, netlink: bool, address_info: bool, detailed: bool) -> Self {
        let mut names: Vec<String> = COLUMNS
            .iter()
            .map(|c| format!("node_network_{c}_total"))
            .collect();
        names.push("node_network_receive_nohandler_total".into());
        NetdevCollector {
            filter,
            netlink,
            address_info,
            detailed,
            text: String::new(),
            attr: String::new(),
            attr_path: PathBuf::new(),
            devices: Vec::new(),
            names,
            help: String::new(),
            try_socket: true,
            label_ifalias: false,
        }
    }
}

impl Collector for NetdevCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.devices.clear();
        let from_netlink = self.netlink && self.try_socket && self.read_netlink(ctx);
        if !from_netlink {
            self.read_proc(ctx)?;
        }
        self.write(out)?;
        if self.address_info {
            write_address_info(out)?;
        }
        Ok(())
    }
}

/// node_exporter's legacy names from `rtnl_link_stats64`, folded as /proc/net/dev folds them.
fn legacy_values(s: &[u64; netlink::STATS64_FIELDS]) -> [u64; 16] {
    use netlink::*;
    let sum = |fields: &[usize]| fields.iter().fold(0u64, |acc, &f| acc.wrapping_add(s[f]));
    [
        s[RX_BYTES],
        s[RX_PACKETS],
        s[RX_ERRORS],
        sum(&[RX_DROPPED, RX_MISSED_ERRORS]),
        s[RX_FIFO_ERRORS],
        sum(&[
            RX_FRAME_ERRORS,
            RX_LENGTH_ERRORS,
            RX_OVER_ERRORS,
            RX_CRC_ERRORS,
        ]),
        s[RX_COMPRESSED],
        s[MULTICAST],
        s[TX_BYTES],
        s[TX_PACKETS],
        s[TX_ERRORS],
        s[TX_DROPPED],
        s[TX_FIFO_ERRORS],
        s[COLLISIONS],
        sum(&[
            TX_CARRIER_ERRORS,
            TX_ABORTED_ERRORS,
            TX_HEARTBEAT_ERRORS,
            TX_WINDOW_ERRORS,
        ]),
        s[TX_COMPRESSED],
    ]
}

impl NetdevCollector {
    /// The counters over rtnetlink, as node_exporter 1.5 reads them by default. `false` (and
    /// /proc/net/dev is used) when netlink is unavailable, e.g. under a seccomp filter.
    fn read_netlink(&mut self, ctx: &Context<'_>) -> bool {
        let Some(links) = ctx.links() else {
            return false;
        };
        for link in links {
            if self.filter.ignored(&link.name) {
                continue;
            }
            self.devices.push(Device {
                name: link.name.clone(),
                ifalias: match (self.label_ifalias, &link.ifalias) {
                    (true, Some(alias)) => alias.clone(),
                    _ => String::new(),
                },
                values: legacy_values(&link.stats),
                nohandler: link.stats[netlink::RX_NOHANDLER],
                raw: Some(link.stats),
            });
        }
        true
    }

    fn read_proc(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        let path = ctx.paths.proc("net/dev");
        read_into(&path, &mut self.text)?;
        for (index, line) in self.text.lines().enumerate() {
            // Two header lines.
            if index < 2 || line.trim().is_empty() {
                continue;
            }
            let Some(parsed) = parse_netdev_line(line) else {
                ctx.malformed(&path, line);
                continue;
            };
            if self.filter.ignored(parsed.name) {
                continue;
            }
            // A repeated interface would repeat its samples (text the scraper refuses): the
            // first line counts, as node_exporter's registry keeps the first.
            if self.devices.iter().any(|d| d.name == parsed.name) {
                ctx.malformed(&path, line);
                continue;
            }
            let mut nohandler = 0;
            if self.netlink {
                self.attr_path.clear();
                self.attr_path.push(&ctx.paths.sysfs);
                self.attr_path.push("class/net");
                self.attr_path.push(parsed.name);
                self.attr_path.push("statistics/rx_nohandler");
                if read_sys_file(&self.attr_path, &mut self.attr).is_ok() {
                    nohandler = self.attr.parse().unwrap_or(0);
                }
            }
            let mut ifalias = String::new();
            if self.label_ifalias {
                self.attr_path.clear();
                self.attr_path.push(&ctx.paths.sysfs);
                self.attr_path.push("class/net");
                self.attr_path.push(parsed.name);
                self.attr_path.push("ifalias");
                if read_sys_file(&self.attr_path, &mut self.attr).is_ok() {
                    ifalias.push_str(&self.attr);
                }
            }
            self.devices.push(Device {
                name: parsed.name.to_string(),
                ifalias,
                values: parsed.values,
                nohandler,
                raw: None,
            });
        }
        Ok(())
    }

    fn write(&mut self, out: &mut MetricWriter<'_, '_>) -> Result<(), std::fmt::Error> {
        if self.detailed {
            return self.write_detailed(out);
        }
        let columns = if self.netlink { 17 } else { 16 };
        for (i, name) in self.names.iter().enumerate().take(columns) {
            if self.devices.is_empty() {
                break;
            }
            let key = name
                .strip_prefix("node_network_")
                .and_then(|n| n.strip_suffix("_total"))
                .unwrap_or(name);
            self.help.clear();
            self.help.push_str("Network device statistic ");
            self.help.push_str(key);
            self.help.push('.');
            let mut family = out.family(name, &self.help, Kind::Counter)?;
            for d in &self.devices {
                let value = d.values.get(i).copied().unwrap_or(d.nohandler);
                sample(&mut family, self.label_ifalias, d, value as f64)?;
            }
        }
        Ok(())
    }
}

/// One device's sample: `device`, and `ifalias` with `--collector.netdev.label-ifalias`.
fn sample(
    family: &mut super::Family<'_>,
    label_ifalias: bool,
    d: &Device,
    value: f64,
) -> Result<(), std::fmt::Error> {
    if label_ifalias {
        family.sample(
            &[("device", d.name.as_str()), ("ifalias", d.ifalias.as_str())],
            value,
        )
    } else {
        family.sample(&[("device", d.name.as_str())], value)
    }
}

impl NetdevCollector {
    /// node_exporter's `--collector.netdev.enable-detailed-metrics` families: the counters
    /// unfolded, named after netlink's (or /proc/net/dev's) fields.
    fn write_detailed(&mut self, out: &mut MetricWriter<'_, '_>) -> Result<(), std::fmt::Error> {
        let Some(first) = self.devices.first() else {
            return Ok(());
        };
        let from_netlink = first.raw.is_some();
        let keys: &[&str] = if from_netlink {
            &DETAILED_NETLINK
        } else {
            &DETAILED_PROC
        };
        let mut name = String::new();
        for (i, key) in keys.iter().enumerate() {
            name.clear();
            name.push_str("node_network_");
            name.push_str(key);
            name.push_str("_total");
            self.help.clear();
            self.help.push_str("Network device statistic ");
            self.help.push_str(key);
            self.help.push('.');
            let mut family = out.family(&name, &self.help, Kind::Counter)?;
            for d in &self.devices {
                let value = match &d.raw {
                    Some(raw) => raw.get(i).copied(),
                    None => d.values.get(i).copied(),
                };
                if let Some(v) = value {
                    sample(&mut family, self.label_ifalias, d, v as f64)?;
                }
            }
        }
        Ok(())
    }
}

/// node_exporter's scope label for an address (Go's net.IP predicates).
pub fn scope(ip: IpAddr) -> &'static str {
    let link_local_unicast = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    };
    let interface_local_multicast = match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff01,
    };
    if ip.is_loopback() || link_local_unicast || link_local_multicast {
        return "link-local";
    }
    if interface_local_multicast {
        return "interface-local";
    }
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if !ip.is_unspecified() && !ip.is_multicast() && !broadcast {
        return "global";
    }
    ""
}

/// One address of an interface, as getifaddrs(3) reports it.
struct Address {
    device: String,
    address: String,
    netmask: String,
    scope: &'static str,
}

fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: getifaddrs hands out valid sockaddrs whose family says which struct they are.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

fn prefix_len(mask: Option<IpAddr>) -> u32 {
    match mask {
        Some(IpAddr::V4(m)) => u32::from(m).count_ones(),
        Some(IpAddr::V6(m)) => u128::from(m).count_ones(),
        None => 0,
    }
}

fn interface_addresses() -> std::io::Result<Vec<Address>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned, which stays valid until freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let Some(ip) = sockaddr_ip(entry.ifa_addr) else {
            continue;
        };
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        addresses.push(Address {
            device: name.to_string_lossy().into_owned(),
            address: ip.to_string(),
            netmask: prefix_len(sockaddr_ip(entry.ifa_netmask)).to_string(),
            scope: scope(ip),
        });
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(addresses)
}

fn write_address_info(out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
    let addresses = interface_addresses().map_err(|e| CollectorError::Parse {
        path: "getifaddrs".into(),
        reason: format!("could not get network interfaces: {e}"),
    })?;
    if addresses.is_empty() {
        return Ok(());
    }
    let mut family = out.family(
        "node_network_address_info",
        "node network address by device",
        Kind::Gauge,
    )?;
    for a in &addresses {
        family.sample(
            &[
                ("device", a.device.as_str()),
                ("address", a.address.as_str()),
                ("netmask", a.netmask.as_str()),
                ("scope", a.scope),
            ],
            1.0,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, fixture, render};

    #[test]
    fn golden() {
        let root = fixture("basic");
        let mut collector = NetdevCollector::new(DeviceFilter::default(), true, false, false);
        collector.try_socket = false;
        let text = render("netdev", Box::new(collector), Paths::fixture(&root));
        assert_golden(&root.join("golden/netdev.prom"), &text);
    }

    #[test]
    fn odd_names_filters_and_proc_mode() {
        let root = fixture("odd");
        let filter = DeviceFilter {
            exclude: Some(regex::Regex::new("^lo$").unwrap()),
            include: None,
        };
        let text = render(
            "netdev",
            Box::new(NetdevCollector::new(filter, false, false, false)),
            Paths::fixture(&root),
        );
        for name in ["eth0.100", "br-lan", "veth-ab.c"] {
            assert!(
                text.contains(&format!(
                    "node_network_receive_bytes_total{{device=\"{name}\"}}"
                )),
                "{name} missing:\n{text}"
            );
        }
        assert!(!text.contains("device=\"lo\""));
        assert!(!text.contains("nohandler"));
        assert_golden(&root.join("golden/netdev.prom"), &text);
    }

    #[test]
    fn label_ifalias_adds_the_sysfs_alias() {
        let root = fixture("basic");
        let mut collector = NetdevCollector::new(DeviceFilter::default(), false, false, false);
        collector.label_ifalias = true;
        let text = render("netdev", Box::new(collector), Paths::fixture(&root));
        assert!(
            text.contains(
                "node_network_receive_bytes_total{device=\"eth0\",ifalias=\"uplink to core\"}"
            ),
            "{text}"
        );
        assert!(
            text.contains("node_network_receive_bytes_total{device=\"lo\",ifalias=\"\"}"),
            "{text}"
        );
    }

    #[test]
    fn line_forms() {
        let l = parse_netdev_line("veth-ab.c:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16").unwrap();
        assert_eq!(l.name, "veth-ab.c");
        assert_eq!(l.values[15], 16);
        assert_eq!(parse_netdev_line(" face |bytes    packets"), None);
        assert_eq!(parse_netdev_line("eth0: 1 2 3"), None);
        assert_eq!(
            parse_netdev_line("eth0: 1 2 x 4 5 6 7 8 9 10 11 12 13 14 15 16"),
            None
        );
    }

    #[test]
    fn scopes_match_go() {
        let s = |a: &str| scope(a.parse().unwrap());
        assert_eq!(s("127.0.0.1"), "link-local");
        assert_eq!(s("169.254.1.1"), "link-local");
        assert_eq!(s("10.0.0.1"), "global");
        assert_eq!(s("::1"), "link-local");
        assert_eq!(s("fe80::1"), "link-local");
        assert_eq!(s("ff02::1"), "link-local");
        assert_eq!(s("ff01::1"), "interface-local");
        assert_eq!(s("2001:db8::1"), "global");
        assert_eq!(s("ff05::1"), "");
        assert_eq!(s("0.0.0.0"), "");
    }

    #[test]
    fn address_info_lists_loopback() {
        let addresses = interface_addresses().unwrap();
        assert!(
            addresses
                .iter()
                .any(|a| a.address == "127.0.0.1" && a.netmask == "8" && a.scope == "link-local"),
            "no loopback address found"
        );
    }

    #[test]
    fn netlink_mode_reads_this_hosts_links() {
        let filter = DeviceFilter {
            exclude: None,
            include: Some(regex::Regex::new("^lo$").unwrap()),
        };
        let text = render(
            "netdev",
            Box::new(NetdevCollector::new(filter, true, false, false)),
            Paths::fixture(&fixture("odd")),
        );
        assert!(
            text.contains("node_network_receive_nohandler_total{device=\"lo\"}"),
            "{text}"
        );
        assert!(
            text.contains("node_network_transmit_colls_total{device=\"lo\"}"),
            "{text}"
        );
        assert!(
            !text.contains("eth0.100"),
            "read the fixture instead of netlink:\n{text}"
        );
    }

    #[test]
    fn legacy_folding_matches_proc_net_dev() {
        use netlink::*;
        let mut s = [0u64; STATS64_FIELDS];
        for (i, v) in s.iter_mut().enumerate() {
            *v = 1 << i;
        }
        let v = legacy_values(&s);
        assert_eq!(v[3], (1 << RX_DROPPED) + (1 << RX_MISSED_ERRORS));
        assert_eq!(
            v[5],
            (1 << RX_FRAME_ERRORS)
                + (1 << RX_LENGTH_ERRORS)
                + (1 << RX_OVER_ERRORS)
                + (1 << RX_CRC_ERRORS)
        );
        assert_eq!(
            v[14],
            (1 << TX_CARRIER_ERRORS)
                + (1 << TX_ABORTED_ERRORS)
                + (1 << TX_HEARTBEAT_ERRORS)
                + (1 << TX_WINDOW_ERRORS)
        );
        assert_eq!(v[7], 1 << MULTICAST);
        assert_eq!(v[13], 1 << COLLISIONS);
    }

    #[test]
    fn detailed_metrics_names() {
        let root = fixture("odd");
        let mut proc_mode = NetdevCollector::new(DeviceFilter::default(), false, false, true);
        proc_mode.try_socket = false;
        let text = render("netdev", Box::new(proc_mode), Paths::fixture(&root));
        assert!(
            text.contains("node_network_receive_errors_total{device=\"br-lan\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("node_network_transmit_dropped_total{device=\"br-lan\"} 12"),
            "{text}"
        );
        assert!(!text.contains("receive_errs"), "{text}");
        let filter = DeviceFilter {
            exclude: None,
            include: Some(regex::Regex::new("^lo$").unwrap()),
        };
        let netlink_mode = NetdevCollector::new(filter, true, false, true);
        let text = render("netdev", Box::new(netlink_mode), Paths::fixture(&root));
        for key in [
            "receive_missed_errors",
            "transmit_window_errors",
            "multicast",
            "collisions",
        ] {
            assert!(
                text.contains(&format!("node_network_{key}_total{{device=\"lo\"}}")),
                "{key}: {text}"
            );
        }
    }
}
