//! The controller's shared state: the [`Registry`] of nodes, the store handle, the table of live
//! agent connections with their command queues, and the transition signal that waiters (a woken
//! node's agent) await. The link endpoint (`link.rs`) fills it; the API, the pusher, service
//! discovery and the action paths read it. Transport-free: a live connection is known by its
//! command queue and a [`LinkCloser`], never by a QUIC type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewarden_shared::ca::CertInfo;
use nodewarden_shared::ops::{ActionPath, Operation, OperationResult};
use nodewarden_shared::protocol::{CommandKind, CommandOutcome, CommandResponse};
use tokio::sync::{mpsc, oneshot, watch};

use crate::actions::{AgentPath, LinkFailure};
use crate::metrics::{CommandLabels, ControllerMetrics};
use crate::registry::Registry;
use crate::store::StoreHandle;

/// How long a command may wait for room in a connection's queue before it is refused (not
/// sent). A session that stops draining its queue (a peer that stops reading wedges its writes)
/// never holds an action for longer than this.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// Commands queued per connection.
pub const COMMAND_QUEUE: usize = 16;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    (now_millis() / 1000) as i64
}

/// A poisoned lock still guards consistent data here (every critical section is a few
/// assignments), so it is taken rather than propagated as a panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a command got no answer. [`CommandError::outcome_unknown`] tells whether the node may
/// have carried it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("node {node} is not connected")]
    NotConnected { node: String },
    #[error("node {node}: its connection did not take the command within {waited:?} (not sent)")]
    Busy { node: String, waited: Duration },
    #[error("node {node}: the session refused the command: {reason}")]
    Refused { node: String, reason: String },
    #[error("node {node}: the connection ended before the response")]
    Ended { node: String },
    #[error("node {node}: no response within {timeout:?}")]
    Timeout { node: String, timeout: Duration },
}

impl CommandError {
    /// The command may have reached the node and run: the connection ended or the answer did
    /// not come in time after it was queued.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            CommandError::Ended { .. } | CommandError::Timeout { .. }
        )
    }
}

/// The session's answer to one queued command.
pub type CommandReply = oneshot::Sender<Result<CommandResponse, CommandError>>;
/// What a session's command queue carries.
pub type QueuedCommand = (CommandKind, CommandReply);

/// In a cluster: the nodes other controllers hold, by node, with their holder and its peer URL.
pub type Elsewhere = std::collections::BTreeMap<String, crate::store::RemoteHolder>;

/// A live connection as the transport lets the shared state handle it.
pub trait LinkCloser: Send + Sync {
    /// Closes it with an application close code.
    fn close(&self, code: u32, reason: &[u8]);
    /// Datagrams received on it so far (its liveness).
    fn received(&self) -> u64;
}

/// A live connection as the shared state knows it.
pub struct Live {
    pub node: String,
    pub info: CertInfo,
    pub commands: mpsc::Sender<QueuedCommand>,
    pub closer: Arc<dyn LinkCloser>,
}

/// State shared by the link tasks, the HTTP API, the pusher and the action paths.
pub struct Controller {
    pub registry: Mutex<Registry>,
    /// Where transitions and reports are persisted; absent in tests that need no store.
    store: OnceLock<StoreHandle>,
    live: Mutex<HashMap<u64, Live>>,
    next_conn_id: AtomicU64,
    /// Bumped on every online/offline transition, so waiters (a woken node's agent) are
    /// notified instead of polling.
    transitions: watch::Sender<u64>,
    /// Link and command figures for `/metrics`.
    pub metrics: ControllerMetrics,
    /// Fragment inventories, audits and clean-up dry runs (issue 17).
    pub fragments: Mutex<crate::fragments::FragmentState>,
    /// Bumped on every new fragment inventory (the audit task awaits it).
    pub fragments_changed: watch::Sender<u64>,
    /// Recent state reports per node, bounded (the console's charts; `history.rs`).
    pub history: Mutex<crate::history::History>,
    /// While an operator drains this controller: why its links are closed (every agent moves
    /// to another controller of its list, and new connections are turned away).
    draining: Mutex<Option<String>>,
    /// In a cluster, while this controller has no lease authority (its database is away): why
    /// its links are closed and new ones turned away.
    no_authority: Mutex<Option<String>>,
    /// Connections closed because another controller took their node's lease, with the reason.
    lease_lost: Mutex<HashMap<u64, String>>,
    /// In a cluster: whether this controller holds the pusher lease. Always true otherwise.
    pusher: std::sync::atomic::AtomicBool,
    /// In a cluster: the nodes other controllers hold, with their holder (the last lease step).
    elsewhere: Mutex<Arc<Elsewhere>>,
}

