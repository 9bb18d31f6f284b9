//! The two back ends behind one enum: connecting, migrating, writing a batch in one
//! transaction, and reading state back. Thin: the SQL comes from `sql`, the rows from `buffer`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use super::buffer::{Batch, PendingEvent};
use super::lease::{ClusterConfig, LeaseOutcome, LeaseWork, RemoteHolder};
use super::sql::{self, Dialect};
use super::types::{
    AlertNotice, DeviceReport, Event, EventKind, EventQuery, EventRecord, NodeInfo, NodeRecord,
    Operation, OperationPath, OperationResult, Requested, from_millis, to_millis,
};
use super::url::DatabaseTarget;

static MYSQL_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub enum Backend {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool the backend holds; the body is
/// type-checked once per back end, so it can use sqlx's concrete types.
macro_rules! with_pool {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            Backend::MySql($pool) => $body,
            Backend::Sqlite($pool) => $body,
        }
    };
}

/// Writes a batch's rows (`$nodes`: the node records to write) inside transaction `$tx`; the
/// number of statements. A macro because the two back ends' transactions are different types.
/// Keeps a connection whose write failed out of the pool. SQLite ends a transaction itself on
/// some errors (a full disk), and such a connection, reused, had the next flushes write inside
/// a transaction nobody committed: reported written, seen by no reader (tests/faults.rs, full
/// disk). On MySQL, whatever state the failure left the session in goes with it too.
fn discard_if_failed<DB: sqlx::Database, T>(
    conn: &mut sqlx::pool::PoolConnection<DB>,
    written: &Result<T, sqlx::Error>,
) {
    if written.is_err() {
        conn.close_on_drop();
    }
}

macro_rules! write_rows {
    ($tx:ident, $dialect:expr, $batch:expr, $nodes:expr, $max_rows:expr) => {{
        let (dialect, batch, nodes): (Dialect, &Batch, &[&NodeRecord]) = ($dialect, $batch, $nodes);
        let node_rows = sql::rows_per_statement($max_rows, sql::NODE_COLUMNS.len());
        let device_rows = sql::rows_per_statement($max_rows, sql::DEVICE_COLUMNS.len());
        let mut statements = 0;
        for chunk in nodes.chunks(node_rows) {
            let text = sql::upsert_nodes(dialect, chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(text)).persistent(false);
            for node in chunk {
                let info = &node.info;
                query = query
                    .bind(info.node_id.as_str())
                    .bind(info.hostname.as_str())
                    .bind(json_list(&info.addresses))
                    .bind(json_list(&info.mac_addresses))
                    .bind(json_list(&info.roles))
                    .bind(info.agent_version.as_str())
                    .bind(info.cert_fingerprint.as_str())
                    .bind(to_millis(node.first_seen))
                    .bind(to_millis(node.last_seen))
                    .bind(node.online)
                    .bind(json_list(&info.services))
                    .bind(serde_json::to_string(&info.interfaces).unwrap_or_else(|_| "[]".into()))
                    .bind((!info.scrape.is_empty()).then_some(info.scrape.as_str()));
            }
            query.execute(&mut *$tx).await?;
            statements += 1;
        }
        for chunk in batch.devices.chunks(device_rows) {
            let text = sql::upsert_devices(dialect, chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(text)).persistent(false);
            for device in chunk {
                query = query
                    .bind(device.device_id)
                    .bind(device.node_id.as_str())
                    .bind(device.fragment_folder.as_str())
                    .bind(saturating_i64(device.total_bytes))
                    .bind(saturating_i64(device.free_bytes))
                    .bind(saturating_i64(device.fragment_count))
                    .bind(to_millis(device.reported_at));
            }
            query.execute(&mut *$tx).await?;
            statements += 1;
        }
        statements += insert_event_rows!($tx, dialect, &batch.events, $max_rows);
        statements
    }};
}

