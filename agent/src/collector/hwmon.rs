//! `hwmon`: hardware sensors from /sys/class/hwmon, named, scaled and labelled as node_exporter
//! 1.12 does (chip names from the device path, `<type><n>_<property>` files, millivolts → volts,
//! millidegrees → °C, microwatts → W, microjoules → J, Hz → MHz). Several hwmon devices under one
//! parent device (a driver registering one for fans and one for sensors) would share a chip
//! name: as 1.12, those chips get the `name` attribute, or else their own `hwmonN`, appended.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Arg;

use super::filter::DeviceFilter;
use super::flags::unanchored_regex_flag;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "hwmon",
    default_enabled: true,
    flags,
    build,
};

const CHIP_INCLUDE: &str = "collector.hwmon.chip-include";
const CHIP_EXCLUDE: &str = "collector.hwmon.chip-exclude";
const SENSOR_INCLUDE: &str = "collector.hwmon.sensor-include";
const SENSOR_EXCLUDE: &str = "collector.hwmon.sensor-exclude";

fn flags(command: clap::Command) -> clap::Command {
    let flag = |name: &'static str, help: &'static str| Arg::new(name).long(name).help(help);
    command
        .arg(flag(
            CHIP_INCLUDE,
            "Regexp of hwmon chip to include (mutually exclusive to device-exclude).",
        ))
        .arg(flag(
            CHIP_EXCLUDE,
            "Regexp of hwmon chip to exclude (mutually exclusive to device-include).",
        ))
        .arg(flag(
            SENSOR_INCLUDE,
            "Regexp of hwmon sensor to include (mutually exclusive to sensor-exclude).",
        ))
        .arg(flag(
            SENSOR_EXCLUDE,
            "Regexp of hwmon sensor to exclude (mutually exclusive to sensor-include).",
        ))
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    // node_exporter applies both patterns of a pair when both are given (no exclusivity
    // check, whatever the help says).
    let mut collector = HwmonCollector::new();
    collector.chips = DeviceFilter {
        exclude: unanchored_regex_flag(ctx, CHIP_EXCLUDE)?,
        include: unanchored_regex_flag(ctx, CHIP_INCLUDE)?,
    };
    collector.sensors = DeviceFilter {
        exclude: unanchored_regex_flag(ctx, SENSOR_EXCLUDE)?,
        include: unanchored_regex_flag(ctx, SENSOR_INCLUDE)?,
    };
    Ok(Box::new(collector))
}

const SENSOR_TYPES: [&str; 14] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
    "freq",
];

/// node_exporter's `cleanMetricName`: lower case, anything outside `[a-z0-9:_]` to `_`, trimmed
/// of `_`.
pub fn clean_name(name: &str) -> String {
    let replaced: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    replaced.trim_matches('_').to_string()
}

/// One sample on its way out: family index, chip, sensor, extra label, value.
struct Row {
    family: usize,
    chip: String,
    sensor: String,
    label: Option<String>,
    value: f64,
}

struct HwmonCollector {
    filename: regex::Regex,
    families: Vec<(String, String, Kind)>,
    family_index: HashMap<String, usize>,
    rows: Vec<Row>,
    class: super::source::DirListing,
    /// `--collector.hwmon.chip-{include,exclude}`, on the chip label.
    chips: DeviceFilter,
    /// `--collector.hwmon.sensor-{include,exclude}`, on `<chip>;<sensor>`.
    sensors: DeviceFilter,
    /// Scratch: `<chip>;<sensor>` for the sensor filter.
    key: String,
    /// (directory, chip label) of each chip in `labelled_for`, the listing they were derived from.
    chip_labels: Vec<(PathBuf, String)>,
    labelled_for: Option<Arc<[String]>>,
}

/// `(type, number, property)` of a sensor file name, as node_exporter's `explodeSensorFilename`.
fn explode<'a>(re: &regex::Regex, filename: &'a str) -> Option<(&'a str, u64, &'a str)> {
    let caps = re.captures(filename)?;
    let sensor_type = caps.name("type").map_or("", |m| m.as_str());
    let id = caps.name("id").map_or("", |m| m.as_str());
    let number = if id.is_empty() { 0 } else { id.parse().ok()? };
    let property = caps.name("property").map_or("", |m| m.as_str());
    Some((sensor_type, number, property))
}

