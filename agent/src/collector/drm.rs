//! `drm`: amdgpu cards from /sys/class/drm/card<digit>/device (the amdgpu sysfs attributes of
//! Documentation/gpu/amdgpu), as node_exporter 1.12.1 reads them through prometheus/procfs:
//! a card whose `device/uevent` (one ≤128-byte read) contains `DRIVER=amdgpu` is reported with
//! its busy percentage, GTT/VRAM/visible-VRAM sizes and use, and `node_drm_card_info`; an
//! attribute that cannot be read is 0 (or "" for the info labels). Only `card0`…`card9` are
//! looked at (procfs's glob is `card[0-9]`). Other cards are skipped.
//!
//! As in 1.12.1, a card whose `device/uevent` cannot be read (but for ENODATA) or whose `device`
//! link does not resolve fails the collection; no card is an empty success. Decision: a numeric
//! attribute that does not parse (procfs dereferences a nil pointer: node_exporter panics) is
//! 0 and counted as malformed. Cost: the class is listed once per hotplug epoch; per amdgpu
//! card a scrape reads its uevent, resolves its device link and reads ten attributes.

use std::path::Path;

use super::gosyntax::parse_go_uint;
use super::source::{DirListing, read_sys_file};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "drm",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(DrmCollector::default()))
}

/// The numeric attributes in family name order: (attribute, metric, help).
const GAUGES: [(&str, &str, &str); 7] = [
    (
        "gpu_busy_percent",
        "node_drm_gpu_busy_percent",
        "How busy the GPU is as a percentage.",
    ),
    (
        "mem_info_gtt_total",
        "node_drm_memory_gtt_size_bytes",
        "The size of the graphics translation table (GTT) block in bytes.",
    ),
    (
        "mem_info_gtt_used",
        "node_drm_memory_gtt_used_bytes",
        "The used amount of the graphics translation table (GTT) block in bytes.",
    ),
    (
        "mem_info_vis_vram_total",
        "node_drm_memory_vis_vram_size_bytes",
        "The size of visible VRAM in bytes.",
    ),
    (
        "mem_info_vis_vram_used",
        "node_drm_memory_vis_vram_used_bytes",
        "The used amount of visible VRAM in bytes.",
    ),
    (
        "mem_info_vram_total",
        "node_drm_memory_vram_size_bytes",
        "The size of VRAM in bytes.",
    ),
    (
        "mem_info_vram_used",
        "node_drm_memory_vram_used_bytes",
        "The used amount of VRAM in bytes.",
    ),
];

#[derive(Default)]
struct Card {
    name: String,
    values: [f64; 7],
    memory_vendor: String,
    performance_level: String,
    unique_id: String,
}

#[derive(Default)]
struct DrmCollector {
    listing: DirListing,
    cards: Vec<Card>,
    buf: String,
}

/// procfs's `parseClassDRMAMDGPUCard`: `Ok(None)` for a card of another driver.
fn read_card(
    ctx: &Context<'_>,
    dir: &Path,
    name: &str,
    buf: &mut String,
) -> Result<Option<Card>, std::io::Error> {
    read_sys_file(&dir.join("device/uevent"), buf)?;
    if !buf.contains("DRIVER=amdgpu") {
        return Ok(None);
    }
    // procfs resolves the device link (for fields no metric uses) and fails on an error.
    std::fs::canonicalize(dir.join("device"))?;
    let mut card = Card {
        name: name.to_string(),
        ..Card::default()
    };
    let device = dir.join("device");
    for (i, (attribute, ..)) in GAUGES.iter().enumerate() {
        let path = device.join(attribute);
        if read_sys_file(&path, buf).is_ok() {
            match parse_go_uint(buf) {
                Some(v) => card.values[i] = v as f64,
                None => ctx.malformed(&path, buf),
            }
        }
    }
    let mut text = |attribute: &str| {
        read_sys_file(&device.join(attribute), buf)
            .map(|()| buf.clone())
            .unwrap_or_default()
    };
    card.memory_vendor = text("mem_info_vram_vendor");
    card.performance_level = text("power_dpm_force_performance_level");
    card.unique_id = text("unique_id");
    Ok(Some(card))
}

impl Collector for DrmCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/drm");
        let names = self
            .listing
            .names(ctx, &class, |_| true)
            .map_err(|e| CollectorError::io(&class, e))?
            .unwrap_or_default();
        self.cards.clear();
        for name in names.iter() {
            let b = name.as_bytes();
            if !(b.len() == 5 && name.starts_with("card") && b[4].is_ascii_digit()) {
                continue;
            }
            let dir = class.join(name);
            match read_card(ctx, &dir, name, &mut self.buf) {
                Ok(Some(card)) => self.cards.push(card),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => return Err(CollectorError::io(dir, e)),
            }
        }
        if self.cards.is_empty() {
            return Ok(());
        }
        let mut f = out.family("node_drm_card_info", "Card information", Kind::Gauge)?;
        for c in &self.cards {
            f.sample(
                &[
                    ("card", &c.name),
                    ("memory_vendor", &c.memory_vendor),
                    ("power_performance_level", &c.performance_level),
                    ("unique_id", &c.unique_id),
                    ("vendor", "amd"),
                ],
                1.0,
            )?;
        }
        for (i, (_, metric, help)) in GAUGES.iter().enumerate() {
            let mut f = out.family(metric, help, Kind::Gauge)?;
            for c in &self.cards {
                f.sample(&[("card", &c.name)], c.values[i])?;
            }
        }
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
        assert_renders_golden("hw-system", "drm", |_| Box::new(DrmCollector::default()));
    }

    #[test]
    fn no_class_is_empty_and_a_card_without_uevent_fails() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render("drm", Box::new(DrmCollector::default()), paths.clone());
        assert!(text.contains("node_scrape_collector_success{collector=\"drm\"} 1"));
        std::fs::create_dir_all(dir.path().join("sys/class/drm/card0")).unwrap();
        let text = render("drm", Box::new(DrmCollector::default()), paths);
        assert!(text.contains("node_scrape_collector_success{collector=\"drm\"} 0"));
    }

    #[test]
    fn uints() {
        assert_eq!(parse_go_uint("42"), Some(42));
        assert_eq!(parse_go_uint("0x10"), Some(16));
        assert_eq!(parse_go_uint("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_go_uint("-1"), None);
        assert_eq!(parse_go_uint("x"), None);
    }
}
