//! The registry of nodes: which are online through which connection, since when, what they
//! last reported, and what the controller knows of each beyond its link (roles, declared
//! services, storage devices, host name, interfaces, last address) — restored from the store at
//! start, so a node whose agent is down can still be stopped over SSH or woken. Also who owns
//! each storage device id: one node per id; a second claimant is refused and listed as a
//! conflict until an operator moves the device. A plain type driven by link events, so its rules
//! are tested without a network or a database.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use nodewarden_shared::protocol::{Inventory, Role, ScrapeEndpoint, StateReport, StorageDevice};
use serde::{Deserialize, Serialize};

/// How many transitions each node keeps.
pub const HISTORY: usize = 32;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// The live connection of an online node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// Unique per controller process.
    pub id: u64,
    pub remote: String,
    pub agent_version: String,
    pub protocol_version: u16,
    pub connected_at: UnixMillis,
    pub cert_serial: String,
    pub cert_not_after_unix: i64,
    /// What the agent announced in its hello (commands it executes, `metrics:tls`, …).
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub online: bool,
    pub at: UnixMillis,
    pub reason: String,
}

/// A storage device as last known: the node's last report, or the store after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevice {
    pub device_id: u32,
    pub fragment_dir: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Why the folder could not be measured at the last report (sizes are then 0).
    pub error: Option<String>,
}

impl KnownDevice {
    fn from_report(d: &StorageDevice) -> KnownDevice {
        KnownDevice {
            device_id: d.device_id,
            fragment_dir: d.fragment_dir.clone(),
            total_bytes: d.total_bytes,
            free_bytes: d.free_bytes,
            error: d.error.clone(),
        }
    }
}

/// A device id this node reports although another node owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConflict {
    pub device_id: u32,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub online: bool,
    /// When `online` last changed.
    pub since: UnixMillis,
    pub connection: Option<Connection>,
    /// The last report on this controller's run (none after a restart until the agent reports).
    pub last_report: Option<StateReport>,
    pub last_report_at: Option<UnixMillis>,
    /// When the node was last heard from (a report, or its connection), kept across restarts.
    pub last_seen: Option<UnixMillis>,
    /// Roles, declared services and the devices it owns, as last known (kept while offline and
    /// across restarts: what an action on an unreachable agent plans with).
    pub roles: Vec<Role>,
    pub services: Vec<String>,
    pub devices: Vec<KnownDevice>,
    /// Devices it reports that another node owns (refused: never persisted, planned or pushed).
    pub device_conflicts: Vec<DeviceConflict>,
    /// Host name and interfaces, as the agent last described them (kept while offline: the
    /// MACs are what wakes it).
    pub inventory: Option<Inventory>,
    /// The address the agent last connected from (kept while offline: the SSH fallback's
    /// default host).
    pub last_ip: Option<IpAddr>,
    /// The other metrics endpoints its agent listed on the current connection (Ray's, …), for
    /// service discovery; empty while offline.
    pub endpoints: Vec<ScrapeEndpoint>,
    pub transitions: VecDeque<Transition>,
    /// In a cluster (API view only): the controller holding the node's link when another one
    /// does; the node is online there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

impl Node {
    fn new(name: &str, now: UnixMillis) -> Node {
        Node {
            name: name.to_string(),
            online: false,
            since: now,
            connection: None,
            last_report: None,
            last_report_at: None,
            last_seen: None,
            roles: Vec::new(),
            services: Vec::new(),
            devices: Vec::new(),
            device_conflicts: Vec::new(),
            inventory: None,
            last_ip: None,
            endpoints: Vec::new(),
            transitions: VecDeque::new(),
            held_by: None,
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// What the store remembers of a node, to restore it at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownNode {
    pub name: String,
    pub roles: Vec<Role>,
    pub services: Vec<String>,
    pub inventory: Option<Inventory>,
    pub last_ip: Option<IpAddr>,
    /// When it was last seen (Unix ms): `since` of the restored offline state.
    pub last_seen: UnixMillis,
    pub devices: Vec<KnownDevice>,
}

/// What [`Registry::connected`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Connected {
    /// The node came online.
    Online,
    /// The node was online through another connection, which the caller must now close.
    Replaced { old: Connection },
}

/// What [`Registry::report`] made of a report from the node's current connection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reported {
    /// Roles or declared services differ from what was known (the node's record is rewritten).
    pub facts_changed: bool,
    /// What discovery lists for it changed: its metrics port or the devices it owns (in a
    /// cluster its record carries its targets for the other controllers).
    pub targets_changed: bool,
    /// The devices accepted as the node's own (to persist).
    pub accepted: Vec<KnownDevice>,
    /// Devices it claims for the first time although another node owns them.
    pub new_conflicts: Vec<DeviceConflict>,
}

