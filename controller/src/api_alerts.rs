//! Alerts from Alertmanager: `POST /api/v1/alerts/webhook` takes its webhook notifications
//! (payload version 4), records every alert in the audit log (kind `alert`, firing or resolved,
//! about the node its `node` label names, else its `instance`, else `fleet`) and keeps the
//! alerts now firing, keyed by Alertmanager's fingerprint, for `GET /api/v1/alerts` (the
//! console's and the CLI's view). The webhook takes Alertmanager's own token
//! (`[http] alerts_token_file`) or the API token; the list takes the API token.
//!
//! Bounds: a body above [`MAX_BODY`] is refused (413), a notification of more than
//! [`MAX_ALERTS_PER_NOTIFICATION`] alerts or that is not the webhook's JSON is a `400` naming
//! what is wrong and records nothing; at most [`MAX_FIRING`] alerts are kept (beyond, new ones
//! are still audited but not listed, and counted). The list is the controller's memory: after a
//! restart it fills again as Alertmanager repeats its notifications (`repeat_interval`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::state::Controller;
use crate::store::AlertNotice;
pub use crate::wire::AlertView;

/// The largest notification body taken.
pub const MAX_BODY: usize = 1 << 20;
/// The most alerts one notification may carry (Alertmanager's `max_alerts` is 0, unlimited, by
/// default; a group larger than this is a misconfiguration to see, not to store).
pub const MAX_ALERTS_PER_NOTIFICATION: usize = 1000;
/// The most firing alerts kept for the list.
pub const MAX_FIRING: usize = 5000;

/// Alertmanager's webhook payload (the fields read; others are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// Why a notification was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("not an Alertmanager webhook notification: {0}")]
    Json(#[from] serde_json::Error),
    #[error("webhook payload version {0:?}, expected \"4\"")]
    Version(String),
    #[error("{0} alerts in one notification (at most {MAX_ALERTS_PER_NOTIFICATION})")]
    TooMany(usize),
    #[error("alert {index}: status {status:?} is neither \"firing\" nor \"resolved\"")]
    Status { index: usize, status: String },
}

/// Parses and checks a notification body.
pub fn parse(body: &[u8]) -> Result<Notification, WebhookError> {
    let n: Notification = serde_json::from_slice(body)?;
    if n.version != "4" {
        return Err(WebhookError::Version(n.version));
    }
    if n.alerts.len() > MAX_ALERTS_PER_NOTIFICATION {
        return Err(WebhookError::TooMany(n.alerts.len()));
    }
    for (index, a) in n.alerts.iter().enumerate() {
        if a.status != "firing" && a.status != "resolved" {
            return Err(WebhookError::Status {
                index,
                status: a.status.clone(),
            });
        }
    }
    Ok(n)
}

/// The node an alert is about: its `node` label (service discovery's), else its `instance`,
/// else the whole fleet.
pub fn subject(labels: &BTreeMap<String, String>) -> String {
    ["node", "instance"]
        .iter()
        .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_else(|| "fleet".to_string())
}

/// The alerts firing now, by fingerprint, and what did not fit.
#[derive(Debug, Default)]
pub struct FiringAlerts {
    by_fingerprint: BTreeMap<String, AlertView>,
    pub not_listed: u64,
}

impl FiringAlerts {
    /// Applies one notification: firing alerts are added or refreshed, resolved ones removed.
    pub fn apply(&mut self, notification: &Notification, received_ms: u64) {
        for a in &notification.alerts {
            let key = if a.fingerprint.is_empty() {
                format!("{:?}", a.labels)
            } else {
                a.fingerprint.clone()
            };
            if a.status == "resolved" {
                self.by_fingerprint.remove(&key);
                continue;
            }
            if !self.by_fingerprint.contains_key(&key) && self.by_fingerprint.len() >= MAX_FIRING {
                self.not_listed += 1;
                continue;
            }
            let view = AlertView {
                fingerprint: key.clone(),
                alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
                severity: a.labels.get("severity").cloned().unwrap_or_default(),
                node: subject(&a.labels),
                summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                description: a
                    .annotations
                    .get("description")
                    .cloned()
                    .unwrap_or_default(),
                starts_at: a.starts_at.clone(),
                received_ms,
                labels: a.labels.clone(),
            };
            self.by_fingerprint.insert(key, view);
        }
    }

    /// Critical first, then warning, then the rest; oldest first within a severity.
    pub fn list(&self) -> Vec<AlertView> {
        let rank = |s: &str| match s {
            "critical" => 0,
            "warning" => 1,
            "info" => 2,
            _ => 3,
        };
        let mut list: Vec<AlertView> = self.by_fingerprint.values().cloned().collect();
        list.sort_by(|a, b| {
            (rank(&a.severity), &a.starts_at, &a.node).cmp(&(
                rank(&b.severity),
                &b.starts_at,
                &b.node,
            ))
        });
        list
    }
}

