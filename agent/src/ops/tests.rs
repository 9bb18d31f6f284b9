//! The executor against real processes and real files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewarden_shared::ops::{
    CommandExit, FragmentOutcome, Operation, OperationResult, Outcome, ServiceAction, ServiceState,
};

use super::*;

fn config(text: &str) -> OpsConfig {
    OpsConfig::parse(text, Path::new("test.toml")).unwrap()
}

fn service_state(r: &OperationResult) -> (bool, ServiceState, String) {
    match &r.outcome {
        Outcome::Service {
            ok, state, message, ..
        } => (*ok, *state, message.clone()),
        other => panic!("not a service outcome: {other:?}"),
    }
}

fn pid_in(path: &Path) -> u32 {
    process::read_pid_file(path).unwrap().expect("pid file")
}

fn alive(pid: u32) -> bool {
    process::process_info(pid).is_some()
}

fn sleeper(dir: &Path, name: &str, extra: &str) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\nstart = [\"sleep\", \"300\"]\nworkdir = \"{d}\"\npid_file = \"{d}/{name}.pid\"\n{extra}\n",
        d = dir.display()
    )
}

#[tokio::test]
async fn a_declared_process_starts_reports_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(&config(&sleeper(dir.path(), "sleeper", "")));
    let pid_file = dir.path().join("sleeper.pid");

    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Status))
        .await;
    assert_eq!(service_state(&r).1, ServiceState::Stopped);

    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Start))
        .await;
    let (ok, state, message) = service_state(&r);
    assert!(ok && state == ServiceState::Running, "{message}");
    let pid = pid_in(&pid_file);
    assert!(alive(pid));
    assert_eq!(
        process::process_info(pid).unwrap().argv,
        vec!["sleep".to_string(), "300".to_string()]
    );
    // It leads its own process group (and session), so stop reaches what it starts.
    assert_eq!(process::process_info(pid).unwrap().pgid, pid as i32);
    let Outcome::Service { commands, .. } = &r.outcome else {
        unreachable!()
    };
    assert_eq!(commands[0].exit, CommandExit::Detached { pid });

    // A second start finds it running and starts no other copy.
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Start))
        .await;
    assert!(service_state(&r).2.contains("already running"));
    assert_eq!(pid_in(&pid_file), pid);

    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Status))
        .await;
    assert_eq!(service_state(&r).1, ServiceState::Running);

    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Restart))
        .await;
    assert!(r.succeeded(), "{r:?}");
    let new_pid = pid_in(&pid_file);
    assert_ne!(new_pid, pid);
    assert!(!alive(pid));
    assert!(alive(new_pid));

    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Stop))
        .await;
    let (ok, state, message) = service_state(&r);
    assert!(ok && state == ServiceState::Stopped, "{message}");
    assert!(message.contains("SIGTERM"), "{message}");
    assert!(!alive(new_pid));
    assert!(!pid_file.exists());

    // Stopping a stopped service is fine.
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Stop))
        .await;
    assert!(r.succeeded());
}

#[tokio::test]
async fn a_stale_pid_file_never_gets_another_process_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(&config(&sleeper(dir.path(), "sleeper", "")));
    let pid_file = dir.path().join("sleeper.pid");
    // Our own pid: alive, but not `sleep 300`.
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Status))
        .await;
    assert_eq!(service_state(&r).1, ServiceState::Stopped);
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Stop))
        .await;
    assert!(r.succeeded());
    assert!(!pid_file.exists(), "stale pid file removed");
    // (Still here: nothing signalled this test process.)

    std::fs::write(&pid_file, "not a pid").unwrap();
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Start))
        .await;
    let (ok, state, message) = service_state(&r);
    assert!(!ok && state == ServiceState::Unknown, "{message}");
    assert!(message.contains("sleeper.pid"), "{message}");
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[services]]\nname = \"stubborn\"\nstart = [\"sh\", \"-c\", \"trap '' TERM; sleep 300\"]\npid_file = \"{}/s.pid\"\nstop_grace = 0.3\n",
        dir.path().display()
    );
    let exec = Executor::new(&config(&text));
    let r = exec
        .execute(&Operation::service("stubborn", ServiceAction::Start))
        .await;
    assert!(r.succeeded(), "{r:?}");
    let pid = pid_in(&dir.path().join("s.pid"));
    let r = exec
        .execute(&Operation::service("stubborn", ServiceAction::Stop))
        .await;
    let (ok, _, message) = service_state(&r);
    assert!(ok, "{message}");
    assert!(message.contains("SIGKILL"), "{message}");
    assert!(!alive(pid));
}

