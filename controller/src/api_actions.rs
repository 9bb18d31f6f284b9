//! `POST /api/v1/actions`: an operator's action on nodes (wake, stop, restart, status of the
//! managed services, or fragment deletions), routed per node by [`crate::actions`] over the agent
//! link, else SSH, else Wake-on-LAN. Also [`LinkAgent`], the [`AgentPath`] over the link.
//!
//! Request (JSON):
//! ```json
//! {"selector": {"node": "storage-01"} | {"role": "storage"} | {"all": true},
//!  "action": "wake" | "stop" | "restart" | "status" | "delete-fragments",
//!  "service": "storage-client",            // optional: one service instead of all
//!  "pairs": [["101", "3"], [102, 3]],      // delete-fragments: (fragment id, device id)
//!  "requested_by": "alice"}
//! ```
//! Bad input (a hostile id, an unknown node or device) is answered `400`/`404` with
//! `{"error": …}` before anything is sent to any node. Otherwise the answer is `200` with
//! newline-delimited JSON, one line per event as it happens: `{"event":"start","nodes":[…]}`, one
//! `{"event":"result","done":n,"total":m,"result":{…}}` per node as it finishes (a
//! [`NodeActionResult`]), then `{"event":"end","ok":…}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nodewarden_shared::ops::{
    ActionPath, Operation, OperationResult, ServiceAction, deletions_by_device,
};
use nodewarden_shared::protocol::{CommandKind, CommandOutcome, Role};
use nodewarden_shared::wol::{DEFAULT_PORT, MacAddress};
use serde::{Deserialize, Serialize};

use crate::actions::{self, Action, AgentPath, NodeActionResult, NodeReach, Timing, WakeTarget};
use crate::config::ActionsConfig;
use crate::link::Controller;
use crate::registry::Node;
use crate::ssh::SshTarget;

/// The agent link as [`crate::actions`] sees it.
pub struct LinkAgent {
    pub controller: Arc<Controller>,
    /// How long one operation may take over the link before it counts as a link failure.
    pub operation_timeout: Duration,
}

impl AgentPath for LinkAgent {
    fn is_online(&self, node: &str) -> bool {
        self.controller.is_online(node)
    }

    async fn execute(&self, node: &str, op: &Operation) -> Result<OperationResult, String> {
        let response = self
            .controller
            .command(
                node,
                CommandKind::Operation(op.clone()),
                self.operation_timeout,
            )
            .await?;
        match response.outcome {
            CommandOutcome::Operation(result) => Ok(result),
            CommandOutcome::Failed { message } => Err(format!("node {node}: {message}")),
            other => Err(format!("node {node} answered an operation with {other:?}")),
        }
    }

    async fn wait_online(&self, node: &str, limit: Duration) -> bool {
        self.controller.wait_online(node, limit).await
    }

