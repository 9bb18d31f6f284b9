//! The agent's side of operations: runs exactly the operations its own config declares, whether
//! the request came over the controller link or through the SSH forced command.
//!
//! [`Executor::execute`] is the single entry point. Anything not declared (a service name, a
//! storage device id) is refused before anything runs; fragment files are named from integers,
//! never from request text.

pub mod config;
pub mod dispatch;
pub mod fragments;
pub mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodewarden_shared::ops::{
    CommandExit, CommandReport, OUTPUT_LIMIT_BYTES, Operation, OperationResult, Outcome,
    ServiceAction, ServiceState,
};

pub use config::{ConfigError, OpsConfig, ServiceDecl, ServiceKind, StorageDeviceDecl};
use process::RunAs;

/// How long a process gets to die after SIGKILL before stop reports failure.
const KILL_WAIT: Duration = Duration::from_secs(5);

struct Service {
    decl: ServiceDecl,
    kind: ServiceKind,
    /// One operation at a time per service (a start racing a stop would leave either state).
    busy: tokio::sync::Mutex<()>,
}

struct Inner {
    services: BTreeMap<String, Service>,
    devices: BTreeMap<u32, PathBuf>,
    systemctl: PathBuf,
}

/// Runs declared operations. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// An executor for the declarations in `config` (checked by [`OpsConfig::check`]; a
    /// declaration that does not check is left out and so refused).
    pub fn new(config: &OpsConfig) -> Executor {
        Executor::with_systemctl(config, "systemctl")
    }

    /// As [`Executor::new`], with another `systemctl` program (tests on hosts without systemd).
    pub fn with_systemctl(config: &OpsConfig, systemctl: impl Into<PathBuf>) -> Executor {
        let services = config
            .services
            .iter()
            .filter_map(|decl| {
                let kind = decl.kind().ok()?;
                Some((
                    decl.name.clone(),
                    Service {
                        decl: decl.clone(),
                        kind,
                        busy: tokio::sync::Mutex::new(()),
                    },
                ))
            })
            .collect();
        let devices = config
            .storage
            .devices
            .iter()
            .map(|d| (d.id, d.fragment_dir.clone()))
            .collect();
        Executor {
            inner: Arc::new(Inner {
                services,
                devices,
                systemctl: systemctl.into(),
            }),
        }
    }

    /// Runs one operation and reports what happened. Never panics, never runs anything the
    /// config does not declare.
    pub async fn execute(&self, op: &Operation) -> OperationResult {
        let started = Instant::now();
        let outcome = match op.validate() {
            Err(e) => Outcome::Refused {
                reason: e.to_string(),
            },
            Ok(()) => match op {
                Operation::Service { service, action } => {
                    self.service_operation(service, *action).await
                }
                Operation::DeleteFragments {
                    device_id,
                    fragment_ids,
                } => match self.inner.devices.get(device_id) {
                    None => Outcome::Refused {
                        reason: format!("storage device {device_id} is not declared on this node"),
                    },
                    Some(dir) => {
                        fragments::delete_fragments(*device_id, dir.clone(), fragment_ids.clone())
                            .await
                    }
                },
            },
        };
        let result = OperationResult {
            operation: Some(op.clone()),
            outcome,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        log_result(&result);
        result
    }

    /// Runs several operations concurrently (e.g. one deletion per storage device), results in
    /// the order given.
    pub async fn execute_all(&self, ops: &[Operation]) -> Vec<OperationResult> {
        let mut set = tokio::task::JoinSet::new();
        for (i, op) in ops.iter().enumerate() {
            let this = self.clone();
            let op = op.clone();
            set.spawn(async move { (i, this.execute(&op).await) });
        }
        let mut results: Vec<Option<OperationResult>> = vec![None; ops.len()];
        while let Some(joined) = set.join_next().await {
            if let Ok((i, r)) = joined
                && let Some(slot) = results.get_mut(i)
            {
                *slot = Some(r);
            }
        }
        results
            .into_iter()
            .zip(ops)
            .map(|(r, op)| {
                r.unwrap_or_else(|| {
                    OperationResult::refused(Some(op.clone()), "the operation's task failed")
                })
            })
            .collect()
    }

    /// Each declared service's state, as `status` would report it but without logging (for the
    /// periodic state report).
    pub async fn service_states(&self) -> Vec<(String, ServiceState)> {
        let mut set = tokio::task::JoinSet::new();
        for name in self.inner.services.keys() {
            let (this, name) = (self.clone(), name.clone());
            set.spawn(async move {
                let state = match this.service_operation(&name, ServiceAction::Status).await {
                    Outcome::Service { state, .. } => state,
                    _ => ServiceState::Unknown,
                };
                (name, state)
            });
        }
        let mut states = Vec::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(s) = joined {
                states.push(s);
            }
        }
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// The declared service names (for the controller's inventory).
    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.inner.services.keys().map(String::as_str)
    }

    /// The declared storage device ids.
    pub fn device_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.inner.devices.keys().copied()
    }

    async fn service_operation(&self, name: &str, action: ServiceAction) -> Outcome {
        let Some(service) = self.inner.services.get(name) else {
            return Outcome::Refused {
                reason: format!("service {name:?} is not declared on this node"),
            };
        };
        let _busy = service.busy.lock().await;
        let run_as = match &service.decl.user {
            None => Ok(RunAs {
                workdir: service.decl.workdir.clone(),
                ids: None,
                env: service.decl.env.clone(),
            }),
            Some(user) => process::lookup_user(user).map(|ids| RunAs {
                workdir: service.decl.workdir.clone(),
                ids: Some(ids),
                env: service.decl.env.clone(),
            }),
        };
        let run_as = match run_as {
            Ok(r) => r,
            Err(message) => {
                return Outcome::Service {
                    ok: false,
                    state: ServiceState::Unknown,
                    message,
                    commands: vec![],
                };
            }
        };
        let report = match &service.kind {
            ServiceKind::Unit(unit) => self.unit_operation(service, unit, action).await,
            ServiceKind::Process {
                start,
                stop,
                pid_file,
            } => {
                // Across processes too: the agent and an ssh-dispatch may both be asked.
                let _lock = if action == ServiceAction::Status {
                    None
                } else {
                    match process::lock_service(pid_file, service.decl.timeout()).await {
                        Ok(lock) => Some(lock),
                        Err(message) => {
                            return Outcome::Service {
                                ok: false,
                                state: ServiceState::Unknown,
                                message,
                                commands: vec![],
                            };
                        }
                    }
                };
                let p = ProcessService {
                    decl: &service.decl,
                    start,
                    stop: stop.as_deref(),
                    pid_file,
                    run_as: &run_as,
                };
                match action {
                    ServiceAction::Status => p.status(),
                    ServiceAction::Start => p.start().await,
                    ServiceAction::Stop => p.stop().await,
                    ServiceAction::Restart => {
                        let stopped = p.stop().await;
                        if !stopped.ok {
                            stopped
                        } else {
                            let mut started = p.start().await;
                            let mut commands = stopped.commands;
                            commands.append(&mut started.commands);
                            started.commands = commands;
                            started.message = format!("{}; {}", stopped.message, started.message);
                            started
                        }
                    }
                }
            }
        };
        Outcome::Service {
            ok: report.ok,
            state: report.state,
            message: report.message,
            commands: report.commands,
        }
    }

    async fn unit_operation(
        &self,
        service: &Service,
        unit: &str,
        action: ServiceAction,
    ) -> ServiceReport {
        let systemctl = self.inner.systemctl.to_string_lossy().into_owned();
        let timeout = service.decl.timeout();
        let run = |verb: &str| {
            let argv = vec![systemctl.clone(), verb.to_string(), unit.to_string()];
            async move {
                process::run_bounded(&argv, &RunAs::default(), timeout, OUTPUT_LIMIT_BYTES).await
            }
        };
        let mut commands = Vec::new();
        let mut action_ok = true;
        if action != ServiceAction::Status {
            let report = run(action.as_str()).await;
            action_ok = report.succeeded();
            commands.push(report);
        }
        let check = run("is-active").await;
        let state = match (&check.exit, check.stdout.trim()) {
            (CommandExit::Exited { code: 0 }, _) => ServiceState::Running,
            (CommandExit::Exited { .. }, "inactive" | "failed") => ServiceState::Stopped,
            _ => ServiceState::Unknown,
        };
        let checked = matches!(check.exit, CommandExit::Exited { .. });
        commands.push(check);
        let ok = match action {
            ServiceAction::Status => checked,
            ServiceAction::Start | ServiceAction::Restart => {
                action_ok && state == ServiceState::Running
            }
            ServiceAction::Stop => action_ok && state == ServiceState::Stopped,
        };
        ServiceReport {
            ok,
            state,
            message: format!("unit {unit} is {}", state_word(state)),
            commands,
        }
    }
}

