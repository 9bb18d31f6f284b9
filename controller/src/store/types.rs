//! The store's own plain types: what the controller tells it and what it reads back. They are
//! independent of the wire protocol; the controller maps protocol messages onto them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a node declares about itself when its agent connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's identity (the name in its certificate); at most [`MAX_KEY_BYTES`] bytes.
    pub node_id: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    pub mac_addresses: Vec<String>,
    pub roles: Vec<String>,
    pub agent_version: String,
    /// Fingerprint of the certificate the agent presented.
    pub cert_fingerprint: String,
    /// The services it manages (declared in its agent's configuration), by name.
    pub services: Vec<String>,
    /// Its interfaces as the agent last described them (what wakes it: MACs and subnets).
    pub interfaces: Vec<InterfaceRecord>,
    /// In a cluster: its service-discovery target groups as JSON (`sd::NodeScrape`), written by
    /// the controller holding its link so that every controller can serve discovery for the
    /// whole fleet; empty when none.
    pub scrape: String,
}

/// One network interface of a node, as stored (a JSON list in the node's row).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterfaceRecord {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`, or none (tunnels, InfiniBand).
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub addresses: Vec<AddressRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddressRecord {
    pub address: String,
    pub prefix_len: u8,
    /// The subnet's directed broadcast address (IPv4).
    #[serde(default)]
    pub broadcast: Option<String>,
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub info: NodeInfo,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub online: bool,
}

/// The latest report about one storage device (a fragment folder on a storage node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// The DFS device id (`DEVICE.ID` in the original system).
    pub device_id: i64,
    pub node_id: String,
    pub fragment_folder: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub fragment_count: u64,
    pub reported_at: SystemTime,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    /// The node the event is about (for an operation: its target).
    pub node_id: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Online,
    Offline {
        reason: String,
    },
    /// An operation about to be dispatched (written before it runs).
    Requested(Requested),
    /// An operation that ended (or whose outcome could not be known).
    Operation(Operation),
    /// The node reported a storage device that another node owns; refused.
    DeviceConflict {
        device_id: i64,
        owner: String,
    },
    /// Alertmanager notified the controller of an alert about the node (or the fleet).
    Alert(AlertNotice),
}

/// One alert of an Alertmanager notification, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertNotice {
    pub alertname: String,
    /// `firing` or `resolved`, as Alertmanager says.
    pub firing: bool,
    pub severity: String,
    /// The alert's `summary` annotation (empty without one).
    pub summary: String,
}

impl EventKind {
    /// Operations (requested or ended) are the audit log proper: never dropped for room.
    pub fn is_operation(&self) -> bool {
        matches!(self, EventKind::Requested(_) | EventKind::Operation(_))
    }
}

/// An event as the columns of the log (`events` rows, the API's JSON): which apply depends on
/// the kind, the others are `None`/empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFields {
    pub kind: &'static str,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub path: Option<&'static str>,
    pub result: Option<&'static str>,
    pub detail: String,
    pub duration_ms: Option<u64>,
    pub operation_id: Option<String>,
}

impl EventKind {
    /// The columns this event fills.
    pub fn fields(&self) -> EventFields {
        let mut f = EventFields::default();
        match self {
            EventKind::Online => f.kind = "online",
            EventKind::Offline { reason } => {
                f.kind = "offline";
                f.detail = reason.clone();
            }
            EventKind::Requested(r) => {
                f.kind = "requested";
                f.actor = Some(r.actor.clone());
                f.action = Some(r.action.clone());
                f.path = Some(r.path.as_str());
                f.operation_id = Some(r.operation_id.clone());
                f.detail = r.via.clone().unwrap_or_default();
            }
            EventKind::DeviceConflict { device_id, owner } => {
                f.kind = "device_conflict";
                f.detail = format!("reported storage device {device_id}, which belongs to {owner}");
                f.action = Some(device_id.to_string());
                f.actor = Some(owner.clone());
            }
            EventKind::Alert(a) => {
                f.kind = "alert";
                f.actor = Some("alertmanager".into());
                f.action = Some(a.alertname.clone());
                f.result = Some(if a.firing { "firing" } else { "resolved" });
                f.detail = format!("{}: {}", a.severity, a.summary);
            }
            EventKind::Operation(op) => {
                f.kind = "operation";
                f.operation_id = op.operation_id.clone();
                f.actor = Some(op.actor.clone());
                f.action = Some(op.action.clone());
                f.path = Some(op.path.as_str());
                f.duration_ms = Some(u64::try_from(op.duration.as_millis()).unwrap_or(u64::MAX));
                match &op.result {
                    OperationResult::Ok => f.result = Some("ok"),
                    OperationResult::Failed { error } => {
                        f.result = Some("failed");
                        f.detail = error.clone();
                    }
                    OperationResult::Unknown { reason } => {
                        f.result = Some("unknown");
                        f.detail = reason.clone();
                    }
                }
            }
        }
        f
    }
}

