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

/// The controller's own families.
fn controller_metrics(lab: &Lab) -> std::collections::BTreeMap<String, nodewarden_tests::Family> {
    let text = nodewarden_tests::get_text(&format!("{}/metrics", lab.api()))
        .expect("the controller's /metrics");
    nodewarden_tests::parse_exposition(&text.replace("# EOF\n", ""))
}

fn metric(lab: &Lab, name: &str) -> f64 {
    controller_metrics(lab)
        .get(name)
        .and_then(|f| f.value(&[]))
        .unwrap_or(0.0)
}

/// An agent for node `name` (certificate issued from the lab's CA), reporting every 200 ms;
/// it declares nothing.
fn extra_agent(lab: &Lab, name: &str) -> ChildGuard {
    let config = lab.path(&format!("{name}.toml"));
    if !config.exists() {
        nodewarden_tests::lab::run_ok(
            std::process::Command::new(bin_path("nodewarden-controller"))
                .args(["ca", "issue", name, "--dir"])
                .arg(lab.path("ca"))
                .arg("--out-dir")
                .arg(lab.path("certs")),
        );
        let n1 = std::fs::read_to_string(lab.path("agent.toml")).unwrap();
        let controller_section = n1.split("\n\n").next().unwrap();
        std::fs::write(
            &config,
            controller_section.replace("certs/n1.", &format!("certs/{name}.")),
        )
        .unwrap();
    }
    ChildGuard::spawn(
        std::process::Command::new(bin_path("nodewarden-agent"))
            .arg("--config")
            .arg(&config)
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
}

fn online(lab: &Lab, name: &str) -> Option<bool> {
    let (_, nodes) = lab.get_as(&lab.token(), "/api/v1/nodes").ok()?;
    nodes.as_array()?.iter().find(|n| n["name"] == name)?["online"].as_bool()
}

/// What the operator's loop saw: actions answered ok, and anything else.
#[derive(Default)]
struct Operator {
    ok: usize,
    other: Vec<String>,
}

/// How long MariaDB stays down.
const DB_OUTAGE: Duration = Duration::from_secs(8);

#[test]
fn mariadb_killed_and_restarted_under_load_loses_and_duplicates_no_event() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let Some(mut db) = nodewarden_tests::mariadb::PrivateMariaDb::start() else {
        return;
    };
    let lab = Lab::new(&format!(
        "[database]\nurl = \"{}\"\nflush_interval_ms = 200\n",
        db.url()
    ));
    let _n2 = extra_agent(&lab, "n2");
    let mut n3 = Some(extra_agent(&lab, "n3"));
    for name in ["n1", "n2", "n3"] {
        wait_for(&format!("{name} online"), Duration::from_secs(20), || {
            online(&lab, name)?.then_some(())
        });
    }
    wait_for("a flush to MariaDB", Duration::from_secs(10), || {
        (metric(&lab, "nodewarden_store_flushes_total") >= 1.0
            && metric(&lab, "nodewarden_store_database_up") == 1.0)
            .then_some(())
    });

    // The operator: `status` on n1 through the API, one after another, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Operator::default()));
    let operator = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let (api, token) = (lab.api(), lab.token());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            while !stop.load(Ordering::Acquire) {
                let answer = agent
                    .post(format!("{api}/api/v1/actions"))
                    .header("Authorization", &format!("Bearer {token}"))
                    .content_type("application/json")
                    .send(
                        serde_json::json!({"selector": {"node": "n1"}, "action": "status",
                                           "requested_by": "operator"})
                        .to_string(),
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|mut r| {
                        let code = r.status().as_u16();
                        let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                        Ok((code, body))
                    });
                let mut seen = seen.lock().unwrap();
                match answer {
                    Ok((200, body)) if body.contains("\"ok\":true") => seen.ok += 1,
                    other => seen.other.push(format!("{other:?}")),
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let answered = |n: usize| {
        let seen = seen.clone();
        move || (seen.lock().unwrap().ok >= n).then_some(())
    };
    wait_for(
        "actions before the outage",
        Duration::from_secs(10),
        answered(5),
    );
    let errors_before = metric(&lab, "nodewarden_store_flush_errors_total");

    // MariaDB SIGKILLed (a crash: connections reset, an open transaction lost).
    let down = Instant::now();
    let outage_start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    db.kill();
    let ok_at_kill = seen.lock().unwrap().ok;
    // During the outage: n3 leaves and comes back, the operator keeps acting.
    drop(n3.take());
    wait_for("n3 offline", Duration::from_secs(10), || {
        (!online(&lab, "n3")?).then_some(())
    });
    n3 = Some(extra_agent(&lab, "n3"));
    wait_for("n3 online again", Duration::from_secs(20), || {
        online(&lab, "n3")?.then_some(())
    });
    wait_for(
        "actions during the outage",
        Duration::from_secs(20),
        answered(ok_at_kill + 10),
    );
    let during = wait_for(
        "the outage seen by the store",
        Duration::from_secs(20),
        || {
            let m = controller_metrics(&lab);
            let get = |n: &str| m.get(n).and_then(|f| f.value(&[])).unwrap_or(0.0);
            (get("nodewarden_store_database_up") == 0.0
                && get("nodewarden_store_flush_errors_total") > errors_before
                && get("nodewarden_store_pending_events") >= 10.0)
                .then(|| {
                    (
                        get("nodewarden_store_pending_events"),
                        get("nodewarden_store_flush_errors_total") - errors_before,
                    )
                })
        },
    );
    let outage_seen = down.elapsed();
    lab.controller_log().wait("flush failed, kept for retry");
    wait_for(
        "the outage's length",
        DB_OUTAGE + Duration::from_secs(10),
        || (down.elapsed() >= DB_OUTAGE).then_some(()),
    );
    let ok_at_restart = seen.lock().unwrap().ok;
    let at_restart = controller_metrics(&lab);
    let at_restart = |n: &str| at_restart.get(n).and_then(|f| f.value(&[])).unwrap_or(0.0);
    let (pending_at_restart, failed_flushes) = (
        at_restart("nodewarden_store_pending_events"),
        at_restart("nodewarden_store_flush_errors_total") - errors_before,
    );

    // Back: the buffer is written, once.
    db.resume();
    let restarted = Instant::now();
    // Caught up: the backlog written (the operator still adds an event or two per flush).
    wait_for("the store caught up", Duration::from_secs(30), || {
        (metric(&lab, "nodewarden_store_database_up") == 1.0
            && metric(&lab, "nodewarden_store_pending_events") < 5.0)
            .then_some(())
    });
    let caught_up = restarted.elapsed();
    assert_eq!(lab.controller_log().count("database reachable again"), 1);
    let ok_at_catch_up = seen.lock().unwrap().ok;
    wait_for(
        "actions after the restart",
        Duration::from_secs(10),
        answered(ok_at_catch_up + 5),
    );
    stop.store(true, Ordering::Release);
    operator.join().unwrap();
    wait_for("the last actions written", Duration::from_secs(10), || {
        (metric(&lab, "nodewarden_store_pending_events") == 0.0).then_some(())
    });
    let seen = seen.lock().unwrap();
    eprintln!(
        "outage {:?}: {} actions answered before, {} during, {} in all; {} events pending and \
         {} failed flushes at the restart ({} and {} when first seen, {outage_seen:?} after the \
         kill); caught up {caught_up:?} after the restart",
        DB_OUTAGE,
        ok_at_kill,
        ok_at_restart - ok_at_kill,
        seen.ok,
        pending_at_restart,
        failed_flushes,
        during.0,
        during.1
    );
    assert!(seen.other.is_empty(), "{:?}", seen.other);
    assert_eq!(metric(&lab, "nodewarden_store_events_dropped_total"), 0.0);

    // Counted in MariaDB itself: one request and one end per action, none twice.
    let rows = db.sql(
        "SELECT kind, COUNT(*), COUNT(DISTINCT uid), COUNT(DISTINCT operation_id) \
         FROM fleet.events WHERE node_id = 'n1' AND action = 'status' GROUP BY kind ORDER BY kind",
    );
    let expect = format!(
        "operation\t{0}\t{0}\t{0}\nrequested\t{0}\t{0}\t{0}\n",
        seen.ok
    );
    assert_eq!(rows, expect);
    let unmatched = db.sql(
        "SELECT COUNT(*) FROM fleet.events r WHERE r.kind = 'requested' AND NOT EXISTS \
         (SELECT 1 FROM fleet.events e WHERE e.kind = 'operation' \
          AND e.operation_id = r.operation_id)",
    );
    assert_eq!(unmatched.trim(), "0");
    let ok_ends = db.sql(
        "SELECT COUNT(*) FROM fleet.events WHERE kind = 'operation' AND action = 'status' \
         AND result = 'ok'",
    );
    assert_eq!(ok_ends.trim(), seen.ok.to_string());
    // n3's transitions since the kill: exactly one offline, then one online.
    let n3_rows = db.sql(&format!(
        "SELECT kind FROM fleet.events WHERE node_id = 'n3' AND kind IN ('online','offline') \
         AND at_ms >= {outage_start_ms} ORDER BY id"
    ));
    assert_eq!(n3_rows, "offline\nonline\n");
    // Node state: every node online, seen after the restart; device 7 n1's.
    let nodes = db.sql("SELECT node_id, online FROM fleet.nodes ORDER BY node_id");
    assert_eq!(nodes, "n1\t1\nn2\t1\nn3\t1\n");
    let devices = db.sql("SELECT device_id, node_id FROM fleet.storage_devices");
    assert_eq!(devices, "7\tn1\n");
    // The API reads the same rows back.
    let api_ends = lab
        .get_json("/api/v1/events?node=n1&limit=1000")
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "operation" && e["action"] == "status")
        .count();
    assert_eq!(api_ends, seen.ok.min(1000));
    drop(n3);
}
