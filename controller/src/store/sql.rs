//! The SQL text for both dialects, built by plain functions. Both take `?` placeholders; only
//! the upsert clauses differ.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Sqlite,
}

pub const NODE_COLUMNS: &[&str] = &[
    "node_id",
    "hostname",
    "addresses",
    "mac_addresses",
    "roles",
    "agent_version",
    "cert_fingerprint",
    "first_seen_ms",
    "last_seen_ms",
    "online",
    "services",
    "interfaces",
    "scrape",
];

pub const DEVICE_COLUMNS: &[&str] = &[
    "device_id",
    "node_id",
    "fragment_folder",
    "total_bytes",
    "free_bytes",
    "fragment_count",
    "reported_at_ms",
];

pub const EVENT_COLUMNS: &[&str] = &[
    "uid",
    "at_ms",
    "node_id",
    "kind",
    "actor",
    "action",
    "path",
    "result",
    "detail",
    "duration_ms",
    "operation_id",
];

/// The most placeholders one statement may carry (SQLite's default limit is 32766, MySQL's
/// 65535); chunking keeps well under both.
pub const MAX_PLACEHOLDERS: usize = 30_000;

/// Rows per statement for a table of `columns` columns, given the configured maximum.
pub fn rows_per_statement(configured: usize, columns: usize) -> usize {
    configured.clamp(1, MAX_PLACEHOLDERS / columns.max(1))
}

fn insert_values(table: &str, columns: &[&str], rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns.len()].join(","));
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    sql.reserve(rows * (row.len() + 1));
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&row);
    }
    sql
}

/// Writes the latest state of `rows` nodes; `first_seen_ms` of an existing row is kept.
pub fn upsert_nodes(dialect: Dialect, rows: usize) -> String {
    upsert(
        dialect,
        "nodes",
        NODE_COLUMNS,
        "node_id",
        &["first_seen_ms"],
        rows,
    )
}

pub fn upsert_devices(dialect: Dialect, rows: usize) -> String {
    upsert(
        dialect,
        "storage_devices",
        DEVICE_COLUMNS,
        "device_id",
        &[],
        rows,
    )
}

/// Appends events; an event whose uid is already there (a retried flush) is left alone.
pub fn insert_events(dialect: Dialect, rows: usize) -> String {
    let mut sql = insert_values("events", EVENT_COLUMNS, rows);
    match dialect {
        Dialect::MySql => sql.push_str(" ON DUPLICATE KEY UPDATE uid = uid"),
        Dialect::Sqlite => sql.push_str(" ON CONFLICT (uid) DO NOTHING"),
    }
    sql
}

fn upsert(
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    key: &str,
    keep: &[&str],
    rows: usize,
) -> String {
    let mut sql = insert_values(table, columns, rows);
    let updated = columns.iter().filter(|c| **c != key && !keep.contains(c));
    let assignments: Vec<String> = match dialect {
        Dialect::MySql => updated.map(|c| format!("{c} = VALUES({c})")).collect(),
        Dialect::Sqlite => updated.map(|c| format!("{c} = excluded.{c}")).collect(),
    };
    match dialect {
        Dialect::MySql => sql.push_str(" ON DUPLICATE KEY UPDATE "),
        Dialect::Sqlite => {
            sql.push_str(" ON CONFLICT (");
            sql.push_str(key);
            sql.push_str(") DO UPDATE SET ");
        }
    }
    sql.push_str(&assignments.join(", "));
    sql
}

pub const SELECT_NODES: &str = "SELECT node_id, hostname, addresses, mac_addresses, roles, \
     agent_version, cert_fingerprint, first_seen_ms, last_seen_ms, online, services, interfaces, \
     scrape FROM nodes";

/// Requested operations with no end in the log (the controller stopped while they ran),
/// requested before the bound (`at_ms < ?`).
pub const SELECT_OPEN_REQUESTS: &str = "SELECT r.operation_id, r.node_id, r.actor, r.action, \
     r.path, r.at_ms FROM events r WHERE r.kind = 'requested' AND r.at_ms < ? AND NOT EXISTS \
     (SELECT 1 FROM events c WHERE c.operation_id = r.operation_id AND c.kind = 'operation') \
     ORDER BY r.id";

pub const SELECT_DEVICES: &str = "SELECT device_id, node_id, fragment_folder, total_bytes, \
     free_bytes, fragment_count, reported_at_ms FROM storage_devices";

