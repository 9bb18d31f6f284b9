-- Several controllers on one database (issue 16; kept in step with
-- ../mysql/20261206000001_leases.sql). Created for the schemas to match; unused here, since the
-- embedded SQLite store serves one controller.
CREATE TABLE node_leases (
    node_id      TEXT    NOT NULL PRIMARY KEY,
    holder       TEXT    NULL,
    epoch        INTEGER NOT NULL,
    connected_ms INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
);
CREATE INDEX node_leases_holder ON node_leases (holder);
CREATE INDEX node_leases_expires ON node_leases (expires_ms);

CREATE TABLE controller_leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
);

CREATE TABLE controllers (
    controller_id TEXT    NOT NULL PRIMARY KEY,
    peer_url      TEXT    NULL,
    renewed_ms    INTEGER NOT NULL
);

ALTER TABLE nodes ADD COLUMN scrape TEXT NULL;