#[derive(Debug, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Node>,
    /// Device id → owning node.
    owners: BTreeMap<u32, String>,
}

/// Why an ownership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    #[error("storage device {device_id} already belongs to {node}")]
    Unchanged { device_id: u32, node: String },
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding what the store remembers: every node offline since it was last seen,
    /// each device owned by the node the store has it under.
    pub fn restore(known: Vec<KnownNode>) -> Registry {
        let mut registry = Registry::new();
        for k in known {
            let mut node = Node::new(&k.name, k.last_seen);
            node.roles = k.roles;
            node.services = k.services;
            node.inventory = k.inventory;
            node.last_ip = k.last_ip;
            node.last_seen = (k.last_seen > 0).then_some(k.last_seen);
            for d in &k.devices {
                registry.owners.insert(d.device_id, k.name.clone());
            }
            node.devices = k.devices;
            registry.nodes.insert(k.name, node);
        }
        registry
    }

    /// What another controller of the cluster knows of a node this one holds no link of: its
    /// roles, services, inventory, address and devices replace what is known here. A node
    /// online here is left alone (its own reports are newer); a device another node here owns
    /// keeps its owner.
    pub fn learn(&mut self, k: KnownNode) {
        if self.nodes.get(&k.name).is_some_and(|n| n.online) {
            return;
        }
        let node = self
            .nodes
            .entry(k.name.clone())
            .or_insert_with(|| Node::new(&k.name, k.last_seen));
        node.roles = k.roles;
        node.services = k.services;
        node.inventory = k.inventory;
        node.last_ip = k.last_ip;
        for d in &k.devices {
            self.owners
                .entry(d.device_id)
                .or_insert_with(|| k.name.clone());
        }
        if let Some(node) = self.nodes.get_mut(&k.name) {
            node.devices = k.devices;
        }
    }

    /// Adds a node declared in the configuration (never connected) so it can be listed and
    /// acted on; an already known node keeps what it reported, gaining only what it lacks.
    pub fn declare(&mut self, name: &str, services: &[String], now: UnixMillis) {
        let node = self
            .nodes
            .entry(name.to_string())
            .or_insert_with(|| Node::new(name, now));
        if node.services.is_empty() {
            node.services = services.to_vec();
        }
    }

    fn record(node: &mut Node, online: bool, at: UnixMillis, reason: String) {
        node.online = online;
        node.since = at;
        if node.transitions.len() == HISTORY {
            node.transitions.pop_front();
        }
        node.transitions
            .push_back(Transition { online, at, reason });
    }

    /// A session for `name` is established on `conn`.
    pub fn connected(&mut self, name: &str, conn: Connection, now: UnixMillis) -> Connected {
        let node = self
            .nodes
            .entry(name.to_string())
            .or_insert_with(|| Node::new(name, now));
        let reason = format!("connected from {}", conn.remote);
        if let Ok(remote) = conn.remote.parse::<std::net::SocketAddr>() {
            node.last_ip = Some(remote.ip());
        }
        node.last_seen = Some(now);
        node.endpoints.clear();
        match node.connection.replace(conn) {
            Some(old) => Connected::Replaced { old },
            None => {
                Self::record(node, true, now, reason);
                Connected::Online
            }
        }
    }

    /// A report arrived on `conn_id`; ignored (`None`) unless that is the node's current
    /// connection. Devices owned by another node are refused and listed as conflicts.
    pub fn report(
        &mut self,
        name: &str,
        conn_id: u64,
        report: StateReport,
        now: UnixMillis,
    ) -> Option<Reported> {
        let node = self.nodes.get_mut(name)?;
        if node.connection.as_ref().is_none_or(|c| c.id != conn_id) {
            return None;
        }
        let services: Vec<String> = report.services.iter().map(|s| s.name.clone()).collect();
        let mut outcome = Reported {
            facts_changed: node.roles != report.roles || node.services != services,
            ..Reported::default()
        };
        let mut conflicts = Vec::new();
        for d in &report.storage {
            let owner = self
                .owners
                .entry(d.device_id)
                .or_insert_with(|| name.to_string());
            if owner == name {
                outcome.accepted.push(KnownDevice::from_report(d));
            } else {
                let conflict = DeviceConflict {
                    device_id: d.device_id,
                    owner: owner.clone(),
                };
                if !node.device_conflicts.contains(&conflict) {
                    outcome.new_conflicts.push(conflict.clone());
                }
                conflicts.push(conflict);
            }
        }
        let port = |r: &StateReport| r.metrics_port;
        let ids = |d: &[KnownDevice]| d.iter().map(|d| d.device_id).collect::<Vec<_>>();
        outcome.targets_changed = node.last_report.as_ref().map(port) != Some(port(&report))
            || ids(&node.devices) != ids(&outcome.accepted);
        node.roles = report.roles.clone();
        node.services = services;
        node.devices = outcome.accepted.clone();
        node.device_conflicts = conflicts;
        node.last_report = Some(report);
        node.last_report_at = Some(now);
        node.last_seen = Some(now);
        Some(outcome)
    }

    /// The agent's inventory arrived on `conn_id`; ignored (false) unless that is the node's
    /// current connection.
    pub fn inventory(&mut self, name: &str, conn_id: u64, inventory: Inventory) -> bool {
        match self.nodes.get_mut(name) {
            Some(node) if node.connection.as_ref().is_some_and(|c| c.id == conn_id) => {
                node.inventory = Some(inventory);
                true
            }
            _ => false,
        }
    }

    /// The agent's endpoint list arrived on `conn_id`; ignored (false) unless that is the
    /// node's current connection.
    pub fn endpoints(&mut self, name: &str, conn_id: u64, list: Vec<ScrapeEndpoint>) -> bool {
        match self.nodes.get_mut(name) {
            Some(node) if node.connection.as_ref().is_some_and(|c| c.id == conn_id) => {
                node.endpoints = list;
                true
            }
            _ => false,
        }
    }

    /// Connection `conn_id` of `name` ended. The node goes offline (true) only if it was its
    /// current connection: a replaced connection closing later changes nothing.
    pub fn disconnected(
        &mut self,
        name: &str,
        conn_id: u64,
        reason: &str,
        now: UnixMillis,
    ) -> bool {
        match self.nodes.get_mut(name) {
            Some(node) if node.connection.as_ref().is_some_and(|c| c.id == conn_id) => {
                node.connection = None;
                node.endpoints.clear();
                Self::record(node, false, now, reason.to_string());
                true
            }
            _ => false,
        }
    }

    /// The node owning `device_id`, if any.
    pub fn device_owner(&self, device_id: u32) -> Option<&str> {
        self.owners.get(&device_id).map(String::as_str)
    }

    /// Nodes other than the owner that report `device_id` now.
    pub fn device_claimants(&self, device_id: u32) -> Vec<&str> {
        self.nodes
            .values()
            .filter(|n| n.device_conflicts.iter().any(|c| c.device_id == device_id))
            .map(|n| n.name.as_str())
            .collect()
    }

    /// Every current conflict: (device, owner, claimant).
    pub fn conflicts(&self) -> Vec<(u32, String, String)> {
        let mut all: Vec<(u32, String, String)> = self
            .nodes
            .values()
            .flat_map(|n| {
                n.device_conflicts
                    .iter()
                    .map(|c| (c.device_id, c.owner.clone(), n.name.clone()))
            })
            .collect();
        all.sort();
        all
    }

    /// An operator moves `device_id` to `node` (a disk moved between hosts, or a conflict
    /// resolved). The previous owner loses it; the new owner's last reported figures for it
    /// become its known state. Returns the previous owner.
    pub fn assign_device(
        &mut self,
        device_id: u32,
        node: &str,
    ) -> Result<Option<String>, OwnershipError> {
        if !self.nodes.contains_key(node) {
            return Err(OwnershipError::UnknownNode(node.to_string()));
        }
        if self.device_owner(device_id) == Some(node) {
            return Err(OwnershipError::Unchanged {
                device_id,
                node: node.to_string(),
            });
        }
        let previous = self.owners.insert(device_id, node.to_string());
        if let Some(old) = previous.as_ref().and_then(|p| self.nodes.get_mut(p)) {
            old.devices.retain(|d| d.device_id != device_id);
        }
        for n in self.nodes.values_mut() {
            n.device_conflicts.retain(|c| c.device_id != device_id);
            if n.name != node {
                continue;
            }
            let reported = n
                .last_report
                .as_ref()
                .and_then(|r| r.storage.iter().find(|d| d.device_id == device_id))
                .map(KnownDevice::from_report);
            if let Some(d) = reported {
                n.devices.retain(|k| k.device_id != device_id);
                n.devices.push(d);
                n.devices.sort_by_key(|k| k.device_id);
            }
        }
        // The old owner still reporting it is a claimant now.
        if let Some(old) = previous.as_ref().and_then(|p| self.nodes.get_mut(p)) {
            let still_reports = old
                .last_report
                .as_ref()
                .is_some_and(|r| r.storage.iter().any(|d| d.device_id == device_id));
            if still_reports {
                old.device_conflicts.push(DeviceConflict {
                    device_id,
                    owner: node.to_string(),
                });
            }
        }
        Ok(previous)
    }

    pub fn get(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn online_count(&self) -> usize {
        self.nodes.values().filter(|n| n.online).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewarden_shared::protocol::{ServiceState, ServiceStatus};

    fn conn(id: u64) -> Connection {
        Connection {
            id,
            remote: format!("127.0.0.1:{id}"),
            agent_version: "t".into(),
            protocol_version: 1,
            connected_at: 0,
            cert_serial: "ab".into(),
            cert_not_after_unix: 0,
            capabilities: vec![],
        }
    }

    fn storage(ids: &[u32]) -> StateReport {
        StateReport {
            roles: vec![Role::Storage],
            storage: ids
                .iter()
                .map(|&device_id| StorageDevice {
                    device_id,
                    fragment_dir: format!("/f{device_id}"),
                    total_bytes: 100,
                    free_bytes: 50,
                    error: None,
                })
                .collect(),
            services: vec![ServiceState {
                name: "dfs".into(),
                status: ServiceStatus::Running,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn online_offline_with_timestamps() {
        let mut r = Registry::new();
        assert_eq!(r.connected("n", conn(1), 100), Connected::Online);
        let n = r.get("n").unwrap();
        assert!(n.online);
        assert_eq!(n.since, 100);
        assert!(r.report("n", 1, StateReport::default(), 150).is_some());
        assert_eq!(r.get("n").unwrap().last_report_at, Some(150));
        let inventory = Inventory {
            hostname: "h".into(),
            interfaces: vec![],
        };
        assert!(r.inventory("n", 1, inventory.clone()));
        assert!(!r.inventory("n", 9, Inventory::default()));
        assert!(r.disconnected("n", 1, "timed out", 200));
        let n = r.get("n").unwrap();
        assert!(!n.online);
        assert_eq!(n.since, 200);
        assert_eq!(n.transitions.len(), 2);
        assert_eq!(n.transitions[1].reason, "timed out");
        // What reaches an offline node stays.
        assert_eq!(n.inventory, Some(inventory));
        assert_eq!(n.last_ip, Some("127.0.0.1".parse().unwrap()));
        // A second close of the same connection is no transition.
        assert!(!r.disconnected("n", 1, "again", 300));
        assert_eq!(r.online_count(), 0);
    }

    #[test]
    fn newer_connection_replaces_older_without_going_offline() {
        let mut r = Registry::new();
        r.connected("n", conn(1), 100);
        assert_eq!(
            r.connected("n", conn(2), 110),
            Connected::Replaced { old: conn(1) }
        );
        // The old connection's late report and close are ignored.
        assert!(r.report("n", 1, StateReport::default(), 120).is_none());
        assert!(!r.disconnected("n", 1, "replaced", 130));
        let n = r.get("n").unwrap();
        assert!(n.online);
        assert_eq!(n.since, 100);
        assert_eq!(n.connection.as_ref().map(|c| c.id), Some(2));
        assert!(r.disconnected("n", 2, "closed", 140));
        assert!(!r.get("n").unwrap().online);
    }

    #[test]
    fn history_is_bounded() {
        let mut r = Registry::new();
        for i in 0..100 {
            r.connected("n", conn(i), i);
            r.disconnected("n", i, "x", i);
        }
        assert_eq!(r.get("n").unwrap().transitions.len(), HISTORY);
        assert!(r.report("unknown", 1, StateReport::default(), 0).is_none());
    }

    #[test]
    fn facts_survive_going_offline_and_change_only_when_reported_otherwise() {
        let mut r = Registry::new();
        r.connected("s", conn(1), 0);
        let first = r.report("s", 1, storage(&[3]), 10).unwrap();
        assert!(first.facts_changed);
        assert!(first.targets_changed);
        assert_eq!(first.accepted.len(), 1);
        let same = r.report("s", 1, storage(&[3]), 20).unwrap();
        assert!(!same.facts_changed && !same.targets_changed);
        assert!(
            r.report("s", 1, storage(&[3, 4]), 25)
                .unwrap()
                .targets_changed
        );
        r.disconnected("s", 1, "gone", 30);
        let n = r.get("s").unwrap();
        assert_eq!(n.roles, [Role::Storage]);
        assert_eq!(n.services, ["dfs"]);
        assert_eq!(n.devices[0].device_id, 3);
        assert_eq!(n.last_seen, Some(25));
    }

    #[test]
    fn restored_nodes_are_offline_with_their_facts_and_devices() {
        let r = Registry::restore(vec![KnownNode {
            name: "s".into(),
            roles: vec![Role::Storage],
            services: vec!["dfs".into()],
            inventory: None,
            last_ip: Some("10.0.0.5".parse().unwrap()),
            last_seen: 1000,
            devices: vec![KnownDevice {
                device_id: 7,
                fragment_dir: "/f".into(),
                total_bytes: 1,
                free_bytes: 1,
                error: None,
            }],
        }]);
        let n = r.get("s").unwrap();
        assert!(!n.online && n.connection.is_none() && n.last_report.is_none());
        assert_eq!(n.since, 1000);
        assert_eq!(n.services, ["dfs"]);
        assert_eq!(r.device_owner(7), Some("s"));
    }

    #[test]
    fn a_second_claimant_of_a_device_is_refused_until_an_operator_moves_it() {
        let mut r = Registry::new();
        r.connected("a", conn(1), 0);
        r.connected("b", conn(2), 0);
        assert_eq!(
            r.report("a", 1, storage(&[5]), 1).unwrap().accepted.len(),
            1
        );
        let b = r.report("b", 2, storage(&[5, 6]), 2).unwrap();
        assert_eq!(
            b.accepted.iter().map(|d| d.device_id).collect::<Vec<_>>(),
            [6]
        );
        assert_eq!(
            b.new_conflicts,
            [DeviceConflict {
                device_id: 5,
                owner: "a".into()
            }]
        );
        // Reported again: still a conflict, but not new.
        assert!(
            r.report("b", 2, storage(&[5, 6]), 3)
                .unwrap()
                .new_conflicts
                .is_empty()
        );
        assert_eq!(r.device_owner(5), Some("a"));
        assert_eq!(r.device_claimants(5), ["b"]);
        assert_eq!(r.conflicts(), [(5, "a".to_string(), "b".to_string())]);
        // Going offline does not move it either.
        r.disconnected("a", 1, "gone", 4);
        assert!(
            r.report("b", 2, storage(&[5, 6]), 5)
                .unwrap()
                .accepted
                .len()
                == 1
        );
        assert_eq!(r.device_owner(5), Some("a"));
        // The operator moves it: b owns it (its last figures), a loses it.
        assert_eq!(r.assign_device(5, "b"), Ok(Some("a".into())));
        assert_eq!(r.device_owner(5), Some("b"));
        assert!(r.get("b").unwrap().devices.iter().any(|d| d.device_id == 5));
        assert!(r.get("a").unwrap().devices.is_empty());
        assert!(r.get("b").unwrap().device_conflicts.is_empty());
        // a's last report still lists it: a is the claimant now.
        assert_eq!(r.conflicts(), [(5, "b".to_string(), "a".to_string())]);
        assert_eq!(
            r.assign_device(5, "b"),
            Err(OwnershipError::Unchanged {
                device_id: 5,
                node: "b".into()
            })
        );
        assert!(matches!(
            r.assign_device(5, "zz"),
            Err(OwnershipError::UnknownNode(_))
        ));
        // A claimant that stops reporting the device is no longer in conflict.
        r.connected("a", conn(3), 6);
        r.report("a", 3, storage(&[]), 7);
        assert!(r.conflicts().is_empty());
    }
}
