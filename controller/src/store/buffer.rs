//! What has not reached the database yet, as plain data (no I/O).
//!
//! Node and device state is coalesced: the buffer keeps the latest state of every node and
//! device and a set of the dirty ones, so a node that reports three times between flushes
//! costs one row. Events are an ordered queue with a bound covering everything not yet
//! persisted (queued and in flight). Operations are the audit log proper and never give way to
//! transitions: node transitions and conflicts may fill the queue only up to a reserve (a tenth
//! of the bound) and are dropped and counted past it; an operation that finds the queue full
//! sheds the oldest queued transition (counted); a requested operation that finds no room even
//! so is refused (the caller must not run it), and an operation's end is always taken. A failed
//! flush hands its batch back ([`WriteBuffer::requeue`]): its events go back in front, in
//! order, and its nodes and devices are marked dirty again (their current state is the latest).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::SystemTime;

use super::types::{
    AlertNotice, DeviceReport, Event, EventKind, MAX_KEY_BYTES, MAX_TEXT_BYTES, NodeInfo,
    NodeRecord, Operation, OperationResult, Requested, clamp_text,
};

/// An event with the id that makes writing it idempotent (a retried flush whose first commit
/// did reach the database writes it once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub uid: String,
    pub event: Event,
}

/// One flush's worth of rows, in the order they must be written.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub nodes: Vec<NodeRecord>,
    pub devices: Vec<DeviceReport>,
    pub events: Vec<PendingEvent>,
    /// Events were left queued because the batch was full.
    pub events_left: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.devices.is_empty() && self.events.is_empty()
    }
    pub fn rows(&self) -> usize {
        self.nodes.len() + self.devices.len() + self.events.len()
    }
}

/// What happened to an event handed to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// Dropped because the buffer is full; `first` is true for the first drop since the buffer
    /// last had room (the moment to log loudly).
    Dropped {
        first: bool,
    },
}

/// A node id the store refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectedNode {
    #[error("node id is empty")]
    EmptyId,
    #[error("node id {0:?}… is longer than {MAX_KEY_BYTES} bytes")]
    IdTooLong(String),
    #[error("node {0:?} is not known to the store (it never connected)")]
    Unknown(String),
}

#[derive(Debug)]
pub struct WriteBuffer {
    nodes: HashMap<String, NodeRecord>,
    dirty_nodes: BTreeSet<String>,
    devices: HashMap<i64, DeviceReport>,
    dirty_devices: BTreeSet<i64>,
    events: VecDeque<PendingEvent>,
    events_in_flight: usize,
    event_bound: usize,
    dropping: bool,
    events_dropped: u64,
    /// Queued transitions evicted to make room for operations.
    events_shed: u64,
    /// Distinguishes this controller run's event uids from earlier runs'.
    run_id: u64,
    next_event_seq: u64,
}

impl WriteBuffer {
    /// A buffer holding what the database already has (nothing dirty). `event_bound` is at
    /// least 1.
    pub fn new(
        known_nodes: Vec<NodeRecord>,
        known_devices: Vec<DeviceReport>,
        event_bound: usize,
        run_id: u64,
    ) -> WriteBuffer {
        WriteBuffer {
            nodes: known_nodes
                .into_iter()
                .map(|n| (n.info.node_id.clone(), n))
                .collect(),
            dirty_nodes: BTreeSet::new(),
            devices: known_devices
                .into_iter()
                .map(|d| (d.device_id, d))
                .collect(),
            dirty_devices: BTreeSet::new(),
            events: VecDeque::new(),
            events_in_flight: 0,
            event_bound: event_bound.max(1),
            dropping: false,
            events_dropped: 0,
            events_shed: 0,
            run_id,
            next_event_seq: 0,
        }
    }

