//! Remote operations end to end with real processes on loopback: a controller, an agent with a
//! declared service and storage device, and the CLI (`nodewarden-controller action …`,
//! `delete-fragments …`) calling the controller's API. Over the agent link; and with the agent
//! stopped, over SSH to the test sshd (scripts/services.sh `start_sshd`).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nodewarden_tests::lab::{Lab, SERVICE_ARGV};
use nodewarden_tests::{ChildGuard, alive, bin_path, cmdline, service, wait_for};
use serde_json::Value;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// POSTs a raw request to the actions API; the status and the answer's lines.
fn post_actions(lab: &Lab, body: Value) -> (u16, Vec<Value>) {
    post_actions_as(lab, &lab.token(), body)
}

/// [`post_actions`] with a given API token.
fn post_actions_as(lab: &Lab, token: &str, body: Value) -> (u16, Vec<Value>) {
    let mut response = lab
        .http_agent()
        .post(format!("{}/api/v1/actions", lab.api()))
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/json")
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (status, lines)
}

#[test]
fn actions_go_over_the_agent_link() {
    let lab = Lab::new("");
    let node = lab.wait_service(true, "stopped");
    // The inventory came with the connection (loopback is left out of it).
    assert!(
        node["inventory"]["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{node}"
    );
    assert!(
        node["inventory"]["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["name"] != "lo")),
        "{node}"
    );

    let out = lab.cli(&["action", "wake", "--node", "n1"], None);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("[1/1] n1: ok via agent"), "{text}");
    assert!(text.contains("n1    agent  ok"), "{text}");
    let pid = lab.pid();
    assert!(alive(pid), "pid {pid} is not running");
    assert_eq!(cmdline(pid), SERVICE_ARGV);
    // The state reports now observe it running.
    lab.wait_service(true, "running");

    // Waking again starts nothing new (idempotent).
    let out = lab.cli(&["action", "wake", "--node", "n1"], None);
    assert!(out.status.success());
    assert_eq!(lab.pid(), pid);

    let out = lab.cli(&["action", "stop", "--all"], None);
    assert!(out.status.success());
    assert!(stdout(&out).contains("n1    agent  ok"), "{}", stdout(&out));
    assert!(!alive(pid), "pid {pid} survived stop");
    lab.wait_service(true, "stopped");

    // An undeclared service, asked for directly: the agent refuses it.
    let (status, lines) = post_actions(
        &lab,
        serde_json::json!({"selector": {"node": "n1"}, "action": "wake", "service": "ghost",
                           "requested_by": "test"}),
    );
    assert_eq!(status, 200);
    let result = lines
        .iter()
        .find(|l| l["event"] == "result")
        .map(|l| &l["result"])
        .expect("a result line");
    assert_eq!(result["path"], "agent", "{result}");
    let reason = result["results"][0]["outcome"]["refused"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("not declared"), "{result}");
    assert!(!lab.path("sleeper.pid").exists());
    assert_eq!(lines.last().unwrap()["ok"], false);

    // Fragment deletion through the agent deletes real files, and only those.
    for f in [
        "fragments/101",
        "fragments/101.digest",
        "fragments/102",
        "fragments/1030",
        "sentinel",
    ] {
        std::fs::write(lab.path(f), f).unwrap();
    }
    let out = lab.cli(
        &["delete-fragments", "--pairs", "-"],
        Some("101 7\n102 7\n103 7\n"),
    );
    assert!(out.status.success());
    assert!(stdout(&out).contains("n1    agent  ok"), "{}", stdout(&out));
    for gone in ["fragments/101", "fragments/101.digest", "fragments/102"] {
        assert!(!lab.path(gone).exists(), "{gone} survived");
    }
    for kept in ["fragments/1030", "sentinel"] {
        assert!(lab.path(kept).exists(), "{kept} was touched");
    }

    // Hostile ids: refused by the controller before anything reaches the node.
    let operations_before = lab.agent_log().count("operation");
    std::fs::write(lab.path("fragments/5"), "5").unwrap();
    for pairs in ["5 7\n../sentinel 7\n", "-rf 7\n", "1;rm 7\n", "5 7/..\n"] {
        let out = lab.cli(&["delete-fragments", "--pairs", "-"], Some(pairs));
        assert!(!out.status.success(), "{pairs:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("400") && err.contains("refused"),
            "{pairs:?}: {err}"
        );
    }
    assert!(lab.path("fragments/5").exists() && lab.path("sentinel").exists());
    // Nothing was sent: a refused or executed operation would be logged by the agent. A status
    // round trip through the same path proves the log is current.
    let out = lab.cli(&["action", "status", "--node", "n1"], None);
    assert!(out.status.success());
    lab.agent_log().wait("status sleeper");
    assert_eq!(
        lab.agent_log().count("operation"),
        operations_before + 1,
        "only the status operation reached the agent"
    );

    // The CLI's views of the fleet and of the audit log.
    let out = lab.cli(&["nodes"], None);
    assert!(out.status.success());
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("n1 "))
        .unwrap_or_else(|| panic!("no row for n1: {text}"));
    for part in [" online ", " storage ", " sleeper:stopped ", " dev7: "] {
        assert!(row.contains(part), "{part:?} not in {row:?}");
    }
    let out = lab.cli(&["nodes", "--json"], None);
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes[0]["name"], "n1");
    // The audit log is written every flush interval (a request at once, before it runs): wait
    // until the end of the status just asked is in.
    let text = wait_for(
        "the status operation in the CLI's audit log",
        Duration::from_secs(10),
        || {
            let out = lab.cli(&["events", "--node", "n1", "--limit", "4"], None);
            assert!(out.status.success());
            let text = stdout(&out);
            let newest = text.lines().nth(1)?;
            (newest.contains(" status ") && newest.contains(" operation ")).then_some(text)
        },
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four entries: {text}");
    // Newest first: the status's end and its request (written before it ran); the refused
    // batches before it were never recorded (nothing was sent), the fragment deletion's end
    // before them was.
    assert!(
        lines[2].contains(" requested ") && lines[2].contains(" status "),
        "{text}"
    );
    assert!(
        lines[3].contains(" delete fragments (1 device(s)) ") && lines[3].contains(" operation "),
        "{text}"
    );
    assert!(
        lines[1].contains(" operation ")
            && lines[1].contains(" test ")
            && lines[1].contains(" status "),
        "{text}"
    );
    assert!(
        lines[1].contains(" agent ") && lines[1].contains(" ok ("),
        "{text}"
    );
    let out = lab.cli(&["events", "--node", "../n1"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node"));
}

#[test]
fn with_the_agent_stopped_actions_go_over_ssh() {
    let Some(port) = service("NW_TEST_SSHD_PORT") else {
        return;
    };
    let (Some(host_key_pub), Some(client_key), Some(authorized_keys), Some(user)) = (
        service("NW_TEST_SSHD_HOST_KEY_PUB"),
        service("NW_TEST_SSH_CLIENT_KEY"),
        service("NW_TEST_SSH_AUTHORIZED_KEYS"),
        service("NW_TEST_SSH_USER"),
    ) else {
        return;
    };
    let host_key: String = std::fs::read_to_string(&host_key_pub)
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let known_hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        known_hosts.path(),
        format!("[127.0.0.1]:{port} {host_key}\n"),
    )
    .unwrap();
    let mut lab = Lab::new(&format!(
        "[ssh]\nuser = \"{user}\"\nport = {port}\nkey_file = \"{client_key}\"\n\
         known_hosts = \"{}\"\ncommand_timeout = 30\n",
        known_hosts.path().display()
    ));
    // The controller's key runs only the node's forced command, with this node's config.
    let client_pub = std::fs::read_to_string(format!("{client_key}.pub")).unwrap();
    std::fs::write(
        &authorized_keys,
        format!(
            "command=\"{} ssh-dispatch --config {}\",restrict {}",
            bin_path("nodewarden-agent").display(),
            lab.path("agent.toml").display(),
            client_pub.trim()
        ),
    )
    .unwrap();

    // Seen once (its services and address are remembered), then stopped.
    lab.wait_service(true, "stopped");
    lab.stop_agent();
    wait_for("n1 offline", Duration::from_secs(10), || {
        (lab.node()?["online"] == false).then_some(())
    });

    let out = lab.cli(&["action", "wake", "--node", "n1"], None);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("[1/1] n1: ok via ssh"), "{text}");
    assert!(text.contains("n1    ssh   ok"), "{text}");
    let pid = lab.pid();
    assert!(alive(pid), "pid {pid} is not running");
    assert_eq!(cmdline(pid), SERVICE_ARGV);

    let out = lab.cli(&["action", "stop", "--node", "n1"], None);
    assert!(out.status.success());
    assert!(stdout(&out).contains("n1    ssh   ok"), "{}", stdout(&out));
    assert!(!alive(pid), "pid {pid} survived stop");
    // Both operations (one start, one stop) timed in the controller's metrics under ssh.
    assert_eq!(lab.commands_counted("ops/1", "ssh"), 2.0);

    // The agent back: the link is preferred again.
    lab.start_agent();
    lab.wait_service(true, "stopped");
    let out = lab.cli(&["action", "status", "--node", "n1"], None);
    assert!(stdout(&out).contains("n1    agent  ok"), "{}", stdout(&out));

    // Every action is in the audit log with who asked and the path taken.
    let (mut controller, _) = lab.controller.take().expect("controller running");
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(controller.pid() as i32, libc::SIGTERM) };
    wait_for("the controller to exit", Duration::from_secs(20), || {
        controller.0.try_wait().ok().flatten()
    });
    let operations = audit_log(&lab.path("data"), "n1");
    let seen: Vec<(String, String, String)> = operations
        .iter()
        .map(|o| {
            (
                o.actor.clone(),
                o.action.clone(),
                o.path.as_str().to_string(),
            )
        })
        .collect();
    for (action, path) in [("wake", "ssh"), ("stop", "ssh"), ("status", "agent")] {
        assert!(
            seen.iter()
                .any(|(who, a, p)| who == "test" && a.starts_with(action) && p == path),
            "no {action} via {path} by test in the audit log: {seen:?}"
        );
    }
}