impl Controller {
    /// Shared state over `registry` (empty, or restored from the store).
    pub fn new(registry: Registry) -> Arc<Controller> {
        Arc::new(Controller {
            registry: Mutex::new(registry),
            store: OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            transitions: watch::Sender::new(0),
            metrics: ControllerMetrics::default(),
            fragments: Mutex::new(Default::default()),
            fragments_changed: watch::Sender::new(0),
            history: Mutex::new(Default::default()),
            draining: Mutex::new(None),
            no_authority: Mutex::new(None),
            lease_lost: Mutex::new(HashMap::new()),
            pusher: std::sync::atomic::AtomicBool::new(true),
            elsewhere: Mutex::new(Arc::default()),
        })
    }

    /// The store handle, once attached.
    pub fn store(&self) -> Option<&StoreHandle> {
        self.store.get()
    }

    /// Persists every transition and report from now on.
    pub fn attach_store(&self, store: StoreHandle) {
        let _ = self.store.set(store);
    }

    /// A new connection id, unique for this process.
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a live connection (before its session runs).
    pub fn add_live(&self, conn_id: u64, live: Live) {
        lock(&self.live).insert(conn_id, live);
    }

    /// Forgets a live connection (its session ended).
    pub fn remove_live(&self, conn_id: u64) {
        lock(&self.live).remove(&conn_id);
    }

    /// Closes connection `conn_id` if it is still live.
    pub fn close_live(&self, conn_id: u64, code: u32, reason: &[u8]) {
        if let Some(l) = lock(&self.live).get(&conn_id) {
            l.closer.close(code, reason);
        }
    }

    /// Starts draining (asked by `actor`): closes every live link with
    /// [`close::DRAINING`](nodewarden_shared::protocol::close::DRAINING), so its agent links to
    /// another controller of its list, and turns new connections away until [`Self::resume`].
    /// The number of links closed.
    pub fn drain(&self, actor: &str) -> usize {
        *lock(&self.draining) = Some(format!("controller draining (asked by {actor})"));
        let live = lock(&self.live);
        for l in live.values() {
            l.closer.close(
                nodewarden_shared::protocol::close::DRAINING,
                b"controller draining",
            );
        }
        live.len()
    }

    /// Stops draining: agents may link again. Whether it was draining.
    pub fn resume(&self) -> bool {
        lock(&self.draining).take().is_some()
    }

    /// Why this controller is draining, while it is.
    pub fn draining(&self) -> Option<String> {
        lock(&self.draining).clone()
    }

    /// Why a new link is turned away now, with the close code: a drain, or no lease authority.
    pub fn turned_away(&self) -> Option<(u32, String)> {
        use nodewarden_shared::protocol::close;
        if let Some(reason) = self.draining() {
            return Some((close::DRAINING, reason));
        }
        lock(&self.no_authority)
            .clone()
            .map(|reason| (close::NO_AUTHORITY, reason))
    }

    /// Lease authority lost (`Some(reason)`): every live link is closed and new ones turned
    /// away until it is back (`None`). The number of links closed.
    pub fn set_no_authority(&self, reason: Option<String>) -> usize {
        let lost = reason.is_some();
        *lock(&self.no_authority) = reason;
        if !lost {
            return 0;
        }
        let live = lock(&self.live);
        for l in live.values() {
            l.closer.close(
                nodewarden_shared::protocol::close::NO_AUTHORITY,
                b"controller without its database",
            );
        }
        live.len()
    }

