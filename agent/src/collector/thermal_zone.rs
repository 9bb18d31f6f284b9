//! `thermal_zone`: zone temperatures and cooling device states from /sys/class/thermal.
//! Like node_exporter 1.5, a host without thermal zones is a successful, empty collection.

use std::path::Path;

use super::source::{DirListing, numbered_names, read_sys_file};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "thermal_zone",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(ThermalZoneCollector::default()))
}

#[derive(Default)]
struct ThermalZoneCollector {
    buf: String,
    zones: Vec<(String, String, f64)>,
    cooling: Vec<(String, String, f64, f64)>,
    class: DirListing,
}

impl ThermalZoneCollector {
    fn read_int(&mut self, path: &Path) -> std::io::Result<i64> {
        read_sys_file(path, &mut self.buf)?;
        self.buf
            .parse()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an integer"))
    }

    fn read_zone(&mut self, dir: &Path) -> std::io::Result<(String, f64)> {
        read_sys_file(&dir.join("type"), &mut self.buf)?;
        let zone_type = self.buf.clone();
        // procfs requires the policy attribute too.
        read_sys_file(&dir.join("policy"), &mut self.buf)?;
        let temp = self.read_int(&dir.join("temp"))?;
        Ok((zone_type, temp as f64 / 1000.0))
    }

    fn read_cooling(&mut self, dir: &Path) -> std::io::Result<(String, f64, f64)> {
        read_sys_file(&dir.join("type"), &mut self.buf)?;
        let device_type = self.buf.clone();
        let max = self.read_int(&dir.join("max_state"))?;
        let cur = self.read_int(&dir.join("cur_state"))?;
        Ok((device_type, cur as f64, max as f64))
    }
}

impl Collector for ThermalZoneCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/thermal");
        self.zones.clear();
        self.cooling.clear();
        // One listing for both the zones and the cooling devices.
        let names = self
            .class
            .names(ctx, &class, |_| true)
            .map_err(|e| CollectorError::io(&class, e))?
            .unwrap_or_default();
        for name in numbered_names(&names, "thermal_zone") {
            let dir = class.join(name);
            match self.read_zone(&dir) {
                Ok((zone_type, temp)) => {
                    let zone = name.trim_start_matches("thermal_zone").to_string();
                    self.zones.push((zone, zone_type, temp));
                }
                // A zone whose sensor has no data (ENODATA) or is unreadable is left out.
                Err(e) => {
                    tracing::debug!(zone = %dir.display(), error = %e, "skipping thermal zone")
                }
            }
        }
        for name in numbered_names(&names, "cooling_device") {
            let dir = class.join(name);
            match self.read_cooling(&dir) {
                Ok((device_type, cur, max)) => {
                    let device = name.trim_start_matches("cooling_device").to_string();
                    self.cooling.push((device, device_type, cur, max));
                }
                Err(e) => {
                    tracing::debug!(device = %dir.display(), error = %e, "skipping cooling device")
                }
            }
        }
        if !self.zones.is_empty() {
            let mut f = out.family(
                "node_thermal_zone_temp",
                "Zone temperature in Celsius",
                Kind::Gauge,
            )?;
            for (zone, zone_type, temp) in &self.zones {
                f.sample(&[("zone", zone), ("type", zone_type)], *temp)?;
            }
        }
        if !self.cooling.is_empty() {
            let mut f = out.family(
                "node_cooling_device_cur_state",
                "Current throttle state of the cooling device",
                Kind::Gauge,
            )?;
            for (name, device_type, cur, _) in &self.cooling {
                f.sample(&[("name", name), ("type", device_type)], *cur)?;
            }
            let mut f = out.family(
                "node_cooling_device_max_state",
                "Maximum throttle state of the cooling device",
                Kind::Gauge,
            )?;
            for (name, device_type, _, max) in &self.cooling {
                f.sample(&[("name", name), ("type", device_type)], *max)?;
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
        assert_renders_golden("basic", "thermal_zone", |_| {
            Box::new(ThermalZoneCollector::default())
        });
    }

    #[test]
    fn no_thermal_class_is_an_empty_success() {
        let root = fixture("odd");
        let text = render(
            "thermal_zone",
            Box::new(ThermalZoneCollector::default()),
            Paths::fixture(&root),
        );
        assert!(!text.contains("node_thermal_zone_temp"));
        assert!(text.contains("node_scrape_collector_success{collector=\"thermal_zone\"} 1"));
    }
}
