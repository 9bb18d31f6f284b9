//! The agent link endpoint: a QUIC listener that authenticates nodes by their certificates,
//! runs one [`ControllerSession`] per connection and keeps the [`Registry`] current.
//!
//! Liveness: agents send keep-alives (every second by default); a connection from which no
//! datagram has arrived for the idle timeout (2.5 s by default) is closed by one sweep over all
//! connections every 250 ms ([`Liveness`]), and the node goes offline then. QUIC's own idle
//! timer stays as a backstop but cannot be the rule: it is at least three probe timeouts, and a
//! controller that sends almost nothing ack-eliciting keeps a busy start's RTT estimate for the
//! connection's life (the fleet simulator saw cut agents offline only after 8 s, some never).
//! (Why the controller sends no keep-alives: see `config`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodewarden_shared::ca::CertInfo;
use nodewarden_shared::framing::{FrameError, MAX_FRAME, encode_frame};
use nodewarden_shared::protocol::{
    self, CommandOutcome, CommandResponse, ControllerToAgent, close,
};
use nodewarden_shared::session::{ControllerEffect, ControllerSession, Liveness, ProtocolError};
use nodewarden_shared::tls::{self, Revocation};
use quinn::rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::cadir::{self, CaDir};
use crate::registry::{Connected, Connection};
use crate::state::{
    COMMAND_QUEUE, CommandError, CommandReply, Controller, LinkCloser, Live, QueuedCommand, lock,
    now_millis, now_unix,
};

/// An agent must say hello this soon after the handshake.
const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// How often the revoked list's file is checked for changes (a `stat`).
const REVOKED_POLL: Duration = Duration::from_millis(250);
/// How often live certificates are checked for coming expiry.
const EXPIRY_CHECK: Duration = Duration::from_secs(3600);
/// One frame written to an agent must be taken by its flow control within this: a peer that
/// stops reading ends its session instead of wedging it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error("stream error: {0}")]
    Stream(String),
    #[error("the agent took no data for {WRITE_TIMEOUT:?} (it stopped reading)")]
    WriteTimeout,
}

#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub listen: SocketAddr,
    pub ca_dir: PathBuf,
    pub idle_timeout: Duration,
    pub keep_alive: Option<Duration>,
    pub expiry_warning_days: u32,
}

/// A quinn connection as the shared state closes it.
struct QuicCloser(quinn::Connection);

impl LinkCloser for QuicCloser {
    fn close(&self, code: u32, reason: &[u8]) {
        self.0.close(code.into(), reason);
    }

    fn received(&self) -> u64 {
        self.0.stats().udp_rx.datagrams
    }
}

/// The bound endpoint with what its sessions need beyond the shared state.
pub struct Link {
    pub endpoint: quinn::Endpoint,
    revoked: Arc<RevokedFile>,
    expiry_warning_days: u32,
    idle_timeout: Duration,
}

fn warn_if_expiring(expiry_warning_days: u32, what: &str, info: &CertInfo) {
    let left = info.expires_in(now_unix());
    if left < i64::from(expiry_warning_days) * 86400 {
        tracing::warn!(
            serial = %info.serial,
            days_left = left / 86400,
            "{what} certificate expires soon (not after {} UTC unix time)",
            info.not_after_unix
        );
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
    // The link never reads datagrams: no buffer for them (quinn's default is 1.25 MB).
    t.datagram_receive_buffer_size(None);
    Ok(t)
}

/// Loads the CA material and binds the endpoint. Fails before binding when the CA directory or
/// revoked list is unusable.
pub fn bind(settings: &LinkSettings) -> Result<Link, LinkError> {
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
    let days = settings.expiry_warning_days;
    match nodewarden_shared::ca::inspect_pem(&ca_pem) {
        Ok(info) => warn_if_expiring(days, "CA", &info),
        Err(e) => tracing::warn!("CA certificate: {e}"),
    }
    match server_pair.info() {
        Ok(info) => warn_if_expiring(days, "server", &info),
        Err(e) => tracing::warn!("server certificate: {e}"),
    }

    let crypto = tls::server_config(&ca_pem, Arc::new(server_pair), revoked.clone())?;
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
    Ok(Link {
        endpoint,
        revoked,
        expiry_warning_days: days,
        idle_timeout: settings.idle_timeout,
    })
}

/// What every session of one endpoint shares.
struct Endpoint {
    controller: Arc<Controller>,
    revoked: Arc<RevokedFile>,
    expiry_warning_days: u32,
    /// No packet for this long ends a connection ([`Liveness`]).
    silence: Duration,
    /// Connections the liveness sweep closed, so their end is told as such.
    silenced: Mutex<std::collections::HashSet<u64>>,
}

/// The link serving on its own thread ([`start`]).
pub struct Running {
    /// Closing it ends the link (and its thread).
    pub endpoint: quinn::Endpoint,
    /// Resolves when the link's thread has ended.
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// Binds and serves the link on a thread of its own with a current-thread runtime: every
/// packet's work (QUIC, the sessions) stays on one core without cross-thread wake-ups, and a busy
/// API, console or store never delays a keep-alive's processing (a late one reads as an agent
/// gone offline). Fails, like [`bind`], before anything is served.
pub fn start(settings: &LinkSettings, controller: Arc<Controller>) -> Result<Running, LinkError> {
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let settings = settings.clone();
    std::thread::Builder::new()
        .name("link".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async move {
                    // Bound here: the endpoint's driver runs on this runtime.
                    match bind(&settings) {
                        Ok(link) => {
                            let _ = bound_tx.send(Ok(link.endpoint.clone()));
                            serve(link, controller).await;
                        }
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                        }
                    }
                }),
                Err(e) => {
                    let _ = bound_tx.send(Err(LinkError::Quic(format!("link runtime: {e}"))));
                }
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| LinkError::Quic(format!("starting the link thread: {e}")))?;
    let endpoint = bound
        .recv()
        .map_err(|_| LinkError::Quic("the link thread ended at start".into()))??;
    Ok(Running { endpoint, done })
}

