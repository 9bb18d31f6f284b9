//! The SSH fallback against a real OpenSSH server (started by scripts/test.sh): the controller's
//! russh client, the node's forced command (`nodewarden-agent ssh-dispatch`) and the agent's
//! executor, with real processes and real files. Also the refusals: hostile ids, undeclared
//! services, unknown and changed host keys, a wrong client key. And a Wake-on-LAN packet.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nodewarden_controller::actions;
use nodewarden_controller::ssh::{self, SshError, SshTarget};
use nodewarden_controller::wol;
use nodewarden_shared::ops::{
    ActionPath, FragmentOutcome, Operation, OperationResult, Outcome, ServiceAction, ServiceState,
    deletions_by_device,
};
use nodewarden_tests::{alive, bin_path, cmdline, free_port, service};

/// The tests share one sshd and its authorized_keys file; one at a time.
static SSHD: Mutex<()> = Mutex::new(());

struct Sshd {
    port: u16,
    host_key_pub: PathBuf,
    client_key: PathBuf,
    authorized_keys: PathBuf,
    user: String,
}

fn sshd() -> Option<Sshd> {
    Some(Sshd {
        port: service("NW_TEST_SSHD_PORT")?.parse().expect("a port"),
        host_key_pub: service("NW_TEST_SSHD_HOST_KEY_PUB")?.into(),
        client_key: service("NW_TEST_SSH_CLIENT_KEY")?.into(),
        authorized_keys: service("NW_TEST_SSH_AUTHORIZED_KEYS")?.into(),
        user: service("NW_TEST_SSH_USER")?,
    })
}

/// A node: an agent config declaring one service and one storage device, files around it, the
/// controller key authorized with the forced command, and a known_hosts with the true host key.
struct Node {
    dir: tempfile::TempDir,
    sshd: Sshd,
}

const SLEEP_ARGS: [&str; 2] = ["sleep", "3007"];

