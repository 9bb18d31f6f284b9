//! The task that moves the buffer into the database: one transaction per flush, every flush
//! interval; on failure the batch goes back into the buffer and the next attempt waits a
//! capped exponential backoff.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::buffer::WriteBuffer;
use super::db::{Backend, LeaseStep};
use super::lease::{ClusterConfig, LeaseBook, LeaseStatus};
use super::url::DatabaseTarget;

/// Capped exponential backoff between failed flushes.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }
    /// The wait before the next attempt; doubles each time up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// The store's own metrics, for the controller's `/metrics`.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub flushes: Counter,
    pub flush_errors: Counter,
    pub events_dropped: Counter,
    pub events_shed: Counter,
    pub flush_duration: Histogram,
    pub statements_last_flush: Gauge,
    pub rows_last_flush: Gauge,
    pub pending_events: Gauge,
    pub database_up: Gauge,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            flushes: Counter::default(),
            flush_errors: Counter::default(),
            events_dropped: Counter::default(),
            events_shed: Counter::default(),
            flush_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            statements_last_flush: Gauge::default(),
            rows_last_flush: Gauge::default(),
            pending_events: Gauge::default(),
            database_up: Gauge::default(),
        }
    }
}

impl StoreMetrics {
    /// Registers the metrics (they share their values with the store).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "nodewarden_store_flushes",
            "Flushes of fleet state and events that reached the database",
            self.flushes.clone(),
        );
        registry.register(
            "nodewarden_store_flush_errors",
            "Flushes that failed and were kept for a retry",
            self.flush_errors.clone(),
        );
        registry.register(
            "nodewarden_store_events_dropped",
            "Events not taken because the event buffer was full while the database was unreachable (node transitions past the reserve kept for operations, and operation requests refused)",
            self.events_dropped.clone(),
        );
        registry.register(
            "nodewarden_store_events_shed",
            "Queued node transitions evicted from a full event buffer to keep an operation",
            self.events_shed.clone(),
        );
        registry.register(
            "nodewarden_store_flush_duration_seconds",
            "Time to write one flush transaction",
            self.flush_duration.clone(),
        );
        registry.register(
            "nodewarden_store_statements_last_flush",
            "Data statements in the last flush transaction",
            self.statements_last_flush.clone(),
        );
        registry.register(
            "nodewarden_store_rows_last_flush",
            "Rows written by the last flush",
            self.rows_last_flush.clone(),
        );
        registry.register(
            "nodewarden_store_pending_events",
            "Audit events waiting for the database",
            self.pending_events.clone(),
        );
        registry.register(
            "nodewarden_store_database_up",
            "1 if the last flush reached the database",
            self.database_up.clone(),
        );
    }
}

/// What one successful flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlushReport {
    pub rows: usize,
    pub statements: usize,
    pub duration: Duration,
    /// Queued events did not fit in this flush; the next one follows at once.
    pub events_left: bool,
}

/// Progress of the writer, watched by callers that wait for a flush.
#[derive(Debug, Clone, Default)]
pub struct FlushStatus {
    /// Number of the last take (flush attempt) that finished, and whether it succeeded.
    pub last_take: u64,
    pub last_take_ok: bool,
    /// Number of the last take that succeeded.
    pub ok_take: u64,
    /// Number of the last take that succeeded and left no event queued: everything recorded
    /// before it started is in the database.
    pub drained_take: u64,
    pub last_error: Option<String>,
}

pub struct Pending {
    pub buffer: WriteBuffer,
    /// Link leases (cluster mode only).
    pub leases: Option<LeaseBook>,
    /// Flush attempts started; taken under the same lock as the batch.
    pub takes: u64,
}

