//! The agent's fragment task (issue 17): the `[fragments]` settings (global, with per-device
//! overrides for declared storage devices), and the background thread that keeps each device's
//! `DeviceInventory` current with `fragments::scan` every scan period and
//! `fragments::scrub_paced` every scrub period, at idle I/O priority under an `IoBudget`, paused
//! while the node is busy (load per core or the folder's disk utilisation above a threshold).
//! A scrub gives way to any device's scan that falls due and to a rescan request, and resumes
//! after its cursor.
//! Each new inventory is published in [`Inventories`] (one copy, shared with the task), which the
//! controller link encodes when it sends it (`link/mod.rs`). A scrub pass keeps its cursor in a file per device under
//! `state_dir` (`crate::scrub_cursor`), so an agent restarted mid-scrub resumes after it, and
//! its progress is on the agent's `/metrics` ([`FragmentMetrics`]); a scan keeps a checkpoint
//! there too (`crate::scan_checkpoint`), so an agent restarted mid-scan continues after it.
//!
//! ```toml
//! [fragments]                 # absent: no fragment task
//! enabled = true              # default when the section is present
//! scan_period = "1h"          # s, m, h, d
//! scrub_period = "7d"
//! io_mb_per_s = 20            # MB/s (10^6 bytes) for scans and scrubs together
//! busy_load_per_core = 1.0    # scrub waits while load1 / cores is above this
//! busy_disk_util = 0.9        # … or while the folder's disk is busier than this (0..1]
//! orphan_grace = "24h"        # a younger file is never an orphan
//! digest = "md5-hex"          # md5-hex, sha256-hex, none
//! state_dir = "/var/lib/nodewarden-agent/fragments"  # scrub cursors, scan checkpoints (global only)
//!
//! [[fragments.devices]]       # overrides for one declared storage device
//! id = 3
//! scrub_period = "14d"
//! # enabled = false
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nodewarden_shared::fragments::{DeviceInventory, InventoryDelta};
use serde::Deserialize;
use tokio::sync::watch;

use crate::fragments::{self, DigestKind, IoBudget, Pace};
use crate::ops::config::StorageDeviceDecl;
use crate::scan_checkpoint;
use crate::scrub_cursor::{self, CompletePass, PassProgress, ScrubCursor};

/// The settings' keys, as the global section and a device's override both take them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFragments {
    enabled: Option<bool>,
    scan_period: Option<String>,
    scrub_period: Option<String>,
    io_mb_per_s: Option<f64>,
    busy_load_per_core: Option<f64>,
    busy_disk_util: Option<f64>,
    orphan_grace: Option<String>,
    digest: Option<DigestKind>,
    /// Where the scrub cursors and scan checkpoints are kept; relative to the agent config's
    /// folder.
    state_dir: Option<PathBuf>,
    #[serde(default)]
    devices: Vec<RawDeviceFragments>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeviceFragments {
    id: u32,
    enabled: Option<bool>,
    scan_period: Option<String>,
    scrub_period: Option<String>,
    io_mb_per_s: Option<f64>,
    busy_load_per_core: Option<f64>,
    busy_disk_util: Option<f64>,
    orphan_grace: Option<String>,
    digest: Option<DigestKind>,
}

/// One device's fragment task settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentSettings {
    pub device_id: u32,
    pub dir: PathBuf,
    pub scan_period: Duration,
    pub scrub_period: Duration,
    /// MB/s (10^6 bytes).
    pub io_mb_per_s: f64,
    pub busy_load_per_core: f64,
    /// A fraction of time the disk is busy, in (0, 1].
    pub busy_disk_util: f64,
    pub orphan_grace: Duration,
    pub digest: DigestKind,
    /// The folder of the scrub cursor files (shared by every device).
    pub state_dir: PathBuf,
}

/// `[fragments] state_dir` when unset.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nodewarden-agent/fragments";
/// How often a running scrub writes its cursor: what a crash makes it read again at most.
pub const CURSOR_EVERY: Duration = Duration::from_secs(1);

pub const DEFAULT_SCAN_PERIOD: Duration = Duration::from_secs(3600);
pub const DEFAULT_SCRUB_PERIOD: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_IO_MB_PER_S: f64 = 20.0;
pub const DEFAULT_BUSY_LOAD_PER_CORE: f64 = 1.0;
pub const DEFAULT_BUSY_DISK_UTIL: f64 = 0.9;
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(86_400);

/// `"90s"`, `"30m"`, `"12h"`, `"7d"` (one integer and one unit).
pub fn parse_period(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit).map(Duration::from_secs)
}

impl RawFragments {
    /// The settings of every enabled declared device, or the first problem as `key: problem`.
    pub fn resolve(&self, declared: &[StorageDeviceDecl]) -> Result<Vec<FragmentSettings>, String> {
        let global = resolve_knobs(
            "fragments",
            &Knobs {
                enabled: self.enabled,
                scan_period: self.scan_period.as_deref(),
                scrub_period: self.scrub_period.as_deref(),
                io_mb_per_s: self.io_mb_per_s,
                busy_load_per_core: self.busy_load_per_core,
                busy_disk_util: self.busy_disk_util,
                orphan_grace: self.orphan_grace.as_deref(),
                digest: self.digest,
            },
            None,
        )?;
        let mut overrides = BTreeMap::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = format!("fragments.devices[{i}] (id {})", d.id);
            if !declared.iter().any(|s| s.id == d.id) {
                return Err(format!(
                    "{key}: not a declared storage device ([[storage.devices]])"
                ));
            }
            if overrides.contains_key(&d.id) {
                return Err(format!("{key}: device listed twice"));
            }
            let knobs = Knobs {
                enabled: d.enabled,
                scan_period: d.scan_period.as_deref(),
                scrub_period: d.scrub_period.as_deref(),
                io_mb_per_s: d.io_mb_per_s,
                busy_load_per_core: d.busy_load_per_core,
                busy_disk_util: d.busy_disk_util,
                orphan_grace: d.orphan_grace.as_deref(),
                digest: d.digest,
            };
            overrides.insert(d.id, resolve_knobs(&key, &knobs, Some(&global))?);
        }
        Ok(declared
            .iter()
            .filter_map(|decl| {
                let k = overrides.get(&decl.id).unwrap_or(&global);
                k.enabled.then(|| FragmentSettings {
                    device_id: decl.id,
                    dir: decl.fragment_dir.clone(),
                    scan_period: k.scan_period,
                    scrub_period: k.scrub_period,
                    io_mb_per_s: k.io_mb_per_s,
                    busy_load_per_core: k.busy_load_per_core,
                    busy_disk_util: k.busy_disk_util,
                    orphan_grace: k.orphan_grace,
                    digest: k.digest,
                    state_dir: self
                        .state_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
                })
            })
            .collect())
    }
}

struct Knobs<'a> {
    enabled: Option<bool>,
    scan_period: Option<&'a str>,
    scrub_period: Option<&'a str>,
    io_mb_per_s: Option<f64>,
    busy_load_per_core: Option<f64>,
    busy_disk_util: Option<f64>,
    orphan_grace: Option<&'a str>,
    digest: Option<DigestKind>,
}

#[derive(Debug, Clone)]
struct Resolved {
    enabled: bool,
    scan_period: Duration,
    scrub_period: Duration,
    io_mb_per_s: f64,
    busy_load_per_core: f64,
    busy_disk_util: f64,
    orphan_grace: Duration,
    digest: DigestKind,
}