#[tokio::test]
async fn a_start_that_exits_at_once_fails_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[services]]\nname = \"broken\"\nstart = [\"sh\", \"-c\", \"echo no client.jar >&2; exit 7\"]\npid_file = \"{d}/b.pid\"\nlog_file = \"{d}/b.log\"\nstart_grace = 5\n",
        d = dir.path().display()
    );
    let exec = Executor::new(&config(&text));
    let r = exec
        .execute(&Operation::service("broken", ServiceAction::Start))
        .await;
    assert!(!r.succeeded());
    let Outcome::Service {
        commands, state, ..
    } = &r.outcome
    else {
        panic!("{r:?}")
    };
    assert_eq!(*state, ServiceState::Stopped);
    assert_eq!(commands[0].exit, CommandExit::Exited { code: 7 });
    assert!(commands[0].stderr.contains("no client.jar"));
    assert!(!dir.path().join("b.pid").exists());
    // The early exit was awaited, not the whole grace period.
    assert!(r.duration_ms < 4000, "{}", r.duration_ms);
}

#[tokio::test]
async fn a_service_runs_as_its_declared_user() {
    let dir = tempfile::tempdir().unwrap();
    if process::lookup_user("nobody").is_err() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root and a 'nobody' user");
        return;
    }
    let exec = Executor::new(&config(&sleeper(dir.path(), "x", "user = \"nobody\"")));
    let r = exec
        .execute(&Operation::service("x", ServiceAction::Start))
        .await;
    assert!(r.succeeded(), "{r:?}");
    let pid = pid_in(&dir.path().join("x.pid"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let (nobody, _) = process::lookup_user("nobody").unwrap();
    assert!(uid_line.contains(&nobody.to_string()), "{uid_line}");
    assert!(
        exec.execute(&Operation::service("x", ServiceAction::Stop))
            .await
            .succeeded()
    );
}

#[tokio::test]
async fn undeclared_services_and_devices_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(&config(&sleeper(dir.path(), "sleeper", "")));
    for op in [
        Operation::service("storage-client", ServiceAction::Start),
        Operation::service("../sleeper", ServiceAction::Start),
        Operation::DeleteFragments {
            device_id: 9,
            fragment_ids: vec![1],
        },
        Operation::DeleteFragments {
            device_id: 9,
            fragment_ids: vec![],
        },
    ] {
        let r = exec.execute(&op).await;
        assert!(r.is_refused(), "{op:?} gave {r:?}");
    }
    assert!(!dir.path().join("sleeper.pid").exists());
}

/// A stand-in `systemctl` (this host runs no systemd) that records its argv and keeps a unit's
/// state in a file, to check the commands the executor issues and how it reads their results.
fn fake_systemctl(dir: &Path) -> PathBuf {
    let path = dir.join("systemctl");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {d}/calls\ncase \"$1\" in\n\
         start|restart) echo active > {d}/state ;;\n\
         stop) echo inactive > {d}/state ;;\n\
         is-active) s=$(cat {d}/state 2>/dev/null || echo inactive); echo $s; [ \"$s\" = active ] ;;\n\
         esac\n",
        d = dir.display()
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn units_go_through_systemctl() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::with_systemctl(
        &config("[[services]]\nname = \"ray\"\nunit = \"ray-worker.service\"\n"),
        fake_systemctl(dir.path()),
    );
    let r = exec
        .execute(&Operation::service("ray", ServiceAction::Status))
        .await;
    assert_eq!(
        service_state(&r),
        (
            true,
            ServiceState::Stopped,
            "unit ray-worker.service is stopped".into()
        )
    );
    let r = exec
        .execute(&Operation::service("ray", ServiceAction::Start))
        .await;
    assert_eq!(service_state(&r).1, ServiceState::Running);
    assert!(r.succeeded());
    let r = exec
        .execute(&Operation::service("ray", ServiceAction::Stop))
        .await;
    assert_eq!(service_state(&r).1, ServiceState::Stopped);
    assert!(r.succeeded());
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(
        calls,
        "is-active ray-worker.service\nstart ray-worker.service\nis-active ray-worker.service\n\
         stop ray-worker.service\nis-active ray-worker.service\n"
    );
}

#[tokio::test]
async fn a_failing_systemctl_fails_the_operation() {
    let exec = Executor::with_systemctl(
        &config("[[services]]\nname = \"ray\"\nunit = \"ray.service\"\n"),
        "false",
    );
    let r = exec
        .execute(&Operation::service("ray", ServiceAction::Start))
        .await;
    assert!(!r.succeeded());
    assert_eq!(service_state(&r).1, ServiceState::Unknown);
}

struct Storage {
    _root: tempfile::TempDir,
    root: PathBuf,
}

