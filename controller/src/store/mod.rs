//! Fleet state and the audit log, persisted to MySQL/MariaDB (`database.url = mysql://…`) or to
//! an embedded SQLite file `<data_dir>/nodewarden.db` when no URL is configured.
//!
//! The controller serves from memory; the store keeps the latest state of every node and
//! storage device and the queue of events, and a writer task flushes what changed in one
//! transaction per interval. While the database is away, state keeps coalescing and events
//! queue up to a bound (past it, drops are counted and logged); when it returns, the latest
//! state and every queued event are written.
//!
//! ```ignore
//! let store = Store::open(StoreConfig::new(data_dir)).await?;   // migrates, marks all offline
//! let handle = store.handle();                                  // cheap, cloneable, sync
//! handle.node_connected(info, SystemTime::now())?;
//! handle.node_seen("node-1", SystemTime::now())?;
//! store.metrics().register(&mut registry);
//! store.close().await?;                                         // final flush
//! ```

mod buffer;
mod db;
mod lease;
mod sql;
mod types;
mod url;
mod writer;

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use buffer::{Queued, RejectedNode};
pub use db::{Backend, PUSHER_LEASE};
pub use lease::{ClusterConfig, LeaseStatus, RemoteHolder, check_controller_id};
pub use sql::Dialect;
pub use types::{
    AddressRecord, AlertNotice, DeviceReport, Event, EventKind, EventQuery, EventRecord,
    InterfaceRecord, MAX_KEY_BYTES, MAX_TEXT_BYTES, NodeInfo, NodeRecord, Operation, OperationPath,
    OperationResult, Requested,
};
pub use url::{DatabaseTarget, SQLITE_FILE, redact};
pub use writer::{FlushReport, StoreMetrics};

use buffer::WriteBuffer;
use writer::{Command, FlushLimits, FlushStatus, Pending, Shared, WriterConfig};

/// The end recorded for an operation requested at `at_ms` whose outcome nobody recorded: its
/// controller stopped (crashed, killed) while it ran, so whether it ran is unknown.
fn unknown_end(node: &str, at_ms: i64, request: Requested, now: SystemTime) -> Operation {
    tracing::warn!(
        %node, action = %request.action, actor = %request.actor,
        "an operation requested before its controller stopped has no recorded outcome: logged as unknown"
    );
    Operation {
        operation_id: Some(request.operation_id),
        actor: request.actor,
        action: request.action,
        path: request.path,
        result: OperationResult::Unknown {
            reason: "the controller stopped before the operation's outcome was known".into(),
        },
        duration: now
            .duration_since(types::from_millis(at_ms))
            .unwrap_or_default(),
    }
}

/// In a cluster, how old a request without an end must be for a controller to close it as
/// `unknown` (at its start, and in the pusher's sweep): older than any action runs (a wake waits at most `wake_wait`, then each
/// operation at most `operation_timeout`), so it is not one another controller is running.
pub const CLUSTER_OPEN_REQUEST_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Store configuration (the `database.*` keys).
#[derive(Clone)]
pub struct StoreConfig {
    /// `database.url`: `mysql://user:password@host:port/database`; `None` for SQLite.
    pub url: Option<String>,
    /// The controller's data directory (holds `nodewarden.db` for SQLite).
    pub data_dir: PathBuf,
    /// `database.flush_interval`: how often changed state and new events are written.
    pub flush_interval: Duration,
    /// `database.event_buffer`: events kept while the database is unreachable.
    pub event_buffer: usize,
    /// `database.rows_per_statement`: rows per multi-row statement.
    pub rows_per_statement: usize,
    /// First wait after a failed flush; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Longest wait for a connection (start-up and each flush).
    pub connect_timeout: Duration,
    /// `database.write_timeout`: a flush taking longer is abandoned and retried.
    pub write_timeout: Duration,
    /// `[cluster]`: one of several controllers sharing this (MySQL) database.
    pub cluster: Option<ClusterConfig>,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            url: None,
            data_dir: data_dir.into(),
            flush_interval: Duration::from_secs(1),
            event_buffer: 100_000,
            rows_per_statement: 1000,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            cluster: None,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("data_dir", &self.data_dir)
            .field("flush_interval", &self.flush_interval)
            .field("event_buffer", &self.event_buffer)
            .field("rows_per_statement", &self.rows_per_statement)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Config(String),
    /// Connecting, migrating or loading failed at start-up. `database` has no password.
    #[error("database {database}: {message}")]
    Open { database: String, message: String },
    #[error("database {database}: flush failed (kept for retry): {message}")]
    Flush { database: String, message: String },
    #[error("database {database}: {message}")]
    Read { database: String, message: String },
    #[error("the store's writer has stopped")]
    Closed,
}