    /// Another controller took `node`'s lease: closes its link here if that was established
    /// before `before_ms` (a newer one claims the lease anew). Whether a link was closed.
    pub fn lease_taken(&self, node: &str, before_ms: u64) -> bool {
        let stale = lock(&self.registry)
            .get(node)
            .and_then(|n| n.connection.as_ref().map(|c| (c.id, c.connected_at)))
            .filter(|(_, at)| *at <= before_ms);
        let Some((id, _)) = stale else {
            return false;
        };
        lock(&self.lease_lost).insert(
            id,
            "another controller of the cluster holds the node's link now".to_string(),
        );
        self.close_live(
            id,
            nodewarden_shared::protocol::close::LEASE_LOST,
            b"another controller holds the link",
        );
        true
    }

    /// Why connection `conn_id` was closed by this controller, if for a lease or for lost
    /// authority (taken once, by the connection's end).
    pub fn closed_for_lease(&self, conn_id: u64) -> Option<String> {
        lock(&self.lease_lost)
            .remove(&conn_id)
            .or_else(|| lock(&self.no_authority).clone())
    }

    /// Whether this controller pushes the fleet's aggregates (in a cluster: holds the pusher
    /// lease).
    pub fn is_pusher(&self) -> bool {
        self.pusher.load(Ordering::Relaxed)
    }

    pub fn set_pusher(&self, pusher: bool) {
        self.pusher.store(pusher, Ordering::Relaxed);
    }

    /// In a cluster: the nodes other controllers hold now, with their holder.
    pub fn elsewhere(&self) -> Arc<Elsewhere> {
        lock(&self.elsewhere).clone()
    }

    pub fn set_elsewhere(&self, map: Elsewhere) {
        *lock(&self.elsewhere) = Arc::new(map);
    }

    /// `(connection id, datagrams received so far)` of every live connection.
    pub fn live_received(&self) -> Vec<(u64, u64)> {
        lock(&self.live)
            .iter()
            .map(|(id, l)| (*id, l.closer.received()))
            .collect()
    }

