//! `rapl`: RAPL energy counters from /sys/class/powercap, as node_exporter 1.12.1 reads them
//! through prometheus/procfs: every entry of the class with a `name` file is a zone (the
//! `intel-rapl` control type itself has none); `package-0` is name `package`, index 0, a name
//! without a `-<n>` suffix (`dram`, `core`) is indexed by how many zones of that name came
//! before it; `max_energy_range_uj` must parse; `energy_uj` (µJ) is reported in joules, one
//! family `node_rapl_<name>_joules_total` per zone name, or, with
//! `--collector.rapl.enable-zone-label`, all zones in `node_rapl_joules_total{rapl_zone=…}`.
//!
//! No powercap class, or one that may not be read, is `NoData`; so is an `energy_uj` only root
//! may read (the default since Linux 5.10), after the zones already read were reported (their
//! samples are kept, as node_exporter's are).
//!
//! Cost: the zones (the listing, each `name` and `max_energy_range_uj`) are found again only
//! when the hotplug epoch moves (node_exporter reads them every scrape; they change only with
//! hotplug); each scrape reads each zone's `energy_uj`, kept open. Families are written in name
//! order, samples in label order, as client_golang's gathering sorts them.

use std::path::PathBuf;

use super::flags::{add_bool_flag, bool_flag};
use super::source::{Absence, OpenAttr};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "rapl",
    default_enabled: true,
    flags,
    build,
};

const ZONE_LABEL: &str = "collector.rapl.enable-zone-label";

fn flags(command: clap::Command) -> clap::Command {
    // node_exporter's help text, a copy-paste slip there, kept so `--help` reads the same.
    add_bool_flag(
        command,
        ZONE_LABEL,
        false,
        "Enables service unit metric unit_start_time_seconds",
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(RaplCollector::new(bool_flag(ctx, ZONE_LABEL))))
}

/// One RAPL zone, as procfs's `RaplZone`.
struct Zone {
    /// The name without its `-<index>` suffix.
    name: String,
    index: String,
    /// `<sysfs>/class/powercap/<entry>`, the `path` label.
    path: String,
    energy_path: PathBuf,
    energy: OpenAttr,
}

/// `node_rapl_<sanitized name>_joules_total` and its help, for a zone name.
struct FamilyName {
    zone_name: String,
    metric: String,
    help: String,
}

struct RaplCollector {
    zone_label: bool,
    zones: Vec<Zone>,
    /// The epoch `zones` were found in; `None`: find them again.
    zones_epoch: Option<u64>,
    /// The class was absent or unreadable.
    absence: Absence,
    buf: String,
    /// This scrape's `(zone, joules)`, in zone order.
    values: Vec<(usize, f64)>,
    /// Zone indices in output order.
    order: Vec<usize>,
    families: Vec<FamilyName>,
}

impl RaplCollector {
    fn new(zone_label: bool) -> Self {
        RaplCollector {
            zone_label,
            zones: Vec::new(),
            zones_epoch: None,
            absence: Absence::default(),
            buf: String::new(),
            values: Vec::new(),
            order: Vec::new(),
            families: Vec::new(),
        }
    }

