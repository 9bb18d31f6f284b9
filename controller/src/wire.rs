//! The HTTP API's wire types, shared by the handlers and the CLI (`client.rs`): what
//! `POST /api/v1/actions` takes and streams back, what `GET /api/v1/nodes` and
//! `GET /api/v1/events` and `GET /api/v1/alerts` answer, the device ownership request and the
//! drain state. Plain serde types, no logic.

use nodewarden_shared::protocol::Role;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::actions::NodeActionResult;
/// One point of `GET /api/v1/nodes/{name}/history` (the history's own type).
pub use crate::history::Point as HistoryPoint;
/// A node as `GET /api/v1/nodes` describes it (the registry's own type).
pub use crate::registry::Node as NodeView;

/// `GET /api/v1/console`: where the console links nodes to (`[grafana] url`, `[prometheus] url`;
/// `null` when not configured).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConsoleLinks {
    pub grafana_url: Option<String>,
    pub prometheus_url: Option<String>,
}

/// `GET /api/v1/nodes/{name}/history`: the node's recent state reports, oldest first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HistoryView {
    pub node: String,
    /// The least time between two points.
    pub interval_ms: u64,
    /// The most points kept per node.
    pub cap: usize,
    pub points: Vec<HistoryPoint>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Node(String),
    /// `{"nodes": ["a", "b"]}`: several nodes by name (the console's multi-select), at most
    /// [`MAX_SELECTED_NODES`], each known; duplicates count once.
    Nodes(Vec<String>),
    Role(Role),
    /// `{"all": true}`.
    All(bool),
}

/// How many names one `{"nodes": [...]}` selector may list.
pub const MAX_SELECTED_NODES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    Wake,
    Stop,
    Restart,
    Status,
    DeleteFragments,
}

/// An id as the DFS hands it over: text or a JSON number; validated as text either way.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IdText {
    Number(u64),
    Text(String),
}

impl IdText {
    pub fn text(&self) -> String {
        match self {
            IdText::Number(n) => n.to_string(),
            IdText::Text(t) => t.clone(),
        }
    }
}

/// `POST /api/v1/actions`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Required, except for `delete-fragments` (whose devices say which nodes).
    #[serde(default)]
    pub selector: Option<Selector>,
    pub action: ActionName,
    #[serde(default)]
    pub service: Option<String>,
    /// `delete-fragments`: (fragment id, device id) pairs.
    #[serde(default)]
    pub pairs: Option<Vec<(IdText, IdText)>>,
    /// Who asks. Optional with a named API token (whose operator is recorded instead); required
    /// otherwise.
    #[serde(default)]
    pub requested_by: String,
}

/// One line of the streamed answer to an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ActionEvent {
    Start {
        action: String,
        nodes: Vec<String>,
    },
    Result {
        done: usize,
        total: usize,
        result: NodeActionResult,
    },
    End {
        ok: bool,
    },
}

/// `POST /api/v1/devices/{id}/owner`: move a storage device to another node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssignDevice {
    pub node: String,
    #[serde(default)]
    pub requested_by: String,
}

/// A storage device as `GET /api/v1/devices` describes it: its owner, and any other node
/// reporting it (a conflict).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DeviceView {
    pub device_id: u32,
    pub owner: String,
    pub fragment_dir: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub owner_online: bool,
    pub claimed_by: Vec<String>,
}

/// A firing alert as `GET /api/v1/alerts` describes it (from Alertmanager's notifications).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AlertView {
    /// Alertmanager's fingerprint of the alert's labels.
    pub fingerprint: String,
    pub alertname: String,
    pub severity: String,
    /// The node it concerns (`node` label, else `instance`), or `fleet`.
    pub node: String,
    pub summary: String,
    pub description: String,
    /// When it started firing (RFC 3339, as Alertmanager says).
    pub starts_at: String,
    /// When the controller last heard of it (ms since the epoch).
    pub received_ms: u64,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// An audit log entry as `GET /api/v1/events` describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventView {
    pub id: i64,
    pub at_ms: u64,
    pub node: String,
    pub kind: String,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub path: Option<String>,
    pub result: Option<String>,
    pub detail: String,
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub operation_id: Option<String>,
}

/// One device's fragment audit as `GET /api/v1/fragments/audit` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FragmentAuditView {
    pub device_id: u32,
    /// The node whose agent sent the inventory.
    pub node: String,
    /// When that inventory arrived (ms since the epoch).
    pub inventory_ms: u64,
    /// When the audit was made against the DFS database (ms since the epoch).
    pub audited_ms: u64,
    pub audit: nodewarden_shared::fragments::FragmentAudit,
}

/// `POST /api/v1/fragments/clean-orphans`: without `plan_id` a dry run (nothing deleted; the
/// answer's `plan_id` confirms it), with it the confirmed clean-up of that dry run's orphans.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CleanOrphansRequest {
    pub device: u32,
    #[serde(default)]
    pub plan_id: Option<String>,
    #[serde(default)]
    pub requested_by: String,
}

/// The dry run's answer: what a confirmation would delete (each id re-checked then).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct OrphanPlanView {
    pub device_id: u32,
    pub node: String,
    pub plan_id: String,
    pub count: u64,
    pub bytes: u64,
    pub sample: Vec<u32>,
    /// Seconds the plan may be confirmed in.
    pub expires_in_s: u64,
}

/// The confirmed clean-up's answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CleanOrphansResult {
    pub device_id: u32,
    pub node: String,
    /// Orphans in the dry run.
    pub planned: u64,
    /// Of those, in `FRAGMENT` at deletion time: kept.
    pub kept: u64,
    pub kept_sample: Vec<u32>,
    /// Sent for deletion.
    pub deleted: u64,
    /// The deletion through the action path (`None` when nothing was left to delete).
    pub result: Option<NodeActionResult>,
    /// The deletion succeeded, or nothing was left to delete.
    pub ok: bool,
}

/// What `GET`, `POST` and `DELETE /api/v1/controller/drain` answer: whether this controller is
/// draining now, and (after a `POST`) how many links it closed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DrainState {
    pub draining: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links_closed: Option<usize>,
}

/// `GET /api/v1/nodes/{name}/prometheus` (`api_prometheus.rs`): the node's last hour from
/// Prometheus, one time grid, each chart's values on it (`null` where Prometheus has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrometheusCharts {
    pub node: String,
    /// Unix seconds, every `api_prometheus::STEP_S`.
    pub times: Vec<u64>,
    pub load1: Vec<Option<f64>>,
    pub memory: Vec<Option<f64>>,
    pub disk: Vec<Option<f64>>,
    /// Free % per device id.
    pub storage: BTreeMap<String, Vec<Option<f64>>>,
}
