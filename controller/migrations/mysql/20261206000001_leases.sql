-- Several controllers on one database (issue 16; kept in step with
-- ../sqlite/20261206000001_leases.sql, which no controller uses: SQLite serves one controller).
-- node_leases: which controller holds a node's link. A claim on a newer connection takes the
-- row over and bumps epoch; the holder renews expires_ms every flush; a lease past expires_ms
-- with no new holder is swept by any controller, which records the node offline
-- ('controller lost'). Times are the database server's clock (unix ms), so controllers' clocks
-- do not have to agree; connected_ms orders two claims racing for one node.
CREATE TABLE node_leases (
    node_id      VARCHAR(255) NOT NULL,
    holder       VARCHAR(64)  NULL,
    epoch        BIGINT       NOT NULL,
    connected_ms BIGINT       NOT NULL,
    expires_ms   BIGINT       NOT NULL,
    PRIMARY KEY (node_id),
    KEY node_leases_holder (holder),
    KEY node_leases_expires (expires_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- controller_leases: fleet-wide duties held by one controller at a time ('pusher': the
-- Pushgateway aggregates).
CREATE TABLE controller_leases (
    name       VARCHAR(64) NOT NULL,
    holder     VARCHAR(64) NOT NULL,
    expires_ms BIGINT      NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- controllers: every controller of the cluster, where the others forward actions to it
-- (peer_url, NULL without a peer endpoint), and when its lease step last ran.
CREATE TABLE controllers (
    controller_id VARCHAR(64)  NOT NULL,
    peer_url      VARCHAR(512) NULL,
    renewed_ms    BIGINT       NOT NULL,
    PRIMARY KEY (controller_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- nodes.scrape: the node's service-discovery target groups (JSON), written by the controller
-- holding its link, so that every controller serves discovery for the whole fleet.
ALTER TABLE nodes ADD COLUMN scrape TEXT NULL;
