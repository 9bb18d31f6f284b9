//! The agent link endpoint: a QUIC listener that authenticates nodes by their certificates,
//! runs one [`ControllerSession`] per connection and keeps the [`Registry`] current.
//!
//! Liveness comes from QUIC itself: agents send keep-alives and both ends close a connection
//! after the idle timeout, so a dead agent or a cut network ends in `ConnectionLost(TimedOut)`
//! at most the idle timeout (2 s by default) after its last packet, and the node goes offline
//! then; no polling. (Why the controller sends no keep-alives: see `config`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewarden_shared::ca::CertInfo;
use nodewarden_shared::framing::{FrameDecoder, FrameError, MAX_FRAME, encode_frame};
use nodewarden_shared::protocol::{
    self, CAP_INVENTORY, CommandKind, CommandOutcome, CommandResponse, ControllerToAgent, close,
};
use nodewarden_shared::session::{ControllerEvent, ControllerSession, ProtocolError};
use nodewarden_shared::tls::{self, Revocation};
use quinn::rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot};

use crate::cadir::{self, CaDir};
use crate::registry::{Connected, Connection, Registry};

/// An agent must say hello this soon after the handshake.
const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// How often the revoked list's file is checked for changes (a `stat`).
const REVOKED_POLL: Duration = Duration::from_millis(250);
/// How often live certificates are checked for coming expiry.
const EXPIRY_CHECK: Duration = Duration::from_secs(3600);

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_unix() -> i64 {
    (now_millis() / 1000) as i64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    CaDir(#[from] cadir::CaDirError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("QUIC configuration: {0}")]
    Quic(String),
    #[error("server certificate: {0}")]
    Certificate(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why a session ended with an error (the connection is then closed with that reason).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("no hello within {HELLO_DEADLINE:?}")]
    NoHello,
    #[error("stream error: {0}")]
    Stream(String),
}

pub struct LinkSettings {
    pub listen: SocketAddr,
    pub ca_dir: PathBuf,
    pub idle_timeout: Duration,
    pub keep_alive: Option<Duration>,
    pub expiry_warning_days: u32,
}

type CommandReply = oneshot::Sender<Result<CommandResponse, String>>;

struct Live {
    node: String,
    info: CertInfo,
    connection: quinn::Connection,
    commands: mpsc::Sender<(CommandKind, CommandReply)>,
}

/// State shared by the link tasks and the admin API.
pub struct Controller {
    pub registry: Mutex<Registry>,
    /// Where transitions and reports are persisted; absent in tests that need no store.
    store: std::sync::OnceLock<crate::store::StoreHandle>,
    live: Mutex<HashMap<u64, Live>>,
    revoked: Arc<RevokedFile>,
    next_conn_id: AtomicU64,
    expiry_warning_days: u32,
    /// Bumped on every online/offline transition, so waiters (a woken node's agent) are
    /// notified instead of polling.
    transitions: tokio::sync::watch::Sender<u64>,
    /// Link and command figures for `/metrics`.
    pub metrics: crate::metrics::ControllerMetrics,
}

impl Controller {
    /// The store handle, once attached.
    pub fn store(&self) -> Option<&crate::store::StoreHandle> {
        self.store.get()
    }

    /// Persists every transition and report from now on.
    pub fn attach_store(&self, store: crate::store::StoreHandle) {
        let _ = self.store.set(store);
    }

    /// Whether `node` is online now.
    pub fn is_online(&self, node: &str) -> bool {
        lock(&self.registry).get(node).is_some_and(|n| n.online)
    }

    /// Resolves with `true` once `node` is online, or `false` after `limit`.
    pub async fn wait_online(&self, node: &str, limit: Duration) -> bool {
        // Subscribed before the check, so a transition between the two is not missed.
        let changes = self.transitions.subscribe();
        wait_until(changes, || self.is_online(node), limit).await
    }

    fn transition(&self) {
        self.transitions.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Sends a command to a node's live connection and awaits its response.
    pub async fn command(
        &self,
        node: &str,
        kind: CommandKind,
        timeout: Duration,
    ) -> Result<CommandResponse, String> {
        // The registry knows which of possibly two live connections (one being replaced) is
        // the node's current one.
        let current = lock(&self.registry)
            .get(node)
            .and_then(|n| n.connection.as_ref().map(|c| c.id));
        let sender = current
            .and_then(|id| lock(&self.live).get(&id).map(|l| l.commands.clone()))
            .ok_or_else(|| format!("node {node} is not connected"))?;
        let started = std::time::Instant::now();
        let labels = crate::metrics::CommandLabels::new(kind.capability(), "agent");
        let (tx, rx) = oneshot::channel();
        sender
            .send((kind, tx))
            .await
            .map_err(|_| format!("node {node}: connection ended"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => {
                self.metrics
                    .command_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                r
            }
            Ok(Err(_)) => Err(format!("node {node}: connection ended before the response")),
            Err(_) => Err(format!("node {node}: no response within {timeout:?}")),
        }
    }

    /// Closes every live connection whose certificate is now revoked.
    fn close_revoked(&self) {
        for (id, live) in lock(&self.live).iter() {
            if self.revoked.contains(&live.info.serial) {
                tracing::warn!(
                    node = %live.node,
                    serial = %live.info.serial,
                    connection = id,
                    "certificate revoked: closing the node's live connection"
                );
                live.connection
                    .close(close::REVOKED.into(), b"certificate revoked");
            }
        }
    }

    fn warn_if_expiring(&self, what: &str, info: &CertInfo) {
        let left = info.expires_in(now_unix());
        if left < i64::from(self.expiry_warning_days) * 86400 {
            tracing::warn!(
                serial = %info.serial,
                days_left = left / 86400,
                "{what} certificate expires soon (not after {} UTC unix time)",
                info.not_after_unix
            );
        }
    }
}

fn transport(
    idle: Duration,
    keep_alive: Option<Duration>,
) -> Result<quinn::TransportConfig, LinkError> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        idle.try_into()
            .map_err(|e| LinkError::Quic(format!("idle timeout: {e}")))?,
    ));
    t.keep_alive_interval(keep_alive);
    // One stream per connection, opened by the agent.
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    // Frames are small; keep per-connection buffers small too (a peer cannot make us hold
    // more than this unread).
    t.stream_receive_window((4 * MAX_FRAME as u32).into());
    t.receive_window((4 * MAX_FRAME as u32).into());
    t.send_window(4 * MAX_FRAME as u64);
    Ok(t)
}