fn resolve_knobs(key: &str, k: &Knobs, base: Option<&Resolved>) -> Result<Resolved, String> {
    let period = |name: &str, v: Option<&str>, default: Duration, min: Duration| match v {
        None => Ok(default),
        Some(text) => match parse_period(text) {
            Some(d) if d >= min => Ok(d),
            Some(_) => Err(format!("{key}.{name}: {text:?} is shorter than {min:?}")),
            None => Err(format!(
                "{key}.{name}: {text:?} is not a period like \"90s\", \"30m\", \"12h\" or \"7d\""
            )),
        },
    };
    let number = |name: &str, v: Option<f64>, default: f64, range: (f64, f64)| match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x > range.0 && x <= range.1 => Ok(x),
        Some(x) => Err(format!(
            "{key}.{name}: {x} is outside ({}, {}]",
            range.0, range.1
        )),
    };
    let r = Resolved {
        enabled: k.enabled.or(base.map(|b| b.enabled)).unwrap_or(true),
        scan_period: period(
            "scan_period",
            k.scan_period,
            base.map_or(DEFAULT_SCAN_PERIOD, |b| b.scan_period),
            Duration::from_secs(1),
        )?,
        scrub_period: period(
            "scrub_period",
            k.scrub_period,
            base.map_or(DEFAULT_SCRUB_PERIOD, |b| b.scrub_period),
            Duration::from_secs(1),
        )?,
        io_mb_per_s: number(
            "io_mb_per_s",
            k.io_mb_per_s,
            base.map_or(DEFAULT_IO_MB_PER_S, |b| b.io_mb_per_s),
            (0.0, 100_000.0),
        )?,
        busy_load_per_core: number(
            "busy_load_per_core",
            k.busy_load_per_core,
            base.map_or(DEFAULT_BUSY_LOAD_PER_CORE, |b| b.busy_load_per_core),
            (0.0, 1_000.0),
        )?,
        busy_disk_util: number(
            "busy_disk_util",
            k.busy_disk_util,
            base.map_or(DEFAULT_BUSY_DISK_UTIL, |b| b.busy_disk_util),
            (0.0, 1.0),
        )?,
        orphan_grace: period(
            "orphan_grace",
            k.orphan_grace,
            base.map_or(DEFAULT_ORPHAN_GRACE, |b| b.orphan_grace),
            Duration::ZERO,
        )?,
        digest: k.digest.or(base.map(|b| b.digest)).unwrap_or_default(),
    };
    Ok(r)
}

/// One device's latest inventory. The only copy the agent keeps: the task scrubs from it and
/// a connection encodes it (`DeviceInventory::encode()`) when it sends it, so the resident cost
/// is one decoded inventory, not that plus its wire form (docs/perf.md).
#[derive(Debug, Clone)]
pub struct Published {
    /// Increases with each inventory of this device in this agent's life (a scan, a scrub's
    /// verdict, or changes seen between scans).
    pub generation: u64,
    /// The generation of the last whole publication (a scan or a scrub's verdict); the ones
    /// after it are changes between scans, each with its delta in `deltas`.
    pub whole_generation: u64,
    pub inventory: Arc<DeviceInventory>,
    pub present: u64,
    pub corrupt: u64,
    /// The last [`MAX_DELTAS`] changes since `whole_generation`: (generation before, after,
    /// the delta), oldest first; what a connection that sent an earlier generation sends.
    pub deltas: std::collections::VecDeque<(u64, u64, Arc<InventoryDelta>)>,
}

/// Deltas a device keeps for the link (a connection further behind gets the whole inventory).
pub const MAX_DELTAS: usize = 64;
/// A rescan that changed more ids than this is published whole (its delta would not fit a
/// message: ~5 bytes an id).
pub const RESCAN_DELTA_MAX: u64 = 30_000;

/// The latest inventory of each device, a signal bumped on every new one, and what the task is
/// asked (stop; scan a device now, after a deletion on it).
#[derive(Debug)]
pub struct Inventories {
    devices: Mutex<BTreeMap<u32, Published>>,
    /// Per device with a scan under way: the ids changes touched since it started (its
    /// readdir may have missed them; they are carried into its inventory when it publishes).
    scan_touched: Mutex<BTreeMap<u32, roaring::RoaringBitmap>>,
    status: Mutex<BTreeMap<u32, FragmentStatus>>,
    changed: watch::Sender<u64>,
    control: Mutex<Control>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Control {
    stopped: bool,
    rescan: std::collections::BTreeSet<u32>,
}

/// Why the task's wait ended.
enum Woken {
    Due,
    Stopped,
    Rescan(std::collections::BTreeSet<u32>),
}

impl Default for Inventories {
    fn default() -> Self {
        Inventories {
            devices: Mutex::new(BTreeMap::new()),
            scan_touched: Mutex::new(BTreeMap::new()),
            status: Mutex::new(BTreeMap::new()),
            changed: watch::Sender::new(0),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
        }
    }
}

impl Inventories {
    /// Scans `device` at once (its folder changed: fragments were deleted by an operation).
    pub fn rescan(&self, device: u32) {
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        c.rescan.insert(device);
        self.wake.notify_all();
    }

    fn stop(&self) {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stopped = true;
        self.wake.notify_all();
    }

    fn is_stopped(&self) -> bool {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stopped
    }

    /// Whether a rescan was asked for and not yet taken (a running scrub gives way to it).
    fn rescan_requested(&self) -> bool {
        !self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rescan
            .is_empty()
    }

    /// Waits until `deadline`, a stop or a rescan request.
    fn wait_until(&self, deadline: Instant) -> Woken {
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if c.stopped {
                return Woken::Stopped;
            }
            if !c.rescan.is_empty() {
                return Woken::Rescan(std::mem::take(&mut c.rescan));
            }
            let now = Instant::now();
            if now >= deadline {
                return Woken::Due;
            }
            c = self
                .wake
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Every device's latest inventory.
    pub fn snapshot(&self) -> Vec<(u32, Published)> {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices.iter().map(|(&d, p)| (d, p.clone())).collect()
    }

    /// Every device's scan state and scrub progress (what [`FragmentMetrics`] serves).
    pub fn status(&self) -> Vec<(u32, FragmentStatus)> {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.iter().map(|(&d, s)| (d, s.clone())).collect()
    }

    fn update_status(&self, device: u32, update: impl FnOnce(&mut FragmentStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        update(status.entry(device).or_default());
    }

    /// A scan of `device` starts: changes seen from now on are carried into its inventory.
    pub fn scan_started(&self, device: u32) {
        let mut touched = self.scan_touched.lock().unwrap_or_else(|p| p.into_inner());
        touched.insert(device, roaring::RoaringBitmap::new());
    }

    /// The scan of `device` failed: nothing to carry, and its status says so (a watcher of the
    /// task is woken; the link finds no new generation and sends nothing).
    fn scan_failed(&self, device: u32) {
        self.scan_touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&device);
        self.update_status(device, |st| st.scanned(false));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Publishes `inv` (a new scan) and returns the shared handle the task scrubs from. The
    /// state of the ids changes touched while the scan ran is taken from the inventory they
    /// were applied to (the scan's readdir may have passed them before they changed). The
    /// device's status records a successful scan before watchers are woken.
    pub fn publish(&self, mut inv: DeviceInventory) -> Arc<DeviceInventory> {
        let device = inv.device_id;
        let inventory = {
            let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
            let touched = self
                .scan_touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&device);
            if let (Some(touched), Some(old)) = (touched, devices.get(&device))
                && !touched.is_empty()
            {
                inv.apply(&old.inventory.delta(&touched));
            }
            let inventory = Arc::new(inv);
            let generation = devices.get(&device).map_or(1, |p| p.generation + 1);
            devices.insert(
                device,
                Published {
                    generation,
                    whole_generation: generation,
                    present: inventory.present.len(),
                    corrupt: inventory.corrupt.len(),
                    inventory: inventory.clone(),
                    deltas: Default::default(),
                },
            );
            inventory
        };
        self.update_status(device, |s| {
            s.corrupt = inventory.corrupt.len();
            s.scanned(true);
        });
        self.changed.send_modify(|n| *n += 1);
        inventory
    }

    /// `device`'s published inventory (a handle: held, it makes the next change copy it).
    pub fn current(&self, device: u32) -> Option<Arc<DeviceInventory>> {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices.get(&device).map(|p| p.inventory.clone())
    }

    /// Compares a rescan's chunk with `device`'s published inventory (under its lock, no
    /// handle kept), adding what differs to `delta` ([`diff_scanned`]).
    pub fn diff_rescanned(
        &self,
        device: u32,
        chunk: &[(u32, Option<fragments::FragmentFile>)],
        corrupt: &roaring::RoaringBitmap,
        delta: &mut InventoryDelta,
    ) {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = devices.get(&device) {
            diff_scanned(&p.inventory, chunk, corrupt, delta);
        }
    }

    /// Publishes a rescan: its `delta` plus the ids held but not `listed` (gone) applied in
    /// place, the ids changes touched while it ran keeping the state those changes gave them.
    /// Kept as one delta for the link when it is small ([`RESCAN_DELTA_MAX`] ids), else the
    /// link sends the whole inventory. Recorded as a successful scan, like [`Self::publish`].
    pub fn publish_rescan(&self, mut delta: InventoryDelta, listed: &roaring::RoaringBitmap) {
        let device = delta.device_id;
        let (present, corrupt) = {
            let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
            let touched = self
                .scan_touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&device)
                .unwrap_or_default();
            let Some(p) = devices.get_mut(&device) else {
                return;
            };
            delta.removed |= &p.inventory.present - listed;
            delta.removed -= &delta.set;
            let changed = &(&delta.removed | &delta.set) | &touched;
            let kept = p.inventory.delta(&touched);
            let inv = Arc::make_mut(&mut p.inventory);
            inv.apply(&delta);
            inv.apply(&kept);
            let base = p.generation;
            p.generation += 1;
            p.present = p.inventory.present.len();
            p.corrupt = p.inventory.corrupt.len();
            if changed.len() <= RESCAN_DELTA_MAX {
                let effective = p.inventory.delta(&changed);
                p.deltas
                    .push_back((base, p.generation, Arc::new(effective)));
                while p.deltas.len() > MAX_DELTAS {
                    p.deltas.pop_front();
                }
            } else {
                p.whole_generation = p.generation;
                p.deltas.clear();
            }
            (p.present, p.corrupt)
        };
        tracing::debug!(device, present, "fragment rescan published");
        self.update_status(device, |s| {
            s.corrupt = corrupt;
            s.scanned(true);
        });
        self.changed.send_modify(|n| *n += 1);
    }

