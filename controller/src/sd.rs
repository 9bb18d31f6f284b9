//! Prometheus HTTP service discovery (`http_sd_configs`): `GET /api/v1/sd/agents` lists every
//! online agent's metrics endpoint, so Prometheus scrapes agents directly and `up` keeps its
//! meaning. One target group per online node: target `<address the link comes from>:<metrics
//! port the agent reports>`, labels `node`, `roles`, `device_ids` (comma-separated), and
//! `__scheme__="https"` for an agent that announced TLS on its metrics port
//! ([`CAP_METRICS_TLS`]; the job's `tls_config` still says what to trust). A node whose agent has
//! not reported its metrics port yet is left out until it does.
//!
//! `GET /api/v1/sd/endpoints/<job>` lists the other endpoints agents report for `job` (Ray's
//! metrics agent as job `ray`: see the agent's `[ray]`), one target group per endpoint, with the
//! same `node` and `roles` labels and `__metrics_path__` when it is not `/metrics`.
//!
//! In a cluster every controller serves the whole fleet: its own nodes from its registry, the
//! nodes other controllers hold from the shared database, where each holder keeps its nodes'
//! target groups ([`node_scrape`], the `nodes.scrape` column). A database that cannot be read
//! leaves the answer with this controller's own nodes (and a warning).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::registry::Node;
use crate::state::Controller;
use nodewarden_shared::protocol::CAP_METRICS_TLS;

pub const PATH: &str = "/api/v1/sd/agents";
/// Followed by the job name.
pub const ENDPOINTS_PATH: &str = "/api/v1/sd/endpoints";

/// One entry of the HTTP SD response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The address to scrape an online node at (the one its link comes from), and its roles.
fn reachable(n: &Node) -> Option<(std::net::IpAddr, String)> {
    if !n.online {
        return None;
    }
    let ip = n
        .connection
        .as_ref()?
        .remote
        .parse::<SocketAddr>()
        .ok()?
        .ip();
    // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d; scrape it as IPv4.
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let roles: Vec<&str> = n.roles.iter().map(|r| r.as_str()).collect();
    Some((ip, roles.join(",")))
}

/// The target groups for the registry's online nodes (a plain function of the nodes).
pub fn target_groups<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<TargetGroup> {
    nodes
        .filter_map(|n| {
            let (ip, roles) = reachable(n)?;
            let connection = n.connection.as_ref()?;
            let port = n.last_report.as_ref()?.metrics_port?;
            // Only the devices it owns: a refused claim is not labelled on its target.
            let mut device_ids: Vec<u32> = n.devices.iter().map(|d| d.device_id).collect();
            device_ids.sort_unstable();
            device_ids.dedup();
            let device_ids: Vec<String> = device_ids.iter().map(u32::to_string).collect();
            let mut labels: std::collections::BTreeMap<String, String> = [
                ("node".to_string(), n.name.clone()),
                ("roles".to_string(), roles),
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

/// The target groups of `job`'s endpoints on the registry's online nodes.
pub fn endpoint_groups<'a>(nodes: impl Iterator<Item = &'a Node>, job: &str) -> Vec<TargetGroup> {
    let mut groups = Vec::new();
    for n in nodes {
        let Some((ip, roles)) = reachable(n) else {
            continue;
        };
        for e in n.endpoints.iter().filter(|e| e.job == job) {
            let mut labels: std::collections::BTreeMap<String, String> = [
                ("node".to_string(), n.name.clone()),
                ("roles".to_string(), roles.clone()),
            ]
            .into();
            if e.path != "/metrics" {
                labels.insert("__metrics_path__".into(), e.path.clone());
            }
            groups.push(TargetGroup {
                targets: vec![SocketAddr::new(ip, e.port).to_string()],
                labels,
            });
        }
    }
    groups
}

/// One node's target groups, as its holder writes them for the cluster's other controllers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeScrape {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<TargetGroup>,
    /// `(job, group)` of each other endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<(String, TargetGroup)>,
}

/// `node`'s target groups as JSON (empty while it has none: offline, or no metrics port yet).
pub fn node_scrape(node: &Node) -> String {
    let scrape = NodeScrape {
        agent: target_groups(std::iter::once(node)).pop(),
        endpoints: node
            .endpoints
            .iter()
            .map(|e| e.job.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .flat_map(|job| {
                endpoint_groups(std::iter::once(node), &job)
                    .into_iter()
                    .map(move |g| (job.clone(), g))
            })
            .collect(),
    };
    if scrape == NodeScrape::default() {
        return String::new();
    }
    serde_json::to_string(&scrape).unwrap_or_default()
}

/// In a cluster: where the other controllers' nodes' targets are read.
#[derive(Clone)]
pub struct ClusterSd {
    pub me: String,
    pub reader: crate::store::StoreReader,
}

#[derive(Clone)]
struct SdState {
    controller: Arc<Controller>,
    cluster: Option<ClusterSd>,
}

pub fn router(controller: Arc<Controller>, cluster: Option<ClusterSd>) -> Router {
    Router::new()
        .route(PATH, get(agents))
        .route(&format!("{ENDPOINTS_PATH}/{{job}}"), get(endpoints))
        .with_state(SdState {
            controller,
            cluster,
        })
}

/// The other controllers' nodes' targets, except nodes this controller lists itself.
async fn remote(
    state: &SdState,
    local: &[TargetGroup],
    pick: impl Fn(NodeScrape) -> Vec<TargetGroup>,
) -> Vec<TargetGroup> {
    let Some(cluster) = &state.cluster else {
        return Vec::new();
    };
    let rows = match cluster.reader.remote_scrapes(&cluster.me).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "discovery lists this controller's nodes only");
            return Vec::new();
        }
    };
    let here: std::collections::BTreeSet<&str> = local
        .iter()
        .filter_map(|g| g.labels.get("node").map(String::as_str))
        .collect();
    rows.into_iter()
        .filter(|(node, _)| !here.contains(node.as_str()))
        .filter_map(|(node, json)| match serde_json::from_str::<NodeScrape>(&json) {
            Ok(scrape) => Some(pick(scrape)),
            Err(e) => {
                tracing::warn!(%node, error = %e, "unreadable discovery targets in the database");
                None
            }
        })
        .flatten()
        .collect()
}