/// An operation as requested, before anything was sent: who asked, what, the path planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// Joins the request with its end ([`Operation::operation_id`]).
    pub operation_id: String,
    pub actor: String,
    pub action: String,
    pub path: OperationPath,
    /// In a cluster, an action forwarded to the controller holding the node's link: which
    /// controllers (kept in the event's detail).
    pub via: Option<String>,
}

/// A remote operation: who asked for what, how it reached the node, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The id of its [`Requested`] event, when one was written.
    pub operation_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub path: OperationPath,
    pub result: OperationResult,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationPath {
    Agent,
    Ssh,
    WakeOnLan,
    /// No path could be tried (node unknown to SSH, agent offline and no fallback configured).
    Unreachable,
    /// Carried out by the controller itself (a device's ownership moved).
    Controller,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationResult {
    Ok,
    Failed {
        error: String,
    },
    /// It may or may not have run: the link was lost after it was sent, or the controller
    /// stopped before its end was known.
    Unknown {
        reason: String,
    },
}

/// An event read back from the database, with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Increases with every event written; the order of the log.
    pub id: i64,
    pub event: Event,
}

/// Which part of the log to read: events after `after_id` (0: from the start), in order.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub node_id: Option<String>,
    pub after_id: i64,
    pub limit: u32,
}

/// The longest node id the store accepts (the key column is VARCHAR(255); bytes ≤ chars).
pub const MAX_KEY_BYTES: usize = 255;
/// Free text longer than this is cut (at a character boundary) so a row can never be refused.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

impl OperationPath {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationPath::Agent => "agent",
            OperationPath::Ssh => "ssh",
            OperationPath::WakeOnLan => "wake_on_lan",
            OperationPath::Unreachable => "none",
            OperationPath::Controller => "controller",
        }
    }
    pub fn parse(text: &str) -> Option<OperationPath> {
        match text {
            "agent" => Some(OperationPath::Agent),
            "ssh" => Some(OperationPath::Ssh),
            "wake_on_lan" => Some(OperationPath::WakeOnLan),
            "none" => Some(OperationPath::Unreachable),
            "controller" => Some(OperationPath::Controller),
            _ => None,
        }
    }
}

/// Unix milliseconds (UTC), the timestamp format in both dialects. Times before 1970 are 0.
pub fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn clamp_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_and_clamp_before_epoch() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(from_millis(to_millis(t)), t);
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(from_millis(-7), UNIX_EPOCH);
    }

    #[test]
    fn clamp_cuts_at_char_boundary() {
        assert_eq!(clamp_text("abc", 5), "abc");
        assert_eq!(clamp_text("aé", 2), "a");
        assert_eq!(clamp_text("aéb", 3), "aé");
    }

    #[test]
    fn paths_round_trip() {
        for p in [
            OperationPath::Agent,
            OperationPath::Ssh,
            OperationPath::WakeOnLan,
            OperationPath::Unreachable,
            OperationPath::Controller,
        ] {
            assert_eq!(OperationPath::parse(p.as_str()), Some(p));
        }
        assert_eq!(OperationPath::parse("telnet"), None);
    }
}