    /// An agent connected: its declared identity replaces what was known, it is online, and an
    /// `Online` event is logged if it was offline (or new).
    pub fn node_connected(
        &mut self,
        info: NodeInfo,
        at: SystemTime,
    ) -> Result<Queued, RejectedNode> {
        check_node_id(&info.node_id)?;
        let info = clamp_info(info);
        let node_id = info.node_id.clone();
        let was_online = match self.nodes.get_mut(&node_id) {
            Some(known) => {
                let was_online = known.online;
                known.info = info;
                known.online = true;
                known.last_seen = known.last_seen.max(at);
                was_online
            }
            None => {
                self.nodes.insert(
                    node_id.clone(),
                    NodeRecord {
                        info,
                        first_seen: at,
                        last_seen: at,
                        online: true,
                    },
                );
                false
            }
        };
        self.dirty_nodes.insert(node_id.clone());
        if was_online {
            return Ok(Queued::Yes);
        }
        Ok(self.push_event(Event {
            at,
            node_id,
            kind: EventKind::Online,
        }))
    }

    /// What a known node declares changed (its interfaces arrived, its services or roles
    /// changed) while its online state did not: the record is rewritten, no event.
    pub fn node_updated(&mut self, info: NodeInfo) -> Result<(), RejectedNode> {
        check_node_id(&info.node_id)?;
        let info = clamp_info(info);
        let known = self
            .nodes
            .get_mut(&info.node_id)
            .ok_or_else(|| RejectedNode::Unknown(info.node_id.clone()))?;
        if known.info != info {
            known.info = info;
            self.dirty_nodes.insert(known.info.node_id.clone());
        }
        Ok(())
    }

    /// The node reported (a heartbeat or state report): only `last_seen` moves.
    pub fn node_seen(&mut self, node_id: &str, at: SystemTime) -> Result<(), RejectedNode> {
        let known = self
            .nodes
            .get_mut(node_id)
            .ok_or_else(|| RejectedNode::Unknown(node_id.to_string()))?;
        if at > known.last_seen {
            known.last_seen = at;
            self.dirty_nodes.insert(node_id.to_string());
        }
        Ok(())
    }

    /// The node went offline (link closed, timed out, agent exited, controller restarted). An
    /// `Offline` event is logged if it was online.
    pub fn node_offline(
        &mut self,
        node_id: &str,
        at: SystemTime,
        reason: &str,
    ) -> Result<Queued, RejectedNode> {
        let known = self
            .nodes
            .get_mut(node_id)
            .ok_or_else(|| RejectedNode::Unknown(node_id.to_string()))?;
        if !known.online {
            return Ok(Queued::Yes);
        }
        known.online = false;
        self.dirty_nodes.insert(node_id.to_string());
        Ok(self.push_event(Event {
            at,
            node_id: node_id.to_string(),
            kind: EventKind::Offline {
                reason: clamp_text(reason, MAX_TEXT_BYTES).to_string(),
            },
        }))
    }