    /// procfs's `GetRaplZones`. `Ok(false)`: the class is absent or may not be read.
    fn find_zones(&mut self, ctx: &Context<'_>) -> Result<bool, CollectorError> {
        self.zones.clear();
        self.zones_epoch = None;
        let class = ctx.paths.sys("class/powercap");
        let entries = match std::fs::read_dir(&class) {
            Ok(entries) => entries,
            Err(e) if is_absent(&e) => {
                tracing::debug!(error = %e, "platform doesn't have powercap files present");
                return Ok(false);
            }
            Err(e) => return Err(CollectorError::io(&class, e)),
        };
        let mut names: Vec<std::ffi::OsString> = Vec::new();
        for entry in entries {
            names.push(
                entry
                    .map_err(|e| CollectorError::io(&class, e))?
                    .file_name(),
            );
        }
        names.sort();
        // How many zones of each name have been seen, for names without an index.
        let mut usage: Vec<(String, i64)> = Vec::new();
        for entry in names {
            let dir = class.join(&entry);
            // Any failure to read `name` (not a directory, no such file) means no zone.
            let Ok(raw) = std::fs::read(dir.join("name")) else {
                continue;
            };
            let raw = String::from_utf8_lossy(&raw);
            let (index, name) = index_and_name(&usage, raw.trim());
            let max_path = dir.join("max_energy_range_uj");
            match std::fs::read_to_string(&max_path) {
                Ok(text) if text.trim().parse::<u64>().is_ok() => {}
                Ok(text) => {
                    return Err(CollectorError::Parse {
                        path: max_path,
                        reason: format!("not an unsigned integer: {:?}", text.trim()),
                    });
                }
                Err(e) if is_absent(&e) => return Ok(false),
                Err(e) => return Err(CollectorError::io(&max_path, e)),
            }
            match usage.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count = index + 1,
                None => usage.push((name.to_string(), index + 1)),
            }
            self.zones.push(Zone {
                name: name.to_string(),
                index: index.to_string(),
                path: dir.to_string_lossy().into_owned(),
                energy_path: dir.join("energy_uj"),
                energy: OpenAttr::default(),
            });
        }
        self.families.clear();
        for zone in &self.zones {
            if !self.families.iter().any(|f| f.zone_name == zone.name) {
                self.families.push(FamilyName {
                    zone_name: zone.name.clone(),
                    metric: format!("node_rapl_{}_joules_total", sanitize(&zone.name)),
                    help: format!("Current RAPL {} value in joules", zone.name),
                });
            }
        }
        self.families.sort_by(|a, b| a.metric.cmp(&b.metric));
        self.zones_epoch = ctx.hotplug_epoch();
        Ok(true)
    }

    fn write(&mut self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        if self.values.is_empty() {
            return Ok(());
        }
        let zones = &self.zones;
        let label_order = |a: &usize, b: &usize| {
            let (a, b) = (&zones[*a], &zones[*b]);
            (&a.index, &a.path, &a.name).cmp(&(&b.index, &b.path, &b.name))
        };
        self.order.clear();
        self.order.extend(0..self.values.len());
        let values = &self.values;
        self.order
            .sort_by(|a, b| label_order(&values[*a].0, &values[*b].0));
        if self.zone_label {
            let mut f = out.family(
                "node_rapl_joules_total",
                "Current RAPL value in joules",
                Kind::Counter,
            )?;
            for &i in &self.order {
                let (zone, joules) = (&zones[values[i].0], values[i].1);
                f.sample(
                    &[
                        ("index", &zone.index),
                        ("path", &zone.path),
                        ("rapl_zone", &zone.name),
                    ],
                    joules,
                )?;
            }
            return Ok(());
        }
        for family in &self.families {
            let mut samples = self
                .order
                .iter()
                .map(|&i| (&zones[values[i].0], values[i].1))
                .filter(|(zone, _)| zone.name == family.zone_name)
                .peekable();
            if samples.peek().is_none() {
                continue;
            }
            let mut f = out.family(&family.metric, &family.help, Kind::Counter)?;
            for (zone, joules) in samples {
                f.sample(&[("index", &zone.index), ("path", &zone.path)], joules)?;
            }
        }
        Ok(())
    }
}

/// What node_exporter's rapl collector treats as no data: not found, permission denied.
fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    )
}

/// procfs's `getIndexAndName`: `name-<int>` is that index and name; any other name is indexed
/// by its count so far.
fn index_and_name<'a>(usage: &[(String, i64)], name: &'a str) -> (i64, &'a str) {
    let mut parts = name.split('-');
    if let (Some(head), Some(tail), None) = (parts.next(), parts.next(), parts.next())
        && let Ok(index) = tail.parse::<i64>()
    {
        return (index, head);
    }
    let count = usage.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    (count, name)
}

/// node_exporter's `SanitizeMetricName`: each `_*[^0-9A-Za-z_]+_*` becomes one `_`.
pub(super) fn sanitize(name: &str) -> String {
    let bytes = name.as_bytes();
    let invalid = |b: u8| !(b.is_ascii_alphanumeric() || b == b'_');
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < bytes.len() {
        let mut j = i;
        while j < bytes.len() && bytes[j] == b'_' {
            j += 1;
        }
        if j < bytes.len() && invalid(bytes[j]) {
            while j < bytes.len() && invalid(bytes[j]) {
                j += 1;
            }
            while j < bytes.len() && bytes[j] == b'_' {
                j += 1;
            }
            out.push('_');
        } else if j == i {
            // A valid, hence ASCII, byte.
            out.push(bytes[i] as char);
            j = i + 1;
        } else {
            out.push_str(&name[i..j]);
        }
        i = j;
    }
    out
}

