//! The agent's end of the controller link: one QUIC connection with mutual TLS, kept up with
//! jittered, capped exponential backoff. The link's rules (hello and welcome deadline, the
//! report timer, what each command needs, what a close code means for the backoff) live in
//! the I/O-free [`AgentSession`] and [`Backoff`] of `shared/`; this file only reads, feeds
//! the session and carries out its effects. Collection, inventory and operations run beside
//! the loop, so frame reading never waits on them.
//!
//! The link speaks for a [`Node`]: the real agent's ([`node::AgentNode`]) or a simulated one
//! (the fleet simulator runs thousands of these clients in one process over a few shared
//! [`quinn::Endpoint`]s).
//!
//! The agent sends keep-alives and both ends close after the idle timeout, so a dead controller
//! or a cut network is noticed within idle + keep-alive (3.5 s by default: the agent's first
//! keep-alive after its last receive restarts its idle timer), then the agent reconnects.
//!
//! Against a hostile or stuck controller: every answer is fitted under the frame limit
//! ([`protocol::encode_response`] cuts long output with a marker, or answers `Failed`), so one
//! big result never ends the session; and every write has [`WRITE_TIMEOUT`], after which a
//! controller that stopped reading gets its connection closed and the agent reconnects.

pub mod node;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodewarden_shared::framing::{FrameError, MAX_FRAME, encode_frame};
use nodewarden_shared::ops::Operation;
use nodewarden_shared::protocol::{
    self, AgentToController, CommandOutcome, CommandResponse, Fit, StateReport, close,
};
use nodewarden_shared::session::{
    AgentEffect, AgentSession, AgentTimers, Backoff, FAILOVER_SPREAD, Failover, Retry,
};
use nodewarden_shared::tls;
use tokio::sync::{mpsc, watch};

use crate::config::{ControllerAddress, ControllerLink};
use crate::nodestate::StateSource;
use crate::ops::Executor;

/// The first reconnect delay; doubles per failed attempt up to the configured cap.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// How long one frame may take to leave. A write waits only for QUIC flow control, i.e. for
/// the controller to read; one that stopped reading must not wedge the link forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A controller must welcome the agent this soon after its hello (the controller gives an agent
/// 5 s to say hello).
const WELCOME_DEADLINE: Duration = Duration::from_secs(10);

/// Work a [`Node`] does beside the session loop.
pub type Work<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the link asks of the node it speaks for.
pub trait Node: Send + Sync + 'static {
    /// What the hello announces.
    fn capabilities(&self) -> Vec<&'static str>;
    /// The node's state for a report; `None` when it could not be collected (skipped).
    fn collect_report(&self) -> Work<Option<StateReport>>;
    /// The answer to the controller's inventory request.
    fn inventory(&self) -> Work<CommandOutcome>;
    /// Runs a declared operation (or refuses it).
    fn run_operation(&self, op: Operation) -> Work<CommandOutcome>;
    /// The link came up (welcomed) or went down.
    fn connected(&self, up: bool);
    /// A message left for the controller (the simulator counts reports).
    fn sent(&self, _message: &AgentToController) {}
    /// The fragment inventories this node publishes (`[fragments]`), sent once the controller
    /// asks for them; `None`: none (and [`protocol::CAP_FRAGMENTS`] not announced).
    fn fragment_inventories(&self) -> Option<Arc<crate::fragment_task::Inventories>> {
        None
    }
    /// The node's other metrics endpoints ([`protocol::CAP_ENDPOINTS`], announced by a node
    /// that has them to look for); `None` when they could not be looked at.
    fn endpoints(&self) -> Work<Option<Vec<protocol::ScrapeEndpoint>>> {
        Box::pin(std::future::ready(Some(Vec::new())))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Session(String),
    #[error(
        "sending to the controller stalled for over {0:?} (it stopped reading); closing the connection"
    )]
    WriteStalled(Duration),
    #[error("sending to the controller: {0}")]
    Write(#[source] quinn::WriteError),
    #[error("encoding a {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: protocol::EncodingError,
    },
    #[error("framing a {what}: {source}")]
    Frame {
        what: &'static str,
        #[source]
        source: FrameError,
    },
}

/// How to reach the controller: its address and name, the link's timers and the TLS client
/// configuration (built once, so a broken certificate fails the start, not every reconnect).
#[derive(Clone)]
pub struct Client {
    pub link: ControllerLink,
    config: quinn::ClientConfig,
    /// Connections go out from this endpoint; `None`: a fresh one per connection (the agent).
    endpoint: Option<quinn::Endpoint>,
}

