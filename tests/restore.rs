//! The controller as the fleet's system of record, end to end with real processes: a node whose
//! agent is down is still known, stoppable over SSH (the real sshd) and wakeable (its stored MAC,
//! captured on a loopback UDP socket) after the controller was SIGKILLed and started again; a
//! device id reported by two nodes belongs to the first, the second is refused and shown, and
//! only an audited operator call moves it.

use std::process::Output;
use std::time::Duration;

use nodewarden_tests::lab::{Lab, run_ok};
use nodewarden_tests::{alive, bin_path, service, wait_for};
use serde_json::Value;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SSH fallback's settings for the test sshd, with the lab agent's forced command
/// authorized; `None` when the service is missing (a skip, or a failure under CI).
fn ssh_section(lab_agent_toml: &std::path::Path, dir: &std::path::Path) -> Option<String> {
    let port = service("NW_TEST_SSHD_PORT")?;
    let host_key_pub = service("NW_TEST_SSHD_HOST_KEY_PUB")?;
    let client_key = service("NW_TEST_SSH_CLIENT_KEY")?;
    let authorized_keys = service("NW_TEST_SSH_AUTHORIZED_KEYS")?;
    let user = service("NW_TEST_SSH_USER")?;
    let host_key: String = std::fs::read_to_string(&host_key_pub)
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key}\n")).unwrap();
    let client_pub = std::fs::read_to_string(format!("{client_key}.pub")).unwrap();
    std::fs::write(
        &authorized_keys,
        format!(
            "command=\"{} ssh-dispatch --config {}\",restrict {}",
            bin_path("nodewarden-agent").display(),
            lab_agent_toml.display(),
            client_pub.trim()
        ),
    )
    .unwrap();
    Some(format!(
        "[ssh]\nuser = \"{user}\"\nport = {port}\nkey_file = \"{client_key}\"\n\
         known_hosts = \"{}\"\ncommand_timeout = 30\n",
        known_hosts.display()
    ))
}

fn node_json(lab: &Lab, name: &str) -> Option<Value> {
    lab.get_json("/api/v1/nodes")
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
}