/// Accepts agents until the endpoint is closed; also watches the revoked list.
pub async fn serve(link: Link, controller: Arc<Controller>) {
    let shared = Arc::new(Endpoint {
        controller,
        revoked: link.revoked,
        expiry_warning_days: link.expiry_warning_days,
        silence: link.idle_timeout,
        silenced: Mutex::default(),
    });
    tokio::spawn(watch_revoked(shared.clone()));
    tokio::spawn(sweep_silent(shared.clone()));
    tokio::spawn(check_expiry(shared.clone()));
    while let Some(incoming) = link.endpoint.accept().await {
        tokio::spawn(handle_incoming(shared.clone(), incoming));
    }
}

async fn handle_incoming(shared: Arc<Endpoint>, incoming: quinn::Incoming) {
    let controller = &shared.controller;
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
    warn_if_expiring(shared.expiry_warning_days, &format!("node {node}'s"), &info);

    let conn_id = controller.next_connection_id();
    let (commands, mut command_rx) = mpsc::channel(COMMAND_QUEUE);
    controller.add_live(
        conn_id,
        Live {
            node: node.clone(),
            info: info.clone(),
            commands,
            closer: Arc::new(QuicCloser(connection.clone())),
        },
    );
    tracing::debug!(%node, peer = %remote, connection = conn_id, "handshake complete");
    // A revocation between the handshake's check and the insertion above would have been
    // missed by the watcher's sweep of live connections.
    if shared.revoked.is_revoked(&info.serial) {
        connection.close(close::REVOKED.into(), b"certificate revoked");
    }
    // Checked after the insertion for the same reason: a drain (or a loss of lease authority)
    // closes the live ones.
    if let Some((code, reason)) = controller.turned_away() {
        connection.close(code.into(), reason.as_bytes());
    }
    let peer = Peer {
        controller,
        conn_id,
        node: &node,
        info: &info,
        fingerprint: &fingerprint,
        remote,
    };
    let outcome = run_session(&peer, &connection, &mut command_rx).await;
    controller.remove_live(conn_id);
    let locally_closed = connection
        .close_reason()
        .is_some_and(|e| e == quinn::ConnectionError::LocallyClosed);
    let silenced = lock(&shared.silenced).remove(&conn_id);
    let for_lease = controller.closed_for_lease(conn_id);
    let reason = match outcome {
        Ok(_) if locally_closed && silenced => {
            format!("no packet from the agent for {:?}", shared.silence)
        }
        Ok(_) if locally_closed && shared.revoked.contains(&info.serial) => {
            "certificate revoked".to_string()
        }
        Ok(reason) if locally_closed => controller.draining().or(for_lease).unwrap_or(reason),
        Ok(reason) => reason,
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(%node, peer = %remote, %reason, "closing agent connection");
            connection.close(close::PROTOCOL_ERROR.into(), reason.as_bytes());
            reason
        }
    };
    if crate::fleet::disconnected(controller, &node, conn_id, &reason, now_millis()) {
        tracing::info!(%node, peer = %remote, %reason, "node offline");
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
    match tokio::time::timeout(WRITE_TIMEOUT, send.write_all(&frame)).await {
        Ok(written) => written.map_err(|e| SessionError::Stream(e.to_string())),
        Err(_) => Err(SessionError::WriteTimeout),
    }
}

