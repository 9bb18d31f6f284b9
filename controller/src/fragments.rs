//! Fragment reconciliation against the DFS database (`[dfs]`): a device's inventory (from its
//! agent) compared with `FRAGMENT WHERE PATH = <device id>`, read in keyset batches
//! (`ID > last ORDER BY ID LIMIT n`) so no whole table is ever held; and the orphan clean-up's
//! plan (dry run: count, bytes, sample) and its re-check at deletion time, which keeps every id
//! the DFS gained since the dry run. Domain errors only; handlers and the CLI map them.
//! Also [`FragmentState`], what the controller holds in memory (bounded): the latest inventory
//! per device from its owner's link, the latest audit per device, and the dry runs awaiting
//! their confirmation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Most devices whose inventory the controller holds (an inventory of a new device beyond this
/// is refused).
pub const MAX_DEVICES: usize = 4096;
/// Most dry runs awaiting confirmation (the oldest goes first).
pub const MAX_PLANS: usize = 16;
/// How long a dry run may be confirmed.
pub const PLAN_TTL: Duration = Duration::from_secs(15 * 60);

/// A device's latest inventory and where it came from.
#[derive(Debug, Clone)]
pub struct HeldInventory {
    pub node: String,
    pub received_ms: u64,
    /// Changes with every inventory or delta the controller takes (in the same millisecond
    /// too, unlike `received_ms`): what the audit task compares to know what it has audited.
    pub revision: u64,
    pub inventory: Arc<DeviceInventory>,
    /// The agent's generation of it (a delta applies only to the generation it was made from).
    pub generation: u64,
    /// Its last change was a delta of files only (changes between the agent's scans): audited
    /// again at most every `DELTA_AUDIT_GAP`. A delta that changes the scrub's verdict (the
    /// corrupt set) is audited at once, like a whole inventory.
    pub by_delta: bool,
}

/// Why a delta did not apply to the held inventory: the agent is asked for whole ones again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaRefused {
    #[error("no inventory of device {0} from this node to apply a delta to")]
    NoInventory(u32),
    #[error("delta of device {device} from generation {base}, the held one is {held}")]
    Generation { device: u32, base: u64, held: u64 },
}

/// A device's latest audit.
#[derive(Debug, Clone)]
pub struct HeldAudit {
    pub node: String,
    pub audited_ms: u64,
    /// When the inventory it was made from arrived.
    pub inventory_ms: u64,
    pub audit: FragmentAudit,
}

#[derive(Debug, thiserror::Error)]
#[error("inventory of device {device_id} refused: already holding {MAX_DEVICES} devices")]
pub struct TooManyDevices {
    pub device_id: u32,
}

/// The controller's fragment knowledge, in memory: bounded by [`MAX_DEVICES`] inventories
/// and audits and [`MAX_PLANS`] dry runs.
#[derive(Debug, Default)]
pub struct FragmentState {
    inventories: BTreeMap<u32, HeldInventory>,
    audits: BTreeMap<u32, HeldAudit>,
    plans: BTreeMap<String, (Instant, Arc<OrphanPlan>)>,
    /// The last `HeldInventory::revision` given.
    revision: u64,
}

impl FragmentState {
    pub fn put_inventory(
        &mut self,
        node: &str,
        inventory: DeviceInventory,
        generation: u64,
        now_ms: u64,
    ) -> Result<(), TooManyDevices> {
        let device_id = inventory.device_id;
        if !self.inventories.contains_key(&device_id) && self.inventories.len() >= MAX_DEVICES {
            return Err(TooManyDevices { device_id });
        }
        self.revision += 1;
        self.inventories.insert(
            device_id,
            HeldInventory {
                node: node.to_string(),
                received_ms: now_ms,
                revision: self.revision,
                inventory: Arc::new(inventory),
                generation,
                by_delta: false,
            },
        );
        Ok(())
    }

    /// Applies a delta from `node` that turns generation `base` of the device's inventory into
    /// `generation` (in place unless an audit holds the inventory). Returns the fragments
    /// present after it.
    pub fn apply_delta(
        &mut self,
        node: &str,
        delta: &nodewarden_shared::fragments::InventoryDelta,
        base: u64,
        generation: u64,
        now_ms: u64,
    ) -> Result<u64, DeltaRefused> {
        let device = delta.device_id;
        let Some(held) = self.inventories.get_mut(&device).filter(|h| h.node == node) else {
            return Err(DeltaRefused::NoInventory(device));
        };
        if held.generation != base {
            return Err(DeltaRefused::Generation {
                device,
                base,
                held: held.generation,
            });
        }
        let corrupt_before = held.inventory.corrupt.clone();
        Arc::make_mut(&mut held.inventory).apply(delta);
        held.generation = generation;
        held.received_ms = now_ms;
        self.revision += 1;
        held.revision = self.revision;
        held.by_delta = held.inventory.corrupt == corrupt_before;
        Ok(held.inventory.present.len())
    }

    pub fn inventory(&self, device_id: u32) -> Option<HeldInventory> {
        self.inventories.get(&device_id).cloned()
    }

    pub fn inventories(&self) -> Vec<HeldInventory> {
        self.inventories.values().cloned().collect()
    }