/// Reads like node_exporter's hwmon `sysReadFile`: one read of up to 128 bytes, newlines trimmed.
fn read_value(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut bytes = [0u8; 128];
    let n = std::fs::File::open(path).ok()?.read(&mut bytes).ok()?;
    Some(
        String::from_utf8_lossy(&bytes[..n])
            .trim_matches('\n')
            .to_string(),
    )
}

type SensorData = BTreeMap<String, BTreeMap<String, String>>;

impl HwmonCollector {
    fn new() -> Self {
        HwmonCollector {
            filename: regex::Regex::new(r"^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$")
                .expect("static regex"),
            families: Vec::new(),
            family_index: HashMap::new(),
            rows: Vec::new(),
            class: super::source::DirListing::default(),
            chips: DeviceFilter::default(),
            sensors: DeviceFilter::default(),
            key: String::new(),
            chip_labels: Vec::new(),
            labelled_for: None,
        }
    }

    fn collect_sensor_data(&self, dir: &Path, data: &mut SensorData) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(filename) = entry.file_name().into_string() else {
                continue;
            };
            let Some((sensor_type, number, property)) = explode(&self.filename, &filename) else {
                continue;
            };
            if !SENSOR_TYPES.contains(&sensor_type) {
                continue;
            }
            let Some(value) = read_value(&entry.path()) else {
                continue;
            };
            data.entry(format!("{sensor_type}{number}"))
                .or_default()
                .insert(property.to_string(), value);
        }
        Ok(())
    }

    fn push(
        &mut self,
        name: String,
        help: String,
        kind: Kind,
        chip: &str,
        sensor: &str,
        value: f64,
    ) {
        self.push_labelled(name, help, kind, chip, sensor, None, value);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_labelled(
        &mut self,
        name: String,
        help: String,
        kind: Kind,
        chip: &str,
        sensor: &str,
        label: Option<String>,
        value: f64,
    ) {
        let family = match self.family_index.get(&name) {
            Some(&i) => i,
            None => {
                self.families.push((name.clone(), help, kind));
                self.family_index.insert(name, self.families.len() - 1);
                self.families.len() - 1
            }
        };
        self.rows.push(Row {
            family,
            chip: chip.to_string(),
            sensor: sensor.to_string(),
            label,
            value,
        });
    }

    fn update_hwmon(&mut self, dir: &Path, chip: &str) -> std::io::Result<()> {
        let chip = chip.to_string();
        let mut data = SensorData::new();
        self.collect_sensor_data(dir, &mut data)?;
        let device = dir.join("device");
        if std::fs::metadata(&device).is_ok() {
            self.collect_sensor_data(&device, &mut data)?;
        }
        if let Ok(raw) = std::fs::read_to_string(dir.join("name")) {
            let chip_name = clean_name(&raw);
            if !chip_name.is_empty() {
                self.push_labelled(
                    "node_hwmon_chip_names".into(),
                    "Annotation metric for human-readable chip names".into(),
                    Kind::Gauge,
                    &chip,
                    "",
                    Some(chip_name),
                    1.0,
                );
            }
        }
        for (sensor, props) in &data {
            if self.sensors.include.is_some() || self.sensors.exclude.is_some() {
                self.key.clear();
                self.key.push_str(&chip);
                self.key.push(';');
                self.key.push_str(sensor);
                if self.sensors.ignored(&self.key) {
                    continue;
                }
            }
            let sensor_type = explode(&self.filename, sensor).map_or("", |(t, _, _)| t);
            if let Some(label) = props.get("label") {
                self.push_labelled(
                    "node_hwmon_sensor_label".into(),
                    "Label for given chip and sensor".into(),
                    Kind::Gauge,
                    &chip,
                    sensor,
                    Some(label.clone()),
                    1.0,
                );
            }
            let plain = props.get("").map(String::as_str);
            match sensor_type {
                "beep_enable" => {
                    let value = if plain == Some("1") { 1.0 } else { 0.0 };
                    self.push(
                        "node_hwmon_beep_enabled".into(),
                        "Hardware beep enabled".into(),
                        Kind::Gauge,
                        &chip,
                        sensor,
                        value,
                    );
                    continue;
                }
                "vrm" => {
                    if let Some(v) = plain.and_then(|p| p.parse::<f64>().ok()) {
                        self.push(
                            "node_hwmon_voltage_regulator_version".into(),
                            "Hardware voltage regulator".into(),
                            Kind::Gauge,
                            &chip,
                            sensor,
                            v,
                        );
                    }
                    continue;
                }
                "update_interval" => {
                    if let Some(v) = plain.and_then(|p| p.parse::<f64>().ok()) {
                        self.push(
                            "node_hwmon_update_interval_seconds".into(),
                            "Hardware monitor update interval".into(),
                            Kind::Gauge,
                            &chip,
                            sensor,
                            v * 0.001,
                        );
                    }
                    continue;
                }
                _ => {}
            }
            let prefix = format!("node_hwmon_{sensor_type}");
            for (element, value) in props {
                if element == "label" {
                    continue;
                }
                let mut name = prefix.clone();
                if element == "input" {
                    if plain.is_some() {
                        name.push_str("_input");
                    }
                } else if !element.is_empty() {
                    name.push('_');
                    name.push_str(&clean_name(element));
                }
                let Ok(v) = value.parse::<f64>() else {
                    continue;
                };
                let element = element.as_str();
                if sensor_type == "freq" && element == "input" {
                    // Labelled by the sensor's cleaned label instead of `freqN`; unlabelled
                    // frequencies are not reported.
                    if let Some(label) = props.get("label") {
                        self.push(
                            name + "_freq_mhz",
                            "Hardware monitor for GPU frequency in MHz".into(),
                            Kind::Gauge,
                            &chip,
                            &clean_name(label),
                            v / 1_000_000.0,
                        );
                    }
                    continue;
                }
                let (name, help, kind, v) = match (sensor_type, element) {
                    (_, "fault" | "alarm") => (
                        name,
                        format!("Hardware sensor {element} status ({sensor_type})"),
                        Kind::Gauge,
                        v,
                    ),
                    (_, "beep") => (
                        name + "_enabled",
                        "Hardware monitor sensor has beeping enabled".into(),
                        Kind::Gauge,
                        v,
                    ),
                    ("in" | "cpu", _) => (
                        name + "_volts",
                        format!("Hardware monitor for voltage ({element})"),
                        Kind::Gauge,
                        v * 0.001,
                    ),
                    ("temp", e) if e != "type" => (
                        name + "_celsius",
                        format!(
                            "Hardware monitor for temperature ({})",
                            if e.is_empty() { "input" } else { e }
                        ),
                        Kind::Gauge,
                        v * 0.001,
                    ),
                    ("curr", _) => (
                        name + "_amps",
                        format!("Hardware monitor for current ({element})"),
                        Kind::Gauge,
                        v * 0.001,
                    ),
                    ("energy", _) => (
                        name + "_joule_total",
                        format!("Hardware monitor for joules used so far ({element})"),
                        Kind::Counter,
                        v / 1_000_000.0,
                    ),
                    ("power", "accuracy") => (
                        name,
                        "Hardware monitor power meter accuracy, as a ratio".into(),
                        Kind::Gauge,
                        v / 1_000_000.0,
                    ),
                    (
                        "power",
                        "average_interval" | "average_interval_min" | "average_interval_max",
                    ) => (
                        name + "_seconds",
                        format!("Hardware monitor power usage update interval ({element})"),
                        Kind::Gauge,
                        v * 0.001,
                    ),
                    ("power", _) => (
                        name + "_watt",
                        format!("Hardware monitor for power usage in watts ({element})"),
                        Kind::Gauge,
                        v / 1_000_000.0,
                    ),
                    ("humidity", _) => (
                        name,
                        format!(
                            "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({element})"
                        ),
                        Kind::Gauge,
                        v / 1_000_000.0,
                    ),
                    ("fan", "input" | "min" | "max" | "target") => (
                        name + "_rpm",
                        format!("Hardware monitor for fan revolutions per minute ({element})"),
                        Kind::Gauge,
                        v,
                    ),
                    _ => (
                        name,
                        format!("Hardware monitor {sensor_type} element {element}"),
                        Kind::Gauge,
                        v,
                    ),
                };
                self.push(name, help, kind, &chip, sensor, v);
            }
        }
        Ok(())
    }
}