/// The lines of an action's streamed answer.
fn post(lab: &Lab, path: &str, body: Value) -> (u16, String) {
    let mut response = lab
        .http_agent()
        .post(format!("{}{path}", lab.api()))
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .content_type("application/json")
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

fn events(lab: &Lab, node: &str) -> Vec<Value> {
    lab.get_json(&format!("/api/v1/events?node={node}&limit=1000"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn after_a_crash_a_node_whose_agent_is_down_is_still_known_stopped_and_woken() {
    // The magic packet goes to this loopback socket (a relay address in [nodes.n1]).
    let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    relay
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let nodes_section =
        format!("[actions]\nwake_wait = 60\n[nodes.n1]\nwake_to = \"{relay_addr}\"\n");
    let mut lab = Lab::new(&nodes_section);
    let Some(ssh) = ssh_section(&lab.path("agent.toml"), lab.dir.path()) else {
        return;
    };
    let base_config = std::fs::read_to_string(lab.path("controller.toml")).unwrap();
    std::fs::write(lab.path("controller.toml"), format!("{base_config}{ssh}")).unwrap();

    // Linked: the service started through the agent; inventory and report arrived.
    lab.wait_service(true, "stopped");
    let out = lab.cli(&["action", "wake", "--node", "n1"], None);
    assert!(stdout(&out).contains("n1    agent  ok"), "{}", stdout(&out));
    let pid = lab.pid();
    assert!(alive(pid));
    let before = wait_for("n1's inventory", Duration::from_secs(20), || {
        let n = node_json(&lab, "n1")?;
        (!n["inventory"].is_null() && n["last_report"]["services"][0]["status"] == "running")
            .then_some(n)
    });
    let macs: Vec<String> = before["inventory"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["mac"].as_str().map(str::to_string))
        .collect();
    // Let a flush write the inventory (the store flushes every second), then: the agent
    // stops, the controller crashes and comes back on the same store with SSH configured.
    wait_for(
        "the inventory in the store",
        Duration::from_secs(10),
        || {
            let db = rusqlite_free_read(&lab.path("data/nodewarden.db"))?;
            db.contains("sleeper").then_some(())
        },
    );
    lab.stop_agent();
    lab.kill_controller();
    lab.start_controller();

    // Known, offline, with its services, device, roles and interfaces.
    let n = node_json(&lab, "n1").expect("n1 listed after the restart");
    assert_eq!(n["online"], false);
    assert_eq!(n["services"], serde_json::json!(["sleeper"]));
    assert_eq!(n["devices"][0]["device_id"], 7);
    assert_eq!(n["roles"], before["roles"]);
    assert_eq!(n["inventory"], before["inventory"]);
    assert!(n["last_report"].is_null());
    let out = lab.cli(&["nodes"], None);
    assert!(stdout(&out).contains("sleeper"), "{}", stdout(&out));

    // Stopped over SSH: the process is gone.
    let out = lab.cli(&["action", "stop", "--node", "n1"], None);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("n1    ssh   ok"), "{}", stdout(&out));
    assert!(!alive(pid), "pid {pid} survived the stop");
    // Requested before it ran, ended after, joined by one id, with the planned and taken path.
    // (The store writes once a second: wait for the end to be written.)
    let (log, ended) = wait_for(
        "the stop's end in the audit log",
        Duration::from_secs(10),
        || {
            let log = events(&lab, "n1");
            let ended = log
                .iter()
                .find(|e| e["kind"] == "operation" && e["action"] == "stop")?
                .clone();
            Some((log, ended))
        },
    );
    assert_eq!(ended["result"], "ok");
    assert_eq!(ended["path"], "ssh");
    let requested = log
        .iter()
        .find(|e| e["kind"] == "requested" && e["operation_id"] == ended["operation_id"])
        .expect("the stop's request in the audit log");
    assert_eq!(requested["path"], "ssh");
    assert!(requested["id"].as_i64() < ended["id"].as_i64());

    // Without SSH: a stop fails with a clear error and nothing is run.
    lab.kill_controller();
    std::fs::write(lab.path("controller.toml"), &base_config).unwrap();
    lab.start_controller();
    let out = lab.cli(&["action", "stop", "--node", "n1"], None);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("n1 is unreachable: its agent is offline and no SSH access"),
        "{}",
        stdout(&out)
    );

    // Wake: the magic packet goes to the stored MAC; the "woken" agent then starts the service.
    if macs.is_empty() {
        eprintln!("SKIPPED (wake): this host has no interface with a MAC address");
        return;
    }
    let mut cli = {
        let mut cmd = std::process::Command::new(bin_path("nodewarden-controller"));
        cmd.args(["action", "wake", "--node", "n1", "--requested-by", "test"])
            .arg("--api")
            .arg(lab.api())
            .arg("--data-dir")
            .arg(lab.path("data"))
            .stdout(std::process::Stdio::piped());
        nodewarden_tests::ChildGuard::spawn(&mut cmd)
    };
    let mut packet = [0u8; 1024];
    let (len, _) = relay.recv_from(&mut packet).expect("a magic packet");
    assert_eq!(len, 102);
    let mac: Vec<String> = packet[6..12].iter().map(|b| format!("{b:02x}")).collect();
    assert!(macs.contains(&mac.join(":")), "{mac:?} not in {macs:?}");
    lab.start_agent();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut cli.0.stdout.take().unwrap(), &mut text).unwrap();
    assert!(cli.0.wait().unwrap().success(), "{text}");
    assert!(text.contains("n1    wol   ok"), "{text}");
    assert!(alive(lab.pid()));
}

/// The SQLite store's bytes as text (enough to see that a value reached the file), without a
/// SQLite client: the WAL holds recent writes until a checkpoint, so both files are read.
fn rusqlite_free_read(db: &std::path::Path) -> Option<String> {
    let mut bytes = std::fs::read(db).ok()?;
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn a_device_reported_by_a_second_node_is_refused_until_an_operator_moves_it() {
    let lab = Lab::new("");
    wait_for("n1's device 7", Duration::from_secs(20), || {
        let n = node_json(&lab, "n1")?;
        (n["devices"][0]["device_id"] == 7).then_some(())
    });
    // A second node whose configuration claims device 7 too.
    run_ok(
        std::process::Command::new(bin_path("nodewarden-controller"))
            .args(["ca", "issue", "n2", "--dir"])
            .arg(lab.path("ca"))
            .arg("--out-dir")
            .arg(lab.path("certs")),
    );
    let n1_config = std::fs::read_to_string(lab.path("agent.toml")).unwrap();
    let n2_config = n1_config
        .replace("certs/n1.", "certs/n2.")
        .replace("sleeper.pid", "sleeper2.pid");
    std::fs::write(lab.path("agent-n2.toml"), n2_config).unwrap();
    let mut n2 = nodewarden_tests::ChildGuard::spawn(
        std::process::Command::new(bin_path("nodewarden-agent"))
            .arg("--config")
            .arg(lab.path("agent-n2.toml"))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let n2_view = wait_for("n2's refused claim", Duration::from_secs(20), || {
        let n = node_json(&lab, "n2")?;
        (n["device_conflicts"][0]["device_id"] == 7).then_some(n)
    });
    assert_eq!(n2_view["device_conflicts"][0]["owner"], "n1");
    assert_eq!(n2_view["devices"], serde_json::json!([]));
    let devices = lab.get_json("/api/v1/devices");
    assert_eq!(devices[0]["owner"], "n1");
    assert_eq!(devices[0]["claimed_by"], serde_json::json!(["n2"]));
    // Audited once, counted, and shown by the CLI.
    let conflicts = wait_for(
        "the conflict in the audit log",
        Duration::from_secs(10),
        || {
            let e: Vec<Value> = events(&lab, "n2")
                .into_iter()
                .filter(|e| e["kind"] == "device_conflict")
                .collect();
            (!e.is_empty()).then_some(e)
        },
    );
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(
        (&conflicts[0]["action"], &conflicts[0]["actor"]),
        (&"7".into(), &"n1".into())
    );
    let metrics = nodewarden_tests::get_text(&format!("{}/metrics", lab.api())).unwrap();
    assert!(
        metrics.contains("nodewarden_controller_device_conflicts 1"),
        "{metrics}"
    );
    let out = lab.cli(&["device", "list"], None);
    assert!(
        stdout(&out).contains("CONFLICT: also reported by n2"),
        "{}",
        stdout(&out)
    );
    let out = lab.cli(&["nodes"], None);
    assert!(
        stdout(&out).contains("dev7: CONFLICT (belongs to n1)"),
        "{}",
        stdout(&out)
    );

    // No deletion targets an ambiguous device; the file stays.
    std::fs::write(lab.path("fragments/101"), b"x").unwrap();
    let (status, body) = post(
        &lab,
        "/api/v1/actions",
        serde_json::json!({"action": "delete-fragments", "pairs": [["101", "7"]], "requested_by": "t"}),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("ownership conflict"), "{body}");
    assert!(lab.path("fragments/101").exists());

    // The operator moves it: n2 owns it, n1 (still reporting it) is now the claimant.
    let out = lab.cli(&["device", "assign", "--device", "7", "--node", "n2"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let devices = lab.get_json("/api/v1/devices");
    assert_eq!(devices[0]["owner"], "n2");
    assert_eq!(devices[0]["claimed_by"], serde_json::json!(["n1"]));
    let assigned = wait_for(
        "the assignment in the audit log",
        Duration::from_secs(10),
        || {
            events(&lab, "n2").into_iter().find(|e| {
                e["kind"] == "operation"
                    && e["action"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("assign storage device 7 to n2"))
            })
        },
    );
    assert_eq!(assigned["result"], "ok");
    assert_eq!(assigned["actor"], "test");
    assert_eq!(assigned["path"], "controller");
    // Assigning it again is refused.
    let out = lab.cli(&["device", "assign", "--device", "7", "--node", "n2"], None);
    assert!(!out.status.success());
    let _ = n2.0.kill();
}

#[test]
fn actions_and_pings_need_the_api_token() {
    let lab = Lab::new("");
    lab.wait_service(true, "stopped");
    std::fs::write(lab.path("data/sd.token"), "sd-token-0123456789abcdef\n").unwrap();
    for token in [
        None,
        Some("sd-token-0123456789abcdef"),
        Some("wrong-0123456789abcdef"),
    ] {
        for (path, body) in [
            (
                "/api/v1/actions",
                serde_json::json!({"selector": {"node": "n1"}, "action": "wake", "requested_by": "x"}),
            ),
            ("/api/v1/nodes/n1/ping", Value::Null),
        ] {
            let mut call = lab.http_agent().post(format!("{}{path}", lab.api()));
            if let Some(t) = token {
                call = call.header("Authorization", &format!("Bearer {t}"));
            }
            let status = call
                .content_type("application/json")
                .send(body.to_string())
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(status, 401, "{path} with {token:?}");
        }
    }
    // The CLI with a wrong token says where it read it and how to point at the right one.
    std::fs::write(lab.path("wrong.token"), "wrong-0123456789abcdef\n").unwrap();
    let wrong = lab.path("wrong.token").display().to_string();
    let out = lab.cli(&["nodes", "--token-file", &wrong], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains(&format!("the token was read from {wrong} (--token-file)")),
        "{err}"
    );
    assert!(
        err.contains("NODEWARDEN_TOKEN_FILE") && err.contains("NODEWARDEN_DATA_DIR"),
        "{err}"
    );
    // The same through NODEWARDEN_TOKEN_FILE: the message names the variable.
    let cli_env = |args: &[&str], vars: &[(&str, &std::path::Path)]| {
        let mut cmd = std::process::Command::new(bin_path("nodewarden-controller"));
        cmd.args(args)
            .args(["--api", &lab.api()])
            .env_remove("NODEWARDEN_TOKEN_FILE")
            .env_remove("NODEWARDEN_DATA_DIR")
            .env_remove("NODEWARDEN_API_CA");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = cli_env(
        &["nodes"],
        &[("NODEWARDEN_TOKEN_FILE", &lab.path("wrong.token"))],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the token was read from {wrong} (NODEWARDEN_TOKEN_FILE)"
        )),
        "{err}"
    );
    // A data directory without a token: the 401 names the path it looked at and its source.
    let empty = lab.path("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    let out = cli_env(&["nodes"], &[("NODEWARDEN_DATA_DIR", &empty)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains(&format!(
            "nowhere: {}/api.token (the default under NODEWARDEN_DATA_DIR={}) does not exist",
            empty.display(),
            empty.display()
        )),
        "{err}"
    );
    // The right token through NODEWARDEN_TOKEN_FILE, no flag: the fleet is listed.
    let out = cli_env(
        &["nodes", "--json"],
        &[
            ("NODEWARDEN_TOKEN_FILE", &lab.path("data/api.token")),
            ("NODEWARDEN_DATA_DIR", &empty),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed.as_array().unwrap().iter().any(|n| n["name"] == "n1"),
        "{listed}"
    );
    // NODEWARDEN_DATA_DIR instead of --data-dir; without $USER and $LOGNAME the audit log names
    // this account as the system's user database does (`id -un`), not a placeholder.
    let out = std::process::Command::new(bin_path("nodewarden-controller"))
        .args(["action", "status", "--node", "n1", "--api", &lab.api()])
        .env("NODEWARDEN_DATA_DIR", lab.path("data"))
        .env_remove("NODEWARDEN_TOKEN_FILE")
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = if id.status.success() {
        String::from_utf8(id.stdout).unwrap().trim().to_string()
    } else {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        format!("uid:{uid}")
    };
    let status = wait_for(
        "the status in the audit log",
        Duration::from_secs(10),
        || {
            events(&lab, "n1")
                .into_iter()
                .find(|e| e["kind"] == "operation" && e["action"] == "status")
        },
    );
    assert_eq!(status["actor"], me.as_str());
    assert_ne!(me, "cli");
    // Nothing ran, nothing was recorded.
    assert!(lab.node().unwrap()["last_report"]["services"][0]["status"] == "stopped");
    assert!(
        events(&lab, "n1")
            .iter()
            .all(|e| e["action"] != "wake" && e["kind"] != "device_conflict")
    );
}

/// A controller asked to stop while an action runs refuses new ones, lets the running one end
/// and record its outcome, then stops: the audit log has the end, not an unknown.
#[test]
fn shutdown_lets_a_running_action_end_and_record_it() {
    let mut lab = Lab::new("");
    lab.stop_agent();
    let mut config = std::fs::read_to_string(lab.path("agent.toml")).unwrap();
    // A service whose stop takes 3 s.
    config.push_str(&format!(
        "\n[[services]]\nname = \"slow\"\nstart = [\"sleep\", \"302\"]\n\
         stop = [\"sleep\", \"3\"]\npid_file = \"{}\"\n",
        lab.path("slow.pid").display()
    ));
    std::fs::write(lab.path("agent.toml"), config).unwrap();
    lab.start_agent();
    lab.agent_log().wait("connected to the controller");
    wait_for("the slow service reported", Duration::from_secs(20), || {
        let n = node_json(&lab, "n1")?;
        n["services"]
            .as_array()?
            .iter()
            .any(|s| s == "slow")
            .then_some(())
    });
    let mut cli = {
        let mut cmd = std::process::Command::new(bin_path("nodewarden-controller"));
        cmd.args(["action", "stop", "--node", "n1", "--service", "slow"])
            .args(["--requested-by", "test", "--api", &lab.api(), "--data-dir"])
            .arg(lab.path("data"))
            .stdout(std::process::Stdio::piped());
        nodewarden_tests::ChildGuard::spawn(&mut cmd)
    };
    // The stop is under way (the agent runs its stop command) when the controller is told to
    // stop.
    wait_for(
        "the agent's stop command running",
        Duration::from_secs(20),
        || {
            std::fs::read_dir("/proc").ok()?.find_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                (nodewarden_tests::cmdline(pid) == ["sleep", "3"]).then_some(())
            })
        },
    );
    let log = lab.controller_log().clone();
    let (mut controller, _) = lab.controller.take().expect("controller running");
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(controller.pid() as i32, libc::SIGTERM) };
    log.wait("waiting up to");
    let exit = controller.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut cli.0.stdout.take().unwrap(), &mut text).unwrap();
    assert!(text.contains("[1/1] n1: ok via agent"), "{text}");
    // Started again: the stop's end is in the log, and nothing is unknown.
    lab.start_controller();
    let log = events(&lab, "n1");
    let ends: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "operation" && e["action"] == "stop slow")
        .collect();
    assert_eq!(ends.len(), 1, "{log:?}");
    assert_eq!(ends[0]["result"], "ok");
    assert!(log.iter().all(|e| e["result"] != "unknown"), "{log:?}");
}
