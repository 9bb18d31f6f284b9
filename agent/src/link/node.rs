//! The node the real agent's link speaks for: its state collected by the agent's own sources
//! (with deadlines, so a hung mount or a stuck `systemctl` never stalls the link), its inventory,
//! and the operations its config declares, run by the [`Executor`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nodewarden_shared::ops::{self as shared_ops, Operation, OperationResult};
use nodewarden_shared::protocol::{
    CAP_ENDPOINTS, CAP_FRAGMENT_DELTAS, CAP_FRAGMENTS, CAP_INVENTORY, CAP_METRICS_TLS,
    CAP_OPERATIONS, CAP_STATE_REPORT, CommandOutcome, ScrapeEndpoint, ServiceStatus, StateReport,
};

use super::{Node, Work};
use crate::fragment_task::Inventories;
use crate::nodestate::StateSource;
use crate::ops::Executor;
use crate::ray::RaySource;

/// How long one state collection may take (a hung mount must not stall the link).
const COLLECT_DEADLINE: Duration = Duration::from_secs(2);
/// How long observing the declared services' states may add to a report (a `systemctl
/// is-active` that hangs, or a service busy with a long stop, leaves its state unknown).
const SERVICE_STATE_DEADLINE: Duration = Duration::from_secs(2);
/// How long collecting the inventory may take.
const INVENTORY_DEADLINE: Duration = Duration::from_secs(2);
/// How long looking for the other metrics endpoints may take.
const ENDPOINTS_DEADLINE: Duration = Duration::from_secs(2);

/// This machine, as the link reports and operates it.
pub struct AgentNode {
    pub state: Arc<StateSource>,
    /// Runs the declared operations; `None` when nothing is declared (no operations announced).
    pub executor: Option<Executor>,
    /// Where the inventory's host name (`<procfs>/sys/kernel/hostname`) and MACs
    /// (`<sysfs>/class/net`) are read.
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    /// `/metrics` is served over TLS (`--web.config.file`): announced as [`CAP_METRICS_TLS`].
    pub metrics_tls: bool,
    /// The fragment task's inventories (`[fragments]`): announced as [`CAP_FRAGMENTS`] and
    /// [`CAP_FRAGMENT_DELTAS`].
    pub fragments: Option<Arc<Inventories>>,
    /// Ray's metrics endpoint (`[ray]` or the `ray` role): announced as [`CAP_ENDPOINTS`].
    pub ray: Option<Arc<RaySource>>,
}

/// What this agent announces: operations only when its config declares something to act on;
/// TLS on its metrics port when it serves it so (for the controller's service discovery).
fn capabilities(
    operations: bool,
    metrics_tls: bool,
    fragments: bool,
    endpoints: bool,
) -> Vec<&'static str> {
    let mut caps = vec![
        CAP_STATE_REPORT,
        "command:ping",
        "command:report-state",
        CAP_INVENTORY,
    ];
    if operations {
        caps.push(CAP_OPERATIONS);
    }
    if metrics_tls {
        caps.push(CAP_METRICS_TLS);
    }
    if fragments {
        caps.push(CAP_FRAGMENTS);
        caps.push(CAP_FRAGMENT_DELTAS);
    }
    if endpoints {
        caps.push(CAP_ENDPOINTS);
    }
    caps
}

impl Node for AgentNode {
    fn capabilities(&self) -> Vec<&'static str> {
        capabilities(
            self.executor.is_some(),
            self.metrics_tls,
            self.fragments.is_some(),
            self.ray.is_some(),
        )
    }

    fn endpoints(&self) -> Work<Option<Vec<ScrapeEndpoint>>> {
        let ray = self.ray.clone();
        Box::pin(async move {
            let ray = ray?;
            let task =
                tokio::task::spawn_blocking(move || ray.endpoints(crate::ray::own_addresses));
            match tokio::time::timeout(ENDPOINTS_DEADLINE, task).await {
                Ok(Ok(list)) => list,
                Ok(Err(e)) => {
                    tracing::warn!("looking for Ray's metrics endpoint: {e}");
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        "looking for Ray's metrics endpoint took over {ENDPOINTS_DEADLINE:?}"
                    );
                    None
                }
            }
        })
    }

    fn fragment_inventories(&self) -> Option<Arc<Inventories>> {
        self.fragments.clone()
    }

    fn collect_report(&self) -> Work<Option<StateReport>> {
        let (state, executor) = (self.state.clone(), self.executor.clone());
        Box::pin(async move {
            let mut report = collect(&state).await?;
            if let Some(executor) = &executor {
                observe_services(executor, &mut report).await;
            }
            Some(report)
        })
    }

    fn inventory(&self) -> Work<CommandOutcome> {
        let (procfs, sysfs) = (self.procfs.clone(), self.sysfs.clone());
        Box::pin(async move {
            let task =
                tokio::task::spawn_blocking(move || crate::inventory::collect(&procfs, &sysfs));
            match tokio::time::timeout(INVENTORY_DEADLINE, task).await {
                Ok(Ok(inventory)) => CommandOutcome::Inventory(inventory),
                Ok(Err(e)) => CommandOutcome::Failed {
                    message: format!("collecting the inventory: {e}"),
                },
                Err(_) => CommandOutcome::Failed {
                    message: format!("collecting the inventory took over {INVENTORY_DEADLINE:?}"),
                },
            }
        })
    }

    fn run_operation(&self, op: Operation) -> Work<CommandOutcome> {
        let (executor, fragments) = (self.executor.clone(), self.fragments.clone());
        Box::pin(async move {
            let device = match &op {
                Operation::DeleteFragments { device_id, .. } => Some(*device_id),
                _ => None,
            };
            let outcome = run_operation(executor, op).await;
            // The folder changed: the fragment task scans it again rather than at its period.
            if let (Some(device), Some(fragments)) = (device, fragments) {
                fragments.rescan(device);
            }
            outcome
        })
    }

    fn connected(&self, up: bool) {
        self.state.status.connected.store(up, Ordering::Relaxed);
    }
}