    pub fn set_audit(&mut self, held: HeldAudit) {
        if self.inventories.contains_key(&held.audit.device_id) {
            self.audits.insert(held.audit.device_id, held);
        }
    }

    pub fn audit(&self, device_id: u32) -> Option<HeldAudit> {
        self.audits.get(&device_id).cloned()
    }

    pub fn audits(&self) -> Vec<HeldAudit> {
        self.audits.values().cloned().collect()
    }

    /// Keeps a dry run under `id` until confirmed or expired.
    pub fn add_plan(&mut self, id: String, plan: OrphanPlan, now: Instant) {
        self.plans
            .retain(|_, (at, _)| now.duration_since(*at) < PLAN_TTL);
        while self.plans.len() >= MAX_PLANS {
            let Some(oldest) = self
                .plans
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.plans.remove(&oldest);
        }
        self.plans.insert(id, (now, Arc::new(plan)));
    }

    /// The dry run `id`, once: a confirmation uses it up.
    pub fn take_plan(&mut self, id: &str, now: Instant) -> Option<Arc<OrphanPlan>> {
        let (at, plan) = self.plans.remove(id)?;
        (now.duration_since(at) < PLAN_TTL).then_some(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(device_id: u32) -> OrphanPlan {
        OrphanPlan {
            device_id,
            count: 0,
            bytes: 0,
            sample: Vec::new(),
            ids: RoaringBitmap::new(),
        }
    }

    #[test]
    fn a_delta_applies_only_to_the_generation_it_follows_from_its_node() {
        let mut s = FragmentState::default();
        let mut inv = DeviceInventory {
            device_id: 4,
            ..Default::default()
        };
        inv.present.insert(10);
        inv.sizes.push(100);
        s.put_inventory("n", inv.clone(), 5, 1).unwrap();
        let mut next = inv.clone();
        next.present.insert(11);
        next.sizes.push(7);
        let delta = next.delta(&[11].into_iter().collect());
        assert_eq!(
            s.apply_delta("m", &delta, 5, 6, 2),
            Err(DeltaRefused::NoInventory(4)),
            "another node's delta"
        );
        assert_eq!(
            s.apply_delta("n", &delta, 4, 6, 2),
            Err(DeltaRefused::Generation {
                device: 4,
                base: 4,
                held: 5
            })
        );
        assert_eq!(s.apply_delta("n", &delta, 5, 6, 2), Ok(2));
        let held = s.inventory(4).unwrap();
        assert_eq!((held.generation, held.received_ms), (6, 2));
        assert_eq!(*held.inventory, next);
        assert!(
            held.by_delta,
            "files only: audited at most every DELTA_AUDIT_GAP"
        );
        // The same delta again no longer follows.
        assert!(s.apply_delta("n", &delta, 5, 6, 3).is_err());
        // A scrub's verdict by delta: audited at once.
        let mut scrubbed = next.clone();
        scrubbed.corrupt.insert(10);
        let verdict = scrubbed.delta(&[10].into_iter().collect());
        let before = s.inventory(4).unwrap().revision;
        // In the same millisecond as the change before it (a scan and its scrub's verdict).
        assert_eq!(s.apply_delta("n", &verdict, 6, 7, 2), Ok(2));
        let held = s.inventory(4).unwrap();
        assert_eq!(*held.inventory, scrubbed);
        assert!(!held.by_delta, "a new verdict is not held back");
        assert!(
            held.revision > before,
            "a change in the same millisecond is still a new revision to audit"
        );
    }

    #[test]
    fn state_is_bounded() {
        let mut s = FragmentState::default();
        for d in 0..MAX_DEVICES as u32 {
            let inv = DeviceInventory {
                device_id: d,
                ..Default::default()
            };
            s.put_inventory("n", inv, 1, 1).unwrap();
        }
        let extra = DeviceInventory {
            device_id: 99_999,
            ..Default::default()
        };
        assert!(s.put_inventory("n", extra, 1, 1).is_err());
        // A device already held is replaced.
        let again = DeviceInventory {
            device_id: 3,
            ..Default::default()
        };
        s.put_inventory("m", again, 1, 2).unwrap();
        assert_eq!(s.inventory(3).unwrap().node, "m");
        // An audit of a device without an inventory is not kept.
        s.set_audit(HeldAudit {
            node: "n".into(),
            audited_ms: 1,
            inventory_ms: 1,
            audit: FragmentAudit {
                device_id: 99_999,
                ..Default::default()
            },
        });
        assert!(s.audit(99_999).is_none());

        let now = Instant::now();
        for i in 0..MAX_PLANS + 3 {
            s.add_plan(
                format!("p{i}"),
                plan(1),
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(s.plans.len(), MAX_PLANS);
        assert!(s.take_plan("p0", now).is_none());
        let last = format!("p{}", MAX_PLANS + 2);
        assert!(s.take_plan(&last, now).is_some());
        assert!(s.take_plan(&last, now).is_none(), "used once");
        s.add_plan("old".into(), plan(1), now);
        assert!(s.take_plan("old", now + PLAN_TTL).is_none(), "expired");
    }
}
