//! `pcidevice`: PCI devices from /sys/bus/pci/devices (Documentation/PCI/sysfs-pci.rst), as
//! node_exporter 1.12.1 reads them through prometheus/procfs: each entry's link target gives the
//! device's and its parent's location (a parent under `pci<domain>:<bus>` is `*`); `class`,
//! `vendor`, `device`, `subsystem_vendor`, `subsystem_device` and `revision` must exist and
//! parse; link speed and width, NUMA node, SR-IOV and power attributes are optional. With
//! `--collector.pcidevice.names`, `node_pcidevice_info` also carries the names from pci.ids
//! (`--collector.pcidevice.idsfile`, else /usr/share/misc/pci.ids or /usr/share/hwdata/pci.ids),
//! read once when the collector is built; an ID not found stays as the bare hex ID.
//!
//! As in 1.12.1: no /sys/bus/pci/devices, or a device lacking a required attribute, is
//! `NoData`; an attribute that does not parse fails the collection; a missing link speed or
//! width is -1, a missing SR-IOV count or d3cold_allowed 0; `numa_node` is reported only when
//! not -1, `power_state` (one sample per state) only when present. Families are written in
//! name order and samples in label order, as client_golang's gathering sorts them.
//! Cost: the device listing, each device's link and its static attributes (IDs, maximum link,
//! NUMA node, SR-IOV capacity) are read once per hotplug epoch; per device and scrape only the
//! attributes that change without hotplug (current link speed and width, power state,
//! d3cold_allowed, sriov_numvfs, sriov_drivers_autoprobe): up to 6 small reads.

use std::collections::HashMap;
use std::path::Path;

use clap::Arg;

use super::flags::{add_bool_flag, bool_flag};
use super::gosyntax::{parse_go_decimal, parse_go_int};
use super::source::{DirListing, read_sys_file};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "pcidevice",
    default_enabled: false,
    flags,
    build,
};

const IDS_FILE: &str = "collector.pcidevice.idsfile";
const NAMES: &str = "collector.pcidevice.names";
const DEFAULT_IDS: [&str; 2] = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