impl Node {
    fn new(sshd: Sshd) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("fragments")).unwrap();
        let config = format!(
            "[[services]]\nname = \"sleeper\"\nstart = [\"{}\", \"{}\"]\nworkdir = \"{d}\"\n\
             pid_file = \"{d}/sleeper.pid\"\nstop_grace = 5\n\n\
             [[storage.devices]]\nid = 3\nfragment_dir = \"{d}/fragments\"\n",
            SLEEP_ARGS[0],
            SLEEP_ARGS[1],
            d = d.display()
        );
        std::fs::write(d.join("agent.toml"), config).unwrap();
        let client_pub = std::fs::read_to_string(sshd.client_key.with_extension("pub")).unwrap();
        std::fs::write(
            &sshd.authorized_keys,
            format!(
                "command=\"{} ssh-dispatch --config {}\",restrict {}",
                bin_path("nodewarden-agent").display(),
                d.join("agent.toml").display(),
                client_pub.trim()
            ),
        )
        .unwrap();
        let node = Node { dir, sshd };
        node.trust_the_true_host_key();
        node
    }

    fn trust_the_true_host_key(&self) {
        let host_pub = std::fs::read_to_string(&self.sshd.host_key_pub).unwrap();
        std::fs::write(
            self.path("known_hosts"),
            format!("[127.0.0.1]:{} {}\n", self.sshd.port, key_part(&host_pub)),
        )
        .unwrap();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn target(&self) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: self.sshd.port,
            user: self.sshd.user.clone(),
            key_file: self.sshd.client_key.clone(),
            known_hosts: self.path("known_hosts"),
            connect_timeout: Duration::from_secs(20),
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// `type base64` from a `.pub` line (dropping the comment).
fn key_part(pub_line: &str) -> String {
    pub_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

fn service_outcome(r: &OperationResult) -> (bool, ServiceState, String) {
    match &r.outcome {
        Outcome::Service {
            ok, state, message, ..
        } => (*ok, *state, message.clone()),
        other => panic!("not a service outcome: {other:?}"),
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SSHD.lock().unwrap_or_else(|e| e.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_declared_service_starts_reports_and_stops_over_ssh() {
    let Some(sshd) = sshd() else { return };
    let _one = lock();
    let node = Node::new(sshd);
    let target = node.target();
    let rt = rt();
    let run = |action| {
        rt.block_on(ssh::run_operation(
            &target,
            &Operation::service("sleeper", action),
        ))
        .unwrap_or_else(|e| panic!("{action}: {e}"))
    };

    assert_eq!(
        service_outcome(&run(ServiceAction::Status)).1,
        ServiceState::Stopped
    );

    let r = run(ServiceAction::Start);
    let (ok, state, message) = service_outcome(&r);
    assert!(ok && state == ServiceState::Running, "{message}");
    let pid: u32 = std::fs::read_to_string(node.path("sleeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // It outlived the SSH session that started it, and it is the declared command.
    assert!(alive(pid), "pid {pid} is not running");
    assert_eq!(cmdline(pid), SLEEP_ARGS);

    let (ok, state, message) = service_outcome(&run(ServiceAction::Status));
    assert!(ok && state == ServiceState::Running, "{message}");
    assert!(message.contains(&pid.to_string()), "{message}");

    let (ok, state, message) = service_outcome(&run(ServiceAction::Stop));
    assert!(ok && state == ServiceState::Stopped, "{message}");
    assert!(!alive(pid), "pid {pid} survived stop");
    assert!(!node.path("sleeper.pid").exists());
    assert_eq!(
        service_outcome(&run(ServiceAction::Status)).1,
        ServiceState::Stopped
    );
}

#[test]
fn fragments_are_deleted_over_ssh() {
    let Some(sshd) = sshd() else { return };
    let _one = lock();
    let node = Node::new(sshd);
    for f in [
        "fragments/101",
        "fragments/101.digest",
        "fragments/102.digest",
        "fragments/1030",
        "sentinel",
    ] {
        std::fs::write(node.path(f), f).unwrap();
    }
    let ops = deletions_by_device([("101", "3"), ("102", "3"), ("103", "3")]).unwrap();
    assert_eq!(ops.len(), 1);
    let r = rt()
        .block_on(ssh::run_operation(&node.target(), &ops[0]))
        .unwrap();
    let Outcome::Fragments { device_id, results } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(*device_id, 3);
    let outcomes: Vec<_> = results
        .iter()
        .map(|f| (f.fragment_id, f.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (101, FragmentOutcome::Deleted),
            (102, FragmentOutcome::Deleted),
            (103, FragmentOutcome::AlreadyAbsent),
        ]
    );
    assert!(r.succeeded());
    for gone in [
        "fragments/101",
        "fragments/101.digest",
        "fragments/102.digest",
    ] {
        assert!(!node.path(gone).exists(), "{gone} survived");
    }
    for kept in ["fragments/1030", "sentinel", "agent.toml"] {
        assert!(node.path(kept).exists(), "{kept} was touched");
    }
}

#[test]
fn hostile_requests_are_refused_by_the_node_and_by_the_controller() {
    let Some(sshd) = sshd() else { return };
    let _one = lock();
    let node = Node::new(sshd);
    let rt = rt();
    std::fs::write(node.path("x"), "x").unwrap();
    std::fs::write(node.path("fragments/1"), "1").unwrap();
    std::fs::write(node.path("fragments/2"), "2").unwrap();
    std::fs::create_dir(node.path("fragments/1;rm")).unwrap();

    // Lines no controller would build, sent straight to the forced command.
    let x = node.path("x").display().to_string();
    for line in [
        "nodewarden-op delete-fragments 3 ../x".to_string(),
        "nodewarden-op delete-fragments 3 1/2".to_string(),
        "nodewarden-op delete-fragments 3 -rf".to_string(),
        "nodewarden-op delete-fragments 3 1;rm".to_string(),
        "nodewarden-op delete-fragments 3 2 ../x".to_string(),
        format!("rm -f {x}"),
        format!("nodewarden-op delete-fragments 3 1; rm -f {x}"),
        "nodewarden-op service sleeper start && id".to_string(),
        "nodewarden-op service ../../bin/sh start".to_string(),
        String::new(),
    ] {
        let out = rt
            .block_on(ssh::run_line(&node.target(), &line))
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let result = OperationResult::from_json_line(out.stdout.trim())
            .unwrap_or_else(|e| panic!("{line:?}: {e}: {out:?}"));
        assert!(result.is_refused(), "{line:?}: {result:?}");
        assert_eq!(out.exit_status, Some(3), "{line:?}");
    }
    for kept in [
        "x",
        "fragments/1",
        "fragments/2",
        "fragments/1;rm",
        "agent.toml",
    ] {
        assert!(node.path(kept).exists(), "{kept} was touched");
    }
    assert!(!node.path("sleeper.pid").exists(), "nothing was started");

    // The controller refuses the same ids before it connects anywhere: this target has no
    // server behind it, so any attempt would be a connection error instead.
    for bad in ["../x", "1/2", "-rf", "1;rm"] {
        assert!(deletions_by_device([(bad, "3")]).is_err(), "{bad}");
    }
    let nowhere = SshTarget {
        port: free_port(),
        ..node.target()
    };
    let e = rt
        .block_on(ssh::run_operation(
            &nowhere,
            &Operation::service("../../bin/sh", ServiceAction::Start),
        ))
        .unwrap_err();
    assert!(matches!(e, SshError::InvalidOperation(_)), "{e}");
}

#[test]
fn an_undeclared_service_is_refused_by_the_agent_even_when_asked() {
    let Some(sshd) = sshd() else { return };
    let _one = lock();
    let node = Node::new(sshd);
    let rt = rt();
    for op in [
        Operation::service("storage-client", ServiceAction::Start),
        Operation::DeleteFragments {
            device_id: 4,
            fragment_ids: vec![1],
        },
    ] {
        let r = rt
            .block_on(ssh::run_operation(&node.target(), &op))
            .unwrap();
        let Outcome::Refused { reason } = &r.outcome else {
            panic!("{op:?}: {r:?}")
        };
        assert!(reason.contains("not declared"), "{reason}");
        assert_eq!(r.operation.as_ref(), Some(&op));
    }
}

#[test]
fn unknown_and_changed_host_keys_and_a_wrong_client_key_are_refused() {
    let Some(sshd) = sshd() else { return };
    let _one = lock();
    let node = Node::new(sshd);
    let rt = rt();
    let op = Operation::service("sleeper", ServiceAction::Status);

    // Unknown: an empty known_hosts. The key must not be learned.
    std::fs::write(node.path("known_hosts"), "").unwrap();
    let e = rt
        .block_on(ssh::run_operation(&node.target(), &op))
        .unwrap_err();
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e}");
    assert!(e.to_string().contains("SHA256:"), "{e}");
    assert_eq!(
        std::fs::read_to_string(node.path("known_hosts")).unwrap(),
        ""
    );

    // Changed: another key recorded for this host and port.
    keygen(&node.path("other_host_key"));
    let other = std::fs::read_to_string(node.path("other_host_key.pub")).unwrap();
    let recorded = format!("[127.0.0.1]:{} {}\n", node.sshd.port, key_part(&other));
    std::fs::write(node.path("known_hosts"), &recorded).unwrap();
    let e = rt
        .block_on(ssh::run_operation(&node.target(), &op))
        .unwrap_err();
    assert!(matches!(e, SshError::HostKeyChanged { line: 1, .. }), "{e}");
    assert_eq!(
        std::fs::read_to_string(node.path("known_hosts")).unwrap(),
        recorded
    );

    // Wrong client key: the host is trusted, but this key is not authorized.
    node.trust_the_true_host_key();
    keygen(&node.path("stranger"));
    let stranger = SshTarget {
        key_file: node.path("stranger"),
        ..node.target()
    };
    let e = rt.block_on(ssh::run_operation(&stranger, &op)).unwrap_err();
    assert!(matches!(e, SshError::AuthenticationRefused { .. }), "{e}");

    // And the right key still works, so the refusals above were about the keys.
    let r = rt
        .block_on(ssh::run_operation(&node.target(), &op))
        .unwrap();
    assert!(r.succeeded(), "{r:?}");
}

#[test]
fn a_wake_on_lan_packet_arrives_as_102_bytes() {
    let rt = rt();
    rt.block_on(async {
        let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mac: wol::MacAddress = "52:54:00:ab:cd:ef".parse().unwrap();
        wol::send_magic_packets_from(
            "127.0.0.1:0".parse().unwrap(),
            &[mac],
            listener.local_addr().unwrap(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 1024];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), listener.recv_from(&mut buf))
            .await
            .expect("a packet")
            .unwrap();
        assert!(from.ip().is_loopback());
        assert_eq!(n, 102);
        assert_eq!(&buf[..6], &[0xFF; 6]);
        for copy in buf[6..n].chunks(6) {
            assert_eq!(copy, &[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        }
    });
}

/// The agent link as the router sees it when the node's agent is down.
struct AgentDown;

impl actions::AgentPath for AgentDown {
    fn is_online(&self, _node: &str) -> bool {
        false
    }
    async fn execute(
        &self,
        node: &str,
        _op: &Operation,
    ) -> Result<OperationResult, actions::LinkFailure> {
        Err(actions::LinkFailure::NotSent(format!(
            "{node}: agent offline"
        )))
    }
    async fn wait_online(&self, _node: &str, _limit: Duration) -> bool {
        false
    }
}

#[test]
fn with_the_agent_down_wake_and_stop_are_routed_over_ssh() {
    let Some(sshd) = sshd() else { return };
    let _one = lock();
    let node = Node::new(sshd);
    let rt = rt();
    let reach = actions::NodeReach {
        node: "storage-01".into(),
        services: vec!["sleeper".into()],
        ssh: Some(node.target()),
        wake: None,
    };
    let timing = actions::Timing::default();

    let r = rt.block_on(actions::run_on_node(
        &AgentDown,
        &reach,
        &actions::Action::Wake,
        "alice",
        timing,
    ));
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.path, Some(ActionPath::Ssh));
    assert!(!r.woke, "a node that answers SSH is not woken");
    let pid: u32 = std::fs::read_to_string(node.path("sleeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));

    let r = rt.block_on(actions::run_on_node(
        &AgentDown,
        &reach,
        &actions::Action::Stop,
        "alice",
        timing,
    ));
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.path, Some(ActionPath::Ssh));
    assert!(!alive(pid));
    let table = actions::render_table(&[r]);
    assert!(table.contains("storage-01  ssh   ok"), "{table}");
}

#[test]
fn the_op_subcommand_runs_one_declared_operation_locally() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("fragments")).unwrap();
    for f in ["fragments/5", "fragments/5.digest", "x"] {
        std::fs::write(d.join(f), f).unwrap();
    }
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "[[storage.devices]]\nid = 3\nfragment_dir = \"{}/fragments\"\n",
            d.display()
        ),
    )
    .unwrap();
    let op = |words: &[&str]| {
        let out = Command::new(bin_path("nodewarden-agent"))
            .arg("op")
            .arg("--config")
            .arg(d.join("agent.toml"))
            .args(words)
            .output()
            .unwrap();
        let result = OperationResult::from_json_line(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|e| panic!("{words:?}: {e}: {out:?}"));
        (out.status.code(), result)
    };
    let (code, result) = op(&["delete-fragments", "3", "-rf"]);
    assert_eq!(code, Some(3));
    assert!(result.is_refused());
    let (code, result) = op(&["delete-fragments", "3", "5", "6"]);
    assert_eq!(code, Some(0), "{result:?}");
    assert!(!d.join("fragments/5").exists() && !d.join("fragments/5.digest").exists());
    assert!(d.join("x").exists());
    let (code, result) = op(&["service", "storage-client", "start"]);
    assert_eq!(code, Some(3));
    assert!(result.is_refused());
}

#[test]
fn a_real_world_known_hosts_file_is_understood_including_hashed_names() {
    let Some(sshd) = sshd() else { return };
    let _one = lock();
    let node = Node::new(sshd);
    let rt = rt();
    let op = Operation::service("sleeper", ServiceAction::Status);
    let pub_of = |name: &str, kind: &str| {
        let path = node.path(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        key_part(&std::fs::read_to_string(path.with_extension("pub")).unwrap())
    };
    let true_key = key_part(&std::fs::read_to_string(&node.sshd.host_key_pub).unwrap());
    let port = node.sshd.port;
    let text = format!(
        "# fleet hosts\n\
         other.example,10.0.0.9 {}\n\
         [127.0.0.1]:{port} {}\n\
         [127.0.0.1]:{port} {true_key}\n",
        pub_of("rsa_key", "rsa"),
        pub_of("ecdsa_key", "ecdsa"),
    );
    std::fs::write(node.path("known_hosts"), &text).unwrap();
    let r = rt.block_on(ssh::run_operation(&node.target(), &op));
    assert!(
        matches!(&r, Ok(r) if r.succeeded()),
        "plain known_hosts: {r:?}"
    );

    // `ssh-keygen -H` hashes the host names, as ssh's HashKnownHosts does.
    let status = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(node.path("known_hosts"))
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let hashed = std::fs::read_to_string(node.path("known_hosts")).unwrap();
    assert!(
        hashed.contains("|1|") && !hashed.contains("127.0.0.1"),
        "{hashed}"
    );
    let r = rt.block_on(ssh::run_operation(&node.target(), &op));
    assert!(
        matches!(&r, Ok(r) if r.succeeded()),
        "hashed known_hosts: {r:?}"
    );
}

#[test]
fn several_operations_share_one_connection() {
    let Some(sshd) = sshd() else { return };
    let Some(log) = service("NW_TEST_SSHD_LOG") else {
        return;
    };
    let _one = lock();
    let node = Node::new(sshd);
    let connections = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("Connection from 127.0.0.1")
            .count()
    };
    let before = connections();
    let ops = [
        Operation::service("sleeper", ServiceAction::Start),
        Operation::service("sleeper", ServiceAction::Status),
        Operation::service("sleeper", ServiceAction::Stop),
    ];
    let mut answered = Vec::new();
    let (results, error) = rt().block_on(ssh::run_operations(&node.target(), &ops, |took| {
        answered.push(took)
    }));
    assert!(error.is_none(), "{error:?}");
    assert_eq!(results.len(), 3);
    // Each answer timed, the first one with the connection.
    assert_eq!(answered.len(), 3);
    assert!(answered[0] > answered[1], "{answered:?}");
    for (r, op) in results.iter().zip(&ops) {
        assert_eq!(r.operation.as_ref(), Some(op));
        assert!(r.succeeded(), "{r:?}");
    }
    assert_eq!(service_outcome(&results[1]).1, ServiceState::Running);
    assert_eq!(service_outcome(&results[2]).1, ServiceState::Stopped);
    // sshd logs each connection when it accepts it, before this returns.
    assert_eq!(connections() - before, 1);

    // One bad operation refuses the batch before connecting.
    let (results, error) = rt().block_on(ssh::run_operations(
        &node.target(),
        &[
            Operation::service("sleeper", ServiceAction::Start),
            Operation::service("-x", ServiceAction::Start),
        ],
        |_| panic!("nothing is sent, so nothing is answered"),
    ));
    assert!(results.is_empty());
    assert!(
        matches!(error, Some(SshError::InvalidOperation(_))),
        "{error:?}"
    );
    assert_eq!(connections() - before, 1);
    assert!(!node.path("sleeper.pid").exists());
}