/// The store: owns the writer task. Reads of history go to the database; state is in memory.
pub struct Store {
    handle: StoreHandle,
    backend: Backend,
    writer: JoinHandle<()>,
    /// The embedded SQLite file's lock, held while the store lives (`None` for MySQL).
    _single_controller: Option<std::fs::File>,
}

/// Reads of the audit log, sharing the store's connection pool. What is still buffered (at most
/// one flush interval's worth) is not in the database yet, so not in what it returns.
#[derive(Clone)]
pub struct StoreReader {
    backend: Backend,
    target: DatabaseTarget,
}

impl StoreReader {
    /// Events after `query.after_id`, oldest first, at most `query.limit`.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        self.backend
            .events(query, false)
            .await
            .map_err(|message| self.read_error(message))
    }

    /// The newest `query.limit` events after `query.after_id`, newest first.
    pub async fn recent_events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        self.backend
            .events(query, true)
            .await
            .map_err(|message| self.read_error(message))
    }

    /// The controller other than `me` holding `node` now (cluster mode; none on SQLite).
    pub async fn remote_holder(
        &self,
        me: &str,
        node: &str,
    ) -> Result<Option<RemoteHolder>, StoreError> {
        self.backend
            .remote_holder(me, node)
            .await
            .map_err(|message| self.read_error(message))
    }

    /// Requests without a recorded end made more than [`CLUSTER_OPEN_REQUEST_AGE`] ago: no
    /// controller runs them any more (cluster mode: the fleet's sweep closes them).
    pub async fn stale_requests(&self) -> Result<Vec<(String, i64, Requested)>, StoreError> {
        self.backend
            .open_requests(CLUSTER_OPEN_REQUEST_AGE)
            .await
            .map_err(|message| self.read_error(message))
    }

    /// Every node a controller other than `me` holds now (cluster mode; none on SQLite).
    pub async fn remote_holders(&self, me: &str) -> Result<Vec<RemoteHolder>, StoreError> {
        self.backend
            .remote_holders(me)
            .await
            .map_err(|message| self.read_error(message))
    }

    /// `(node, scrape JSON)` of the nodes another controller than `me` holds (cluster mode).
    pub async fn remote_scrapes(&self, me: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.backend
            .remote_scrapes(me)
            .await
            .map_err(|message| self.read_error(message))
    }

    /// Nodes and storage devices as the database has them (in a cluster: every controller's).
    pub async fn fleet(&self) -> Result<(Vec<NodeRecord>, Vec<DeviceReport>), StoreError> {
        let nodes = self.backend.load_nodes().await;
        let devices = self.backend.load_devices().await;
        nodes
            .and_then(|n| devices.map(|d| (n, d)))
            .map_err(|message| self.read_error(message))
    }

    fn read_error(&self, message: String) -> StoreError {
        StoreError::Read {
            database: self.target.display(),
            message: self.target.scrub(&message),
        }
    }
}