impl Client {
    /// From PEM texts (the CA, this node's certificate and key).
    pub fn new(
        link: ControllerLink,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Client, LinkError> {
        let crypto = tls::client_config(ca_pem, Some(tls::Identity { cert_pem, key_pem }))?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(crypto))
            .map_err(|e| LinkError::Session(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(transport(&link)?));
        Ok(Client {
            link,
            config,
            endpoint: None,
        })
    }

    /// Connections go out from `endpoint` (shared with other clients) instead of a fresh one.
    pub fn with_endpoint(mut self, endpoint: quinn::Endpoint) -> Client {
        self.endpoint = Some(endpoint);
        self
    }

    fn timers(&self) -> AgentTimers {
        AgentTimers {
            report_interval: self.link.report_interval,
            welcome_deadline: WELCOME_DEADLINE,
        }
    }
}

/// The real agent's link: the client and this machine as its node.
pub struct LinkSettings {
    pub client: Client,
    pub node: node::AgentNode,
}

fn read(path: &Path) -> Result<String, LinkError> {
    std::fs::read_to_string(path).map_err(|e| LinkError::File {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

impl LinkSettings {
    /// Reads the certificate files and builds the TLS configuration, so a broken file fails
    /// the start instead of every reconnect; errors name the file at fault.
    pub fn new(
        link: ControllerLink,
        state: StateSource,
        executor: Option<Executor>,
        sysfs: &Path,
    ) -> Result<LinkSettings, LinkError> {
        let ca = read(&link.ca_file)?;
        let cert = read(&link.cert_file)?;
        let key = read(&link.key_file)?;
        let named = |file: &Path, e: tls::TlsError| LinkError::File {
            file: file.display().to_string(),
            message: e.to_string(),
        };
        tls::client_config(&ca, None).map_err(|e| named(&link.ca_file, e))?;
        let client = Client::new(link.clone(), &ca, &cert, &key).map_err(|e| match e {
            LinkError::Tls(
                e @ tls::TlsError::Pem {
                    what: "client key", ..
                },
            ) => named(&link.key_file, e),
            LinkError::Tls(e @ tls::TlsError::Rustls(_)) => LinkError::File {
                file: format!(
                    "{} and {}",
                    link.cert_file.display(),
                    link.key_file.display()
                ),
                message: e.to_string(),
            },
            LinkError::Tls(e) => named(&link.cert_file, e),
            other => other,
        })?;
        if let Ok(info) = nodewarden_shared::ca::inspect_pem(&cert) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let days = info.expires_in(now) / 86400;
            if days < 30 {
                tracing::warn!(
                    file = %link.cert_file.display(),
                    days_left = days,
                    "node certificate expires soon"
                );
            }
        }
        let procfs = state.procfs.clone();
        Ok(LinkSettings {
            client,
            node: node::AgentNode {
                state: Arc::new(state),
                executor,
                procfs,
                sysfs: sysfs.to_path_buf(),
                metrics_tls: false,
                fragments: None,
                ray: None,
            },
        })
    }
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The real agent's link, until `stop` is set.
pub async fn run(settings: LinkSettings, stop: watch::Receiver<bool>) {
    run_client(&settings.client, Arc::new(settings.node), stop).await
}

/// Keeps the link of `node` up until `stop` is set; then closes the connection so the
/// controller marks the node offline at once instead of after the idle timeout.
pub async fn run_client<N: Node>(client: &Client, node: Arc<N>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(BACKOFF_BASE, client.link.reconnect_max);
    let mut failover = Failover::new(
        client.link.controllers.len(),
        client.link.prefer,
        rand::random::<f64>(),
    );
    loop {
        let controller = &client.link.controllers[failover.current()];
        let address = &controller.address;
        let outcome = connect_once(
            client,
            controller,
            &node,
            (&mut backoff, &mut failover),
            &mut stop,
        )
        .await;
        node.connected(false);
        match outcome {
            Ok(reason) => {
                tracing::warn!(controller = %address, %reason, "link to the controller closed")
            }
            Err(e) => {
                tracing::warn!(controller = %address, reason = %e, "link to the controller failed")
            }
        }
        if *stop.borrow() {
            return;
        }
        // The next controller at once (spread a little) while some of the list is untried;
        // after a whole round of failures, the backoff delay.
        let delay = match failover.failed() {
            Retry::Next => FAILOVER_SPREAD.mul_f64(rand::random::<f64>()),
            Retry::Backoff => backoff.next_delay(rand::random::<f64>()),
        };
        let next = &client.link.controllers[failover.current()].address;
        tracing::info!(controller = %next, ?delay, "reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

fn transport(link: &ControllerLink) -> Result<quinn::TransportConfig, LinkError> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        link.idle_timeout
            .try_into()
            .map_err(|e| LinkError::Session(format!("idle timeout: {e}")))?,
    ));
    t.keep_alive_interval(Some(link.keep_alive));
    t.max_concurrent_bidi_streams(0u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    // Frames are small; keep per-connection buffers small too (a peer cannot make us hold
    // more than this unread).
    t.stream_receive_window((4 * MAX_FRAME as u32).into());
    t.receive_window((4 * MAX_FRAME as u32).into());
    t.send_window(4 * MAX_FRAME as u64);
    // The link never reads datagrams: no buffer for them (quinn's default is 1.25 MB).
    t.datagram_receive_buffer_size(None);
    // Ask the controller (ACK frequency extension) to acknowledge each keep-alive at once
    // instead of after its ack-delay timer: one wake-up per keep-alive on the controller instead
    // of two, which is most of a fleet's steady cost there (docs/perf.md, fleet simulator).
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(0u32.into());
    t.ack_frequency_config(Some(ack));
    Ok(t)
}

fn describe_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(a) => format!(
            "controller closed the connection: {} ({})",
            close::describe(a.error_code.into_inner()),
            String::from_utf8_lossy(&a.reason)
        ),
        other => format!("connection lost: {other}"),
    }
}

/// A QUIC handshake with one address of the controller.
async fn handshake(
    client: &Client,
    server_name: &str,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection), LinkError> {
    let endpoint = match &client.endpoint {
        Some(shared) => shared.clone(),
        None => {
            let bind: SocketAddr = if addr.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            quinn::Endpoint::client(bind)
                .map_err(|e| LinkError::Session(format!("binding {bind}: {e}")))?
        }
    };
    let connection = endpoint
        .connect_with(client.config.clone(), addr, server_name)
        .map_err(|e| LinkError::Session(format!("connecting to {addr}: {e}")))?
        .await
        .map_err(|e| LinkError::Session(format!("handshake with {addr} failed: {e}")))?;
    Ok((endpoint, connection))
}

async fn connect_once<N: Node>(
    client: &Client,
    controller: &ControllerAddress,
    node: &Arc<N>,
    (backoff, failover): (&mut Backoff, &mut Failover),
    stop: &mut watch::Receiver<bool>,
) -> Result<String, LinkError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&controller.address)
        .await
        .map_err(|e| LinkError::Session(format!("resolving {}: {e}", controller.address)))?
        .collect();
    // Every resolved address in turn (e.g. ::1 then 127.0.0.1 for "localhost").
    let mut last_error =
        LinkError::Session(format!("{} resolves to no address", controller.address));
    let mut established = None;
    for addr in addrs {
        tokio::select! {
            r = handshake(client, &controller.server_name, addr) => match r {
                Ok(c) => {
                    established = Some(c);
                    break;
                }
                Err(e) => last_error = e,
            },
            () = stopped(stop) => return Ok("agent shutting down".into()),
        }
    }
    let Some((endpoint, connection)) = established else {
        return Err(last_error);
    };
    let result = tokio::select! {
        r = session(client, node, &connection, (backoff, failover)) => r,
        () = stopped(stop) => Ok("agent shutting down".into()),
    };
    if *stop.borrow() {
        connection.close(close::SHUTDOWN.into(), b"agent shutting down");
        if client.endpoint.is_none() {
            // Give the close a moment to leave.
            let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
        }
    } else if let Err(LinkError::WriteStalled(_)) = &result {
        connection.close(
            close::SHUTDOWN.into(),
            b"agent reconnecting: the controller stopped reading",
        );
    } else {
        connection.close(close::SHUTDOWN.into(), b"agent reconnecting");
    }
    result
}

/// Sends one frame, giving up after [`WRITE_TIMEOUT`].
async fn send_payload(
    send: &mut quinn::SendStream,
    what: &'static str,
    payload: &[u8],
) -> Result<(), LinkError> {
    let frame =
        encode_frame(payload, MAX_FRAME).map_err(|source| LinkError::Frame { what, source })?;
    match tokio::time::timeout(WRITE_TIMEOUT, send.write_all(&frame)).await {
        Ok(written) => written.map_err(LinkError::Write),
        Err(_) => Err(LinkError::WriteStalled(WRITE_TIMEOUT)),
    }
}

/// Sends the hello or a state report; a report that cannot be encoded or framed (too large) is
/// skipped, not the session.
async fn write(send: &mut quinn::SendStream, message: &AgentToController) -> Result<(), LinkError> {
    let what = match message {
        AgentToController::Hello(_) => "hello",
        AgentToController::StateReport(_) => "state report",
        AgentToController::CommandResponse(_) => "command answer",
        AgentToController::FragmentInventory(_) => "fragment inventory",
        AgentToController::Endpoints(_) => "endpoint list",
        AgentToController::FragmentDelta(_) => "fragment delta",
    };
    let result = match protocol::encode(message) {
        Ok(payload) => send_payload(send, what, &payload).await,
        Err(source) => Err(LinkError::Encode { what, source }),
    };
    match result {
        Err(e @ (LinkError::Encode { .. } | LinkError::Frame { .. }))
            if matches!(message, AgentToController::StateReport(_)) =>
        {
            tracing::warn!(error = %e, "state report not sent");
            Ok(())
        }
        other => other,
    }
}

/// Sends the answer to a command, fitted under the frame limit: long texts cut with a marker,
/// or, if nothing fits, `Failed` for the same id. Only the stream's failure (or a stall) ends the
/// session, never the answer's size or encoding.
async fn answer(send: &mut quinn::SendStream, response: CommandResponse) -> Result<(), LinkError> {
    let id = response.id;
    let payload = match protocol::encode_response(response, MAX_FRAME) {
        Ok((payload, Fit::Whole)) => payload,
        Ok((payload, Fit::Truncated { omitted, encoded })) => {
            tracing::warn!(
                id,
                encoded_bytes = encoded,
                omitted_bytes = omitted,
                limit = MAX_FRAME,
                "answer over the link's frame limit: its longest texts were cut"
            );
            payload
        }
        Ok((payload, Fit::Replaced { encoded })) => {
            tracing::warn!(
                id,
                encoded_bytes = encoded,
                limit = MAX_FRAME,
                "answer over the link's frame limit even with its texts cut: answered as failed"
            );
            payload
        }
        Err(e) => {
            let failed = CommandResponse {
                id,
                outcome: CommandOutcome::Failed {
                    message: format!("the agent could not encode its answer: {}", e.source),
                },
            };
            tracing::warn!(id, error = %e, cause = %e.source, "answered as failed");
            match protocol::encode_response(failed, MAX_FRAME) {
                Ok((payload, _)) => payload,
                Err(e) => {
                    tracing::error!(id, error = %e, cause = %e.source, "command left unanswered");
                    return Ok(());
                }
            }
        }
    };
    match send_payload(send, "command answer", &payload).await {
        // Not with MAX_FRAME (the answer was fitted under it); never the session's end anyway.
        Err(e @ LinkError::Frame { .. }) => {
            tracing::error!(id, error = %e, "command left unanswered");
            Ok(())
        }
        sent => sent,
    }
}

/// A controller that does not take deltas gets a device's whole inventory for changes seen
/// between scans at most this often (a scan's or a scrub's inventory goes at once).
pub const WHOLE_FOR_CHANGES_EVERY: Duration = Duration::from_secs(30);

/// What this connection sent of the node's fragment inventories: the generation per device.
#[derive(Default)]
struct FragmentsSent {
    /// The controller asked for them (the session's `SendFragments`) and the node has some.
    changes: Option<watch::Receiver<u64>>,
    sent: std::collections::BTreeMap<u32, u64>,
    /// The controller takes deltas ([`protocol::CAP_FRAGMENT_DELTAS`]).
    deltas: bool,
    /// When each device's whole inventory was last sent.
    whole_at: std::collections::BTreeMap<u32, Instant>,
    /// A whole inventory held back by [`WHOLE_FOR_CHANGES_EVERY`] goes then.
    retry_at: Option<Instant>,
}

/// The deltas that bring generation `from` to `published.generation`, each encoded, when the
/// device keeps them all and each fits a message; `None`: send the whole inventory.
fn delta_chain(
    device: u32,
    from: u64,
    published: &crate::fragment_task::Published,
) -> Option<Vec<protocol::DeltaMessage>> {
    if from < published.whole_generation {
        return None;
    }
    let mut at = from;
    let mut out = Vec::new();
    for (base, generation, delta) in &published.deltas {
        if *generation <= at {
            continue;
        }
        if *base != at {
            return None;
        }
        let data = delta.encode().ok()?;
        if data.len() > protocol::INVENTORY_PART {
            return None;
        }
        out.push(protocol::DeltaMessage {
            device_id: device,
            base_generation: *base,
            generation: *generation,
            data,
        });
        at = *generation;
    }
    (at == published.generation).then_some(out)
}

/// Sends every device's inventory newer than what this connection sent: as deltas when the
/// controller takes them and they reach, else whole, in parts (for changes between scans at
/// most every [`WHOLE_FOR_CHANGES_EVERY`] per device).
async fn send_fragments(
    send: &mut quinn::SendStream,
    inventories: &crate::fragment_task::Inventories,
    state: &mut FragmentsSent,
) -> Result<(), LinkError> {
    let FragmentsSent {
        sent,
        deltas,
        whole_at,
        retry_at,
        ..
    } = state;
    *retry_at = None;
    for (device, published) in inventories.snapshot() {
        let generation = published.generation;
        let last = sent.get(&device).copied();
        if last == Some(generation) {
            continue;
        }
        if let Some(last) = last {
            if *deltas && let Some(chain) = delta_chain(device, last, &published) {
                for message in chain {
                    write(send, &AgentToController::FragmentDelta(message)).await?;
                }
                tracing::debug!(device, from = last, generation, "fragment deltas sent");
                sent.insert(device, generation);
                continue;
            }
            // Only changes between scans since the last whole one this connection sent.
            if !*deltas
                && last >= published.whole_generation
                && let Some(at) = whole_at.get(&device)
            {
                let due = *at + WHOLE_FOR_CHANGES_EVERY;
                if Instant::now() < due {
                    *retry_at = Some(retry_at.map_or(due, |r| r.min(due)));
                    continue;
                }
            }
        }
        // Encoded part by part as it is sent: the agent keeps only the decoded inventory and
        // one part (docs/perf.md).
        let inventory = published.inventory.clone();
        drop(published);
        let parts = match inventory.parts(generation) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(device, error = %e, "fragment inventory not encoded");
                sent.insert(device, generation);
                continue;
            }
        };
        let bytes = parts.total_len();
        for part in parts {
            write(send, &AgentToController::FragmentInventory(part)).await?;
        }
        tracing::debug!(device, generation, bytes, "fragment inventory sent");
        sent.insert(device, generation);
        whole_at.insert(device, Instant::now());
    }
    Ok(())
}