async fn agents(State(state): State<SdState>) -> Json<Vec<TargetGroup>> {
    let mut groups = {
        let registry = lock_registry(&state.controller);
        target_groups(registry.nodes())
    };
    let others = remote(&state, &groups, |s| s.agent.into_iter().collect()).await;
    groups.extend(others);
    Json(groups)
}

async fn endpoints(
    State(state): State<SdState>,
    axum::extract::Path(job): axum::extract::Path<String>,
) -> Json<Vec<TargetGroup>> {
    let mut groups = {
        let registry = lock_registry(&state.controller);
        endpoint_groups(registry.nodes(), &job)
    };
    let others = remote(&state, &groups, |s| {
        s.endpoints
            .into_iter()
            .filter(|(j, _)| *j == job)
            .map(|(_, g)| g)
            .collect()
    })
    .await;
    groups.extend(others);
    Json(groups)
}

fn lock_registry(c: &Controller) -> std::sync::MutexGuard<'_, crate::registry::Registry> {
    c.registry.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn endpoints_of_one_job_on_online_nodes_with_their_path() {
        use nodewarden_shared::protocol::ScrapeEndpoint;
        let ep = |job: &str, port, path: &str| ScrapeEndpoint {
            job: job.into(),
            port,
            path: path.into(),
        };
        let mut r = Registry::new();
        r.connected("c1", conn(1, "10.0.0.5:40000"), 0);
        r.report(
            "c1",
            1,
            StateReport {
                roles: vec![Role::Ray],
                ..Default::default()
            },
            1,
        );
        assert!(r.endpoints(
            "c1",
            1,
            vec![
                ep("ray", 8080, "/metrics"),
                ep("ray", 44217, "/custom"),
                ep("other", 1, "/")
            ]
        ));
        // A stale connection id changes nothing.
        assert!(!r.endpoints("c1", 9, vec![]));
        r.connected("gone", conn(2, "10.0.0.6:1"), 0);
        r.report("gone", 2, StateReport::default(), 1);
        assert!(r.endpoints("gone", 2, vec![ep("ray", 8080, "/metrics")]));
        r.disconnected("gone", 2, "timed out", 2);

        let json = serde_json::to_value(endpoint_groups(r.nodes(), "ray")).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"targets": ["10.0.0.5:8080"], "labels": {"node": "c1", "roles": "ray"}},
                {"targets": ["10.0.0.5:44217"],
                 "labels": {"node": "c1", "roles": "ray", "__metrics_path__": "/custom"}},
            ])
        );
        assert!(endpoint_groups(r.nodes(), "nope").is_empty());
        // Reconnecting clears the list until the agent sends it again.
        r.connected("c1", conn(3, "10.0.0.5:40001"), 3);
        assert!(endpoint_groups(r.nodes(), "ray").is_empty());
    }
}
