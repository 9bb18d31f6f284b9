//! The controller's HTTP server (`[http] listen`, default 127.0.0.1:9180): `/metrics`
//! (unauthenticated, like any exporter; `metrics.rs`), Prometheus service discovery
//! `GET /api/v1/sd/agents` (SD or API token; `sd.rs`), the `/api/v1` API (API token;
//! `http_auth.rs`): `GET /api/v1/nodes` (JSON list), `POST /api/v1/nodes/{name}/ping` (a command
//! round trip), `POST /api/v1/actions` ([`crate::api_actions`]) and `GET /api/v1/events`
//! ([`crate::api_events`]); and the web console's static files under `/console/`
//! (unauthenticated: they hold no data; [`crate::console`]).
//!
//! Plain HTTP by default (on loopback); HTTPS with `[http] tls` (TLS 1.3, the link's server
//! certificate or another pair), so that bearer tokens never cross a network in clear.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use nodewarden_shared::protocol::{CommandKind, CommandOutcome};

use crate::api_actions::{self, ActionsApi};
use crate::config::HttpTls;
use crate::registry::Node;
use crate::state::Controller;

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
        .with_state(controller.clone())
        .merge(crate::api_devices::routes(controller, actions.clone()))
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
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
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

/// A TLS client gets this long to finish its handshake, so that stalled connections do not pile
/// up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait for (or trickle) a request's headers, idle keep-alive time
/// included in hyper: longer than common scrape and discovery intervals (15–60 s), so that
/// Prometheus keeps its connection between scrapes instead of a handshake per scrape.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The bound server socket, with its TLS acceptor when `[http] tls` is set.
pub struct HttpListener {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl HttpListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Loads the HTTPS certificate and key (errors name the file), then binds `addr`.
pub async fn bind(addr: SocketAddr, tls: Option<&HttpTls>) -> anyhow::Result<HttpListener> {
    let tls = match tls {
        Some(files) => Some(tls_acceptor(files)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding http.listen {addr}: {e}"))?;
    let bound = HttpListener { listener, tls };
    let address = bound.local_addr()?;
    let scheme = bound.scheme();
    tracing::info!(%address, console = %format!("{scheme}://{address}/console/"), "HTTP endpoint listening (API, /metrics, service discovery, console)");
    if bound.tls.is_none() && !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "plain HTTP on a non-loopback address: API and service-discovery tokens cross the \
             network in clear; set [http] tls = true"
        );
    }
    Ok(bound)
}

fn tls_acceptor(files: &HttpTls) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    let pair = crate::certfile::CertFiles::load(
        "HTTPS",
        &files.cert_file,
        &files.key_file,
        crate::certfile::CHECK_INTERVAL,
    )
    .map_err(anyhow::Error::msg)
    .context("loading the HTTPS certificate")?;
    match pair.info() {
        Ok(info) => tracing::info!(
            certificate = %files.cert_file.display(),
            name = info.common_name.as_deref().unwrap_or("-"),
            days_left = (info.not_after_unix - crate::state::now_unix()) / 86400,
            "serving HTTPS (the certificate files are re-read when they change)"
        ),
        Err(e) => tracing::warn!(certificate = %files.cert_file.display(), "{e}"),
    }
    let config = nodewarden_shared::tls::https_server_config(Arc::new(pair))
        .context("the HTTPS server configuration")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub async fn serve(
    listener: HttpListener,
    controller: Arc<Controller>,
    http: HttpState,
) -> anyhow::Result<()> {
    let app = app(controller, http);
    match listener.tls {
        None => axum::serve(listener.listener, app).await?,
        Some(acceptor) => serve_tls(listener.listener, acceptor, app).await,
    }
    Ok(())
}

/// The accept loop of the HTTPS server: one task per connection, the handshake bounded by
/// [`HANDSHAKE_TIMEOUT`], waiting for request headers by [`HEADER_READ_TIMEOUT`]. A failed
/// handshake (a plain-HTTP client, a client that does not trust the certificate) ends that
/// connection only.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "HTTPS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "HTTPS handshake timed out");
                        return;
                    }
                };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
}