/// Sleeps until `at`; forever when there is no timer.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What one connection is, for the registry and the store.
struct Peer<'a> {
    controller: &'a Arc<Controller>,
    conn_id: u64,
    node: &'a str,
    info: &'a CertInfo,
    fingerprint: &'a str,
    remote: SocketAddr,
}

/// Runs one established connection: read → feed the [`ControllerSession`] → carry out its
/// effects; `Ok(reason)` when it ended without a protocol fault.
async fn run_session(
    peer: &Peer<'_>,
    connection: &quinn::Connection,
    command_rx: &mut mpsc::Receiver<QueuedCommand>,
) -> Result<String, SessionError> {
    let mut session: ControllerSession<CommandReply> = ControllerSession::new(
        peer.node,
        env!("CARGO_PKG_VERSION"),
        HELLO_DEADLINE,
        Instant::now(),
    );
    let (mut send, mut recv) = tokio::select! {
        s = connection.accept_bi() => match s {
            Ok(s) => s,
            Err(e) => return Ok(closed_reason(&e)),
        },
        () = sleep_until(session.poll_timeout()) => {
            return Err(SessionError::Protocol(ProtocolError::NoHello(HELLO_DEADLINE)));
        }
    };
    let result = drive(peer, &mut session, &mut send, &mut recv, command_rx).await;
    // Callers still waiting learn that the connection ended (their reply dropped).
    drop(session.take_waiting());
    result
}

async fn drive(
    peer: &Peer<'_>,
    session: &mut ControllerSession<CommandReply>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    command_rx: &mut mpsc::Receiver<QueuedCommand>,
) -> Result<String, SessionError> {
    // Who this connection is, for the store: fixed at hello, used by every report after.
    let mut identity: Option<crate::fleet::Identity> = None;
    // Fragment inventories arrive in parts; one in progress at a time.
    let mut parts = nodewarden_shared::fragments::InventoryAssembler::default();
    // Whole inventories were asked for again after a delta that did not apply.
    let mut resend_asked = false;
    loop {
        while let Some(effect) = session.poll_effect() {
            match effect {
                ControllerEffect::Established(hello) => {
                    identity = Some(established(peer, session, &hello));
                }
                ControllerEffect::Send(message) => {
                    let refusal = matches!(message, ControllerToAgent::Refused { .. });
                    match write_message(send, &message).await {
                        // The refusal is a courtesy before the close that follows.
                        Err(_) if refusal => {}
                        written => written?,
                    }
                }
                ControllerEffect::Report(report) => {
                    tracing::debug!(node = %peer.node, seq = report.seq, "state report");
                    peer.controller.metrics.state_reports.inc();
                    // The session state machine delivers reports only after the hello.
                    if let Some(id) = &identity {
                        crate::fleet::reported(
                            peer.controller,
                            id,
                            peer.conn_id,
                            report,
                            now_millis(),
                        );
                    }
                }
                ControllerEffect::Inventory(response) => inventory(peer, response),
                ControllerEffect::Endpoints(list) => {
                    tracing::debug!(node = %peer.node, endpoints = ?list, "endpoint list");
                    crate::fleet::endpoints(peer.controller, peer.node, peer.conn_id, list);
                }
                ControllerEffect::FragmentPart(part) => match (part.generation, parts.push(part)) {
                    (generation, Ok(Some(inv))) => {
                        resend_asked = false;
                        crate::fleet::fragment_inventory(
                            peer.controller,
                            peer.node,
                            inv,
                            generation,
                            now_millis(),
                        );
                    }
                    (_, Ok(None)) => {}
                    // A bad inventory is dropped, not the session: the next one replaces it.
                    (_, Err(e)) => {
                        tracing::warn!(node = %peer.node, error = %e, "fragment inventory dropped")
                    }
                },
                ControllerEffect::FragmentDelta(message) => {
                    let device = message.device_id;
                    if let Err(e) = crate::fleet::fragment_delta(
                        peer.controller,
                        peer.node,
                        message,
                        now_millis(),
                    ) {
                        // Whole inventories again, once until one arrives (the deltas in
                        // flight meanwhile are refused the same way).
                        if !resend_asked {
                            tracing::warn!(node = %peer.node, device, error = %e,
                                "fragment delta not applied: asking for whole inventories");
                            resend_asked = true;
                            session.resend_fragments();
                        }
                    }
                }
                ControllerEffect::Reply {
                    reply, response, ..
                } => {
                    let _ = reply.send(Ok(response));
                }
                ControllerEffect::Close { error, .. } => return Err(error.into()),
            }
        }
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(c)) => session.handle_data(&c.bytes),
                Ok(None) => {
                    return session
                        .handle_end()
                        .map(|()| "agent ended its stream".to_string())
                        .map_err(SessionError::from);
                }
                Err(quinn::ReadError::ConnectionLost(e)) => return Ok(closed_reason(&e)),
                Err(e) => return Err(SessionError::Stream(e.to_string())),
            },
            Some((kind, reply)) = command_rx.recv() => {
                if let Err((reply, e)) = session.request(kind, reply) {
                    let _ = reply.send(Err(CommandError::Refused {
                        node: peer.node.to_string(),
                        reason: e.to_string(),
                    }));
                }
            }
            () = sleep_until(session.poll_timeout()) => session.handle_timeout(Instant::now()),
        }
    }
}