fn flags(command: clap::Command) -> clap::Command {
    let command = command.arg(
        Arg::new(IDS_FILE)
            .long(IDS_FILE)
            .help("Path to pci.ids file to use for PCI device identification."),
    );
    add_bool_flag(
        command,
        NAMES,
        false,
        "Enable PCI device name resolution (requires pci.ids file).",
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let names = bool_flag(ctx, NAMES).then(|| {
        let text = match ctx.flag(IDS_FILE).filter(|f| !f.is_empty()) {
            Some(file) => std::fs::read(file).ok(),
            None => DEFAULT_IDS.iter().find_map(|f| std::fs::read(f).ok()),
        };
        match text {
            Some(text) => PciIds::parse(&String::from_utf8_lossy(&text)),
            None => {
                tracing::debug!("failed to open any PCI IDs file");
                PciIds::default()
            }
        }
    });
    Ok(Box::new(PcideviceCollector::new(names)))
}

/// The names node_exporter loads from pci.ids.
#[derive(Default)]
struct PciIds {
    vendors: HashMap<String, String>,
    devices: HashMap<String, HashMap<String, String>>,
    subsystems: HashMap<String, HashMap<String, String>>,
    classes: HashMap<String, String>,
    subclasses: HashMap<String, String>,
    prog_ifs: HashMap<String, String>,
}

impl PciIds {
    /// node_exporter's `loadPCIIds`, line for line.
    fn parse(text: &str) -> Self {
        let mut ids = PciIds::default();
        let (mut vendor, mut device, mut base_class, mut subclass) =
            (String::new(), String::new(), String::new(), String::new());
        let mut in_class = false;
        let split = |line: &str| -> Option<(String, String)> {
            let (a, b) = line.split_once("  ")?;
            Some((a.trim().to_string(), b.trim().to_string()))
        };
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("C ") {
                if let Some((id, name)) = split(line) {
                    let id = id[1..].trim().to_string();
                    ids.classes.insert(id.clone(), name);
                    base_class = id;
                    in_class = true;
                }
                continue;
            }
            let one_tab = line.starts_with('\t') && !line.starts_with("\t\t");
            if one_tab && in_class {
                if let Some((id, name)) = split(&line[1..])
                    && !base_class.is_empty()
                {
                    let full = format!("{base_class}{id}");
                    ids.subclasses.insert(full.clone(), name);
                    subclass = full;
                }
                continue;
            }
            if line.starts_with("\t\t") && !line.starts_with("\t\t\t") && in_class {
                if let Some((id, name)) = split(&line[2..])
                    && !subclass.is_empty()
                {
                    ids.prog_ifs.insert(format!("{subclass}{id}"), name);
                }
                continue;
            }
            if !line.starts_with('\t') {
                if let Some((id, name)) = split(line) {
                    ids.vendors.insert(id.clone(), name);
                    vendor = id;
                    device.clear();
                    in_class = false;
                }
                continue;
            }
            if one_tab {
                if let Some((id, name)) = split(&line[1..])
                    && !vendor.is_empty()
                {
                    ids.devices
                        .entry(vendor.clone())
                        .or_default()
                        .insert(id.clone(), name);
                    device = id;
                }
                continue;
            }
            if line.starts_with("\t\t")
                && let Some((id, name)) = split(&line[2..])
                && !vendor.is_empty()
                && !device.is_empty()
            {
                let entry = ids
                    .subsystems
                    .entry(format!("{vendor}:{device}"))
                    .or_default();
                let mut parts = id.split_whitespace();
                if let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) {
                    entry.insert(format!("{a}:{b}"), name);
                }
            }
        }
        ids
    }

    fn vendor(&self, id: &str) -> String {
        let id = id.trim_start_matches("0x").to_lowercase();
        self.vendors.get(&id).cloned().unwrap_or(id)
    }

    fn device(&self, vendor: &str, device: &str) -> String {
        let vendor = vendor.trim_start_matches("0x").to_lowercase();
        let device = device.trim_start_matches("0x").to_lowercase();
        self.devices
            .get(&vendor)
            .and_then(|d| d.get(&device))
            .cloned()
            .unwrap_or(device)
    }

    fn subsystem(&self, vendor: &str, device: &str, sub_vendor: &str, sub_device: &str) -> String {
        let strip = |s: &'_ str| s.strip_prefix("0x").unwrap_or(s).to_string();
        let key = format!("{}:{}", strip(vendor), strip(device));
        let sub_key = format!("{}:{}", strip(sub_vendor), strip(sub_device));
        self.subsystems
            .get(&key)
            .and_then(|s| s.get(&sub_key))
            .cloned()
            .unwrap_or_else(|| strip(sub_device))
    }

    fn class(&self, class: &str) -> String {
        let class = class.trim_start_matches("0x").to_lowercase();
        for (len, map) in [
            (6, &self.prog_ifs),
            (4, &self.subclasses),
            (2, &self.classes),
        ] {
            if let Some(name) = class.get(..len).and_then(|c| map.get(c)) {
                return name.clone();
            }
        }
        format!("Unknown class ({class})")
    }
}

struct PcideviceCollector {
    names: Option<PciIds>,
    listing: DirListing,
    buf: String,
    /// The devices read in `cache_epoch`, by entry name: only their [`DYNAMIC`] attributes
    /// are read again in that epoch.
    cache: HashMap<String, Device>,
    cache_epoch: Option<u64>,
}

/// A location's labels: segment, bus, device, function.
type Location = [String; 4];