/// The remote operations recorded for `node` in a stopped controller's SQLite store.
fn audit_log(data_dir: &Path, node: &str) -> Vec<nodewarden_controller::store::Operation> {
    stored_events(data_dir, node)
        .into_iter()
        .filter_map(|kind| match kind {
            nodewarden_controller::store::EventKind::Operation(op) => Some(op),
            _ => None,
        })
        .collect()
}

/// Every event recorded for `node` in a stopped controller's SQLite store, oldest first.
fn stored_events(data_dir: &Path, node: &str) -> Vec<nodewarden_controller::store::EventKind> {
    use nodewarden_controller::store::{EventQuery, Store, StoreConfig};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(StoreConfig::new(data_dir))
            .await
            .expect("store opens");
        let events = store
            .events(&EventQuery {
                node_id: Some(node.into()),
                after_id: 0,
                limit: 1000,
            })
            .await
            .unwrap();
        store.close().await.unwrap();
        events.into_iter().map(|e| e.event.kind).collect()
    })
}

/// An operation's request is in the database before the operation runs: with the store
/// flushing only every ten minutes, a controller SIGKILLed right after an action has its
/// request on disk all the same (its end, still in the buffer, goes with the controller).
#[test]
fn an_action_s_request_is_in_the_database_before_it_runs() {
    use nodewarden_controller::store::{EventKind, OperationPath, OperationResult};
    let mut lab = Lab::new("[database]\nflush_interval_ms = 600000\n");
    lab.wait_service(true, "stopped");
    let out = lab.cli(
        &["action", "restart", "--node", "n1", "--service", "sleeper"],
        None,
    );
    assert!(out.status.success(), "{}", stdout(&out));
    // It ran: the service is up.
    lab.wait_service(true, "running");
    lab.kill_controller();
    lab.stop_agent();
    // Started again, the controller closes the request it finds without an end.
    lab.start_controller();
    lab.stop_controller();
    let events = stored_events(&lab.path("data"), "n1");
    let (mut requested, mut ended) = (Vec::new(), Vec::new());
    for kind in &events {
        match kind {
            EventKind::Requested(r) => requested.push(r),
            EventKind::Operation(op) => ended.push(op),
            _ => {}
        }
    }
    assert_eq!(requested.len(), 1, "{events:?}");
    assert_eq!(requested[0].actor, "test");
    assert!(
        requested[0].action.starts_with("restart"),
        "{:?}",
        requested[0]
    );
    assert_eq!(requested[0].path, OperationPath::Agent);
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(
        ended[0].operation_id.as_deref(),
        Some(requested[0].operation_id.as_str())
    );
    assert!(
        matches!(&ended[0].result, OperationResult::Unknown { reason } if reason.contains("stopped")),
        "{:?}",
        ended[0]
    );
}

