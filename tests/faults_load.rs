//! Issue 14's fault suite, under load (case 3): the controller SIGKILLed while an agent runs a
//! slow service stop, then started again on the same SQLite store: the agent is back online,
//! every operation has exactly one end, and the stop that was in flight ends as `unknown`.

use std::time::Duration;

use nodewarden_tests::lab::Lab;
use nodewarden_tests::{ChildGuard, bin_path, wait_for};
use serde_json::Value;

fn events(lab: &Lab, node: &str) -> Vec<Value> {
    lab.get_json(&format!("/api/v1/events?node={node}&limit=1000"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn controller_sigkilled_with_a_stop_in_flight_ends_it_unknown_once() {
    let mut lab = Lab::new("");
    lab.stop_agent();
    let mut config = std::fs::read_to_string(lab.path("agent.toml")).unwrap();
    // A service whose stop takes 8 s: still running when the controller dies.
    config.push_str(&format!(
        "\n[[services]]\nname = \"slow\"\nstart = [\"sleep\", \"303\"]\n\
         stop = [\"sleep\", \"8\"]\npid_file = \"{}\"\n",
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
