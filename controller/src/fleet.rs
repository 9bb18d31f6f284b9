//! Maps what the link learns (connections, state reports, disconnections) onto the store's
//! records. Plain functions over the protocol and store types: no I/O, no waiting — the store
//! handle only queues, its writer persists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewarden_shared::protocol::{Role, StateReport};

use crate::actions::NodeActionResult;
use crate::store::{self, DeviceReport, NodeInfo, OperationPath, StoreHandle};

/// SHA-256 of a certificate's DER, lower-case hex: what operators compare with `openssl x509 -fingerprint -sha256`.
pub fn fingerprint(der: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What the controller knows about a node from its certificate and connection; fixed for the
/// connection's life.
pub struct Identity {
    pub node: String,
    pub remote_ip: String,
    pub agent_version: String,
    pub cert_fingerprint: String,
}

pub fn system_time(unix_millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_millis)
}

fn node_info(id: &Identity, report: Option<&StateReport>) -> NodeInfo {
    NodeInfo {
        node_id: id.node.clone(),
        // The link does not carry host details yet; the address is the one the agent came from.
        hostname: String::new(),
        addresses: vec![id.remote_ip.clone()],
        mac_addresses: Vec::new(),
        roles: report
            .map(|r| {
                r.roles
                    .iter()
                    .map(|r| Role::as_str(*r).to_string())
                    .collect()
            })
            .unwrap_or_default(),
        agent_version: id.agent_version.clone(),
        cert_fingerprint: id.cert_fingerprint.clone(),
    }
}

/// A node's agent said hello.
pub fn connected(store: &StoreHandle, id: &Identity, at_millis: u64) {
    if let Err(e) = store.node_connected(node_info(id, None), system_time(at_millis)) {
        tracing::warn!(node = %id.node, error = %e, "node not recorded");
    }
}

/// A state report arrived. `previous` is the node's last report on this controller, if any:
/// the node's own record is rewritten only when what it says about the node changed.
pub fn reported(
    store: &StoreHandle,
    id: &Identity,
    previous: Option<&StateReport>,
    report: &StateReport,
    at_millis: u64,
) {
    let at = system_time(at_millis);
    let changed = previous.is_none_or(|p| p.roles != report.roles);
    let recorded = if changed {
        store
            .node_connected(node_info(id, Some(report)), at)
            .map(|_| ())
    } else {
        store.node_seen(&id.node, at)
    };
    if let Err(e) = recorded {
        tracing::warn!(node = %id.node, error = %e, "node not recorded");
        return;
    }
    for device in &report.storage {
        let device_report = DeviceReport {
            device_id: i64::from(device.device_id),
            node_id: id.node.clone(),
            fragment_folder: device.fragment_dir.clone(),
            total_bytes: device.total_bytes,
            free_bytes: device.free_bytes,
            // Counting fragments means listing folders of millions of files; not reported yet.
            fragment_count: 0,
            reported_at: at,
        };
        if let Err(e) = store.device_report(device_report) {
            tracing::warn!(node = %id.node, device = device.device_id, error = %e, "device not recorded");
        }
    }
}

/// The node's live connection ended.
pub fn disconnected(store: &StoreHandle, node: &str, reason: &str, at_millis: u64) {
    if let Err(e) = store.node_offline(node, system_time(at_millis), reason) {
        tracing::warn!(node, error = %e, "offline transition not recorded");
    }
}

/// A remote operation on one node ended: into the audit log with who asked, the path taken and
/// the result. Recorded even for nodes the store has never seen connect (an SSH-only node).
pub fn action_recorded(store: &StoreHandle, result: &NodeActionResult, at: SystemTime) {
    use nodewarden_shared::ops::ActionPath;
    let path = match result.path {
        Some(ActionPath::Agent) => OperationPath::Agent,
        Some(ActionPath::Ssh) => OperationPath::Ssh,
        Some(ActionPath::WakeOnLan) => OperationPath::WakeOnLan,
        None => OperationPath::Unreachable,
    };
    let outcome = if result.succeeded() {
        store::OperationResult::Ok
    } else {
        let error = result.error.clone().unwrap_or_else(|| {
            let failed = result.results.iter().filter(|r| !r.succeeded()).count();
            format!("{failed} of {} operations failed", result.results.len())
        });
        store::OperationResult::Failed { error }
    };
    let operation = store::Operation {
        actor: result.requested_by.clone(),
        action: result.action.clone(),
        path,
        result: outcome,
        duration: Duration::from_millis(result.duration_ms),
    };
    if let Err(e) = store.operation(&result.node, at, operation) {
        tracing::error!(node = %result.node, error = %e, "remote operation not recorded in the audit log");
    }
}