    fn observe(&self, path: ActionPath, elapsed: Duration) {
        use crate::metrics::CommandLabels;
        let labels = match path {
            // The link observes its own commands (`Controller::command`).
            ActionPath::Agent => return,
            ActionPath::Ssh => {
                CommandLabels::new(nodewarden_shared::protocol::CAP_OPERATIONS, "ssh")
            }
            ActionPath::WakeOnLan => CommandLabels::new("wake", "wol"),
        };
        self.controller
            .metrics
            .command_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// What the actions route needs: the link and the configured ways to reach nodes.
pub struct ActionsApi {
    pub agent: Arc<LinkAgent>,
    pub config: ActionsConfig,
}

impl ActionsApi {
    pub fn new(controller: Arc<Controller>, config: ActionsConfig) -> Arc<ActionsApi> {
        Arc::new(ActionsApi {
            agent: Arc::new(LinkAgent {
                controller,
                operation_timeout: config.operation_timeout,
            }),
            config,
        })
    }
}

pub fn routes(api: Arc<ActionsApi>) -> Router {
    Router::new()
        .route("/api/v1/actions", post(post_action))
        .with_state(api)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Node(String),
    Role(Role),
    /// `{"all": true}`.
    All(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    Wake,
    Stop,
    Restart,
    Status,
    DeleteFragments,
}

/// An id as the DFS hands it over: text or a JSON number; validated as text either way.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IdText {
    Number(u64),
    Text(String),
}

impl IdText {
    fn text(&self) -> String {
        match self {
            IdText::Number(n) => n.to_string(),
            IdText::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Required, except for `delete-fragments` (whose devices say which nodes).
    #[serde(default)]
    pub selector: Option<Selector>,
    pub action: ActionName,
    #[serde(default)]
    pub service: Option<String>,
    /// `delete-fragments`: (fragment id, device id) pairs.
    #[serde(default)]
    pub pairs: Option<Vec<(IdText, IdText)>>,
    /// Who asks. Optional with a named API token (whose operator is recorded instead, see
    /// [`requester`]); required otherwise.
    #[serde(default)]
    pub requested_by: String,
}

/// One line of the streamed answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ActionEvent {
    Start {
        action: String,
        nodes: Vec<String>,
    },
    Result {
        done: usize,
        total: usize,
        result: NodeActionResult,
    },
    End {
        ok: bool,
    },
}

/// A request refused before anything was sent.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    fn not_found(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// The nodes a selector names, from the registry and the configured nodes, sorted.
fn select(
    selector: &Selector,
    registry: &BTreeMap<String, Node>,
    config: &ActionsConfig,
) -> Result<Vec<String>, Refusal> {
    let mut names: Vec<String> = match selector {
        Selector::Node(name) => {
            if !registry.contains_key(name) && !config.nodes.contains_key(name) {
                return Err(Refusal::not_found(format!(
                    "unknown node {name:?}: it never connected and is not configured"
                )));
            }
            vec![name.clone()]
        }
        Selector::Role(role) => registry
            .values()
            .filter(|n| {
                n.last_report
                    .as_ref()
                    .is_some_and(|r| r.roles.contains(role))
            })
            .map(|n| n.name.clone())
            .collect(),
        Selector::All(true) => registry
            .keys()
            .chain(config.nodes.keys())
            .cloned()
            .collect(),
        Selector::All(false) => {
            return Err(Refusal::bad(
                "selector {\"all\": false} selects nothing; use {\"all\": true}",
            ));
        }
    };
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(Refusal::not_found(format!("no node matches {selector:?}")));
    }
    Ok(names)
}

/// How to reach `name`: its services from the last report, SSH from the configuration (host:
/// configured, else the address its agent last connected from), Wake-on-LAN from its inventory.
pub fn reach(name: &str, node: Option<&Node>, config: &ActionsConfig) -> NodeReach {
    let settings = config.nodes.get(name).cloned().unwrap_or_default();
    let last_ip = node.and_then(|n| n.last_remote).map(|a| a.ip());
    let host = settings
        .host
        .clone()
        .or_else(|| last_ip.map(|ip| ip.to_string()))
        .unwrap_or_else(|| name.to_string());
    let ssh = match SshTarget::resolve(&host, &settings.ssh, &config.ssh) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(node = %name, "no SSH fallback: {e}");
            None
        }
    };
    let services = node
        .and_then(|n| n.last_report.as_ref())
        .map(|r| r.services.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    let wake = node.and_then(|n| wake_target(n, last_ip, settings.wake_to));
    NodeReach {
        node: name.to_string(),
        services,
        ssh,
        wake,
    }
}

/// Every MAC the agent reported, to `wake_to` if configured, else the broadcast address of the
/// subnet it connected from (or the first subnet with one).
fn wake_target(
    node: &Node,
    last_ip: Option<IpAddr>,
    wake_to: Option<SocketAddr>,
) -> Option<WakeTarget> {
    let inventory = node.inventory.as_ref()?;
    let mut macs: Vec<MacAddress> = inventory.interfaces.iter().filter_map(|i| i.mac).collect();
    macs.sort_by_key(|m| m.0);
    macs.dedup();
    let addresses = || inventory.interfaces.iter().flat_map(|i| &i.addresses);
    let send_to = match wake_to {
        Some(to) => to,
        None => {
            let broadcast = addresses()
                .find(|a| Some(a.address) == last_ip && a.broadcast.is_some())
                .or_else(|| addresses().find(|a| a.broadcast.is_some()))
                .and_then(|a| a.broadcast)?;
            SocketAddr::from((broadcast, DEFAULT_PORT))
        }
    };
    (!macs.is_empty()).then_some(WakeTarget { macs, send_to })
}

/// Who the audit log names: the operator a named API token belongs to, whatever the request
/// claims (a differing claim is logged as a warning); otherwise the claim (checked by [`plan`]).
pub fn requester(operator: Option<Arc<str>>, claimed: String) -> String {
    match operator {
        Some(operator) => {
            if !claimed.is_empty() && claimed != *operator {
                tracing::warn!(
                    %operator,
                    claimed = %claimed.escape_debug(),
                    "requested_by differs from the API token's operator; the operator is recorded"
                );
            }
            operator.to_string()
        }
        None => claimed,
    }
}

/// The action and node set a request means; every check happens here, before anything runs.
pub fn plan(
    request: &ActionRequest,
    registry: &BTreeMap<String, Node>,
    config: &ActionsConfig,
) -> Result<(String, Vec<(NodeReach, Action)>), Refusal> {
    let who = &request.requested_by;
    if who.trim().is_empty() || who.len() > 128 || who.chars().any(char::is_control) {
        // It goes into logs and results: no forged lines.
        return Err(Refusal::bad(
            "requested_by must name who asks (1-128 characters, no control characters)",
        ));
    }
    let reach_of = |name: &str| reach(name, registry.get(name), config);
    if request.action == ActionName::DeleteFragments {
        if request.service.is_some() {
            return Err(Refusal::bad("delete-fragments takes no service"));
        }
        let pairs = request
            .pairs
            .as_ref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Refusal::bad("delete-fragments needs pairs: [[fid, device], …]"))?;
        let texts: Vec<(String, String)> =
            pairs.iter().map(|(f, d)| (f.text(), d.text())).collect();
        let ops = deletions_by_device(texts.iter().map(|(f, d)| (f.as_str(), d.as_str())))
            .map_err(|e| Refusal::bad(format!("refused before contacting any node: {e}")))?;
        let allowed = match &request.selector {
            None => None,
            Some(s) => Some(select(s, registry, config)?),
        };
        // Device ids are fleet-wide (DEVICE.ID); the node holding one is the one reporting it.
        let mut per_node: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
        for op in ops {
            let Operation::DeleteFragments { device_id, .. } = &op else {
                continue;
            };
            let holder = registry
                .values()
                .filter(|n| allowed.as_ref().is_none_or(|a| a.contains(&n.name)))
                .find(|n| {
                    n.last_report
                        .as_ref()
                        .is_some_and(|r| r.storage.iter().any(|d| d.device_id == *device_id))
                })
                .ok_or_else(|| {
                    Refusal::not_found(format!(
                        "storage device {device_id} is on no known node{}; nothing was deleted",
                        if allowed.is_some() {
                            " of the selection"
                        } else {
                            ""
                        }
                    ))
                })?;
            per_node.entry(holder.name.clone()).or_default().push(op);
        }
        let each = per_node
            .into_iter()
            .map(|(name, ops)| (reach_of(&name), Action::DeleteFragments(ops)))
            .collect();
        return Ok(("delete-fragments".into(), each));
    }
    if request.pairs.is_some() {
        return Err(Refusal::bad("pairs go only with delete-fragments"));
    }
    let selector = request
        .selector
        .as_ref()
        .ok_or_else(|| Refusal::bad("selector is required: {node}, {role} or {all: true}"))?;
    let action = match (&request.service, request.action) {
        (None, ActionName::Wake) => Action::Wake,
        (None, ActionName::Stop) => Action::Stop,
        (None, ActionName::Restart) => Action::Restart,
        (None, ActionName::Status) => Action::Status,
        (Some(service), a) => {
            nodewarden_shared::ops::validate_service_name(service)
                .map_err(|e| Refusal::bad(format!("refused before contacting any node: {e}")))?;
            let action = match a {
                ActionName::Wake => ServiceAction::Start,
                ActionName::Stop => ServiceAction::Stop,
                ActionName::Restart => ServiceAction::Restart,
                ActionName::Status | ActionName::DeleteFragments => ServiceAction::Status,
            };
            Action::Service {
                service: service.clone(),
                action,
            }
        }
        // Answered above, with its pairs.
        (None, ActionName::DeleteFragments) => {
            return Err(Refusal::bad("delete-fragments needs pairs"));
        }
    };
    let names = select(selector, registry, config)?;
    let name = action.name();
    Ok((
        name,
        names
            .iter()
            .map(|n| (reach_of(n), action.clone()))
            .collect(),
    ))
}

