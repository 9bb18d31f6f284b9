-- Fleet state: nodes, their storage devices, and the audit log of events.
-- Kept in step with ../mysql/20261125000001_fleet_state.sql (same tables, columns and meaning).
-- Timestamps are UTC unix milliseconds in both dialects.
-- String lists (addresses, MAC addresses, roles) are JSON arrays of strings.

CREATE TABLE nodes (
    node_id          TEXT    NOT NULL PRIMARY KEY,
    hostname         TEXT    NOT NULL,
    addresses        TEXT    NOT NULL,
    mac_addresses    TEXT    NOT NULL,
    roles            TEXT    NOT NULL,
    agent_version    TEXT    NOT NULL,
    cert_fingerprint TEXT    NOT NULL,
    first_seen_ms    INTEGER NOT NULL,
    last_seen_ms     INTEGER NOT NULL,
    online           BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX nodes_online ON nodes (online);

CREATE TABLE storage_devices (
    device_id       INTEGER NOT NULL PRIMARY KEY,
    node_id         TEXT    NOT NULL,
    fragment_folder TEXT    NOT NULL,
    total_bytes     INTEGER NOT NULL,
    free_bytes      INTEGER NOT NULL,
    fragment_count  INTEGER NOT NULL,
    reported_at_ms  INTEGER NOT NULL
);
CREATE INDEX storage_devices_node ON storage_devices (node_id);

-- kind: online | offline | operation. For operations: actor (who asked), action (what),
-- path (agent | ssh | wake_on_lan), result (ok | failed), duration_ms. detail: the offline
-- reason or the operation's error. uid makes a retried flush idempotent.
-- AUTOINCREMENT: ids never go backwards, so id order is the order events happened in.
CREATE TABLE events (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    uid         TEXT    NOT NULL UNIQUE,
    at_ms       INTEGER NOT NULL,
    node_id     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    actor       TEXT    NULL,
    action      TEXT    NULL,
    path        TEXT    NULL,
    result      TEXT    NULL,
    detail      TEXT    NOT NULL,
    duration_ms INTEGER NULL
);
CREATE INDEX events_node ON events (node_id, id);
