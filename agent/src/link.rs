//! The agent's end of the controller link: one QUIC connection with mutual TLS, kept up with
//! jittered, capped exponential backoff; a hello, then state reports every period, and answers
//! to the controller's commands.
//!
//! The agent sends keep-alives and both ends close after the idle timeout, so a dead controller
//! or a cut network is noticed within idle + keep-alive (2.5 s by default: the agent's first
//! keep-alive after its last receive restarts its idle timer), then the agent reconnects.
//!
//! Against a hostile or stuck controller: every answer is fitted under the frame limit
//! ([`protocol::encode_response`] cuts long output with a marker, or answers `Failed`), so one
//! big result never ends the session; and every write has [`WRITE_TIMEOUT`], after which a
//! controller that stopped reading gets its connection closed and the agent reconnects.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodewarden_shared::framing::{FrameDecoder, FrameError, MAX_FRAME, encode_frame};
use nodewarden_shared::ops::{self as shared_ops, Operation, OperationResult};
use nodewarden_shared::protocol::{
    self, AgentToController, CAP_INVENTORY, CAP_METRICS_TLS, CAP_OPERATIONS, CAP_STATE_REPORT,
    CommandKind, CommandOutcome, CommandResponse, Fit, ServiceStatus, StateReport, close,
};
use nodewarden_shared::session::{AgentEvent, AgentSession};
use nodewarden_shared::tls;

use crate::config::ControllerLink;
use crate::nodestate::StateSource;
use crate::ops::Executor;

/// How long one state collection may take (a hung mount must not stall the link).
const COLLECT_DEADLINE: Duration = Duration::from_secs(2);
/// The first reconnect delay; doubles per failed attempt up to the configured cap.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// How long observing the declared services' states may add to a report (a `systemctl
/// is-active` that hangs, or a service busy with a long stop, leaves its state unknown).
const SERVICE_STATE_DEADLINE: Duration = Duration::from_secs(2);
/// How long collecting the inventory may take.
const INVENTORY_DEADLINE: Duration = Duration::from_secs(2);
/// How long one frame may take to leave. A write waits only for QUIC flow control, i.e. for
/// the controller to read; one that stopped reading must not wedge the link forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A controller must welcome the agent this soon after its hello (the controller gives an agent
/// the same 5 s to say hello).
const WELCOME_DEADLINE: Duration = Duration::from_secs(10);

/// What this agent announces: operations only when its config declares something to act on;
/// TLS on its metrics port when it serves it so (for the controller's service discovery).
fn capabilities(operations: bool, metrics_tls: bool) -> Vec<&'static str> {
    let mut caps = vec![
        CAP_STATE_REPORT,
        "command:ping",
        "command:report-state",
        CAP_INVENTORY,
    ];
    if operations {
        caps.push(CAP_OPERATIONS);
    }
    if metrics_tls {
        caps.push(CAP_METRICS_TLS);
    }
    caps
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

/// Jittered exponential backoff: attempt n waits a uniformly random time in
/// `[d/2, d]` with `d = min(cap, base * 2^n)` ("equal jitter"), so agents restarted together
/// spread out, yet never wait longer than the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The next delay, given a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX));
        let d = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        d / 2 + d.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Wait the longest from now on (e.g. after being replaced or revoked).
    pub fn to_cap(&mut self) {
        self.attempt = 31;
    }
}

pub struct LinkSettings {
    pub link: ControllerLink,
    client: Arc<quinn::crypto::rustls::QuicClientConfig>,
    pub state: Arc<StateSource>,
    /// Runs the declared operations; `None` when nothing is declared (no operations announced).
    pub executor: Option<Executor>,
    /// Where the inventory's host name (`<procfs>/sys/kernel/hostname`) and MACs
    /// (`<sysfs>/class/net`) are read.
    pub procfs: std::path::PathBuf,
    pub sysfs: std::path::PathBuf,
    /// `/metrics` is served over TLS (`--web.config.file`): announced as [`CAP_METRICS_TLS`].
    pub metrics_tls: bool,
}