    /// Applies what the folder holds now for the ids in `changes` (`None`: gone) to `device`'s
    /// inventory, as a delta the link can send. An id whose size is unchanged keeps its scrub
    /// verdict; an id whose state is unchanged is left out. Nothing before the first scan
    /// (which will see the folder as it is). Returns whether the inventory changed.
    pub fn apply_changes(
        &self,
        device: u32,
        changes: &BTreeMap<u32, Option<fragments::FragmentFile>>,
    ) -> bool {
        let (present, corrupt) = {
            let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(touched) = self
                .scan_touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&device)
            {
                touched.extend(changes.keys().copied());
            }
            let Some(p) = devices.get_mut(&device) else {
                return false;
            };
            let delta = delta_of(&p.inventory, changes);
            if delta.is_empty() {
                return false;
            }
            // A copy only while the scrub reads the published inventory (then this one is
            // the copy, applied in place from the next change on).
            Arc::make_mut(&mut p.inventory).apply(&delta);
            let base = p.generation;
            p.generation += 1;
            p.present = p.inventory.present.len();
            p.corrupt = p.inventory.corrupt.len();
            p.deltas.push_back((base, p.generation, Arc::new(delta)));
            while p.deltas.len() > MAX_DELTAS {
                p.deltas.pop_front();
            }
            (p.present, p.corrupt)
        };
        tracing::debug!(device, present, "fragment changes applied");
        self.update_status(device, |s| s.corrupt = corrupt);
        self.changed.send_modify(|n| *n += 1);
        true
    }