#[derive(Clone)]
struct AlertsState {
    controller: Arc<Controller>,
    firing: Arc<Mutex<FiringAlerts>>,
}

/// The webhook (to be wrapped in [`crate::http_auth::require_alerts`]) and the list (in the
/// API's authentication), over one shared list of firing alerts.
pub fn routes(controller: Arc<Controller>, firing: Arc<Mutex<FiringAlerts>>) -> (Router, Router) {
    let state = AlertsState { controller, firing };
    let webhook = Router::new()
        .route("/api/v1/alerts/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state.clone());
    let list = Router::new()
        .route("/api/v1/alerts", get(list))
        .with_state(state);
    (webhook, list)
}

async fn list(State(state): State<AlertsState>) -> Json<Vec<AlertView>> {
    Json(crate::state::lock(&state.firing).list())
}

async fn webhook(State(state): State<AlertsState>, body: Bytes) -> Response {
    let notification = match parse(&body) {
        Ok(n) => n,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": e.to_string() })),
            )
                .into_response();
        }
    };
    let now = SystemTime::now();
    if let Some(store) = state.controller.store() {
        for a in &notification.alerts {
            let notice = AlertNotice {
                alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
                firing: a.status == "firing",
                severity: a.labels.get("severity").cloned().unwrap_or_default(),
                summary: a.annotations.get("summary").cloned().unwrap_or_default(),
            };
            if let Err(e) = store.alert(&subject(&a.labels), now, notice) {
                tracing::warn!(error = %e, receiver = %notification.receiver, "alert not audited");
            }
        }
    }
    crate::state::lock(&state.firing).apply(&notification, crate::state::now_millis());
    tracing::info!(
        receiver = %notification.receiver,
        alerts = notification.alerts.len(),
        "alert notification received"
    );
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(status: &str, fingerprint: &str, severity: &str) -> String {
        format!(
            r#"{{"version":"4","receiver":"nodewarden","status":"{status}","alerts":[
            {{"status":"{status}","labels":{{"alertname":"NodewardenAgentDown","severity":"{severity}",
            "instance":"10.0.0.7:9100","node":"storage-07","job":"nodes"}},
            "annotations":{{"summary":"agent on storage-07 is down"}},
            "startsAt":"2026-12-05T10:00:00Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://prometheus/graph","fingerprint":"{fingerprint}"}}]}}"#
        )
    }

    #[test]
    fn firing_then_resolved() {
        let mut firing = FiringAlerts::default();
        firing.apply(
            &parse(body("firing", "a1", "critical").as_bytes()).unwrap(),
            1,
        );
        firing.apply(
            &parse(body("firing", "b2", "warning").as_bytes()).unwrap(),
            2,
        );
        let list = firing.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].severity, "critical");
        assert_eq!(list[0].node, "storage-07");
        assert_eq!(list[0].summary, "agent on storage-07 is down");
        firing.apply(
            &parse(body("resolved", "a1", "critical").as_bytes()).unwrap(),
            3,
        );
        assert_eq!(firing.list().len(), 1);
        assert_eq!(firing.list()[0].fingerprint, "b2");
    }

    #[test]
    fn bad_notifications_are_refused_with_the_reason() {
        assert!(matches!(parse(b"{"), Err(WebhookError::Json(_))));
        let v3 = body("firing", "a", "info").replace(r#""version":"4""#, r#""version":"3""#);
        assert!(matches!(
            parse(v3.as_bytes()),
            Err(WebhookError::Version(_))
        ));
        let odd = body("firing", "a", "info").replace(r#""status":"firing""#, r#""status":"odd""#);
        assert!(matches!(
            parse(odd.as_bytes()),
            Err(WebhookError::Status { .. })
        ));
    }

    #[test]
    fn the_subject_is_the_node_then_the_instance_then_the_fleet() {
        let mut labels = BTreeMap::new();
        assert_eq!(subject(&labels), "fleet");
        labels.insert("instance".into(), "10.0.0.7:9100".into());
        assert_eq!(subject(&labels), "10.0.0.7:9100");
        labels.insert("node".into(), "n7".into());
        assert_eq!(subject(&labels), "n7");
    }

    #[test]
    fn the_list_is_bounded() {
        let mut firing = FiringAlerts::default();
        for i in 0..MAX_FIRING + 3 {
            firing.apply(
                &parse(body("firing", &format!("f{i}"), "info").as_bytes()).unwrap(),
                0,
            );
        }
        assert_eq!(firing.list().len(), MAX_FIRING);
        assert_eq!(firing.not_listed, 3);
    }
}
