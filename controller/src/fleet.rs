//! Maps what the link learns (connections, state reports, inventories, disconnections) onto the
//! registry and the store's records, and the store's records back onto a registry at start.
//! Plain functions over the shared state, the protocol and the store types: no I/O, no waiting —
//! the store handle only queues, its writer persists.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewarden_shared::protocol::{Interface, InterfaceAddress, Inventory, Role, StateReport};
use nodewarden_shared::wol::MacAddress;

use crate::registry::{Connected, Connection, KnownDevice, KnownNode, Node, Registry};
use crate::state::{Controller, lock};
use crate::store::{
    AddressRecord, DeviceReport, InterfaceRecord, NodeInfo, NodeRecord, StoreHandle,
};

/// SHA-256 of a certificate's DER, lower-case hex: what operators compare with `openssl x509 -fingerprint -sha256`.
pub fn fingerprint(der: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What the controller knows about a node from its certificate and connection; fixed for the
/// connection's life.
pub struct Identity {
    pub node: String,
    pub remote_ip: String,
    pub agent_version: String,
    pub cert_fingerprint: String,
}

pub fn system_time(unix_millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_millis)
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The store's record of `node`: what the registry knows of it, and who it is on this
/// connection.
fn node_info(node: &Node, id: &Identity) -> NodeInfo {
    let inventory = node.inventory.as_ref();
    let interfaces = inventory.map(interface_records).unwrap_or_default();
    let mut macs: Vec<String> = interfaces.iter().filter_map(|i| i.mac.clone()).collect();
    macs.sort();
    macs.dedup();
    NodeInfo {
        node_id: id.node.clone(),
        hostname: inventory.map(|i| i.hostname.clone()).unwrap_or_default(),
        // The address the agent came from first: the SSH fallback's default host.
        addresses: vec![id.remote_ip.clone()],
        mac_addresses: macs,
        roles: node.roles.iter().map(|r| r.as_str().to_string()).collect(),
        agent_version: id.agent_version.clone(),
        cert_fingerprint: id.cert_fingerprint.clone(),
        services: node.services.clone(),
        interfaces,
        scrape: crate::sd::node_scrape(node),
    }
}

fn interface_records(inventory: &Inventory) -> Vec<InterfaceRecord> {
    inventory
        .interfaces
        .iter()
        .map(|i| InterfaceRecord {
            name: i.name.clone(),
            mac: i.mac.map(|m| m.to_string()),
            addresses: i
                .addresses
                .iter()
                .map(|a| AddressRecord {
                    address: a.address.to_string(),
                    prefix_len: a.prefix_len,
                    broadcast: a.broadcast.map(|b| b.to_string()),
                })
                .collect(),
        })
        .collect()
}

/// The inventory a stored record describes (entries that do not parse are left out: a record
/// written by hand or by an older version must not stop the controller).
fn inventory_of(info: &NodeInfo) -> Option<Inventory> {
    if info.hostname.is_empty() && info.interfaces.is_empty() {
        return None;
    }
    let interfaces = info
        .interfaces
        .iter()
        .map(|i| Interface {
            name: i.name.clone(),
            mac: i.mac.as_deref().and_then(|m| m.parse::<MacAddress>().ok()),
            addresses: i
                .addresses
                .iter()
                .filter_map(|a| {
                    Some(InterfaceAddress {
                        address: a.address.parse().ok()?,
                        prefix_len: a.prefix_len,
                        broadcast: a.broadcast.as_deref().and_then(|b| b.parse().ok()),
                    })
                })
                .collect(),
        })
        .collect();
    Some(Inventory {
        hostname: info.hostname.clone(),
        interfaces,
    })
}

/// The registry the store remembers: every node offline, with its roles, services, devices,
/// inventory and last address.
pub fn restore(nodes: &[NodeRecord], devices: &[DeviceReport]) -> Registry {
    Registry::restore(known_nodes(nodes, devices))
}

/// In a cluster: what the shared database says of the nodes this controller holds no link of
/// (another controller's, or new to it since it started), so it can plan actions on them.
pub fn learn(controller: &Controller, nodes: &[NodeRecord], devices: &[DeviceReport]) {
    let mut registry = lock(&controller.registry);
    for known in known_nodes(nodes, devices) {
        registry.learn(known);
    }
}

/// The store's records as the registry's known nodes.
fn known_nodes(nodes: &[NodeRecord], devices: &[DeviceReport]) -> Vec<KnownNode> {
    nodes
        .iter()
        .map(|record| {
            let info = &record.info;
            KnownNode {
                name: info.node_id.clone(),
                roles: info
                    .roles
                    .iter()
                    .filter_map(|r| serde_json::from_value(serde_json::json!(r)).ok())
                    .collect::<Vec<Role>>(),
                services: info.services.clone(),
                inventory: inventory_of(info),
                last_ip: info
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok()),
                last_seen: unix_millis(record.last_seen),
                devices: devices
                    .iter()
                    .filter(|d| d.node_id == info.node_id)
                    .filter_map(|d| {
                        Some(KnownDevice {
                            device_id: u32::try_from(d.device_id).ok()?,
                            fragment_dir: d.fragment_folder.clone(),
                            total_bytes: d.total_bytes,
                            free_bytes: d.free_bytes,
                            error: None,
                        })
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A node's agent said hello on `conn`.
pub fn connected(controller: &Controller, id: &Identity, conn: Connection, now: u64) -> Connected {
    let mut registry = lock(&controller.registry);
    let change = registry.connected(&id.node, conn, now);
    if let (Some(store), Some(node)) = (controller.store(), registry.get(&id.node))
        && let Err(e) = store.node_connected(node_info(node, id), system_time(now))
    {
        tracing::warn!(node = %id.node, error = %e, "node not recorded");
    }
    drop(registry);
    if change == Connected::Online {
        controller.transition();
    }
    change
}

/// A state report arrived on connection `conn_id`. The node's record is rewritten only when
/// what it says about the node changed; its devices are recorded when it owns them, and a
/// device another node owns is refused and logged once as a conflict.
pub fn reported(
    controller: &Controller,
    id: &Identity,
    conn_id: u64,
    report: StateReport,
    now: u64,
) {
    let point = crate::history::Point::from_report(now, &report);
    let mut registry = lock(&controller.registry);
    let Some(outcome) = registry.report(&id.node, conn_id, report, now) else {
        return;
    };
    // A report from the node's current connection: into the node's chart history.
    lock(&controller.history).record(&id.node, point);
    let Some(store) = controller.store() else {
        return;
    };
    let at = system_time(now);
    // In a cluster the record also carries the node's discovery targets, which the others
    // serve: rewritten when they change (a new metrics port or device), not on every report.
    let rewrite =
        outcome.facts_changed || (outcome.targets_changed && store.cluster_id().is_some());
    let recorded = match registry.get(&id.node) {
        Some(node) if rewrite => store
            .node_updated(node_info(node, id))
            .and_then(|()| store.node_seen(&id.node, at)),
        _ => store.node_seen(&id.node, at),
    };
    drop(registry);
    if let Err(e) = recorded {
        tracing::warn!(node = %id.node, error = %e, "node not recorded");
        return;
    }
    for device in &outcome.accepted {
        let device_report = DeviceReport {
            device_id: i64::from(device.device_id),
            node_id: id.node.clone(),
            fragment_folder: device.fragment_dir.clone(),
            total_bytes: device.total_bytes,
            free_bytes: device.free_bytes,
            // Counting fragments means listing folders of millions of files; not reported yet.
            fragment_count: 0,
            reported_at: at,
        };
        if let Err(e) = store.device_report(device_report) {
            tracing::warn!(node = %id.node, device = device.device_id, error = %e, "device not recorded");
        }
    }
    for conflict in &outcome.new_conflicts {
        tracing::warn!(
            node = %id.node,
            device = conflict.device_id,
            owner = %conflict.owner,
            "the node reports a storage device another node owns: refused (an operator moves \
             a device with `nodewarden-controller device assign`)"
        );
        if let Err(e) =
            store.device_conflict(&id.node, at, i64::from(conflict.device_id), &conflict.owner)
        {
            tracing::warn!(node = %id.node, error = %e, "device conflict not recorded");
        }
    }
}

/// The agent's inventory arrived on connection `conn_id`: host name, MACs and subnets are
/// recorded (what wakes the node once its agent is down).
pub fn inventory(controller: &Controller, node: &str, conn_id: u64, inventory: Inventory) {
    let mut registry = lock(&controller.registry);
    if !registry.inventory(node, conn_id, inventory) {
        return;
    }
    let (Some(store), Some(known)) = (controller.store(), registry.get(node)) else {
        return;
    };
    let Some(mut info) = store.node(node).map(|r| r.info) else {
        return;
    };
    let fresh = node_info(
        known,
        &Identity {
            node: node.to_string(),
            remote_ip: info.addresses.first().cloned().unwrap_or_default(),
            agent_version: info.agent_version.clone(),
            cert_fingerprint: info.cert_fingerprint.clone(),
        },
    );
    info.hostname = fresh.hostname;
    info.mac_addresses = fresh.mac_addresses;
    info.interfaces = fresh.interfaces;
    if let Err(e) = store.node_updated(info) {
        tracing::warn!(node, error = %e, "inventory not recorded");
    }
}

/// The other metrics endpoints `node`'s agent listed on connection `conn_id` (Ray's, …): for
/// discovery here, and in a cluster in the node's record for the other controllers.
pub fn endpoints(
    controller: &Controller,
    node: &str,
    conn_id: u64,
    list: Vec<nodewarden_shared::protocol::ScrapeEndpoint>,
) {
    let mut registry = lock(&controller.registry);
    if !registry.endpoints(node, conn_id, list) {
        return;
    }
    let (Some(store), Some(known)) = (controller.store(), registry.get(node)) else {
        return;
    };
    if store.cluster_id().is_none() {
        return;
    }
    let Some(mut info) = store.node(node).map(|r| r.info) else {
        return;
    };
    info.scrape = crate::sd::node_scrape(known);
    if let Err(e) = store.node_updated(info) {
        tracing::warn!(node, error = %e, "discovery targets not recorded");
    }
}

/// Connection `conn_id` of `node` ended; true when the node went offline.
/// A device's fragment inventory from `node`'s link: kept (replacing the device's last) when
/// `node` owns the device; refused and logged otherwise (a device another node owns, one no
/// report claimed, or beyond the bound). True when kept.
pub fn fragment_inventory(
    controller: &Controller,
    node: &str,
    inventory: nodewarden_shared::fragments::DeviceInventory,
    generation: u64,
    now: u64,
) -> bool {
    let device_id = inventory.device_id;
    let owner = lock(&controller.registry)
        .device_owner(device_id)
        .map(str::to_string);
    if owner.as_deref() != Some(node) {
        tracing::warn!(
            %node, device = device_id, owner = ?owner,
            "fragment inventory of a device this node does not own: ignored"
        );
        return false;
    }
    let present = inventory.present.len();
    if let Err(e) = lock(&controller.fragments).put_inventory(node, inventory, generation, now) {
        tracing::warn!(%node, error = %e, "fragment inventory ignored");
        return false;
    }
    tracing::debug!(%node, device = device_id, present, "fragment inventory");
    controller.fragments_changed.send_modify(|n| *n += 1);
    true
}

/// A delta from `node` to its device's held inventory: applied (and the device audited again,
/// like a whole inventory), or refused when it does not follow what is held (the caller asks
/// the agent for whole inventories again).
pub fn fragment_delta(
    controller: &Controller,
    node: &str,
    message: nodewarden_shared::protocol::DeltaMessage,
    now: u64,
) -> Result<(), String> {
    let delta = nodewarden_shared::fragments::InventoryDelta::decode(&message.data)
        .map_err(|e| format!("undecodable delta: {e}"))?;
    if delta.device_id != message.device_id {
        return Err(format!(
            "delta sent for device {} describes device {}",
            message.device_id, delta.device_id
        ));
    }
    let present = lock(&controller.fragments)
        .apply_delta(
            node,
            &delta,
            message.base_generation,
            message.generation,
            now,
        )
        .map_err(|e| e.to_string())?;
    tracing::debug!(%node, device = delta.device_id, generation = message.generation,
        added_or_changed = delta.set.len(), removed = delta.removed.len(), present,
        "fragment delta applied");
    controller.fragments_changed.send_modify(|n| *n += 1);
    Ok(())
}

pub fn disconnected(
    controller: &Controller,
    node: &str,
    conn_id: u64,
    reason: &str,
    now: u64,
) -> bool {
    let offline = lock(&controller.registry).disconnected(node, conn_id, reason, now);
    if offline {
        controller.transition();
        if let Some(store) = controller.store()
            && let Err(e) = store.node_offline(node, system_time(now), reason)
        {
            tracing::warn!(node, error = %e, "offline transition not recorded");
        }
    }
    offline
}

/// Records who owns `device_id` now (an operator's assignment): the owner's device row.
pub fn device_assigned(store: &StoreHandle, node: &Node, device_id: u32, at: SystemTime) {
    let known = node.devices.iter().find(|d| d.device_id == device_id);
    let report = DeviceReport {
        device_id: i64::from(device_id),
        node_id: node.name.clone(),
        fragment_folder: known.map(|d| d.fragment_dir.clone()).unwrap_or_default(),
        total_bytes: known.map_or(0, |d| d.total_bytes),
        free_bytes: known.map_or(0, |d| d.free_bytes),
        fragment_count: 0,
        reported_at: at,
    };
    if let Err(e) = store.device_report(report) {
        tracing::error!(node = %node.name, device = device_id, error = %e, "device owner not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewarden_shared::protocol::{ServiceState, ServiceStatus, StorageDevice};

    #[test]
    fn a_node_survives_the_round_trip_through_its_record() {
        let mut r = Registry::new();
        r.connected(
            "s1",
            Connection {
                id: 1,
                remote: "10.0.3.11:4000".into(),
                agent_version: "0.1.0".into(),
                protocol_version: 1,
                connected_at: 0,
                cert_serial: "ab".into(),
                cert_not_after_unix: 0,
                capabilities: vec![],
            },
            5,
        );
        r.report(
            "s1",
            1,
            StateReport {
                roles: vec![Role::Storage, Role::Ray],
                services: vec![ServiceState {
                    name: "dfs".into(),
                    status: ServiceStatus::Running,
                }],
                storage: vec![StorageDevice {
                    device_id: 3,
                    fragment_dir: "/srv/f3".into(),
                    total_bytes: 100,
                    free_bytes: 40,
                    error: None,
                }],
                ..Default::default()
            },
            10,
        );
        r.inventory(
            "s1",
            1,
            Inventory {
                hostname: "s1.lab".into(),
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    mac: Some("52:54:00:00:00:01".parse().unwrap()),
                    addresses: vec![InterfaceAddress {
                        address: "10.0.3.11".parse().unwrap(),
                        prefix_len: 24,
                        broadcast: Some("10.0.3.255".parse().unwrap()),
                    }],
                }],
            },
        );
        let node = r.get("s1").unwrap();
        let info = node_info(
            node,
            &Identity {
                node: "s1".into(),
                remote_ip: "10.0.3.11".into(),
                agent_version: "0.1.0".into(),
                cert_fingerprint: "ff".into(),
            },
        );
        assert_eq!(info.hostname, "s1.lab");
        assert_eq!(info.mac_addresses, ["52:54:00:00:00:01"]);
        assert_eq!(info.services, ["dfs"]);
        assert_eq!(info.roles, ["storage", "ray"]);
        let record = NodeRecord {
            info,
            first_seen: system_time(5),
            last_seen: system_time(10),
            online: false,
        };
        let device = DeviceReport {
            device_id: 3,
            node_id: "s1".into(),
            fragment_folder: "/srv/f3".into(),
            total_bytes: 100,
            free_bytes: 40,
            fragment_count: 0,
            reported_at: system_time(10),
        };
        let restored = restore(&[record], &[device]);
        let back = restored.get("s1").unwrap();
        assert!(!back.online);
        assert_eq!(back.roles, node.roles);
        assert_eq!(back.services, node.services);
        assert_eq!(back.inventory, node.inventory);
        assert_eq!(back.last_ip, node.last_ip);
        assert_eq!(back.devices, node.devices);
        assert_eq!(back.last_seen, Some(10));
        assert_eq!(restored.device_owner(3), Some("s1"));
    }
}
