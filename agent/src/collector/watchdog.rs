//! `watchdog`: watchdog devices from /sys/class/watchdog, as node_exporter 1.12.1 reads them
//! through prometheus/procfs: for each entry of the class, the attributes of
//! Documentation/ABI/testing/sysfs-class-watchdog that exist (one ≤128-byte read each,
//! trimmed); the numeric ones parse as Go's `ParseInt(s, 0, 64)` (`0x…` too) and a value that
//! does not is an error for the whole collection, as is any read error but "not found". One
//! gauge per numeric attribute and `node_watchdog_info` with the string ones ("" when absent).
//!
//! No class directory, or one that may not be listed, is `NoData`; an empty class is an empty
//! success. Cost: the listing is taken, and an attribute found absent is skipped, until the
//! hotplug epoch moves; the attributes present are kept open, so a scrape is one pread per
//! attribute present (7–9 per device).

use std::path::{Path, PathBuf};

use super::gosyntax::parse_go_int;
use super::source::{DirListing, OpenAttr};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "watchdog",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(WatchdogCollector::default()))
}

/// The attributes, in procfs's order.
const ATTRIBUTES: [&str; 12] = [
    "bootstatus",
    "options",
    "fw_version",
    "identity",
    "nowayout",
    "state",
    "status",
    "timeleft",
    "timeout",
    "pretimeout",
    "pretimeout_governor",
    "access_cs0",
];
const BOOTSTATUS: usize = 0;
const OPTIONS: usize = 1;
const FW_VERSION: usize = 2;
const IDENTITY: usize = 3;
const NOWAYOUT: usize = 4;
const STATE: usize = 5;
const STATUS: usize = 6;
const TIMELEFT: usize = 7;
const TIMEOUT: usize = 8;
const PRETIMEOUT: usize = 9;
const PRETIMEOUT_GOVERNOR: usize = 10;
const ACCESS_CS0: usize = 11;

/// The numeric families in name order: (attribute, metric, help).
const GAUGES: [(usize, &str, &str); 7] = [
    (
        ACCESS_CS0,
        "node_watchdog_access_cs0",
        "Value of /sys/class/watchdog/<watchdog>/access_cs0",
    ),
    (
        BOOTSTATUS,
        "node_watchdog_bootstatus",
        "Value of /sys/class/watchdog/<watchdog>/bootstatus",
    ),
    (
        FW_VERSION,
        "node_watchdog_fw_version",
        "Value of /sys/class/watchdog/<watchdog>/fw_version",
    ),
    (
        NOWAYOUT,
        "node_watchdog_nowayout",
        "Value of /sys/class/watchdog/<watchdog>/nowayout",
    ),
    (
        PRETIMEOUT,
        "node_watchdog_pretimeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/pretimeout",
    ),
    (
        TIMELEFT,
        "node_watchdog_timeleft_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeleft",
    ),
    (
        TIMEOUT,
        "node_watchdog_timeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeout",
    ),
];

/// The string attributes.
fn is_text(attribute: usize) -> bool {
    matches!(
        attribute,
        OPTIONS | IDENTITY | STATE | STATUS | PRETIMEOUT_GOVERNOR
    )
}

#[derive(Default)]
struct Device {
    name: String,
    dir: PathBuf,
    attrs: [OpenAttr; 12],
    /// Attributes found absent in `absent_epoch`.
    absent: [bool; 12],
    absent_epoch: Option<u64>,
    /// This scrape's values: numbers for the numeric attributes, text for the others.
    numbers: [Option<i64>; 12],
    texts: [Option<String>; 12],
}

impl Device {
    fn new(name: &str, class: &Path) -> Self {
        Device {
            name: name.to_string(),
            dir: class.join(name),
            ..Device::default()
        }
    }

