//! The optional DFS source: every interval, the DFS's own `DEVICE` table, read exactly as the
//! original scripts did (`SELECT ID, LEFTRS FROM DEVICE WHERE ISONLINE = true`). The pusher
//! publishes these values under the original names, beside the capacity the agents measure on
//! disk, so drift between the DFS's accounting and the disk shows.
//!
//! A failed read clears the values (the pusher then deletes the DFS groups: stale is worse than
//! none), is counted (`nodewarden_controller_dfs_reads_total{result="failure"}`) and logged once
//! per failure streak; the next interval retries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::config::DfsConfig;
use crate::metrics::{ControllerMetrics, PushLabels, PushResult};

pub const QUERY: &str = "SELECT ID, LEFTRS FROM DEVICE WHERE ISONLINE = true ORDER BY ID";

/// One online row of `DEVICE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DfsDevice {
    pub id: i64,
    pub leftrs: i64,
}

/// The last successful read, shared with the pusher.
#[derive(Debug, Default)]
pub struct DfsSource {
    last: Mutex<Option<(Instant, Vec<DfsDevice>)>>,
    /// A read older than this is no longer current (the source stopped answering).
    max_age: Duration,
}

impl DfsSource {
    pub fn new(interval: Duration) -> DfsSource {
        DfsSource {
            last: Mutex::new(None),
            max_age: interval * 3,
        }
    }

    /// The rows of the last read, if it succeeded recently enough.
    pub fn current(&self) -> Option<Vec<DfsDevice>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= self.max_age)
            .map(|(_, rows)| rows.clone())
    }

    fn set(&self, rows: Option<Vec<DfsDevice>>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = rows.map(|r| (Instant::now(), r));
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    crate::store::redact(url)
}

async fn read(pool: &MySqlPool, timeout: Duration) -> Result<Vec<DfsDevice>, String> {
    let rows = tokio::time::timeout(timeout, sqlx::query(QUERY).fetch_all(pool))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| redacted(&e.to_string()))?;
    rows.iter()
        .map(|row| {
            // ID is an INT, LEFTRS an INT; read wide so a BIGINT column works too.
            let id: i64 = row
                .try_get::<i64, _>(0)
                .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
                .map_err(|e| format!("DEVICE.ID: {e}"))?;
            let leftrs: Option<i64> = row
                .try_get::<Option<i64>, _>(1)
                .or_else(|_| row.try_get::<Option<i32>, _>(1).map(|v| v.map(i64::from)))
                .map_err(|e| format!("DEVICE.LEFTRS of device {id}: {e}"))?;
            Ok(DfsDevice {
                id,
                // LEFTRS defaults to 0 in the original schema; a NULL is read the same way.
                leftrs: leftrs.unwrap_or(0),
            })
        })
        .collect()
}

/// Reads the table every interval until the task is dropped.
pub async fn run(config: DfsConfig, source: Arc<DfsSource>, metrics: ControllerMetrics) {
    let shown = redacted(&config.url);
    let options: MySqlConnectOptions = match config.url.parse() {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(dfs = %shown, error = %e, "dfs.url is not a usable MySQL URL; the DFS source is off");
            return;
        }
    };
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.interval.max(Duration::from_secs(1)))
        .connect_lazy_with(options);
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match read(&pool, config.interval.max(Duration::from_secs(1))).await {
            Ok(rows) => {
                if failing {
                    tracing::info!(dfs = %shown, devices = rows.len(), "the DFS DEVICE table is readable again");
                    failing = false;
                }
                source.set(Some(rows));
                metrics
                    .dfs_reads
                    .get_or_create(&PushLabels {
                        result: PushResult::success,
                    })
                    .inc();
            }
            Err(e) => {
                source.set(None);
                metrics
                    .dfs_reads
                    .get_or_create(&PushLabels {
                        result: PushResult::failure,
                    })
                    .inc();
                if !failing {
                    failing = true;
                    tracing::warn!(
                        dfs = %shown, error = %e,
                        "reading the DFS DEVICE table failed; its groups are withdrawn from the \
                         Pushgateway until it answers again (retrying every {:?})",
                        config.interval
                    );
                }
            }
        }
    }
}
