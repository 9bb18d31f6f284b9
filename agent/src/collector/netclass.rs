//! `netclass`: interface properties from /sys/class/net/<iface>, as node_exporter 1.5 reports
//! them (procfs's `NetClassIface`: integers in Go's base-prefixed syntax, so `flags` 0x1003 is
//! 4099; attributes the driver refuses to report are left out).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Arg;

use super::flags::{add_bool_flag, bool_flag, unanchored_regex_flag};
use super::gosyntax::parse_go_int;
use super::netlink;
use super::source::OpenAttr;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "netclass",
    default_enabled: true,
    flags,
    build,
};

const IGNORED_DEVICES: &str = "collector.netclass.ignored-devices";
const IGNORE_INVALID_SPEED: &str = "collector.netclass.ignore-invalid-speed";
const NETLINK_VARIANT: &str = "collector.netclass.netlink";
const RTNL_WITH_STATS: &str = "collector.netclass_rtnl.with-stats";

fn flags(command: clap::Command) -> clap::Command {
    let command = command.arg(
        Arg::new(IGNORED_DEVICES)
            .long(IGNORED_DEVICES)
            .default_value("^$")
            .help("Regexp of net devices to ignore for netclass collector."),
    );
    let command = add_bool_flag(
        command,
        IGNORE_INVALID_SPEED,
        false,
        "Ignore devices where the speed is invalid. This will be the default behavior in 2.x.",
    );
    // node_exporter's rtnetlink variant of this collector is not implemented; its flags are
    // accepted so that existing command lines still start the agent.
    let command = add_bool_flag(
        command,
        NETLINK_VARIANT,
        false,
        "Use netlink to gather stats instead of /proc/net/dev.",
    );
    add_bool_flag(
        command,
        RTNL_WITH_STATS,
        false,
        "Expose the statistics for each network device, replacing netdev collector.",
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let ignored = unanchored_regex_flag(ctx, IGNORED_DEVICES)?;
    let ignore_invalid_speed = bool_flag(ctx, IGNORE_INVALID_SPEED);
    if bool_flag(ctx, NETLINK_VARIANT) {
        tracing::warn!(
            "--{NETLINK_VARIANT}: node_exporter's rtnetlink variant of netclass is not implemented, \
             serving the /sys/class/net families"
        );
    }
    let mut collector = NetclassCollector::new(ignored, ignore_invalid_speed);
    // rtnetlink answers for this process's network namespace; a sysfs mounted elsewhere
    // (`--path.sysfs=/host/sys` in a container) may show another one's interfaces.
    collector.try_socket = ctx.paths.sysfs == Path::new("/sys");
    Ok(Box::new(collector))
}

/// The integer attributes, in the order node_exporter emits their families:
/// (sysfs file, family suffix, kind).
const INT_ATTRS: [(&str, &str, Kind); 17] = [
    ("addr_assign_type", "address_assign_type", Kind::Gauge),
    ("carrier", "carrier", Kind::Gauge),
    ("carrier_changes", "carrier_changes_total", Kind::Counter),
    (
        "carrier_up_count",
        "carrier_up_changes_total",
        Kind::Counter,
    ),
    (
        "carrier_down_count",
        "carrier_down_changes_total",
        Kind::Counter,
    ),
    ("dev_id", "device_id", Kind::Gauge),
    ("dormant", "dormant", Kind::Gauge),
    ("flags", "flags", Kind::Gauge),
    ("ifindex", "iface_id", Kind::Gauge),
    ("iflink", "iface_link", Kind::Gauge),
    ("link_mode", "iface_link_mode", Kind::Gauge),
    ("mtu", "mtu_bytes", Kind::Gauge),
    ("name_assign_type", "name_assign_type", Kind::Gauge),
    ("netdev_group", "net_dev_group", Kind::Gauge),
    ("speed", "speed_bytes", Kind::Gauge),
    ("tx_queue_len", "transmit_queue_length", Kind::Gauge),
    ("type", "protocol_type", Kind::Gauge),
];
const SPEED: usize = 14;
/// The index of `flags` in [`INT_ATTRS`].
const FLAGS: usize = 7;
/// IFF_UP in `flags`: the interface is administratively up.
const IFF_UP_FLAG: i64 = 0x1;
const IFINDEX: usize = 8;
/// Attributes a device keeps for its lifetime: dev_id, iflink, name_assign_type, type.
const FIXED: [usize; 4] = [5, 9, 12, 16];

/// The cached fixed attributes of one interface, valid while its ifindex is the same.
struct Fixed {
    ifindex: Option<i64>,
    values: [Option<i64>; 4],
}

/// The string attributes node_network_info carries.
const STR_ATTRS: [&str; 5] = ["address", "broadcast", "duplex", "operstate", "ifalias"];

/// The attribute files of one interface kept open between scrapes: STR_ATTRS, then INT_ATTRS.
#[derive(Default)]
struct IfaceFiles {
    strings: [OpenAttr; 5],
    ints: [OpenAttr; 17],
}

/// Interfaces whose attribute files stay open (five or so each); beyond that (a container host
/// with hundreds of veths) they are opened per scrape, as node_exporter does for all.
const MAX_OPEN_IFACES: usize = 64;

#[derive(Default)]
struct Iface {
    name: String,
    strings: [String; 5],
    ints: [Option<i64>; 17],
}

struct NetclassCollector {
    ignored: Option<regex::Regex>,
    ignore_invalid_speed: bool,
    ifaces: Vec<Iface>,
    path: PathBuf,
    buf: String,
    names: Vec<(String, String)>,
    fixed: HashMap<String, Fixed>,
    files: HashMap<String, IfaceFiles>,
    /// Off in fixture tests (the rtnetlink dump describes this host, not the fixture).
    try_socket: bool,
    class: super::source::DirListing,
}

impl NetclassCollector {
    fn new(ignored: Option<regex::Regex>, ignore_invalid_speed: bool) -> Self {
        let names = INT_ATTRS
            .iter()
            .map(|(_, suffix, _)| {
                (
                    format!("node_network_{suffix}"),
                    format!("Network device property: {suffix}"),
                )
            })
            .collect();
        NetclassCollector {
            ignored,
            ignore_invalid_speed,
            ifaces: Vec::new(),
            path: PathBuf::new(),
            buf: String::new(),
            names,
            fixed: HashMap::new(),
            files: HashMap::new(),
            try_socket: true,
            class: super::source::DirListing::default(),
        }
    }

    /// Reads one integer attribute: `None` when the driver does not report it, 0 when it does
    /// not parse (as procfs's ValueParser does).
    fn read_int(
        &mut self,
        dir: &Path,
        file: &str,
        open: &mut OpenAttr,
    ) -> Result<Option<i64>, CollectorError> {
        self.path.clear();
        self.path.push(dir);
        self.path.push(file);
        let present = open
            .read_attr(&self.path, &mut self.buf)
            .map_err(|e| CollectorError::io(&self.path, e))?;
        Ok(present.then(|| parse_go_int(&self.buf).unwrap_or(0)))
    }

    /// Reads one interface's attributes into `iface`. What the rtnetlink dump (`link`, when its
    /// ifindex matches sysfs) reports exactly as sysfs would is taken from it; attributes fixed
    /// for a device's lifetime come from the cache while its ifindex is unchanged; the rest are
    /// read from sysfs (reads of sysfs attributes are the cost here), through `files`.
    ///
    /// An open attribute file follows its device through a rename, so files kept open are
    /// trusted only while the ifindex read through them is the one rtnetlink gives for `name`;
    /// otherwise they are opened again by path.
    fn read_iface(
        &mut self,
        dir: &Path,
        name: &str,
        iface: &mut Iface,
        link: Option<&netlink::Link>,
        files: &mut IfaceFiles,
    ) -> Result<(), CollectorError> {
        let mut ifindex = self.read_int(dir, "ifindex", &mut files.ints[IFINDEX])?;
        if link.is_some_and(|l| ifindex != Some(i64::from(l.index))) {
            *files = IfaceFiles::default();
            ifindex = self.read_int(dir, "ifindex", &mut files.ints[IFINDEX])?;
        }
        let link = link.filter(|l| ifindex == Some(i64::from(l.index)));
        for (i, ((slot, file), open)) in iface
            .strings
            .iter_mut()
            .zip(STR_ATTRS)
            .zip(&mut files.strings)
            .enumerate()
        {
            slot.clear();
            if let Some(value) = link.and_then(|l| link_string(l, i)) {
                slot.push_str(&value);
                continue;
            }
            self.path.clear();
            self.path.push(dir);
            self.path.push(file);
            if open
                .read_attr(&self.path, &mut self.buf)
                .map_err(|e| CollectorError::io(&self.path, e))?
            {
                slot.push_str(&self.buf);
            }
        }
        let cached = self
            .fixed
            .get(name)
            .filter(|f| ifindex.is_some() && f.ifindex == ifindex)
            .map(|f| f.values);
        for (index, ((file, _, _), open)) in INT_ATTRS.iter().zip(&mut files.ints).enumerate() {
            let value = if index == IFINDEX {
                ifindex
            } else if let Some(value) = link.and_then(|l| link_int(l, index)) {
                value
            } else if let (Some(values), Some(pos)) =
                (cached, FIXED.iter().position(|&f| f == index))
            {
                values[pos]
            } else {
                self.read_int(dir, file, open)?
            };
            if let Some(slot) = iface.ints.get_mut(index) {
                *slot = value;
            }
        }
        if cached.is_none() {
            let values = FIXED.map(|i| iface.ints.get(i).copied().flatten());
            self.fixed
                .insert(name.to_string(), Fixed { ifindex, values });
        }
        Ok(())
    }
}

const IFF_UP: u32 = 0x1;
const IFF_DORMANT: u32 = 0x20000;

/// A hardware address as sysfs prints it (`%*phC`): lower-case hex pairs joined by `:`.
fn format_mac(bytes: Option<&[u8]>) -> String {
    let mut out = String::new();
    for (i, b) in bytes.unwrap_or_default().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A string attribute (STR_ATTRS order) from netlink, or `None` to read it from sysfs.
fn link_string(l: &netlink::Link, index: usize) -> Option<String> {
    const OPERSTATES: [&str; 7] = [
        "unknown",
        "notpresent",
        "down",
        "lowerlayerdown",
        "testing",
        "dormant",
        "up",
    ];
    match index {
        0 => Some(format_mac(l.address.as_deref())),
        1 => Some(format_mac(l.broadcast.as_deref())),
        // IFLA_OPERSTATE is already DOWN for a device that is not running, as sysfs says.
        3 => l
            .operstate
            .and_then(|o| OPERSTATES.get(usize::from(o)))
            .map(|s| s.to_string()),
        4 => {
            // node_exporter reads at most 128 bytes of "<alias>\n" and trims it.
            let alias = l.ifalias.as_deref().unwrap_or("");
            let mut raw = format!("{alias}\n").into_bytes();
            raw.truncate(128);
            Some(String::from_utf8_lossy(&raw).trim().to_string())
        }
        _ => None,
    }
}

/// An integer attribute (INT_ATTRS order) from netlink: `Some(None)` when sysfs would refuse
/// it (carrier and dormant of a device that is not running), `None` to read it from sysfs.
fn link_int(l: &netlink::Link, index: usize) -> Option<Option<i64>> {
    let running = l.flags & IFF_UP != 0;
    match index {
        1 => l.carrier.map(|c| running.then_some(i64::from(c))),
        2 => l.carrier_changes.map(|v| Some(i64::from(v))),
        3 => l.carrier_up_count.map(|v| Some(i64::from(v))),
        4 => l.carrier_down_count.map(|v| Some(i64::from(v))),
        6 => Some(running.then_some(i64::from(l.flags & IFF_DORMANT != 0))),
        9 => Some(Some(l.link.map_or(i64::from(l.index), i64::from))),
        10 => l.linkmode.map(|v| Some(i64::from(v))),
        11 => l.mtu.map(|v| Some(i64::from(v))),
        13 => l.group.map(|v| Some(i64::from(v))),
        15 => l.txqlen.map(|v| Some(i64::from(v))),
        16 => Some(Some(i64::from(l.kind))),
        _ => None,
    }
}

impl Collector for NetclassCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/net");
        // Regular files in /sys/class/net (bonding_masters) are not interfaces; the interfaces
        // are symlinks (directories in fixtures).
        let listed = self.class.names(ctx, &class, |entry| {
            !entry.file_type().is_ok_and(|t| t.is_file())
        });
        let names = match listed {
            Ok(Some(names)) => names,
            Ok(None) => return Err(CollectorError::NoData),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(CollectorError::NoData);
            }
            Err(e) => return Err(CollectorError::io(&class, e)),
        };
        self.fixed
            .retain(|name, _| names.binary_search(name).is_ok());
        let mut files = std::mem::take(&mut self.files);
        files.retain(|name, _| names.binary_search(name).is_ok());
        // This scrape's rtnetlink dump, shared with netdev; empty (sysfs is read for everything)
        // when netlink is unavailable.
        let links: &[netlink::Link] = if self.try_socket {
            ctx.links().unwrap_or_default()
        } else {
            &[]
        };
        let mut ifaces = std::mem::take(&mut self.ifaces);
        let mut used = 0;
        for name in names.iter() {
            if self.ignored.as_ref().is_some_and(|r| r.is_match(name)) {
                continue;
            }
            let dir = class.join(name);
            if used == ifaces.len() {
                ifaces.push(Iface::default());
            }
            let Some(iface) = ifaces.get_mut(used) else {
                continue;
            };
            let link = links.iter().find(|l| l.name == *name);
            // Files stay open only where rtnetlink can vouch for them (see read_iface).
            if link.is_some() && files.len() < MAX_OPEN_IFACES && !files.contains_key(name) {
                files.insert(name.clone(), IfaceFiles::default());
            }
            let mut per_scrape = IfaceFiles::default();
            let open = match files.get_mut(name) {
                Some(open) if link.is_some() => open,
                _ => &mut per_scrape,
            };
            match self.read_iface(&dir, name, iface, link, open) {
                Ok(()) => {
                    iface.name.clone_from(name);
                    used += 1;
                }
                Err(e) => {
                    self.ifaces = ifaces;
                    self.files = files;
                    return Err(e);
                }
            }
        }
        ifaces.truncate(used);
        self.ifaces = ifaces;
        self.files = files;
        self.write(out)?;
        Ok(())
    }
}

