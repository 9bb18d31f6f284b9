//! Prometheus HTTP service discovery (`http_sd_configs`): `GET /api/v1/sd/agents` lists every
//! online agent's metrics endpoint, so Prometheus scrapes agents directly and `up` keeps its
//! meaning. One target group per online node: target `<address the link comes from>:<metrics
//! port the agent reports>`, labels `node`, `roles`, `device_ids` (comma-separated), and
//! `__scheme__="https"` for an agent that announced TLS on its metrics port
//! ([`CAP_METRICS_TLS`]; the job's `tls_config` still says what to trust). A node whose agent has
//! not reported its metrics port yet is left out until it does.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::registry::Node;
use crate::state::Controller;
use nodewarden_shared::protocol::CAP_METRICS_TLS;

pub const PATH: &str = "/api/v1/sd/agents";

/// One entry of the HTTP SD response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The target groups for the registry's online nodes (a plain function of the nodes).
pub fn target_groups<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<TargetGroup> {
    nodes
        .filter(|n| n.online)
        .filter_map(|n| {
            let connection = n.connection.as_ref()?;
            let report = n.last_report.as_ref()?;
            let port = report.metrics_port?;
            let ip = connection.remote.parse::<SocketAddr>().ok()?.ip();
            // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d; scrape it as IPv4.
            let ip = match ip {
                std::net::IpAddr::V6(v6) => {
                    v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip)
                }
                v4 => v4,
            };
            let roles: Vec<&str> = report.roles.iter().map(|r| r.as_str()).collect();
            // Only the devices it owns: a refused claim is not labelled on its target.
            let mut device_ids: Vec<u32> = n.devices.iter().map(|d| d.device_id).collect();
            device_ids.sort_unstable();
            device_ids.dedup();
            let device_ids: Vec<String> = device_ids.iter().map(u32::to_string).collect();
            let mut labels: std::collections::BTreeMap<String, String> = [
                ("node".to_string(), n.name.clone()),
                ("roles".to_string(), roles.join(",")),
                ("device_ids".to_string(), device_ids.join(",")),
            ]
            .into();
            if connection.capabilities.iter().any(|c| c == CAP_METRICS_TLS) {
                labels.insert("__scheme__".into(), "https".into());
            }
            Some(TargetGroup {
                targets: vec![SocketAddr::new(ip, port).to_string()],
                labels,
            })
        })
        .collect()
}

pub fn router(controller: Arc<Controller>) -> Router {
    Router::new()
        .route(PATH, get(agents))
        .with_state(controller)
}

async fn agents(State(c): State<Arc<Controller>>) -> Json<Vec<TargetGroup>> {
    let registry = c.registry.lock().unwrap_or_else(|p| p.into_inner());
    Json(target_groups(registry.nodes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Connection, Registry};
    use nodewarden_shared::protocol::{Role, StateReport, StorageDevice};

    fn conn(id: u64, remote: &str) -> Connection {
        Connection {
            id,
            remote: remote.into(),
            agent_version: "t".into(),
            protocol_version: 1,
            connected_at: 0,
            cert_serial: "ab".into(),
            cert_not_after_unix: 0,
            capabilities: vec![],
        }
    }

    fn device(id: u32) -> StorageDevice {
        StorageDevice {
            device_id: id,
            fragment_dir: format!("/srv/f{id}"),
            total_bytes: 10,
            free_bytes: 5,
            error: None,
        }
    }

    #[test]
    fn online_reported_nodes_with_their_labels() {
        let mut r = Registry::new();
        r.connected("s1", conn(1, "10.0.0.5:40000"), 0);
        r.report(
            "s1",
            1,
            StateReport {
                roles: vec![Role::Storage, Role::Ray],
                storage: vec![device(7), device(3)],
                metrics_port: Some(9100),
                ..Default::default()
            },
            1,
        );
        // IPv4-mapped peer address, no devices, metrics over TLS.
        let mut tls = conn(2, "[::ffff:10.0.0.6]:40001");
        tls.capabilities = vec![CAP_METRICS_TLS.into(), "command:ping".into()];
        r.connected("c1", tls, 0);
        r.report(
            "c1",
            2,
            StateReport {
                roles: vec![Role::Ray],
                metrics_port: Some(9200),
                ..Default::default()
            },
            1,
        );
        // Online but its port is not known yet: left out.
        r.connected("new", conn(3, "10.0.0.7:1"), 0);
        r.report("new", 3, StateReport::default(), 1);
        // Offline: left out.
        r.connected("gone", conn(4, "10.0.0.8:1"), 0);
        r.report(
            "gone",
            4,
            StateReport {
                metrics_port: Some(9100),
                ..Default::default()
            },
            1,
        );
        r.disconnected("gone", 4, "timed out", 2);

        let groups = target_groups(r.nodes());
        let json = serde_json::to_value(&groups).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"targets": ["10.0.0.6:9200"],
                 "labels": {"node": "c1", "roles": "ray", "device_ids": "",
                            "__scheme__": "https"}},
                {"targets": ["10.0.0.5:9100"],
                 "labels": {"node": "s1", "roles": "storage,ray", "device_ids": "3,7"}},
            ])
        );
        assert!(target_groups(Registry::new().nodes()).is_empty());
    }
}