/// Loads the CA material, binds the endpoint and returns it with the shared state. Fails
/// before binding when the CA directory or revoked list is unusable.
pub fn bind(settings: &LinkSettings) -> Result<(quinn::Endpoint, Arc<Controller>), LinkError> {
    let dir = CaDir::new(&settings.ca_dir);
    let ca_pem = cadir::read(&dir.path(cadir::CA_CERT))?;
    // Re-read when `ca server` renews it: new connections get the new pair, no restart.
    let server_pair = crate::certfile::CertFiles::load(
        "link",
        &dir.path(cadir::SERVER_CERT),
        &dir.path(cadir::SERVER_KEY),
        crate::certfile::CHECK_INTERVAL,
    )
    .map_err(LinkError::Certificate)?;
    let revoked = Arc::new(RevokedFile::load(CaDir::new(&settings.ca_dir))?);

    let controller = Arc::new(Controller {
        registry: Mutex::new(Registry::new()),
        store: std::sync::OnceLock::new(),
        live: Mutex::new(HashMap::new()),
        revoked: revoked.clone(),
        next_conn_id: AtomicU64::new(1),
        expiry_warning_days: settings.expiry_warning_days,
        transitions: tokio::sync::watch::Sender::new(0),
        metrics: Default::default(),
    });
    match nodewarden_shared::ca::inspect_pem(&ca_pem) {
        Ok(info) => controller.warn_if_expiring("CA", &info),
        Err(e) => tracing::warn!("CA certificate: {e}"),
    }
    match server_pair.info() {
        Ok(info) => controller.warn_if_expiring("server", &info),
        Err(e) => tracing::warn!("server certificate: {e}"),
    }

    let crypto = tls::server_config(&ca_pem, Arc::new(server_pair), revoked)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(crypto))
        .map_err(|e| LinkError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(transport(
        settings.idle_timeout,
        settings.keep_alive,
    )?));
    let endpoint =
        quinn::Endpoint::server(server, settings.listen).map_err(|source| LinkError::Bind {
            addr: settings.listen,
            source,
        })?;
    Ok((endpoint, controller))
}

/// Accepts agents until the endpoint is closed; also watches the revoked list.
pub async fn serve(endpoint: quinn::Endpoint, controller: Arc<Controller>) {
    tokio::spawn(watch_revoked(controller.clone()));
    tokio::spawn(check_expiry(controller.clone()));
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(handle_incoming(controller.clone(), incoming));
    }
}

