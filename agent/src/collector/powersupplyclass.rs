//! `powersupplyclass`: batteries and mains adapters from /sys/class/power_supply, with
//! node_exporter 1.5's names and scaling (µA/µV/µWh/µW → A/V/Wh/W, tenths of °C → °C).

use clap::Arg;

use super::flags::unanchored_regex_flag;
use super::gosyntax::parse_go_int;
use super::source::{DirListing, read_sys_attr};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "powersupplyclass",
    default_enabled: true,
    flags,
    build,
};

const IGNORED: &str = "collector.powersupply.ignored-supplies";

fn flags(command: clap::Command) -> clap::Command {
    command.arg(
        Arg::new(IGNORED)
            .long(IGNORED)
            .default_value("^$")
            .help("Regexp of power supplies to ignore for powersupplyclass collector."),
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(PowerSupplyCollector::new(unanchored_regex_flag(
        ctx, IGNORED,
    )?)))
}

/// (sysfs file, metric suffix, divisor).
const NUMERIC: [(&str, &str, f64); 49] = [
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        1e6,
    ),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        1e6,
    ),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// node_power_supply_info labels (besides power_supply) and their files, sorted by label name as
/// node_exporter's output has them.
const INFO: [&str; 11] = [
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "scope",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
];

struct Supply {
    name: String,
    numeric: [Option<f64>; 49],
    info: [String; 11],
}

struct PowerSupplyCollector {
    ignored: Option<regex::Regex>,
    supplies: Vec<Supply>,
    families: Vec<(String, String)>,
    buf: String,
    class: DirListing,
}

impl PowerSupplyCollector {
    fn new(ignored: Option<regex::Regex>) -> Self {
        PowerSupplyCollector {
            ignored,
            supplies: Vec::new(),
            class: DirListing::default(),
            families: NUMERIC
                .iter()
                .map(|(_, suffix, _)| {
                    (
                        format!("node_power_supply_{suffix}"),
                        format!("{suffix} value of /sys/class/power_supply/<power_supply>."),
                    )
                })
                .collect(),
            buf: String::new(),
        }
    }

    fn read_supply(&mut self, dir: &std::path::Path, name: String) -> Result<Supply, String> {
        let mut supply = Supply {
            name,
            numeric: [None; 49],
            info: Default::default(),
        };
        let attr = |buf: &mut String, file: &str| {
            let path = dir.join(file);
            read_sys_attr(&path, buf).map_err(|e| format!("{}: {e}", path.display()))
        };
        for (slot, (file, _, divisor)) in supply.numeric.iter_mut().zip(NUMERIC) {
            if attr(&mut self.buf, file)? {
                let value = parse_go_int(&self.buf).ok_or_else(|| {
                    format!("{}: invalid value {:?}", dir.join(file).display(), self.buf)
                })?;
                *slot = Some(value as f64 / divisor);
            }
        }
        for (slot, file) in supply.info.iter_mut().zip(INFO) {
            if attr(&mut self.buf, file)? {
                slot.push_str(&self.buf);
            }
        }
        Ok(supply)
    }
}

impl Collector for PowerSupplyCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/power_supply");
        let names = self
            .class
            .names(ctx, &class, |_| true)
            .map_err(|e| CollectorError::io(&class, e))?
            .ok_or(CollectorError::NoData)?;
        self.supplies.clear();
        for name in names.iter() {
            if self.ignored.as_ref().is_some_and(|r| r.is_match(name)) {
                continue;
            }
            let dir = class.join(name);
            let supply =
                self.read_supply(&dir, name.clone())
                    .map_err(|reason| CollectorError::Parse {
                        path: dir.clone(),
                        reason,
                    })?;
            self.supplies.push(supply);
        }
        for (i, (name, help)) in self.families.iter().enumerate() {
            let value = |s: &Supply| s.numeric.get(i).copied().flatten();
            if !self.supplies.iter().any(|s| value(s).is_some()) {
                continue;
            }
            let mut f = out.family(name, help, Kind::Gauge)?;
            for s in &self.supplies {
                if let Some(v) = value(s) {
                    f.sample(&[("power_supply", s.name.as_str())], v)?;
                }
            }
        }
        if !self.supplies.is_empty() {
            let mut f = out.family(
                "node_power_supply_info",
                "info of /sys/class/power_supply/<power_supply>.",
                Kind::Gauge,
            )?;
            for s in &self.supplies {
                let mut labels: Vec<(&str, &str)> = INFO
                    .iter()
                    .zip(&s.info)
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect();
                let at = labels.partition_point(|(k, _)| *k < "power_supply");
                labels.insert(at, ("power_supply", s.name.as_str()));
                f.sample(&labels, 1.0)?;
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

    #[test]
    fn golden() {
        assert_renders_golden("basic", "powersupplyclass", |_| {
            Box::new(PowerSupplyCollector::new(Some(
                regex::Regex::new("^$").unwrap(),
            )))
        });
    }

    #[test]
    fn ignored_supplies() {
        let root = fixture("basic");
        let text = render(
            "powersupplyclass",
            Box::new(PowerSupplyCollector::new(Some(
                regex::Regex::new("^BAT").unwrap(),
            ))),
            Paths::fixture(&root),
        );
        assert!(!text.contains("BAT0"), "{text}");
        assert!(text.contains("power_supply=\"AC\""), "{text}");
    }
}