    /// Marks every online node offline (at start-up: no agent is connected yet), except the
    /// nodes another controller of the cluster holds: those stay online in the database, and
    /// here they count as not online (this controller holds no link of theirs), unwritten.
    pub fn all_offline(
        &mut self,
        at: SystemTime,
        reason: &str,
        held_elsewhere: &BTreeSet<String>,
    ) -> Vec<Queued> {
        for id in held_elsewhere {
            if let Some(n) = self.nodes.get_mut(id) {
                n.online = false;
            }
        }
        let mut online: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.online)
            .map(|n| n.info.node_id.clone())
            .collect();
        online.sort();
        online
            .iter()
            .filter_map(|id| self.node_offline(id, at, reason).ok())
            .collect()
    }

    /// The latest report of a storage device replaces the previous one.
    pub fn device_report(&mut self, report: DeviceReport) -> Result<(), RejectedNode> {
        check_node_id(&report.node_id)?;
        let mut report = report;
        report.fragment_folder = clamp_text(&report.fragment_folder, MAX_TEXT_BYTES).to_string();
        self.dirty_devices.insert(report.device_id);
        self.devices.insert(report.device_id, report);
        Ok(())
    }

    /// An operation about to be dispatched to `node_id`. `Dropped` means the audit log could
    /// not take it (the queue is full of operations): the caller must not run it.
    pub fn requested(
        &mut self,
        node_id: &str,
        at: SystemTime,
        requested: Requested,
    ) -> Result<Queued, RejectedNode> {
        check_node_id(node_id)?;
        let requested = Requested {
            operation_id: clamp_text(&requested.operation_id, 64).to_string(),
            actor: clamp_text(&requested.actor, MAX_TEXT_BYTES).to_string(),
            action: clamp_text(&requested.action, MAX_TEXT_BYTES).to_string(),
            path: requested.path,
            via: requested
                .via
                .map(|v| clamp_text(&v, MAX_TEXT_BYTES).to_string()),
        };
        Ok(self.push_event(Event {
            at,
            node_id: node_id.to_string(),
            kind: EventKind::Requested(requested),
        }))
    }

    /// `node_id` reported storage device `device_id`, which `owner` owns.
    pub fn device_conflict(
        &mut self,
        node_id: &str,
        at: SystemTime,
        device_id: i64,
        owner: &str,
    ) -> Result<Queued, RejectedNode> {
        check_node_id(node_id)?;
        Ok(self.push_event(Event {
            at,
            node_id: node_id.to_string(),
            kind: EventKind::DeviceConflict {
                device_id,
                owner: clamp_text(owner, MAX_KEY_BYTES).to_string(),
            },
        }))
    }

    /// Alertmanager notified an alert about `node_id` (a node's name, or `fleet`). Dropped, like
    /// transitions, when the queue is full.
    pub fn alert(
        &mut self,
        node_id: &str,
        at: SystemTime,
        notice: AlertNotice,
    ) -> Result<Queued, RejectedNode> {
        check_node_id(node_id)?;
        Ok(self.push_event(Event {
            at,
            node_id: node_id.to_string(),
            kind: EventKind::Alert(AlertNotice {
                alertname: clamp_text(&notice.alertname, MAX_KEY_BYTES).to_string(),
                severity: clamp_text(&notice.severity, MAX_KEY_BYTES).to_string(),
                summary: clamp_text(&notice.summary, MAX_TEXT_BYTES).to_string(),
                firing: notice.firing,
            }),
        }))
    }

    /// A remote operation on `node_id` (its target) ended, logged in order with the
    /// transitions. Always taken (its request already had room).
    pub fn operation(
        &mut self,
        node_id: &str,
        at: SystemTime,
        operation: Operation,
    ) -> Result<Queued, RejectedNode> {
        check_node_id(node_id)?;
        let operation = Operation {
            operation_id: operation
                .operation_id
                .map(|id| clamp_text(&id, 64).to_string()),
            actor: clamp_text(&operation.actor, MAX_TEXT_BYTES).to_string(),
            action: clamp_text(&operation.action, MAX_TEXT_BYTES).to_string(),
            path: operation.path,
            result: match operation.result {
                OperationResult::Ok => OperationResult::Ok,
                OperationResult::Failed { error } => OperationResult::Failed {
                    error: clamp_text(&error, MAX_TEXT_BYTES).to_string(),
                },
                OperationResult::Unknown { reason } => OperationResult::Unknown {
                    reason: clamp_text(&reason, MAX_TEXT_BYTES).to_string(),
                },
            },
            duration: operation.duration,
        };
        Ok(self.push_event(Event {
            at,
            node_id: node_id.to_string(),
            kind: EventKind::Operation(operation),
        }))
    }

    /// How many pending events transitions may fill: the rest of the bound is kept for
    /// operations.
    fn transition_limit(&self) -> usize {
        self.event_bound - self.event_bound / 10
    }

    /// Evicts the oldest queued (not in-flight) event that is not an operation.
    fn shed_transition(&mut self) -> bool {
        match self
            .events
            .iter()
            .position(|e| !e.event.kind.is_operation())
        {
            Some(i) => {
                self.events.remove(i);
                self.events_shed += 1;
                true
            }
            None => false,
        }
    }

    fn push_event(&mut self, event: Event) -> Queued {
        let pending = self.events.len() + self.events_in_flight;
        let admitted = match &event.kind {
            EventKind::Operation(_) => {
                if pending >= self.event_bound {
                    self.shed_transition();
                }
                true
            }
            EventKind::Requested(_) => pending < self.event_bound || self.shed_transition(),
            _ => pending < self.transition_limit(),
        };
        if !admitted {
            self.events_dropped += 1;
            let first = !self.dropping;
            self.dropping = true;
            return Queued::Dropped { first };
        }
        self.dropping = false;
        let uid = format!("{:016x}-{}", self.run_id, self.next_event_seq);
        self.next_event_seq += 1;
        self.events.push_back(PendingEvent { uid, event });
        Queued::Yes
    }

    /// Takes everything dirty and at most `max_events` of the queued events (oldest first) for
    /// one flush, so a backlog after an outage is written in bounded transactions. Until
    /// [`complete`](Self::complete) or [`requeue`](Self::requeue), the batch's events still
    /// count against the bound.
    pub fn take(&mut self, max_events: usize) -> Batch {
        let nodes = std::mem::take(&mut self.dirty_nodes)
            .into_iter()
            .filter_map(|id| self.nodes.get(&id).cloned())
            .collect();
        let devices = std::mem::take(&mut self.dirty_devices)
            .into_iter()
            .filter_map(|id| self.devices.get(&id).cloned())
            .collect();
        let count = self.events.len().min(max_events.max(1));
        let events: Vec<PendingEvent> = self.events.drain(..count).collect();
        self.events_in_flight += events.len();
        Batch {
            nodes,
            devices,
            events,
            events_left: !self.events.is_empty(),
        }
    }

    /// The batch is in the database.
    pub fn complete(&mut self, batch: &Batch) {
        self.events_in_flight = self.events_in_flight.saturating_sub(batch.events.len());
    }

    /// The batch did not reach the database: keep it for the next attempt. Events go back in
    /// front of any queued since, in their order; nodes and devices become dirty again and
    /// are written with their latest state.
    pub fn requeue(&mut self, batch: Batch) {
        self.events_in_flight = self.events_in_flight.saturating_sub(batch.events.len());
        for event in batch.events.into_iter().rev() {
            self.events.push_front(event);
        }
        self.dirty_nodes
            .extend(batch.nodes.into_iter().map(|n| n.info.node_id));
        self.dirty_devices
            .extend(batch.devices.into_iter().map(|d| d.device_id));
    }

    pub fn node(&self, node_id: &str) -> Option<&NodeRecord> {
        self.nodes.get(node_id)
    }
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }
    pub fn devices(&self) -> impl Iterator<Item = &DeviceReport> {
        self.devices.values()
    }
    /// Events waiting for the database (queued and in flight).
    pub fn events_pending(&self) -> usize {
        self.events.len() + self.events_in_flight
    }
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }
    pub fn events_shed(&self) -> u64 {
        self.events_shed
    }
    /// Rows the next flush would write.
    pub fn dirty_rows(&self) -> usize {
        self.dirty_nodes.len() + self.dirty_devices.len() + self.events.len()
    }
}

