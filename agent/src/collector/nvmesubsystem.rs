//! `nvmesubsystem`: NVMe subsystems and the health of their controller paths from
//! /sys/class/nvme-subsystem, as node_exporter 1.12.1 reports them (prometheus/procfs 0.21.1's
//! `NVMeSubsystemClass`).
//!
//! Per `nvme-subsys*` entry: `subsysnqn`, `model`, `serial`, `iopolicy`; its `nvme<N>` entries
//! are the controllers (`state`, `transport`, `address`), its `nvme<N>n<M>` entries the
//! multipath namespace heads. A controller state outside 1.12.1's map is "unknown";
//! "deleting (no IO)" is "deleting".
//!
//! As in 1.12.1: no /sys/class/nvme-subsystem, or any missing or forbidden file on the way
//! (`iopolicy` without CONFIG_NVME_MULTIPATH, say), is NoData; other read errors fail the
//! collection; nothing is written either way.
//!
//! Cost: the class and each subsystem directory are listed once per hotplug epoch; per
//! subsystem 4 attributes and per controller 3 are kept open ([`OpenAttr`]) and re-read each
//! scrape (`address` only for 1.12.1's error semantics).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::{DirListing, OpenAttr, entry_digits, same_listing};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "nvmesubsystem",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(NvmeSubsystemCollector::default()))
}

/// 1.12.1's `nvmeMetricStates`: the mapped states and "unknown", sorted.
const STATES: [&str; 7] = [
    "connecting",
    "dead",
    "deleting",
    "live",
    "new",
    "resetting",
    "unknown",
];

/// 1.12.1's `normalizeControllerState`.
fn normalize(raw: &str) -> &'static str {
    match raw {
        "live" => "live",
        "connecting" => "connecting",
        "resetting" => "resetting",
        "dead" => "dead",
        "deleting" | "deleting (no IO)" => "deleting",
        "new" => "new",
        _ => "unknown",
    }
}

type Attr = (PathBuf, OpenAttr);

fn attrs<const N: usize>(dir: &Path, names: [&str; N]) -> [Attr; N] {
    names.map(|name| (dir.join(name), OpenAttr::default()))
}

#[derive(Default)]
struct NvmeSubsystemCollector {
    class: DirListing,
    listed: Option<Arc<[String]>>,
    subsystems: Vec<Subsystem>,
    buf: String,
}

struct Subsystem {
    name: String,
    dir: PathBuf,
    /// subsysnqn, model, serial, iopolicy.
    attrs: [Attr; 4],
    values: [String; 4],
    entries: DirListing,
    listed: Option<Arc<[String]>>,
    controllers: Vec<Controller>,
    namespaces: Vec<String>,
}

struct Controller {
    name: String,
    /// state, transport, address.
    attrs: [Attr; 3],
    state: &'static str,
    transport: String,
}

/// `^nvme\d+$`.
fn is_controller(name: &str) -> bool {
    entry_digits(name, "nvme").is_some_and(|d| d.len() + 4 == name.len())
}

