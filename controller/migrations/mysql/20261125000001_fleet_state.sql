-- Fleet state: nodes, their storage devices, and the audit log of events.
-- Kept in step with ../sqlite/20261125000001_fleet_state.sql (same tables, columns and meaning).
-- Timestamps are UTC unix milliseconds (BIGINT) in both dialects.
-- String lists (addresses, MAC addresses, roles) are JSON arrays of strings.

CREATE TABLE nodes (
    node_id          VARCHAR(255) NOT NULL,
    hostname         TEXT         NOT NULL,
    addresses        TEXT         NOT NULL,
    mac_addresses    TEXT         NOT NULL,
    roles            TEXT         NOT NULL,
    agent_version    TEXT         NOT NULL,
    cert_fingerprint TEXT         NOT NULL,
    first_seen_ms    BIGINT       NOT NULL,
    last_seen_ms     BIGINT       NOT NULL,
    online           BOOLEAN      NOT NULL DEFAULT FALSE,
    PRIMARY KEY (node_id),
    KEY nodes_online (online)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE storage_devices (
    device_id       BIGINT       NOT NULL,
    node_id         VARCHAR(255) NOT NULL,
    fragment_folder TEXT         NOT NULL,
    total_bytes     BIGINT       NOT NULL,
    free_bytes      BIGINT       NOT NULL,
    fragment_count  BIGINT       NOT NULL,
    reported_at_ms  BIGINT       NOT NULL,
    PRIMARY KEY (device_id),
    KEY storage_devices_node (node_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- kind: online | offline | operation. For operations: actor (who asked), action (what),
-- path (agent | ssh | wake_on_lan), result (ok | failed), duration_ms. detail: the offline
-- reason or the operation's error. uid makes a retried flush idempotent.
CREATE TABLE events (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    uid         VARCHAR(40)  NOT NULL,
    at_ms       BIGINT       NOT NULL,
    node_id     VARCHAR(255) NOT NULL,
    kind        VARCHAR(16)  NOT NULL,
    actor       TEXT         NULL,
    action      TEXT         NULL,
    path        VARCHAR(16)  NULL,
    result      VARCHAR(16)  NULL,
    detail      TEXT         NOT NULL,
    duration_ms BIGINT       NULL,
    PRIMARY KEY (id),
    UNIQUE KEY events_uid (uid),
    KEY events_node (node_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