pub struct Shared {
    pub pending: Mutex<Pending>,
    pub metrics: StoreMetrics,
    pub status: watch::Sender<FlushStatus>,
    pub reports: broadcast::Sender<FlushReport>,
    pub target: DatabaseTarget,
    pub event_bound: usize,
    /// `[cluster]`: this controller shares the database with others.
    pub cluster: Option<ClusterConfig>,
    /// What the last lease step found (cluster mode).
    pub lease_status: watch::Sender<LeaseStatus>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic elsewhere while holding the lock leaves plain data; keep using it.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bounds on one flush.
#[derive(Debug, Clone, Copy)]
pub struct FlushLimits {
    /// Rows per multi-row statement.
    pub max_rows: usize,
    /// A flush taking longer (a hung server, a partition) is abandoned and retried.
    pub write_timeout: Duration,
}

/// Events per flush, in statements: a backlog is written 10 full statements at a time.
const EVENT_STATEMENTS_PER_FLUSH: usize = 10;

pub enum Command {
    FlushNow,
    Shutdown(oneshot::Sender<Result<FlushReport, String>>),
}

pub struct WriterConfig {
    pub flush_interval: Duration,
    pub limits: FlushLimits,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

pub async fn run(
    shared: Arc<Shared>,
    backend: Backend,
    config: WriterConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    let mut next = Instant::now() + config.flush_interval;
    loop {
        let shutdown = tokio::select! {
            _ = tokio::time::sleep_until(next) => None,
            command = commands.recv() => match command {
                Some(Command::FlushNow) => None,
                Some(Command::Shutdown(reply)) => Some(Some(reply)),
                None => Some(None),
            },
        };
        let flush_started = Instant::now();
        let mut outcome = flush_once(&shared, &backend, config.limits).await;
        if shutdown.is_some() {
            // Last chance: write the whole backlog, not just one bounded batch of it.
            while matches!(outcome, Ok(report) if report.events_left) {
                outcome = flush_once(&shared, &backend, config.limits).await;
            }
        }
        next = match outcome {
            Ok(report) => {
                backoff.reset();
                if report.events_left {
                    // A backlog written in bounded batches: keep going.
                    Instant::now()
                } else {
                    // A steady cadence: the flush's own duration is part of the interval.
                    (flush_started + config.flush_interval).max(Instant::now())
                }
            }
            Err(_) => Instant::now() + backoff.next_delay(),
        };
        if let Some(reply) = shutdown {
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
            backend.close().await;
            return;
        }
    }
}

/// Takes the batch, writes it in one transaction, and completes or requeues it.
pub async fn flush_once(
    shared: &Shared,
    backend: &Backend,
    limits: FlushLimits,
) -> Result<FlushReport, String> {
    let taken_at = std::time::SystemTime::now();
    let (batch, work, take) = {
        let mut pending = shared.lock();
        pending.takes += 1;
        let max_events = limits.max_rows.max(1) * EVENT_STATEMENTS_PER_FLUSH;
        let batch = pending.buffer.take(max_events);
        let offline = batch
            .nodes
            .iter()
            .filter(|n| !n.online)
            .map(|n| n.info.node_id.clone())
            .collect();
        let work = pending.leases.as_mut().map(|book| book.take(offline));
        (batch, work, pending.takes)
    };
    let started = std::time::Instant::now();
    let lease = match (&shared.cluster, &work) {
        (Some(cluster), Some(work)) => Some(LeaseStep {
            cluster,
            work,
            now: taken_at,
        }),
        _ => None,
    };
    let written = if batch.is_empty() && lease.is_none() {
        Ok(Default::default())
    } else {
        // Dropping the write on timeout drops its transaction, which rolls back; if the
        // commit did reach the server, the retry's upserts and uid-keyed events are no-ops.
        match tokio::time::timeout(
            limits.write_timeout,
            backend.write(&batch, limits.max_rows, lease),
        )
        .await
        {
            Ok(written) => written.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no answer within {:?} (write_timeout)",
                limits.write_timeout
            )),
        }
    };
    let duration = started.elapsed();
    let metrics = &shared.metrics;
    match written {
        Ok((written, outcome)) => {
            let pending_events = {
                let mut pending = shared.lock();
                pending.buffer.complete(&batch);
                if let (Some(book), Some(work), Some(outcome)) =
                    (pending.leases.as_mut(), &work, &outcome)
                {
                    let now = std::time::Instant::now();
                    let lost = book.succeeded(work, outcome, now);
                    for (node, holder) in &outcome.swept {
                        tracing::warn!(%node, %holder, "lease lapsed with no new holder: node recorded offline (controller lost)");
                    }
                    let status = book.status(now, lost, unix_ms(taken_at));
                    shared.lease_status.send_replace(status);
                }
                pending.buffer.events_pending()
            };
            let report = FlushReport {
                rows: written.rows,
                statements: written.statements,
                duration,
                events_left: batch.events_left,
            };
            metrics.pending_events.set(gauge_value(pending_events));
            if !batch.is_empty() {
                metrics.flushes.inc();
                metrics.flush_duration.observe(duration.as_secs_f64());
                metrics
                    .statements_last_flush
                    .set(gauge_value(written.statements));
                metrics.rows_last_flush.set(gauge_value(written.rows));
                if metrics.database_up.set(1) == 0 {
                    tracing::info!(database = %shared.target.display(), "database reachable again; pending state written");
                }
                let _ = shared.reports.send(report);
            }
            shared.status.send_modify(|s| {
                s.last_take = take;
                s.last_take_ok = true;
                s.ok_take = take;
                if !batch.events_left {
                    s.drained_take = take;
                }
                s.last_error = None;
            });
            Ok(report)
        }
        Err(error) => {
            let message = shared.target.scrub(&error);
            let (pending_rows, pending_events, dropped) = {
                let mut pending = shared.lock();
                pending.buffer.requeue(batch);
                if let (Some(book), Some(work)) = (pending.leases.as_mut(), work) {
                    let now = std::time::Instant::now();
                    let had = shared.lease_status.borrow().authority;
                    if !book.failed(work, now) && had {
                        tracing::error!(
                            database = %shared.target.display(),
                            "no lease renewal for a whole lease term: this controller gives up \
                             its links and takes none until the database answers again"
                        );
                    }
                    shared
                        .lease_status
                        .send_replace(book.status(now, Vec::new(), 0));
                }
                (
                    pending.buffer.dirty_rows(),
                    pending.buffer.events_pending(),
                    pending.buffer.events_dropped(),
                )
            };
            metrics.flush_errors.inc();
            metrics.database_up.set(0);
            metrics.pending_events.set(gauge_value(pending_events));
            tracing::warn!(
                database = %shared.target.display(),
                pending_rows,
                pending_events,
                events_dropped = dropped,
                "flush failed, kept for retry: {message}"
            );
            shared.status.send_modify(|s| {
                s.last_take = take;
                s.last_take_ok = false;
                s.last_error = Some(message.clone());
            });
            Err(message)
        }
    }
}

pub fn unix_ms(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(super) fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_under_their_documented_names() {
        let metrics = StoreMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.events_dropped.inc();
        metrics.statements_last_flush.set(4);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "nodewarden_store_events_dropped_total 1",
            "nodewarden_store_statements_last_flush 4",
            "nodewarden_store_flushes_total 0",
            "nodewarden_store_flush_errors_total 0",
            "nodewarden_store_rows_last_flush 0",
            "nodewarden_store_pending_events 0",
            "nodewarden_store_database_up 0",
            "nodewarden_store_flush_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