/// Appends events inside transaction `$tx`; the number of statements.
macro_rules! insert_event_rows {
    ($tx:ident, $dialect:expr, $events:expr, $max_rows:expr) => {{
        let events: &[PendingEvent] = $events;
        let event_rows = sql::rows_per_statement($max_rows, sql::EVENT_COLUMNS.len());
        let mut statements = 0;
        for chunk in events.chunks(event_rows) {
            let text = sql::insert_events($dialect, chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(text)).persistent(false);
            for pending in chunk {
                let row = EventRow::from(&pending.event);
                query = query
                    .bind(pending.uid.as_str())
                    .bind(to_millis(pending.event.at))
                    .bind(pending.event.node_id.as_str())
                    .bind(row.kind)
                    .bind(row.actor)
                    .bind(row.action)
                    .bind(row.path)
                    .bind(row.result)
                    .bind(row.detail)
                    .bind(row.duration_ms)
                    .bind(row.operation_id);
            }
            query.execute(&mut *$tx).await?;
            statements += 1;
        }
        statements
    }};
}

/// One flush's lease work for [`Backend::write`].
pub struct LeaseStep<'a> {
    pub cluster: &'a ClusterConfig,
    pub work: &'a LeaseWork,
    /// When the step's work was taken (this controller's clock), for swept nodes' events.
    pub now: std::time::SystemTime,
}

/// Lapsed leases swept per flush at most.
const SWEEP_LIMIT: i64 = 500;

