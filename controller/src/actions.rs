//! Routing an operator's action on one node or many: over the agent link when the agent is
//! online, else over SSH (the node's forced command), and for `wake` of a node that answers
//! neither, a Wake-on-LAN packet and a wait for its agent. The path taken is part of the result.
//!
//! The link itself is behind [`AgentPath`], which the shared state implements
//! ([`crate::state::LinkAgent`]); this module only decides. Every operation is validated before
//! any path is tried. An action that expands to no operation fails with a clear error (never
//! "ok" having done nothing), and an operation whose outcome is unknown (the link was lost after
//! it was sent) is reported so and re-run over SSH only if running it twice is harmless.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodewarden_shared::ops::{
    ActionPath, Operation, OperationResult, OpsError, Outcome, ServiceAction,
};
use nodewarden_shared::wol::MacAddress;

use crate::ssh::{self, SshError, SshTarget};
use crate::wol;

/// What an operator asks of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start every managed service; power the node on first if it answers neither path.
    Wake,
    /// Stop every managed service.
    Stop,
    Restart,
    Status,
    /// One service.
    Service {
        service: String,
        action: ServiceAction,
    },
    /// Fragment deletions (one operation per device, see `ops::deletions_by_device`).
    DeleteFragments(Vec<Operation>),
}

impl Action {
    /// The operations this action means on a node managing `services`.
    pub fn operations(&self, services: &[String]) -> Vec<Operation> {
        let each = |action| {
            services
                .iter()
                .map(|s| Operation::service(s, action))
                .collect()
        };
        match self {
            Action::Wake => each(ServiceAction::Start),
            Action::Stop => each(ServiceAction::Stop),
            Action::Restart => each(ServiceAction::Restart),
            Action::Status => each(ServiceAction::Status),
            Action::Service { service, action } => vec![Operation::service(service, *action)],
            Action::DeleteFragments(ops) => ops.clone(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Action::Wake => "wake".into(),
            Action::Stop => "stop".into(),
            Action::Restart => "restart".into(),
            Action::Status => "status".into(),
            Action::Service { service, action } => format!("{action} {service}"),
            Action::DeleteFragments(ops) => format!("delete fragments ({} device(s))", ops.len()),
        }
    }
}

/// The most MAC addresses one node's magic packets go to (a node reporting more — a host full of
/// virtual interfaces — has the first ones by address woken).
pub const MAX_WAKE_MACS: usize = 8;

/// Where a sleeping node's magic packet goes: its NICs' MACs (as the agent reported them) and a
/// directed broadcast address on its segment (or a relay's address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeTarget {
    pub macs: Vec<MacAddress>,
    pub send_to: SocketAddr,
}

/// Everything the controller knows about reaching one node.
#[derive(Debug, Clone)]
pub struct NodeReach {
    pub node: String,
    /// The managed services (from the agent's last report or the node's record).
    pub services: Vec<String>,
    pub ssh: Option<SshTarget>,
    pub wake: Option<WakeTarget>,
}

/// How an operation over the link failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFailure {
    /// It never reached the node (not connected, queue full, refused by the agent): another
    /// path may run it.
    NotSent(String),
    /// It was sent and no answer came (link lost, timeout): it may have run.
    Unknown(String),
}

impl std::fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkFailure::NotSent(e) | LinkFailure::Unknown(e) => f.write_str(e),
        }
    }
}

/// Whether running `op` a second time is harmless, so that an operation whose outcome is
/// unknown may be re-run over SSH: a status, a stop (of a stopped service: nothing), a fragment
/// deletion (of absent files: nothing). A start or restart is not re-run: the service may be
/// starting already, and a second restart interrupts it again.
pub fn idempotent(op: &Operation) -> bool {
    match op {
        Operation::Service { action, .. } => {
            matches!(action, ServiceAction::Status | ServiceAction::Stop)
        }
        Operation::DeleteFragments { .. } => true,
    }
}

/// The agent link, as this module needs it. Implemented by the shared state.
pub trait AgentPath: Send + Sync + 'static {
    /// Whether the node's agent is connected now.
    fn is_online(&self, node: &str) -> bool;
    /// Runs one operation over the link. `Err` means the link failed before a result came back
    /// (whether it may have run says the [`LinkFailure`]); a refusal by the agent is an `Ok`
    /// result.
    fn execute(
        &self,
        node: &str,
        op: &Operation,
    ) -> impl Future<Output = Result<OperationResult, LinkFailure>> + Send;
    /// Resolves when the node's agent connects, or with `false` after `limit`.
    fn wait_online(&self, node: &str, limit: Duration) -> impl Future<Output = bool> + Send;
    /// Records what the other paths took, beside the link's own command times: an operation
    /// answered over SSH, or a woken node's time from the magic packet to its agent connecting.
    fn observe(&self, path: ActionPath, elapsed: Duration) {
        let _ = (path, elapsed);
    }
}

