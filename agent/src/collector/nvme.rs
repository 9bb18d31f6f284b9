//! `nvme`: NVMe controllers and their namespaces from /sys/class/nvme, as node_exporter 1.12.1
//! reports them (prometheus/procfs 0.21.1's `NVMeClass`).
//!
//! Per controller: `firmware_rev`, `model`, `serial`, `state`, `cntlid`. Per namespace directory
//! in the controller's directory whose name contains `nvme<N>n<M>` (procfs's unanchored
//! `nvme\d+n(\d+)`; the per-path `nvmeXcYnZ` devices of native multipath do not match, so such
//! controllers have no namespace metrics, as in 1.12.1): `nuse`, `size`,
//! `queue/logical_block_size` and, when present, `ana_state` ("unknown" otherwise). procfs's
//! arithmetic is kept as is: `size` (512-byte sectors) and `nuse` are both multiplied by the
//! logical block size, and an unparsable number reads as 0.
//!
//! As in 1.12.1, a missing /sys/class/nvme is NoData, and so is any missing attribute (procfs
//! wraps the error, node_exporter tests it with `errors.Is(…, ErrNotExist)`); other read errors
//! fail the collection. Either way nothing is written for that scrape.
//!
//! Cost: the class and each controller directory are listed once per hotplug epoch; the
//! attributes are kept open ([`OpenAttr`]) and re-read each scrape: 5 per controller and 3–4 per
//! namespace.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::{DirListing, OpenAttr, same_listing};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "nvme",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(NvmeCollector::default()))
}

const DEVICE_ATTRS: [&str; 5] = ["firmware_rev", "model", "serial", "state", "cntlid"];
const NAMESPACE_ATTRS: [&str; 4] = ["nuse", "size", "queue/logical_block_size", "ana_state"];

#[derive(Default)]
struct NvmeCollector {
    class: DirListing,
    listed: Option<Arc<[String]>>,
    controllers: Vec<Controller>,
    buf: String,
}

struct Controller {
    name: String,
    dir: PathBuf,
    attrs: [(PathBuf, OpenAttr); 5],
    /// This scrape's values of `attrs`.
    values: [String; 5],
    entries: DirListing,
    listed: Option<Arc<[String]>>,
    namespaces: Vec<Namespace>,
}

struct Namespace {
    id: String,
    attrs: [(PathBuf, OpenAttr); 4],
    ana_state: String,
    used: u64,
    size: u64,
    block_size: u64,
}

fn attrs<const N: usize>(dir: &Path, names: [&str; N]) -> [(PathBuf, OpenAttr); N] {
    names.map(|name| (dir.join(name), OpenAttr::default()))
}

impl Controller {
    fn new(dir: PathBuf, name: &str) -> Self {
        Controller {
            name: name.to_string(),
            attrs: attrs(&dir, DEVICE_ATTRS),
            dir,
            values: Default::default(),
            entries: DirListing::default(),
            listed: None,
            namespaces: Vec::new(),
        }
    }
}

