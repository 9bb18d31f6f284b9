//! The fleet simulator, CI-sized (issue 12's test-command run): 300 simulated agents (real QUIC
//! and mutual TLS, the agent's own link client) against a real controller for 20 s of steady
//! state, then a fleet-wide `stop` through the API, a controller SIGKILL and restart, and 10
//! agents cut off. Asserts the end state from the simulator's figures, which it reads from the
//! controller's own database: every agent connected, every agent reached by the fan-out and
//! answering ok, every agent back after the restart, cut agents offline within 3 s, no false
//! offline, and every report sent reflected in the database.

use std::process::{Command, Stdio};

use nodewarden_tests::bin_path;
use serde_json::Value;

#[test]
fn three_hundred_agents_fan_out_restart_and_cut() {
    let work = tempfile::tempdir().expect("temp dir");
    let output = Command::new(bin_path("nodewarden-fleet-sim"))
        .args([
            "--agents",
            "300",
            "--duration",
            "20",
            "--report-interval",
            "5",
        ])
        .args([
            "--spawn-controller",
            "--fanout",
            "stop",
            "--restart-controller",
        ])
        .args(["--cut", "10", "--json", "--work-dir"])
        .arg(work.path())
        .arg("--controller-bin")
        .arg(bin_path("nodewarden-controller"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("running the simulator");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the simulator failed: {}\n{stderr}\n{stdout}",
        output.status
    );
    let last = stdout.lines().last().expect("a JSON line");
    let f: Value = serde_json::from_str(last).expect("the figures as JSON");
    eprintln!("{stderr}\n{f:#}");
    assert_eq!(f["agents"], 300);
    assert_eq!(f["connected"], 300, "every agent connected");
    assert_eq!(f["fanout_nodes"], 300, "every agent reached by the fan-out");
    assert_eq!(f["fanout_failed"], 0, "every stop answered ok");
    assert!(
        f["reconnect_all_s"].as_f64().is_some_and(|s| s < 60.0),
        "every agent back after the restart within 60 s"
    );
    assert_eq!(f["offline_detected"], 10, "every cut agent went offline");
    assert!(
        f["offline_detect_max_ms"]
            .as_f64()
            .is_some_and(|ms| ms <= 3000.0),
        "cut agents offline within 3 s"
    );
    assert_eq!(f["false_offline"], 0, "no agent offline when none was due");
    let sent = f["reports_sent"].as_u64().expect("reports_sent");
    assert!(sent >= 300 * 4, "reports flowed: {sent}");
    assert_eq!(
        f["reports_persisted"].as_u64(),
        Some(sent),
        "the database reflects every report sent"
    );
}