/// The outcome of an action on one node (what goes into the event log, with who asked).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeActionResult {
    pub node: String,
    pub action: String,
    pub requested_by: String,
    /// The last path used (`ssh` when the link dropped mid-action and SSH finished it;
    /// `wake_on_lan` when the node was woken and its agent then ran the operations; `None` when
    /// no path could be tried).
    pub path: Option<ActionPath>,
    /// A Wake-on-LAN packet was sent.
    pub woke: bool,
    pub results: Vec<OperationResult>,
    /// Operations whose outcome is unknown (sent over the link, which was lost before the
    /// answer), with why; not re-run over another path.
    #[serde(default)]
    pub outcome_unknown: Vec<String>,
    /// Why the action did not complete (unreachable, host key refused, nothing to do, …).
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl NodeActionResult {
    /// Done, and something was done: an empty result set is never a success.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && self.outcome_unknown.is_empty()
            && (self.woke || !self.results.is_empty())
            && self.results.iter().all(OperationResult::succeeded)
    }

    /// Nothing failed, but some operation's outcome is unknown.
    pub fn unknown(&self) -> bool {
        !self.outcome_unknown.is_empty()
            && self.error.is_none()
            && self.results.iter().all(OperationResult::succeeded)
    }
}

/// How long a woken node's agent gets to connect.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub wake_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            wake_wait: Duration::from_secs(180),
        }
    }
}

/// Whether an SSH failure means "the node does not answer" (TCP connection refused, no route,
/// connect timeout: waking it makes sense), as opposed to "something answered" (a failed or
/// stalled handshake, a refused key, another host key), which must never trigger a wake.
fn unreachable(e: &SshError) -> bool {
    e.is_unreachable()
}

/// How many nodes of one action may be on each path at once: commands over agent links are
/// cheap (a frame each way), so a fleet-wide action sends thousands at once; the SSH and
/// Wake-on-LAN fallbacks (a TCP connection and key exchange each, or a wait for a woken agent)
/// go a few at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub link: usize,
    pub fallback: usize,
}

/// The permits of one action's [`Limits`].
struct Permits {
    link: tokio::sync::Semaphore,
    fallback: tokio::sync::Semaphore,
}

impl Permits {
    fn new(limits: Limits) -> Permits {
        Permits {
            link: tokio::sync::Semaphore::new(limits.link.max(1)),
            fallback: tokio::sync::Semaphore::new(limits.fallback.max(1)),
        }
    }
}

/// Runs `action` on one node, choosing the path.
pub async fn run_on_node<A: AgentPath>(
    agent: &A,
    reach: &NodeReach,
    action: &Action,
    requested_by: &str,
    timing: Timing,
) -> NodeActionResult {
    run_limited(agent, reach, action, requested_by, timing, None).await
}

/// [`run_on_node`] within an action's permits.
async fn run_limited<A: AgentPath>(
    agent: &A,
    reach: &NodeReach,
    action: &Action,
    requested_by: &str,
    timing: Timing,
    permits: Option<&Permits>,
) -> NodeActionResult {
    let started = Instant::now();
    let mut result = NodeActionResult {
        node: reach.node.clone(),
        action: action.name(),
        requested_by: requested_by.to_string(),
        path: None,
        woke: false,
        results: Vec::new(),
        outcome_unknown: Vec::new(),
        error: None,
        duration_ms: 0,
    };
    let ops = action.operations(&reach.services);
    if let Err(e) = ops.iter().try_for_each(Operation::validate) {
        result.error = Some(format!("refused before contacting {}: {e}", reach.node));
        return finish(result, started);
    }
    // A wake of a node whose agent is down still has its power-on to do.
    if ops.is_empty() && (*action != Action::Wake || agent.is_online(&reach.node)) {
        result.error = Some(nothing_to_do(&reach.node));
        return finish(result, started);
    }
    route(agent, reach, action, &ops, timing, permits, &mut result).await;
    finish(result, started)
}

/// Why an action on `node` means no operation.
pub fn nothing_to_do(node: &str) -> String {
    format!(
        "nothing to do on {node}: it declares no managed services (its agent has not reported \
         any, and [nodes.{node}] in the controller's configuration declares none)"
    )
}