/// procfs's `nvme\d+n(\d+)` found anywhere in `name`: the namespace ID.
pub fn namespace_id(name: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(at) = name[from..].find("nvme") {
        let start = from + at;
        let rest = &name[start + 4..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && let Some(after) = rest[digits..].strip_prefix('n')
        {
            let id_len = after.bytes().take_while(u8::is_ascii_digit).count();
            if id_len > 0 {
                return Some(&after[..id_len]);
            }
        }
        from = start + 1;
    }
    None
}

impl NvmeCollector {
    fn read(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/nvme");
        let names = self
            .class
            .names(ctx, &class, |_| true)
            .map_err(|e| CollectorError::io_or_no_data(&class, e))?;
        if names.is_none() {
            return Err(CollectorError::NoData);
        }
        if !same_listing(&names, &self.listed) {
            self.controllers = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|name| Controller::new(class.join(name), name))
                .collect();
            self.listed = names;
        }
        let buf = &mut self.buf;
        for c in &mut self.controllers {
            for ((path, attr), value) in c.attrs.iter_mut().zip(c.values.iter_mut()) {
                attr.read(path, buf)
                    .map_err(|e| CollectorError::io_or_no_data(path.as_path(), e))?;
                value.clear();
                value.push_str(buf);
            }
            let entries = c
                .entries
                .names(ctx, &c.dir, |_| true)
                .map_err(|e| CollectorError::io_or_no_data(&c.dir, e))?;
            let Some(list) = &entries else {
                return Err(CollectorError::NoData);
            };
            if !same_listing(&entries, &c.listed) {
                c.namespaces = list
                    .iter()
                    .filter_map(|name| {
                        let id = namespace_id(name)?;
                        Some(Namespace {
                            id: id.to_string(),
                            attrs: attrs(&c.dir.join(name), NAMESPACE_ATTRS),
                            ana_state: String::new(),
                            used: 0,
                            size: 0,
                            block_size: 0,
                        })
                    })
                    .collect();
                c.listed = entries;
            }
            for ns in &mut c.namespaces {
                let [nuse, size, block_size, ana] = &mut ns.attrs;
                let mut number = |(path, attr): &mut (PathBuf, OpenAttr)| {
                    attr.read(path, buf)
                        .map_err(|e| CollectorError::io_or_no_data(path.as_path(), e))?;
                    Ok::<_, CollectorError>(buf.parse::<u64>().unwrap_or(0))
                };
                ns.used = number(nuse)?;
                ns.size = number(size)?;
                ns.block_size = number(block_size)?;
                ns.ana_state.clear();
                // procfs skips ana_state on any error: it exists only with ANA.
                match ana.1.read(&ana.0, buf) {
                    Ok(()) => ns.ana_state.push_str(buf),
                    Err(_) => ns.ana_state.push_str("unknown"),
                }
            }
        }
        Ok(())
    }

    fn write(&self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        let mut f = out.family(
            "node_nvme_info",
            "Non-numeric data from /sys/class/nvme/<device>, value is always 1.",
            Kind::Gauge,
        )?;
        for c in &self.controllers {
            let [firmware, model, serial, state, cntlid] = &c.values;
            f.sample(
                &[
                    ("device", &c.name),
                    ("firmware_revision", firmware),
                    ("model", model),
                    ("serial", serial),
                    ("state", state),
                    ("cntlid", cntlid),
                ],
                1.0,
            )?;
        }
        if self.controllers.iter().all(|c| c.namespaces.is_empty()) {
            return Ok(());
        }
        let mut f = out.family(
            "node_nvme_namespace_info",
            "Information about NVMe namespaces. Value is always 1",
            Kind::Gauge,
        )?;
        for c in &self.controllers {
            for ns in &c.namespaces {
                f.sample(
                    &[
                        ("device", &c.name),
                        ("nsid", &ns.id),
                        ("ana_state", &ns.ana_state),
                    ],
                    1.0,
                )?;
            }
        }
        type Value = fn(&Namespace) -> u64;
        let gauges: [(&str, &str, Value); 4] = [
            (
                "node_nvme_namespace_capacity_bytes",
                "Capacity of the NVMe namespace in bytes. Computed as namespace_size * namespace_logical_block_size",
                |ns| ns.size.wrapping_mul(ns.block_size),
            ),
            (
                "node_nvme_namespace_size_bytes",
                "Size of the NVMe namespace in bytes. Available in /sys/class/nvme/<device>/<namespace>/size",
                |ns| ns.size.wrapping_mul(ns.block_size),
            ),
            (
                "node_nvme_namespace_used_bytes",
                "Used space of the NVMe namespace in bytes. Available in /sys/class/nvme/<device>/<namespace>/nuse",
                |ns| ns.used.wrapping_mul(ns.block_size),
            ),
            (
                "node_nvme_namespace_logical_block_size_bytes",
                "Logical block size of the NVMe namespace in bytes. Usually 4Kb. Available in /sys/class/nvme/<device>/<namespace>/queue/logical_block_size",
                |ns| ns.block_size,
            ),
        ];
        for (name, help, value) in gauges {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for c in &self.controllers {
                for ns in &c.namespaces {
                    f.sample(&[("device", &c.name), ("nsid", &ns.id)], value(ns) as f64)?;
                }
            }
        }
        Ok(())
    }
}

impl Collector for NvmeCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.read(ctx)?;
        if self.controllers.is_empty() {
            return Ok(());
        }
        self.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-storage", "nvme", |_| Box::new(NvmeCollector::default()));
    }

    #[test]
    fn namespace_directories() {
        assert_eq!(namespace_id("nvme0n1"), Some("1"));
        assert_eq!(namespace_id("nvme12n34"), Some("34"));
        assert_eq!(namespace_id("nvme0n1p2"), Some("1"));
        assert_eq!(namespace_id("xnvmenvme3n7"), Some("7"));
        assert_eq!(namespace_id("nvme2c2n1"), None);
        assert_eq!(namespace_id("ng0n1"), None);
        assert_eq!(namespace_id("nvme0n"), None);
        assert_eq!(namespace_id("hwmon3"), None);
    }

    fn scrape(root: &Path) -> String {
        render(
            "nvme",
            Box::new(NvmeCollector::default()),
            Paths::fixture(root),
        )
    }

    #[test]
    fn absent_class_or_attribute_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class")).unwrap();
        assert!(scrape(dir.path()).contains("node_scrape_collector_success{collector=\"nvme\"} 0"));
        let ctrl = dir.path().join("sys/class/nvme/nvme0");
        std::fs::create_dir_all(ctrl.join("nvme0n1/queue")).unwrap();
        for (name, value) in [
            ("firmware_rev", "1.0"),
            ("model", "M"),
            ("serial", "S"),
            ("state", "live"),
            ("cntlid", "1"),
            ("nvme0n1/size", "8"),
            ("nvme0n1/nuse", "junk"),
            ("nvme0n1/queue/logical_block_size", "4096"),
        ] {
            std::fs::write(ctrl.join(name), format!("{value}\n")).unwrap();
        }
        let text = scrape(dir.path());
        assert!(text.contains("node_nvme_namespace_used_bytes{device=\"nvme0\",nsid=\"1\"} 0"));
        assert!(text.contains("ana_state=\"unknown\""));
        assert!(text.contains("node_nvme_namespace_size_bytes{device=\"nvme0\",nsid=\"1\"} 32768"));
        std::fs::remove_file(ctrl.join("cntlid")).unwrap();
        let text = scrape(dir.path());
        assert!(!text.contains("node_nvme_info"));
        assert!(text.contains("node_scrape_collector_success{collector=\"nvme\"} 0"));
    }
}
