//! The controller's HTTP server (`[http] listen`, default 127.0.0.1:9180): `/metrics`
//! (unauthenticated, like any exporter; `metrics.rs`), Prometheus service discovery
//! `GET /api/v1/sd/agents` (SD or API token; `sd.rs`), the `/api/v1` API (API token;
//! `http_auth.rs`): `GET /api/v1/nodes` (JSON list), `GET /api/v1/nodes/{name}/history` (recent state reports,
//! `history.rs`), `GET /api/v1/console` (the configured Grafana and Prometheus URLs), `GET /api/v1/stream`
//! ([`crate::api_stream`]), `POST /api/v1/nodes/{name}/ping` (a command
//! round trip), `POST /api/v1/actions` ([`crate::api_actions`]), `GET /api/v1/events`
//! ([`crate::api_events`]) and the fragment routes ([`crate::api_fragments`]); and the web console's static files under `/console/`
//! (unauthenticated: they hold no data; [`crate::console`]).
//!
//! Plain HTTP by default (on loopback); HTTPS with `[http] tls` (TLS 1.3, the link's server
//! certificate or another pair), so that bearer tokens never cross a network in clear. Both go
//! through one accept loop with the same limits (docs/operations.md, "HTTP limits"): at most
//! [`MAX_CONNECTIONS`] connections (one beyond is answered 503 and closed; over HTTPS, closed), a
//! request's headers (and the keep-alive wait before them) within [`HEADER_READ_TIMEOUT`], a TLS
//! handshake within [`HANDSHAKE_TIMEOUT`].

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
use crate::wire::DrainState;

/// Everything the server needs beyond the controller.
#[derive(Clone)]
pub struct HttpState {
    pub auth: crate::http_auth::Auth,
    pub metrics: crate::metrics::MetricsState,
    pub actions: Arc<ActionsApi>,
    /// The audit log's reader (`None`: `GET /api/v1/events` answers 503).
    pub events: Option<crate::store::StoreReader>,
    /// The alerts Alertmanager says are firing.
    pub alerts: Arc<std::sync::Mutex<crate::api_alerts::FiringAlerts>>,
    /// The DFS database's `FRAGMENT` table (`[dfs]`; `None`: the fragment routes answer 503).
    pub fragments: Option<crate::fragments::FragmentTable>,
    /// Where the console links nodes to (`GET /api/v1/console`).
    pub links: crate::wire::ConsoleLinks,
    /// In a cluster: discovery lists the other controllers' nodes too, from the database.
    pub cluster_sd: Option<crate::sd::ClusterSd>,
}

/// The whole server: each part's routes with its authentication.
pub fn app(controller: Arc<Controller>, http: HttpState) -> Router {
    use crate::http_auth::{require_alerts, require_api, require_sd};
    use axum::middleware::from_fn_with_state;
    let (webhook, alerts) = crate::api_alerts::routes(controller.clone(), http.alerts);
    let api = router(controller.clone(), http.actions.clone())
        .merge(crate::api_events::routes(http.events))
        .merge(crate::api_fragments::routes(http.actions, http.fragments))
        .merge(alerts)
        .merge(crate::api_stream::routes(controller.clone()))
        .merge(crate::api_prometheus::routes(Arc::new(
            crate::api_prometheus::PrometheusSource::new(http.links.prometheus_url.clone()),
        )))
        .merge(
            Router::new()
                .route("/api/v1/console", get(console_links))
                .with_state(Arc::new(http.links)),
        )
        .route_layer(from_fn_with_state(http.auth.clone(), require_api));
    let webhook = webhook.route_layer(from_fn_with_state(http.auth.clone(), require_alerts));
    let sd = crate::sd::router(controller, http.cluster_sd)
        .route_layer(from_fn_with_state(http.auth, require_sd));
    Router::new()
        .merge(api)
        .merge(webhook)
        .merge(sd)
        .merge(crate::metrics::router(http.metrics))
        .merge(crate::console::router())
}