/// Events after an id, in order (or with `newest_first`, the last ones first); with `by_node`,
/// of one node only.
pub fn select_events(by_node: bool, newest_first: bool) -> &'static str {
    match (by_node, newest_first) {
        (true, false) => {
            "SELECT id, at_ms, node_id, kind, actor, action, path, result, detail, duration_ms, \
             operation_id \
             FROM events WHERE id > ? AND node_id = ? ORDER BY id LIMIT ?"
        }
        (false, false) => {
            "SELECT id, at_ms, node_id, kind, actor, action, path, result, detail, duration_ms, \
             operation_id \
             FROM events WHERE id > ? ORDER BY id LIMIT ?"
        }
        (true, true) => {
            "SELECT id, at_ms, node_id, kind, actor, action, path, result, detail, duration_ms, \
             operation_id \
             FROM events WHERE id > ? AND node_id = ? ORDER BY id DESC LIMIT ?"
        }
        (false, true) => {
            "SELECT id, at_ms, node_id, kind, actor, action, path, result, detail, duration_ms, \
             operation_id \
             FROM events WHERE id > ? ORDER BY id DESC LIMIT ?"
        }
    }
}

/// The database server's clock in unix milliseconds: lease times never depend on the
/// controllers' clocks agreeing (cluster mode is MySQL/MariaDB only).
const DB_NOW_MS: &str = "FLOOR(UNIX_TIMESTAMP(NOW(3)) * 1000)";

/// Claims `rows` node leases: `(node_id, holder, connected_ms, ttl_ms)` each. A claim takes the
/// lease over unless the row holds a newer connection (`connected_ms`); taking over bumps the
/// epoch. MySQL applies the assignments left to right, so `connected_ms` comes last.
pub fn claim_leases(rows: usize) -> String {
    let row = format!("(?, ?, 1, ?, {DB_NOW_MS} + ?)");
    let mut sql = String::from(
        "INSERT INTO node_leases (node_id, holder, epoch, connected_ms, expires_ms) VALUES ",
    );
    sql.push_str(&vec![row.as_str(); rows].join(","));
    sql.push_str(
        " ON DUPLICATE KEY UPDATE \
         holder = IF(VALUES(connected_ms) >= connected_ms, VALUES(holder), holder), \
         epoch = IF(VALUES(connected_ms) >= connected_ms, epoch + 1, epoch), \
         expires_ms = IF(VALUES(connected_ms) >= connected_ms, VALUES(expires_ms), expires_ms), \
         connected_ms = GREATEST(connected_ms, VALUES(connected_ms))",
    );
    sql
}

/// Gives up `rows` leases this controller (first placeholder) still holds.
pub fn release_leases(rows: usize) -> String {
    format!(
        "UPDATE node_leases SET holder = NULL, expires_ms = 0 WHERE holder = ? AND node_id IN ({})",
        vec!["?"; rows].join(",")
    )
}

/// Of `rows` nodes, those another controller (first placeholder: this one) holds now.
pub fn held_elsewhere(rows: usize) -> String {
    format!(
        "SELECT node_id FROM node_leases WHERE holder IS NOT NULL AND holder <> ? \
         AND expires_ms > {DB_NOW_MS} AND node_id IN ({})",
        vec!["?"; rows].join(",")
    )
}

/// Renews every lease this controller holds: `(ttl_ms, holder)`.
pub fn renew_leases() -> String {
    format!("UPDATE node_leases SET expires_ms = {DB_NOW_MS} + ? WHERE holder = ?")
}

/// At start-up: what this controller's earlier run held is given up (it holds no link yet).
pub const RELEASE_ALL: &str =
    "UPDATE node_leases SET holder = NULL, expires_ms = 0 WHERE holder = ?";

/// At start-up: nodes other controllers hold now (they stay online).
pub fn select_held_elsewhere() -> String {
    format!(
        "SELECT node_id FROM node_leases WHERE holder IS NOT NULL AND holder <> ? \
         AND expires_ms > {DB_NOW_MS}"
    )
}

pub const SELECT_HELD: &str = "SELECT node_id, epoch FROM node_leases WHERE holder = ?";

/// Lapsed leases (their holder stopped renewing): `(limit)`.
pub fn select_lapsed() -> String {
    format!(
        "SELECT node_id, holder FROM node_leases WHERE holder IS NOT NULL \
         AND expires_ms < {DB_NOW_MS} ORDER BY expires_ms LIMIT ?"
    )
}

/// Sweeps one lapsed lease `(node_id, holder)` if it is still lapsed and still that holder's:
/// one affected row means this controller records the node offline.
pub fn sweep_lapsed() -> String {
    format!(
        "UPDATE node_leases SET holder = NULL, epoch = epoch + 1 WHERE node_id = ? AND holder = ? \
         AND expires_ms < {DB_NOW_MS}"
    )
}

