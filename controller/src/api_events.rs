//! `GET /api/v1/events?limit=N[&node=NAME]`: the audit log's newest entries, newest first (node
//! transitions and remote operations with who asked, the path taken and how they ended), read
//! from the store's database. What the store has not flushed yet (at most one
//! `database.flush_interval`) is not in the answer yet.
//!
//! Answer: a JSON list of [`EventJson`]. `limit` is 1 to [`MAX_LIMIT`] (default
//! [`DEFAULT_LIMIT`]); anything else, an unknown parameter or a malformed node name is a `400`
//! with `{"error": …}`. Without a store, or when the database does not answer in
//! [`READ_TIMEOUT`], the answer is `503` with `{"error": …}`.

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::store::{EventQuery, EventRecord, StoreReader};

/// Entries returned when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most entries one request may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// A read taking longer is abandoned and answered `503`.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The route, reading through `reader` (`None`: no store, every request answered `503`).
pub fn routes(reader: Option<StoreReader>) -> Router {
    Router::new()
        .route("/api/v1/events", get(get_events))
        .with_state(reader)
}

/// One audit log entry (the wire type the CLI reads too). Fields that do not apply to the
/// kind are `null`: `kind` is `online`, `offline`, `requested` (an operation about to be
/// dispatched: who, what, the planned path), `operation` (its end: `result` `ok`, `failed` or
/// `unknown`, joined to its request by `operation_id`) or `device_conflict` (the node reported
/// a storage device another node owns: `action` is the device id, `actor` its owner).
pub use crate::wire::EventView as EventJson;

/// The wire form of a stored event.
pub fn event_json(record: EventRecord) -> EventJson {
    let event = record.event;
    let f = event.kind.fields();
    EventJson {
        id: record.id,
        at_ms: event
            .at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        node: event.node_id,
        kind: f.kind.to_string(),
        actor: f.actor,
        action: f.action,
        path: f.path.map(str::to_string),
        result: f.result.map(str::to_string),
        detail: f.detail,
        duration_ms: f.duration_ms,
        operation_id: f.operation_id,
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The query string's `limit` and `node`; every other parameter is refused, so a misspelt
/// filter is an error rather than an unfiltered answer.
pub fn parse_query(query: Option<&str>) -> Result<EventQuery, String> {
    let mut parsed = EventQuery {
        node_id: None,
        after_id: 0,
        limit: DEFAULT_LIMIT,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                parsed.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit must be a whole number from 1 to {MAX_LIMIT}"))?;
            }
            "node" => {
                // Node names need no percent-encoding: anything encoded is not a node name.
                nodewarden_shared::name::validate_node_name(value)?;
                parsed.node_id = Some(value.to_string());
            }
            other => {
                return Err(format!(
                    "unknown parameter {:?}: use limit and node",
                    other.chars().take(64).collect::<String>()
                ));
            }
        }
    }
    Ok(parsed)
}