/// Work done beside the loop, back for the session.
enum Done {
    Report(Option<StateReport>),
    Endpoints(Option<Vec<protocol::ScrapeEndpoint>>),
    Command(u64, CommandOutcome),
}

/// Runs `work` beside the loop; its result comes back through `done` (dropped if the session
/// ended meanwhile).
fn beside<T: Send + 'static>(
    work: Work<T>,
    done: &mpsc::UnboundedSender<Done>,
    wrap: impl FnOnce(T) -> Done + Send + 'static,
) {
    let done = done.clone();
    tokio::spawn(async move {
        let _ = done.send(wrap(work.await));
    });
}

/// One established connection: read → feed the session → carry out its effects, until the
/// connection ends.
async fn session<N: Node>(
    client: &Client,
    node: &Arc<N>,
    connection: &quinn::Connection,
    (backoff, failover): (&mut Backoff, &mut Failover),
) -> Result<String, LinkError> {
    let remote = connection.remote_address();
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| LinkError::Session(describe_close(&e)))?;
    let mut session = AgentSession::new(
        env!("CARGO_PKG_VERSION"),
        &node.capabilities(),
        client.timers(),
        Instant::now(),
    );
    let (done_tx, mut done) = mpsc::unbounded_channel::<Done>();
    let inventories = node.fragment_inventories();
    let mut fragments = FragmentsSent::default();
    loop {
        while let Some(effect) = session.poll_effect() {
            match effect {
                AgentEffect::Send(message) => {
                    write(&mut send, &message).await?;
                    node.sent(&message);
                }
                AgentEffect::Answer(response) => answer(&mut send, response).await?,
                AgentEffect::Welcomed(w) => {
                    tracing::info!(
                        node = %w.node, controller = %remote,
                        protocol_version = w.version,
                        controller_version = %w.controller_version,
                        "connected to the controller"
                    );
                    backoff.reset();
                    failover.established();
                    node.connected(true);
                }
                AgentEffect::CollectReport => beside(node.collect_report(), &done_tx, Done::Report),
                AgentEffect::CollectEndpoints => {
                    beside(node.endpoints(), &done_tx, Done::Endpoints)
                }
                AgentEffect::CollectInventory { id } => {
                    beside(node.inventory(), &done_tx, move |o| Done::Command(id, o))
                }
                AgentEffect::SendFragments => {
                    if let Some(inventories) = &inventories {
                        let mut changes = inventories.subscribe();
                        changes.mark_unchanged();
                        fragments.changes = Some(changes);
                        // Asked again (a delta did not apply on the controller): all whole.
                        fragments.sent.clear();
                        send_fragments(&mut send, inventories, &mut fragments).await?;
                    }
                }
                AgentEffect::FragmentDeltasTaken => fragments.deltas = true,
                AgentEffect::RunOperation { id, operation } => {
                    tracing::debug!(id, ?operation, "operation");
                    beside(node.run_operation(operation), &done_tx, move |o| {
                        Done::Command(id, o)
                    })
                }
                AgentEffect::Close { code, error } => {
                    let reason = format!("from controller {remote}: {error}");
                    connection.close(code.into(), error.to_string().as_bytes());
                    return Err(LinkError::Session(reason));
                }
            }
        }
        let timeout = session.poll_timeout();
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(c)) => session.handle_data(&c.bytes, Instant::now()),
                Ok(None) => return Ok("controller ended the stream".into()),
                Err(quinn::ReadError::ConnectionLost(e)) => {
                    if let quinn::ConnectionError::ApplicationClosed(a) = &e {
                        backoff.on_closed_by_controller(a.error_code.into_inner());
                    }
                    return Ok(describe_close(&e));
                }
                Err(e) => return Err(LinkError::Session(e.to_string())),
            },
            () = sleep_until(timeout) => session.handle_timeout(Instant::now()),
            Some(()) = changed(&mut fragments.changes) => {
                if let Some(inventories) = &inventories {
                    send_fragments(&mut send, inventories, &mut fragments).await?;
                }
            }
            () = sleep_until(fragments.retry_at) => {
                if let Some(inventories) = &inventories {
                    send_fragments(&mut send, inventories, &mut fragments).await?;
                }
            }
            Some(work) = done.recv() => match work {
                Done::Report(report) => session.report_collected(report),
                Done::Endpoints(list) => session.endpoints_collected(list),
                Done::Command(id, outcome) => session.command_done(id, outcome),
            },
        }
    }
}