/// A cheap, cloneable way to record state and events. Never blocks on the database.
#[derive(Clone)]
pub struct StoreHandle {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Store {
    /// Connects, applies migrations, loads nodes and devices, marks every node offline (no
    /// agent is connected yet; each one logged as an `Offline` event), writes that, and starts
    /// the writer. Must run inside a tokio runtime.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let target = DatabaseTarget::from_config(config.url.as_deref(), &config.data_dir)
            .map_err(StoreError::Config)?;
        let open_error = |message: String| StoreError::Open {
            database: target.display(),
            message: target.scrub(&message),
        };
        // SQLite serves one controller: a second one on the same file would keep its own view
        // of the fleet and overwrite the first one's rows.
        let single_controller = match &target {
            DatabaseTarget::Sqlite { path } => Some(lock_sqlite(path).map_err(open_error)?),
            DatabaseTarget::MySql { .. } => None,
        };
        let backend = Backend::open(&target, config.connect_timeout)
            .await
            .map_err(open_error)?;
        let nodes = backend.load_nodes().await.map_err(open_error)?;
        let devices = backend.load_devices().await.map_err(open_error)?;
        // Alone on its database, this controller wrote every open request; in a cluster the
        // young ones may be running on another controller now, so only those older than any
        // operation runs are closed.
        let age = match &config.cluster {
            Some(_) => CLUSTER_OPEN_REQUEST_AGE,
            None => Duration::ZERO,
        };
        let open_requests = backend.open_requests(age).await.map_err(open_error)?;
        let held_elsewhere: std::collections::BTreeSet<String> = match &config.cluster {
            Some(cluster) => backend
                .start_leases(&cluster.id)
                .await
                .map_err(open_error)?
                .into_iter()
                .collect(),
            None => Default::default(),
        };
        let mut buffer = WriteBuffer::new(nodes, devices, config.event_buffer, run_id());
        // Operations requested by an earlier run that never recorded their end: it stopped
        // (crashed, killed) while they ran. Whether they ran is unknown; the log says so.
        let now = SystemTime::now();
        for (node, at_ms, request) in open_requests {
            let _ = buffer.operation(&node, now, unknown_end(&node, at_ms, request, now));
        }
        buffer.all_offline(
            SystemTime::now(),
            "controller started; offline until the agent reconnects",
            &held_elsewhere,
        );
        let event_bound = config.event_buffer.max(1);
        let (status, _) = watch::channel(FlushStatus::default());
        let (reports, _) = broadcast::channel(1024);
        let mut config = config;
        if let Some(cluster) = &config.cluster {
            // Authority lapses a lease term after the last renewal: retries and a hung write
            // must not outlast it unnoticed.
            config.retry_max = config.retry_max.min(cluster.lease_ttl / 4);
            config.write_timeout = config.write_timeout.min(cluster.lease_ttl / 2);
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buffer,
                leases: config
                    .cluster
                    .as_ref()
                    .map(|c| lease::LeaseBook::new(c.lease_ttl)),
                takes: 0,
            }),
            metrics: StoreMetrics::default(),
            status,
            reports,
            target: target.clone(),
            event_bound,
            cluster: config.cluster.clone(),
            lease_status: watch::Sender::new(LeaseStatus::default()),
        });
        let limits = FlushLimits {
            max_rows: config.rows_per_statement,
            write_timeout: config.write_timeout,
        };
        writer::flush_once(&shared, &backend, limits)
            .await
            .map_err(open_error)?;
        shared.metrics.database_up.set(1);
        tracing::info!(database = %target.display(), "fleet state store ready");
        let (commands, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer::run(
            shared.clone(),
            backend.clone(),
            WriterConfig {
                flush_interval: config.flush_interval,
                limits,
                retry_initial: config.retry_initial,
                retry_max: config.retry_max,
            },
            receiver,
        ));
        Ok(Store {
            handle: StoreHandle { shared, commands },
            backend,
            writer,
            _single_controller: single_controller,
        })
    }

    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// The database, as logs name it (no password).
    pub fn database(&self) -> String {
        self.handle.shared.target.display()
    }

    pub fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.handle.shared.metrics
    }

    /// Audit log entries from the database, in order.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        self.reader().events(query).await
    }

    /// A cheap, cloneable reader of the audit log for the HTTP API (usable until [`Store::close`]).
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            backend: self.backend.clone(),
            target: self.handle.shared.target.clone(),
        }
    }

    /// Nodes as the database has them (not what is still buffered).
    pub async fn persisted_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.backend
            .load_nodes()
            .await
            .map_err(|message| self.read_error(message))
    }

    /// Storage devices as the database has them.
    pub async fn persisted_devices(&self) -> Result<Vec<DeviceReport>, StoreError> {
        self.backend
            .load_devices()
            .await
            .map_err(|message| self.read_error(message))
    }

    fn read_error(&self, message: String) -> StoreError {
        let target = &self.handle.shared.target;
        StoreError::Read {
            database: target.display(),
            message: target.scrub(&message),
        }
    }

    /// A last flush attempt, then the writer stops and the connections close.
    pub async fn close(self) -> Result<FlushReport, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .commands
            .send(Command::Shutdown(reply))
            .map_err(|_| StoreError::Closed)?;
        let outcome = answer.await.map_err(|_| StoreError::Closed)?;
        let _ = self.writer.await;
        outcome.map_err(|message| {
            let (rows, events) = {
                let pending = self.handle.shared.lock();
                (pending.buffer.dirty_rows(), pending.buffer.events_pending())
            };
            let database = self.handle.shared.target.display();
            tracing::error!(
                %database,
                rows,
                events,
                "closing without writing the last state and events: {message}"
            );
            StoreError::Flush {
                database,
                message: format!("{message}; {rows} rows and {events} events not written"),
            }
        })
    }
}

