//! Fragment integrity over the API (issue 17), when the DFS database is configured (`[dfs]`;
//! without it both routes answer `503`):
//!
//! - `GET /api/v1/fragments/audit[?device=D]`: with `device`, a fresh audit of that device's
//!   latest inventory against `FRAGMENT` ([`FragmentAuditView`]; `404` without an inventory
//!   from its owner); without, every device's last audit (what `/metrics` shows).
//! - `POST /api/v1/fragments/clean-orphans` `{"device": D}`: the dry run (count, bytes, sample,
//!   and a `plan_id`, nothing deleted; [`OrphanPlanView`]); then `{"device": D, "plan_id": …}`:
//!   the confirmed run, which writes the request into the audit log first (refused, nothing
//!   run, when it cannot), then re-checks every planned id against `FRAGMENT` (keeping each the
//!   DFS gained since the dry run), then sends the rest through the action path
//!   (`Action::DeleteFragments`: agent link, else SSH) and records the end
//!   ([`CleanOrphansResult`]). A plan is used once and expires after 15 minutes.
//!
//! Also [`audit_task`], which audits each device when its inventory arrives and every
//! [`AUDIT_PERIOD`], keeping the results for `/metrics` and the list above.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::actions::{self, Action, Timing};
use crate::api_actions::{ActionsApi, check_requester, operation_id, record_end, requester};
use crate::fragments::{FragmentDbError, FragmentTable, HeldAudit, HeldInventory, PLAN_TTL};
use crate::state::{Controller, lock, now_millis};
use crate::store::{self, Queued};
use crate::wire::{CleanOrphansRequest, CleanOrphansResult, FragmentAuditView, OrphanPlanView};

/// Every device is audited again at least this often (the DFS's table changes between
/// inventories).
pub const AUDIT_PERIOD: Duration = Duration::from_secs(300);
/// A device whose inventory changed by deltas (the agent's changes between scans, up to one a
/// second) is audited again at most this often: each audit reads all its `FRAGMENT` rows.
pub const DELTA_AUDIT_GAP: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct FragmentsApi {
    actions: Arc<ActionsApi>,
    table: Option<FragmentTable>,
}

pub fn routes(actions: Arc<ActionsApi>, table: Option<FragmentTable>) -> Router {
    Router::new()
        .route("/api/v1/fragments/audit", get(get_audit))
        .route("/api/v1/fragments/clean-orphans", post(clean_orphans))
        .with_state(FragmentsApi { actions, table })
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn no_dfs() -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "no DFS database is configured ([dfs] url): fragments cannot be audited",
    )
}

fn db_error(e: FragmentDbError) -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("DFS database: {e}"),
    )
}

fn view(held: HeldAudit) -> FragmentAuditView {
    FragmentAuditView {
        device_id: held.audit.device_id,
        node: held.node,
        inventory_ms: held.inventory_ms,
        audited_ms: held.audited_ms,
        audit: held.audit,
    }
}

/// `device=D` (the only parameter); anything else is refused, so a misspelt filter never
/// silently widens the answer.
pub fn parse_device(query: Option<&str>) -> Result<Option<u32>, String> {
    let mut device = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("device", v)) => {
                device = Some(
                    nodewarden_shared::ops::parse_device_id(v)
                        .map_err(|e| format!("device: {e}"))?,
                )
            }
            _ => return Err(format!("unknown parameter {pair:?} (only device=D)")),
        }
    }
    Ok(device)
}

/// Audits `held` against the database, keeps the result and counts it.
async fn audit_one(
    controller: &Controller,
    table: &FragmentTable,
    held: &HeldInventory,
) -> Result<HeldAudit, FragmentDbError> {
    let result = table.audit(&held.inventory).await;
    let outcome = if result.is_ok() {
        crate::metrics::PushResult::success
    } else {
        crate::metrics::PushResult::failure
    };
    controller
        .metrics
        .fragment_audits
        .get_or_create(&crate::metrics::PushLabels { result: outcome })
        .inc();
    let audit = HeldAudit {
        node: held.node.clone(),
        audited_ms: now_millis(),
        inventory_ms: held.received_ms,
        audit: result?,
    };
    lock(&controller.fragments).set_audit(audit.clone());
    Ok(audit)
}