async fn get_events(
    State(reader): State<Option<StoreReader>>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = match parse_query(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(reader) = reader else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no fleet store is attached to this controller: the audit log is unavailable",
        );
    };
    match tokio::time::timeout(READ_TIMEOUT, reader.recent_events(&query)).await {
        Ok(Ok(records)) => {
            Json(records.into_iter().map(event_json).collect::<Vec<_>>()).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "audit log read failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the audit log could not be read: {e}"),
            )
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the audit log could not be read: the database did not answer in {READ_TIMEOUT:?}"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_auth::{Auth, TokenFile, require_api};
    use crate::store::{NodeInfo, Operation, OperationPath, Store, StoreConfig};
    use std::sync::Arc;
    use std::time::SystemTime;

    #[test]
    fn query_limits_and_filters() {
        let q = parse_query(None).unwrap();
        assert_eq!((q.limit, q.node_id, q.after_id), (DEFAULT_LIMIT, None, 0));
        let q = parse_query(Some("limit=1&node=storage-01")).unwrap();
        assert_eq!((q.limit, q.node_id.as_deref()), (1, Some("storage-01")));
        assert_eq!(parse_query(Some("limit=1000")).unwrap().limit, MAX_LIMIT);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=abc",
            "limit=",
            "limit",
            "limit=99999999999999",
        ] {
            let e = parse_query(Some(bad)).unwrap_err();
            assert!(e.contains("limit must be"), "{bad}: {e}");
        }
        for bad in ["node=", "node=../x", "node=a%2Fb", "node=a+b"] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
        let e = parse_query(Some("limit=5&nodes=n1")).unwrap_err();
        assert!(e.contains("unknown parameter \"nodes\""), "{e}");
    }

    const TOKEN: &str = "events-test-token-0123456789";

    async fn serve(reader: Option<StoreReader>, token_file: &std::path::Path) -> String {
        std::fs::write(token_file, format!("{TOKEN}\n")).unwrap();
        let auth = Auth {
            api: Arc::new(TokenFile::new(token_file)),
            sd: Arc::new(TokenFile::new(token_file.with_extension("none"))),
            alerts: Arc::new(TokenFile::new(token_file.with_extension("none"))),
        };
        let app =
            routes(reader).route_layer(axum::middleware::from_fn_with_state(auth, require_api));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/api/v1/events")
    }

    /// GET with an optional bearer token: status and body.
    async fn get(url: String, token: Option<&'static str>) -> (u16, String) {
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut request = agent.get(&url);
            if let Some(t) = token {
                request = request.header("Authorization", &format!("Bearer {t}"));
            }
            let mut response = request.call().unwrap();
            let status = response.status().as_u16();
            (status, response.body_mut().read_to_string().unwrap())
        })
        .await
        .unwrap()
    }

    fn info(id: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            hostname: id.into(),
            addresses: vec![],
            mac_addresses: vec![],
            roles: vec!["storage".into()],
            agent_version: "t".into(),
            cert_fingerprint: "f".into(),
            services: vec![],
            interfaces: vec![],
            scrape: String::new(),
        }
    }

    #[tokio::test]
    async fn newest_first_behind_the_api_token_with_bounded_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).await.unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        store.node_connected(info("n1"), t0).unwrap();
        store.node_connected(info("n2"), t0).unwrap();
        store
            .operation(
                "n1",
                t0 + Duration::from_secs(1),
                Operation {
                    operation_id: None,
                    actor: "alice <b>".into(),
                    action: "wake".into(),
                    path: OperationPath::Agent,
                    result: crate::store::OperationResult::Ok,
                    duration: Duration::from_millis(412),
                },
            )
            .unwrap();
        store
            .node_offline("n2", t0 + Duration::from_secs(2), "link closed")
            .unwrap();
        store
            .operation(
                "n2",
                t0 + Duration::from_secs(3),
                Operation {
                    operation_id: Some("op-7".into()),
                    actor: "bob".into(),
                    action: "stop".into(),
                    path: OperationPath::Unreachable,
                    result: crate::store::OperationResult::Failed {
                        error: "no path".into(),
                    },
                    duration: Duration::ZERO,
                },
            )
            .unwrap();
        store.flush().await.unwrap();
        let url = serve(Some(store.reader()), &dir.path().join("api.token")).await;

        assert_eq!(get(url.clone(), None).await.0, 401);
        assert_eq!(
            get(url.clone(), Some("a-wrong-token-0123456789")).await.0,
            401
        );

        let (status, body) = get(format!("{url}?limit=2"), Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(events.len(), 2);
        assert!(events[0]["id"].as_i64() > events[1]["id"].as_i64());
        assert_eq!(
            events[0],
            serde_json::json!({"id": events[0]["id"], "at_ms": 1_764_000_003_000u64,
                "node": "n2", "kind": "operation", "actor": "bob", "action": "stop",
                "path": "none", "result": "failed", "detail": "no path", "duration_ms": 0,
                "operation_id": "op-7"})
        );
        assert_eq!(
            events[1],
            serde_json::json!({"id": events[1]["id"], "at_ms": 1_764_000_002_000u64,
                "node": "n2", "kind": "offline", "actor": null, "action": null,
                "path": null, "result": null, "detail": "link closed", "duration_ms": null,
                "operation_id": null})
        );

        let (status, body) = get(format!("{url}?node=n1"), Some(TOKEN)).await;
        assert_eq!(status, 200);
        let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["operation", "online"]);
        assert_eq!(events[0]["actor"], "alice <b>");
        assert_eq!(events[0]["duration_ms"], 412);

        for bad in ["limit=0", "limit=1001", "node=..", "after=3"] {
            let (status, body) = get(format!("{url}?{bad}"), Some(TOKEN)).await;
            assert_eq!(status, 400, "{bad}: {body}");
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(error["error"].is_string(), "{body}");
        }
        // Bad input is not looked at before the token is.
        assert_eq!(get(format!("{url}?limit=0"), None).await.0, 401);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn without_a_store_the_answer_is_503() {
        let dir = tempfile::tempdir().unwrap();
        let url = serve(None, &dir.path().join("api.token")).await;
        assert_eq!(get(url.clone(), None).await.0, 401);
        let (status, body) = get(url, Some(TOKEN)).await;
        assert_eq!(status, 503);
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("no fleet store")),
            "{body}"
        );
    }
}
