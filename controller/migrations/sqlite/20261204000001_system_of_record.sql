-- The controller as the fleet's system of record (kept in step with
-- ../mysql/20261204000001_system_of_record.sql).
-- nodes.services: JSON list of the service names the node declares (NULL: none known).
-- nodes.interfaces: JSON list of {name, mac, addresses: [{address, prefix_len, broadcast}]}, what
-- wakes a node whose agent is down (NULL: never described).
-- events.operation_id joins an operation's 'requested' event (written before it is dispatched)
-- with its end ('operation', result ok | failed | unknown). kind gains 'requested' and
-- 'device_conflict' (detail: the device id and its owner).
ALTER TABLE nodes ADD COLUMN services TEXT NULL;
ALTER TABLE nodes ADD COLUMN interfaces TEXT NULL;
ALTER TABLE events ADD COLUMN operation_id TEXT NULL;
CREATE INDEX events_operation ON events (operation_id);