    /// `(connection id, node, certificate)` of every live connection.
    pub fn live_certificates(&self) -> Vec<(u64, String, CertInfo)> {
        lock(&self.live)
            .iter()
            .map(|(id, l)| (*id, l.node.clone(), l.info.clone()))
            .collect()
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

    /// A receiver that sees every online/offline transition from now on (the live stream).
    pub fn watch_transitions(&self) -> watch::Receiver<u64> {
        self.transitions.subscribe()
    }

    /// Wakes every waiter: a node went online or offline.
    pub fn transition(&self) {
        self.transitions.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Sends a command to a node's live connection and awaits its response. The queue is
    /// bounded and so is the wait for room in it ([`ENQUEUE_TIMEOUT`]): a stuck session refuses
    /// commands (not sent) instead of holding them.
    pub async fn command(
        &self,
        node: &str,
        kind: CommandKind,
        timeout: Duration,
    ) -> Result<CommandResponse, CommandError> {
        // The registry knows which of possibly two live connections (one being replaced) is
        // the node's current one.
        let current = lock(&self.registry)
            .get(node)
            .and_then(|n| n.connection.as_ref().map(|c| c.id));
        let sender = current
            .and_then(|id| lock(&self.live).get(&id).map(|l| l.commands.clone()))
            .ok_or_else(|| CommandError::NotConnected {
                node: node.to_string(),
            })?;
        let started = std::time::Instant::now();
        let labels = CommandLabels::new(kind.capability(), "agent");
        let (tx, rx) = oneshot::channel();
        match sender.send_timeout((kind, tx), ENQUEUE_TIMEOUT).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                return Err(CommandError::Busy {
                    node: node.to_string(),
                    waited: ENQUEUE_TIMEOUT,
                });
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                return Err(CommandError::NotConnected {
                    node: node.to_string(),
                });
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => {
                self.metrics
                    .command_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                r
            }
            Ok(Err(_)) => Err(CommandError::Ended {
                node: node.to_string(),
            }),
            Err(_) => Err(CommandError::Timeout {
                node: node.to_string(),
                timeout,
            }),
        }
    }
}

/// Resolves with `true` once `check` holds, re-checking at each change of `changes` (never
/// polling), or `false` after `limit` or when the sender is gone.
pub async fn wait_until(
    mut changes: watch::Receiver<u64>,
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

/// The agent link as [`crate::actions`] sees it.
pub struct LinkAgent {
    pub controller: Arc<Controller>,
    /// How long one operation may take over the link before its outcome counts as unknown.
    pub operation_timeout: Duration,
}

impl AgentPath for LinkAgent {
    fn is_online(&self, node: &str) -> bool {
        self.controller.is_online(node)
    }

    async fn execute(&self, node: &str, op: &Operation) -> Result<OperationResult, LinkFailure> {
        let response = self
            .controller
            .command(
                node,
                CommandKind::Operation(op.clone()),
                self.operation_timeout,
            )
            .await
            .map_err(|e| {
                if e.outcome_unknown() {
                    LinkFailure::Unknown(e.to_string())
                } else {
                    LinkFailure::NotSent(e.to_string())
                }
            })?;
        match response.outcome {
            CommandOutcome::Operation(result) => Ok(result),
            // The agent answered that it could not carry the command out: nothing ran.
            CommandOutcome::Failed { message } => {
                Err(LinkFailure::NotSent(format!("node {node}: {message}")))
            }
            other => Err(LinkFailure::Unknown(format!(
                "node {node} answered an operation with {other:?}"
            ))),
        }
    }

    async fn wait_online(&self, node: &str, limit: Duration) -> bool {
        self.controller.wait_online(node, limit).await
    }

    fn observe(&self, path: ActionPath, elapsed: Duration) {
        let labels = match path {
            // The link observes its own commands (`Controller::command`).
            ActionPath::Agent => return,
            ActionPath::Ssh => {
                CommandLabels::new(nodewarden_shared::protocol::CAP_OPERATIONS, "ssh")
            }
            ActionPath::WakeOnLan => CommandLabels::new("wake", "wol"),
        };
        self.controller
            .metrics
            .command_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn waiting_for_a_transition_is_notified_not_polled() {
        let (tx, rx) = watch::channel(0u64);
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

    struct NoClose;
    impl LinkCloser for NoClose {
        fn close(&self, _: u32, _: &[u8]) {}
        fn received(&self) -> u64 {
            0
        }
    }

    fn connection(id: u64) -> crate::registry::Connection {
        crate::registry::Connection {
            id,
            remote: "127.0.0.1:1".into(),
            agent_version: "t".into(),
            protocol_version: 1,
            connected_at: 0,
            cert_serial: "s".into(),
            cert_not_after_unix: 0,
            capabilities: vec![],
        }
    }

    fn cert() -> CertInfo {
        CertInfo {
            common_name: Some("n".into()),
            serial: "s".into(),
            not_before_unix: 0,
            not_after_unix: 0,
            client_auth: true,
            server_auth: false,
            is_ca: false,
        }
    }

    /// A session that stops draining its queue: commands are refused as not sent once the
    /// queue is full, after the enqueue timeout, and never hang.
    #[tokio::test]
    async fn a_stuck_session_refuses_commands_instead_of_holding_them() {
        let c = Controller::new(Registry::new());
        lock(&c.registry).connected("n", connection(1), 0);
        let (tx, _rx) = mpsc::channel(COMMAND_QUEUE);
        c.add_live(
            1,
            Live {
                node: "n".into(),
                info: cert(),
                commands: tx,
                closer: Arc::new(NoClose),
            },
        );
        // The queue fills; the session never answers: each of these times out as unknown.
        let mut waits = Vec::new();
        for _ in 0..COMMAND_QUEUE {
            let c = c.clone();
            waits.push(tokio::spawn(async move {
                c.command("n", CommandKind::Ping, Duration::from_millis(200))
                    .await
            }));
        }
        for w in waits {
            let e = w.await.unwrap().unwrap_err();
            assert!(e.outcome_unknown(), "{e}");
        }
        // One more: no room, refused as not sent.
        let e = c
            .command("n", CommandKind::Ping, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::Busy { .. }), "{e}");
        assert!(!e.outcome_unknown());
        let e = c
            .command("other", CommandKind::Ping, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::NotConnected { .. }), "{e}");
    }
}