    /// Publishes a scrub's verdict on `device`'s inventory: `corrupt` ∩ present, set in place
    /// (the caller dropped its handle first; a copy is made only while a connection is encoding
    /// the inventory), kept as a delta of the ids whose verdict changed when they are few.
    fn publish_corrupt(&self, device: u32, corrupt: &roaring::RoaringBitmap) {
        let count = {
            let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
            let Some(p) = devices.get_mut(&device) else {
                return;
            };
            let inv = Arc::make_mut(&mut p.inventory);
            let verdict = corrupt & &inv.present;
            let changed = &verdict ^ &inv.corrupt;
            inv.corrupt = verdict;
            let base = p.generation;
            p.generation += 1;
            if changed.len() <= RESCAN_DELTA_MAX {
                let delta = p.inventory.delta(&changed);
                p.deltas.push_back((base, p.generation, Arc::new(delta)));
                while p.deltas.len() > MAX_DELTAS {
                    p.deltas.pop_front();
                }
            } else {
                p.whole_generation = p.generation;
                p.deltas.clear();
            }
            p.corrupt = p.inventory.corrupt.len();
            p.corrupt
        };
        self.update_status(device, |s| s.corrupt = count);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Adds to `delta` what a rescan's `chunk` (ascending ids, after those already in `delta`)
/// finds different from `inv`: gone ids removed; new ids, or ids whose size, digest, recent
/// flag or scrub verdict (`corrupt`, the last complete scrub's, as a scan sets it) differ, set.
pub fn diff_scanned(
    inv: &DeviceInventory,
    chunk: &[(u32, Option<fragments::FragmentFile>)],
    corrupt: &roaring::RoaringBitmap,
    delta: &mut InventoryDelta,
) {
    for &(id, file) in chunk {
        let Some(f) = file else {
            if inv.present.contains(id) {
                delta.removed.insert(id);
            }
            continue;
        };
        let bad = corrupt.contains(id);
        if inv.size_of(id) == Some(u64::from(f.size))
            && inv.recent.contains(id) == f.recent
            && inv.no_digest.contains(id) != f.digest
            && inv.corrupt.contains(id) == bad
        {
            continue;
        }
        delta.set.push(id);
        delta.sizes.push(f.size);
        if !f.digest {
            delta.no_digest.push(id);
        }
        if bad {
            delta.corrupt.push(id);
        }
        if f.recent {
            delta.recent.push(id);
        }
    }
}

/// The delta from `inv` to the folder as `changes` describe it (ids in ascending order).
pub fn delta_of(
    inv: &DeviceInventory,
    changes: &BTreeMap<u32, Option<fragments::FragmentFile>>,
) -> InventoryDelta {
    let mut delta = InventoryDelta {
        device_id: inv.device_id,
        ..Default::default()
    };
    for (&id, state) in changes {
        let Some(f) = state else {
            if inv.present.contains(id) {
                delta.removed.insert(id);
            }
            continue;
        };
        let held = inv.size_of(id);
        let same_size = held == Some(u64::from(f.size));
        if same_size
            && inv.no_digest.contains(id) != f.digest
            && inv.recent.contains(id) == f.recent
        {
            continue;
        }
        delta.set.push(id);
        delta.sizes.push(f.size);
        if !f.digest {
            delta.no_digest.push(id);
        }
        if same_size && inv.corrupt.contains(id) {
            delta.corrupt.push(id);
        }
        if f.recent {
            delta.recent.push(id);
        }
    }
    delta
}

/// One device's scan state and scrub progress, as the agent's `/metrics` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FragmentStatus {
    /// The fraction of the current pass's fragments at or before its cursor; 1 between passes
    /// after a complete one, 0 before the first.
    pub position_ratio: f64,
    /// Fragments checked by this agent process (a counter: restarts begin at 0).
    pub checked: u64,
    /// Bytes the scrub read in this agent process.
    pub read_bytes: u64,
    /// Corrupt fragments in the published inventory (the last complete pass's verdict ∩ present).
    pub corrupt: u64,
    /// Unix seconds the last complete pass ended (kept across restarts by the cursor file).
    pub last_complete: Option<u64>,
    /// The configured `scrub_period` in seconds (what the stalled-scrub alert compares with).
    pub scrub_period_seconds: u64,
    /// Unix seconds the last successful scan of the device ended (none yet in this process).
    pub scan_last_success: Option<u64>,
    /// Scans of the device that failed since the agent started.
    pub scan_failures: u64,
    /// The last scan failed (the folder could not be read): the inventory is the last good one.
    pub scan_failing: bool,
    /// The configured `scan_period` in seconds.
    pub scan_period_seconds: u64,
}

impl FragmentStatus {
    /// A scan of the device ended, `ok` or not.
    fn scanned(&mut self, ok: bool) {
        self.scan_failing = !ok;
        if ok {
            self.scan_last_success = Some(unix_now());
        } else {
            self.scan_failures += 1;
        }
    }
}

/// How a family's sample is read from a device's status (none: no sample).
type StatusValue = fn(&FragmentStatus) -> Option<f64>;

/// The scrub's families on the agent's `/metrics` (docs/metrics.md), per device `id`.
#[derive(Debug)]
pub struct FragmentMetrics(pub Arc<Inventories>);

impl prometheus_client::collector::Collector for FragmentMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::collector::{Kind, MetricWriter};
        let status = self.0.status();
        let ids: Vec<String> = status.iter().map(|(d, _)| d.to_string()).collect();
        let mut out = MetricWriter::new(&mut encoder);
        let families: [(&str, &str, Kind, StatusValue); 10] = [
            (
                "nodewarden_fragments_scan_last_success_timestamp_seconds",
                "Unix time the last successful scan of the device's fragment folder ended (no sample before the first since the agent started).",
                Kind::Gauge,
                |s| s.scan_last_success.map(|t| t as f64),
            ),
            (
                "nodewarden_fragments_scan_failures_total",
                "Scans of the device's fragment folder that failed since the agent started.",
                Kind::Counter,
                |s| Some(s.scan_failures as f64),
            ),
            (
                "nodewarden_fragments_scan_failing",
                "1 when the last scan of the device's fragment folder failed (the inventory reported is the last good one), else 0.",
                Kind::Gauge,
                |s| Some(if s.scan_failing { 1.0 } else { 0.0 }),
            ),
            (
                "nodewarden_fragments_scan_period_seconds",
                "The configured scan period of the device.",
                Kind::Gauge,
                |s| Some(s.scan_period_seconds as f64),
            ),
            (
                "nodewarden_fragments_scrub_position_ratio",
                "Fraction of the current scrub pass's fragments at or before its cursor (1 after a complete pass, 0 before the first).",
                Kind::Gauge,
                |s| Some(s.position_ratio),
            ),
            (
                "nodewarden_fragments_scrub_checked_total",
                "Fragments the scrub read and checked against their digest since the agent started.",
                Kind::Counter,
                |s| Some(s.checked as f64),
            ),
            (
                "nodewarden_fragments_scrub_read_bytes_total",
                "Bytes the scrub read since the agent started.",
                Kind::Counter,
                |s| Some(s.read_bytes as f64),
            ),
            (
                "nodewarden_fragments_scrub_corrupt",
                "Fragments whose content did not match their digest in the last complete scrub pass (and still present).",
                Kind::Gauge,
                |s| Some(s.corrupt as f64),
            ),
            (
                "nodewarden_fragments_scrub_last_complete_timestamp_seconds",
                "Unix time the last complete scrub pass of the device ended (no sample before the first).",
                Kind::Gauge,
                |s| s.last_complete.map(|t| t as f64),
            ),
            (
                "nodewarden_fragments_scrub_period_seconds",
                "The configured scrub period of the device: every fragment is read once this often.",
                Kind::Gauge,
                |s| Some(s.scrub_period_seconds as f64),
            ),
        ];
        for (name, help, kind, value) in families {
            let mut family = out.family(name, help, kind)?;
            for ((_, s), id) in status.iter().zip(&ids) {
                if let Some(v) = value(s) {
                    family.sample(&[("id", id)], v)?;
                }
            }
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the node is busy: load1 per core or the folder's disk utilisation (io_ticks of
/// `/sys/dev/block/M:m/stat` over wall time) above the thresholds. Measured at most once a
/// second; a source that cannot be read counts as not busy (the I/O budget still holds).
struct Busy {
    loadavg: PathBuf,
    disk_stat: Option<PathBuf>,
    cores: f64,
    last: Option<(Instant, u64)>,
    checked: Option<(Instant, bool)>,
}

impl Busy {
    fn new(procfs: &Path, sysfs: &Path, dir: &Path) -> Busy {
        use std::os::unix::fs::MetadataExt as _;
        let disk_stat = std::fs::metadata(dir).ok().map(|m| {
            let dev = m.dev();
            sysfs.join(format!(
                "dev/block/{}:{}/stat",
                libc::major(dev),
                libc::minor(dev)
            ))
        });
        Busy {
            loadavg: procfs.join("loadavg"),
            disk_stat,
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            last: None,
            checked: None,
        }
    }

    fn io_ticks(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.disk_stat.as_ref()?).ok()?;
        text.split_ascii_whitespace().nth(9)?.parse().ok()
    }

    fn is_busy(&mut self, s: &FragmentSettings) -> bool {
        let now = Instant::now();
        if let Some((at, busy)) = self.checked
            && now.duration_since(at) < Duration::from_secs(1)
        {
            return busy;
        }
        let load = std::fs::read_to_string(&self.loadavg)
            .ok()
            .and_then(|t| crate::collector::source::parse_loadavg(&t))
            .map_or(0.0, |l| l[0]);
        let mut busy = load / self.cores > s.busy_load_per_core;
        if let Some(ticks) = self.io_ticks() {
            if let Some((at, before)) = self.last {
                let wall = now.duration_since(at).as_millis() as f64;
                if wall > 0.0 {
                    let util = ticks.saturating_sub(before) as f64 / wall;
                    busy |= util > s.busy_disk_util;
                }
            }
            self.last = Some((now, ticks));
        }
        self.checked = Some((now, busy));
        busy
    }
}

struct DeviceState {
    settings: FragmentSettings,
    busy: Busy,
    next_scan: Instant,
    next_scrub: Instant,
    /// A first scan published the device's inventory (later ones are rescans against it).
    has_inventory: bool,
    /// The last scrub's verdict, carried into later scans (∩ present).
    corrupt: roaring::RoaringBitmap,
    /// What the cursor file says (or will say at the next write).
    cursor: ScrubCursor,
    /// The last cursor write failed (warned once, until one succeeds).
    cursor_failing: bool,
    /// An unfinished scan read from its checkpoint, which the first scan continues.
    resume: Option<scan_checkpoint::Resumed>,
}

impl DeviceState {
    /// The device's state at start: its cursor file read (a corrupt or foreign one ignored with
    /// a warning), the last complete pass's verdict carried, the next scrub when the last pass's
    /// period ends, or at once when a pass was under way.
    fn new(settings: FragmentSettings, busy: Busy, now: Instant, out: &Inventories) -> Self {
        let cursor =
            match scrub_cursor::load(&settings.state_dir, settings.device_id, settings.digest) {
                Ok(Some(c)) => c,
                Ok(None) => ScrubCursor {
                    device_id: settings.device_id,
                    digest: settings.digest,
                    ..Default::default()
                },
                Err(e) => {
                    tracing::warn!(device = settings.device_id, error = %e,
                    "scrub cursor ignored: the scrub starts a new pass");
                    ScrubCursor {
                        device_id: settings.device_id,
                        digest: settings.digest,
                        ..Default::default()
                    }
                }
            };
        let next_scrub = match (&cursor.pass, &cursor.last_complete) {
            (None, Some(last)) => {
                let due = last
                    .finished
                    .saturating_add(settings.scrub_period.as_secs());
                now.checked_add(Duration::from_secs(due.saturating_sub(unix_now())))
                    .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400))
            }
            _ => now,
        };
        let corrupt = cursor
            .last_complete
            .as_ref()
            .map(|c| c.corrupt.clone())
            .unwrap_or_default();
        out.update_status(settings.device_id, |s| {
            s.scrub_period_seconds = settings.scrub_period.as_secs();
            s.scan_period_seconds = settings.scan_period.as_secs();
            s.last_complete = cursor.last_complete.as_ref().map(|c| c.finished);
            s.position_ratio = if cursor.pass.is_none() && s.last_complete.is_some() {
                1.0
            } else {
                0.0
            };
        });
        if let Some(p) = &cursor.pass {
            tracing::info!(device = settings.device_id, position = ?p.position, checked = p.checked,
                "a scrub pass was under way: it resumes after its cursor");
        }
        DeviceState {
            busy,
            resume: load_checkpoint(&settings),
            settings,
            next_scan: now,
            next_scrub,
            has_inventory: false,
            corrupt,
            cursor,
            cursor_failing: false,
        }
    }
}