impl std::ops::Deref for Store {
    type Target = StoreHandle;
    fn deref(&self) -> &StoreHandle {
        &self.handle
    }
}

impl StoreHandle {
    /// An agent connected: its identity is recorded, it is online, and the transition logged.
    pub fn node_connected(&self, info: NodeInfo, at: SystemTime) -> Result<Queued, RejectedNode> {
        let node = info.node_id.clone();
        self.record_with_lease(
            |b| b.node_connected(info, at),
            |book| book.claim(&node, writer::unix_ms(at)),
        )
    }

    /// What a known node declares changed (interfaces, services, roles); no transition.
    pub fn node_updated(&self, info: NodeInfo) -> Result<(), RejectedNode> {
        self.shared.lock().buffer.node_updated(info)
    }

    /// A node reported (heartbeat or state): its `last_seen` moves. Coalesced per flush.
    pub fn node_seen(&self, node_id: &str, at: SystemTime) -> Result<(), RejectedNode> {
        self.shared.lock().buffer.node_seen(node_id, at)
    }

    /// A node went offline; `reason` says why (link closed, no heartbeat, agent exit).
    pub fn node_offline(
        &self,
        node_id: &str,
        at: SystemTime,
        reason: &str,
    ) -> Result<Queued, RejectedNode> {
        self.record_with_lease(
            |b| b.node_offline(node_id, at, reason),
            |book| book.release(node_id),
        )
    }

    /// The latest state of a storage device. Coalesced per flush.
    pub fn device_report(&self, report: DeviceReport) -> Result<(), RejectedNode> {
        self.shared.lock().buffer.device_report(report)
    }

    /// A remote operation on `node_id` ended, for the audit log. Always taken.
    pub fn operation(
        &self,
        node_id: &str,
        at: SystemTime,
        operation: Operation,
    ) -> Result<Queued, RejectedNode> {
        self.record(|b| b.operation(node_id, at, operation))
    }

    /// A remote operation on `node_id` is about to be dispatched. `Queued::Dropped` means the
    /// audit log could not take it: the caller must not run the operation.
    pub fn requested(
        &self,
        node_id: &str,
        at: SystemTime,
        requested: Requested,
    ) -> Result<Queued, RejectedNode> {
        self.record(|b| b.requested(node_id, at, requested))
    }