/// The hello was accepted: the node is online on this connection (replacing an older one).
fn established(
    peer: &Peer<'_>,
    session: &ControllerSession<CommandReply>,
    hello: &nodewarden_shared::protocol::Hello,
) -> crate::fleet::Identity {
    let (controller, node, remote) = (peer.controller, peer.node, peer.remote);
    let conn = Connection {
        id: peer.conn_id,
        remote: remote.to_string(),
        agent_version: hello.agent_version.clone(),
        protocol_version: session.version().unwrap_or_default(),
        connected_at: now_millis(),
        cert_serial: peer.info.serial.clone(),
        cert_not_after_unix: peer.info.not_after_unix,
        capabilities: hello.capabilities.clone(),
    };
    let id = crate::fleet::Identity {
        node: node.to_string(),
        remote_ip: remote.ip().to_string(),
        agent_version: hello.agent_version.clone(),
        cert_fingerprint: peer.fingerprint.to_string(),
    };
    match crate::fleet::connected(controller, &id, conn, now_millis()) {
        Connected::Online => tracing::info!(
            %node, peer = %remote, agent_version = %hello.agent_version,
            "node online"
        ),
        Connected::Replaced { old } => {
            tracing::info!(
                %node, peer = %remote, old_peer = %old.remote,
                old_connection = old.id,
                "newer connection of the node replaces the older one"
            );
            controller.close_live(old.id, close::REPLACED, b"replaced by a newer connection");
        }
    }
    id
}

/// Stores the answer to the session's inventory request.
fn inventory(peer: &Peer<'_>, response: CommandResponse) {
    let node = peer.node;
    match response.outcome {
        CommandOutcome::Inventory(inventory) => {
            tracing::debug!(%node, interfaces = inventory.interfaces.len(), "inventory");
            crate::fleet::inventory(peer.controller, node, peer.conn_id, inventory);
        }
        other => {
            tracing::warn!(%node, outcome = ?other, "the agent could not describe its interfaces")
        }
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
async fn watch_revoked(shared: Arc<Endpoint>) {
    let mut seen = shared.revoked.refresh();
    let mut tick = tokio::time::interval(REVOKED_POLL);
    loop {
        tick.tick().await;
        let generation = shared.revoked.refresh();
        if generation != seen {
            seen = generation;
            for (id, node, info) in shared.controller.live_certificates() {
                if shared.revoked.contains(&info.serial) {
                    tracing::warn!(
                        %node,
                        serial = %info.serial,
                        connection = id,
                        "certificate revoked: closing the node's live connection"
                    );
                    shared
                        .controller
                        .close_live(id, close::REVOKED, b"certificate revoked");
                }
            }
        }
    }
}

/// How often every live connection's liveness is looked at: a silent agent is offline at most
/// this long after its silence limit.
const SWEEP: Duration = Duration::from_millis(250);

/// Closes connections silent for the silence limit ([`Liveness`]): one task for the whole
/// endpoint, a counter read per connection per look, instead of a timer per connection.
async fn sweep_silent(shared: Arc<Endpoint>) {
    // Per connection: its liveness and the sweep that last saw it live.
    let mut seen: HashMap<u64, (Liveness, u64)> = HashMap::new();
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for sweep in 0u64.. {
        tick.tick().await;
        let now = Instant::now();
        for (id, received) in shared.controller.live_received() {
            let (liveness, last) = seen
                .entry(id)
                .or_insert_with(|| (Liveness::new(shared.silence, received, now), sweep));
            *last = sweep;
            if liveness.is_silent(received, now) {
                lock(&shared.silenced).insert(id);
                shared.controller.close_live(
                    id,
                    close::SHUTDOWN,
                    b"no packet within the idle timeout",
                );
            }
        }
        // Connections that ended since the last sweep drop out.
        seen.retain(|_, (_, last)| *last == sweep);
    }
}

async fn check_expiry(shared: Arc<Endpoint>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    tick.tick().await;
    loop {
        tick.tick().await;
        for (_, node, info) in shared.controller.live_certificates() {
            warn_if_expiring(shared.expiry_warning_days, &format!("node {node}'s"), &info);
        }
    }
}