/// Writes `cursor`; a failure is warned once, until a write succeeds again.
fn save_cursor(s: &FragmentSettings, cursor: &ScrubCursor, failing: &mut bool) {
    match scrub_cursor::save(&s.state_dir, cursor) {
        Ok(()) => {
            if std::mem::take(failing) {
                tracing::info!(device = s.device_id, "scrub cursor written again");
            }
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                tracing::warn!(device = s.device_id, error = %e,
                    "scrub cursor not written: a restart resumes from the last one written");
            }
        }
    }
}

/// `s`'s unfinished scan from its checkpoint file; a corrupt or foreign one is ignored with a
/// warning (the scan starts from the first fragment).
fn load_checkpoint(s: &FragmentSettings) -> Option<scan_checkpoint::Resumed> {
    match scan_checkpoint::load(&s.state_dir, s.device_id, &s.dir) {
        Ok(resumed) => resumed,
        Err(e) => {
            tracing::warn!(device = s.device_id, error = %e,
                "scan checkpoint ignored: the scan starts from the first fragment");
            None
        }
    }
}

/// A running scan's checkpoint (`crate::scan_checkpoint`); a failed write is warned and ends
/// checkpointing for that scan (the scan goes on; a restart would start it over).
struct Checkpoint(Option<scan_checkpoint::Writer>);

impl Checkpoint {
    /// A new checkpoint for a scan starting now, or the continuation of `resumed`'s.
    fn start(s: &FragmentSettings, resumed: Option<&scan_checkpoint::Resumed>) -> Checkpoint {
        let writer = match resumed {
            Some(r) => scan_checkpoint::Writer::resume(&s.state_dir, s.device_id, r),
            None => scan_checkpoint::Writer::create(&s.state_dir, s.device_id, &s.dir, unix_now()),
        };
        match writer {
            Ok(w) => Checkpoint(Some(w)),
            Err(e) => {
                Checkpoint::failed(s, &e);
                Checkpoint(None)
            }
        }
    }

    fn failed(s: &FragmentSettings, e: &scan_checkpoint::CheckpointError) {
        tracing::warn!(device = s.device_id, error = %e,
            "scan checkpoint not written: a restart scans from the last one written");
    }

    fn record(&mut self, s: &FragmentSettings, id: u32, file: Option<fragments::FragmentFile>) {
        if let Some(w) = &mut self.0
            && let Err(e) = w.record(id, file)
        {
            Checkpoint::failed(s, &e);
            self.0 = None;
        }
    }

    /// The scan completed and was published: its checkpoint goes.
    fn done(self, s: &FragmentSettings) {
        drop(self.0);
        if let Err(e) = scan_checkpoint::remove(&s.state_dir, s.device_id) {
            tracing::warn!(device = s.device_id, error = %e,
                "scan checkpoint of a complete scan not removed: a restart continues it");
        }
    }
}

/// The pass `base` (as the cursor had it when this run started) extended by `run`.
fn merged(base: &PassProgress, run: &fragments::ScrubReport) -> PassProgress {
    PassProgress {
        started: base.started,
        position: run.position.or(base.position),
        checked: base.checked + run.checked,
        bytes: base.bytes + run.bytes,
        corrupt: &base.corrupt | &run.corrupt,
    }
}

/// The running task; dropping it does not stop it ([`FragmentTask::stop`] does).
pub struct FragmentTask {
    out: Arc<Inventories>,
    thread: std::thread::JoinHandle<()>,
}

impl FragmentTask {
    /// Starts the thread over `devices`; inventories go to `out`.
    pub fn spawn(
        devices: Vec<FragmentSettings>,
        procfs: &Path,
        sysfs: &Path,
        out: Arc<Inventories>,
    ) -> std::io::Result<FragmentTask> {
        let now = Instant::now();
        let states: Vec<DeviceState> = devices
            .into_iter()
            .map(|settings| {
                let busy = Busy::new(procfs, sysfs, &settings.dir);
                DeviceState::new(settings, busy, now, &out)
            })
            .collect();
        let thread_out = out.clone();
        let thread = std::thread::Builder::new()
            .name("fragments".into())
            .spawn(move || run(states, &thread_out))?;
        Ok(FragmentTask { out, thread })
    }

    /// Stops the task and waits for its thread (at most one fragment read or stat).
    pub fn stop(self) {
        self.out.stop();
        let _ = self.thread.join();
    }
}