fn state_word(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Running => "running",
        ServiceState::Stopped => "stopped",
        ServiceState::Unknown => "in an unknown state",
    }
}

fn log_result(result: &OperationResult) {
    let op = result
        .operation
        .as_ref()
        .map(|o| o.to_string())
        .unwrap_or_default();
    match &result.outcome {
        Outcome::Refused { reason } => tracing::warn!(%op, %reason, "operation refused"),
        _ => tracing::info!(%op, ok = result.succeeded(), ms = result.duration_ms, "operation"),
    }
}

struct ServiceReport {
    ok: bool,
    state: ServiceState,
    message: String,
    commands: Vec<CommandReport>,
}

/// A declared process that is not a systemd unit, tracked by its pid file.
struct ProcessService<'a> {
    decl: &'a ServiceDecl,
    start: &'a [String],
    stop: Option<&'a [String]>,
    pid_file: &'a std::path::Path,
    run_as: &'a RunAs,
}

impl ProcessService<'_> {
    fn report(ok: bool, state: ServiceState, message: String) -> ServiceReport {
        ServiceReport {
            ok,
            state,
            message,
            commands: vec![],
        }
    }

    fn status(&self) -> ServiceReport {
        match process::running_pid(self.start, self.pid_file) {
            Ok(Some((pid, _))) => {
                Self::report(true, ServiceState::Running, format!("running as pid {pid}"))
            }
            Ok(None) => Self::report(true, ServiceState::Stopped, "not running".into()),
            Err(e) => Self::report(false, ServiceState::Unknown, e),
        }
    }

    async fn start(&self) -> ServiceReport {
        match process::running_pid(self.start, self.pid_file) {
            Ok(Some((pid, _))) => {
                return Self::report(
                    true,
                    ServiceState::Running,
                    format!("already running as pid {pid}"),
                );
            }
            Ok(None) => {}
            // An unreadable pid file: starting a second copy could double the service.
            Err(e) => return Self::report(false, ServiceState::Unknown, e),
        }
        let report = process::start_detached(
            self.start,
            self.run_as,
            self.pid_file,
            self.decl.log_file.as_deref(),
            self.decl.start_grace(),
        )
        .await;
        let (ok, state, message) = match &report.exit {
            CommandExit::Detached { pid } => {
                (true, ServiceState::Running, format!("started as pid {pid}"))
            }
            CommandExit::SpawnFailed { error } => (
                false,
                ServiceState::Stopped,
                format!("not started: {error}"),
            ),
            other => (
                false,
                ServiceState::Stopped,
                format!("exited during the start check: {other:?}"),
            ),
        };
        ServiceReport {
            ok,
            state,
            message,
            commands: vec![report],
        }
    }

    async fn stop(&self) -> ServiceReport {
        let running = match process::running_pid(self.start, self.pid_file) {
            Ok(r) => r,
            Err(e) => return Self::report(false, ServiceState::Unknown, e),
        };
        let mut commands = Vec::new();
        if let Some(stop) = self.stop {
            let report =
                process::run_bounded(stop, self.run_as, self.decl.timeout(), OUTPUT_LIMIT_BYTES)
                    .await;
            let stop_ok = report.succeeded();
            commands.push(report);
            let gone = match &running {
                Some((pid, _)) => process::wait_exit(*pid, self.decl.stop_grace()).await,
                None => true,
            };
            if gone {
                let _ = std::fs::remove_file(self.pid_file);
            }
            let state = if gone {
                ServiceState::Stopped
            } else {
                ServiceState::Running
            };
            return ServiceReport {
                ok: stop_ok && gone,
                state,
                message: if gone {
                    "stopped".into()
                } else {
                    "stop command ran but the process is still running".into()
                },
                commands,
            };
        }
        let Some((pid, info)) = running else {
            // Also clears a stale pid file left by a crash or a reused pid.
            let _ = std::fs::remove_file(self.pid_file);
            return Self::report(true, ServiceState::Stopped, "not running".into());
        };
        if let Err(e) = process::signal(pid, &info, libc::SIGTERM) {
            return Self::report(
                false,
                ServiceState::Unknown,
                format!("SIGTERM to pid {pid}: {e}"),
            );
        }
        let mut how = "SIGTERM";
        let mut gone = process::wait_exit(pid, self.decl.stop_grace()).await;
        if !gone {
            how = "SIGKILL after the grace period";
            let _ = process::signal(pid, &info, libc::SIGKILL);
            gone = process::wait_exit(pid, KILL_WAIT).await;
        }
        if gone {
            let _ = std::fs::remove_file(self.pid_file);
            Self::report(
                true,
                ServiceState::Stopped,
                format!("pid {pid} stopped by {how}"),
            )
        } else {
            Self::report(
                false,
                ServiceState::Running,
                format!("pid {pid} survived SIGKILL"),
            )
        }
    }
}

#[cfg(test)]
mod tests;
