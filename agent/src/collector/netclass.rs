//! `netclass`: interface properties from /sys/class/net/<iface>, as node_exporter 1.5 reports
//! them (procfs's `NetClassIface`: integers in Go's base-prefixed syntax, so `flags` 0x1003 is
//! 4099; attributes the driver refuses to report are left out).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction};

use super::util::{parse_go_int, read_sys_attr, unanchored_regex_flag};
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

fn flags(command: clap::Command) -> clap::Command {
    command
        .arg(
            Arg::new(IGNORED_DEVICES)
                .long(IGNORED_DEVICES)
                .default_value("^$")
                .help("Regexp of net devices to ignore for netclass collector."),
        )
        .arg(
            Arg::new(IGNORE_INVALID_SPEED)
                .long(IGNORE_INVALID_SPEED)
                .action(ArgAction::SetTrue)
                .help("Ignore devices where the speed is invalid. This will be the default behavior in 2.x."),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let ignored = unanchored_regex_flag(ctx, IGNORED_DEVICES)?;
    let ignore_invalid_speed = ctx
        .matches
        .try_get_one::<bool>(IGNORE_INVALID_SPEED)
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false);
    Ok(Box::new(NetclassCollector::new(
        ignored,
        ignore_invalid_speed,
    )))
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
        }
    }

    /// Reads one integer attribute: `None` when the driver does not report it, 0 when it does
    /// not parse (as procfs's ValueParser does).
    fn read_int(&mut self, dir: &Path, file: &str) -> Result<Option<i64>, CollectorError> {
        self.path.clear();
        self.path.push(dir);
        self.path.push(file);
        let present = read_sys_attr(&self.path, &mut self.buf)
            .map_err(|e| CollectorError::io(&self.path, e))?;
        Ok(present.then(|| parse_go_int(&self.buf).unwrap_or(0)))
    }

    /// Reads one interface's attributes into `iface`. Attributes fixed for a device's lifetime
    /// are taken from the cache while its ifindex is unchanged (sysfs reads are the cost here).
    fn read_iface(
        &mut self,
        dir: &Path,
        name: &str,
        iface: &mut Iface,
    ) -> Result<(), CollectorError> {
        for (slot, file) in iface.strings.iter_mut().zip(STR_ATTRS) {
            slot.clear();
            self.path.clear();
            self.path.push(dir);
            self.path.push(file);
            if read_sys_attr(&self.path, &mut self.buf)
                .map_err(|e| CollectorError::io(&self.path, e))?
            {
                slot.push_str(&self.buf);
            }
        }
        let ifindex = self.read_int(dir, "ifindex")?;
        let cached = self
            .fixed
            .get(name)
            .filter(|f| ifindex.is_some() && f.ifindex == ifindex)
            .map(|f| f.values);
        for (index, (file, _, _)) in INT_ATTRS.iter().enumerate() {
            let value = if index == IFINDEX {
                ifindex
            } else if let (Some(values), Some(pos)) =
                (cached, FIXED.iter().position(|&f| f == index))
            {
                values[pos]
            } else {
                self.read_int(dir, file)?
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

impl Collector for NetclassCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/net");
        let entries = match std::fs::read_dir(&class) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                return Err(CollectorError::NoData);
            }
            Err(e) => return Err(CollectorError::io(&class, e)),
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries.flatten() {
            // Regular files in /sys/class/net (bonding_masters) are not interfaces; the
            // interfaces are symlinks (directories in fixtures).
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        self.fixed.retain(|name, _| names.contains(name));
        let mut ifaces = std::mem::take(&mut self.ifaces);
        let mut used = 0;
        for name in names {
            if self.ignored.as_ref().is_some_and(|r| r.is_match(&name)) {
                continue;
            }
            let dir = class.join(&name);
            if used == ifaces.len() {
                ifaces.push(Iface::default());
            }
            let Some(iface) = ifaces.get_mut(used) else {
                continue;
            };
            match self.read_iface(&dir, &name, iface) {
                Ok(()) => {
                    iface.name = name;
                    used += 1;
                }
                Err(e) => {
                    self.ifaces = ifaces;
                    return Err(e);
                }
            }
        }
        ifaces.truncate(used);
        self.ifaces = ifaces;
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
            family.sample(
                &[
                    ("device", i.name.as_str()),
                    ("address", address),
                    ("broadcast", broadcast),
                    ("duplex", duplex),
                    ("operstate", operstate),
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
    use crate::collector::testing::{assert_golden, fixture, render};

    #[test]
    fn golden() {
        let root = fixture("basic");
        let text = render(
            "netclass",
            Box::new(NetclassCollector::new(
                Some(regex::Regex::new("^$").unwrap()),
                false,
            )),
            Paths::fixture(&root),
        );
        assert_golden(&root.join("golden/netclass.prom"), &text);
    }

    #[test]
    fn ignored_devices_and_invalid_speed() {
        let root = fixture("basic");
        let text = render(
            "netclass",
            Box::new(NetclassCollector::new(
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
            Box::new(NetclassCollector::new(None, false)),
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
            c.read_iface(&dir, "veth-a.1", &mut iface).unwrap();
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
}