impl Collector for RaplCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        if self.absence.known(ctx) {
            return Err(CollectorError::NoData);
        }
        if self.zones_epoch.is_none() || self.zones_epoch != ctx.hotplug_epoch() {
            let found = self.find_zones(ctx)?;
            self.absence.record(ctx, !found);
            if !found {
                return Err(CollectorError::NoData);
            }
        }
        self.values.clear();
        let mut failure = None;
        for (i, zone) in self.zones.iter_mut().enumerate() {
            match zone.energy.read(&zone.energy_path, &mut self.buf) {
                Ok(()) => match self.buf.parse::<u64>() {
                    Ok(uj) => self.values.push((i, uj as f64 / 1_000_000.0)),
                    Err(_) => {
                        failure = Some(CollectorError::Parse {
                            path: zone.energy_path.clone(),
                            reason: format!("not an unsigned integer: {:?}", self.buf),
                        });
                        break;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::debug!(path = %zone.energy_path.display(), "can't access energy_uj file");
                    // Only root may read energy_uj (Linux ≥ 5.10): when the first zone is
                    // refused, nothing is read until the hotplug epoch moves.
                    if i == 0 {
                        self.absence.record(ctx, true);
                    }
                    failure = Some(CollectorError::NoData);
                    break;
                }
                Err(e) => {
                    // A zone gone (hot-unplugged): find the zones again next time.
                    self.zones_epoch = None;
                    failure = Some(CollectorError::io(&zone.energy_path, e));
                    break;
                }
            }
        }
        self.write(out)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, fixture, render};
    use std::path::Path;

    /// The rendering with the fixture root taken out of the `path` labels, so that the golden
    /// file reads as on a host (`/sys/class/powercap/…`) wherever the tree is checked out.
    fn render_fixture(zone_label: bool) -> String {
        let root = fixture("hw-system");
        let text = render(
            "rapl",
            Box::new(RaplCollector::new(zone_label)),
            Paths::fixture(&root),
        );
        text.replace(&format!("\"{}/", root.display()), "\"/")
    }

    #[test]
    fn golden() {
        let golden = fixture("hw-system").join("golden");
        assert_golden(&golden.join("rapl.prom"), &render_fixture(false));
        assert_golden(&golden.join("rapl-zone-label.prom"), &render_fixture(true));
    }

    #[test]
    fn flag_selects_zone_label() {
        let paths = Paths::default();
        let registration = &REGISTRATION;
        let _ = crate::collector::testing::build_with(registration, &[], &paths);
        let _ = crate::collector::testing::build_with(
            registration,
            &["--collector.rapl.enable-zone-label"],
            &paths,
        );
    }

    #[test]
    fn indices_and_names() {
        let usage = vec![("dram".to_string(), 1)];
        assert_eq!(index_and_name(&usage, "package-1"), (1, "package"));
        assert_eq!(index_and_name(&usage, "dram"), (1, "dram"));
        assert_eq!(index_and_name(&usage, "core"), (0, "core"));
        assert_eq!(
            index_and_name(&usage, "package-0-die-1"),
            (0, "package-0-die-1")
        );
        assert_eq!(index_and_name(&usage, "psys-x"), (0, "psys-x"));
    }

    #[test]
    fn sanitized_names() {
        assert_eq!(sanitize("package"), "package");
        assert_eq!(sanitize("package-0-die-1"), "package_0_die_1");
        assert_eq!(sanitize("a__-.__b"), "a_b");
        assert_eq!(sanitize("a__b"), "a__b");
        assert_eq!(sanitize("_x_"), "_x_");
        assert_eq!(sanitize("dé"), "d_");
    }

    fn zone(root: &Path, entry: &str, name: &str, max: &str, energy: &str) {
        let dir = root.join("sys/class/powercap").join(entry);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(dir.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
        std::fs::write(dir.join("energy_uj"), format!("{energy}\n")).unwrap();
    }

    #[test]
    fn absent_class_is_no_data_and_bad_counters_fail() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render("rapl", Box::new(RaplCollector::new(false)), paths.clone());
        assert!(text.contains("node_scrape_collector_success{collector=\"rapl\"} 0"));
        // The control type alone (no `name`): no zones, an empty success.
        std::fs::create_dir_all(dir.path().join("sys/class/powercap/intel-rapl")).unwrap();
        let text = render("rapl", Box::new(RaplCollector::new(false)), paths.clone());
        assert!(text.contains("node_scrape_collector_success{collector=\"rapl\"} 1"));
        assert!(!text.contains("node_rapl"));
        // A bad max_energy_range_uj fails the whole collection.
        zone(dir.path(), "intel-rapl:0", "package-0", "x", "1");
        let text = render("rapl", Box::new(RaplCollector::new(false)), paths.clone());
        assert!(text.contains("node_scrape_collector_success{collector=\"rapl\"} 0"));
        assert!(!text.contains("node_rapl"));
        // A bad energy_uj: the zones before it are kept.
        zone(
            dir.path(),
            "intel-rapl:0",
            "package-0",
            "262143328850",
            "1500000",
        );
        zone(
            dir.path(),
            "intel-rapl:1",
            "package-1",
            "262143328850",
            "junk",
        );
        let text = render("rapl", Box::new(RaplCollector::new(false)), paths);
        assert!(text.contains("node_rapl_package_joules_total{index=\"0\""));
        assert!(!text.contains("index=\"1\""));
        assert!(text.contains("node_scrape_collector_success{collector=\"rapl\"} 0"));
    }
}