    /// `node_id` reported storage device `device_id`, which `owner` owns (refused).
    pub fn device_conflict(
        &self,
        node_id: &str,
        at: SystemTime,
        device_id: i64,
        owner: &str,
    ) -> Result<Queued, RejectedNode> {
        self.record(|b| b.device_conflict(node_id, at, device_id, owner))
    }

    /// Alertmanager notified an alert about `node_id` (a node's name, or `fleet`).
    pub fn alert(
        &self,
        node_id: &str,
        at: SystemTime,
        notice: AlertNotice,
    ) -> Result<Queued, RejectedNode> {
        self.record(|b| b.alert(node_id, at, notice))
    }

    /// Runs one event-queuing call on the buffer and counts what it shed or dropped.
    fn record(
        &self,
        call: impl FnOnce(&mut WriteBuffer) -> Result<Queued, RejectedNode>,
    ) -> Result<Queued, RejectedNode> {
        self.record_with_lease(call, |_| {})
    }

    /// [`Self::record`], and in cluster mode a lease wish under the same lock (so a flush
    /// takes a node's record and its lease wish together).
    fn record_with_lease(
        &self,
        call: impl FnOnce(&mut WriteBuffer) -> Result<Queued, RejectedNode>,
        wish: impl FnOnce(&mut lease::LeaseBook),
    ) -> Result<Queued, RejectedNode> {
        let (queued, shed) = {
            let mut pending = self.shared.lock();
            let before = pending.buffer.events_shed();
            let queued = call(&mut pending.buffer);
            if let (Ok(_), Some(book)) = (&queued, pending.leases.as_mut()) {
                wish(book);
            }
            // The gauge counts what waits now, not what waited at the last flush (a caller
            // waiting for 0 must not see the last flush's 0 beside a new event).
            self.shared
                .metrics
                .pending_events
                .set(writer::gauge_value(pending.buffer.events_pending()));
            (queued, pending.buffer.events_shed() - before)
        };
        if shed > 0 {
            self.shared.metrics.events_shed.inc_by(shed);
            tracing::warn!(
                database = %self.shared.target.display(),
                shed,
                "event buffer full: node transitions shed to keep an operation \
                 (counted in nodewarden_store_events_shed_total)"
            );
        }
        self.note(queued)
    }

    fn note(&self, queued: Result<Queued, RejectedNode>) -> Result<Queued, RejectedNode> {
        if let Ok(Queued::Dropped { first }) = queued {
            self.shared.metrics.events_dropped.inc();
            if first {
                tracing::error!(
                    database = %self.shared.target.display(),
                    bound = self.shared.event_bound,
                    "event buffer full while the database is unreachable: dropping new events \
                     (counted in nodewarden_store_events_dropped_total)"
                );
            }
        }
        queued
    }

    /// A node as the controller knows it now (including what is not yet written).
    pub fn node(&self, node_id: &str) -> Option<NodeRecord> {
        self.shared.lock().buffer.node(node_id).cloned()
    }