fn check_node_id(node_id: &str) -> Result<(), RejectedNode> {
    if node_id.is_empty() {
        return Err(RejectedNode::EmptyId);
    }
    if node_id.len() > MAX_KEY_BYTES {
        return Err(RejectedNode::IdTooLong(clamp_text(node_id, 64).to_string()));
    }
    Ok(())
}

fn clamp_info(info: NodeInfo) -> NodeInfo {
    let clamp = |s: &str| clamp_text(s, MAX_TEXT_BYTES).to_string();
    let clamp_list = |list: Vec<String>| {
        // The whole list is one JSON column: bound the total, not just each entry.
        let mut total = 0;
        list.into_iter()
            .map(|s| clamp(&s))
            .take_while(|s| {
                // Escaping can make an entry longer in JSON than in memory.
                total += serde_json::to_string(s).map_or(usize::MAX / 2, |j| j.len() + 1);
                total <= MAX_TEXT_BYTES
            })
            .collect()
    };
    NodeInfo {
        node_id: info.node_id,
        hostname: clamp(&info.hostname),
        addresses: clamp_list(info.addresses),
        mac_addresses: clamp_list(info.mac_addresses),
        roles: clamp_list(info.roles),
        agent_version: clamp(&info.agent_version),
        cert_fingerprint: clamp(&info.cert_fingerprint),
        services: clamp_list(info.services),
        interfaces: clamp_interfaces(info.interfaces),
        // Cut JSON would be worse than none: a target list too long to keep is left out.
        scrape: if info.scrape.len() <= MAX_TEXT_BYTES {
            info.scrape
        } else {
            String::new()
        },
    }
}