fn run(mut devices: Vec<DeviceState>, out: &Inventories) {
    if let Err(e) = fragments::set_idle_io_priority() {
        tracing::warn!(error = %e, "fragment task runs at normal I/O priority");
    }
    loop {
        let Some(next) = next_device(&devices, Instant::now()) else {
            return;
        };
        let due = devices[next].next_scan.min(devices[next].next_scrub);
        match out.wait_until(due) {
            Woken::Stopped => return,
            Woken::Rescan(ids) => {
                let now = Instant::now();
                for d in devices
                    .iter_mut()
                    .filter(|d| ids.contains(&d.settings.device_id))
                {
                    d.next_scan = now;
                }
                continue;
            }
            Woken::Due => {}
        }
        let s = devices[next].settings.clone();
        let now = Instant::now();
        if now >= devices[next].next_scan || !devices[next].has_inventory {
            let d = &mut devices[next];
            d.next_scan = now + s.scan_period;
            let mut budget = IoBudget::new(s.io_mb_per_s);
            out.scan_started(s.device_id);
            if d.has_inventory {
                // Against the published inventory, chunk by chunk under its lock: no second
                // inventory is built (docs/fragments.md).
                let mut delta = InventoryDelta {
                    device_id: s.device_id,
                    ..Default::default()
                };
                let corrupt = &d.corrupt;
                let mut checkpoint = Checkpoint::start(&s, None);
                let listed = fragments::rescan(&s.dir, s.orphan_grace, &mut budget, |chunk| {
                    for &(id, file) in chunk {
                        checkpoint.record(&s, id, file);
                    }
                    out.diff_rescanned(s.device_id, chunk, corrupt, &mut delta)
                });
                match listed {
                    Ok(listed) => {
                        out.publish_rescan(delta, &listed);
                        checkpoint.done(&s);
                    }
                    Err(e) => {
                        // An unmounted disk must not look empty: the last inventory stays.
                        tracing::warn!(device = s.device_id, error = %e, "fragment scan failed");
                        out.scan_failed(s.device_id);
                    }
                }
            } else {
                // Continued from its checkpoint when the agent stopped mid-scan.
                let resumed = d.resume.take();
                if let Some(r) = &resumed {
                    tracing::info!(
                        device = s.device_id,
                        position = r.partial.position,
                        held = r.partial.inventory.present.len(),
                        "fragment scan resumed after its checkpoint"
                    );
                }
                let mut checkpoint = Checkpoint::start(&s, resumed.as_ref());
                let scanned = fragments::scan_from(
                    s.device_id,
                    &s.dir,
                    s.orphan_grace,
                    &mut budget,
                    resumed.map(|r| r.partial),
                    |id, file| checkpoint.record(&s, id, file),
                );
                match scanned {
                    Ok((mut inv, stats)) => {
                        inv.corrupt = &d.corrupt & &inv.present;
                        tracing::info!(
                            device = s.device_id,
                            present = inv.present.len(),
                            stats,
                            "fragment scan done"
                        );
                        out.publish(inv);
                        d.has_inventory = true;
                        checkpoint.done(&s);
                    }
                    Err(e) => {
                        tracing::warn!(device = s.device_id, error = %e, "fragment scan failed");
                        out.scan_failed(s.device_id);
                        // The next attempt continues from what this one checkpointed.
                        drop(checkpoint);
                        d.resume = load_checkpoint(&s);
                        d.next_scrub = d.next_scan;
                        continue;
                    }
                }
            }
        }
        // A scrub gives way to any device's scan falling due and to a rescan request (a pass
        // over a large device takes days at its budget): it stops after its fragment, keeps
        // its cursor and resumes once that work is done.
        let scan_due = devices.iter().map(|d| d.next_scan).min();
        let d = &mut devices[next];
        // The scrub reads the published inventory (a change the watcher applies meanwhile
        // copies it once; the scrub's handle goes when it ends).
        if Instant::now() >= d.next_scrub
            && let Some(inv) = out.current(s.device_id)
        {
            let base = d
                .cursor
                .pass
                .get_or_insert_with(|| PassProgress {
                    started: unix_now(),
                    ..Default::default()
                })
                .clone();
            if let Some(position) = base.position {
                tracing::info!(
                    device = s.device_id,
                    position,
                    checked = base.checked,
                    "fragment scrub resumed after its cursor"
                );
            }
            let total = inv.present.len() - inv.no_digest.len();
            let mut budget = IoBudget::new(s.io_mb_per_s);
            let mut last_save = Instant::now();
            let (mut counted_checked, mut counted_bytes) = (0, 0);
            let report = {
                let busy = &mut d.busy;
                let (cursor, failing) = (&mut d.cursor, &mut d.cursor_failing);
                let inv = &inv;
                fragments::scrub_paced(
                    &s.dir,
                    inv,
                    s.digest,
                    &mut budget,
                    base.position,
                    || {
                        if out.is_stopped()
                            || out.rescan_requested()
                            || scan_due.is_some_and(|due| Instant::now() >= due)
                        {
                            Pace::Stop
                        } else if busy.is_busy(&s) {
                            Pace::Wait
                        } else {
                            Pace::Go
                        }
                    },
                    |r| {
                        let done = r
                            .position
                            .map_or(0, |p| inv.present.rank(p) - inv.no_digest.rank(p));
                        out.update_status(s.device_id, |st| {
                            st.position_ratio = if total == 0 {
                                1.0
                            } else {
                                done as f64 / total as f64
                            };
                            st.checked += r.checked - counted_checked;
                            st.read_bytes += r.bytes - counted_bytes;
                        });
                        (counted_checked, counted_bytes) = (r.checked, r.bytes);
                        // Between fragments, at most every CURSOR_EVERY.
                        if last_save.elapsed() >= CURSOR_EVERY {
                            cursor.pass = Some(merged(&base, r));
                            save_cursor(&s, cursor, failing);
                            last_save = Instant::now();
                        }
                    },
                )
            };
            let pass = merged(&base, &report);
            if report.stopped {
                d.cursor.pass = Some(pass);
                save_cursor(&s, &d.cursor, &mut d.cursor_failing);
                if out.is_stopped() {
                    return;
                }
                tracing::debug!(
                    device = s.device_id,
                    position = report.position,
                    "fragment scrub gives way to a scan"
                );
                continue;
            }
            tracing::info!(
                device = s.device_id,
                checked = pass.checked,
                bytes = pass.bytes,
                corrupt = pass.corrupt.len(),
                unreadable = report.unreadable,
                "fragment scrub done"
            );
            let finished = unix_now();
            d.corrupt = pass.corrupt.clone();
            d.cursor.pass = None;
            d.cursor.last_complete = Some(CompletePass {
                finished,
                checked: pass.checked,
                corrupt: pass.corrupt,
            });
            save_cursor(&s, &d.cursor, &mut d.cursor_failing);
            out.update_status(s.device_id, |st| {
                st.position_ratio = 1.0;
                st.last_complete = Some(finished);
            });
            drop(inv);
            out.publish_corrupt(s.device_id, &d.corrupt);
            d.next_scrub = Instant::now() + s.scrub_period;
        }
    }
}