/// The `/api/v1` routes (authenticated by [`app`]).
pub fn router(controller: Arc<Controller>, actions: Arc<ActionsApi>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/nodes/{name}/history", get(history))
        .route("/api/v1/nodes/{name}/ping", post(ping))
        .route(
            "/api/v1/controller/drain",
            get(drain_state).post(drain).delete(resume),
        )
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

/// `POST /api/v1/controller/drain`: this controller closes its links and turns agents away, so
/// each links to another controller of its list (docs/scale-out.md). The caller is named in
/// the log and in each node's offline event.
async fn drain(
    State(c): State<Arc<Controller>>,
    caller: Option<axum::Extension<crate::http_auth::Caller>>,
) -> Json<DrainState> {
    let actor = caller
        .and_then(|c| c.0.operator)
        .map_or_else(|| "an API token".to_string(), |o| o.to_string());
    let closed = c.drain(&actor);
    tracing::warn!(%actor, links = closed, "draining: agents move to other controllers");
    Json(DrainState {
        draining: true,
        links_closed: Some(closed),
    })
}

/// `DELETE /api/v1/controller/drain`: agents may link to this controller again.
async fn resume(State(c): State<Arc<Controller>>) -> Json<DrainState> {
    if c.resume() {
        tracing::warn!("drain ended: agents may link again");
    }
    drain_state(State(c)).await
}

async fn drain_state(State(c): State<Arc<Controller>>) -> Json<DrainState> {
    Json(DrainState {
        draining: c.draining().is_some(),
        links_closed: None,
    })
}

/// Every known node; in a cluster, a node another controller holds is online, `held_by` it.
async fn nodes(State(c): State<Arc<Controller>>) -> Json<Vec<Node>> {
    let elsewhere = c.elsewhere();
    let registry = c.registry.lock().unwrap_or_else(|p| p.into_inner());
    Json(
        registry
            .nodes()
            .cloned()
            .map(|mut n| {
                if !n.online
                    && let Some(holder) = elsewhere.get(&n.name)
                {
                    n.online = true;
                    n.held_by = Some(holder.holder.clone());
                }
                n
            })
            .collect(),
    )
}

/// The console's links to Grafana and Prometheus, as configured.
async fn console_links(
    State(links): State<Arc<crate::wire::ConsoleLinks>>,
) -> Json<crate::wire::ConsoleLinks> {
    Json((*links).clone())
}

/// A node's recent state reports (`history.rs`); 404 for a node the registry does not know.
async fn history(
    State(c): State<Arc<Controller>>,
    Path(name): Path<String>,
) -> Result<Json<crate::wire::HistoryView>, (StatusCode, Json<serde_json::Value>)> {
    let known = c
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .is_some();
    if !known {
        return Err((
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("unknown node {name:?}") })),
        ));
    }
    let history = c.history.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Json(crate::wire::HistoryView {
        node: name.clone(),
        interval_ms: history.interval(),
        cap: history.cap(),
        points: history.points(&name, 0),
    }))
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
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait for (or trickle) a request's headers, idle keep-alive time
/// included in hyper: longer than common scrape and discovery intervals (15–60 s), so that
/// Prometheus keeps its connection between scrapes instead of a handshake per scrape.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections served at once (the API, service discovery, /metrics and the console together).
/// One beyond it is answered `503 Service Unavailable` without its request being read and closed
/// (over HTTPS it is closed, there being no TLS session to answer in).
pub const MAX_CONNECTIONS: usize = 512;
/// Connections beyond [`MAX_CONNECTIONS`] being answered 503 at once; past that they are closed
/// on accept.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to close after the 503 (its request is read and
/// discarded meanwhile, so that closing does not reset the connection before the client has read
/// the answer).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// `NODEWARDEN_HTTP_HEADER_TIMEOUT_MS` overrides [`HEADER_READ_TIMEOUT`] (tests, or a host that
/// wants idle connections dropped sooner); the agent reads the same variable.
pub const HEADER_TIMEOUT_ENV: &str = "NODEWARDEN_HTTP_HEADER_TIMEOUT_MS";

const BUSY_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 33\r\nConnection: close\r\n\r\ntoo many connections, try again\r\n";

/// The limits of the accept loop.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    /// The constants above, with the environment's header-timeout override.
    fn default() -> Limits {
        let header_read_timeout = match std::env::var(HEADER_TIMEOUT_ENV) {
            Err(_) => HEADER_READ_TIMEOUT,
            Ok(value) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    tracing::warn!(%value, "{HEADER_TIMEOUT_ENV} is not a positive number of milliseconds; ignored");
                    HEADER_READ_TIMEOUT
                }
            },
        };
        Limits {
            header_read_timeout,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

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
    serve_connections(listener.listener, listener.tls, app, Limits::default()).await;
    Ok(())
}

/// The accept loop, plain HTTP or HTTPS: one task per connection up to
/// [`Limits::max_connections`]; the TLS handshake bounded by [`Limits::handshake_timeout`],
/// waiting for request headers by [`Limits::header_read_timeout`]. A failed handshake (a
/// plain-HTTP client, a client that does not trust the certificate) ends that connection only.
pub(crate) async fn serve_connections(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Limits,
) {
    use hyper_util::rt::TokioIo;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let mut last_warning: Option<Instant> = None;
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    limit = limits.max_connections,
                    "HTTP connection limit reached: refusing new connections until some close"
                );
            }
            refuse(stream, acceptor.is_none(), &refusing);
            continue;
        };
        let (acceptor, app, limits) = (acceptor.clone(), app.clone(), limits.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let result = match acceptor {
                None => serve_connection(TokioIo::new(stream), app, &limits).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), app, &limits).await
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "HTTPS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "HTTPS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// One HTTP/1.1 connection with the header-read timeout.
async fn serve_connection<I>(io: I, app: Router, limits: &Limits) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service)
        .await
}

/// Answers a connection beyond the cap: `503` and close (over TLS: close), on a task of its own
/// while fewer than [`MAX_REFUSING`] are being answered, else closed on the spot.
fn refuse(stream: tokio::net::TcpStream, plain: bool, refusing: &Arc<tokio::sync::Semaphore>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if !plain {
        return;
    }
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(BUSY_RESPONSE).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_says_its_length() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
    }
}