/// procfs's `parsePciDeviceLocation`, formatted as its `Strings()`.
fn parse_location(text: &str) -> Option<Location> {
    let mut parts = text.split(':');
    let (seg, bus, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut rest = rest.split('.');
    let (dev, func) = (rest.next()?, rest.next()?);
    if rest.next().is_some() {
        return None;
    }
    let hex = |s: &str| -> Option<i64> {
        let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = i64::from_str_radix(s, 16).ok()?;
        (i32::MIN as i64..=i32::MAX as i64)
            .contains(&v)
            .then_some(v)
    };
    let (seg, bus, dev, func) = (hex(seg)?, hex(bus)?, hex(dev)?, hex(func)?);
    Some([
        format!("{seg:04x}"),
        format!("{bus:02x}"),
        format!("{dev:02x}"),
        format!("{func:x}"),
    ])
}

/// The attributes that change without a hotplug event (link training, power management,
/// SR-IOV settings): read every scrape; the others once per hotplug epoch.
const DYNAMIC: [&str; 6] = [
    "current_link_speed",
    "current_link_width",
    "d3cold_allowed",
    "power_state",
    "sriov_numvfs",
    "sriov_drivers_autoprobe",
];

/// One device's values.
#[derive(Clone)]
struct Device {
    location: Location,
    /// The info labels' values in label-name order (see [`info_labels`]).
    info: Vec<String>,
    max_speed: f64,
    max_width: f64,
    cur_speed: f64,
    cur_width: f64,
    numa_node: Option<f64>,
    d3cold: f64,
    autoprobe: f64,
    numvfs: f64,
    totalvfs: f64,
    vf_total_msix: f64,
    power_state: Option<String>,
}

/// Why a device could not be read.
enum DeviceError {
    /// A required attribute or the entry is gone: node_exporter's NoData.
    NotFound,
    Failed(CollectorError),
}

impl From<CollectorError> for DeviceError {
    fn from(e: CollectorError) -> Self {
        DeviceError::Failed(e)
    }
}

fn parse_error(path: &Path, value: &str) -> DeviceError {
    DeviceError::Failed(CollectorError::Parse {
        path: path.to_path_buf(),
        reason: format!("unexpected value {value:?}"),
    })
}

/// Go's `strconv.ParseInt(s, 10, bits)`: decimal, within the range of `bits`.
fn go_decimal(s: &str, min: i64, max: i64) -> Option<i64> {
    parse_go_decimal(s).filter(|v| (min..=max).contains(v))
}

impl PcideviceCollector {
    fn new(names: Option<PciIds>) -> Self {
        PcideviceCollector {
            names,
            listing: DirListing::default(),
            buf: String::new(),
            cache: HashMap::new(),
            cache_epoch: None,
        }
    }

    /// A device's values: from the cache when read in this epoch, with its dynamic attributes
    /// read again.
    fn device(
        &mut self,
        ctx: &Context<'_>,
        root: &Path,
        name: &str,
    ) -> Result<Device, DeviceError> {
        if self.cache_epoch.is_some()
            && self.cache_epoch == ctx.hotplug_epoch()
            && let Some(mut d) = self.cache.get(name).cloned()
        {
            self.read_attributes(&root.join(name), &mut d, true)?;
            return Ok(d);
        }
        let d = self.read_device(root, name)?;
        if ctx.hotplug_epoch().is_some() {
            self.cache.insert(name.to_string(), d.clone());
        }
        Ok(d)
    }

    /// Reads an optional attribute: `Ok(false)` when absent or empty.
    fn optional(&mut self, path: &Path) -> Result<bool, DeviceError> {
        match read_sys_file(path, &mut self.buf) {
            Ok(()) => Ok(!self.buf.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CollectorError::io(path, e).into()),
        }
    }

    fn read_device(&mut self, devices: &Path, name: &str) -> Result<Device, DeviceError> {
        let path = devices.join(name);
        let target = match std::fs::read_link(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DeviceError::NotFound);
            }
            Err(e) => return Err(CollectorError::io(&path, e).into()),
        };
        let base = target.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent = target
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        let base = base.unwrap_or_default();
        let location = parse_location(&base).ok_or_else(|| parse_error(&path, &base))?;
        let parent = if parent.starts_with("pci") {
            None
        } else {
            Some(parse_location(&parent).ok_or_else(|| parse_error(&path, &parent))?)
        };
        let mut ids = [0i64; 6];
        for (i, attribute) in [
            "class",
            "vendor",
            "device",
            "subsystem_vendor",
            "subsystem_device",
            "revision",
        ]
        .iter()
        .enumerate()
        {
            let file = path.join(attribute);
            match read_sys_file(&file, &mut self.buf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(DeviceError::NotFound);
                }
                Err(e) => return Err(CollectorError::io(&file, e).into()),
            }
            ids[i] = parse_go_int(&self.buf)
                .filter(|v| (i32::MIN as i64..=i32::MAX as i64).contains(v))
                .ok_or_else(|| parse_error(&file, &self.buf))?;
        }
        let [class, vendor, device, sub_vendor, sub_device, revision] = ids.map(|v| v as u32);
        let (class_id, vendor_id, device_id) = (
            format!("0x{class:06x}"),
            format!("0x{vendor:04x}"),
            format!("0x{device:04x}"),
        );
        let (sub_vendor_id, sub_device_id) =
            (format!("0x{sub_vendor:04x}"), format!("0x{sub_device:04x}"));
        let star = || ["*", "*", "*", "*"].map(String::from);
        let [p_seg, p_bus, p_dev, p_func] = parent.unwrap_or_else(star);
        let [seg, bus, dev, func] = location.clone();
        // Label-name order: bus, class_id, [class_name], device, device_id, [device_name],
        // function, parent_bus, parent_device, parent_function, parent_segment, revision,
        // segment, subsystem_device_id, [subsystem_device_name], subsystem_vendor_id,
        // [subsystem_vendor_name], vendor_id, [vendor_name].
        let names = self.names.as_ref().map(|ids| {
            (
                ids.class(&class_id),
                ids.device(&vendor_id, &device_id),
                ids.subsystem(&vendor_id, &device_id, &sub_vendor_id, &sub_device_id),
                ids.vendor(&sub_vendor_id),
                ids.vendor(&vendor_id),
            )
        });
        let mut info = vec![bus, class_id];
        if let Some(n) = &names {
            info.push(n.0.clone());
        }
        info.extend([dev, device_id.clone()]);
        if let Some(n) = &names {
            info.push(n.1.clone());
        }
        info.extend([
            func,
            p_bus,
            p_dev,
            p_func,
            p_seg,
            format!("0x{revision:02x}"),
            seg,
        ]);
        info.push(sub_device_id);
        if let Some(n) = &names {
            info.push(n.2.clone());
        }
        info.push(sub_vendor_id);
        if let Some(n) = &names {
            info.push(n.3.clone());
        }
        info.push(vendor_id);
        if let Some(n) = names {
            info.push(n.4);
        }
        let mut d = Device {
            location,
            info,
            max_speed: -1.0,
            max_width: -1.0,
            cur_speed: -1.0,
            cur_width: -1.0,
            numa_node: None,
            d3cold: 0.0,
            autoprobe: 0.0,
            numvfs: 0.0,
            totalvfs: 0.0,
            vf_total_msix: 0.0,
            power_state: None,
        };
        self.read_attributes(&path, &mut d, false)?;
        Ok(d)
    }

    /// Reads the optional attributes into `d`: all of them, or only those that change
    /// without a hotplug event ([`DYNAMIC`]), reset first.
    fn read_attributes(
        &mut self,
        path: &Path,
        d: &mut Device,
        only_dynamic: bool,
    ) -> Result<(), DeviceError> {
        if only_dynamic {
            d.cur_speed = -1.0;
            d.cur_width = -1.0;
            d.d3cold = 0.0;
            d.autoprobe = 0.0;
            d.numvfs = 0.0;
            d.power_state = None;
        }
        for attribute in [
            "max_link_speed",
            "max_link_width",
            "current_link_speed",
            "current_link_width",
            "numa_node",
        ] {
            if only_dynamic && !DYNAMIC.contains(&attribute) {
                continue;
            }
            let file = path.join(attribute);
            if !self.optional(&file)? || self.buf.starts_with("Unknown") {
                continue;
            }
            let value = &self.buf;
            match attribute {
                "max_link_speed" | "current_link_speed" => {
                    // "8.0 GT/s PCIe"
                    let speed = match value.split_once(' ') {
                        Some((number, "GT/s PCIe")) => number
                            .trim()
                            .parse::<f64>()
                            .map_err(|_| parse_error(&file, value))?,
                        _ => return Err(parse_error(&file, value)),
                    };
                    if attribute == "max_link_speed" {
                        d.max_speed = speed * 1e9;
                    } else {
                        d.cur_speed = speed * 1e9;
                    }
                }
                "max_link_width" | "current_link_width" => {
                    let width = go_decimal(value, i64::MIN, i64::MAX)
                        .ok_or_else(|| parse_error(&file, value))?
                        as f64;
                    if attribute == "max_link_width" {
                        d.max_width = width;
                    } else {
                        d.cur_width = width;
                    }
                }
                _ => {
                    let node = go_decimal(value, i32::MIN as i64, i32::MAX as i64)
                        .ok_or_else(|| parse_error(&file, value))?;
                    d.numa_node = Some(node as f64);
                }
            }
        }
        let u32_max = u32::MAX as i64;
        for attribute in [
            "sriov_drivers_autoprobe",
            "sriov_numvfs",
            "sriov_offset",
            "sriov_stride",
            "sriov_totalvfs",
            "sriov_vf_device",
            "sriov_vf_total_msix",
            "d3cold_allowed",
            "power_state",
        ] {
            if only_dynamic && !DYNAMIC.contains(&attribute) {
                continue;
            }
            let file = path.join(attribute);
            if !self.optional(&file)? {
                continue;
            }
            let value = self.buf.as_str();
            let unsigned = |max: i64| {
                if value.starts_with(['+', '-']) {
                    return None;
                }
                go_decimal(value, 0, max)
            };
            match attribute {
                "sriov_drivers_autoprobe" | "d3cold_allowed" => {
                    let v = go_decimal(value, i32::MIN as i64, i32::MAX as i64)
                        .ok_or_else(|| parse_error(&file, value))?;
                    let v = if v != 0 { 1.0 } else { 0.0 };
                    if attribute == "d3cold_allowed" {
                        d.d3cold = v;
                    } else {
                        d.autoprobe = v;
                    }
                }
                "sriov_numvfs" => {
                    d.numvfs = unsigned(u32_max).ok_or_else(|| parse_error(&file, value))? as f64
                }
                "sriov_totalvfs" => {
                    d.totalvfs = unsigned(u32_max).ok_or_else(|| parse_error(&file, value))? as f64
                }
                "sriov_offset" | "sriov_stride" => {
                    unsigned(u32_max).ok_or_else(|| parse_error(&file, value))?;
                }
                "sriov_vf_device" => {
                    let ok =
                        !value.starts_with(['+', '-']) && u32::from_str_radix(value, 16).is_ok();
                    if !ok {
                        return Err(parse_error(&file, value));
                    }
                }
                "sriov_vf_total_msix" => {
                    if value.starts_with(['+', '-']) {
                        return Err(parse_error(&file, value));
                    }
                    d.vf_total_msix = value
                        .parse::<u64>()
                        .map_err(|_| parse_error(&file, value))?
                        as f64;
                }
                _ => d.power_state = Some(value.to_string()),
            }
        }
        Ok(())
    }
}