fn read(path: &Path) -> Result<String, LinkError> {
    std::fs::read_to_string(path).map_err(|e| LinkError::File {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

impl LinkSettings {
    /// Reads the certificate files and builds the TLS configuration, so a broken file fails
    /// the start instead of every reconnect.
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
        let crypto = tls::client_config(
            &ca,
            Some(tls::Identity {
                cert_pem: &cert,
                key_pem: &key,
            }),
        )
        .map_err(|e| match &e {
            tls::TlsError::Pem {
                what: "client key", ..
            } => named(&link.key_file, e),
            tls::TlsError::Rustls(_) => LinkError::File {
                file: format!(
                    "{} and {}",
                    link.cert_file.display(),
                    link.key_file.display()
                ),
                message: e.to_string(),
            },
            _ => named(&link.cert_file, e),
        })?;
        let client = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(crypto))
            .map_err(|e| LinkError::Session(e.to_string()))?;
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
            link,
            client: Arc::new(client),
            state: Arc::new(state),
            executor,
            procfs,
            sysfs: sysfs.to_path_buf(),
            metrics_tls: false,
        })
    }
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Keeps the link up until `stop` is set; then closes the connection so the controller marks
/// the node offline at once instead of after the idle timeout.
pub async fn run(settings: LinkSettings, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = Backoff::new(BACKOFF_BASE, settings.link.reconnect_max);
    let address = settings.link.address.clone();
    loop {
        let outcome = connect_once(&settings, &mut backoff, &mut stop).await;
        settings
            .state
            .status
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
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
        let delay = backoff.next_delay(rand::random::<f64>());
        tracing::info!(controller = %address, ?delay, "reconnecting");
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
    settings: &LinkSettings,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection), LinkError> {
    let link = &settings.link;
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|e| LinkError::Session(format!("binding {bind}: {e}")))?;
    let mut config = quinn::ClientConfig::new(settings.client.clone());
    config.transport_config(Arc::new(transport(link)?));
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(addr, &link.server_name)
        .map_err(|e| LinkError::Session(format!("connecting to {addr}: {e}")))?
        .await
        .map_err(|e| LinkError::Session(format!("handshake with {addr} failed: {e}")))?;
    Ok((endpoint, connection))
}

