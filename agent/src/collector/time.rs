//! `time`: the system clock (node_time_seconds), the local time zone's offset and the kernel's
//! clocksources from /sys/devices/system/clocksource.

use std::ffi::CStr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Paths,
    Registration, no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "time",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(TimeCollector::default()))
}

struct Clocksource {
    /// node_exporter's `device` label: the position in the sorted directory listing.
    device: String,
    available_source: SourceFile,
    current_source: SourceFile,
    available: String,
    current: String,
}

#[derive(Default)]
struct TimeCollector {
    /// Listed on the first scrape: clocksource devices are registered at boot.
    clocksources: Option<Vec<Clocksource>>,
    zone: String,
}

/// The local time zone's abbreviation and offset east of UTC in seconds at `unix_seconds`, as
/// the C library sees it (TZ, else /etc/localtime).
pub fn local_zone(unix_seconds: i64, name: &mut String) -> Option<i64> {
    let t = libc::time_t::try_from(unix_seconds).ok()?;
    // SAFETY: localtime_r only writes the tm we own; tm_zone then points at static storage in
    // the C library, valid until the next tzset, and is copied out straight away.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        name.clear();
        if !tm.tm_zone.is_null() {
            name.push_str(&CStr::from_ptr(tm.tm_zone).to_string_lossy());
        }
        Some(tm.tm_gmtoff as i64)
    }
}

fn list_clocksources(paths: &Paths) -> Result<Vec<Clocksource>, CollectorError> {
    let dir = paths.sys("devices/system/clocksource");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        // No clocksources exported: nothing to report, as node_exporter's empty glob.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CollectorError::io(&dir, e)),
    };
    // Sorted by name (clocksource10 before clocksource2), as node_exporter's glob is.
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix("clocksource")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    names.sort_unstable();
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Clocksource {
            device: i.to_string(),
            available_source: SourceFile::at(dir.join(&name).join("available_clocksource")),
            current_source: SourceFile::at(dir.join(&name).join("current_clocksource")),
            available: String::new(),
            current: String::new(),
        })
        .collect())
}

impl Collector for TimeCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        out.gauge(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            now.as_secs_f64(),
        )?;
        if let Some(offset) = local_zone(now.as_secs() as i64, &mut self.zone) {
            out.single(
                "node_time_zone_offset_seconds",
                "System time zone offset in seconds.",
                Kind::Gauge,
                &[("time_zone", &self.zone)],
                offset as f64,
            )?;
        }

        if self.clocksources.is_none() {
            self.clocksources = Some(list_clocksources(ctx.paths)?);
        }
        let clocksources = self.clocksources.as_deref_mut().unwrap_or_default();
        for cs in clocksources.iter_mut() {
            cs.available_source
                .read_into(ctx.paths, &mut cs.available)?;
            cs.current_source.read_into(ctx.paths, &mut cs.current)?;
        }
        if clocksources.is_empty() {
            return Ok(());
        }
        let mut family = out.family(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
            Kind::Gauge,
        )?;
        for cs in clocksources.iter() {
            for name in cs.available.split_ascii_whitespace() {
                family.sample(&[("device", &cs.device), ("clocksource", name)], 1.0)?;
            }
        }
        let mut family = out.family(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
            Kind::Gauge,
        )?;
        for cs in clocksources.iter() {
            family.sample(
                &[("device", &cs.device), ("clocksource", cs.current.trim())],
                1.0,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, fixture, render};

    /// The clock and zone lines change every run; the golden holds the clocksource part.
    fn without_clock(text: &str) -> String {
        text.lines()
            .filter(|l| {
                !l.starts_with("node_time_seconds ")
                    && !l.starts_with("node_time_zone_offset_seconds{")
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn golden() {
        let root = fixture("basic");
        let text = render(
            "time",
            Box::new(TimeCollector::default()),
            Paths::fixture(&root),
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let clock: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("node_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((clock - now).abs() < 60.0, "{clock} vs {now}");
        assert!(text.contains("node_time_zone_offset_seconds{time_zone="));
        assert_golden(&root.join("golden/time.prom"), &without_clock(&text));
    }

    #[test]
    fn local_zone_is_plausible() {
        // The test process's zone is whatever the machine has; only the shape is checked.
        let mut name = String::new();
        let offset = local_zone(0, &mut name).unwrap();
        assert!(offset.abs() <= 14 * 3600);
        assert!(!name.is_empty());
    }

    #[test]
    fn missing_clocksources_are_not_an_error() {
        let root = fixture("odd");
        let text = render(
            "time",
            Box::new(TimeCollector::default()),
            Paths::fixture(&root),
        );
        assert!(text.contains("\nnode_time_seconds "));
        assert!(!text.contains("clocksource"));
        assert!(text.contains("node_scrape_collector_success{collector=\"time\"} 1"));
    }

    #[test]
    fn unreadable_clocksource_attributes_fail_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(
            dir.path()
                .join("sys/devices/system/clocksource/clocksource0"),
        )
        .unwrap();
        let text = render(
            "time",
            Box::new(TimeCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("\nnode_time_seconds "));
        assert!(text.contains("node_scrape_collector_success{collector=\"time\"} 0"));
    }
}