async fn handle_incoming(controller: Arc<Controller>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(peer = %remote, reason = %e, "refused agent connection");
            return;
        }
    };
    let chain = connection
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok());
    let fingerprint = chain
        .as_ref()
        .and_then(|c| c.first())
        .map(|leaf| crate::fleet::fingerprint(leaf))
        .unwrap_or_default();
    let identity = match chain {
        Some(chain) => tls::peer_node(&chain),
        None => Err("no peer certificate".to_string()),
    };
    let (node, info) = match identity {
        Ok(x) => x,
        Err(reason) => {
            tracing::warn!(peer = %remote, %reason, "refused agent connection");
            connection.close(close::PROTOCOL_ERROR.into(), reason.as_bytes());
            return;
        }
    };
    controller.warn_if_expiring(&format!("node {node}'s"), &info);

    let conn_id = controller.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let (commands, mut command_rx) = mpsc::channel(16);
    lock(&controller.live).insert(
        conn_id,
        Live {
            node: node.clone(),
            info: info.clone(),
            connection: connection.clone(),
            commands,
        },
    );
    tracing::debug!(%node, peer = %remote, connection = conn_id, "handshake complete");
    // A revocation between the handshake's check and the insertion above would have been
    // missed by the watcher's sweep of live connections.
    if controller.revoked.is_revoked(&info.serial) {
        connection.close(close::REVOKED.into(), b"certificate revoked");
    }
    let outcome = run_session(
        &controller,
        &connection,
        conn_id,
        &node,
        &info,
        &fingerprint,
        &mut command_rx,
    )
    .await;
    lock(&controller.live).remove(&conn_id);
    let reason = match outcome {
        Ok(_)
            if connection
                .close_reason()
                .is_some_and(|e| e == quinn::ConnectionError::LocallyClosed)
                && controller.revoked.contains(&info.serial) =>
        {
            "certificate revoked".to_string()
        }
        Ok(reason) => reason,
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(%node, peer = %remote, %reason, "closing agent connection");
            connection.close(close::PROTOCOL_ERROR.into(), reason.as_bytes());
            reason
        }
    };
    let now = now_millis();
    if lock(&controller.registry).disconnected(&node, conn_id, &reason, now) {
        controller.transition();
        tracing::info!(%node, peer = %remote, %reason, "node offline");
        if let Some(store) = controller.store.get() {
            crate::fleet::disconnected(store, &node, &reason, now);
        }
    } else {
        // Replaced earlier, or ended before its hello.
        tracing::debug!(%node, peer = %remote, %reason, connection = conn_id, "agent connection ended");
    }
}

fn closed_reason(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(a) => {
            format!("closed by agent: {}", String::from_utf8_lossy(&a.reason))
        }
        quinn::ConnectionError::LocallyClosed => "closed by controller".into(),
        other => other.to_string(),
    }
}

async fn write_message(
    send: &mut quinn::SendStream,
    message: &ControllerToAgent,
) -> Result<(), SessionError> {
    let payload =
        protocol::encode(message).map_err(|e| SessionError::Stream(format!("encoding: {e}")))?;
    let frame = encode_frame(&payload, MAX_FRAME)?;
    send.write_all(&frame)
        .await
        .map_err(|e| SessionError::Stream(e.to_string()))
}