async fn connect_once(
    settings: &LinkSettings,
    backoff: &mut Backoff,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<String, LinkError> {
    let link = &settings.link;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&link.address)
        .await
        .map_err(|e| LinkError::Session(format!("resolving {}: {e}", link.address)))?
        .collect();
    // Every resolved address in turn (e.g. ::1 then 127.0.0.1 for "localhost").
    let mut last_error = LinkError::Session(format!("{} resolves to no address", link.address));
    let mut established = None;
    for addr in addrs {
        tokio::select! {
            r = handshake(settings, addr) => match r {
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
        r = session(settings, &connection, backoff) => r,
        () = stopped(stop) => Ok("agent shutting down".into()),
    };
    if *stop.borrow() {
        connection.close(close::SHUTDOWN.into(), b"agent shutting down");
        // Give the close a moment to leave.
        let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
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

/// Sends the hello or a state report.
async fn write(
    send: &mut quinn::SendStream,
    what: &'static str,
    message: &AgentToController,
) -> Result<(), LinkError> {
    let payload = protocol::encode(message).map_err(|source| LinkError::Encode { what, source })?;
    send_payload(send, what, &payload).await
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

async fn collect(state: &Arc<StateSource>) -> Option<nodewarden_shared::protocol::StateReport> {
    use std::sync::atomic::Ordering;
    // A collection stuck on a hung mount keeps its blocking thread; never start a second one
    // beside it, so the pool the scrapes share cannot fill up with them.
    if state.collecting.swap(true, Ordering::AcqRel) {
        tracing::warn!("the previous node state collection is still running; report skipped");
        return None;
    }
    let source = state.clone();
    let task = tokio::task::spawn_blocking(move || {
        let report = source.collect();
        source.collecting.store(false, Ordering::Release);
        report
    });
    match tokio::time::timeout(COLLECT_DEADLINE, task).await {
        Ok(Ok(report)) => Some(report),
        Ok(Err(e)) => {
            tracing::warn!("collecting node state: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("collecting node state took over {COLLECT_DEADLINE:?}; report skipped");
            None
        }
    }
}

/// Fills the report's service states from the executor (status of each declared service, the
/// same check an operator's `status` runs), within [`SERVICE_STATE_DEADLINE`]; a service not
/// observed in time stays `unknown`.
async fn observe_services(executor: &Executor, report: &mut StateReport) {
    let observed = tokio::time::timeout(SERVICE_STATE_DEADLINE, executor.service_states()).await;
    let Ok(states) = observed else {
        tracing::warn!("observing the declared services took over {SERVICE_STATE_DEADLINE:?}");
        return;
    };
    for service in &mut report.services {
        if let Some((_, state)) = states.iter().find(|(name, _)| *name == service.name) {
            service.status = service_status(*state);
        }
    }
}

fn service_status(state: shared_ops::ServiceState) -> ServiceStatus {
    match state {
        shared_ops::ServiceState::Running => ServiceStatus::Running,
        shared_ops::ServiceState::Stopped => ServiceStatus::Stopped,
        shared_ops::ServiceState::Unknown => ServiceStatus::Unknown,
    }
}

async fn send_report(
    settings: &LinkSettings,
    session: &mut AgentSession,
    send: &mut quinn::SendStream,
) -> Result<(), LinkError> {
    if let Some(mut report) = collect(&settings.state).await {
        if let Some(executor) = &settings.executor {
            observe_services(executor, &mut report).await;
        }
        let Some(message) = session.report(report) else {
            return Ok(());
        };
        match write(send, "state report", &message).await {
            // One report that cannot be sent (too large) is skipped, not the session.
            Err(e @ (LinkError::Encode { .. } | LinkError::Frame { .. })) => {
                tracing::warn!(error = %e, "state report not sent");
            }
            sent => sent?,
        }
    }
    Ok(())
}

/// Runs one operation off the session loop (a stop may take its grace period), so reports and
/// other commands go on meanwhile. Without declarations everything is refused.
async fn run_operation(executor: Option<Executor>, op: Operation) -> CommandOutcome {
    let result = match executor {
        Some(executor) => executor.execute(&op).await,
        None => OperationResult::refused(
            Some(op),
            "this node's agent config declares no services or storage devices",
        ),
    };
    CommandOutcome::Operation(result)
}

async fn inventory(settings: &LinkSettings) -> CommandOutcome {
    let (procfs, sysfs) = (settings.procfs.clone(), settings.sysfs.clone());
    let task = tokio::task::spawn_blocking(move || crate::inventory::collect(&procfs, &sysfs));
    match tokio::time::timeout(INVENTORY_DEADLINE, task).await {
        Ok(Ok(inventory)) => CommandOutcome::Inventory(inventory),
        Ok(Err(e)) => CommandOutcome::Failed {
            message: format!("collecting the inventory: {e}"),
        },
        Err(_) => CommandOutcome::Failed {
            message: format!("collecting the inventory took over {INVENTORY_DEADLINE:?}"),
        },
    }
}

async fn session(
    settings: &LinkSettings,
    connection: &quinn::Connection,
    backoff: &mut Backoff,
) -> Result<String, LinkError> {
    let remote = connection.remote_address();
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| LinkError::Session(describe_close(&e)))?;
    let mut session = AgentSession::new();
    write(
        &mut send,
        "hello",
        &session.hello(
            env!("CARGO_PKG_VERSION"),
            &capabilities(settings.executor.is_some(), settings.metrics_tls),
        ),
    )
    .await?;
    // Answers of operations running in their own tasks.
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<CommandResponse>();
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut tick = tokio::time::interval(settings.link.report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A controller that takes the connection but never welcomes the agent (stuck, or not a
    // nodewarden controller) must not hold it: after the deadline the agent closes and retries.
    let welcome_deadline = tokio::time::sleep(WELCOME_DEADLINE);
    tokio::pin!(welcome_deadline);
    loop {
        tokio::select! {
            _ = &mut welcome_deadline, if session.welcome().is_none() => {
                connection.close(close::PROTOCOL_ERROR.into(), b"no welcome from the controller");
                return Err(LinkError::Session(format!(
                    "controller {remote} sent no welcome within {WELCOME_DEADLINE:?}"
                )));
            }
            chunk = recv.read_chunk(64 * 1024, true) => {
                let chunk = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) => return Ok("controller ended the stream".into()),
                    Err(quinn::ReadError::ConnectionLost(e)) => {
                        if let quinn::ConnectionError::ApplicationClosed(a) = &e {
                            let code = a.error_code.into_inner();
                            if code == u64::from(close::REPLACED) || code == u64::from(close::REVOKED) {
                                backoff.to_cap();
                            }
                        }
                        return Ok(describe_close(&e));
                    }
                    Err(e) => return Err(LinkError::Session(e.to_string())),
                };
                decoder.push(&chunk.bytes);
                while let Some(frame) = decoder
                    .next_frame()
                    .map_err(|e| LinkError::Session(format!("from controller {remote}: {e}")))?
                {
                    let event = session
                        .on_frame(&frame)
                        .map_err(|e| LinkError::Session(format!("from controller {remote}: {e}")))?;
                    match event {
                        AgentEvent::Welcomed(w) => {
                            tracing::info!(
                                node = %w.node, controller = %remote,
                                protocol_version = w.version,
                                controller_version = %w.controller_version,
                                "connected to the controller"
                            );
                            backoff.reset();
                            settings.state.status.connected.store(true, std::sync::atomic::Ordering::Relaxed);
                            send_report(settings, &mut session, &mut send).await?;
                            tick.reset();
                        }
                        AgentEvent::Command(request) => {
                            tracing::debug!(id = request.id, kind = ?request.kind, "command");
                            let outcome = match request.kind {
                                CommandKind::Ping => CommandOutcome::Done,
                                CommandKind::ReportState => {
                                    send_report(settings, &mut session, &mut send).await?;
                                    CommandOutcome::Done
                                }
                                CommandKind::Inventory => inventory(settings).await,
                                CommandKind::Operation(op) => {
                                    let (id, tx) = (request.id, answers_tx.clone());
                                    let executor = settings.executor.clone();
                                    tokio::spawn(async move {
                                        let outcome = run_operation(executor, op).await;
                                        let _ = tx.send(CommandResponse { id, outcome });
                                    });
                                    continue;
                                }
                            };
                            answer(&mut send, CommandResponse { id: request.id, outcome }).await?;
                        }
                    }
                }
            }
            _ = tick.tick(), if session.welcome().is_some() => {
                send_report(settings, &mut session, &mut send).await?;
            }
            Some(response) = answers.recv() => {
                answer(&mut send, response).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_announced_only_with_declarations() {
        assert!(!capabilities(false, false).contains(&CAP_OPERATIONS));
        assert!(capabilities(true, false).contains(&CAP_OPERATIONS));
        assert!(!capabilities(true, false).contains(&CAP_METRICS_TLS));
        assert!(capabilities(false, true).contains(&CAP_METRICS_TLS));
        assert!(capabilities(false, false).contains(&CAP_INVENTORY));
    }

    #[tokio::test]
    async fn without_declarations_an_operation_is_refused() {
        let op = Operation::service("x", shared_ops::ServiceAction::Start);
        let CommandOutcome::Operation(r) = run_operation(None, op.clone()).await else {
            panic!("not an operation outcome");
        };
        assert!(r.is_refused());
        assert_eq!(r.operation, Some(op));
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(0.999_999).as_millis(), 399);
        assert_eq!(b.next_delay(0.5), Duration::from_millis(600));
        for _ in 0..100 {
            let d = b.next_delay(1.0);
            assert!(d <= Duration::from_secs(5), "{d:?}");
        }
        assert_eq!(b.next_delay(0.0), Duration::from_millis(2500));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        b.to_cap();
        assert_eq!(b.next_delay(1.0), Duration::from_secs(5));
    }
}
