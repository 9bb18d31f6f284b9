//! The controller's HTTP server (`[http] listen`, default 127.0.0.1:9180): `/metrics`
//! (unauthenticated, like any exporter; `metrics.rs`), Prometheus service discovery
//! `GET /api/v1/sd/agents` (SD or API token; `sd.rs`), the `/api/v1` API (API token;
//! `http_auth.rs`): `GET /api/v1/nodes` (JSON list), `POST /api/v1/nodes/{name}/ping` (a command
//! round trip), `POST /api/v1/actions` ([`crate::api_actions`]) and `GET /api/v1/events`
//! ([`crate::api_events`]); and the web console's static files under `/console/`
//! (unauthenticated: they hold no data; [`crate::console`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use nodewarden_shared::protocol::{CommandKind, CommandOutcome};

use crate::api_actions::{self, ActionsApi};
use crate::link::Controller;
use crate::registry::Node;

/// Everything the server needs beyond the controller.
#[derive(Clone)]
pub struct HttpState {
    pub auth: crate::http_auth::Auth,
    pub metrics: crate::metrics::MetricsState,
    pub actions: Arc<ActionsApi>,
    /// The audit log's reader (`None`: `GET /api/v1/events` answers 503).
    pub events: Option<crate::store::StoreReader>,
}

/// The whole server: each part's routes with its authentication.
pub fn app(controller: Arc<Controller>, http: HttpState) -> Router {
    use crate::http_auth::{require_api, require_sd};
    use axum::middleware::from_fn_with_state;
    let api = router(controller.clone(), http.actions)
        .merge(crate::api_events::routes(http.events))
        .route_layer(from_fn_with_state(http.auth.clone(), require_api));
    let sd = crate::sd::router(controller).route_layer(from_fn_with_state(http.auth, require_sd));
    Router::new()
        .merge(api)
        .merge(sd)
        .merge(crate::metrics::router(http.metrics))
        .merge(crate::console::router())
}

/// The `/api/v1` routes (authenticated by [`app`]).
pub fn router(controller: Arc<Controller>, actions: Arc<ActionsApi>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/nodes/{name}/ping", post(ping))
        .with_state(controller)
        .merge(api_actions::routes(actions))
}

/// The operator the request's API token belongs to (`null` for an unnamed token), so that a
/// client (the console) can show who its actions will be recorded as.
async fn whoami(
    caller: Option<axum::Extension<crate::http_auth::Caller>>,
) -> Json<serde_json::Value> {
    let operator = caller.and_then(|c| c.0.operator).map(|o| o.to_string());
    Json(serde_json::json!({ "operator": operator }))
}

async fn nodes(State(c): State<Arc<Controller>>) -> Json<Vec<Node>> {
    let registry = c.registry.lock().unwrap_or_else(|p| p.into_inner());
    Json(registry.nodes().cloned().collect())
}

async fn ping(
    State(c): State<Arc<Controller>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let start = Instant::now();
    let response = c
        .command(&name, CommandKind::Ping, Duration::from_secs(5))
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e))?;
    match response.outcome {
        CommandOutcome::Done => Ok(Json(serde_json::json!({
            "node": name,
            "round_trip_ms": start.elapsed().as_secs_f64() * 1000.0,
        }))),
        CommandOutcome::Failed { message } => Err((StatusCode::BAD_GATEWAY, message)),
        other => Err((
            StatusCode::BAD_GATEWAY,
            format!("node {name} answered a ping with {other:?}"),
        )),
    }
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding http.listen {addr}: {e}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, console = %format!("http://{address}/console/"), "HTTP endpoint listening (API, /metrics, service discovery, console)");
    Ok(listener)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    controller: Arc<Controller>,
    http: HttpState,
) -> anyhow::Result<()> {
    axum::serve(listener, app(controller, http)).await?;
    Ok(())
}