fn finish(mut result: NodeActionResult, started: Instant) -> NodeActionResult {
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result
}

async fn route<A: AgentPath>(
    agent: &A,
    reach: &NodeReach,
    action: &Action,
    ops: &[Operation],
    timing: Timing,
    permits: Option<&Permits>,
    result: &mut NodeActionResult,
) {
    let mut pending: &[Operation] = ops;
    if agent.is_online(&reach.node) {
        result.path = Some(ActionPath::Agent);
        let over_link = async {
            let _permit = match permits {
                Some(p) => p.link.acquire().await.ok(),
                None => None,
            };
            over_agent(agent, &reach.node, pending, &mut result.results).await
        };
        match over_link.await {
            Ok(()) => return,
            // The link dropped mid-action: what was not sent goes over SSH; the one in flight
            // too if running it twice is harmless, else its outcome stays unknown.
            Err((done, failure)) => {
                let in_flight = &pending[done];
                pending = &pending[done..];
                match &failure {
                    LinkFailure::Unknown(e) if !idempotent(in_flight) => {
                        tracing::warn!(
                            node = %reach.node, operation = %in_flight, error = %e,
                            "agent link lost after the operation was sent: its outcome is unknown; not re-running it"
                        );
                        result
                            .outcome_unknown
                            .push(format!("{in_flight}: outcome unknown ({e})"));
                        pending = &pending[1..];
                    }
                    _ => tracing::warn!(
                        node = %reach.node, error = %failure, "agent link failed; trying SSH"
                    ),
                }
                result.error = Some(format!("agent link: {failure}"));
                if pending.is_empty() {
                    if result.outcome_unknown.len() == 1 && result.results.len() + 1 == ops.len() {
                        // Only the unknown one: no error beyond it.
                        result.error = None;
                    }
                    return;
                }
            }
        }
    }
    // From here on, the slow paths: a few nodes at a time.
    let _fallback = match permits {
        Some(p) => p.fallback.acquire().await.ok(),
        None => None,
    };
    let mut ssh_unreachable = reach.ssh.is_none() || pending.is_empty();
    if pending.is_empty() {
        // A wake with nothing to start: only the power-on is left to try.
    } else if let Some(target) = &reach.ssh {
        result.path = Some(ActionPath::Ssh);
        match over_ssh(agent, target, pending, &mut result.results).await {
            Ok(()) => {
                result.error = None;
                return;
            }
            Err(e) => {
                ssh_unreachable = unreachable(&e);
                result.error = Some(e.to_string());
            }
        }
    }
    if *action != Action::Wake || !ssh_unreachable {
        if result.error.is_none() && !pending.is_empty() {
            result.error = Some(format!(
                "{} is unreachable: its agent is offline and no SSH access is configured",
                reach.node
            ));
        }
        return;
    }
    let Some(wake) = &reach.wake else {
        result.error = Some(format!(
            "{} answers neither its agent link nor SSH, and no MAC address is known to wake it{}",
            reach.node,
            result
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
        return;
    };
    result.path = Some(ActionPath::WakeOnLan);
    if let Err(e) = wol::send_magic_packets(&wake.macs, wake.send_to).await {
        result.error = Some(e.to_string());
        return;
    }
    result.woke = true;
    let sent = Instant::now();
    if !agent.wait_online(&reach.node, timing.wake_wait).await {
        result.error = Some(format!(
            "sent Wake-on-LAN to {} but its agent did not connect within {:?}",
            reach.node, timing.wake_wait
        ));
        return;
    }
    agent.observe(ActionPath::WakeOnLan, sent.elapsed());
    result.error = None;
    // Awake: start the services over the link (the path stays WakeOnLan in the record).
    if let Err((done, e)) = over_agent(agent, &reach.node, pending, &mut result.results).await {
        if matches!(e, LinkFailure::Unknown(_)) {
            result
                .outcome_unknown
                .push(format!("{}: outcome unknown ({e})", pending[done]));
        }
        result.error = Some(format!("agent link after wake: {e}"));
    }
}

/// Runs ops in order over the link; on a link failure returns how many completed.
async fn over_agent<A: AgentPath>(
    agent: &A,
    node: &str,
    ops: &[Operation],
    results: &mut Vec<OperationResult>,
) -> Result<(), (usize, LinkFailure)> {
    for (i, op) in ops.iter().enumerate() {
        match agent.execute(node, op).await {
            Ok(r) => results.push(r),
            Err(e) => return Err((i, e)),
        }
    }
    Ok(())
}

/// Runs ops in order over one SSH connection.
async fn over_ssh<A: AgentPath>(
    agent: &A,
    target: &SshTarget,
    ops: &[Operation],
    results: &mut Vec<OperationResult>,
) -> Result<(), SshError> {
    let (mut done, error) =
        ssh::run_operations(target, ops, |took| agent.observe(ActionPath::Ssh, took)).await;
    results.append(&mut done);
    error.map_or(Ok(()), Err)
}

/// Runs `action` on many nodes within `limits`; `progress` sees each node's result as it
/// finishes. Results come back in the order of `nodes`.
pub async fn run_on_nodes<A: AgentPath>(
    agent: Arc<A>,
    nodes: Vec<NodeReach>,
    action: Action,
    requested_by: &str,
    limits: Limits,
    timing: Timing,
    progress: impl FnMut(usize, &NodeActionResult, usize, usize),
) -> Vec<NodeActionResult> {
    let each = nodes.into_iter().map(|n| (n, action.clone())).collect();
    run_each(agent, each, requested_by, limits, timing, progress).await
}

/// As [`run_on_nodes`], with an action per node (fragment deletions differ per node).
/// `progress` sees `(index in nodes, result, done, total)` as each node finishes.
pub async fn run_each<A: AgentPath>(
    agent: Arc<A>,
    nodes: Vec<(NodeReach, Action)>,
    requested_by: &str,
    limits: Limits,
    timing: Timing,
    mut progress: impl FnMut(usize, &NodeActionResult, usize, usize),
) -> Vec<NodeActionResult> {
    let total = nodes.len();
    let permits = Arc::new(Permits::new(limits));
    let mut set = tokio::task::JoinSet::new();
    for (i, (reach, action)) in nodes.iter().cloned().enumerate() {
        let (agent, permits) = (agent.clone(), permits.clone());
        let who = requested_by.to_string();
        set.spawn(async move {
            let result = run_limited(&*agent, &reach, &action, &who, timing, Some(&permits));
            (i, result.await)
        });
    }
    let mut results: Vec<Option<NodeActionResult>> = vec![None; total];
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            done += 1;
            progress(i, &r, done, total);
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    results
        .into_iter()
        .zip(nodes)
        .map(|(r, (reach, action))| {
            r.unwrap_or_else(|| NodeActionResult {
                node: reach.node,
                action: action.name(),
                requested_by: requested_by.to_string(),
                path: None,
                woke: false,
                results: vec![],
                outcome_unknown: vec![],
                error: Some("the node's task failed".into()),
                duration_ms: 0,
            })
        })
        .collect()
}

/// One line per node: node, path, ok/failed, a summary. For the CLI's closing table.
pub fn render_table(results: &[NodeActionResult]) -> String {
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|r| {
            let path = match (r.path, r.woke) {
                (Some(ActionPath::Agent), _) => "agent",
                (Some(ActionPath::Ssh), _) => "ssh",
                (Some(ActionPath::WakeOnLan), _) | (None, true) => "wol",
                (None, false) => "-",
            };
            let status = if r.succeeded() {
                "ok"
            } else if r.unknown() {
                "UNKNOWN"
            } else {
                "FAILED"
            };
            [r.node.clone(), path.into(), status.into(), summary(r)]
        })
        .collect();
    crate::table::render(["NODE", "PATH", "RESULT", "DETAIL"], &rows)
}

fn summary(r: &NodeActionResult) -> String {
    let mut parts: Vec<String> = r
        .results
        .iter()
        .map(|res| {
            let op = res
                .operation
                .as_ref()
                .map(|o| o.to_string())
                .unwrap_or_default();
            match &res.outcome {
                Outcome::Refused { reason } => format!("{op}: refused: {reason}"),
                Outcome::Service { message, .. } => format!("{op}: {message}"),
                Outcome::Fragments { results, .. } => {
                    let failed = results
                        .iter()
                        .filter(|f| {
                            matches!(
                                f.outcome,
                                nodewarden_shared::ops::FragmentOutcome::Failed(_)
                            )
                        })
                        .count();
                    format!("{op}: {} ok, {failed} failed", results.len() - failed)
                }
            }
        })
        .collect();
    parts.extend(r.outcome_unknown.iter().cloned());
    if let Some(e) = &r.error {
        parts.push(e.clone());
    }
    // One line per node whatever the remote side said: the table shows control characters as
    // spaces.
    parts.join("; ")
}

/// Refuses a batch of operations at once, for callers that validate before queueing.
pub fn validate_all(ops: &[Operation]) -> Result<(), OpsError> {
    ops.iter().try_for_each(Operation::validate)
}

#[cfg(test)]
mod tests;