/// The location families in name order: (metric, help, value).
type Value = fn(&Device) -> Option<f64>;
const FAMILIES: [(&str, &str, Value); 11] = [
    (
        "node_pcidevice_current_link_transfers_per_second",
        "Value of current link's transfers per second (T/s)",
        |d| Some(d.cur_speed),
    ),
    (
        "node_pcidevice_current_link_width",
        "Value of current link's width (number of lanes)",
        |d| Some(d.cur_width),
    ),
    (
        "node_pcidevice_d3cold_allowed",
        "Whether the PCIe device supports D3cold power state (0/1).",
        |d| Some(d.d3cold),
    ),
    (
        "node_pcidevice_max_link_transfers_per_second",
        "Value of maximum link's transfers per second (T/s)",
        |d| Some(d.max_speed),
    ),
    (
        "node_pcidevice_max_link_width",
        "Value of maximum link's width (number of lanes)",
        |d| Some(d.max_width),
    ),
    (
        "node_pcidevice_numa_node",
        "NUMA node number for the PCI device. -1 indicates unknown or not available.",
        |d| d.numa_node.filter(|n| *n != -1.0),
    ),
    // power_state is written apart (one sample per state).
    (
        "node_pcidevice_power_state",
        "PCIe device power state, one of: D0, D1, D2, D3hot, D3cold, unknown or error.",
        |_| None,
    ),
    (
        "node_pcidevice_sriov_drivers_autoprobe",
        "Whether SR-IOV drivers autoprobe is enabled for the device (0/1).",
        |d| Some(d.autoprobe),
    ),
    (
        "node_pcidevice_sriov_numvfs",
        "Number of Virtual Functions (VFs) currently enabled for SR-IOV.",
        |d| Some(d.numvfs),
    ),
    (
        "node_pcidevice_sriov_totalvfs",
        "Total number of Virtual Functions (VFs) supported by the device.",
        |d| Some(d.totalvfs),
    ),
    (
        "node_pcidevice_sriov_vf_total_msix",
        "Total number of MSI-X vectors for Virtual Functions.",
        |d| Some(d.vf_total_msix),
    ),
];

