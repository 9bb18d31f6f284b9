//! A bounded per-node history of state reports, for the console's node page charts (load,
//! memory, root disk and storage free over the last hour): at most one point per
//! [`History::interval`] per node, at most [`History::cap`] points per node (the oldest dropped
//! first), kept in memory only (a restarted controller starts empty). A plain type fed by
//! `fleet::reported`, tested without a network.

use std::collections::{BTreeMap, HashMap, VecDeque};

use nodewarden_shared::protocol::StateReport;
use serde::{Deserialize, Serialize};

use crate::registry::UnixMillis;

/// Points kept per node: an hour at one point per [`DEFAULT_INTERVAL_MS`].
pub const DEFAULT_CAP: usize = 720;
/// The least time between two points of a node (reports in between are not kept).
pub const DEFAULT_INTERVAL_MS: u64 = 5_000;

/// One storage device's figures in a [`Point`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePoint {
    pub device_id: u32,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// What one state report said, as the charts need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub at_ms: UnixMillis,
    pub load1: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub root_fs_used_bytes: u64,
    pub root_fs_total_bytes: u64,
    /// Devices measured at that report (a device whose folder could not be measured is left out).
    pub devices: Vec<DevicePoint>,
}

impl Point {
    pub fn from_report(at_ms: UnixMillis, report: &StateReport) -> Point {
        let h = &report.health;
        Point {
            at_ms,
            load1: if h.load1.is_finite() { h.load1 } else { 0.0 },
            memory_used_bytes: h.memory_used_bytes,
            memory_total_bytes: h.memory_total_bytes,
            root_fs_used_bytes: h.root_fs_used_bytes,
            root_fs_total_bytes: h.root_fs_total_bytes,
            devices: report
                .storage
                .iter()
                .filter(|d| d.error.is_none())
                .map(|d| DevicePoint {
                    device_id: d.device_id,
                    free_bytes: d.free_bytes,
                    total_bytes: d.total_bytes,
                })
                .collect(),
        }
    }
}

/// Per node, its recent points, oldest first.
#[derive(Debug)]
pub struct History {
    cap: usize,
    interval: u64,
    nodes: HashMap<String, VecDeque<Point>>,
}

impl Default for History {
    fn default() -> Self {
        History::new(DEFAULT_CAP, DEFAULT_INTERVAL_MS)
    }
}

impl History {
    /// `cap` points per node (at least 1), one per `interval_ms` at most.
    pub fn new(cap: usize, interval_ms: u64) -> History {
        History {
            cap: cap.max(1),
            interval: interval_ms,
            nodes: HashMap::new(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// Keeps `point` for `node` unless the node's last point is less than the interval older
    /// (or newer: a clock step back restarts the series from this point). Whether it was kept.
    pub fn record(&mut self, node: &str, point: Point) -> bool {
        let series = self.nodes.entry(node.to_string()).or_default();
        if let Some(last) = series.back() {
            if point.at_ms < last.at_ms {
                series.clear();
            } else if point.at_ms - last.at_ms < self.interval {
                return false;
            }
        }
        if series.len() == self.cap {
            series.pop_front();
        }
        series.push_back(point);
        true
    }

    /// The node's points at or after `since_ms`, oldest first.
    pub fn points(&self, node: &str, since_ms: UnixMillis) -> Vec<Point> {
        self.nodes
            .get(node)
            .map(|s| s.iter().filter(|p| p.at_ms >= since_ms).cloned().collect())
            .unwrap_or_default()
    }

    /// Drops every node not in `keep` (nodes the registry no longer knows).
    pub fn retain(&mut self, keep: &BTreeMap<String, ()>) {
        self.nodes.retain(|name, _| keep.contains_key(name));
    }

    /// Points held, all nodes together.
    pub fn len(&self) -> usize {
        self.nodes.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewarden_shared::protocol::{Health, StorageDevice};

    fn report(load1: f64) -> StateReport {
        StateReport {
            health: Health {
                load1,
                memory_total_bytes: 100,
                memory_used_bytes: 40,
                root_fs_total_bytes: 1000,
                root_fs_used_bytes: 250,
            },
            storage: vec![
                StorageDevice {
                    device_id: 3,
                    fragment_dir: "/f".into(),
                    total_bytes: 10,
                    free_bytes: 1,
                    error: None,
                },
                StorageDevice {
                    device_id: 4,
                    fragment_dir: "/g".into(),
                    total_bytes: 0,
                    free_bytes: 0,
                    error: Some("gone".into()),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_point_has_the_reports_figures_and_only_measured_devices() {
        let p = Point::from_report(7, &report(1.5));
        assert_eq!(p.at_ms, 7);
        assert_eq!(p.load1, 1.5);
        assert_eq!((p.memory_used_bytes, p.memory_total_bytes), (40, 100));
        assert_eq!((p.root_fs_used_bytes, p.root_fs_total_bytes), (250, 1000));
        assert_eq!(
            p.devices,
            [DevicePoint {
                device_id: 3,
                free_bytes: 1,
                total_bytes: 10
            }]
        );
        assert_eq!(Point::from_report(0, &report(f64::NAN)).load1, 0.0);
    }

    #[test]
    fn one_point_per_interval_and_the_oldest_dropped_at_the_cap() {
        let mut h = History::new(3, 1000);
        assert!(h.record("a", Point::from_report(0, &report(0.0))));
        // Within the interval: not kept.
        assert!(!h.record("a", Point::from_report(999, &report(1.0))));
        for (i, at) in [1000, 2500, 3500, 4500].into_iter().enumerate() {
            assert!(h.record("a", Point::from_report(at, &report(i as f64))));
        }
        let at: Vec<u64> = h.points("a", 0).iter().map(|p| p.at_ms).collect();
        assert_eq!(at, [2500, 3500, 4500], "capped at 3, oldest gone");
        assert_eq!(h.points("a", 3500).len(), 2);
        assert!(h.points("b", 0).is_empty());
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn nodes_are_apart_and_a_clock_step_back_restarts_the_series() {
        let mut h = History::new(10, 1000);
        h.record("a", Point::from_report(5000, &report(0.0)));
        h.record("b", Point::from_report(5000, &report(0.0)));
        assert!(h.record("a", Point::from_report(1000, &report(0.0))));
        assert_eq!(h.points("a", 0).len(), 1);
        assert_eq!(h.points("b", 0).len(), 1);
        h.retain(&BTreeMap::from([("b".to_string(), ())]));
        assert!(h.points("a", 0).is_empty());
        assert_eq!(h.len(), 1);
        // A cap of 0 still keeps the last point.
        let mut h = History::new(0, 0);
        h.record("a", Point::from_report(1, &report(0.0)));
        h.record("a", Point::from_report(2, &report(0.0)));
        assert_eq!(h.points("a", 0).len(), 1);
        assert!(!h.is_empty());
    }
}
