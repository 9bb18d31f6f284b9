//! The registry of nodes: which are online through which connection, since when, and what they
//! last reported. A plain type driven by link events, so its rules are tested without a network.
//! (In memory; the state-store issue persists it.)

use std::collections::{BTreeMap, VecDeque};

use nodewarden_shared::protocol::{Inventory, StateReport};
use serde::Serialize;

/// How many transitions each node keeps.
pub const HISTORY: usize = 32;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// The live connection of an online node.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub online: bool,
    pub at: UnixMillis,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub online: bool,
    /// When `online` last changed.
    pub since: UnixMillis,
    pub connection: Option<Connection>,
    pub last_report: Option<StateReport>,
    pub last_report_at: Option<UnixMillis>,
    /// Host name and interfaces, as the agent last described them (kept while offline: the
    /// MACs are what wakes it).
    pub inventory: Option<Inventory>,
    /// The address the agent last connected from (kept while offline: the SSH fallback's
    /// default host).
    pub last_remote: Option<std::net::SocketAddr>,
    pub transitions: VecDeque<Transition>,
}

/// What [`Registry::connected`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Connected {
    /// The node came online.
    Online,
    /// The node was online through another connection, which the caller must now close.
    Replaced { old: Connection },
}

#[derive(Debug, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Node>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
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
        let node = self.nodes.entry(name.to_string()).or_insert_with(|| Node {
            name: name.to_string(),
            online: false,
            since: now,
            connection: None,
            last_report: None,
            last_report_at: None,
            inventory: None,
            last_remote: None,
            transitions: VecDeque::new(),
        });
        let reason = format!("connected from {}", conn.remote);
        if let Ok(remote) = conn.remote.parse() {
            node.last_remote = Some(remote);
        }
        match node.connection.replace(conn) {
            Some(old) => Connected::Replaced { old },
            None => {
                Self::record(node, true, now, reason);
                Connected::Online
            }
        }
    }

    /// A report arrived on `conn_id`; ignored (false) unless that is the node's current connection.
    pub fn report(
        &mut self,
        name: &str,
        conn_id: u64,
        report: StateReport,
        now: UnixMillis,
    ) -> bool {
        match self.nodes.get_mut(name) {
            Some(node) if node.connection.as_ref().is_some_and(|c| c.id == conn_id) => {
                node.last_report = Some(report);
                node.last_report_at = Some(now);
                true
            }
            _ => false,
        }
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
                Self::record(node, false, now, reason.to_string());
                true
            }
            _ => false,
        }
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

    #[test]
    fn online_offline_with_timestamps() {
        let mut r = Registry::new();
        assert_eq!(r.connected("n", conn(1), 100), Connected::Online);
        let n = r.get("n").unwrap();
        assert!(n.online);
        assert_eq!(n.since, 100);
        assert!(r.report("n", 1, StateReport::default(), 150));
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
        assert_eq!(n.last_remote, Some("127.0.0.1:1".parse().unwrap()));
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
        assert!(!r.report("n", 1, StateReport::default(), 120));
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
        assert!(!r.report("unknown", 1, StateReport::default(), 0));
    }
}