pub const NODE_OFFLINE: &str = "UPDATE nodes SET online = FALSE WHERE node_id = ?";

pub const SELECT_EPOCH: &str = "SELECT epoch FROM node_leases WHERE node_id = ?";

/// Takes or renews the controller lease `(name, holder, ttl_ms)`: renewed by its holder, taken
/// by another only once lapsed. MySQL applies the assignments left to right.
pub fn claim_duty() -> String {
    format!(
        "INSERT INTO controller_leases (name, holder, expires_ms) VALUES (?, ?, {DB_NOW_MS} + ?) \
         ON DUPLICATE KEY UPDATE \
         holder = IF(holder = VALUES(holder) OR expires_ms < {DB_NOW_MS}, VALUES(holder), holder), \
         expires_ms = IF(holder = VALUES(holder), VALUES(expires_ms), expires_ms)"
    )
}

/// Publishes this controller `(controller_id, peer_url)` and when its step ran.
pub fn upsert_controller() -> String {
    format!(
        "INSERT INTO controllers (controller_id, peer_url, renewed_ms) VALUES (?, ?, {DB_NOW_MS}) \
         ON DUPLICATE KEY UPDATE peer_url = VALUES(peer_url), renewed_ms = VALUES(renewed_ms)"
    )
}

/// Nodes another controller (placeholder: this one) holds now, with the holder's peer URL;
/// with a node placeholder too when `one` is set.
pub fn select_remote_holders(one: bool) -> String {
    format!(
        "SELECT l.node_id, l.holder, c.peer_url FROM node_leases l LEFT JOIN controllers c \
         ON c.controller_id = l.holder WHERE l.holder IS NOT NULL AND l.holder <> ? \
         AND l.expires_ms > {DB_NOW_MS}{}",
        if one { " AND l.node_id = ?" } else { "" }
    )
}

/// The discovery target groups of the nodes another controller (placeholder: this one) holds.
pub fn select_remote_scrapes() -> String {
    format!(
        "SELECT n.node_id, n.scrape FROM nodes n JOIN node_leases l ON l.node_id = n.node_id \
         WHERE l.holder IS NOT NULL AND l.holder <> ? AND l.expires_ms > {DB_NOW_MS} \
         AND n.scrape IS NOT NULL AND n.scrape <> ''"
    )
}

pub const SELECT_DUTY: &str = "SELECT holder FROM controller_leases WHERE name = ?";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_upsert_per_dialect() {
        assert_eq!(
            upsert_nodes(Dialect::Sqlite, 2),
            "INSERT INTO nodes (node_id, hostname, addresses, mac_addresses, roles, agent_version, \
             cert_fingerprint, first_seen_ms, last_seen_ms, online, services, interfaces, scrape) \
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?),(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (node_id) DO \
             UPDATE SET \
             hostname = excluded.hostname, addresses = excluded.addresses, \
             mac_addresses = excluded.mac_addresses, roles = excluded.roles, \
             agent_version = excluded.agent_version, cert_fingerprint = excluded.cert_fingerprint, \
             last_seen_ms = excluded.last_seen_ms, online = excluded.online, \
             services = excluded.services, interfaces = excluded.interfaces, \
             scrape = excluded.scrape"
        );
        let mysql = upsert_nodes(Dialect::MySql, 1);
        assert!(mysql.ends_with(
            "ON DUPLICATE KEY UPDATE hostname = VALUES(hostname), addresses = VALUES(addresses), \
             mac_addresses = VALUES(mac_addresses), roles = VALUES(roles), \
             agent_version = VALUES(agent_version), cert_fingerprint = VALUES(cert_fingerprint), \
             last_seen_ms = VALUES(last_seen_ms), online = VALUES(online), \
             services = VALUES(services), interfaces = VALUES(interfaces), \
             scrape = VALUES(scrape)"
        ));
        assert!(!mysql.contains("first_seen_ms = "));
    }

    #[test]
    fn events_are_idempotent_per_dialect() {
        assert!(insert_events(Dialect::MySql, 1).ends_with("ON DUPLICATE KEY UPDATE uid = uid"));
        assert!(insert_events(Dialect::Sqlite, 3).ends_with("ON CONFLICT (uid) DO NOTHING"));
        assert_eq!(insert_events(Dialect::Sqlite, 3).matches('?').count(), 33);
    }

    #[test]
    fn chunking_bounds_placeholders() {
        assert_eq!(rows_per_statement(500, 10), 500);
        assert_eq!(rows_per_statement(1_000_000, 10), 3000);
        assert_eq!(rows_per_statement(0, 10), 1);
    }
}