impl Storage {
    /// root/outside-files, root/dev3/{101,101.digest,102,104/}, root/dev4/{7,7.digest}
    fn new() -> Storage {
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path().to_path_buf();
        for d in ["dev3", "dev4"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        for f in [
            "sentinel",
            "x",
            "1",
            "dev3/101",
            "dev3/101.digest",
            "dev3/102",
            "dev4/7",
            "dev4/7.digest",
        ] {
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::create_dir(root.join("dev3/104")).unwrap();
        Storage {
            _root: root_dir,
            root,
        }
    }
    fn config(&self) -> OpsConfig {
        config(&format!(
            "[[storage.devices]]\nid = 3\nfragment_dir = \"{r}/dev3\"\n\
             [[storage.devices]]\nid = 4\nfragment_dir = \"{r}/dev4\"\n\
             [[storage.devices]]\nid = 5\nfragment_dir = \"{r}/unmounted\"\n",
            r = self.root.display()
        ))
    }
    fn exists(&self, f: &str) -> bool {
        self.root.join(f).exists()
    }
}

fn fragment_outcomes(r: &OperationResult) -> Vec<(u64, FragmentOutcome)> {
    match &r.outcome {
        Outcome::Fragments { results, .. } => results
            .iter()
            .map(|f| (f.fragment_id, f.outcome.clone()))
            .collect(),
        other => panic!("not a fragments outcome: {other:?}"),
    }
}

#[tokio::test]
async fn fragments_and_digests_are_deleted_per_device_in_parallel() {
    let s = Storage::new();
    let exec = Executor::new(&s.config());
    let ops = nodewarden_shared::ops::deletions_by_device([
        ("101", "3"),
        ("102", "3"),
        ("103", "3"),
        ("104", "3"),
        ("7", "4"),
        ("1", "5"),
    ])
    .unwrap();
    let results = exec.execute_all(&ops).await;
    assert_eq!(results.len(), 3);
    let dev3 = fragment_outcomes(&results[0]);
    assert_eq!(dev3[0], (101, FragmentOutcome::Deleted));
    assert_eq!(dev3[1], (102, FragmentOutcome::Deleted));
    assert_eq!(dev3[2], (103, FragmentOutcome::AlreadyAbsent));
    assert!(
        matches!(&dev3[3], (104, FragmentOutcome::Failed(m)) if m.contains("dev3/104")),
        "{:?}",
        dev3[3]
    );
    assert_eq!(
        fragment_outcomes(&results[1]),
        vec![(7, FragmentOutcome::Deleted)]
    );
    // An unmounted fragment folder is a failure, not "already deleted".
    assert!(matches!(
        &fragment_outcomes(&results[2])[0],
        (1, FragmentOutcome::Failed(m)) if m.contains("unmounted")
    ));
    for gone in [
        "dev3/101",
        "dev3/101.digest",
        "dev3/102",
        "dev4/7",
        "dev4/7.digest",
    ] {
        assert!(!s.exists(gone), "{gone} survived");
    }
    for kept in ["sentinel", "x", "1", "dev3/104"] {
        assert!(s.exists(kept), "{kept} was touched");
    }
}

#[tokio::test]
async fn a_service_busy_in_another_process_is_not_acted_on_twice() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(&config(&sleeper(dir.path(), "sleeper", "timeout = 0.3")));
    let pid_file = dir.path().join("sleeper.pid");
    let held = process::lock_service(&pid_file, Duration::from_secs(1))
        .await
        .unwrap();
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Start))
        .await;
    let (ok, _, message) = service_state(&r);
    assert!(!ok && message.contains("sleeper.pid.lock"), "{message}");
    assert!(!pid_file.exists(), "started while locked");
    // Status needs no lock.
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Status))
        .await;
    assert!(r.succeeded());
    drop(held);
    let r = exec
        .execute(&Operation::service("sleeper", ServiceAction::Start))
        .await;
    assert!(r.succeeded(), "{r:?}");
    assert!(
        exec.execute(&Operation::service("sleeper", ServiceAction::Stop))
            .await
            .succeeded()
    );
}

#[tokio::test]
async fn a_started_process_sees_only_its_declared_environment() {
    let dir = tempfile::tempdir().unwrap();
    // The pid file's folder does not exist yet (a /run emptied by a reboot).
    let text = format!(
        "[[services]]\nname = \"envy\"\nstart = [\"sleep\", \"300\"]\npid_file = \"{}/run/envy.pid\"\n\
         [services.env]\nDFS_HOME = \"/opt/dfs\"\n",
        dir.path().display()
    );
    let exec = Executor::new(&config(&text));
    // This test process's environment (HOME, PATH, cargo's CARGO_* …) must not leak into it.
    let r = exec
        .execute(&Operation::service("envy", ServiceAction::Start))
        .await;
    assert!(r.succeeded(), "{r:?}");
    let pid = pid_in(&dir.path().join("run/envy.pid"));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut vars: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        vec![
            "DFS_HOME=/opt/dfs".to_string(),
            format!("PATH={}", process::DEFAULT_PATH)
        ]
    );
    assert!(
        exec.execute(&Operation::service("envy", ServiceAction::Stop))
            .await
            .succeeded()
    );
}
