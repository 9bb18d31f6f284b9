//! A simulated node: what the agent's link client (`nodewarden_agent::link`) speaks for in the
//! simulator. It reports a storage node's state (one device, one declared service, made-up
//! health) and answers commands as a real agent would: stop, start and status of its declared
//! service, fragment deletion on its device, its inventory. The device's free bytes carry the
//! number of reports this node has sent so far, so the database's final state says whether the
//! last report of every node was persisted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nodewarden_agent::link::{Node, Work};
use nodewarden_shared::ops::{
    FragmentOutcome, FragmentResult, Operation, OperationResult, Outcome, ServiceAction,
    ServiceState,
};
use nodewarden_shared::protocol::{
    AgentToController, CAP_INVENTORY, CAP_OPERATIONS, CAP_STATE_REPORT, CommandOutcome, Health,
    Inventory, Role, ServiceState as ReportedService, ServiceStatus, StateReport, StorageDevice,
};
use tokio::sync::watch;

/// The service every simulated node declares.
pub const SERVICE: &str = "dfs";

/// Figures of the whole simulated fleet.
pub struct FleetStats {
    /// Agents with a session now; waiters subscribe to its changes.
    pub connected: watch::Sender<usize>,
    pub reports_sent: AtomicU64,
    pub operations: AtomicU64,
    /// No more reports (the end of a run: what was sent arrives before the agents close).
    pub quiet: AtomicBool,
}

impl Default for FleetStats {
    fn default() -> Self {
        FleetStats {
            connected: watch::Sender::new(0),
            reports_sent: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            quiet: AtomicBool::new(false),
        }
    }
}

pub struct SimNode {
    pub name: String,
    pub device_id: u32,
    /// Jitter of a collection, as the time a real agent's collection takes.
    jitter: Duration,
    up: AtomicBool,
    /// Sessions this node has had (welcomes).
    sessions: AtomicU64,
    running: AtomicBool,
    reports: AtomicU64,
    /// The network of this node is cut: what it sends does not arrive.
    cut: Arc<AtomicBool>,
    stats: Arc<FleetStats>,
}

impl SimNode {
    pub fn new(
        name: String,
        device_id: u32,
        jitter: Duration,
        cut: Arc<AtomicBool>,
        stats: Arc<FleetStats>,
    ) -> SimNode {
        SimNode {
            name,
            device_id,
            jitter,
            up: AtomicBool::new(false),
            sessions: AtomicU64::new(0),
            running: AtomicBool::new(true),
            reports: AtomicU64::new(0),
            cut,
            stats,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Sessions this node has had so far (a reconnection makes one more).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }
}

impl Node for SimNode {
    fn capabilities(&self) -> Vec<&'static str> {
        vec![
            CAP_STATE_REPORT,
            "command:ping",
            "command:report-state",
            CAP_INVENTORY,
            CAP_OPERATIONS,
        ]
    }

    fn collect_report(&self) -> Work<Option<StateReport>> {
        if self.stats.quiet.load(Ordering::Relaxed) {
            return Box::pin(async { None });
        }
        let delay = self.jitter.mul_f64(rand::random::<f64>());
        let status = if self.running.load(Ordering::Relaxed) {
            ServiceStatus::Running
        } else {
            ServiceStatus::Stopped
        };
        let report = StateReport {
            seq: 0,
            roles: vec![Role::Storage],
            storage: vec![StorageDevice {
                device_id: self.device_id,
                fragment_dir: format!("/srv/dfs/{}", self.device_id),
                total_bytes: 4 << 40,
                // The number this report will have if it is sent.
                free_bytes: self.reports.load(Ordering::Relaxed) + 1,
                error: None,
            }],
            services: vec![ReportedService {
                name: SERVICE.into(),
                status,
            }],
            health: Health {
                load1: 0.5,
                memory_total_bytes: 64 << 30,
                memory_used_bytes: 8 << 30,
                root_fs_total_bytes: 100 << 30,
                root_fs_used_bytes: 20 << 30,
            },
            metrics_port: Some(9100),
            cpus: Some(8),
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Some(report)
        })
    }

    fn inventory(&self) -> Work<CommandOutcome> {
        let hostname = self.name.clone();
        Box::pin(async move {
            CommandOutcome::Inventory(Inventory {
                hostname,
                interfaces: Vec::new(),
            })
        })
    }

    fn run_operation(&self, op: Operation) -> Work<CommandOutcome> {
        self.stats.operations.fetch_add(1, Ordering::Relaxed);
        let result = match &op {
            Operation::Service { service, action } if service == SERVICE => {
                let state = match action {
                    ServiceAction::Stop => {
                        self.running.store(false, Ordering::Relaxed);
                        ServiceState::Stopped
                    }
                    ServiceAction::Start | ServiceAction::Restart => {
                        self.running.store(true, Ordering::Relaxed);
                        ServiceState::Running
                    }
                    ServiceAction::Status if self.running.load(Ordering::Relaxed) => {
                        ServiceState::Running
                    }
                    ServiceAction::Status => ServiceState::Stopped,
                };
                OperationResult {
                    operation: Some(op.clone()),
                    outcome: Outcome::Service {
                        ok: true,
                        state,
                        message: String::new(),
                        commands: Vec::new(),
                    },
                    duration_ms: 0,
                }
            }
            Operation::DeleteFragments {
                device_id,
                fragment_ids,
            } if *device_id == self.device_id => OperationResult {
                operation: Some(op.clone()),
                outcome: Outcome::Fragments {
                    device_id: *device_id,
                    results: fragment_ids
                        .iter()
                        .map(|&fragment_id| FragmentResult {
                            fragment_id,
                            outcome: FragmentOutcome::AlreadyAbsent,
                        })
                        .collect(),
                },
                duration_ms: 0,
            },
            _ => OperationResult::refused(Some(op.clone()), "not declared on this node"),
        };
        Box::pin(async move { CommandOutcome::Operation(result) })
    }

    fn connected(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                self.sessions.fetch_add(1, Ordering::Relaxed);
            }
            self.stats
                .connected
                .send_modify(|c| if up { *c += 1 } else { *c -= 1 });
        }
    }

    fn sent(&self, message: &AgentToController) {
        // A report sent into a cut network does not arrive: not counted.
        if matches!(message, AgentToController::StateReport(_)) && !self.cut.load(Ordering::Relaxed)
        {
            self.reports.fetch_add(1, Ordering::Relaxed);
            self.stats.reports_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}
