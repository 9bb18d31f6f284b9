//! `netclass`: interface properties from /sys/class/net/<iface>, as node_exporter 1.5 reports
//! them (procfs's `NetClassIface`: integers in Go's base-prefixed syntax, so `flags` 0x1003 is
//! 4099; attributes the driver refuses to report are left out).

use std::path::PathBuf;

use clap::{Arg, ArgAction};

use super::util::{parse_go_int, read_sys_attr, sorted_dir_names, unanchored_regex_flag};
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
        }
    }

    /// Reads one interface's attributes into `iface`.
    fn read_iface(
        &mut self,
        dir: &std::path::Path,
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
        for (slot, (file, _, _)) in iface.ints.iter_mut().zip(INT_ATTRS) {
            self.path.clear();
            self.path.push(dir);
            self.path.push(file);
            *slot = if read_sys_attr(&self.path, &mut self.buf)
                .map_err(|e| CollectorError::io(&self.path, e))?
            {
                // procfs reports a value it cannot parse as 0.
                Some(parse_go_int(&self.buf).unwrap_or(0))
            } else {
                None
            };
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
        let names = match sorted_dir_names(&class) {
            Ok(Some(names)) => names,
            Ok(None) => return Err(CollectorError::NoData),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(CollectorError::NoData);
            }
            Err(e) => return Err(CollectorError::io(&class, e)),
        };
        let mut ifaces = std::mem::take(&mut self.ifaces);
        let mut used = 0;
        for name in names {
            if self.ignored.as_ref().is_some_and(|r| r.is_match(&name)) {
                continue;
            }
            let dir = class.join(&name);
            // Regular files in /sys/class/net (bonding_masters) are not interfaces.
            if std::fs::metadata(&dir).map(|m| !m.is_dir()).unwrap_or(true) {
                continue;
            }
            if used == ifaces.len() {
                ifaces.push(Iface::default());
            }
            let Some(iface) = ifaces.get_mut(used) else {
                continue;
            };
            match self.read_iface(&dir, iface) {
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
}