async fn get_audit(State(api): State<FragmentsApi>, RawQuery(query): RawQuery) -> Response {
    let device = match parse_device(query.as_deref()) {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let Some(table) = &api.table else {
        return no_dfs();
    };
    let controller = &api.actions.agent.controller;
    let Some(device) = device else {
        let audits: Vec<FragmentAuditView> = lock(&controller.fragments)
            .audits()
            .into_iter()
            .map(view)
            .collect();
        return Json(audits).into_response();
    };
    let Some(held) = lock(&controller.fragments).inventory(device) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no fragment inventory of device {device} yet (its agent needs [fragments])"),
        );
    };
    match audit_one(controller, table, &held).await {
        Ok(audit) => Json(view(audit)).into_response(),
        Err(e) => db_error(e),
    }
}

async fn clean_orphans(
    State(api): State<FragmentsApi>,
    caller: Option<axum::Extension<crate::http_auth::Caller>>,
    body: axum::body::Bytes,
) -> Response {
    let request: CleanOrphansRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let who = requester(caller.and_then(|c| c.0.operator), request.requested_by);
    if let Err(e) = check_requester(&who) {
        return refuse(StatusCode::BAD_REQUEST, e.to_string());
    }
    let Some(table) = &api.table else {
        return no_dfs();
    };
    if api.actions.is_closing() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is shutting down; nothing was run",
        );
    }
    let controller = api.actions.agent.controller.clone();
    let device = request.device;
    let Some(held) = lock(&controller.fragments).inventory(device) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no fragment inventory of device {device} yet (its agent needs [fragments])"),
        );
    };
    let Some(plan_id) = request.plan_id else {
        // The dry run.
        let plan = match table.plan_orphans(&held.inventory).await {
            Ok(p) => p,
            Err(e) => return db_error(e),
        };
        let plan_id = operation_id();
        let answer = OrphanPlanView {
            device_id: device,
            node: held.node.clone(),
            plan_id: plan_id.clone(),
            count: plan.count,
            bytes: plan.bytes,
            sample: plan.sample.clone(),
            expires_in_s: PLAN_TTL.as_secs(),
        };
        tracing::info!(device, node = %held.node, orphans = plan.count, bytes = plan.bytes, requested_by = %who, "orphan clean-up dry run");
        lock(&controller.fragments).add_plan(plan_id, plan, Instant::now());
        return Json(answer).into_response();
    };
    let Some(plan) = lock(&controller.fragments).take_plan(&plan_id, Instant::now()) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no dry run {plan_id:?} to confirm (used, expired or unknown): run the dry run again"
            ),
        );
    };
    if plan.device_id != device {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "dry run {plan_id:?} is of device {}, not {device}",
                plan.device_id
            ),
        );
    }
    let _running = api.actions.in_flight.start();
    // The owner now, and no other node claiming the device (as any deletion requires).
    let (reach, path) = {
        let registry = lock(&controller.registry);
        let Some(owner) = registry.device_owner(device).map(str::to_string) else {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("storage device {device} is on no known node; nothing was deleted"),
            );
        };
        let claimants = registry.device_claimants(device);
        if !claimants.is_empty() {
            return refuse(
                StatusCode::CONFLICT,
                format!(
                    "storage device {device} belongs to {owner} but {} report(s) it too: nothing was deleted",
                    claimants.join(", ")
                ),
            );
        }
        let reach = crate::api_actions::reach(&owner, registry.get(&owner), &api.actions.config);
        let path = crate::api_actions::planned_path(
            &registry,
            &reach,
            &Action::DeleteFragments(Vec::new()),
        );
        (reach, path)
    };
    let action_name = format!(
        "clean-orphans device {device}: {} orphan(s), {} bytes in the dry run",
        plan.count, plan.bytes
    );
    // Into the audit log before anything is re-checked or deleted; refused when it cannot.
    let op_id = operation_id();
    if let Some(store) = controller.store() {
        let requested = store::Requested {
            operation_id: op_id.clone(),
            actor: who.clone(),
            action: action_name.clone(),
            path,
            via: None,
        };
        let refusal = match store.requested(&reach.node, SystemTime::now(), requested) {
            Ok(Queued::Yes) => None,
            Ok(Queued::Dropped { .. }) => Some(format!(
                "{} events wait for the database",
                store.events_pending()
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refusal {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the audit log cannot take the request now ({why}); nothing was deleted"),
            );
        }
        store
            .write_ahead(crate::api_actions::WRITE_AHEAD_WAIT)
            .await;
    }
    tracing::info!(device, node = %reach.node, planned = plan.count, requested_by = %who, "orphan clean-up confirmed");
    let node = reach.node.clone();
    let end = |result: &actions::NodeActionResult| {
        if let Some(store) = controller.store() {
            let mut r = result.clone();
            r.action = action_name.clone();
            record_end(store, &r, Some(op_id.clone()));
        }
    };
    let rechecked = match table.recheck(&plan).await {
        Ok(r) => r,
        Err(e) => {
            end(&actions::NodeActionResult {
                node: node.clone(),
                action: action_name.clone(),
                requested_by: who.clone(),
                path: None,
                woke: false,
                results: Vec::new(),
                outcome_unknown: Vec::new(),
                error: Some(format!("not run: re-check against the DFS failed: {e}")),
                duration_ms: 0,
            });
            return db_error(e);
        }
    };
    let operations = rechecked.operations(device);
    let deleted = rechecked.delete.len();
    let result = if operations.is_empty() {
        // Nothing to send: the request ends here, done (every orphan is in FRAGMENT now).
        if let Some(store) = controller.store() {
            let operation = store::Operation {
                operation_id: Some(op_id.clone()),
                actor: who.clone(),
                action: action_name.clone(),
                path: store::OperationPath::Unreachable,
                result: store::OperationResult::Ok,
                duration: Duration::ZERO,
            };
            if let Err(e) = store.operation(&node, SystemTime::now(), operation) {
                tracing::error!(%node, error = %e, "clean-up end not recorded in the audit log");
            }
        }
        None
    } else {
        let mut results = actions::run_each(
            api.actions.agent.clone(),
            vec![(reach, Action::DeleteFragments(operations))],
            &who,
            api.actions.config.limits,
            Timing {
                wake_wait: api.actions.config.wake_wait,
            },
            |_, r, _, _| end(r),
        )
        .await;
        results.pop()
    };
    let ok = result.as_ref().is_none_or(|r| r.succeeded());
    tracing::info!(device, %node, deleted, kept = rechecked.kept.len(), ok, "orphan clean-up done");
    Json(CleanOrphansResult {
        device_id: device,
        node,
        planned: plan.count,
        kept: rechecked.kept.len(),
        kept_sample: rechecked
            .kept
            .iter()
            .take(nodewarden_shared::fragments::SAMPLE)
            .collect(),
        deleted,
        result,
        ok,
    })
    .into_response()
}

/// Audits each device when a new inventory of it arrives (after a delta, at most every
/// [`DELTA_AUDIT_GAP`]) and every [`AUDIT_PERIOD`]; runs until the controller's inventory
/// signal is gone.
pub async fn audit_task(controller: Arc<Controller>, table: FragmentTable) {
    let mut changed = controller.fragments_changed.subscribe();
    // Device → the revision of the inventory last audited and when.
    let mut done: BTreeMap<u32, (u64, Instant)> = BTreeMap::new();
    loop {
        let held = lock(&controller.fragments).inventories();
        let mut wake = AUDIT_PERIOD;
        for h in held {
            let device = h.inventory.device_id;
            let fresh = done
                .get(&device)
                .is_some_and(|(rev, when)| *rev == h.revision && when.elapsed() < AUDIT_PERIOD);
            if fresh {
                continue;
            }
            if h.by_delta
                && let Some((_, when)) = done.get(&device)
                && when.elapsed() < DELTA_AUDIT_GAP
            {
                wake = wake.min(DELTA_AUDIT_GAP - when.elapsed());
                continue;
            }
            match audit_one(&controller, &table, &h).await {
                Ok(a) => tracing::debug!(
                    device,
                    missing = a.audit.missing.count,
                    orphaned = a.audit.orphaned.count,
                    corrupt = a.audit.corrupt.count,
                    "fragment audit"
                ),
                Err(e) => tracing::warn!(device, error = %e, "fragment audit failed"),
            }
            done.insert(device, (h.revision, Instant::now()));
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            () = tokio::time::sleep(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_device_parameter() {
        assert_eq!(parse_device(None), Ok(None));
        assert_eq!(parse_device(Some("device=7")), Ok(Some(7)));
        assert!(parse_device(Some("device=x")).is_err());
        assert!(parse_device(Some("device=-1")).is_err());
        assert!(parse_device(Some("dev=7")).is_err());
    }
}