async fn collect(state: &Arc<StateSource>) -> Option<StateReport> {
    // A collection stuck on a hung mount keeps its blocking thread; never start a second one
    // beside it, so the pool the scrapes share cannot fill up with them.
    if state.collecting.swap(true, Ordering::AcqRel) {
        tracing::warn!("the previous node state collection is still running; report skipped");
        return None;
    }
    let source = state.clone();
    let task = tokio::task::spawn_blocking(move || {
        let report = source.collect();
        source.collecting.store(false, Ordering::Release);
        report
    });
    match tokio::time::timeout(COLLECT_DEADLINE, task).await {
        Ok(Ok(report)) => Some(report),
        Ok(Err(e)) => {
            tracing::warn!("collecting node state: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("collecting node state took over {COLLECT_DEADLINE:?}; report skipped");
            None
        }
    }
}

/// Fills the report's service states from the executor (status of each declared service, the
/// same check an operator's `status` runs), within [`SERVICE_STATE_DEADLINE`]; a service not
/// observed in time stays `unknown`.
async fn observe_services(executor: &Executor, report: &mut StateReport) {
    let observed = tokio::time::timeout(SERVICE_STATE_DEADLINE, executor.service_states()).await;
    let Ok(states) = observed else {
        tracing::warn!("observing the declared services took over {SERVICE_STATE_DEADLINE:?}");
        return;
    };
    for service in &mut report.services {
        if let Some((_, state)) = states.iter().find(|(name, _)| *name == service.name) {
            service.status = service_status(*state);
        }
    }
}

fn service_status(state: shared_ops::ServiceState) -> ServiceStatus {
    match state {
        shared_ops::ServiceState::Running => ServiceStatus::Running,
        shared_ops::ServiceState::Stopped => ServiceStatus::Stopped,
        shared_ops::ServiceState::Unknown => ServiceStatus::Unknown,
    }
}

/// Runs one operation (beside the session loop: a stop may take its grace period, so reports
/// and other commands go on meanwhile). Without declarations everything is refused.
async fn run_operation(executor: Option<Executor>, op: Operation) -> CommandOutcome {
    let result = match executor {
        Some(executor) => executor.execute(&op).await,
        None => OperationResult::refused(
            Some(op),
            "this node's agent config declares no services or storage devices",
        ),
    };
    CommandOutcome::Operation(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_announced_only_with_declarations() {
        assert!(!capabilities(false, false, false, false).contains(&CAP_OPERATIONS));
        assert!(capabilities(true, false, false, false).contains(&CAP_OPERATIONS));
        assert!(!capabilities(true, false, false, false).contains(&CAP_METRICS_TLS));
        assert!(capabilities(false, true, false, false).contains(&CAP_METRICS_TLS));
        assert!(capabilities(false, false, false, false).contains(&CAP_INVENTORY));
        assert!(!capabilities(false, false, false, false).contains(&CAP_FRAGMENTS));
        assert!(capabilities(false, false, true, false).contains(&CAP_FRAGMENTS));
        assert!(capabilities(false, false, true, false).contains(&CAP_FRAGMENT_DELTAS));
        assert!(!capabilities(false, false, false, false).contains(&CAP_FRAGMENT_DELTAS));
        assert!(!capabilities(true, true, true, false).contains(&CAP_ENDPOINTS));
        assert!(capabilities(false, false, false, true).contains(&CAP_ENDPOINTS));
    }

    #[tokio::test]
    async fn without_declarations_an_operation_is_refused() {
        let op = Operation::service("x", shared_ops::ServiceAction::Start);
        let CommandOutcome::Operation(r) = run_operation(None, op.clone()).await else {
            panic!("not an operation outcome");
        };
        assert!(r.is_refused());
        assert_eq!(r.operation, Some(op));
    }
}