/// Runs one established connection; `Ok(reason)` when it ended without a protocol fault.
async fn run_session(
    controller: &Arc<Controller>,
    connection: &quinn::Connection,
    conn_id: u64,
    node: &str,
    info: &CertInfo,
    fingerprint: &str,
    command_rx: &mut mpsc::Receiver<(CommandKind, CommandReply)>,
) -> Result<String, SessionError> {
    let remote = connection.remote_address();
    // Who this connection is, for the store: fixed at hello, used by every report after.
    let mut identity: Option<crate::fleet::Identity> = None;
    let (mut send, mut recv) = tokio::select! {
        s = connection.accept_bi() => match s {
            Ok(s) => s,
            Err(e) => return Ok(closed_reason(&e)),
        },
        _ = tokio::time::sleep(HELLO_DEADLINE) => return Err(SessionError::NoHello),
    };
    let mut session = ControllerSession::new(node, env!("CARGO_PKG_VERSION"));
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut pending: HashMap<u64, CommandReply> = HashMap::new();
    let hello_timer = tokio::time::sleep(HELLO_DEADLINE);
    tokio::pin!(hello_timer);
    loop {
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => {
                let chunk = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) => break decoder
                        .finish()
                        .map(|()| "agent ended its stream".to_string())
                        .map_err(SessionError::from),
                    Err(quinn::ReadError::ConnectionLost(e)) => break Ok(closed_reason(&e)),
                    Err(e) => break Err(SessionError::Stream(e.to_string())),
                };
                decoder.push(&chunk.bytes);
                loop {
                    let frame = match decoder.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return Err(e.into()),
                    };
                    let event = match session.on_frame(&frame) {
                        Ok(ev) => ev,
                        Err(e) => {
                            let refusal = ControllerToAgent::Refused { reason: e.to_string() };
                            let _ = write_message(&mut send, &refusal).await;
                            return Err(e.into());
                        }
                    };
                    match event {
                        ControllerEvent::Established { hello, reply } => {
                            let conn = Connection {
                                id: conn_id,
                                remote: remote.to_string(),
                                agent_version: hello.agent_version.clone(),
                                protocol_version: session.version().unwrap_or_default(),
                                connected_at: now_millis(),
                                cert_serial: info.serial.clone(),
                                cert_not_after_unix: info.not_after_unix,
                                capabilities: hello.capabilities.clone(),
                            };
                            let now = now_millis();
                            let change = lock(&controller.registry).connected(node, conn, now);
                            let id = crate::fleet::Identity {
                                node: node.to_string(),
                                remote_ip: remote.ip().to_string(),
                                agent_version: hello.agent_version.clone(),
                                cert_fingerprint: fingerprint.to_string(),
                            };
                            if let Some(store) = controller.store.get() {
                                crate::fleet::connected(store, &id, now);
                            }
                            identity = Some(id);
                            match change {
                                Connected::Online => {
                                    controller.transition();
                                    tracing::info!(
                                        %node, peer = %remote, agent_version = %hello.agent_version,
                                        "node online"
                                    )
                                }
                                Connected::Replaced { old } => {
                                    tracing::info!(
                                        %node, peer = %remote, old_peer = %old.remote,
                                        old_connection = old.id,
                                        "newer connection of the node replaces the older one"
                                    );
                                    if let Some(l) = lock(&controller.live).get(&old.id) {
                                        l.connection.close(close::REPLACED.into(), b"replaced by a newer connection");
                                    }
                                }
                            }
                            write_message(&mut send, &reply).await?;
                            if hello.capabilities.iter().any(|c| c == CAP_INVENTORY) {
                                let request = session.request(CommandKind::Inventory)?;
                                if let ControllerToAgent::CommandRequest(r) = &request {
                                    let (tx, rx) = oneshot::channel();
                                    pending.insert(r.id, tx);
                                    tokio::spawn(record_inventory(
                                        controller.clone(),
                                        node.to_string(),
                                        conn_id,
                                        rx,
                                    ));
                                }
                                write_message(&mut send, &request).await?;
                            }
                        }
                        ControllerEvent::Report(report) => {
                            tracing::debug!(%node, seq = report.seq, "state report");
                            controller.metrics.state_reports.inc();
                            let now = now_millis();
                            let mut registry = lock(&controller.registry);
                            // The session state machine delivers reports only after the hello.
                            if let (Some(store), Some(id)) = (controller.store.get(), &identity) {
                                let previous = registry.get(node).and_then(|n| n.last_report.as_ref());
                                crate::fleet::reported(store, id, previous, &report, now);
                            }
                            registry.report(node, conn_id, report, now);
                        }
                        ControllerEvent::CommandDone { response, .. } => {
                            if let Some(reply) = pending.remove(&response.id) {
                                let _ = reply.send(Ok(response));
                            }
                        }
                    }
                }
            }
            Some((kind, reply)) = command_rx.recv() => {
                match session.request(kind) {
                    Ok(message) => {
                        if let ControllerToAgent::CommandRequest(r) = &message {
                            pending.insert(r.id, reply);
                        }
                        write_message(&mut send, &message).await?;
                    }
                    Err(e) => { let _ = reply.send(Err(format!("node {node}: {e}"))); }
                }
            }
            _ = &mut hello_timer, if session.version().is_none() => break Err(SessionError::NoHello),
        }
    }
}