/// node_exporter's `hwmonName`: `<device type>_<device name>` from the device link, else the
/// `name` attribute, else the directory's own name, all cleaned.
fn hwmon_name(dir: &Path) -> std::io::Result<String> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let dev_name = device
            .file_name()
            .map(|n| clean_name(&n.to_string_lossy()))
            .unwrap_or_default();
        let dev_type = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()))
            .unwrap_or_default();
        if !dev_type.is_empty() && !dev_name.is_empty() {
            return Ok(format!("{dev_type}_{dev_name}"));
        }
        if !dev_name.is_empty() {
            return Ok(dev_name);
        }
    }
    if let Ok(raw) = std::fs::read_to_string(dir.join("name")) {
        let name = clean_name(&raw);
        if !name.is_empty() {
            return Ok(name);
        }
    }
    let real = std::fs::canonicalize(dir)?;
    let name = real
        .file_name()
        .map(|n| clean_name(&n.to_string_lossy()))
        .unwrap_or_default();
    if name.is_empty() {
        return Err(std::io::Error::other(format!(
            "could not derive a monitoring name for {}",
            dir.display()
        )));
    }
    Ok(name)
}

/// Each listed chip's directory and unique chip label, as node_exporter 1.12 derives them: the
/// base name from the parent device ([`hwmon_name`]); a base name several chips share gets the
/// chip's `name` attribute appended, or, when that is empty or shared too, its hwmonN name.
/// Chips without a name are left out.
fn chip_labels(class: &Path, names: &[String]) -> Vec<(PathBuf, String)> {
    let mut chips: Vec<(PathBuf, String, String)> = Vec::new();
    for name in names {
        let dir = class.join(name);
        let Ok(base) = hwmon_name(&dir) else {
            tracing::debug!(dir = %dir.display(), "no hwmon chip name");
            continue;
        };
        let name_attr = std::fs::read_to_string(dir.join("name"))
            .map(|raw| raw.trim().to_string())
            .unwrap_or_default();
        chips.push((dir, base, name_attr));
    }
    let shared = |base: &str, name_attr: Option<&str>| {
        chips
            .iter()
            .filter(|(_, b, n)| b == base && name_attr.is_none_or(|a| a == n))
            .count()
            > 1
    };
    chips
        .iter()
        .map(|(dir, base, name_attr)| {
            let chip = if shared(base, None) {
                let mut suffix = clean_name(name_attr);
                if suffix.is_empty() || shared(base, Some(name_attr)) {
                    suffix = dir
                        .file_name()
                        .map(|n| clean_name(&n.to_string_lossy()))
                        .unwrap_or_default();
                }
                format!("{base}_{suffix}")
            } else {
                base.clone()
            };
            (dir.clone(), chip)
        })
        .collect()
}