#[test]
fn a_node_answering_neither_path_is_woken_and_its_services_started_over_the_link() {
    // The magic packet goes to this loopback socket (a relay address in [nodes.n1]) instead of
    // the subnet's broadcast address; no SSH is configured, so the node answers neither path.
    let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    relay
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut lab = Lab::new(&format!(
        "[actions]\nwake_wait = 60\n[nodes.n1]\nwake_to = \"{}\"\n",
        relay.local_addr().unwrap()
    ));
    let node = lab.wait_service(true, "stopped");
    let macs: Vec<String> = node["inventory"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["mac"].as_str().map(str::to_string))
        .collect();
    if macs.is_empty() {
        eprintln!("SKIPPED: this host has no interface with a MAC address to wake");
        return;
    }
    lab.stop_agent();
    wait_for("n1 offline", Duration::from_secs(10), || {
        (lab.node()?["online"] == false).then_some(())
    });

    let mut cli = {
        let mut cmd = Command::new(bin_path("nodewarden-controller"));
        cmd.args(["action", "wake", "--node", "n1", "--requested-by", "test"])
            .arg("--api")
            .arg(lab.api())
            .arg("--data-dir")
            .arg(lab.path("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        ChildGuard::spawn(&mut cmd)
    };
    let mut packet = [0u8; 1024];
    let (n, _) = relay.recv_from(&mut packet).expect("a magic packet");
    assert_eq!(n, 102);
    assert_eq!(&packet[..6], &[0xFF; 6]);
    let mac: Vec<String> = packet[6..12].iter().map(|b| format!("{b:02x}")).collect();
    assert!(macs.contains(&mac.join(":")), "{mac:?} not in {macs:?}");

    // The "woken" node's agent connects; the controller, waiting for that, starts the service.
    lab.start_agent();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut cli.0.stdout.take().unwrap(), &mut text).unwrap();
    let status = cli.0.wait().unwrap();
    eprintln!("{text}");
    assert!(status.success());
    assert!(text.contains("[1/1] n1: ok via wake_on_lan"), "{text}");
    assert!(text.contains("n1    wol   ok"), "{text}");
    let pid = lab.pid();
    assert!(alive(pid), "pid {pid} is not running");
    lab.wait_service(true, "running");
    // The wake (packet to connection) timed under wol; the start after it under agent.
    assert_eq!(lab.commands_counted("wake", "wol"), 1.0);
    assert!(lab.commands_counted("ops/1", "agent") >= 1.0);
}

/// GETs an API path with a token; the JSON answer.
fn get_json(lab: &Lab, token: &str, path: &str) -> Value {
    match lab.get_as(token, path) {
        Ok((200, answer)) => answer,
        other => panic!("GET {path} with {token:?}: {other:?}"),
    }
}

/// A named API token (`NAME TOKEN` in the token file) acts as its operator: the audit log
/// records the name whatever `requested_by` claims, `requested_by` may be left out, and
/// `whoami` tells a client the name. An unnamed token still has to say who asks.
#[test]
fn a_named_token_is_recorded_as_its_operator() {
    let lab = Lab::new("");
    lab.wait_service(true, "stopped");
    let named = "a11ce-0123456789abcdef0123456789";
    let unnamed = lab.token();
    let file = lab.path("data/api.token");
    let mut tokens = std::fs::read_to_string(&file).unwrap();
    tokens.push_str(&format!("alice {named}\n"));
    std::fs::write(&file, tokens).unwrap();

    assert_eq!(get_json(&lab, named, "/api/v1/whoami")["operator"], "alice");
    assert_eq!(
        get_json(&lab, &unnamed, "/api/v1/whoami")["operator"],
        Value::Null
    );

    let status = |requested_by: Option<&str>| {
        let mut body = serde_json::json!({"selector": {"node": "n1"}, "action": "status"});
        if let Some(who) = requested_by {
            body["requested_by"] = who.into();
        }
        body
    };
    let (code, lines) = post_actions_as(&lab, named, status(Some("mallory")));
    assert_eq!(code, 200, "{lines:?}");
    assert_eq!(lines.last().unwrap()["ok"], true, "{lines:?}");
    let (code, lines) = post_actions_as(&lab, named, status(None));
    assert_eq!(code, 200, "{lines:?}");
    // Unnamed: the claim is required, and is what gets recorded.
    let (code, _) = post_actions_as(&lab, &unnamed, status(None));
    assert_eq!(code, 400);
    let (code, _) = post_actions_as(&lab, &unnamed, status(Some("bob")));
    assert_eq!(code, 200);

    let actors = wait_for(
        "three operations in the audit log",
        Duration::from_secs(10),
        || {
            let events = get_json(&lab, named, "/api/v1/events?node=n1&limit=50");
            let actors: Vec<String> = events
                .as_array()?
                .iter()
                .filter(|e| e["kind"] == "operation" && e["action"] == "status")
                .filter_map(|e| e["actor"].as_str().map(str::to_string))
                .collect();
            (actors.len() >= 3).then_some(actors)
        },
    );
    // Newest first.
    assert_eq!(actors, ["bob", "alice", "alice"], "{actors:?}");
}