/// Resolves with `true` once `check` holds, re-checking at each change of `changes` (never
/// polling), or `false` after `limit` or when the sender is gone.
pub async fn wait_until(
    mut changes: tokio::sync::watch::Receiver<u64>,
    check: impl Fn() -> bool,
    limit: Duration,
) -> bool {
    let wait = async {
        loop {
            if check() {
                return true;
            }
            if changes.changed().await.is_err() {
                return check();
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}

/// Stores the answer to the inventory request of connection `conn_id`.
async fn record_inventory(
    registry: Arc<Controller>,
    node: String,
    conn_id: u64,
    answer: oneshot::Receiver<Result<CommandResponse, String>>,
) {
    match answer.await {
        Ok(Ok(CommandResponse {
            outcome: CommandOutcome::Inventory(inventory),
            ..
        })) => {
            tracing::debug!(%node, interfaces = inventory.interfaces.len(), "inventory");
            lock(&registry.registry).inventory(&node, conn_id, inventory);
        }
        Ok(Ok(other)) => {
            tracing::warn!(%node, outcome = ?other.outcome, "the agent could not describe its interfaces")
        }
        Ok(Err(e)) => tracing::warn!(%node, "inventory: {e}"),
        // The connection ended first.
        Err(_) => {}
    }
}

type FileStamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &std::path::Path) -> FileStamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

#[derive(Debug)]
struct RevokedState {
    stamp: FileStamp,
    serials: std::collections::BTreeSet<String>,
    /// Increases with every change of `serials`.
    generation: u64,
}

/// `revoked.toml`, re-read whenever its inode, size or mtime changed. Every handshake checks
/// (one `stat`), so a connection attempt after `ca revoke` returned is refused; the watcher
/// checks every 250 ms and closes live connections. A broken file keeps the previous list and
/// is reported; `ca revoke` replaces the file atomically.
#[derive(Debug)]
pub struct RevokedFile {
    dir: CaDir,
    state: Mutex<RevokedState>,
}

impl RevokedFile {
    fn load(dir: CaDir) -> Result<RevokedFile, cadir::CaDirError> {
        let stamp = stamp(&dir.path(cadir::REVOKED));
        let serials = dir.revoked()?.serials();
        Ok(RevokedFile {
            dir,
            state: Mutex::new(RevokedState {
                stamp,
                serials,
                generation: 0,
            }),
        })
    }

    /// Re-reads the file if it changed; returns the generation of the list now in force.
    fn refresh(&self) -> u64 {
        let path = self.dir.path(cadir::REVOKED);
        let now = stamp(&path);
        let mut state = lock(&self.state);
        if now != state.stamp {
            state.stamp = now;
            match self.dir.revoked() {
                Ok(list) => {
                    state.serials = list.serials();
                    state.generation += 1;
                    tracing::info!(file = %path.display(), revoked = state.serials.len(), "revoked list reloaded");
                }
                Err(e) => tracing::error!("{e}; keeping the previous revoked list"),
            }
        }
        state.generation
    }

    fn contains(&self, serial: &str) -> bool {
        lock(&self.state).serials.contains(serial)
    }
}

impl Revocation for RevokedFile {
    fn is_revoked(&self, serial: &str) -> bool {
        self.refresh();
        self.contains(serial)
    }
}

/// Closes live connections whose certificates were revoked since the last look, whether the
/// watcher or a handshake noticed the change first.
async fn watch_revoked(controller: Arc<Controller>) {
    let mut seen = controller.revoked.refresh();
    let mut tick = tokio::time::interval(REVOKED_POLL);
    loop {
        tick.tick().await;
        let generation = controller.revoked.refresh();
        if generation != seen {
            seen = generation;
            controller.close_revoked();
        }
    }
}

async fn check_expiry(controller: Arc<Controller>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    tick.tick().await;
    loop {
        tick.tick().await;
        let infos: Vec<(String, CertInfo)> = lock(&controller.live)
            .values()
            .map(|l| (l.node.clone(), l.info.clone()))
            .collect();
        for (node, info) in infos {
            controller.warn_if_expiring(&format!("node {node}'s"), &info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn waiting_for_a_transition_is_notified_not_polled() {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let online = Arc::new(AtomicBool::new(false));
        let (flag, sender) = (online.clone(), tx.clone());
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A change that does not satisfy the check, then one that does.
            sender.send_modify(|g| *g += 1);
            flag.store(true, Ordering::SeqCst);
            sender.send_modify(|g| *g += 1);
        });
        let check = || online.load(Ordering::SeqCst);
        assert!(wait_until(rx, check, Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Nothing changes: false after the limit.
        let rx = tx.subscribe();
        assert!(!wait_until(rx, || false, Duration::from_millis(100)).await);
        // Already true: at once, without any change.
        let rx = tx.subscribe();
        assert!(wait_until(rx, || true, Duration::from_secs(10)).await);
    }
}
