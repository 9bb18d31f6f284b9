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
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nodewarden_shared::ops::{ActionPath, Operation, ServiceAction, deletions_by_device};
use nodewarden_shared::wol::{DEFAULT_PORT, MacAddress, directed_broadcast};
use tokio::sync::watch;

use crate::actions::{
    self, Action, MAX_WAKE_MACS, NodeActionResult, NodeReach, Timing, WakeTarget, nothing_to_do,
};
use crate::config::ActionsConfig;
use crate::registry::{Node, Registry};
use crate::ssh::SshTarget;
use crate::state::{Controller, LinkAgent, lock};
use crate::store::{self, OperationPath, Queued};
pub use crate::wire::{ActionEvent, ActionName, ActionRequest, IdText, Selector};

/// Actions running now, so that shutdown can wait for them (bounded) before the store closes.
#[derive(Clone)]
pub struct InFlight(Arc<watch::Sender<usize>>);

/// Counts one running action until dropped.
pub struct InFlightGuard(Arc<watch::Sender<usize>>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight(Arc::new(watch::Sender::new(0)))
    }
}

impl InFlight {
    pub fn start(&self) -> InFlightGuard {
        self.0.send_modify(|n| *n += 1);
        InFlightGuard(self.0.clone())
    }

    pub fn running(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves once no action runs, or after `limit`; returns how many still run.
    pub async fn drained(&self, limit: Duration) -> usize {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        self.running()
    }
}

/// What the actions route needs: the link and the configured ways to reach nodes.
pub struct ActionsApi {
    pub agent: Arc<LinkAgent>,
    pub config: ActionsConfig,
    pub in_flight: InFlight,
    /// Set at shutdown: new actions are refused (503) while running ones finish.
    closing: watch::Sender<bool>,
    /// In a cluster: how actions reach nodes other controllers hold.
    cluster: std::sync::OnceLock<ClusterActions>,
}

/// What an action needs in a cluster (`peer.rs`).
#[derive(Clone)]
pub struct ClusterActions {
    pub me: String,
    pub reader: store::StoreReader,
    /// `None` without a peer endpoint: nodes held elsewhere cannot be acted on from here.
    pub client: Option<Arc<crate::peer::PeerClient>>,
}

impl ActionsApi {
    pub fn new(controller: Arc<Controller>, config: ActionsConfig) -> Arc<ActionsApi> {
        Arc::new(ActionsApi {
            agent: Arc::new(LinkAgent {
                controller,
                operation_timeout: config.operation_timeout,
            }),
            config,
            in_flight: InFlight::default(),
            closing: watch::Sender::new(false),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Actions on nodes held by other controllers of the cluster go through `cluster`.
    pub fn attach_cluster(&self, cluster: ClusterActions) {
        let _ = self.cluster.set(cluster);
    }

    /// Refuses new actions and waits (at most `limit`) for running ones to end and record
    /// their outcome; returns how many did not.
    /// Shutdown has begun: new actions are refused.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    pub async fn drain(&self, limit: Duration) -> usize {
        self.closing.send_replace(true);
        self.in_flight.drained(limit).await
    }
}

pub fn routes(api: Arc<ActionsApi>) -> Router {
    Router::new()
        .route("/api/v1/actions", post(post_action))
        .with_state(api)
}

/// Why a request means nothing to run: every refusal happens before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown node {0:?}: it never connected and is not configured")]
    UnknownNode(String),
    #[error("no node matches {0}")]
    NoMatch(String),
    #[error("storage device {device_id} is on no known node{scope}; nothing was deleted")]
    UnknownDevice { device_id: u32, scope: &'static str },
    #[error(
        "storage device {device_id} belongs to {owner} but {claimants} report(s) it too (an \
         ownership conflict): nothing was deleted; move it with `nodewarden-controller device \
         assign --device {device_id} --node NODE` once the operator knows which node holds it"
    )]
    AmbiguousDevice {
        device_id: u32,
        owner: String,
        claimants: String,
    },
    #[error("{0}")]
    NothingToDo(String),
}

/// An API error: a plan's refusal, or the controller unable to act now.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the audit log cannot take the request now ({0}); nothing was run")]
    AuditUnavailable(String),
    #[error("the controller is shutting down; nothing was run")]
    ShuttingDown,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Plan(PlanError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            ApiError::Plan(
                PlanError::UnknownNode(_) | PlanError::NoMatch(_) | PlanError::UnknownDevice { .. },
            ) => StatusCode::NOT_FOUND,
            ApiError::Plan(PlanError::AmbiguousDevice { .. }) => StatusCode::CONFLICT,
            ApiError::Plan(PlanError::NothingToDo(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::AuditUnavailable(_) | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

fn bad(message: impl Into<String>) -> PlanError {
    PlanError::BadRequest(message.into())
}

/// The nodes a selector names, from the registry (restored from the store at start) and the
/// configured nodes, sorted.
fn select(
    selector: &Selector,
    registry: &Registry,
    config: &ActionsConfig,
) -> Result<Vec<String>, PlanError> {
    let mut names: Vec<String> = match selector {
        Selector::Node(name) => {
            if registry.get(name).is_none() && !config.nodes.contains_key(name) {
                return Err(PlanError::UnknownNode(name.clone()));
            }
            vec![name.clone()]
        }
        Selector::Nodes(list) => {
            if list.is_empty() {
                return Err(bad(
                    "selector {\"nodes\": []} selects nothing; name at least one node",
                ));
            }
            if list.len() > crate::wire::MAX_SELECTED_NODES {
                return Err(bad(format!(
                    "selector {{\"nodes\": [...]}} lists {} names; at most {}",
                    list.len(),
                    crate::wire::MAX_SELECTED_NODES
                )));
            }
            // One unknown name refuses the whole selection: nothing is run on the others.
            if let Some(unknown) = list
                .iter()
                .find(|n| registry.get(n).is_none() && !config.nodes.contains_key(*n))
            {
                return Err(PlanError::UnknownNode(unknown.clone()));
            }
            list.clone()
        }
        Selector::Role(role) => registry
            .nodes()
            .filter(|n| n.has_role(*role))
            .map(|n| n.name.clone())
            .collect(),
        Selector::All(true) => registry
            .nodes()
            .map(|n| n.name.clone())
            .chain(config.nodes.keys().cloned())
            .collect(),
        Selector::All(false) => {
            return Err(bad(
                "selector {\"all\": false} selects nothing; use {\"all\": true}",
            ));
        }
    };
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(PlanError::NoMatch(format!("{selector:?}")));
    }
    Ok(names)
}

/// How to reach `name`: its services as last known (its reports, kept across restarts; else
/// `[nodes.X] services`), SSH from the configuration (host: configured, else the address its
/// agent last connected from), Wake-on-LAN from its interfaces (else `[nodes.X] macs`).
pub fn reach(name: &str, node: Option<&Node>, config: &ActionsConfig) -> NodeReach {
    let settings = config.nodes.get(name).cloned().unwrap_or_default();
    let last_ip = node.and_then(|n| n.last_ip);
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
        .map(|n| n.services.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| settings.services.clone());
    let wake = wake_target(node, last_ip, &settings);
    NodeReach {
        node: name.to_string(),
        services,
        ssh,
        wake,
    }
}

/// The directed broadcast of the node's reported IPv4 subnet: the one it connected from, else
/// the first with a usable prefix. Computed from address and prefix, never taken from the
/// report as is; a prefix shorter than /8 or longer than /30 has no directed broadcast worth
/// sending to.
fn subnet_broadcast(node: &Node, last_ip: Option<IpAddr>) -> Option<Ipv4Addr> {
    let inventory = node.inventory.as_ref()?;
    let subnets: Vec<(Ipv4Addr, u8)> = inventory
        .interfaces
        .iter()
        .flat_map(|i| &i.addresses)
        .filter_map(|a| match a.address {
            IpAddr::V4(v4) if (8..=30).contains(&a.prefix_len) && !v4.is_loopback() => {
                Some((v4, a.prefix_len))
            }
            _ => None,
        })
        .collect();
    let contains = |(net, prefix): &(Ipv4Addr, u8)| {
        let mask = u32::MAX << (32 - u32::from(*prefix));
        matches!(last_ip, Some(IpAddr::V4(ip)) if u32::from(ip) & mask == u32::from(*net) & mask)
    };
    let (address, prefix) = subnets
        .iter()
        .find(|s| contains(s))
        .or_else(|| subnets.first())?;
    directed_broadcast(*address, *prefix)
}

/// Every MAC the agent reported (at most [`MAX_WAKE_MACS`]) or the configured ones, to
/// `wake_to` if configured, else the directed broadcast of the node's subnet.
fn wake_target(
    node: Option<&Node>,
    last_ip: Option<IpAddr>,
    settings: &crate::config::NodeSettings,
) -> Option<WakeTarget> {
    let mut macs: Vec<MacAddress> = node
        .and_then(|n| n.inventory.as_ref())
        .map(|inv| inv.interfaces.iter().filter_map(|i| i.mac).collect())
        .unwrap_or_default();
    if macs.is_empty() {
        macs = settings.macs.clone();
    }
    macs.sort_by_key(|m| m.0);
    macs.dedup();
    macs.truncate(MAX_WAKE_MACS);
    let send_to = match settings.wake_to {
        Some(to) => to,
        None => SocketAddr::from((subnet_broadcast(node?, last_ip)?, DEFAULT_PORT)),
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

/// What a request means: its name and, per node, how to reach it and what to do.
#[derive(Debug)]
pub struct Plan {
    pub action: String,
    pub each: Vec<(NodeReach, Action)>,
}

/// Checks that `who` can go into logs and results (no forged lines).
pub fn check_requester(who: &str) -> Result<(), PlanError> {
    if who.trim().is_empty() || who.len() > 128 || who.chars().any(char::is_control) {
        return Err(bad(
            "requested_by must name who asks (1-128 characters, no control characters)",
        ));
    }
    Ok(())
}

/// The action and node set a request means; every check happens here, before anything runs.
pub fn plan(
    request: &ActionRequest,
    registry: &Registry,
    config: &ActionsConfig,
) -> Result<Plan, PlanError> {
    check_requester(&request.requested_by)?;
    let reach_of = |name: &str| reach(name, registry.get(name), config);
    if request.action == ActionName::DeleteFragments {
        if request.service.is_some() {
            return Err(bad("delete-fragments takes no service"));
        }
        let pairs = request
            .pairs
            .as_ref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("delete-fragments needs pairs: [[fid, device], …]"))?;
        let texts: Vec<(String, String)> =
            pairs.iter().map(|(f, d)| (f.text(), d.text())).collect();
        let ops = deletions_by_device(texts.iter().map(|(f, d)| (f.as_str(), d.as_str())))
            .map_err(|e| bad(format!("refused before contacting any node: {e}")))?;
        let allowed = match &request.selector {
            None => None,
            Some(s) => Some(select(s, registry, config)?),
        };
        // Device ids are fleet-wide (DEVICE.ID); each belongs to one node, and a device another
        // node reports too is never a deletion target until an operator settles it.
        let mut per_node: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
        for op in ops {
            let Operation::DeleteFragments { device_id, .. } = &op else {
                continue;
            };
            let device_id = *device_id;
            let unknown = || PlanError::UnknownDevice {
                device_id,
                scope: if allowed.is_some() {
                    " of the selection"
                } else {
                    ""
                },
            };
            let owner = registry.device_owner(device_id).ok_or_else(unknown)?;
            if allowed
                .as_ref()
                .is_some_and(|a| !a.iter().any(|n| n == owner))
            {
                return Err(unknown());
            }
            let claimants = registry.device_claimants(device_id);
            if !claimants.is_empty() {
                return Err(PlanError::AmbiguousDevice {
                    device_id,
                    owner: owner.to_string(),
                    claimants: claimants.join(", "),
                });
            }
            per_node.entry(owner.to_string()).or_default().push(op);
        }
        let each = per_node
            .into_iter()
            .map(|(name, ops)| (reach_of(&name), Action::DeleteFragments(ops)))
            .collect();
        return Ok(Plan {
            action: "delete-fragments".into(),
            each,
        });
    }
    if request.pairs.is_some() {
        return Err(bad("pairs go only with delete-fragments"));
    }
    let selector = request
        .selector
        .as_ref()
        .ok_or_else(|| bad("selector is required: {node}, {nodes}, {role} or {all: true}"))?;
    let action = match (&request.service, request.action) {
        (None, ActionName::Wake) => Action::Wake,
        (None, ActionName::Stop) => Action::Stop,
        (None, ActionName::Restart) => Action::Restart,
        (None, ActionName::Status) => Action::Status,
        (Some(service), a) => {
            nodewarden_shared::ops::validate_service_name(service)
                .map_err(|e| bad(format!("refused before contacting any node: {e}")))?;
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
            return Err(bad("delete-fragments needs pairs"));
        }
    };
    let names = select(selector, registry, config)?;
    let each: Vec<(NodeReach, Action)> = names
        .iter()
        .map(|n| (reach_of(n), action.clone()))
        .collect();
    // Refused when it means nothing anywhere (a wake of an offline node still has a power-on).
    let means_something = |(r, a): &(NodeReach, Action)| {
        !a.operations(&r.services).is_empty()
            || (*a == Action::Wake && !registry.get(&r.node).is_some_and(|n| n.online))
    };
    if !each.iter().any(means_something) {
        return Err(PlanError::NothingToDo(match &each[..] {
            [(only, _)] => nothing_to_do(&only.node),
            _ => format!(
                "nothing to do: none of {} declares a managed service (their agents have not \
                 reported any, and their [nodes.X] sections declare none)",
                names.join(", ")
            ),
        }));
    }
    Ok(Plan {
        action: action.name(),
        each,
    })
}

/// The path an action will try first on a node, for its request in the audit log.
pub(crate) fn planned_path(
    registry: &Registry,
    reach: &NodeReach,
    action: &Action,
) -> OperationPath {
    if registry.get(&reach.node).is_some_and(|n| n.online) {
        OperationPath::Agent
    } else if reach.ssh.is_some() {
        OperationPath::Ssh
    } else if *action == Action::Wake && reach.wake.is_some() {
        OperationPath::WakeOnLan
    } else {
        OperationPath::Unreachable
    }
}

/// A fresh operation id: 128 random bits, hex.
pub(crate) fn operation_id() -> String {
    let mut bytes = [0u8; 16];
    // The id only joins two rows; should the system's CSPRNG fail, time and a counter do.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        bytes[8..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes each node's operation into the audit log as requested, before anything runs; the
/// ids join them with their ends. `None` when the store has no audit log attached (tests).
fn record_requests(
    store: Option<&store::StoreHandle>,
    registry: &Registry,
    plan: &Plan,
    who: &str,
    remote: &Remote,
) -> Result<Vec<Option<String>>, ApiError> {
    let Some(store) = store else {
        return Ok(vec![None; plan.each.len()]);
    };
    let now = SystemTime::now();
    let mut ids = Vec::with_capacity(plan.each.len());
    for (reach, action) in &plan.each {
        let id = operation_id();
        let held_elsewhere = remote.holders.get(&reach.node);
        let request = store::Requested {
            operation_id: id.clone(),
            actor: who.to_string(),
            action: action.name(),
            path: match held_elsewhere {
                // Over the holder's link.
                Some(_) => OperationPath::Agent,
                None => planned_path(registry, reach, action),
            },
            via: held_elsewhere.map(|h| {
                format!(
                    "forwarded by controller {} to controller {}, which holds the node's link",
                    remote.me, h.holder
                )
            }),
        };
        let refusal = match store.requested(&reach.node, now, request) {
            Ok(Queued::Yes) => None,
            Ok(Queued::Dropped { .. }) => Some(format!(
                "{} events wait for the database",
                store.events_pending()
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refusal {
            // Close the requests already written: none of them will run.
            for ((reach, action), id) in plan.each.iter().zip(&ids) {
                let ended = store::Operation {
                    operation_id: Some(String::clone(id)),
                    actor: who.to_string(),
                    action: action.name(),
                    path: OperationPath::Unreachable,
                    result: store::OperationResult::Failed {
                        error: format!("not run: the audit log could not take the request ({why})"),
                    },
                    duration: Duration::ZERO,
                };
                let _ = store.operation(&reach.node, now, ended);
            }
            return Err(ApiError::AuditUnavailable(why));
        }
        ids.push(id);
    }
    Ok(ids.into_iter().map(Some).collect())
}

/// In a cluster, the nodes other controllers hold when an action is planned.
#[derive(Default)]
struct Remote {
    me: String,
    holders: BTreeMap<String, store::RemoteHolder>,
}

/// In a cluster: learns the nodes the shared database knows (so they can be selected and
/// planned with their current services and devices; a database that cannot be read leaves the
/// local view), and who holds which elsewhere as of the last lease step.
async fn remote_view(controller: &Controller, cluster: &ClusterActions) -> Remote {
    match cluster.reader.fleet().await {
        Ok((nodes, devices)) => crate::fleet::learn(controller, &nodes, &devices),
        Err(e) => tracing::warn!(error = %e, "planning without the cluster's view of the fleet"),
    }
    Remote {
        me: cluster.me.clone(),
        holders: (*controller.elsewhere()).clone(),
    }
}

/// The longest an operation waits for its request to be written to the database before it
/// runs anyway with the request queued ([`store::StoreHandle::write_ahead`]).
pub const WRITE_AHEAD_WAIT: Duration = Duration::from_secs(3);

/// Above this many planned nodes that are neither linked here nor in the last lease step's
/// view, their holders are read in one query of every lease rather than one each.
const CONFIRM_ONE_BY_ONE: usize = 8;

/// The planned nodes linked neither here nor, as of the last lease step, elsewhere.
fn unseen_nodes(plan: &Plan, registry: &Registry, remote: &Remote) -> Vec<String> {
    plan.each
        .iter()
        .map(|(reach, _)| &reach.node)
        .filter(|node| {
            !remote.holders.contains_key(*node) && !registry.get(node).is_some_and(|n| n.online)
        })
        .cloned()
        .collect()
}

/// Reads the holder of each of the `missing` planned nodes ([`unseen_nodes`]): one may have
/// moved to another controller since the last lease step (a controller died and its agents
/// reconnected), and treating it as unheld would run the SSH / Wake-on-LAN fallback on a node
/// that is up. A database that cannot be read leaves the lease step's view.
async fn confirm_holders(cluster: &ClusterActions, missing: Vec<String>, remote: &mut Remote) {
    if missing.is_empty() {
        return;
    }
    let found = if missing.len() > CONFIRM_ONE_BY_ONE {
        cluster.reader.remote_holders(&cluster.me).await
    } else {
        let reads = missing
            .iter()
            .map(|node| cluster.reader.remote_holder(&cluster.me, node.as_str()));
        futures_util::future::join_all(reads)
            .await
            .into_iter()
            .filter_map(Result::transpose)
            .collect()
    };
    match found {
        Ok(holders) => {
            for holder in holders {
                remote.holders.insert(holder.node.clone(), holder);
            }
        }
        Err(e) => tracing::warn!(error = %e, "planning with the last lease step's holders"),
    }
}

/// Records how an action on one node ended, joined to its request.
pub fn record_end(
    store: &store::StoreHandle,
    result: &NodeActionResult,
    operation_id: Option<String>,
) {
    let path = match result.path {
        Some(ActionPath::Agent) => OperationPath::Agent,
        Some(ActionPath::Ssh) => OperationPath::Ssh,
        Some(ActionPath::WakeOnLan) => OperationPath::WakeOnLan,
        None => OperationPath::Unreachable,
    };
    let outcome = if result.succeeded() {
        store::OperationResult::Ok
    } else if result.unknown() {
        store::OperationResult::Unknown {
            reason: result.outcome_unknown.join("; "),
        }
    } else {
        let mut error = result.error.clone().unwrap_or_else(|| {
            let failed = result.results.iter().filter(|r| !r.succeeded()).count();
            format!("{failed} of {} operations failed", result.results.len())
        });
        for unknown in &result.outcome_unknown {
            error.push_str("; ");
            error.push_str(unknown);
        }
        store::OperationResult::Failed { error }
    };
    let operation = store::Operation {
        operation_id,
        actor: result.requested_by.clone(),
        action: result.action.clone(),
        path,
        result: outcome,
        duration: Duration::from_millis(result.duration_ms),
    };
    if let Err(e) = store.operation(&result.node, SystemTime::now(), operation) {
        tracing::error!(node = %result.node, error = %e, "remote operation not recorded in the audit log");
    }
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
) -> Result<Response, ApiError> {
    let mut request: ActionRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("bad request body: {e}")))?;
    request.requested_by = requester(caller.and_then(|c| c.0.operator), request.requested_by);
    if *api.closing.borrow() {
        return Err(ApiError::ShuttingDown);
    }
    let guard = api.in_flight.start();
    let controller = &api.agent.controller;
    let cluster = api.cluster.get().cloned();
    let mut remote = match &cluster {
        Some(c) => remote_view(controller, c).await,
        None => Remote::default(),
    };
    let (plan, unseen) = {
        let registry = lock(&controller.registry);
        let plan = plan(&request, &registry, &api.config)?;
        let unseen = match &cluster {
            Some(_) => unseen_nodes(&plan, &registry, &remote),
            None => Vec::new(),
        };
        (plan, unseen)
    };
    if let Some(c) = &cluster {
        confirm_holders(c, unseen, &mut remote).await;
    }
    // Written as requested before anything runs.
    let ids = record_requests(
        controller.store(),
        &lock(&controller.registry),
        &plan,
        &request.requested_by,
        &remote,
    )?;
    if let Some(store) = controller.store() {
        // In the database before it runs, when the database answers in time; else it runs with
        // its request queued (a wake or an SSH stop is what an operator needs when things are
        // broken, the database among them).
        store.write_ahead(WRITE_AHEAD_WAIT).await;
    }
    let nodes: Vec<String> = plan.each.iter().map(|(r, _)| r.node.clone()).collect();
    tracing::info!(action = %plan.action, requested_by = %request.requested_by, ?nodes, "action requested");

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let _ = tx.send(line(&ActionEvent::Start {
        action: plan.action,
        nodes,
    }));
    let timing = Timing {
        wake_wait: api.config.wake_wait,
    };
    let requested_by = request.requested_by.clone();
    tokio::spawn(async move {
        let _running = guard;
        let each = plan.each;
        match cluster {
            None => {
                run_plan(
                    api.agent.clone(),
                    &api,
                    each,
                    ids,
                    &requested_by,
                    timing,
                    tx,
                )
                .await
            }
            Some(c) => {
                let path = Arc::new(crate::peer::ClusterPath {
                    local: api.agent.clone(),
                    me: c.me,
                    reader: c.reader,
                    client: c.client,
                    remote: remote.holders,
                    requested_by: requested_by.clone(),
                });
                run_plan(path, &api, each, ids, &requested_by, timing, tx).await
            }
        }
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

/// Runs a planned action over `agent`'s paths, recording each node's end and streaming it.
async fn run_plan<A: crate::actions::AgentPath>(
    agent: Arc<A>,
    api: &ActionsApi,
    each: Vec<(NodeReach, Action)>,
    ids: Vec<Option<String>>,
    requested_by: &str,
    timing: Timing,
    tx: tokio::sync::mpsc::UnboundedSender<Bytes>,
) {
    {
        let progress_tx = tx.clone();
        let mut ids = ids;
        let results = actions::run_each(
            agent,
            each,
            requested_by,
            api.config.limits,
            timing,
            |i, r, done, total| {
                if let Some(store) = api.agent.controller.store() {
                    record_end(store, r, ids.get_mut(i).and_then(Option::take));
                }
                tracing::info!(
                    node = %r.node, action = %r.action, requested_by = %r.requested_by,
                    path = ?r.path, ok = r.succeeded(), unknown = ?r.outcome_unknown,
                    error = ?r.error, "action on node"
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Connection;
    use crate::ssh::SshSettings;
    use nodewarden_shared::protocol::{
        Interface, InterfaceAddress, Inventory, Role, ServiceState, ServiceStatus, StateReport,
        StorageDevice,
    };

    fn config() -> ActionsConfig {
        ActionsConfig {
            operation_timeout: Duration::from_secs(5),
            limits: crate::actions::Limits {
                link: 4,
                fallback: 4,
            },
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
                    ..Default::default()
                },
            )]),
        }
    }

    fn registry() -> Registry {
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
        r
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
    fn wake_goes_to_the_computed_subnet_broadcast_with_capped_macs_or_the_configured_ones() {
        let mut r = registry();
        // A node reporting 20 interfaces and a broadcast address that is not its subnet's.
        r.connected(
            "busy",
            Connection {
                id: 9,
                remote: "10.0.7.20:4000".into(),
                agent_version: "t".into(),
                protocol_version: 1,
                connected_at: 0,
                cert_serial: "s".into(),
                cert_not_after_unix: 0,
                capabilities: vec![],
            },
            0,
        );
        let interfaces = (0..20u8)
            .map(|i| Interface {
                name: format!("veth{i}"),
                mac: Some(MacAddress([0x52, 0x54, 0, 0, 1, i])),
                addresses: vec![InterfaceAddress {
                    address: "10.0.7.20".parse().unwrap(),
                    prefix_len: 23,
                    broadcast: Some("8.8.8.8".parse().unwrap()),
                }],
            })
            .collect();
        r.inventory(
            "busy",
            9,
            Inventory {
                hostname: "busy".into(),
                interfaces,
            },
        );
        let wake = reach("busy", r.get("busy"), &config()).wake.unwrap();
        assert_eq!(wake.send_to, "10.0.7.255:9".parse().unwrap());
        assert_eq!(wake.macs.len(), MAX_WAKE_MACS);
        // Never connected: the configured MACs, to the configured address.
        let mut c = config();
        c.nodes.insert(
            "cold".into(),
            crate::config::NodeSettings {
                wake_to: Some("10.0.9.255:9".parse().unwrap()),
                macs: vec!["52:54:00:00:09:09".parse().unwrap()],
                services: vec!["dfs".into()],
                ..Default::default()
            },
        );
        let cold = reach("cold", None, &c);
        assert_eq!(cold.services, ["dfs"]);
        let wake = cold.wake.unwrap();
        assert_eq!(wake.macs, ["52:54:00:00:09:09".parse().unwrap()]);
        assert_eq!(wake.send_to, "10.0.9.255:9".parse().unwrap());
    }

    #[test]
    fn refusals_for_nothing_to_do_and_ambiguous_devices() {
        let (mut reg, c) = (registry(), config());
        // "cold" is configured with SSH but no services: a stop means nothing.
        let e = plan(
            &request(serde_json::json!({"selector": {"node": "cold"}, "action": "stop", "requested_by": "a"})),
            &reg,
            &c,
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::NothingToDo(_)), "{e}");
        assert_eq!(ApiError::from(e.clone()).status().as_u16(), 422);
        assert!(e.to_string().contains("nothing to do on cold"), "{e}");
        // But a wake of it may power it on.
        assert!(
            plan(
                &request(serde_json::json!({"selector": {"node": "cold"}, "action": "wake", "requested_by": "a"})),
                &reg,
                &c,
            )
            .is_ok()
        );
        // s1 reports device 4 too, which s2 owns: deletions on 4 are refused.
        reg.report(
            "s1",
            1,
            StateReport {
                roles: vec![Role::Storage],
                storage: [3, 4]
                    .into_iter()
                    .map(|device_id| StorageDevice {
                        device_id,
                        fragment_dir: "/f".into(),
                        total_bytes: 0,
                        free_bytes: 0,
                        error: None,
                    })
                    .collect(),
                ..Default::default()
            },
            2,
        );
        let e = plan(
            &request(serde_json::json!({"action": "delete-fragments", "pairs": [["101", "3"], ["102", "4"]], "requested_by": "dfs"})),
            &reg,
            &c,
        )
        .unwrap_err();
        assert_eq!(ApiError::from(e.clone()).status().as_u16(), 409, "{e}");
        assert!(e.to_string().contains("belongs to s2 but s1"), "{e}");
        // Device 3 alone is unambiguous.
        let p = plan(
            &request(serde_json::json!({"action": "delete-fragments", "pairs": [["101", "3"]], "requested_by": "dfs"})),
            &reg,
            &c,
        )
        .unwrap();
        assert_eq!(p.each[0].0.node, "s1");
    }

    #[test]
    fn selectors() {
        let (reg, c) = (registry(), config());
        let plan_of = |json| plan(&request(json), &reg, &c);
        let nodes = |p: &Plan| {
            p.each
                .iter()
                .map(|(r, _)| r.node.clone())
                .collect::<Vec<_>>()
        };
        let p = plan_of(
            serde_json::json!({"selector": {"all": true}, "action": "wake", "requested_by": "a"}),
        )
        .unwrap();
        assert_eq!(nodes(&p), ["cold", "s1", "s2"]);
        assert_eq!(p.each[0].1, Action::Wake);
        let p = plan_of(serde_json::json!({"selector": {"role": "storage"}, "action": "stop", "requested_by": "a"})).unwrap();
        assert_eq!(nodes(&p), ["s1", "s2"]);
        // Several named nodes: sorted, duplicates once, a configured-only node included.
        let p = plan_of(serde_json::json!({"selector": {"nodes": ["s2", "cold", "s2"]}, "action": "status", "requested_by": "a"})).unwrap();
        assert_eq!(nodes(&p), ["cold", "s2"]);
        let p = plan_of(serde_json::json!({"selector": {"node": "s1"}, "action": "restart", "service": "dfs", "requested_by": "a"})).unwrap();
        assert_eq!(
            p.each[0].1,
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
                serde_json::json!({"selector": {"nodes": ["s1", "nope"]}, "action": "stop", "requested_by": "a"}),
                404,
                "unknown node \"nope\"",
            ),
            (
                serde_json::json!({"selector": {"nodes": []}, "action": "stop", "requested_by": "a"}),
                400,
                "selects nothing",
            ),
            (
                serde_json::json!({"selector": {"nodes": vec!["s1"; crate::wire::MAX_SELECTED_NODES + 1]}, "action": "stop", "requested_by": "a"}),
                400,
                "at most",
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
            let e = ApiError::from(plan_of(json.clone()).unwrap_err());
            assert_eq!(e.status().as_u16(), status, "{json}: {e}");
            assert!(e.to_string().contains(want), "{json}: {e}");
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
        assert_eq!(p.each.len(), 2);
        assert_eq!(p.each[0].0.node, "s1");
        assert_eq!(
            p.each[0].1,
            Action::DeleteFragments(vec![Operation::DeleteFragments {
                device_id: 3,
                fragment_ids: vec![101, 103]
            }])
        );
        assert_eq!(p.each[1].0.node, "s2");
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
            let e = ApiError::from(e);
            assert_eq!(e.status().as_u16(), status, "{pairs}: {e}");
            assert!(e.to_string().contains(want), "{pairs}: {e}");
        }
        // A selection limits where devices are looked for.
        let e = plan(
            &request(serde_json::json!({"selector": {"node": "s1"}, "action": "delete-fragments", "pairs": [["1", "4"]], "requested_by": "dfs"})),
            &reg,
            &c,
        )
        .unwrap_err();
        assert!(e.to_string().contains("of the selection"), "{e}");
    }
}
