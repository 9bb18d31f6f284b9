//! Controllers of one cluster acting on each other's nodes (`[cluster] peer_*`,
//! docs/scale-out.md). An action that reaches a controller for a node whose link another
//! controller holds runs there: the receiving controller plans it and writes it into the audit
//! log once (naming both controllers), then sends each operation to the holder's peer endpoint
//! over HTTPS with mutual TLS (both sides present a controller certificate of the fleet's CA,
//! `ca issue-controller`); the holder runs it over its link and answers with the result. A node
//! no controller holds gets the receiving controller's own fallbacks (SSH, Wake-on-LAN).
//!
//! - [`router`]/[`bind`]: the peer endpoint, `POST /peer/v1/operation`, served by the HTTP
//!   accept loop (`admin.rs`: connection cap, handshake and header timeouts) behind a TLS
//!   configuration that accepts controllers' certificates only.
//! - [`PeerClient`]: one request per operation, connect and answer bounded.
//! - [`ClusterPath`]: the [`AgentPath`] of one action in a cluster: the local link for the
//!   nodes held here, the holder's peer endpoint for the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use nodewarden_shared::ops::{ActionPath, Operation, OperationResult};
use nodewarden_shared::tls::{Identity, RevokedSet};
use serde::{Deserialize, Serialize};

use crate::actions::{AgentPath, LinkFailure};
use crate::config::PeerConfig;
use crate::state::LinkAgent;
use crate::store::{RemoteHolder, StoreReader};

/// Largest request or answer body on the peer endpoint.
const MAX_BODY: usize = 256 * 1024;
/// Connecting to a peer (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a woken node's holder is looked for in the database while waiting for it.
const HOLDER_POLL: Duration = Duration::from_millis(500);
/// How often the peer endpoint re-reads the CA's revocation list.
const REVOCATION_REFRESH: Duration = Duration::from_secs(5);
/// Idle connections kept per peer for the next operations (a fleet-wide action forwards one
/// operation per node: a handshake each would dominate).
const POOL_PER_PEER: usize = 64;
/// Operations in flight to one peer at most (each on a connection of its own): a fleet-wide
/// action queues here instead of opening thousands of connections the peer would refuse.
const IN_FLIGHT_PER_PEER: usize = 64;
/// An idle pooled connection older than this is not reused (well inside the endpoint's own
/// keep-alive limit, so a reused connection is not one the peer is closing).
const POOL_IDLE: Duration = Duration::from_secs(20);

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One operation forwarded to the controller holding the node's link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerOperation {
    pub node: String,
    pub operation: Operation,
    /// The forwarding controller's id.
    pub origin: String,
    /// Who asked, for the holder's log.
    pub requested_by: String,
}

/// The holder's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerAnswer {
    Result(OperationResult),
    /// Not sent to the node (the holder does not hold its link any more, the queue was full).
    NotSent(String),
    /// Sent; no answer came (it may have run).
    Unknown(String),
}

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer certificate or key {file}: {message}")]
    Identity { file: String, message: String },
    #[error("peer TLS configuration: {0}")]
    Tls(#[from] nodewarden_shared::tls::TlsError),
    #[error("peer endpoint {listen}: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("CA directory: {0}")]
    CaDir(#[from] crate::cadir::CaDirError),
}

/// The state of the peer endpoint's handler.
#[derive(Clone)]
struct Endpoint {
    agent: Arc<LinkAgent>,
    me: String,
}

/// `POST /peer/v1/operation`.
pub fn router(agent: Arc<LinkAgent>, me: String) -> Router {
    Router::new()
        .route("/peer/v1/operation", post(operation))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Endpoint { agent, me })
}

async fn operation(
    State(endpoint): State<Endpoint>,
    axum::Json(request): axum::Json<PeerOperation>,
) -> axum::Json<PeerAnswer> {
    let Endpoint { agent, me } = endpoint;
    tracing::info!(
        node = %request.node, origin = %request.origin, requested_by = %request.requested_by,
        operation = ?request.operation, "operation forwarded by another controller"
    );
    if !agent.is_online(&request.node) {
        return axum::Json(PeerAnswer::NotSent(format!(
            "controller {me} does not hold node {}'s link (any more)",
            request.node
        )));
    }
    axum::Json(
        match agent.execute(&request.node, &request.operation).await {
            Ok(result) => PeerAnswer::Result(result),
            Err(LinkFailure::NotSent(e)) => PeerAnswer::NotSent(e),
            Err(LinkFailure::Unknown(e)) => PeerAnswer::Unknown(e),
        },
    )
}