/// `^nvme\d+n\d+$`.
fn is_namespace(name: &str) -> bool {
    entry_digits(name, "nvme").is_some_and(|d| {
        name[4 + d.len()..]
            .strip_prefix('n')
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// NoData for a missing or forbidden file, as 1.12.1's `errors.Is` checks make it.
fn read_error(path: &Path, e: std::io::Error) -> CollectorError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return CollectorError::NoData;
    }
    CollectorError::io_or_no_data(path, e)
}

impl NvmeSubsystemCollector {
    fn read(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/nvme-subsystem");
        let names = self
            .class
            .names(ctx, &class, |e| {
                e.file_name().to_string_lossy().starts_with("nvme-subsys")
            })
            .map_err(|e| read_error(&class, e))?;
        if names.is_none() {
            return Err(CollectorError::NoData);
        }
        if !same_listing(&names, &self.listed) {
            self.subsystems = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|name| {
                    let dir = class.join(name);
                    Subsystem {
                        name: name.clone(),
                        attrs: attrs(&dir, ["subsysnqn", "model", "serial", "iopolicy"]),
                        dir,
                        values: Default::default(),
                        entries: DirListing::default(),
                        listed: None,
                        controllers: Vec::new(),
                        namespaces: Vec::new(),
                    }
                })
                .collect();
            self.listed = names;
        }
        let buf = &mut self.buf;
        for s in &mut self.subsystems {
            for ((path, attr), value) in s.attrs.iter_mut().zip(s.values.iter_mut()) {
                attr.read(path, buf).map_err(|e| read_error(path, e))?;
                value.clone_from(buf);
            }
            let entries = s
                .entries
                .names(ctx, &s.dir, |_| true)
                .map_err(|e| read_error(&s.dir, e))?;
            if entries.is_none() {
                return Err(CollectorError::NoData);
            }
            if !same_listing(&entries, &s.listed) {
                let list = entries.iter().flat_map(|n| n.iter());
                s.controllers = list
                    .clone()
                    .filter(|n| is_controller(n))
                    .map(|n| Controller {
                        name: n.clone(),
                        attrs: attrs(&s.dir.join(n), ["state", "transport", "address"]),
                        state: "unknown",
                        transport: String::new(),
                    })
                    .collect();
                s.namespaces = list.filter(|n| is_namespace(n)).cloned().collect();
                s.listed = entries;
            }
            for c in &mut s.controllers {
                let [state, transport, address] = &mut c.attrs;
                state
                    .1
                    .read(&state.0, buf)
                    .map_err(|e| read_error(&state.0, e))?;
                c.state = normalize(buf);
                transport
                    .1
                    .read(&transport.0, buf)
                    .map_err(|e| read_error(&transport.0, e))?;
                c.transport.clone_from(buf);
                address
                    .1
                    .read(&address.0, buf)
                    .map_err(|e| read_error(&address.0, e))?;
            }
        }
        Ok(())
    }

    fn write(&self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        if self.subsystems.is_empty() {
            return Ok(());
        }
        let mut f = out.family(
            "node_nvmesubsystem_info",
            "Non-numeric information about an NVMe subsystem.",
            Kind::Gauge,
        )?;
        for s in &self.subsystems {
            let [nqn, model, serial, iopolicy] = &s.values;
            f.sample(
                &[
                    ("subsystem", &s.name),
                    ("nqn", nqn),
                    ("model", model),
                    ("serial", serial),
                    ("iopolicy", iopolicy),
                ],
                1.0,
            )?;
        }
        if self.subsystems.iter().any(|s| !s.namespaces.is_empty()) {
            let mut f = out.family(
                "node_nvmesubsystem_namespace_info",
                "Maps an NVMe namespace block device to its subsystem.",
                Kind::Gauge,
            )?;
            for s in &self.subsystems {
                for ns in &s.namespaces {
                    f.sample(&[("subsystem", &s.name), ("device", ns)], 1.0)?;
                }
            }
        }
        if self.subsystems.iter().any(|s| !s.controllers.is_empty()) {
            let mut f = out.family(
                "node_nvmesubsystem_path_state",
                "Current NVMe controller path state (1 for the current state, 0 for all others).",
                Kind::Gauge,
            )?;
            for s in &self.subsystems {
                for c in &s.controllers {
                    for state in STATES {
                        f.sample(
                            &[
                                ("subsystem", &s.name),
                                ("controller", &c.name),
                                ("transport", &c.transport),
                                ("state", state),
                            ],
                            if state == c.state { 1.0 } else { 0.0 },
                        )?;
                    }
                }
            }
        }
        let mut f = out.family(
            "node_nvmesubsystem_paths",
            "Number of controller paths for an NVMe subsystem.",
            Kind::Gauge,
        )?;
        for s in &self.subsystems {
            f.sample(&[("subsystem", &s.name)], s.controllers.len() as f64)?;
        }
        let mut f = out.family(
            "node_nvmesubsystem_paths_live",
            "Number of controller paths in live state for an NVMe subsystem.",
            Kind::Gauge,
        )?;
        for s in &self.subsystems {
            let live = s.controllers.iter().filter(|c| c.state == "live").count();
            f.sample(&[("subsystem", &s.name)], live as f64)?;
        }
        Ok(())
    }
}

impl Collector for NvmeSubsystemCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.read(ctx)?;
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
        assert_renders_golden("hw-storage", "nvmesubsystem", |_| {
            Box::new(NvmeSubsystemCollector::default())
        });
    }

    #[test]
    fn names_and_states() {
        assert!(is_controller("nvme0") && is_controller("nvme12"));
        assert!(!is_controller("nvme0n1") && !is_controller("nvme") && !is_controller("nvme0c0n1"));
        assert!(is_namespace("nvme0n1") && is_namespace("nvme10n23"));
        assert!(
            !is_namespace("nvme0n") && !is_namespace("nvme0c0n1") && !is_namespace("nvme0n1p1")
        );
        assert_eq!(normalize("deleting (no IO)"), "deleting");
        assert_eq!(normalize("Live"), "unknown");
    }

    #[test]
    fn missing_sources_are_no_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class")).unwrap();
        let scrape = || {
            render(
                "nvmesubsystem",
                Box::new(NvmeSubsystemCollector::default()),
                Paths::fixture(dir.path()),
            )
        };
        let failed = "node_scrape_collector_success{collector=\"nvmesubsystem\"} 0";
        assert!(scrape().contains(failed));
        let s = dir.path().join("sys/class/nvme-subsystem/nvme-subsys0");
        std::fs::create_dir_all(s.join("nvme0")).unwrap();
        for f in [
            "subsysnqn",
            "model",
            "serial",
            "nvme0/state",
            "nvme0/transport",
        ] {
            std::fs::write(s.join(f), "x\n").unwrap();
        }
        // No iopolicy (no native multipath), then no controller address.
        assert!(scrape().contains(failed));
        std::fs::write(s.join("iopolicy"), "numa\n").unwrap();
        assert!(scrape().contains(failed));
        std::fs::write(s.join("nvme0/address"), "0000:01:00.0\n").unwrap();
        let text = scrape();
        assert!(text.contains(
            "node_nvmesubsystem_path_state{subsystem=\"nvme-subsys0\",controller=\"nvme0\",transport=\"x\",state=\"unknown\"} 1"
        ));
        assert!(text.contains("node_nvmesubsystem_paths_live{subsystem=\"nvme-subsys0\"} 0"));
    }
}