fn line(event: &ActionEvent) -> Bytes {
    let mut text = serde_json::to_string(event)
        .unwrap_or_else(|e| format!("{{\"event\":\"error\",\"error\":{:?}}}", e.to_string()));
    text.push('\n');
    Bytes::from(text)
}

async fn post_action(
    State(api): State<Arc<ActionsApi>>,
    caller: Option<axum::Extension<crate::http_auth::Caller>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let mut request: ActionRequest = serde_json::from_slice(&body)
        .map_err(|e| Refusal::bad(format!("bad request body: {e}")))?;
    request.requested_by = requester(caller.and_then(|c| c.0.operator), request.requested_by);
    let registry: BTreeMap<String, Node> = {
        let r = api
            .agent
            .controller
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        r.nodes().map(|n| (n.name.clone(), n.clone())).collect()
    };
    let (action, each) = plan(&request, &registry, &api.config)?;
    let nodes: Vec<String> = each.iter().map(|(r, _)| r.node.clone()).collect();
    tracing::info!(%action, requested_by = %request.requested_by, ?nodes, "action requested");

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let _ = tx.send(line(&ActionEvent::Start { action, nodes }));
    let timing = Timing {
        wake_wait: api.config.wake_wait,
    };
    let requested_by = request.requested_by.clone();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let results = actions::run_each(
            api.agent.clone(),
            each,
            &requested_by,
            api.config.concurrency,
            timing,
            |r, done, total| {
                if let Some(store) = api.agent.controller.store() {
                    crate::fleet::action_recorded(store, r, std::time::SystemTime::now());
                }
                tracing::info!(
                    node = %r.node, action = %r.action, requested_by = %r.requested_by,
                    path = ?r.path, ok = r.succeeded(), error = ?r.error, "action on node"
                );
                let _ = progress_tx.send(line(&ActionEvent::Result {
                    done,
                    total,
                    result: r.clone(),
                }));
            },
        )
        .await;
        let ok = results.iter().all(NodeActionResult::succeeded);
        let _ = tx.send(line(&ActionEvent::End { ok }));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Connection, Registry};
    use crate::ssh::SshSettings;
    use nodewarden_shared::protocol::{
        Interface, InterfaceAddress, Inventory, ServiceState, ServiceStatus, StateReport,
        StorageDevice,
    };

    fn config() -> ActionsConfig {
        ActionsConfig {
            operation_timeout: Duration::from_secs(5),
            concurrency: 4,
            wake_wait: Duration::from_secs(5),
            ssh: SshSettings {
                user: Some("nw".into()),
                key_file: Some("/k".into()),
                known_hosts: Some("/kh".into()),
                ..Default::default()
            },
            nodes: BTreeMap::from([(
                "cold".to_string(),
                crate::config::NodeSettings {
                    host: Some("10.0.9.9".into()),
                    ssh: SshSettings {
                        port: Some(2222),
                        ..Default::default()
                    },
                    wake_to: None,
                },
            )]),
        }
    }

    fn registry() -> BTreeMap<String, Node> {
        let mut r = Registry::new();
        for (i, (name, device)) in [("s1", 3u32), ("s2", 4)].into_iter().enumerate() {
            let id = i as u64 + 1;
            r.connected(
                name,
                Connection {
                    id,
                    remote: format!("10.0.3.{}:4000", 10 + id),
                    agent_version: "t".into(),
                    protocol_version: 1,
                    connected_at: 0,
                    cert_serial: "s".into(),
                    cert_not_after_unix: 0,
                    capabilities: vec![],
                },
                0,
            );
            r.report(
                name,
                id,
                StateReport {
                    roles: vec![Role::Storage],
                    storage: vec![StorageDevice {
                        device_id: device,
                        fragment_dir: "/f".into(),
                        total_bytes: 0,
                        free_bytes: 0,
                        error: None,
                    }],
                    services: vec![ServiceState {
                        name: "dfs".into(),
                        status: ServiceStatus::Running,
                    }],
                    ..Default::default()
                },
                0,
            );
            r.inventory(
                name,
                id,
                Inventory {
                    hostname: name.into(),
                    interfaces: vec![
                        Interface {
                            name: "eth1".into(),
                            mac: Some("52:54:00:00:00:02".parse().unwrap()),
                            addresses: vec![InterfaceAddress {
                                address: "192.168.1.5".parse().unwrap(),
                                prefix_len: 24,
                                broadcast: Some("192.168.1.255".parse().unwrap()),
                            }],
                        },
                        Interface {
                            name: "eth0".into(),
                            mac: Some("52:54:00:00:00:01".parse().unwrap()),
                            addresses: vec![InterfaceAddress {
                                address: format!("10.0.3.{}", 10 + id).parse().unwrap(),
                                prefix_len: 24,
                                broadcast: Some("10.0.3.255".parse().unwrap()),
                            }],
                        },
                    ],
                },
            );
        }
        r.disconnected("s2", 2, "gone", 1);
        r.nodes().map(|n| (n.name.clone(), n.clone())).collect()
    }

    fn request(json: serde_json::Value) -> ActionRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reach_comes_from_the_last_report_inventory_and_config() {
        let reg = registry();
        let c = config();
        let r = reach("s2", reg.get("s2"), &c);
        assert_eq!(r.services, ["dfs"]);
        let ssh = r.ssh.unwrap();
        // The address it connected from, although it is offline now.
        assert_eq!((ssh.host.as_str(), ssh.port), ("10.0.3.12", 22));
        let wake = r.wake.unwrap();
        assert_eq!(wake.macs.len(), 2);
        // The subnet it connected from, not the first one listed.
        assert_eq!(wake.send_to, "10.0.3.255:9".parse().unwrap());
        // Configured but never connected: host and port from the config, nothing to wake.
        let cold = reach("cold", None, &c);
        let ssh = cold.ssh.unwrap();
        assert_eq!((ssh.host.as_str(), ssh.port), ("10.0.9.9", 2222));
        assert!(cold.wake.is_none() && cold.services.is_empty());
        // A relay configured for the node replaces the broadcast address.
        let mut relayed = c.clone();
        relayed.nodes.insert(
            "s2".into(),
            crate::config::NodeSettings {
                wake_to: Some("10.0.3.5:9".parse().unwrap()),
                ..Default::default()
            },
        );
        let wake = reach("s2", reg.get("s2"), &relayed).wake.unwrap();
        assert_eq!(wake.send_to, "10.0.3.5:9".parse().unwrap());
        // Without fleet SSH settings there is no fallback.
        let bare = ActionsConfig {
            ssh: SshSettings::default(),
            ..c
        };
        assert!(reach("s1", reg.get("s1"), &bare).ssh.is_none());
    }

    #[test]
    fn selectors() {
        let (reg, c) = (registry(), config());
        let plan_of = |json| plan(&request(json), &reg, &c);
        let nodes = |p: &(String, Vec<(NodeReach, Action)>)| {
            p.1.iter().map(|(r, _)| r.node.clone()).collect::<Vec<_>>()
        };
        let p = plan_of(
            serde_json::json!({"selector": {"all": true}, "action": "wake", "requested_by": "a"}),
        )
        .unwrap();
        assert_eq!(nodes(&p), ["cold", "s1", "s2"]);
        assert_eq!(p.1[0].1, Action::Wake);
        let p = plan_of(serde_json::json!({"selector": {"role": "storage"}, "action": "stop", "requested_by": "a"})).unwrap();
        assert_eq!(nodes(&p), ["s1", "s2"]);
        let p = plan_of(serde_json::json!({"selector": {"node": "s1"}, "action": "restart", "service": "dfs", "requested_by": "a"})).unwrap();
        assert_eq!(
            p.1[0].1,
            Action::Service {
                service: "dfs".into(),
                action: ServiceAction::Restart
            }
        );
        for (json, status, want) in [
            (
                serde_json::json!({"selector": {"node": "nope"}, "action": "wake", "requested_by": "a"}),
                404,
                "unknown node",
            ),
            (
                serde_json::json!({"selector": {"role": "ray"}, "action": "wake", "requested_by": "a"}),
                404,
                "no node matches",
            ),
            (
                serde_json::json!({"action": "wake", "requested_by": "a"}),
                400,
                "selector is required",
            ),
            (
                serde_json::json!({"selector": {"all": true}, "action": "wake", "requested_by": " "}),
                400,
                "requested_by",
            ),
            (
                serde_json::json!({"selector": {"all": true}, "action": "wake", "service": "../x", "requested_by": "a"}),
                400,
                "service name",
            ),
        ] {
            let e = plan_of(json.clone()).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{json}: {}", e.message);
            assert!(e.message.contains(want), "{json}: {}", e.message);
        }
    }

    #[test]
    fn deletions_go_to_the_node_holding_the_device_and_hostile_ids_refuse_the_batch() {
        let (reg, c) = (registry(), config());
        let p = plan(
            &request(serde_json::json!({"action": "delete-fragments", "pairs": [["101", "3"], [102, 4], ["103", 3]], "requested_by": "dfs"})),
            &reg,
            &c,
        )
        .unwrap();
        assert_eq!(p.1.len(), 2);
        assert_eq!(p.1[0].0.node, "s1");
        assert_eq!(
            p.1[0].1,
            Action::DeleteFragments(vec![Operation::DeleteFragments {
                device_id: 3,
                fragment_ids: vec![101, 103]
            }])
        );
        assert_eq!(p.1[1].0.node, "s2");
        for (pairs, status, want) in [
            (
                serde_json::json!([["101", "3"], ["../x", "3"]]),
                400,
                "fragment id",
            ),
            (serde_json::json!([["-rf", "3"]]), 400, "fragment id"),
            (serde_json::json!([["1;rm", "3"]]), 400, "fragment id"),
            (serde_json::json!([["1", "3/.."]]), 400, "device id"),
            (serde_json::json!([["1", "9"]]), 404, "storage device 9"),
            (serde_json::json!([]), 400, "needs pairs"),
        ] {
            let e = plan(
                &request(serde_json::json!({"action": "delete-fragments", "pairs": pairs, "requested_by": "dfs"})),
                &reg,
                &c,
            )
            .unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{pairs}: {}", e.message);
            assert!(e.message.contains(want), "{pairs}: {}", e.message);
        }
        // A selection limits where devices are looked for.
        let e = plan(
            &request(serde_json::json!({"selector": {"node": "s1"}, "action": "delete-fragments", "pairs": [["1", "4"]], "requested_by": "dfs"})),
            &reg,
            &c,
        )
        .unwrap_err();
        assert!(e.message.contains("of the selection"), "{}", e.message);
    }
}