/// The lease step (MySQL only): claims, releases, renewal, what this controller holds, lapsed
/// leases swept (each node recorded offline with an event, once fleet-wide), the pusher lease.
/// Also returns the nodes recorded offline here that another controller holds.
async fn lease_step(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    step: &LeaseStep<'_>,
    max_rows: usize,
) -> Result<(LeaseOutcome, Vec<String>), sqlx::Error> {
    let conn: &mut sqlx::MySqlConnection = &mut *tx;
    let me = step.cluster.id.as_str();
    let ttl_ms = i64::try_from(step.cluster.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let per = sql::rows_per_statement(max_rows, 4);
    for chunk in step.work.claims.chunks(per) {
        let mut query =
            sqlx::query(AssertSqlSafe(sql::claim_leases(chunk.len()))).persistent(false);
        for (node, connected_ms) in chunk {
            query = query
                .bind(node.as_str())
                .bind(me)
                .bind(*connected_ms)
                .bind(ttl_ms);
        }
        query.execute(&mut *conn).await?;
    }
    for chunk in step.work.releases.chunks(per) {
        let mut query = sqlx::query(AssertSqlSafe(sql::release_leases(chunk.len())))
            .persistent(false)
            .bind(me);
        for node in chunk {
            query = query.bind(node.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    let mut skip = Vec::new();
    for chunk in step.work.offline_nodes.chunks(per) {
        let mut query = sqlx::query(AssertSqlSafe(sql::held_elsewhere(chunk.len())))
            .persistent(false)
            .bind(me);
        for node in chunk {
            query = query.bind(node.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            skip.push(row.try_get::<String, _>(0)?);
        }
    }
    sqlx::query(AssertSqlSafe(sql::upsert_controller()))
        .bind(me)
        .bind(step.cluster.peer_url.as_deref())
        .execute(&mut *conn)
        .await?;
    sqlx::query(AssertSqlSafe(sql::renew_leases()))
        .bind(ttl_ms)
        .bind(me)
        .execute(&mut *conn)
        .await?;
    let mut outcome = LeaseOutcome::default();
    for row in sqlx::query(sql::SELECT_HELD)
        .bind(me)
        .fetch_all(&mut *conn)
        .await?
    {
        outcome.held.insert(row.try_get(0)?, row.try_get(1)?);
    }
    for row in sqlx::query(AssertSqlSafe(sql::select_remote_holders(false)))
        .persistent(false)
        .bind(me)
        .fetch_all(&mut *conn)
        .await?
    {
        let holder = remote_holder_row(&row)?;
        outcome.elsewhere.insert(holder.node.clone(), holder);
    }
    let lapsed = sqlx::query(AssertSqlSafe(sql::select_lapsed()))
        .bind(SWEEP_LIMIT)
        .fetch_all(&mut *conn)
        .await?;
    let mut events = Vec::new();
    for row in lapsed {
        let (node, holder): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let swept = sqlx::query(AssertSqlSafe(sql::sweep_lapsed()))
            .bind(node.as_str())
            .bind(holder.as_str())
            .execute(&mut *conn)
            .await?;
        if swept.rows_affected() != 1 {
            continue; // another controller swept it, or its holder renewed meanwhile
        }
        sqlx::query(sql::NODE_OFFLINE)
            .bind(node.as_str())
            .execute(&mut *conn)
            .await?;
        let epoch: i64 = sqlx::query(sql::SELECT_EPOCH)
            .bind(node.as_str())
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        events.push(PendingEvent {
            uid: lapse_uid(&node, epoch),
            event: Event {
                at: step.now,
                node_id: node.clone(),
                kind: EventKind::Offline {
                    reason: format!(
                        "controller lost: {holder} stopped renewing the link's lease and no \
                         controller took it over (swept by {me})"
                    ),
                },
            },
        });
        outcome.swept.push((node, holder));
    }
    insert_event_rows!(conn, Dialect::MySql, &events, max_rows);
    if step.cluster.pusher {
        sqlx::query(AssertSqlSafe(sql::claim_duty()))
            .bind(PUSHER_LEASE)
            .bind(me)
            .bind(ttl_ms)
            .execute(&mut *conn)
            .await?;
        let holder: Option<String> = sqlx::query(sql::SELECT_DUTY)
            .bind(PUSHER_LEASE)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        outcome.pusher = holder.as_deref() == Some(me);
    }
    Ok((outcome, skip))
}

/// A row of `sql::select_remote_holders`: node, holder, peer URL.
fn remote_holder_row(row: &sqlx::mysql::MySqlRow) -> Result<RemoteHolder, sqlx::Error> {
    Ok(RemoteHolder {
        node: row.try_get(0)?,
        holder: row.try_get(1)?,
        peer_url: row.try_get(2)?,
    })
}

/// The controller lease that decides who pushes the fleet's aggregates.
pub const PUSHER_LEASE: &str = "pusher";

/// The uid of a swept node's offline event: the same for every controller that might sweep it
/// (only one does), so a retried flush writes it once.
fn lapse_uid(node: &str, epoch: i64) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same in every process.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut hasher);
    format!("lapse-{:016x}-{:x}", hasher.finish(), epoch)
}

/// What one successful flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: usize,
    /// Data statements in the transaction (BEGIN and COMMIT not counted).
    pub statements: usize,
}

impl Backend {
    /// Connects (at most `timeout` per attempt to get a connection) and applies migrations.
    pub async fn open(target: &DatabaseTarget, timeout: Duration) -> Result<Backend, String> {
        let backend = match target {
            DatabaseTarget::MySql { url } => {
                let options = MySqlConnectOptions::from_str(url)
                    .map_err(|e| format!("bad URL: {e}"))?
                    .charset("utf8mb4");
                let pool = MySqlPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(timeout)
                    .connect_with(options)
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                Backend::MySql(pool)
            }
            DatabaseTarget::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(timeout);
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(timeout)
                    .connect_with(options)
                    .await
                    .map_err(|e| format!("cannot open: {e}"))?;
                Backend::Sqlite(pool)
            }
        };
        let migrated = match &backend {
            Backend::MySql(pool) => MYSQL_MIGRATOR.run(pool).await,
            Backend::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
        };
        migrated.map_err(|e| format!("the database refused the schema: {e}"))?;
        Ok(backend)
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Backend::MySql(_) => Dialect::MySql,
            Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Writes the batch in one transaction: nodes, then devices, then events, each as
    /// multi-row statements of at most `max_rows` rows. With a lease step (cluster mode, MySQL
    /// only) the same transaction first claims, releases and renews leases, and a node recorded
    /// offline here is not written where another controller holds it.
    pub async fn write(
        &self,
        batch: &Batch,
        max_rows: usize,
        lease: Option<LeaseStep<'_>>,
    ) -> Result<(Written, Option<LeaseOutcome>), sqlx::Error> {
        let dialect = self.dialect();
        match (self, lease) {
            (Backend::MySql(pool), lease) => {
                let mut conn = pool.acquire().await?;
                let written = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let (outcome, skip) = match lease {
                        Some(step) => {
                            let (outcome, skip) = lease_step(&mut tx, &step, max_rows).await?;
                            (Some(outcome), skip)
                        }
                        None => (None, Vec::new()),
                    };
                    let nodes: Vec<&NodeRecord> = batch
                        .nodes
                        .iter()
                        .filter(|n| n.online || !skip.contains(&n.info.node_id))
                        .collect();
                    let statements = write_rows!(tx, dialect, batch, &nodes, max_rows);
                    tx.commit().await?;
                    Ok((
                        Written {
                            rows: batch.rows() - (batch.nodes.len() - nodes.len()),
                            statements,
                        },
                        outcome,
                    ))
                }
                .await;
                discard_if_failed(&mut conn, &written);
                written
            }
            (Backend::Sqlite(pool), None) => {
                let mut conn = pool.acquire().await?;
                let written = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let nodes: Vec<&NodeRecord> = batch.nodes.iter().collect();
                    let statements = write_rows!(tx, dialect, batch, &nodes, max_rows);
                    tx.commit().await?;
                    Ok((
                        Written {
                            rows: batch.rows(),
                            statements,
                        },
                        None,
                    ))
                }
                .await;
                discard_if_failed(&mut conn, &written);
                written
            }
            (Backend::Sqlite(_), Some(_)) => Err(sqlx::Error::Configuration(
                "leases need MySQL/MariaDB: the embedded SQLite store serves one controller".into(),
            )),
        }
    }

    /// At start-up in cluster mode (MySQL): gives up what `me`'s earlier run held and returns
    /// the nodes other controllers hold now.
    pub async fn start_leases(&self, me: &str) -> Result<Vec<String>, String> {
        let Backend::MySql(pool) = self else {
            return Err("leases need MySQL/MariaDB".into());
        };
        sqlx::query(sql::RELEASE_ALL)
            .bind(me)
            .execute(pool)
            .await
            .map_err(|e| format!("releasing this controller's earlier leases: {e}"))?;
        let rows = sqlx::query(AssertSqlSafe(sql::select_held_elsewhere()))
            .bind(me)
            .fetch_all(pool)
            .await
            .map_err(|e| format!("reading the leases: {e}"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(|e| e.to_string()))
            .collect()
    }

    /// Every node a controller other than `me` holds now, with its peer URL.
    pub async fn remote_holders(&self, me: &str) -> Result<Vec<RemoteHolder>, String> {
        self.read_remote_holders(me, None).await
    }

    /// The controller other than `me` holding `node` now, with its peer URL.
    pub async fn remote_holder(
        &self,
        me: &str,
        node: &str,
    ) -> Result<Option<RemoteHolder>, String> {
        Ok(self.read_remote_holders(me, Some(node)).await?.pop())
    }

    /// The nodes other controllers than `me` hold (`node` only, when given: one row at most).
    async fn read_remote_holders(
        &self,
        me: &str,
        node: Option<&str>,
    ) -> Result<Vec<RemoteHolder>, String> {
        let Backend::MySql(pool) = self else {
            return Ok(Vec::new());
        };
        let mut query = sqlx::query(AssertSqlSafe(sql::select_remote_holders(node.is_some())))
            .persistent(false)
            .bind(me);
        if let Some(node) = node {
            query = query.bind(node);
        }
        let rows = query
            .fetch_all(pool)
            .await
            .map_err(|e| format!("reading the leases: {e}"))?;
        rows.iter()
            .map(remote_holder_row)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("reading the leases: {e}"))
    }

    /// `(node, scrape JSON)` of the nodes another controller than `me` holds now.
    pub async fn remote_scrapes(&self, me: &str) -> Result<Vec<(String, String)>, String> {
        let Backend::MySql(pool) = self else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(AssertSqlSafe(sql::select_remote_scrapes()))
            .persistent(false)
            .bind(me)
            .fetch_all(pool)
            .await
            .map_err(|e| format!("reading the fleet's discovery targets: {e}"))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| format!("reading the fleet's discovery targets: {e}"))
    }

    pub async fn load_nodes(&self) -> Result<Vec<NodeRecord>, String> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sql::SELECT_NODES)
                .fetch_all(pool)
                .await
                .map_err(|e| format!("reading nodes: {e}"))?;
            rows.iter()
                .map(|row| -> Result<NodeRecord, String> {
                    let node_id: String = row.try_get("node_id").map_err(|e| e.to_string())?;
                    let bad = |e: String| format!("node {node_id:?}: {e}");
                    let get_list = |column: &str| -> Result<Vec<String>, String> {
                        let text: Option<String> = row.try_get(column).map_err(|e| bad(e.to_string()))?;
                        serde_json::from_str(text.as_deref().unwrap_or("[]"))
                            .map_err(|e| bad(format!("{column} is not a JSON list of strings: {e}")))
                    };
                    let interfaces: Option<String> =
                        row.try_get("interfaces").map_err(|e| bad(e.to_string()))?;
                    let interfaces = serde_json::from_str(interfaces.as_deref().unwrap_or("[]"))
                        .map_err(|e| bad(format!("interfaces is not a JSON list of interfaces: {e}")))?;
                    Ok(NodeRecord {
                        info: NodeInfo {
                            hostname: row.try_get("hostname").map_err(|e| bad(e.to_string()))?,
                            addresses: get_list("addresses")?,
                            mac_addresses: get_list("mac_addresses")?,
                            roles: get_list("roles")?,
                            agent_version: row.try_get("agent_version").map_err(|e| bad(e.to_string()))?,
                            cert_fingerprint: row.try_get("cert_fingerprint").map_err(|e| bad(e.to_string()))?,
                            services: get_list("services")?,
                            interfaces,
                            scrape: row.try_get::<Option<String>, _>("scrape").map_err(|e| bad(e.to_string()))?.unwrap_or_default(),
                            node_id: node_id.clone(),
                        },
                        first_seen: from_millis(row.try_get("first_seen_ms").map_err(|e| bad(e.to_string()))?),
                        last_seen: from_millis(row.try_get("last_seen_ms").map_err(|e| bad(e.to_string()))?),
                        online: row.try_get("online").map_err(|e| bad(e.to_string()))?,
                    })
                })
                .collect()
        })
    }

    pub async fn load_devices(&self) -> Result<Vec<DeviceReport>, String> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sql::SELECT_DEVICES)
                .fetch_all(pool)
                .await
                .map_err(|e| format!("reading storage devices: {e}"))?;
            rows.iter()
                .map(|row| -> Result<DeviceReport, String> {
                    let device_id: i64 = row.try_get("device_id").map_err(|e| e.to_string())?;
                    let bad = |e: sqlx::Error| format!("storage device {device_id}: {e}");
                    let get_u64 = |column: &str| -> Result<u64, String> {
                        let v: i64 = row.try_get(column).map_err(bad)?;
                        Ok(u64::try_from(v).unwrap_or(0))
                    };
                    Ok(DeviceReport {
                        device_id,
                        node_id: row.try_get("node_id").map_err(bad)?,
                        fragment_folder: row.try_get("fragment_folder").map_err(bad)?,
                        total_bytes: get_u64("total_bytes")?,
                        free_bytes: get_u64("free_bytes")?,
                        fragment_count: get_u64("fragment_count")?,
                        reported_at: from_millis(row.try_get("reported_at_ms").map_err(bad)?),
                    })
                })
                .collect()
        })
    }

    /// Requested operations with no end in the log, made at least `older_than` ago, oldest
    /// first: `(node, at, request)`.
    pub async fn open_requests(
        &self,
        older_than: Duration,
    ) -> Result<Vec<(String, i64, Requested)>, String> {
        let before_ms = super::writer::unix_ms(std::time::SystemTime::now() - older_than);
        with_pool!(self, pool => {
            let rows = sqlx::query(sql::SELECT_OPEN_REQUESTS)
                .bind(before_ms)
                .fetch_all(pool)
                .await
                .map_err(|e| format!("reading requested operations: {e}"))?;
            rows.iter()
                .map(|row| -> Result<(String, i64, Requested), String> {
                    let bad = |e: sqlx::Error| format!("requested operation: {e}");
                    let path: Option<String> = row.try_get("path").map_err(bad)?;
                    let path = path.unwrap_or_default();
                    let actor: Option<String> = row.try_get("actor").map_err(bad)?;
                    let action: Option<String> = row.try_get("action").map_err(bad)?;
                    let id: Option<String> = row.try_get("operation_id").map_err(bad)?;
                    Ok((
                        row.try_get("node_id").map_err(bad)?,
                        row.try_get("at_ms").map_err(bad)?,
                        Requested {
                            operation_id: id.unwrap_or_default(),
                            actor: actor.unwrap_or_default(),
                            action: action.unwrap_or_default(),
                            path: OperationPath::parse(&path)
                                .ok_or_else(|| format!("unknown operation path {path:?}"))?,
                            via: None,
                        },
                    ))
                })
                .collect()
        })
    }

    /// The events `query` selects: the first `limit` after `after_id` in order, or with
    /// `newest_first` the last `limit` of them, newest first.
    pub async fn events(
        &self,
        query: &EventQuery,
        newest_first: bool,
    ) -> Result<Vec<EventRecord>, String> {
        let limit = i64::from(query.limit.max(1));
        let text = sql::select_events(query.node_id.is_some(), newest_first);
        with_pool!(self, pool => {
            let select = sqlx::query(text).bind(query.after_id);
            let select = match &query.node_id {
                Some(node_id) => select.bind(node_id.as_str()),
                None => select,
            };
            let rows = select
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(|e| format!("reading events: {e}"))?;
            rows.iter()
                .map(|row| -> Result<EventRecord, String> {
                    let id: i64 = row.try_get("id").map_err(|e| e.to_string())?;
                    let bad = |e: sqlx::Error| format!("event {id}: {e}");
                    let row = EventRow {
                        kind: row.try_get("kind").map_err(bad)?,
                        actor: row.try_get("actor").map_err(bad)?,
                        action: row.try_get("action").map_err(bad)?,
                        path: row.try_get("path").map_err(bad)?,
                        result: row.try_get("result").map_err(bad)?,
                        detail: row.try_get("detail").map_err(bad)?,
                        duration_ms: row.try_get("duration_ms").map_err(bad)?,
                        operation_id: row.try_get("operation_id").map_err(bad)?,
                        at_ms: row.try_get("at_ms").map_err(bad)?,
                        node_id: row.try_get("node_id").map_err(bad)?,
                    };
                    Ok(EventRecord {
                        id,
                        event: row.into_event().map_err(|e| format!("event {id}: {e}"))?,
                    })
                })
                .collect()
        })
    }
}

fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string())
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An event as its columns.
struct EventRow {
    kind: String,
    actor: Option<String>,
    action: Option<String>,
    path: Option<String>,
    result: Option<String>,
    detail: String,
    duration_ms: Option<i64>,
    operation_id: Option<String>,
    at_ms: i64,
    node_id: String,
}

impl EventRow {
    fn from(event: &Event) -> EventRow {
        let f = event.kind.fields();
        EventRow {
            kind: f.kind.to_string(),
            actor: f.actor,
            action: f.action,
            path: f.path.map(str::to_string),
            result: f.result.map(str::to_string),
            detail: f.detail,
            duration_ms: f
                .duration_ms
                .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            operation_id: f.operation_id,
            at_ms: to_millis(event.at),
            node_id: event.node_id.clone(),
        }
    }

    fn into_event(self) -> Result<Event, String> {
        let kind = match self.kind.as_str() {
            "online" => EventKind::Online,
            "offline" => EventKind::Offline {
                reason: self.detail,
            },
            "requested" => {
                let path = self.path.unwrap_or_default();
                EventKind::Requested(Requested {
                    operation_id: self.operation_id.unwrap_or_default(),
                    actor: self.actor.unwrap_or_default(),
                    action: self.action.unwrap_or_default(),
                    path: OperationPath::parse(&path)
                        .ok_or_else(|| format!("unknown operation path {path:?}"))?,
                    via: (!self.detail.is_empty()).then_some(self.detail),
                })
            }
            "device_conflict" => EventKind::DeviceConflict {
                device_id: self
                    .action
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| "device conflict without a device id".to_string())?,
                owner: self.actor.unwrap_or_default(),
            },
            "alert" => {
                let (severity, summary) = self.detail.split_once(": ").unwrap_or(("", ""));
                EventKind::Alert(AlertNotice {
                    alertname: self.action.unwrap_or_default(),
                    firing: match self.result.as_deref() {
                        Some("firing") => true,
                        Some("resolved") => false,
                        other => return Err(format!("unknown alert status {other:?}")),
                    },
                    severity: severity.to_string(),
                    summary: summary.to_string(),
                })
            }
            "operation" => {
                let path = self.path.unwrap_or_default();
                EventKind::Operation(Operation {
                    operation_id: self.operation_id,
                    actor: self.actor.unwrap_or_default(),
                    action: self.action.unwrap_or_default(),
                    path: OperationPath::parse(&path)
                        .ok_or_else(|| format!("unknown operation path {path:?}"))?,
                    result: match self.result.as_deref() {
                        Some("ok") => OperationResult::Ok,
                        Some("failed") => OperationResult::Failed { error: self.detail },
                        Some("unknown") => OperationResult::Unknown {
                            reason: self.detail,
                        },
                        other => return Err(format!("unknown operation result {other:?}")),
                    },
                    duration: Duration::from_millis(
                        u64::try_from(self.duration_ms.unwrap_or(0)).unwrap_or(0),
                    ),
                })
            }
            other => return Err(format!("unknown event kind {other:?}")),
        };
        Ok(Event {
            at: from_millis(self.at_ms),
            node_id: self.node_id,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn event_rows_round_trip() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let kinds = [
            EventKind::Online,
            EventKind::Offline {
                reason: "link closed".into(),
            },
            EventKind::Operation(Operation {
                operation_id: None,
                actor: "alice".into(),
                action: "wake".into(),
                path: OperationPath::WakeOnLan,
                result: OperationResult::Failed {
                    error: "no answer".into(),
                },
                duration: Duration::from_millis(1500),
            }),
            EventKind::Operation(Operation {
                operation_id: Some("4f2a".into()),
                actor: "bob".into(),
                action: "stop".into(),
                path: OperationPath::Agent,
                result: OperationResult::Ok,
                duration: Duration::from_millis(3),
            }),
            EventKind::Operation(Operation {
                operation_id: Some("4f2b".into()),
                actor: "bob".into(),
                action: "restart dfs".into(),
                path: OperationPath::Agent,
                result: OperationResult::Unknown {
                    reason: "link lost".into(),
                },
                duration: Duration::from_millis(3),
            }),
            EventKind::Requested(Requested {
                operation_id: "4f2b".into(),
                actor: "bob".into(),
                action: "restart dfs".into(),
                path: OperationPath::Agent,
                via: Some("forwarded by c1 to c2".into()),
            }),
            EventKind::Alert(AlertNotice {
                alertname: "NodewardenAgentDown".into(),
                firing: true,
                severity: "critical".into(),
                summary: "agent on n1 is not answering: scrapes fail".into(),
            }),
            EventKind::Alert(AlertNotice {
                alertname: "NodeLoadHigh".into(),
                firing: false,
                severity: "info".into(),
                summary: "".into(),
            }),
            EventKind::DeviceConflict {
                device_id: 12,
                owner: "n7".into(),
            },
        ];
        for kind in kinds {
            let event = Event {
                at,
                node_id: "n1".into(),
                kind,
            };
            assert_eq!(EventRow::from(&event).into_event().unwrap(), event);
        }
    }

    #[test]
    fn unknown_kind_is_an_error_not_a_panic() {
        let mut row = EventRow::from(&Event {
            at: UNIX_EPOCH,
            node_id: "n".into(),
            kind: EventKind::Online,
        });
        row.kind = "exploded".into();
        assert!(row.into_event().unwrap_err().contains("exploded"));
    }
}

#[cfg(test)]
mod migration_tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Migration file names, and per file the tables with their column names.
    fn schema(dialect: &str) -> BTreeMap<String, Vec<(String, Vec<String>)>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut tables: Vec<(String, Vec<String>)> = Vec::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("ALTER TABLE ") {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    if let [table, "ADD", "COLUMN", column, ..] = words[..] {
                        tables.push((format!("{table}+"), vec![column.to_string()]));
                    }
                } else if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                    let name = rest.split_whitespace().next().unwrap().to_string();
                    tables.push((name, Vec::new()));
                } else if let (Some(first), Some(table)) =
                    (line.strip_prefix("    "), tables.last_mut())
                {
                    let word = first.split_whitespace().next().unwrap_or("");
                    if !["PRIMARY", "UNIQUE", "KEY"].contains(&word) && !word.is_empty() {
                        table.1.push(word.to_string());
                    }
                }
            }
            files.insert(
                path.file_name().unwrap().to_string_lossy().into_owned(),
                tables,
            );
        }
        files
    }

    #[test]
    fn both_dialects_have_the_same_migrations_tables_and_columns() {
        let mysql = schema("mysql");
        let first = mysql.values().next().unwrap();
        assert_eq!(first[0].0, "nodes");
        // Every column the code writes, across the migrations that create and extend the table.
        let columns = |table: &str| -> Vec<String> {
            mysql
                .values()
                .flatten()
                .filter(|(t, _)| t == table || *t == format!("{table}+"))
                .flat_map(|(_, c)| c.clone())
                .collect()
        };
        assert_eq!(columns("nodes"), super::sql::NODE_COLUMNS);
        let events = columns("events");
        assert!(
            super::sql::EVENT_COLUMNS
                .iter()
                .all(|c| events.iter().any(|e| e == c))
        );
        assert_eq!(mysql, schema("sqlite"));
    }
}