/// The info metric's label names, in name order.
fn info_labels(names: bool) -> &'static [&'static str] {
    if names {
        &[
            "bus",
            "class_id",
            "class_name",
            "device",
            "device_id",
            "device_name",
            "function",
            "parent_bus",
            "parent_device",
            "parent_function",
            "parent_segment",
            "revision",
            "segment",
            "subsystem_device_id",
            "subsystem_device_name",
            "subsystem_vendor_id",
            "subsystem_vendor_name",
            "vendor_id",
            "vendor_name",
        ]
    } else {
        &[
            "bus",
            "class_id",
            "device",
            "device_id",
            "function",
            "parent_bus",
            "parent_device",
            "parent_function",
            "parent_segment",
            "revision",
            "segment",
            "subsystem_device_id",
            "subsystem_vendor_id",
            "vendor_id",
        ]
    }
}

const POWER_STATES: [&str; 7] = ["D0", "D1", "D2", "D3hot", "D3cold", "unknown", "error"];

impl Collector for PcideviceCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let root = ctx.paths.sys("bus/pci/devices");
        let Some(names) = self
            .listing
            .names(ctx, &root, |_| true)
            .map_err(|e| CollectorError::io(&root, e))?
        else {
            return Err(CollectorError::NoData);
        };
        if self.cache_epoch != ctx.hotplug_epoch() || ctx.hotplug_epoch().is_none() {
            self.cache.clear();
            self.cache_epoch = ctx.hotplug_epoch();
        }
        let mut devices = Vec::with_capacity(names.len());
        for name in names.iter() {
            match self.device(ctx, &root, name) {
                Ok(d) => devices.push(d),
                Err(DeviceError::NotFound) => return Err(CollectorError::NoData),
                Err(DeviceError::Failed(e)) => return Err(e),
            }
        }
        // Label order: bus, device, function, segment.
        let key = |l: &Location| [l[1].clone(), l[2].clone(), l[3].clone(), l[0].clone()];
        devices.sort_by_key(|d| key(&d.location));
        let loc_labels = |d: &Device| -> [(&'static str, String); 4] {
            let [seg, bus, dev, func] = d.location.clone();
            [
                ("bus", bus),
                ("device", dev),
                ("function", func),
                ("segment", seg),
            ]
        };
        for (metric, help, value) in FAMILIES {
            if metric == "node_pcidevice_power_state" {
                if devices.iter().all(|d| d.power_state.is_none()) {
                    continue;
                }
                let mut f = out.family(metric, help, Kind::Gauge)?;
                for d in &devices {
                    let Some(current) = &d.power_state else {
                        continue;
                    };
                    let l = loc_labels(d);
                    let mut states = POWER_STATES;
                    states.sort();
                    for state in states {
                        let v = if state == current { 1.0 } else { 0.0 };
                        f.sample(
                            &[
                                (l[0].0, &l[0].1),
                                (l[1].0, &l[1].1),
                                (l[2].0, &l[2].1),
                                (l[3].0, &l[3].1),
                                ("state", state),
                            ],
                            v,
                        )?;
                    }
                }
                continue;
            }
            if metric == "node_pcidevice_max_link_transfers_per_second" {
                // node_pcidevice_info sorts before it.
                let labels = info_labels(self.names.is_some());
                let mut infos: Vec<&Device> = devices.iter().collect();
                infos.sort_by(|a, b| a.info.cmp(&b.info));
                let mut f = out.family(
                    "node_pcidevice_info",
                    "Non-numeric data from /sys/bus/pci/devices/<location>, value is always 1.",
                    Kind::Gauge,
                )?;
                for d in infos {
                    let pairs: Vec<(&str, &str)> = labels
                        .iter()
                        .zip(&d.info)
                        .map(|(l, v)| (*l, v.as_str()))
                        .collect();
                    f.sample(&pairs, 1.0)?;
                }
            }
            if devices.iter().all(|d| value(d).is_none()) {
                continue;
            }
            let mut f = out.family(metric, help, Kind::Gauge)?;
            for d in &devices {
                if let Some(v) = value(d) {
                    let l = loc_labels(d);
                    f.sample(
                        &[
                            (l[0].0, &l[0].1),
                            (l[1].0, &l[1].1),
                            (l[2].0, &l[2].1),
                            (l[3].0, &l[3].1),
                        ],
                        v,
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, build_with, fixture, render};

    fn render_with(args: &[&str]) -> String {
        let root = fixture("hw-system");
        let paths = Paths::fixture(&root);
        let collector = build_with(&REGISTRATION, args, &paths);
        render("pcidevice", collector, paths)
    }

    #[test]
    fn golden() {
        let golden = fixture("hw-system").join("golden");
        assert_golden(&golden.join("pcidevice.prom"), &render_with(&[]));
        let ids = fixture("hw-system").join("pci.ids");
        let ids_flag = format!("--collector.pcidevice.idsfile={}", ids.display());
        assert_golden(
            &golden.join("pcidevice-names.prom"),
            &render_with(&["--collector.pcidevice.names", &ids_flag]),
        );
    }

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("0000:3b:00.1"),
            Some(["0000", "3b", "00", "1"].map(String::from))
        );
        assert_eq!(parse_location("pci0000:00"), None);
        assert_eq!(parse_location("0000:3b:00"), None);
        assert_eq!(parse_location("0000:3g:00.0"), None);
    }

    #[test]
    fn no_bus_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "pcidevice",
            Box::new(PcideviceCollector::new(None)),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"pcidevice\"} 0"));
    }

    #[test]
    fn pci_ids() {
        let ids = PciIds::parse(
            "# comment\n8086  Intel Corporation\n\t1572  Ethernet Controller X710 for 10GbE SFP+\n\t\t8086 0001  Ethernet Converged Network Adapter X710-4\nC 01  Mass storage controller\n\t08  Non-Volatile memory controller\n\t\t02  NVM Express\nC 06  Bridge\n\t04  PCI bridge\n",
        );
        assert_eq!(ids.vendor("0x8086"), "Intel Corporation");
        assert_eq!(ids.vendor("0x10de"), "10de");
        assert_eq!(
            ids.device("0x8086", "0x1572"),
            "Ethernet Controller X710 for 10GbE SFP+"
        );
        assert_eq!(
            ids.subsystem("0x8086", "0x1572", "0x8086", "0x0001"),
            "Ethernet Converged Network Adapter X710-4"
        );
        assert_eq!(
            ids.subsystem("0x8086", "0x1572", "0x8086", "0x0002"),
            "0002"
        );
        assert_eq!(ids.class("0x010802"), "NVM Express");
        assert_eq!(ids.class("0x060400"), "PCI bridge");
        assert_eq!(ids.class("0x068000"), "Bridge");
        assert_eq!(ids.class("0x0c0330"), "Unknown class (0c0330)");
    }

    #[test]
    fn static_attributes_are_cached_for_the_epoch_only() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = sys.join("devices/pci0000:00/0000:00:1f.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:1f.0",
            sys.join("bus/pci/devices/0000:00:1f.0"),
        )
        .unwrap();
        for (file, value) in [
            ("class", "0x060100"),
            ("vendor", "0x8086"),
            ("device", "0x1bca"),
            ("subsystem_vendor", "0x8086"),
            ("subsystem_device", "0x0000"),
            ("revision", "0x09"),
            ("numa_node", "0"),
            ("power_state", "D0"),
        ] {
            std::fs::write(dev.join(file), format!("{value}\n")).unwrap();
        }
        let paths = Paths::fixture(dir.path());
        let malformed = std::sync::atomic::AtomicU64::new(0);
        let mut c = PcideviceCollector::new(None);
        let root = paths.sys("bus/pci/devices");
        let at = |epoch| Context::new(&paths, &malformed).with_hotplug_epoch(epoch);
        let d = c.device(&at(Some(1)), &root, "0000:00:1f.0").ok().unwrap();
        assert_eq!(
            (d.numa_node, d.power_state.as_deref()),
            (Some(0.0), Some("D0"))
        );
        std::fs::write(dev.join("numa_node"), "1\n").unwrap();
        std::fs::write(dev.join("power_state"), "D3hot\n").unwrap();
        c.cache_epoch = Some(1);
        let d = c.device(&at(Some(1)), &root, "0000:00:1f.0").ok().unwrap();
        assert_eq!(
            (d.numa_node, d.power_state.as_deref()),
            (Some(0.0), Some("D3hot"))
        );
        c.cache.clear();
        c.cache_epoch = Some(2);
        let d = c.device(&at(Some(2)), &root, "0000:00:1f.0").ok().unwrap();
        assert_eq!(d.numa_node, Some(1.0));
    }
}
