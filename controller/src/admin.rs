//! A small HTTP API for operators and tests, bound to loopback by default (the authenticated API
//! is a later issue): `GET /api/v1/nodes` (JSON list), `POST /api/v1/nodes/{name}/ping` (a
//! command round trip) and `POST /api/v1/actions` ([`crate::api_actions`]).

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

pub fn router(controller: Arc<Controller>, actions: Arc<ActionsApi>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{name}/ping", post(ping))
        .with_state(controller)
        .merge(api_actions::routes(actions))
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

pub async fn serve(
    addr: SocketAddr,
    controller: Arc<Controller>,
    actions: Arc<ActionsApi>,
) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "admin endpoint is not on loopback and has no authentication");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding admin.listen {addr}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "admin endpoint listening");
    axum::serve(listener, router(controller, actions)).await?;
    Ok(())
}
