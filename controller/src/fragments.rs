//! Fragment reconciliation against the DFS database (`[dfs]`): a device's inventory (from its
//! agent) compared with `FRAGMENT WHERE PATH = <device id>`, read in keyset batches
//! (`ID > last ORDER BY ID LIMIT n`) so no whole table is ever held; and the orphan clean-up's
//! plan (dry run: count, bytes, sample) and its re-check at deletion time, which keeps every id
//! the DFS gained since the dry run. Domain errors only; handlers and the CLI map them.

use std::time::Duration;

use nodewarden_shared::fragments::{DeviceInventory, FragmentAudit, Reconciler, SAMPLE};
use nodewarden_shared::ops::Operation;
use roaring::RoaringBitmap;
use sqlx::Row as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

/// Rows per batch of the `FRAGMENT` read.
pub const BATCH: u32 = 10_000;
/// Ids per `IN (…)` list of the re-check, and per deletion operation.
pub const RECHECK_CHUNK: usize = 1_000;

pub const PAGE_QUERY: &str =
    "SELECT ID FROM FRAGMENT WHERE PATH = ? AND ID > ? ORDER BY ID LIMIT ?";

#[derive(Debug, thiserror::Error)]
pub enum FragmentDbError {
    #[error("dfs.url is not a usable MySQL URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("reading FRAGMENT for device {device}: {source}")]
    Query {
        device: u32,
        #[source]
        source: sqlx::Error,
    },
    #[error("reading FRAGMENT for device {device}: no answer within {timeout:?}")]
    Timeout { device: u32, timeout: Duration },
    #[error("FRAGMENT.ID of a row on device {device}: {source}")]
    Column {
        device: u32,
        #[source]
        source: sqlx::Error,
    },
}

/// A read-only handle on the DFS database.
#[derive(Debug, Clone)]
pub struct FragmentTable {
    pool: MySqlPool,
    timeout: Duration,
    batch: u32,
}

fn id_of(row: &sqlx::mysql::MySqlRow, device: u32) -> Result<i64, FragmentDbError> {
    row.try_get::<i64, _>(0)
        .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
        .map_err(|source| FragmentDbError::Column { device, source })
}

impl FragmentTable {
    pub fn connect_lazy(url: &str, timeout: Duration) -> Result<FragmentTable, FragmentDbError> {
        let options: MySqlConnectOptions = url.parse().map_err(FragmentDbError::Url)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Ok(FragmentTable {
            pool,
            timeout,
            batch: BATCH,
        })
    }

    pub fn with_batch(mut self, batch: u32) -> FragmentTable {
        self.batch = batch.max(1);
        self
    }

    /// Feeds every id on `device` to `each`, one batch at a time.
    async fn for_each_batch(
        &self,
        device: u32,
        mut each: impl FnMut(&[i64]),
    ) -> Result<(), FragmentDbError> {
        let path = device.to_string();
        let mut after = i64::MIN;
        let mut ids = Vec::with_capacity(self.batch as usize);
        loop {
            let q = sqlx::query(PAGE_QUERY)
                .bind(&path)
                .bind(after)
                .bind(self.batch)
                .fetch_all(&self.pool);
            let rows = tokio::time::timeout(self.timeout, q)
                .await
                .map_err(|_| FragmentDbError::Timeout {
                    device,
                    timeout: self.timeout,
                })?
                .map_err(|source| FragmentDbError::Query { device, source })?;
            ids.clear();
            for row in &rows {
                ids.push(id_of(row, device)?);
            }
            each(&ids);
            match ids.last() {
                Some(&last) if rows.len() as u32 == self.batch => after = last,
                _ => return Ok(()),
            }
        }
    }

    /// The device's reconciliation.
    pub async fn audit(&self, inv: &DeviceInventory) -> Result<FragmentAudit, FragmentDbError> {
        let mut r = Reconciler::new(inv);
        self.for_each_batch(inv.device_id, |ids| r.feed(ids))
            .await?;
        Ok(r.finish())
    }

    /// The dry run of an orphan clean-up.
    pub async fn plan_orphans(&self, inv: &DeviceInventory) -> Result<OrphanPlan, FragmentDbError> {
        let mut r = Reconciler::new(inv);
        self.for_each_batch(inv.device_id, |ids| r.feed(ids))
            .await?;
        let ids = r.orphans();
        Ok(OrphanPlan {
            device_id: inv.device_id,
            count: ids.len(),
            bytes: ids.iter().filter_map(|id| inv.size_of(id)).sum(),
            sample: ids.iter().take(SAMPLE).collect(),
            ids,
        })
    }

    /// At deletion time: the plan's ids that are still absent from `FRAGMENT` on this device,
    /// and those the DFS gained since the dry run (kept).
    pub async fn recheck(&self, plan: &OrphanPlan) -> Result<Rechecked, FragmentDbError> {
        let device = plan.device_id;
        let mut gained = RoaringBitmap::new();
        let ids: Vec<u32> = plan.ids.iter().collect();
        for chunk in ids.chunks(RECHECK_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT ID FROM FRAGMENT WHERE PATH = ? AND ID IN ({marks})");
            // Only `?` placeholders are interpolated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .persistent(false)
                .bind(device.to_string());
            for &id in chunk {
                q = q.bind(i64::from(id));
            }
            let rows = tokio::time::timeout(self.timeout, q.fetch_all(&self.pool))
                .await
                .map_err(|_| FragmentDbError::Timeout {
                    device,
                    timeout: self.timeout,
                })?
                .map_err(|source| FragmentDbError::Query { device, source })?;
            for row in &rows {
                if let Ok(id) = u32::try_from(id_of(row, device)?) {
                    gained.insert(id);
                }
            }
        }
        Ok(Rechecked {
            delete: &plan.ids - &gained,
            kept: gained,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What a clean-up would delete.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanPlan {
    pub device_id: u32,
    pub count: u64,
    pub bytes: u64,
    pub sample: Vec<u32>,
    pub ids: RoaringBitmap,
}

/// The re-check's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Rechecked {
    pub delete: RoaringBitmap,
    pub kept: RoaringBitmap,
}

impl Rechecked {
    /// The deletions as operations of the existing path (`Operation::DeleteFragments`, carried
    /// by the agent link or the SSH fallback like any action), `RECHECK_CHUNK` ids each.
    pub fn operations(&self, device_id: u32) -> Vec<Operation> {
        let ids: Vec<u64> = self.delete.iter().map(u64::from).collect();
        ids.chunks(RECHECK_CHUNK)
            .map(|c| Operation::DeleteFragments {
                device_id,
                fragment_ids: c.to_vec(),
            })
            .collect()
    }
}