impl NetclassCollector {
    fn write(&self, out: &mut MetricWriter<'_, '_>) -> Result<(), std::fmt::Error> {
        if self.ifaces.is_empty() {
            return Ok(());
        }
        let mut family = out.family(
            "node_network_up",
            "Value is 1 if operstate is 'up', 0 otherwise.",
            Kind::Gauge,
        )?;
        for i in &self.ifaces {
            let up = i.strings[3] == "up";
            family.sample(&[("device", i.name.as_str())], if up { 1.0 } else { 0.0 })?;
        }
        let mut family = out.family(
            "node_network_info",
            "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
            Kind::Gauge,
        )?;
        for i in &self.ifaces {
            let [address, broadcast, duplex, operstate, ifalias] = &i.strings;
            // node_exporter 1.12's `adminstate`: IFF_UP of `flags`, "unknown" without them.
            let adminstate = match i.ints.get(FLAGS).copied().flatten() {
                None => "unknown",
                Some(flags) if flags & IFF_UP_FLAG != 0 => "up",
                Some(_) => "down",
            };
            family.sample(
                &[
                    ("device", i.name.as_str()),
                    ("address", address),
                    ("broadcast", broadcast),
                    ("duplex", duplex),
                    ("operstate", operstate),
                    ("adminstate", adminstate),
                    ("ifalias", ifalias),
                ],
                1.0,
            )?;
        }
        for (index, ((_, _, kind), (name, help))) in INT_ATTRS.iter().zip(&self.names).enumerate() {
            let value = |i: &Iface| {
                let v = i.ints.get(index).copied().flatten()?;
                if index == SPEED {
                    // Some devices report -1 for an unknown speed.
                    if v < 0 && self.ignore_invalid_speed {
                        return None;
                    }
                    return Some(v.wrapping_mul(1000 * 1000) / 8);
                }
                Some(v)
            };
            if !self.ifaces.iter().any(|i| value(i).is_some()) {
                continue;
            }
            let mut family = out.family(name, help, *kind)?;
            for i in &self.ifaces {
                if let Some(v) = value(i) {
                    family.sample(&[("device", i.name.as_str())], v as f64)?;
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
    use crate::collector::testing::{assert_renders_golden, fixture, render};

    /// A collector reading only the fixture's sysfs (no netlink: that is this host's).
    fn fixture_collector(
        ignored: Option<regex::Regex>,
        ignore_invalid_speed: bool,
    ) -> NetclassCollector {
        let mut c = NetclassCollector::new(ignored, ignore_invalid_speed);
        c.try_socket = false;
        c
    }

    #[test]
    fn netlink_assisted_output_equals_sysfs_only_output_on_this_host() {
        let paths = Paths::default();
        let sysfs_only = render(
            "netclass",
            Box::new(fixture_collector(None, false)),
            paths.clone(),
        );
        let assisted = render(
            "netclass",
            Box::new(NetclassCollector::new(None, false)),
            paths,
        );
        assert!(
            sysfs_only.contains("node_network_info{device=\"lo\""),
            "{sysfs_only}"
        );
        assert_eq!(assisted, sysfs_only);
    }

    #[test]
    fn netlink_values_as_sysfs_shows_them() {
        let link = netlink::Link {
            index: 3,
            flags: 0x1003,
            address: Some(vec![0xa4, 0xc3, 0xf0, 0x11, 0x22, 0x3f]),
            operstate: Some(6),
            carrier: Some(1),
            ifalias: Some("x".repeat(200)),
            ..netlink::Link::default()
        };
        assert_eq!(link_string(&link, 0).as_deref(), Some("a4:c3:f0:11:22:3f"));
        assert_eq!(link_string(&link, 1).as_deref(), Some(""));
        assert_eq!(link_string(&link, 3).as_deref(), Some("up"));
        assert_eq!(link_string(&link, 4).map(|a| a.len()), Some(128));
        assert_eq!(link_int(&link, 1), Some(Some(1)));
        assert_eq!(link_int(&link, 6), Some(Some(0)));
        assert_eq!(
            link_int(&link, 9),
            Some(Some(3)),
            "iflink defaults to the index"
        );
        let down = netlink::Link {
            flags: 0x1002,
            carrier: Some(0),
            ..link
        };
        assert_eq!(
            link_int(&down, 1),
            Some(None),
            "no carrier for a device that is down"
        );
        assert_eq!(link_int(&down, 6), Some(None));
        assert_eq!(link_int(&down, 7), None, "flags come from sysfs");
    }

    #[test]
    fn golden() {
        assert_renders_golden("basic", "netclass", |_| {
            Box::new(fixture_collector(
                Some(regex::Regex::new("^$").unwrap()),
                false,
            ))
        });
    }

    /// A bond with a failed slave and an interface that is administratively down.
    #[test]
    fn bond_and_adminstate() {
        assert_renders_golden("storage", "netclass", |_| {
            Box::new(fixture_collector(None, false))
        });
        let text = render(
            "netclass",
            Box::new(fixture_collector(None, false)),
            Paths::fixture(&fixture("storage")),
        );
        assert!(
            text.contains("device=\"eno3\",address=\"3c:ec:ef:10:20:32\",broadcast=\"ff:ff:ff:ff:ff:ff\",duplex=\"\",operstate=\"down\",adminstate=\"down\""),
            "{text}"
        );
        assert!(
            text.contains("operstate=\"down\",adminstate=\"up\""),
            "{text}"
        );
    }

    #[test]
    fn ignored_devices_and_invalid_speed() {
        let root = fixture("basic");
        let text = render(
            "netclass",
            Box::new(fixture_collector(
                Some(regex::Regex::new("^lo$").unwrap()),
                true,
            )),
            Paths::fixture(&root),
        );
        assert!(!text.contains("device=\"lo\""), "{text}");
        assert!(
            !text.contains("node_network_speed_bytes{device=\"wlan0\"}"),
            "{text}"
        );
        assert!(
            text.contains("node_network_speed_bytes{device=\"eth0\"} 125000000"),
            "{text}"
        );
    }

    #[test]
    fn missing_class_dir_fails_the_collector_quietly() {
        let root = fixture("odd").join("nonexistent");
        let text = render(
            "netclass",
            Box::new(fixture_collector(None, false)),
            Paths::fixture(&root),
        );
        assert!(
            text.contains("node_scrape_collector_success{collector=\"netclass\"} 0"),
            "{text}"
        );
        assert!(!text.contains("node_network_"), "{text}");
    }

    #[test]
    fn fixed_attributes_are_reread_when_the_device_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sys/class/net/veth-a.1");
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, value: &str| std::fs::write(dir.join(file), value).unwrap();
        write("ifindex", "5\n");
        write("type", "1\n");
        write("mtu", "1500\n");
        let mut collector = NetclassCollector::new(None, false);
        let scrape = |c: &mut NetclassCollector| {
            let mut iface = Iface::default();
            c.read_iface(
                &dir,
                "veth-a.1",
                &mut iface,
                None,
                &mut IfaceFiles::default(),
            )
            .unwrap();
            iface
        };
        assert_eq!(scrape(&mut collector).ints[16], Some(1));
        write("type", "772\n");
        write("mtu", "9000\n");
        let same = scrape(&mut collector);
        assert_eq!(
            same.ints[16],
            Some(1),
            "type is cached while ifindex is unchanged"
        );
        assert_eq!(same.ints[11], Some(9000), "mtu is read every time");
        write("ifindex", "6\n");
        assert_eq!(scrape(&mut collector).ints[16], Some(772));
    }

    /// Attribute files kept open are re-read in place, and dropped when rtnetlink's ifindex for
    /// the name is not the one read through them (the device was replaced or renamed: an open
    /// file follows its device, not the name).
    #[test]
    fn kept_open_files_are_reread_and_dropped_when_the_ifindex_moves() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sys/class/net/eth0");
        let populate = |ifindex: &str, speed: &str| {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ifindex"), ifindex).unwrap();
            std::fs::write(dir.join("speed"), speed).unwrap();
        };
        populate("5\n", "1000\n");
        let mut collector = NetclassCollector::new(None, false);
        let mut files = IfaceFiles::default();
        let scrape = |c: &mut NetclassCollector, index: i32, files: &mut IfaceFiles| {
            let link = netlink::Link {
                name: "eth0".into(),
                index,
                ..Default::default()
            };
            let mut iface = Iface::default();
            c.read_iface(&dir, "eth0", &mut iface, Some(&link), files)
                .unwrap();
            (iface.ints[IFINDEX], iface.ints[SPEED])
        };
        assert_eq!(scrape(&mut collector, 5, &mut files), (Some(5), Some(1000)));
        // Same files, new content: read through the open files.
        std::fs::write(dir.join("speed"), "10000\n").unwrap();
        assert_eq!(
            scrape(&mut collector, 5, &mut files),
            (Some(5), Some(10000))
        );
        // The device is replaced: the old files (still open) say 5, rtnetlink says 7.
        std::fs::remove_dir_all(&dir).unwrap();
        populate("7\n", "25000\n");
        assert_eq!(
            scrape(&mut collector, 7, &mut files),
            (Some(7), Some(25000))
        );
    }
}
