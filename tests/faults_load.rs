//! Issue 14's fault suite, cases with work in flight: the controller SIGKILLed while an agent
//! runs a slow service stop, then started again on the same SQLite store (case 3): the agent is
//! back online, every operation has exactly one end, and the stop that was in flight ends as
//! `unknown`; the agent SIGKILLed while its slow stop command runs (case 6, the service-stop half):
//! the operation ends failed or unknown with a reason, within a bound, and nothing hangs.

use std::time::Duration;

use nodewarden_tests::lab::Lab;
use nodewarden_tests::{ChildGuard, bin_path, wait_for};
use serde_json::Value;

/// n1 with a service "slow" whose stop command is `sleep SECS`, reported to the controller.
fn lab_with_slow_stop(secs: &str) -> Lab {
    let mut lab = Lab::new("");
    lab.stop_agent();
    let mut config = std::fs::read_to_string(lab.path("agent.toml")).unwrap();
    config.push_str(&format!(
        "\n[[services]]\nname = \"slow\"\nstart = [\"sleep\", \"303\"]\n\
         stop = [\"sleep\", \"{secs}\"]\npid_file = \"{}\"\n",
        lab.path("slow.pid").display()
    ));
    std::fs::write(lab.path("agent.toml"), config).unwrap();
    lab.start_agent();
    lab.agent_log().wait("connected to the controller");
    wait_for("the slow service reported", Duration::from_secs(20), || {
        let n = lab.node()?;
        n["services"]
            .as_array()?
            .iter()
            .any(|s| s == "slow")
            .then_some(())
    });
    lab
}

/// The pid of a running `sleep SECS` (the agent's stop command), once it runs.
fn stop_command_pid(secs: &str) -> u32 {
    wait_for(
        "the agent's stop command running",
        Duration::from_secs(20),
        || {
            std::fs::read_dir("/proc").ok()?.find_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                (nodewarden_tests::cmdline(pid) == ["sleep", secs]).then_some(pid)
            })
        },
    )
}

fn events(lab: &Lab, node: &str) -> Vec<Value> {
    lab.get_json(&format!("/api/v1/events?node={node}&limit=1000"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn controller_sigkilled_with_a_stop_in_flight_ends_it_unknown_once() {
    // A service whose stop takes 8 s: still running when the controller dies.
    let mut lab = lab_with_slow_stop("8");
    let _cli = {
        let mut cmd = std::process::Command::new(bin_path("nodewarden-controller"));
        cmd.args(["action", "stop", "--node", "n1", "--service", "slow"])
            .args(["--requested-by", "test", "--api", &lab.api(), "--data-dir"])
            .arg(lab.path("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        ChildGuard::spawn(&mut cmd)
    };
    wait_for(
        "the agent's stop command running",
        Duration::from_secs(20),
        || {
            std::fs::read_dir("/proc").ok()?.find_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                (nodewarden_tests::cmdline(pid) == ["sleep", "8"]).then_some(())
            })
        },
    );
    // The request is in the store (its writer flushes once a second) before the crash.
    wait_for("the stop's request stored", Duration::from_secs(10), || {
        events(&lab, "n1")
            .iter()
            .any(|e| e["kind"] == "requested")
            .then_some(())
    });
    lab.kill_controller();
    lab.start_controller();
    wait_for("n1 back online", Duration::from_secs(30), || {
        (lab.node()?["online"] == true).then_some(())
    });
    let log = wait_for("the stop's end recorded", Duration::from_secs(15), || {
        let log = events(&lab, "n1");
        log.iter()
            .any(|e| e["kind"] == "operation" && e["action"] == "stop slow")
            .then_some(log)
    });
    let requested: Vec<&Value> = log.iter().filter(|e| e["kind"] == "requested").collect();
    assert!(!requested.is_empty(), "{log:?}");
    for r in &requested {
        let ends: Vec<&Value> = log
            .iter()
            .filter(|e| e["kind"] == "operation" && e["operation_id"] == r["operation_id"])
            .collect();
        assert_eq!(ends.len(), 1, "one end for {r:?}: {log:?}");
    }
    let stop_ends: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "operation" && e["action"] == "stop slow")
        .collect();
    assert_eq!(stop_ends.len(), 1, "{log:?}");
    assert_eq!(stop_ends[0]["result"], "unknown", "{log:?}");
}

#[test]
fn agent_sigkilled_during_a_slow_stop_ends_the_operation_with_a_reason() {
    let mut lab = lab_with_slow_stop("9");
    let mut cli = {
        let mut cmd = std::process::Command::new(bin_path("nodewarden-controller"));
        cmd.args(["action", "stop", "--node", "n1", "--service", "slow"])
            .args(["--requested-by", "test", "--api", &lab.api(), "--data-dir"])
            .arg(lab.path("data"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        ChildGuard::spawn(&mut cmd)
    };
    let stop_pid = stop_command_pid("9");
    let started = std::time::Instant::now();
    let (mut agent, _) = lab.agent.take().expect("agent running");
    // SAFETY: plain kill(2) of our own child, and of the stop command it left behind.
    unsafe {
        libc::kill(agent.pid() as i32, libc::SIGKILL);
        libc::kill(stop_pid as i32, libc::SIGKILL);
    }
    let _ = agent.0.wait();
    // The operator's call returns (it does not hang on the dead agent).
    let status = wait_for("the action's answer", Duration::from_secs(30), || {
        cli.0.try_wait().ok()?
    });
    let mut out = String::new();
    std::io::Read::read_to_string(&mut cli.0.stdout.take().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut cli.0.stderr.take().unwrap(), &mut err).unwrap();
    eprintln!(
        "answer after {:?}: {status:?}\n{out}\n{err}",
        started.elapsed()
    );
    assert!(!status.success(), "{out}{err}");
    assert!(out.contains("n1: FAILED"), "{out}{err}");
    let log = wait_for("the stop's end recorded", Duration::from_secs(10), || {
        let log = events(&lab, "n1");
        log.iter()
            .any(|e| e["kind"] == "operation" && e["action"] == "stop slow")
            .then_some(log)
    });
    let ends: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "operation" && e["action"] == "stop slow")
        .collect();
    assert_eq!(ends.len(), 1, "{log:?}");
    assert!(
        ends[0]["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "a reason: {log:?}"
    );
    assert!(
        ends[0]["result"] == "failed" || ends[0]["result"] == "unknown",
        "{log:?}"
    );
}