/// The next change of the node's inventories; never without a receiver (or once its sender is
/// gone).
async fn changed(changes: &mut Option<watch::Receiver<u64>>) -> Option<()> {
    match changes {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; forever when there is no timer.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment_task::Published;
    use nodewarden_shared::fragments::{DeviceInventory, InventoryDelta};

    fn published(whole: u64, generation: u64, deltas: &[(u64, u64)]) -> Published {
        Published {
            generation,
            whole_generation: whole,
            inventory: Arc::new(DeviceInventory::default()),
            present: 0,
            corrupt: 0,
            deltas: deltas
                .iter()
                .map(|&(b, g)| {
                    let mut d = InventoryDelta::default();
                    d.removed.insert(g as u32);
                    (b, g, Arc::new(d))
                })
                .collect(),
        }
    }

    #[test]
    fn deltas_go_only_from_the_generation_sent_and_when_all_are_kept() {
        let p = published(3, 6, &[(3, 4), (4, 5), (5, 6)]);
        let chain = delta_chain(9, 4, &p).expect("5 and 6 follow 4");
        assert_eq!(
            chain
                .iter()
                .map(|m| (m.device_id, m.base_generation, m.generation))
                .collect::<Vec<_>>(),
            [(9, 4, 5), (9, 5, 6)]
        );
        let first = InventoryDelta::decode(&chain[0].data).unwrap();
        assert!(first.removed.contains(5));
        assert_eq!(delta_chain(9, 3, &p).map(|c| c.len()), Some(3));
        // Sent before the last whole publication (a scan): the whole inventory.
        assert!(delta_chain(9, 2, &p).is_none());
        // The oldest deltas dropped: the whole inventory.
        let p = published(3, 6, &[(4, 5), (5, 6)]);
        assert!(delta_chain(9, 3, &p).is_none());
        assert_eq!(delta_chain(9, 4, &p).map(|c| c.len()), Some(2));
    }
}