/// The peer endpoint's listener and TLS: controllers' certificates of the CA in `ca_dir` only,
/// not revoked (the list re-read every few seconds); this controller's own peer certificate,
/// re-read when its files change.
pub async fn bind(
    config: &PeerConfig,
    ca_dir: &std::path::Path,
) -> Result<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor), PeerError> {
    let dir = crate::cadir::CaDir::new(ca_dir);
    let ca_pem = crate::cadir::read(&dir.path(crate::cadir::CA_CERT))?;
    let revoked = RevokedSet::default();
    revoked.replace(dir.revoked()?.serials());
    let refreshed = revoked.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REVOCATION_REFRESH);
        loop {
            tick.tick().await;
            match dir.revoked() {
                Ok(list) => refreshed.replace(list.serials()),
                Err(e) => tracing::warn!(error = %e, "peer endpoint: revocation list not re-read"),
            }
        }
    });
    let pair = crate::certfile::CertFiles::load(
        "peer",
        &config.cert_file,
        &config.key_file,
        crate::certfile::CHECK_INTERVAL,
    )
    .map_err(|message| PeerError::Identity {
        file: config.cert_file.display().to_string(),
        message,
    })?;
    let tls =
        nodewarden_shared::tls::peer_server_config(&ca_pem, Arc::new(pair), Arc::new(revoked))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| PeerError::Bind {
            listen: config.listen,
            source,
        })?;
    Ok((listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

/// Calls other controllers' peer endpoints with this controller's peer certificate.
pub struct PeerClient {
    tls: tokio_rustls::TlsConnector,
    /// Longest wait for an answer once sent (the holder's operation timeout and a margin).
    answer_timeout: Duration,
    /// Idle connections per peer URL, with when they were last used.
    pool: std::sync::Mutex<std::collections::HashMap<String, Vec<(Sender, std::time::Instant)>>>,
    /// Operations in flight per peer URL.
    slots: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl PeerClient {
    pub fn new(
        config: &PeerConfig,
        ca_dir: &std::path::Path,
        answer_timeout: Duration,
    ) -> Result<PeerClient, PeerError> {
        let ca_pem = crate::cadir::read(&ca_dir.join(crate::cadir::CA_CERT))?;
        let read = |file: &std::path::Path| {
            std::fs::read_to_string(file).map_err(|e| PeerError::Identity {
                file: file.display().to_string(),
                message: e.to_string(),
            })
        };
        let (cert_pem, key_pem) = (read(&config.cert_file)?, read(&config.key_file)?);
        let tls = nodewarden_shared::tls::peer_client_config(
            &ca_pem,
            Identity {
                cert_pem: &cert_pem,
                key_pem: &key_pem,
            },
        )?;
        Ok(PeerClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            answer_timeout,
            pool: Default::default(),
            slots: Default::default(),
        })
    }

    fn slots(&self, url: &str) -> Arc<tokio::sync::Semaphore> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(url.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_PER_PEER)))
            .clone()
    }

    /// An idle connection to `url` that is still open, if one is pooled.
    fn pooled(&self, url: &str) -> Option<Sender> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.get_mut(url)?;
        while let Some((sender, at)) = idle.pop() {
            if at.elapsed() < POOL_IDLE && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn put_back(&self, url: &str, sender: Sender) {
        if !sender.is_ready() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.entry(url.to_string()).or_default();
        if idle.len() < POOL_PER_PEER {
            idle.push((sender, std::time::Instant::now()));
        }
    }

    /// A new connection to `authority` (TCP, TLS, HTTP/1.1 handshake), bounded.
    async fn connect(
        &self,
        authority: &str,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Sender, String> {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = tokio::net::TcpStream::connect(authority).await?;
            self.tls.connect(server_name, tcp).await
        })
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(connected))
                .await
                .map_err(|e| e.to_string())?;
        // Ends with the connection (the sender dropped, or the peer closing it).
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one operation to the controller at `url` (`https://host:port`). A failure before
    /// the request was written is [`LinkFailure::NotSent`]; after, [`LinkFailure::Unknown`].
    pub async fn forward(
        &self,
        url: &str,
        request: &PeerOperation,
    ) -> Result<OperationResult, LinkFailure> {
        let not_sent = |e: String| LinkFailure::NotSent(format!("forwarding to {url}: {e}"));
        let authority = url
            .strip_prefix("https://")
            .ok_or_else(|| not_sent("not an https:// URL".into()))?;
        let (host, _) = authority
            .rsplit_once(':')
            .ok_or_else(|| not_sent("no port".into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| not_sent(format!("server name: {e}")))?;
        let body = serde_json::to_vec(request).map_err(|e| not_sent(e.to_string()))?;
        let _slot = tokio::time::timeout(self.answer_timeout, self.slots(url).acquire_owned())
            .await
            .map_err(|_| {
                not_sent(format!(
                    "{IN_FLIGHT_PER_PEER} operations already in flight there for {:?}",
                    self.answer_timeout
                ))
            })?
            .map_err(|e| not_sent(e.to_string()))?;
        let mut sender = match self.pooled(url) {
            Some(sender) => sender,
            None => self
                .connect(authority, server_name)
                .await
                .map_err(not_sent)?,
        };
        let http_request = hyper::Request::post("/peer/v1/operation")
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| not_sent(e.to_string()))?;
        let unknown = |e: String| LinkFailure::Unknown(format!("forwarded to {url}: {e}"));
        let answer = tokio::time::timeout(self.answer_timeout, async {
            let response = sender
                .send_request(http_request)
                .await
                .map_err(|e| unknown(e.to_string()))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| unknown(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(unknown(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                )));
            }
            serde_json::from_slice::<PeerAnswer>(&bytes).map_err(|e| unknown(e.to_string()))
        })
        .await
        .map_err(|_| unknown(format!("no answer within {:?}", self.answer_timeout)))?;
        // Answered in full: the connection serves the next operation.
        if answer.is_ok() {
            self.put_back(url, sender);
        }
        match answer? {
            PeerAnswer::Result(r) => Ok(r),
            PeerAnswer::NotSent(e) => Err(LinkFailure::NotSent(e)),
            PeerAnswer::Unknown(e) => Err(LinkFailure::Unknown(e)),
        }
    }
}

