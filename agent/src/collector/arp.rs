//! `arp`: ARP table entries per device from /proc/net/arp.

use regex::Regex;

use super::flags::{add_bool_flag, unanchored_regex_flag};
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "arp",
    default_enabled: true,
    flags,
    build,
};

const INCLUDE_FLAG: &str = "collector.arp.device-include";
const EXCLUDE_FLAG: &str = "collector.arp.device-exclude";
const NETLINK_FLAG: &str = "collector.arp.netlink";

fn flags(command: clap::Command) -> clap::Command {
    let command = command
        .arg(
            clap::Arg::new(INCLUDE_FLAG)
                .long(INCLUDE_FLAG)
                .default_value("")
                .help("Regexp of arp devices to include (mutually exclusive to device-exclude)."),
        )
        .arg(
            clap::Arg::new(EXCLUDE_FLAG)
                .long(EXCLUDE_FLAG)
                .default_value("")
                .help("Regexp of arp devices to exclude (mutually exclusive to device-include)."),
        );
    // node_exporter reads the neighbour table over rtnetlink by default, skipping NOARP entries
    // so the counts equal /proc/net/arp's; this agent reads /proc/net/arp either way.
    add_bool_flag(
        command,
        NETLINK_FLAG,
        true,
        "Use netlink to gather stats instead of /proc/net/arp.",
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(ArpCollector {
        include: unanchored_regex_flag(ctx, INCLUDE_FLAG)?,
        exclude: unanchored_regex_flag(ctx, EXCLUDE_FLAG)?,
        source: SourceFile::proc("net/arp"),
        buf: String::new(),
        counts: DeviceCounts::default(),
    }))
}

struct ArpCollector {
    include: Option<Regex>,
    exclude: Option<Regex>,
    source: SourceFile,
    buf: String,
    counts: DeviceCounts,
}

/// Entry counts per device; the first `len` are this scrape's (the rest keep their
/// allocations for the next).
#[derive(Default)]
struct DeviceCounts {
    devices: Vec<(String, u32)>,
    len: usize,
}

impl DeviceCounts {
    fn count(&mut self, device: &str) {
        let current = self.devices.get_mut(..self.len).unwrap_or_default();
        if let Some((_, n)) = current.iter_mut().find(|(d, _)| d == device) {
            *n += 1;
            return;
        }
        match self.devices.get_mut(self.len) {
            Some((name, n)) => {
                name.clear();
                name.push_str(device);
                *n = 1;
            }
            None => self.devices.push((device.to_string(), 1)),
        }
        self.len += 1;
    }

    fn current(&mut self) -> &mut [(String, u32)] {
        self.devices.get_mut(..self.len).unwrap_or_default()
    }
}

/// node_exporter's device filter: excluded if the exclude pattern matches or the include
/// pattern does not.
fn ignored(include: &Option<Regex>, exclude: &Option<Regex>, device: &str) -> bool {
    exclude.as_ref().is_some_and(|re| re.is_match(device))
        || include.as_ref().is_some_and(|re| !re.is_match(device))
}

/// The device (last column) of an ARP table row; `None` for the header or a short row.
pub fn arp_device(line: &str) -> Option<Result<&str, ()>> {
    let mut columns = line.split_ascii_whitespace();
    let first = columns.next()?;
    if first == "IP" {
        return None;
    }
    let mut count = 1;
    let mut last = first;
    for c in columns {
        count += 1;
        last = c;
    }
    Some(if count >= 6 { Ok(last) } else { Err(()) })
}

impl Collector for ArpCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        self.counts.len = 0;
        for line in self.buf.lines() {
            match arp_device(line) {
                None => {}
                Some(Err(())) => ctx.malformed(path, line),
                Some(Ok(device)) if !ignored(&self.include, &self.exclude, device) => {
                    self.counts.count(device)
                }
                Some(Ok(_)) => {}
            }
        }
        let devices = self.counts.current();
        if devices.is_empty() {
            return Ok(());
        }
        devices.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut family = out.family("node_arp_entries", "ARP entries by device", Kind::Gauge)?;
        for (device, n) in devices.iter() {
            family.sample(&[("device", device)], f64::from(*n))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{
        assert_golden, assert_renders_golden, build_with, fixture, render,
    };

    #[test]
    fn golden() {
        assert_renders_golden("basic", "arp", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn excluded_devices_and_odd_rows() {
        let root = fixture("odd");
        let paths = Paths::fixture(&root);
        let collector = build_with(
            &REGISTRATION,
            &["--collector.arp.device-exclude=^br-"],
            &paths,
        );
        let text = render("arp", collector, paths);
        assert_golden(&root.join("golden/arp.prom"), &text);
    }

    #[test]
    fn include_filter() {
        let root = fixture("basic");
        let paths = Paths::fixture(&root);
        let collector = build_with(
            &REGISTRATION,
            &["--collector.arp.device-include=eth0"],
            &paths,
        );
        let text = render("arp", collector, paths);
        assert!(text.contains("node_arp_entries{device=\"eth0\"}"));
        assert!(text.contains("node_arp_entries{device=\"eth0.100\"}"));
        assert!(!text.contains("br-lan"));
    }

    #[test]
    fn rows() {
        assert_eq!(
            arp_device(
                "IP address       HW type     Flags       HW address            Mask     Device"
            ),
            None
        );
        assert_eq!(
            arp_device(
                "10.0.0.1         0x1         0x2         52:54:00:12:35:02     *        eth0.100"
            ),
            Some(Ok("eth0.100"))
        );
        assert_eq!(arp_device("10.0.0.1 0x1 0x2"), Some(Err(())));
        assert_eq!(arp_device(""), None);
    }
}