    /// procfs's `parseWatchdog`.
    fn read(&mut self, ctx: &Context<'_>, buf: &mut String) -> Result<(), CollectorError> {
        let epoch = ctx.hotplug_epoch();
        if epoch.is_none() || self.absent_epoch != epoch {
            self.absent = [false; 12];
            self.absent_epoch = epoch;
        }
        for (i, attribute) in ATTRIBUTES.iter().enumerate() {
            self.numbers[i] = None;
            if let Some(text) = &mut self.texts[i] {
                text.clear();
            }
            if self.absent[i] {
                self.texts[i] = None;
                continue;
            }
            let path = self.dir.join(attribute);
            match self.attrs[i].read(&path, buf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.absent[i] = true;
                    self.texts[i] = None;
                    continue;
                }
                Err(e) => return Err(CollectorError::io(path, e)),
            }
            if is_text(i) {
                self.texts[i].get_or_insert_with(String::new).push_str(buf);
            } else {
                let value = parse_go_int(buf).ok_or_else(|| CollectorError::Parse {
                    path: path.clone(),
                    reason: format!("not an integer: {buf:?}"),
                })?;
                self.numbers[i] = Some(value);
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct WatchdogCollector {
    class: DirListing,
    /// The devices of the current listing, in name order.
    devices: Vec<Device>,
    buf: String,
}

impl WatchdogCollector {
    fn write_gauges(
        &self,
        out: &mut MetricWriter<'_, '_>,
        gauges: &[(usize, &str, &str)],
    ) -> Result<(), CollectorError> {
        for &(attribute, metric, help) in gauges {
            let mut present = self
                .devices
                .iter()
                .filter_map(|d| Some((&d.name, d.numbers[attribute]?)))
                .peekable();
            if present.peek().is_none() {
                continue;
            }
            let mut f = out.family(metric, help, Kind::Gauge)?;
            for (name, value) in present {
                f.sample(&[("name", name)], value as f64)?;
            }
        }
        Ok(())
    }

    fn write_info(&self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        if self.devices.is_empty() {
            return Ok(());
        }
        let mut f = out.family(
            "node_watchdog_info",
            "Info of /sys/class/watchdog/<watchdog>",
            Kind::Gauge,
        )?;
        for d in &self.devices {
            let text = |i: usize| d.texts[i].as_deref().unwrap_or("");
            // client_golang orders the labels by name.
            f.sample(
                &[
                    ("identity", text(IDENTITY)),
                    ("name", &d.name),
                    ("options", text(OPTIONS)),
                    ("pretimeout_governor", text(PRETIMEOUT_GOVERNOR)),
                    ("state", text(STATE)),
                    ("status", text(STATUS)),
                ],
                1.0,
            )?;
        }
        Ok(())
    }
}

impl Collector for WatchdogCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/watchdog");
        let names = match self.class.names(ctx, &class, |_| true) {
            Ok(Some(names)) => names,
            Ok(None) => return Err(CollectorError::NoData),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(CollectorError::NoData);
            }
            Err(e) => return Err(CollectorError::io(&class, e)),
        };
        if !self.devices.iter().map(|d| &d.name).eq(names.iter()) {
            let mut old = std::mem::take(&mut self.devices);
            for name in names.iter() {
                let device = match old.iter().position(|d| d.name == *name) {
                    Some(i) => old.swap_remove(i),
                    None => Device::new(name, &class),
                };
                self.devices.push(device);
            }
        }
        for device in &mut self.devices {
            match device.read(ctx, &mut self.buf) {
                Ok(()) => {}
                Err(CollectorError::Io { path, source })
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    tracing::debug!(path = %path.display(), error = %source, "could not read watchdog stats");
                    return Err(CollectorError::NoData);
                }
                Err(e) => return Err(e),
            }
        }
        // Families in name order, as node_exporter's output has them.
        let (before, after) = GAUGES.split_at(3);
        self.write_gauges(out, before)?;
        self.write_info(out)?;
        self.write_gauges(out, after)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-system", "watchdog", |_| {
            Box::new(WatchdogCollector::default())
        });
    }

    fn success(text: &str) -> bool {
        text.contains("node_scrape_collector_success{collector=\"watchdog\"} 1")
    }

    #[test]
    fn absent_empty_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render(
            "watchdog",
            Box::new(WatchdogCollector::default()),
            paths.clone(),
        );
        assert!(!success(&text), "no class: no data");
        let class = dir.path().join("sys/class/watchdog");
        std::fs::create_dir_all(&class).unwrap();
        let text = render(
            "watchdog",
            Box::new(WatchdogCollector::default()),
            paths.clone(),
        );
        assert!(success(&text), "an empty class is an empty success");
        assert!(!text.contains("node_watchdog_info"));
        // A device with only some attributes: access_cs0 (aspeed) in hex, no identity.
        let wd = class.join("watchdog0");
        std::fs::create_dir_all(&wd).unwrap();
        std::fs::write(wd.join("access_cs0"), "0x1\n").unwrap();
        std::fs::write(wd.join("state"), "active\n").unwrap();
        let text = render(
            "watchdog",
            Box::new(WatchdogCollector::default()),
            paths.clone(),
        );
        assert!(success(&text));
        assert!(text.contains("node_watchdog_access_cs0{name=\"watchdog0\"} 1\n"));
        assert!(text.contains(
            "node_watchdog_info{identity=\"\",name=\"watchdog0\",options=\"\",pretimeout_governor=\"\",state=\"active\",status=\"\"} 1\n"
        ));
        assert!(!text.contains("node_watchdog_timeout_seconds"));
        // An unparsable number fails the collection.
        std::fs::write(wd.join("timeout"), "thirty\n").unwrap();
        let text = render("watchdog", Box::new(WatchdogCollector::default()), paths);
        assert!(!success(&text));
        assert!(!text.contains("node_watchdog_info"));
    }

    #[test]
    fn attributes_follow_the_device_across_scrapes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        let wd = dir.path().join("sys/class/watchdog/watchdog0");
        std::fs::create_dir_all(&wd).unwrap();
        std::fs::write(wd.join("timeleft"), "30\n").unwrap();
        let malformed = std::sync::atomic::AtomicU64::new(0);
        let ctx = Context::new(&paths, &malformed);
        let mut collector = WatchdogCollector::default();
        let mut buf = String::new();
        collector
            .devices
            .push(Device::new("watchdog0", &paths.sys("class/watchdog")));
        collector.devices[0].read(&ctx, &mut buf).unwrap();
        assert_eq!(collector.devices[0].numbers[TIMELEFT], Some(30));
        std::fs::write(wd.join("timeleft"), "29\n").unwrap();
        std::fs::write(wd.join("identity"), "iTCO_wdt\n").unwrap();
        collector.devices[0].read(&ctx, &mut buf).unwrap();
        assert_eq!(collector.devices[0].numbers[TIMELEFT], Some(29));
        assert_eq!(
            collector.devices[0].texts[IDENTITY].as_deref(),
            Some("iTCO_wdt")
        );
    }
}