/// Interfaces up to what fits one column ([`MAX_TEXT_BYTES`] of JSON); names and addresses are
/// short, so only a node with hundreds of interfaces loses its last ones.
fn clamp_interfaces(
    list: Vec<super::types::InterfaceRecord>,
) -> Vec<super::types::InterfaceRecord> {
    let mut total = 2;
    list.into_iter()
        .take_while(|i| {
            total += serde_json::to_string(i).map_or(usize::MAX / 2, |j| j.len() + 1);
            total <= MAX_TEXT_BYTES
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::types::OperationPath;
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000 + secs)
    }

    fn info(id: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.to_string(),
            hostname: format!("{id}.example"),
            addresses: vec!["10.0.0.1".into()],
            mac_addresses: vec!["52:54:00:00:00:01".into()],
            roles: vec!["storage".into()],
            agent_version: "0.1.0".into(),
            cert_fingerprint: "sha256:ab".into(),
            services: vec!["dfs".into()],
            interfaces: vec![],
            scrape: String::new(),
        }
    }

    fn op(action: &str) -> Operation {
        Operation {
            operation_id: None,
            actor: "alice".into(),
            action: action.into(),
            path: OperationPath::Ssh,
            result: OperationResult::Ok,
            duration: Duration::from_millis(120),
        }
    }

    fn device(id: i64, free: u64, t: u64) -> DeviceReport {
        DeviceReport {
            device_id: id,
            node_id: "n1".into(),
            fragment_folder: "/data/frag".into(),
            total_bytes: 1000,
            free_bytes: free,
            fragment_count: 3,
            reported_at: at(t),
        }
    }

    fn kinds(batch: &Batch) -> Vec<String> {
        batch
            .events
            .iter()
            .map(|e| match &e.event.kind {
                EventKind::Online => format!("{} online", e.event.node_id),
                EventKind::Offline { .. } => format!("{} offline", e.event.node_id),
                EventKind::Operation(o) => format!("{} {}", e.event.node_id, o.action),
                EventKind::Requested(r) => format!("{} requested {}", e.event.node_id, r.action),
                EventKind::DeviceConflict { device_id, .. } => {
                    format!("{} conflict {device_id}", e.event.node_id)
                }
                EventKind::Alert(a) => format!("{} alert {}", e.event.node_id, a.alertname),
            })
            .collect()
    }

    #[test]
    fn repeated_reports_coalesce_into_one_row_with_the_latest_state() {
        let mut buf = WriteBuffer::new(vec![], vec![], 10, 1);
        buf.node_connected(info("n1"), at(0)).unwrap();
        buf.node_seen("n1", at(5)).unwrap();
        buf.node_seen("n1", at(10)).unwrap();
        buf.device_report(device(7, 900, 5)).unwrap();
        buf.device_report(device(7, 800, 10)).unwrap();
        let batch = buf.take(usize::MAX);
        assert_eq!(batch.nodes.len(), 1);
        assert_eq!(batch.nodes[0].last_seen, at(10));
        assert_eq!(batch.nodes[0].first_seen, at(0));
        assert_eq!(batch.devices, vec![device(7, 800, 10)]);
        assert_eq!(kinds(&batch), vec!["n1 online"]);
        buf.complete(&batch);
        assert!(buf.take(usize::MAX).is_empty());
    }

    #[test]
    fn only_transitions_are_logged() {
        let mut buf = WriteBuffer::new(vec![], vec![], 10, 1);
        buf.node_connected(info("n1"), at(0)).unwrap();
        buf.node_connected(info("n1"), at(1)).unwrap();
        buf.node_offline("n1", at(2), "link closed").unwrap();
        buf.node_offline("n1", at(3), "link closed").unwrap();
        buf.node_connected(info("n1"), at(4)).unwrap();
        let batch = buf.take(usize::MAX);
        assert_eq!(kinds(&batch), vec!["n1 online", "n1 offline", "n1 online"]);
        assert!(batch.nodes[0].online);
    }

    #[test]
    fn unknown_and_bad_node_ids_are_refused() {
        let mut buf = WriteBuffer::new(vec![], vec![], 10, 1);
        assert_eq!(
            buf.node_seen("ghost", at(0)),
            Err(RejectedNode::Unknown("ghost".into()))
        );
        assert_eq!(
            buf.node_connected(info(""), at(0)),
            Err(RejectedNode::EmptyId)
        );
        assert!(matches!(
            buf.node_connected(info(&"x".repeat(300)), at(0)),
            Err(RejectedNode::IdTooLong(_))
        ));
        assert_eq!(buf.dirty_rows(), 0);
    }

    #[test]
    fn requeued_events_keep_their_order_ahead_of_newer_ones() {
        let mut buf = WriteBuffer::new(vec![], vec![], 10, 1);
        buf.node_connected(info("n1"), at(0)).unwrap();
        buf.operation("n1", at(1), op("wake")).unwrap();
        let failed = buf.take(usize::MAX);
        buf.operation("n1", at(2), op("stop")).unwrap();
        buf.node_seen("n1", at(3)).unwrap();
        buf.requeue(failed);
        let batch = buf.take(usize::MAX);
        assert_eq!(kinds(&batch), vec!["n1 online", "n1 wake", "n1 stop"]);
        assert_eq!(batch.nodes.len(), 1);
        assert_eq!(
            batch.nodes[0].last_seen,
            at(3),
            "latest state, not the stale copy"
        );
        let uids: BTreeSet<_> = batch.events.iter().map(|e| e.uid.clone()).collect();
        assert_eq!(uids.len(), 3, "uids are unique");
    }

    #[test]
    fn a_backlog_is_taken_in_bounded_batches_in_order() {
        let mut buf = WriteBuffer::new(vec![], vec![], 10, 1);
        for i in 0..5 {
            buf.operation("n1", at(i), op(&format!("op{i}"))).unwrap();
        }
        let first = buf.take(2);
        assert_eq!(kinds(&first), vec!["n1 op0", "n1 op1"]);
        assert!(first.events_left);
        assert_eq!(buf.events_pending(), 5);
        buf.complete(&first);
        assert_eq!(buf.dirty_rows(), 3);
        let rest = buf.take(10);
        assert_eq!(kinds(&rest), vec!["n1 op2", "n1 op3", "n1 op4"]);
        assert!(!rest.events_left);
    }

    #[test]
    fn requeued_device_keeps_newer_report() {
        let mut buf = WriteBuffer::new(vec![], vec![], 10, 1);
        buf.device_report(device(7, 900, 1)).unwrap();
        let failed = buf.take(usize::MAX);
        buf.device_report(device(7, 500, 2)).unwrap();
        buf.requeue(failed);
        assert_eq!(buf.take(usize::MAX).devices, vec![device(7, 500, 2)]);
    }

    #[test]
    fn bound_covers_in_flight_events_and_drops_are_counted() {
        let mut buf = WriteBuffer::new(vec![], vec![], 3, 1);
        assert_eq!(buf.node_connected(info("n1"), at(0)).unwrap(), Queued::Yes);
        assert_eq!(buf.node_offline("n1", at(1), "x").unwrap(), Queued::Yes);
        let in_flight = buf.take(usize::MAX);
        assert_eq!(buf.node_connected(info("n1"), at(2)).unwrap(), Queued::Yes);
        assert_eq!(
            buf.node_offline("n1", at(3), "x").unwrap(),
            Queued::Dropped { first: true }
        );
        // The record still changed; only its event was not taken.
        assert!(!buf.node("n1").unwrap().online);
        assert_eq!(
            buf.node_connected(info("n1"), at(4)).unwrap(),
            Queued::Dropped { first: false }
        );
        assert_eq!(buf.events_dropped(), 2);
        assert_eq!(buf.events_pending(), 3);
        buf.requeue(in_flight);
        let batch = buf.take(usize::MAX);
        assert_eq!(kinds(&batch), vec!["n1 online", "n1 offline", "n1 online"]);
        buf.complete(&batch);
        assert_eq!(buf.events_pending(), 0);
        assert_eq!(buf.node_offline("n1", at(5), "x").unwrap(), Queued::Yes);
    }

    #[test]
    fn operations_shed_queued_transitions_never_in_flight_ones_and_ends_always_fit() {
        let mut buf = WriteBuffer::new(vec![], vec![], 3, 1);
        buf.node_connected(info("n1"), at(0)).unwrap();
        let in_flight = buf.take(usize::MAX);
        buf.node_offline("n1", at(1), "x").unwrap();
        buf.node_connected(info("n1"), at(2)).unwrap();
        let request = |id: &str| Requested {
            operation_id: id.into(),
            actor: "a".into(),
            action: "stop".into(),
            path: super::super::types::OperationPath::Agent,
            via: None,
        };
        // Full (one in flight, two queued): the request sheds the oldest queued transition.
        assert_eq!(
            buf.requested("n1", at(3), request("r1")).unwrap(),
            Queued::Yes
        );
        assert_eq!(buf.events_shed(), 1);
        assert_eq!(
            buf.requested("n1", at(4), request("r2")).unwrap(),
            Queued::Yes
        );
        assert_eq!(buf.events_shed(), 2);
        // Only the in-flight transition and operations now: a request is refused...
        assert!(matches!(
            buf.requested("n1", at(5), request("r3")).unwrap(),
            Queued::Dropped { .. }
        ));
        // ...an end is taken.
        assert_eq!(buf.operation("n1", at(6), op("stop")).unwrap(), Queued::Yes);
        buf.requeue(in_flight);
        let batch = buf.take(usize::MAX);
        assert_eq!(
            kinds(&batch),
            vec![
                "n1 online",
                "n1 requested stop",
                "n1 requested stop",
                "n1 stop"
            ]
        );
    }

    #[test]
    fn start_up_marks_known_online_nodes_offline_with_an_event() {
        let known = |id: &str, online| NodeRecord {
            info: info(id),
            first_seen: at(0),
            last_seen: at(1),
            online,
        };
        let mut buf = WriteBuffer::new(vec![known("a", true), known("b", false)], vec![], 10, 2);
        let queued = buf.all_offline(at(9), "controller started", &BTreeSet::new());
        assert_eq!(queued, vec![Queued::Yes]);
        let batch = buf.take(usize::MAX);
        assert_eq!(kinds(&batch), vec!["a offline"]);
        assert_eq!(batch.nodes.len(), 1);
        assert!(!batch.nodes[0].online);
        assert!(buf.nodes().all(|n| !n.online));
        assert!(batch.events[0].uid.starts_with("0000000000000002-"));
    }

    #[test]
    fn long_text_is_clamped_so_no_row_can_be_refused() {
        let mut buf = WriteBuffer::new(vec![], vec![], 10, 1);
        let mut big = info("n1");
        big.hostname = "h".repeat(MAX_TEXT_BYTES + 10);
        big.addresses = vec!["a".repeat(1000); 100];
        buf.node_connected(big, at(0)).unwrap();
        let node = buf.node("n1").unwrap();
        assert_eq!(node.info.hostname.len(), MAX_TEXT_BYTES);
        let json_len = serde_json::to_string(&node.info.addresses).unwrap().len();
        assert!(json_len <= MAX_TEXT_BYTES, "{json_len}");
    }
}