/// The cluster's view of a node for one action: held here, held by `holder`, or by nobody.
pub struct ClusterPath {
    pub local: Arc<LinkAgent>,
    pub me: String,
    pub reader: StoreReader,
    pub client: Option<Arc<PeerClient>>,
    /// Who holds which node elsewhere, read when the action was planned.
    pub remote: BTreeMap<String, RemoteHolder>,
    pub requested_by: String,
}

impl ClusterPath {
    /// The node's holder elsewhere now (a fresh read: it may have moved since the plan).
    async fn holder(&self, node: &str) -> Option<RemoteHolder> {
        match self.reader.remote_holder(&self.me, node).await {
            Ok(holder) => holder,
            Err(e) => {
                tracing::warn!(%node, error = %e, "the node's holder could not be read");
                self.remote.get(node).cloned()
            }
        }
    }
}

impl AgentPath for ClusterPath {
    fn is_online(&self, node: &str) -> bool {
        self.local.is_online(node) || self.remote.contains_key(node)
    }

    async fn execute(&self, node: &str, op: &Operation) -> Result<OperationResult, LinkFailure> {
        if self.local.is_online(node) {
            return self.local.execute(node, op).await;
        }
        // The holder read when the action was planned (one read for the whole fleet); a node
        // linked elsewhere since is looked up on its own.
        let planned = self.remote.get(node).cloned();
        let holder = match planned {
            Some(h) => Some(h),
            None => self.holder(node).await,
        };
        let Some(holder) = holder else {
            return Err(LinkFailure::NotSent(format!(
                "node {node} is linked to no controller of the cluster"
            )));
        };
        let (Some(client), Some(url)) = (&self.client, &holder.peer_url) else {
            return Err(LinkFailure::NotSent(format!(
                "node {node} is linked to controller {}, and forwarding needs a peer endpoint \
                 on both ([cluster] peer_listen)",
                holder.holder
            )));
        };
        client
            .forward(
                url,
                &PeerOperation {
                    node: node.to_string(),
                    operation: op.clone(),
                    origin: self.me.clone(),
                    requested_by: self.requested_by.clone(),
                },
            )
            .await
    }

    /// Here or at another controller: the link's own notification for here; the database,
    /// read every [`HOLDER_POLL`], for the others (no notification crosses controllers).
    async fn wait_online(&self, node: &str, limit: Duration) -> bool {
        let elsewhere = async {
            loop {
                if self.holder(node).await.is_some() {
                    return;
                }
                tokio::time::sleep(HOLDER_POLL).await;
            }
        };
        tokio::select! {
            here = self.local.wait_online(node, limit) => here,
            found = tokio::time::timeout(limit, elsewhere) => found.is_ok(),
        }
    }

    fn observe(&self, path: ActionPath, elapsed: Duration) {
        self.local.observe(path, elapsed);
    }
}