impl Collector for HwmonCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/hwmon");
        // The chips are symlinks to directories.
        let listed = self.class.names(ctx, &class, |entry| {
            std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir())
        });
        let names = match listed {
            Ok(Some(names)) => names,
            Ok(None) => return Err(CollectorError::NoData),
            Err(e) => return Err(CollectorError::io(&class, e)),
        };
        self.rows.clear();
        self.families.clear();
        self.family_index.clear();
        let mut last_error = None;
        // The chips' labels depend on device links and `name` attributes, which change only
        // with the listing (a uevent): worked out once per listing.
        let same = self
            .labelled_for
            .as_ref()
            .is_some_and(|listed| Arc::ptr_eq(listed, &names));
        if !same {
            self.chip_labels = chip_labels(&class, &names);
            self.labelled_for = Some(names);
        }
        let chips = std::mem::take(&mut self.chip_labels);
        for (dir, chip) in &chips {
            if self.chips.ignored(chip) {
                continue;
            }
            if let Err(e) = self.update_hwmon(dir, chip) {
                last_error = Some(CollectorError::io(dir, e));
            }
        }
        self.chip_labels = chips;
        // Families contiguous, in the order first seen.
        self.rows.sort_by_key(|r| r.family);
        let mut rows = self.rows.iter().peekable();
        while let Some(first) = rows.peek() {
            let index = first.family;
            let Some((name, help, kind)) = self.families.get(index) else {
                break;
            };
            let mut family = out.family(name, help, *kind)?;
            while let Some(row) = rows.next_if(|r| r.family == index) {
                match (name.as_str(), &row.label) {
                    ("node_hwmon_chip_names", Some(chip_name)) => family
                        .sample(&[("chip", &row.chip), ("chip_name", chip_name)], row.value)?,
                    (_, Some(label)) => family.sample(
                        &[
                            ("chip", &row.chip),
                            ("sensor", &row.sensor),
                            ("label", label),
                        ],
                        row.value,
                    )?,
                    (_, None) => {
                        family.sample(&[("chip", &row.chip), ("sensor", &row.sensor)], row.value)?
                    }
                }
            }
        }
        match last_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "hwmon", |_| Box::new(HwmonCollector::new()));
    }

    /// Several hwmon devices under one parent: distinct `name`s disambiguate (asus-nb-wmi),
    /// equal ones fall back to hwmonN (nct6775); GPU frequencies in MHz by label (amdgpu).
    #[test]
    fn shared_parents_and_frequencies() {
        assert_renders_golden("storage", "hwmon", |_| Box::new(HwmonCollector::new()));
        let text = crate::collector::testing::render(
            "hwmon",
            Box::new(HwmonCollector::new()),
            crate::collector::Paths::fixture(&crate::collector::testing::fixture("storage")),
        );
        for chip in [
            "platform_asus_nb_wmi_asus",
            "platform_asus_nb_wmi_asus_custom_fan_curve",
            "platform_nct6775_656_hwmon4",
            "platform_nct6775_656_hwmon5",
        ] {
            assert!(
                text.contains(&format!("chip=\"{chip}\"")),
                "{chip}:\n{text}"
            );
        }
        assert!(
            text.contains(
                "node_hwmon_freq_freq_mhz{chip=\"0000:00:03_1_0000:03:00_0\",sensor=\"sclk\"} 1800"
            ),
            "{text}"
        );
        assert!(!text.contains("sensor=\"freq3\""), "{text}");
    }

    #[test]
    fn chip_and_sensor_filters() {
        let paths =
            crate::collector::Paths::fixture(&crate::collector::testing::fixture("storage"));
        let render = |args: &[&str]| {
            let collector = crate::collector::testing::build_with(&REGISTRATION, args, &paths);
            crate::collector::testing::render("hwmon", collector, paths.clone())
        };
        let text = render(&["--collector.hwmon.chip-include=nct6775"]);
        assert!(text.contains("platform_nct6775_656_hwmon4"), "{text}");
        assert!(!text.contains("asus"), "{text}");
        let text = render(&["--collector.hwmon.sensor-exclude=hwmon5;temp1"]);
        assert!(!text.contains("SYSTIN"), "{text}");
        assert!(text.contains("node_hwmon_in_volts"), "{text}");
    }

    #[test]
    fn names_and_filenames() {
        assert_eq!(clean_name("coretemp.0\n"), "coretemp_0");
        assert_eq!(clean_name("0000:00:18.3"), "0000:00:18_3");
        let re = HwmonCollector::new().filename;
        assert_eq!(explode(&re, "temp1_input"), Some(("temp", 1, "input")));
        assert_eq!(explode(&re, "beep_enable"), Some(("beep_enable", 0, "")));
        assert_eq!(
            explode(&re, "power1_average_interval"),
            Some(("power", 1, "average_interval"))
        );
        assert_eq!(explode(&re, "pwm2"), Some(("pwm", 2, "")));
        assert_eq!(explode(&re, "1abc"), None);
    }
}
