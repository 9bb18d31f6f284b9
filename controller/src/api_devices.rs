//! Storage device ownership over the API. A DFS device id belongs to one node (the first to
//! report it, or the node the store has it under); another node reporting it is refused and
//! listed as a conflict. Ownership moves only here, by an operator, and the move is audited.
//!
//! - `GET /api/v1/devices`: every owned device with its owner, last known figures and the
//!   nodes that claim it too ([`DeviceView`]).
//! - `POST /api/v1/devices/{id}/owner` `{"node": "storage-02", "requested_by": "alice"}`: the
//!   device now belongs to that node (`200` with the device), `404` for an unknown node, `409`
//!   when it already does, `400` for a bad id or requester, `503` when the audit log cannot
//!   take the change (nothing changes then).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api_actions::{ActionsApi, check_requester, requester};
use crate::registry::{OwnershipError, Registry};
use crate::state::{Controller, lock};
use crate::store::{self, OperationPath, Queued};
use crate::wire::{AssignDevice, DeviceView};

#[derive(Clone)]
struct DevicesState {
    controller: Arc<Controller>,
    actions: Arc<ActionsApi>,
}

pub fn routes(controller: Arc<Controller>, actions: Arc<ActionsApi>) -> Router {
    Router::new()
        .route("/api/v1/devices", get(list))
        .route("/api/v1/devices/{id}/owner", post(assign))
        .with_state(DevicesState {
            controller,
            actions,
        })
}

/// Every owned device, by id.
pub fn devices(registry: &Registry) -> Vec<DeviceView> {
    let mut out: Vec<DeviceView> = registry
        .nodes()
        .flat_map(|n| {
            n.devices.iter().map(move |d| DeviceView {
                device_id: d.device_id,
                owner: n.name.clone(),
                fragment_dir: d.fragment_dir.clone(),
                total_bytes: d.total_bytes,
                free_bytes: d.free_bytes,
                owner_online: n.online,
                claimed_by: registry
                    .device_claimants(d.device_id)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect();
    out.sort_by_key(|d| d.device_id);
    out
}

async fn list(State(s): State<DevicesState>) -> Json<Vec<DeviceView>> {
    Json(devices(&lock(&s.controller.registry)))
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn assign(
    State(s): State<DevicesState>,
    caller: Option<axum::Extension<crate::http_auth::Caller>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let device_id = match nodewarden_shared::ops::parse_device_id(&id) {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let request: AssignDevice = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let who = requester(caller.and_then(|c| c.0.operator), request.requested_by);
    if let Err(e) = check_requester(&who) {
        return refuse(StatusCode::BAD_REQUEST, e.to_string());
    }
    let _running = s.actions.in_flight.start();
    let controller = &s.controller;
    let mut registry = lock(&controller.registry);
    let previous = registry.device_owner(device_id).map(str::to_string);
    let action = format!(
        "assign storage device {device_id} to {} (owner was {})",
        request.node,
        previous.as_deref().unwrap_or("none")
    );
    if registry.get(&request.node).is_none() {
        return refuse(
            StatusCode::NOT_FOUND,
            OwnershipError::UnknownNode(request.node).to_string(),
        );
    }
    if previous.as_deref() == Some(request.node.as_str()) {
        return refuse(
            StatusCode::CONFLICT,
            OwnershipError::Unchanged {
                device_id,
                node: request.node,
            }
            .to_string(),
        );
    }
    // Into the audit log before it takes effect; refused when the log cannot take it.
    let operation_id = format!("assign-{device_id}-{}", crate::state::now_millis());
    if let Some(store) = controller.store() {
        let requested = store::Requested {
            operation_id: operation_id.clone(),
            actor: who.clone(),
            action: action.clone(),
            path: OperationPath::Controller,
            via: None,
        };
        match store.requested(&request.node, SystemTime::now(), requested) {
            Ok(Queued::Yes) => {}
            Ok(Queued::Dropped { .. }) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the audit log cannot take the change now; nothing changed",
                );
            }
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let outcome = registry.assign_device(device_id, &request.node);
    if let Some(store) = controller.store() {
        let result = match &outcome {
            Ok(_) => store::OperationResult::Ok,
            Err(e) => store::OperationResult::Failed {
                error: e.to_string(),
            },
        };
        let _ = store.operation(
            &request.node,
            SystemTime::now(),
            store::Operation {
                operation_id: Some(operation_id),
                actor: who.clone(),
                action,
                path: OperationPath::Controller,
                result,
                duration: Duration::ZERO,
            },
        );
        if let (Ok(_), Some(node)) = (&outcome, registry.get(&request.node)) {
            crate::fleet::device_assigned(store, node, device_id, SystemTime::now());
        }
    }
    match outcome {
        Ok(previous) => {
            tracing::info!(
                device = device_id, node = %request.node, previous = ?previous, operator = %who,
                "storage device assigned by an operator"
            );
            let view = devices(&registry)
                .into_iter()
                .find(|d| d.device_id == device_id);
            Json(view).into_response()
        }
        Err(e) => refuse(StatusCode::CONFLICT, e.to_string()),
    }
}