    /// Every known node, by id.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        let mut nodes: Vec<NodeRecord> = self.shared.lock().buffer.nodes().cloned().collect();
        nodes.sort_by(|a, b| a.info.node_id.cmp(&b.info.node_id));
        nodes
    }

    /// Every known storage device, by id.
    pub fn devices(&self) -> Vec<DeviceReport> {
        let mut devices: Vec<DeviceReport> = self.shared.lock().buffer.devices().cloned().collect();
        devices.sort_by_key(|d| d.device_id);
        devices
    }

    /// Events lost to a full buffer since start-up (transitions past the reserve, and
    /// requests refused).
    pub fn events_dropped(&self) -> u64 {
        self.shared.lock().buffer.events_dropped()
    }

    /// Queued transitions evicted to make room for operations since start-up.
    pub fn events_shed(&self) -> u64 {
        self.shared.lock().buffer.events_shed()
    }

    /// Events not yet in the database.
    pub fn events_pending(&self) -> usize {
        self.shared.lock().buffer.events_pending()
    }

    /// Flushes now and returns that attempt's outcome (on failure everything stays queued
    /// and the writer retries on its own).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let after = self.shared.lock().takes;
        let mut status = self.shared.status.subscribe();
        self.commands
            .send(Command::FlushNow)
            .map_err(|_| StoreError::Closed)?;
        let done = status
            .wait_for(|s| s.last_take > after)
            .await
            .map_err(|_| StoreError::Closed)?;
        if done.last_take_ok {
            return Ok(());
        }
        Err(StoreError::Flush {
            database: self.shared.target.display(),
            message: done.last_error.clone().unwrap_or_default(),
        })
    }

    /// Records an `unknown` end for each of `open` (requests nobody ended, as
    /// [`StoreReader::stale_requests`] reads them): in a cluster, the requests of a controller
    /// that was killed, closed by the one sweeping for the fleet. How many were queued.
    pub fn close_stale_requests(&self, open: Vec<(String, i64, Requested)>) -> usize {
        let now = SystemTime::now();
        open.into_iter()
            .map(|(node, at_ms, request)| {
                self.operation(&node, now, unknown_end(&node, at_ms, request, now))
            })
            .filter(|queued| matches!(queued, Ok(Queued::Yes)))
            .count()
    }

    /// Writes what is queued now and waits for it, at most `within`: what a caller does
    /// between recording an operation's request and running it, so that the request is in the
    /// database before the operation runs (a controller killed a moment later loses nothing it
    /// did). `false` when the database did not take it in time: it stays queued, the writer
    /// keeps trying, and the caller decides whether to run anyway.
    ///
    /// While the database is known to be down (the last flush failed) it does not wait: the
    /// request is queued like every other event and the writer retries on its own, so an
    /// operator's actions stay prompt through an outage.
    pub async fn write_ahead(&self, within: Duration) -> bool {
        let down = {
            let status = self.shared.status.borrow();
            status.last_take > 0 && !status.last_take_ok
        };
        if down {
            return false;
        }
        match tokio::time::timeout(within, self.flush()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a request is queued for the audit log, not yet written");
                false
            }
            Err(_) => {
                tracing::warn!(
                    waited = ?within,
                    "a request is queued for the audit log, not yet written (the database is slow)"
                );
                false
            }
        }
    }

    /// Resolves once everything recorded before the call is in the database, however many
    /// retries that takes. Callers bound it with a timeout.
    pub async fn wait_persisted(&self) -> Result<(), StoreError> {
        let after = self.shared.lock().takes;
        let mut status = self.shared.status.subscribe();
        status
            .wait_for(|s| s.drained_take > after)
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(())
    }

    /// What the last lease step found; `None` unless this controller is in a cluster.
    pub fn lease_status(&self) -> Option<watch::Receiver<LeaseStatus>> {
        self.shared
            .cluster
            .as_ref()
            .map(|_| self.shared.lease_status.subscribe())
    }

    /// This controller's cluster id, in cluster mode.
    pub fn cluster_id(&self) -> Option<&str> {
        self.shared.cluster.as_ref().map(|c| c.id.as_str())
    }

    /// Every successful, non-empty flush (for benchmarks and diagnostics).
    pub fn flush_reports(&self) -> broadcast::Receiver<FlushReport> {
        self.shared.reports.subscribe()
    }
}

/// Distinguishes this run's event uids from every earlier run's.
fn run_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Takes `<file>.lock` (an exclusive `flock`, released by the kernel when the process ends, so a
/// killed controller leaves nothing stale) and writes this process's id in it; refused while
/// another controller holds it.
fn lock_sqlite(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let lock_path = path.with_file_name(format!(
        "{}.lock",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(format!(
            "another controller{} uses this embedded SQLite store ({} is locked): SQLite serves \
             one controller; stop that one, or give each controller its own data_dir, or share \
             a MySQL/MariaDB database between controllers ([database] url)",
            if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            },
            lock_path.display()
        ));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}