/// The device the task serves next: one whose scan is due first (a scrub under way gives way
/// to scans), else the one whose scan or scrub falls due soonest.
fn next_device(devices: &[DeviceState], now: Instant) -> Option<usize> {
    devices
        .iter()
        .enumerate()
        .min_by_key(|(_, d)| {
            if d.next_scan <= now {
                (false, d.next_scan)
            } else {
                (true, d.next_scan.min(d.next_scrub))
            }
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(id: u32) -> StorageDeviceDecl {
        StorageDeviceDecl {
            id,
            fragment_dir: PathBuf::from(format!("/srv/f{id}")),
        }
    }

    fn resolve(text: &str) -> Result<Vec<FragmentSettings>, String> {
        let raw: RawFragments = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.resolve(&[decl(3), decl(4)])
    }

    #[test]
    fn periods() {
        assert_eq!(parse_period("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_period("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "7", "d", "1w", "1.5h", "-1h", "99999999999999999999d"] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let all = resolve("").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].scrub_period, DEFAULT_SCRUB_PERIOD);
        assert_eq!(all[0].digest, DigestKind::Md5Hex);
        let s = resolve(
            "scrub_period = \"1d\"\ndigest = \"sha256-hex\"\n\
             [[devices]]\nid = 4\nio_mb_per_s = 5\n[[devices]]\nid = 3\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].device_id, 4);
        assert_eq!(s[0].io_mb_per_s, 5.0);
        // A device's override inherits the global settings.
        assert_eq!(s[0].scrub_period, Duration::from_secs(86_400));
        assert_eq!(s[0].digest, DigestKind::Sha256Hex);
        assert!(resolve("enabled = false").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        for (text, want) in [
            (
                "scan_period = \"1w\"",
                "fragments.scan_period: \"1w\" is not a period",
            ),
            (
                "scrub_period = \"0s\"",
                "fragments.scrub_period: \"0s\" is shorter",
            ),
            ("io_mb_per_s = 0", "fragments.io_mb_per_s: 0 is outside"),
            (
                "busy_disk_util = 1.5",
                "fragments.busy_disk_util: 1.5 is outside",
            ),
            ("digest = \"crc32\"", "unknown variant `crc32`"),
            (
                "[[devices]]\nid = 9",
                "fragments.devices[0] (id 9): not a declared",
            ),
            ("[[devices]]\nid = 3\n[[devices]]\nid = 3", "listed twice"),
            (
                "[[devices]]\nid = 3\norphan_grace = \"x\"",
                "fragments.devices[0] (id 3).orphan_grace",
            ),
            ("bogus = 1", "unknown field `bogus`"),
        ] {
            let e = resolve(text).unwrap_err();
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }

    /// A rescan against the published inventory ends where a fresh scan would, in place, kept
    /// as a delta; an id a change touched while it ran keeps the change's state.
    #[test]
    fn a_rescan_publishes_what_a_scan_would_as_a_delta() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let put = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
        for id in 1..=20u32 {
            put(&id.to_string(), &vec![b'x'; id as usize]);
            put(&format!("{id}.digest"), b"d");
        }
        let grace = Duration::from_secs(3600);
        let out = Inventories::default();
        let mut budget = IoBudget::new(0.0);
        out.publish(fragments::scan(4, d, grace, &mut budget).unwrap());
        // Between the scans: 3 gone, 21 new without digest, 5 resized, 6's digest gone; the
        // last scrub found 7 corrupt.
        std::fs::remove_file(d.join("3")).unwrap();
        put("21", b"new");
        put("5", b"resized to 13");
        std::fs::remove_file(d.join("6.digest")).unwrap();
        let corrupt: roaring::RoaringBitmap = [7].into_iter().collect();
        out.scan_started(4);
        // A change the watcher applied while the scan ran: 8 gone (the scan still lists it).
        out.apply_changes(4, &BTreeMap::from([(8, None)]));
        let mut delta = InventoryDelta {
            device_id: 4,
            ..Default::default()
        };
        let listed = fragments::rescan(d, grace, &mut budget, |chunk| {
            out.diff_rescanned(4, chunk, &corrupt, &mut delta)
        })
        .unwrap();
        out.publish_rescan(delta, &listed);
        std::fs::remove_file(d.join("8")).unwrap();
        let mut want = fragments::scan(4, d, grace, &mut budget).unwrap();
        want.corrupt = &corrupt & &want.present;
        let (_, p) = out.snapshot().remove(0);
        assert_eq!(*p.inventory, want);
        assert_eq!((p.whole_generation, p.generation), (1, 3));
        let (base, generation, last) = p.deltas.back().unwrap();
        assert_eq!((*base, *generation), (2, 3));
        assert_eq!(last.set, [5, 6, 7, 21].into_iter().collect());
        // 8 again: the ids the watcher touched travel too (removing it twice is harmless).
        assert_eq!(last.removed, [3, 8].into_iter().collect());
    }

    #[tokio::test]
    async fn the_task_publishes_scans_and_scrubs() {
        use md5::{Digest as _, Md5};
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, data: &[u8]| std::fs::write(dir.path().join(name), data).unwrap();
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        put("100", b"good");
        put("100.digest", hex(&Md5::digest(b"good")).as_bytes());
        put("101", b"bad");
        put("101.digest", hex(&Md5::digest(b"other")).as_bytes());
        put("102", b"no digest");
        let out = Arc::new(Inventories::default());
        let mut changed = out.subscribe();
        let settings = FragmentSettings {
            device_id: 5,
            dir: dir.path().to_path_buf(),
            scan_period: Duration::from_secs(3600),
            scrub_period: Duration::from_secs(3600),
            io_mb_per_s: 100.0,
            busy_load_per_core: 1000.0,
            busy_disk_util: 1.0,
            orphan_grace: Duration::ZERO,
            digest: DigestKind::Md5Hex,
            state_dir: dir.path().join("state"),
        };
        let task = FragmentTask::spawn(
            vec![settings],
            Path::new("/proc"),
            Path::new("/sys"),
            out.clone(),
        )
        .unwrap();
        // The scan publishes, then the scrub publishes the corrupt fragment.
        let (inv, scrubbed) = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                changed.changed().await.unwrap();
                let snap = out.snapshot();
                if let Some((_, p)) = snap.first()
                    && p.corrupt == 1
                {
                    let decoded = DeviceInventory::decode(&p.inventory.encode().unwrap()).unwrap();
                    return (decoded, p.generation);
                }
            }
        })
        .await
        .expect("an inventory with the scrub's verdict");
        // A deletion makes the task scan again at once (the scan period is an hour).
        std::fs::remove_file(dir.path().join("102")).unwrap();
        out.rescan(5);
        let after = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                changed.changed().await.unwrap();
                if let Some((_, p)) = out.snapshot().first()
                    && p.present == 2
                {
                    return p.generation;
                }
            }
        })
        .await
        .expect("a rescan after the deletion");
        // A folder that cannot be read (an unmounted disk): the scan fails, the inventory
        // stays, and the status says so until a scan succeeds again.
        // Waits for the device's status to say `failing`, woken by the task's publications.
        let scan_state = |failing: bool| {
            let (out, mut changed) = (out.clone(), changed.clone());
            async move {
                tokio::time::timeout(Duration::from_secs(30), async {
                    loop {
                        let st = out.status().remove(0).1;
                        if st.scan_failing == failing {
                            return st;
                        }
                        changed.changed().await.unwrap();
                    }
                })
                .await
                .expect("the scan's outcome in the status")
            }
        };
        assert!(!out.status()[0].1.scan_failing);
        // (A file in the folder's place: nothing, the state folder among it, can be made there.)
        let away = dir.path().with_extension("away");
        std::fs::rename(dir.path(), &away).unwrap();
        std::fs::write(dir.path(), b"not a folder").unwrap();
        out.rescan(5);
        let failed = scan_state(true).await;
        std::fs::remove_file(dir.path()).unwrap();
        std::fs::rename(&away, dir.path()).unwrap();
        assert_eq!(failed.scan_failures, 1);
        assert!(failed.scan_last_success.is_some());
        assert_eq!(out.snapshot()[0].1.present, 2, "the last inventory stays");
        out.rescan(5);
        let back = scan_state(false).await;
        assert_eq!(back.scan_failures, 1);
        assert!(back.scan_last_success >= failed.scan_last_success);
        task.stop();
        // A new generation (how many the scrub published meanwhile is its own business).
        assert!(after > scrubbed && scrubbed >= 2, "{scrubbed} then {after}");
        assert_eq!(inv.device_id, 5);
        assert_eq!(inv.present.iter().collect::<Vec<_>>(), vec![100, 101, 102]);
        assert_eq!(inv.corrupt.iter().collect::<Vec<_>>(), vec![101]);
        assert_eq!(inv.no_digest.iter().collect::<Vec<_>>(), vec![102]);
        assert_eq!(
            out.snapshot()[0].1.corrupt,
            1,
            "the scrub's verdict carried over"
        );
        // The complete pass is in the cursor file, and on /metrics.
        let cursor = scrub_cursor::load(&dir.path().join("state"), 5, DigestKind::Md5Hex)
            .unwrap()
            .unwrap();
        assert_eq!(cursor.pass, None);
        let last = cursor.last_complete.unwrap();
        assert_eq!(last.checked, 2);
        assert_eq!(last.corrupt.iter().collect::<Vec<_>>(), vec![101]);
        let status = out.status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].1.position_ratio, 1.0);
        assert_eq!(status[0].1.checked, 2);
        assert_eq!(status[0].1.read_bytes, 7);
        assert_eq!(status[0].1.corrupt, 1);
        assert_eq!(status[0].1.last_complete, Some(last.finished));
        // The complete scans left no checkpoint behind.
        assert!(!scan_checkpoint::checkpoint_path(&dir.path().join("state"), 5).exists());
    }

    #[tokio::test]
    async fn a_scrub_gives_way_to_another_device_s_rescan_and_resumes() {
        use md5::{Digest as _, Md5};
        let root = tempfile::tempdir().unwrap();
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let device = |id: u32, files: u32, size: usize, mb_per_s: f64| {
            let dir = root.path().join(format!("d{id}"));
            std::fs::create_dir(&dir).unwrap();
            for f in 0..files {
                let data = vec![(f % 251) as u8; size];
                std::fs::write(dir.join(f.to_string()), &data).unwrap();
                std::fs::write(dir.join(format!("{f}.digest")), hex(&Md5::digest(&data))).unwrap();
            }
            FragmentSettings {
                device_id: id,
                dir,
                io_mb_per_s: mb_per_s,
                busy_load_per_core: 1000.0,
                ..settings(&root.path().join("state"))
            }
        };
        // Device 1's pass reads 1.2 MB at 0.2 MB/s: 6 s, a fragment every 0.25 s.
        let slow = device(1, 24, 50_000, 0.2);
        let small = device(2, 3, 10, 100.0);
        let small_dir = small.dir.clone();
        // One of device 2's fragments is corrupt: its scrub's verdict shows it was scrubbed.
        std::fs::write(small_dir.join("2"), b"rot").unwrap();
        let out = Arc::new(Inventories::default());
        let mut changed = out.subscribe();
        let task = FragmentTask::spawn(
            vec![slow, small],
            Path::new("/proc"),
            Path::new("/sys"),
            out.clone(),
        )
        .unwrap();
        let status = |id: u32| {
            out.status()
                .into_iter()
                .find(|(d, _)| *d == id)
                .map(|(_, s)| s)
                .unwrap_or_default()
        };
        let published = |id: u32| {
            out.snapshot()
                .into_iter()
                .find(|(d, _)| *d == id)
                .map(|(_, p)| (p.present, p.corrupt))
        };
        // Device 1 is scanned first and its pass starts, then gives way to device 2's first
        // scan, whose own scrub follows: device 2 is scanned and scrubbed (its corrupt
        // fragment found) while device 1's pass, which then resumes, is far from its end.
        tokio::time::timeout(Duration::from_secs(30), async {
            while published(2) != Some((3, 1)) {
                changed.changed().await.unwrap();
            }
        })
        .await
        .expect("device 2 scanned and scrubbed");
        assert!(published(1).is_some());
        assert!(status(1).last_complete.is_none(), "{:?}", status(1));

        // A deletion on device 2 is rescanned at once, in the middle of device 1's pass.
        std::fs::remove_file(small_dir.join("0")).unwrap();
        out.rescan(2);
        tokio::time::timeout(Duration::from_secs(30), async {
            while published(2).map(|(present, _)| present) != Some(2) {
                changed.changed().await.unwrap();
            }
        })
        .await
        .expect("device 2 rescanned");
        let mid = status(1);
        assert!(
            mid.last_complete.is_none() && mid.checked < 24,
            "device 1's pass ended before the rescan: {mid:?}"
        );

        // Device 1's pass then ends, every fragment read once however often it gave way.
        tokio::time::timeout(Duration::from_secs(60), async {
            while status(1).last_complete.is_none() {
                changed.changed().await.unwrap();
            }
        })
        .await
        .expect("device 1's pass completes");
        task.stop();
        let done = status(1);
        assert_eq!(
            (done.checked, done.read_bytes),
            (24, 24 * 50_000),
            "{done:?}"
        );
        assert_eq!(done.position_ratio, 1.0);
        assert_eq!(status(2).checked, 3);
    }

    fn settings(state_dir: &Path) -> FragmentSettings {
        FragmentSettings {
            device_id: 5,
            dir: PathBuf::from("/nonexistent"),
            scan_period: Duration::from_secs(3600),
            scrub_period: Duration::from_secs(7200),
            io_mb_per_s: 1.0,
            busy_load_per_core: 1.0,
            busy_disk_util: 1.0,
            orphan_grace: Duration::ZERO,
            digest: DigestKind::Md5Hex,
            state_dir: state_dir.to_path_buf(),
        }
    }

    #[test]
    fn the_cursor_decides_the_first_scrub() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let s = settings(state);
        let busy = || Busy::new(Path::new("/proc"), Path::new("/sys"), state);
        let out = Inventories::default();
        let now = Instant::now();
        // No cursor: scrub at once, nothing carried.
        let d = DeviceState::new(s.clone(), busy(), now, &out);
        assert_eq!(d.next_scrub, now);
        assert!(d.corrupt.is_empty());
        assert_eq!(
            out.status()[0].1,
            FragmentStatus {
                scrub_period_seconds: 7200,
                scan_period_seconds: 3600,
                ..Default::default()
            }
        );
        // A pass complete an hour ago (period 2 h): the next in about an hour, its verdict kept.
        // (One reading of the clock: two may fall on either side of a second.)
        let finished = unix_now() - 3600;
        let mut cursor = ScrubCursor {
            device_id: 5,
            digest: DigestKind::Md5Hex,
            last_complete: Some(CompletePass {
                finished,
                checked: 9,
                corrupt: [4u32].into_iter().collect(),
            }),
            pass: None,
        };
        scrub_cursor::save(state, &cursor).unwrap();
        let d = DeviceState::new(s.clone(), busy(), now, &out);
        let wait = d.next_scrub - now;
        assert!(
            wait > Duration::from_secs(3590) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
        assert_eq!(d.corrupt.iter().collect::<Vec<_>>(), vec![4]);
        assert_eq!(out.status()[0].1.position_ratio, 1.0);
        assert_eq!(out.status()[0].1.last_complete, Some(finished));
        // A pass under way: at once, from its cursor.
        cursor.pass = Some(PassProgress {
            started: unix_now(),
            position: Some(77),
            ..Default::default()
        });
        scrub_cursor::save(state, &cursor).unwrap();
        let d = DeviceState::new(s.clone(), busy(), now, &out);
        assert_eq!(d.next_scrub, now);
        assert_eq!(d.cursor.pass.unwrap().position, Some(77));
        assert_eq!(out.status()[0].1.position_ratio, 0.0);
        // A corrupt cursor file: ignored, a fresh pass at once (no panic).
        std::fs::write(scrub_cursor::cursor_path(state, 5), b"{\"format\": 1").unwrap();
        let d = DeviceState::new(s.clone(), busy(), now, &out);
        assert_eq!(d.next_scrub, now);
        assert_eq!(d.cursor.pass, None);
        assert_eq!(d.cursor.last_complete, None);
        // Another algorithm's cursor: ignored too.
        scrub_cursor::save(state, &cursor).unwrap();
        let d = DeviceState::new(
            FragmentSettings {
                digest: DigestKind::Sha256Hex,
                ..s
            },
            busy(),
            now,
            &out,
        );
        assert_eq!(d.next_scrub, now);
        assert_eq!(d.cursor.last_complete, None);
    }

    #[test]
    fn the_scan_checkpoint_is_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let s = settings(state);
        let busy = || Busy::new(Path::new("/proc"), Path::new("/sys"), state);
        let out = Inventories::default();
        let now = Instant::now();
        assert!(
            DeviceState::new(s.clone(), busy(), now, &out)
                .resume
                .is_none()
        );
        // An unfinished scan of this device and folder: continued.
        let mut w = scan_checkpoint::Writer::create(state, 5, &s.dir, 1).unwrap();
        w.record(
            9,
            Some(fragments::FragmentFile {
                size: 1,
                digest: true,
                recent: false,
            }),
        )
        .unwrap();
        w.flush().unwrap();
        let d = DeviceState::new(s.clone(), busy(), now, &out);
        assert_eq!(d.resume.unwrap().partial.position, 9);
        // Another folder's: ignored (the scan starts over), not a panic.
        let moved = FragmentSettings {
            dir: PathBuf::from("/elsewhere"),
            ..s.clone()
        };
        assert!(DeviceState::new(moved, busy(), now, &out).resume.is_none());
        // A corrupt one: ignored too.
        std::fs::write(scan_checkpoint::checkpoint_path(state, 5), b"\x00junk\n").unwrap();
        assert!(DeviceState::new(s, busy(), now, &out).resume.is_none());
    }
}
