//! The agent–controller link with real processes on loopback: mutual-TLS refusals, liveness
//! after `kill -9`, controller restarts, revocation of a live node, and junk frames from a
//! hand-made QUIC client. Needs `cargo build --workspace` (no external services).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodewarden_shared::ca::{self, CaMaterial, Validity};
use nodewarden_shared::protocol::{self, close};
use nodewarden_shared::tls;
use nodewarden_tests::lab::run_ok;
use nodewarden_tests::{ChildGuard, bin_path, free_port, wait_for};
use serde_json::Value;

/// The controller must see a dead agent as offline within this (the issue's bound).
const OFFLINE_BOUND: Duration = Duration::from_secs(3);

/// Lines a child wrote to stderr, collected by a thread (and echoed, prefixed, for failures).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn attach(child: &mut ChildGuard, prefix: String) -> Log {
        let log = Log::default();
        let stderr = child.0.stderr.take().expect("stderr piped");
        let lines = log.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{prefix}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        log
    }

    /// The first line containing every one of `parts`.
    fn find(&self, parts: &[&str]) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .cloned()
    }

    fn wait(&self, parts: &[&str], limit: Duration) -> String {
        wait_for(&format!("a log line with {parts:?}"), limit, || {
            self.find(parts)
        })
    }

    fn count(&self, parts: &[&str]) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }
}

struct NodeCert {
    cert: PathBuf,
    key: PathBuf,
}

/// A CA directory, a controller's ports, and the processes of one test.
struct Lab {
    dir: tempfile::TempDir,
    link_port: u16,
    admin_port: u16,
}

struct Controller {
    _child: ChildGuard,
    log: Log,
}

struct Agent {
    child: ChildGuard,
    log: Log,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        run_ok(
            Command::new(bin_path("nodewarden-controller"))
                .args(["ca", "init", "--dir"])
                .arg(dir.path().join("ca"))
                .args(["--san", "controller.test", "--san", "127.0.0.1"]),
        );
        Lab {
            dir,
            link_port: nodewarden_tests::free_udp_port(),
            admin_port: free_port(),
        }
    }

    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn ca_pem(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    fn ca_material(&self) -> CaMaterial {
        CaMaterial {
            cert_pem: std::fs::read_to_string(self.ca_pem()).unwrap(),
            key_pem: std::fs::read_to_string(self.ca_dir().join("ca.key")).unwrap(),
        }
    }

    /// A node certificate through the CLI (`ca issue`).
    fn issue(&self, node: &str) -> NodeCert {
        let out = self.dir.path().join("nodes");
        run_ok(
            Command::new(bin_path("nodewarden-controller"))
                .args(["ca", "issue", node, "--dir"])
                .arg(self.ca_dir())
                .arg("--out-dir")
                .arg(&out),
        );
        NodeCert {
            cert: out.join(format!("{node}.pem")),
            key: out.join(format!("{node}.key")),
        }
    }

    fn revoke(&self, node: &str) {
        run_ok(
            Command::new(bin_path("nodewarden-controller"))
                .args(["ca", "revoke", node, "--dir"])
                .arg(self.ca_dir()),
        );
    }

    fn link_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.link_port))
    }

    fn start_controller(&self) -> Controller {
        let config = self.dir.path().join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "[link]\nlisten = \"127.0.0.1:{}\"\nca_dir = \"ca\"\n[http]\nlisten = \"127.0.0.1:{}\"\n\
                 [pushgateway]\nurl = \"\"\n",
                self.link_port, self.admin_port
            ),
        )
        .unwrap();
        let mut child = ChildGuard::spawn(
            Command::new(bin_path("nodewarden-controller"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("NODEWARDEN_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let log = Log::attach(&mut child, "controller".into());
        log.wait(&["HTTP endpoint listening"], Duration::from_secs(20));
        log.wait(&["link listening"], Duration::from_secs(1));
        Controller { _child: child, log }
    }

    fn start_agent(&self, name: &str, cert: &NodeCert, server_name: &str) -> Agent {
        let config = self.dir.path().join(format!("agent-{name}.toml"));
        let fragments = self.dir.path().join(format!("fragments-{name}"));
        std::fs::create_dir_all(&fragments).unwrap();
        std::fs::write(
            &config,
            format!(
                "roles = [\"storage\"]\n\
                 [controller]\naddress = \"127.0.0.1:{}\"\nserver_name = \"{server_name}\"\n\
                 ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nreport_interval_ms = 300\n\
                 reconnect_max_ms = 2000\n\
                 [[storage.devices]]\nid = 7\nfragment_dir = {:?}\n",
                self.link_port,
                self.ca_pem(),
                cert.cert,
                cert.key,
                fragments,
            ),
        )
        .unwrap();
        let mut child = ChildGuard::spawn(
            Command::new(bin_path("nodewarden-agent"))
                .arg("--config")
                .arg(&config)
                .arg("--web.listen-address=127.0.0.1:0")
                .env("NO_COLOR", "1")
                .env("NODEWARDEN_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let log = Log::attach(&mut child, format!("agent {name}"));
        Agent { child, log }
    }

    /// The API token the controller generated in its data directory.
    fn api_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/api.token"))
            .expect("api.token")
            .trim()
            .to_string()
    }

    fn nodes(&self) -> Vec<Value> {
        ureq::get(&format!(
            "http://127.0.0.1:{}/api/v1/nodes",
            self.admin_port
        ))
        .header("Authorization", &format!("Bearer {}", self.api_token()))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
        .unwrap_or_default()
    }

    fn node(&self, name: &str) -> Option<Value> {
        self.nodes().into_iter().find(|n| n["name"] == name)
    }

    fn online(&self, name: &str) -> bool {
        self.node(name).is_some_and(|n| n["online"] == true)
    }

    fn wait_online(&self, name: &str, limit: Duration) {
        wait_for(&format!("{name} online"), limit, || {
            self.online(name).then_some(())
        });
    }
}

#[test]
fn refused_certificates_are_logged_and_a_valid_agent_is_accepted() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let log = &controller.log;

    // Another CA (also "nodewarden CA", so the issuer name matches; only the signature differs).
    let other = Lab::new();
    let foreign = other.issue("n-foreign");

    let ca = lab.ca_material();
    let now = time::OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let expired_cert = ca::issue_node_cert(&ca, "n-expired", past).unwrap();
    let expired = NodeCert {
        cert: lab.dir.path().join("expired.pem"),
        key: lab.dir.path().join("expired.key"),
    };
    std::fs::write(&expired.cert, &expired_cert.cert_pem).unwrap();
    std::fs::write(&expired.key, expired_cert.key_pem.unwrap()).unwrap();

    let revoked = lab.issue("n-revoked");
    lab.revoke("n-revoked");
    // The controller's own server certificate: from the right CA, but server-auth only.
    let server_only = NodeCert {
        cert: lab.ca_dir().join("server.pem"),
        key: lab.ca_dir().join("server.key"),
    };
    let misdirected = lab.issue("n-misdirected");
    let good = lab.issue("n-good");

    let _agents = [
        lab.start_agent("n-foreign", &foreign, "controller.test"),
        lab.start_agent("n-expired", &expired, "controller.test"),
        lab.start_agent("n-revoked", &revoked, "controller.test"),
        lab.start_agent("server-only", &server_only, "controller.test"),
    ];
    let wrong_name = lab.start_agent("n-misdirected", &misdirected, "wrong.test");
    let _good = lab.start_agent("n-good", &good, "controller.test");

    let limit = Duration::from_secs(15);
    let refused = "refused agent connection";
    log.wait(
        &[
            refused,
            "\"n-foreign\"",
            "is not issued by this controller's CA",
        ],
        limit,
    );
    log.wait(&[refused, "\"n-expired\"", "has expired"], limit);
    log.wait(&[refused, "\"n-revoked\"", "is revoked"], limit);
    log.wait(
        &[
            refused,
            "\"controller.test\"",
            "lacks the client-auth extended key usage",
        ],
        limit,
    );
    // The agent refuses a controller whose certificate does not carry its configured name.
    wrong_name.log.wait(
        &[
            "link to the controller failed",
            "not valid for name \"wrong.test\"",
        ],
        limit,
    );

    // No client certificate at all, from a hand-made client.
    let rt = runtime();
    let outcome: Result<(), String> = rt.block_on(async {
        let conn = connect(lab.link_addr(), &lab.ca_pem(), None, "controller.test").await?;
        Err(conn.closed().await.to_string())
    });
    let err = outcome.unwrap_err();
    assert!(!err.is_empty());
    log.wait(&[refused, "peer sent no certificates"], limit);

    // Online at its hello; its first report follows (collected beside the link's loop).
    let good_node = wait_for("n-good online with a report", limit, || {
        lab.node("n-good")
            .filter(|n| n["online"] == true && !n["last_report"].is_null())
    });
    assert_eq!(good_node["last_report"]["storage"][0]["device_id"], 7);
    let names: Vec<String> = lab
        .nodes()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["n-good"], "only the valid agent is known");
}

#[test]
fn a_killed_agent_is_offline_within_three_seconds() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let cert = lab.issue("n-victim");
    let mut agent = lab.start_agent("n-victim", &cert, "controller.test");
    lab.wait_online("n-victim", Duration::from_secs(15));
    // Let it settle into keep-alives and reports.
    let seq = |lab: &Lab| {
        lab.node("n-victim")
            .and_then(|n| n["last_report"]["seq"].as_u64())
    };
    wait_for("a few reports", Duration::from_secs(10), || {
        (seq(&lab)? >= 2).then_some(())
    });

    agent.child.0.kill().expect("SIGKILL"); // Child::kill is SIGKILL
    let killed = Instant::now();
    wait_for("n-victim offline", Duration::from_secs(10), || {
        (!lab.online("n-victim")).then_some(())
    });
    let took = killed.elapsed();
    eprintln!("offline after {took:?}");
    assert!(took <= OFFLINE_BOUND, "offline only after {took:?}");
    controller.log.wait(
        &["node offline", "n-victim", "timed out"],
        Duration::from_secs(1),
    );
    let node = lab.node("n-victim").unwrap();
    let transitions = node["transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 2);
    assert_eq!(transitions[1]["online"], false);
}

#[test]
fn agents_come_back_after_a_controller_restart_without_being_restarted() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let names = ["n-a", "n-b", "n-c"];
    let mut agents: Vec<Agent> = names
        .iter()
        .map(|n| lab.start_agent(n, &lab.issue(n), "controller.test"))
        .collect();
    for n in names {
        lab.wait_online(n, Duration::from_secs(15));
    }
    drop(controller); // SIGKILL and reap
    let restarted = Instant::now();
    let _controller = lab.start_controller();
    for n in names {
        wait_for(
            &format!("{n} online again"),
            Duration::from_secs(10),
            || lab.online(n).then_some(()),
        );
    }
    let took = restarted.elapsed();
    eprintln!("all online again {took:?} after the restart began");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    for a in &mut agents {
        assert!(a.child.0.try_wait().unwrap().is_none(), "agent exited");
        // Its log line may trail the controller's view by a moment.
        wait_for(
            "the agent to log its reconnection",
            Duration::from_secs(2),
            || (a.log.count(&["connected to the controller"]) >= 2).then_some(()),
        );
        assert_eq!(a.log.count(&["connected to the controller"]), 2);
    }
}

#[test]
fn revoking_a_connected_node_closes_its_connection_at_once() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let cert = lab.issue("n-rogue");
    let agent = lab.start_agent("n-rogue", &cert, "controller.test");
    lab.wait_online("n-rogue", Duration::from_secs(15));
    lab.revoke("n-rogue");
    let revoked = Instant::now();
    wait_for("n-rogue offline", Duration::from_secs(5), || {
        (!lab.online("n-rogue")).then_some(())
    });
    let took = revoked.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    controller.log.wait(
        &[
            "certificate revoked: closing the node's live connection",
            "n-rogue",
        ],
        Duration::from_secs(1),
    );
    agent
        .log
        .wait(&["certificate revoked"], Duration::from_secs(2));
    // Its reconnection is refused at the handshake.
    controller.log.wait(
        &["refused agent connection", "\"n-rogue\"", "is revoked"],
        Duration::from_secs(10),
    );
    assert!(!lab.online("n-rogue"));
}

#[test]
fn a_second_connection_of_a_node_replaces_the_first() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let cert = lab.issue("n-twin");
    let _first = lab.start_agent("n-twin", &cert, "controller.test");
    lab.wait_online("n-twin", Duration::from_secs(15));
    let first_id = lab.node("n-twin").unwrap()["connection"]["id"].clone();
    let second = lab.start_agent("n-twin-2", &cert, "controller.test");
    controller.log.wait(
        &[
            "newer connection of the node replaces the older one",
            "n-twin",
        ],
        Duration::from_secs(15),
    );
    second
        .log
        .wait(&["connected to the controller"], Duration::from_secs(1));
    let node = lab.node("n-twin").unwrap();
    assert_eq!(node["online"], true);
    assert_ne!(node["connection"]["id"], first_id);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A hand-made link client: TLS as the agent's, then whatever the test sends.
async fn connect(
    addr: SocketAddr,
    ca_pem: &Path,
    identity: Option<&NodeCert>,
    server_name: &str,
) -> Result<quinn::Connection, String> {
    let ca = std::fs::read_to_string(ca_pem).unwrap();
    let files = identity.map(|id| {
        (
            std::fs::read_to_string(&id.cert).unwrap(),
            std::fs::read_to_string(&id.key).unwrap(),
        )
    });
    let crypto = tls::client_config(
        &ca,
        files.as_ref().map(|(c, k)| tls::Identity {
            cert_pem: c,
            key_pem: k,
        }),
    )
    .unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(crypto)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    // Like an agent: keep-alives, so silence at the application level is not an idle timeout.
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(500)));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint
        .connect(addr, server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// Sends `bytes` on a fresh stream and returns how the controller closed the connection.
async fn send_junk(
    lab_addr: SocketAddr,
    ca: &Path,
    id: &NodeCert,
    bytes: &[u8],
) -> quinn::ConnectionError {
    let conn = connect(lab_addr, ca, Some(id), "controller.test")
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // The controller may close while we are still writing the oversized frame.
    let _ = send.write_all(bytes).await;
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("controller closes the junk connection")
}

#[test]
fn garbage_and_oversized_frames_do_not_disturb_other_agents() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let steady_cert = lab.issue("n-steady");
    let _steady = lab.start_agent("n-steady", &steady_cert, "controller.test");
    lab.wait_online("n-steady", Duration::from_secs(15));
    let junk = lab.issue("n-junk");

    let hello = protocol::encode(&nodewarden_shared::session::AgentSession::hello(
        "junk",
        &[],
    ))
    .unwrap();
    let mut hello_then_garbage = nodewarden_shared::framing::encode_frame(&hello, 1 << 20).unwrap();
    hello_then_garbage.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd]);
    let frame = |m: &protocol::AgentToController| {
        nodewarden_shared::framing::encode_frame(&protocol::encode(m).unwrap(), 1 << 20).unwrap()
    };
    let future_hello = frame(&protocol::AgentToController::Hello(protocol::Hello {
        min_version: 9,
        max_version: 9,
        agent_version: "9.0".into(),
        capabilities: vec![],
    }));
    let early_report = frame(&protocol::AgentToController::StateReport(Default::default()));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage frame",
            vec![0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
            "undecodable message",
        ),
        (
            "oversized header",
            vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3],
            "exceeds the limit",
        ),
        (
            "oversized frame",
            {
                let mut v = (1u32 << 20).to_be_bytes().to_vec();
                v.extend(std::iter::repeat_n(0xabu8, 300 * 1024));
                v
            },
            "exceeds the limit",
        ),
        ("empty frame", vec![0, 0, 0, 0], "empty frame"),
        (
            "hello then garbage",
            hello_then_garbage,
            "undecodable message",
        ),
        (
            "hello from the future",
            future_hello,
            "no common protocol version",
        ),
        (
            "report before hello",
            early_report,
            "expected a hello first",
        ),
    ];
    let rt = runtime();
    let ca = lab.ca_pem();
    for (i, (what, bytes, reason)) in cases.into_iter().enumerate() {
        let before = controller
            .log
            .count(&["closing agent connection", "n-junk"]);
        let closed = rt.block_on(send_junk(lab.link_addr(), &ca, &junk, &bytes));
        match &closed {
            quinn::ConnectionError::ApplicationClosed(a) => {
                assert_eq!(
                    a.error_code.into_inner(),
                    u64::from(close::PROTOCOL_ERROR),
                    "{what}"
                );
                let text = String::from_utf8_lossy(&a.reason);
                assert!(text.contains(reason), "{what}: {text}");
            }
            other => panic!("{what}: closed with {other}"),
        }
        // The log line travels through a pipe; it may trail the close the client saw.
        wait_for(
            &format!("the log line of case {i}: {what}"),
            Duration::from_secs(2),
            || {
                let n = controller
                    .log
                    .count(&["closing agent connection", "n-junk"]);
                (n > before).then_some(())
            },
        );
        assert_eq!(
            controller
                .log
                .count(&["closing agent connection", "n-junk"]),
            before + 1,
            "case {i}: {what}"
        );
        let last = controller
            .log
            .0
            .lock()
            .unwrap()
            .iter()
            .rfind(|l| l.contains("closing agent connection") && l.contains("n-junk"))
            .cloned()
            .unwrap_or_default();
        assert!(last.contains(reason), "case {i}: {what}: {last}");
    }

    // The steady agent never went offline and keeps reporting.
    let node = lab.node("n-steady").unwrap();
    assert_eq!(node["transitions"].as_array().unwrap().len(), 1);
    let seq = node["last_report"]["seq"].as_u64().unwrap();
    wait_for("n-steady to report again", Duration::from_secs(5), || {
        let n = lab.node("n-steady")?;
        (n["online"] == true && n["last_report"]["seq"].as_u64()? > seq).then_some(())
    });
    assert_eq!(controller.log.count(&["n-steady", "offline"]), 0);
}

fn signal(child: &ChildGuard, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.pid()).expect("pid");
    // SAFETY: kill(2) with a pid this test spawned and still owns (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// A stopped process sends nothing, like a cut network: both ends must notice within the bound
/// and come back by themselves once it runs again.
#[test]
fn a_silent_peer_is_noticed_on_both_sides_within_three_seconds() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let cert = lab.issue("n-frozen");
    let agent = lab.start_agent("n-frozen", &cert, "controller.test");
    lab.wait_online("n-frozen", Duration::from_secs(15));

    // The agent goes silent: the controller marks it offline.
    signal(&agent.child, libc::SIGSTOP);
    let stopped = Instant::now();
    wait_for("n-frozen offline", Duration::from_secs(10), || {
        (!lab.online("n-frozen")).then_some(())
    });
    let took = stopped.elapsed();
    eprintln!("silent agent offline after {took:?}");
    assert!(took <= OFFLINE_BOUND, "{took:?}");
    signal(&agent.child, libc::SIGCONT);
    lab.wait_online("n-frozen", Duration::from_secs(10));

    // The controller goes silent: the agent notices as fast.
    let lost = |a: &Agent| a.log.count(&["link to the controller closed", "timed out"]);
    let before = lost(&agent);
    let old_connection = lab.node("n-frozen").unwrap()["connection"]["id"].clone();
    signal(&controller._child, libc::SIGSTOP);
    let stopped = Instant::now();
    wait_for("the agent to notice", Duration::from_secs(10), || {
        (lost(&agent) > before).then_some(())
    });
    let took = stopped.elapsed();
    eprintln!("agent noticed the silent controller after {took:?}");
    assert!(took <= OFFLINE_BOUND, "{took:?}");
    signal(&controller._child, libc::SIGCONT);
    // The controller, running again, accepts the new connection, which replaces the old one.
    wait_for("n-frozen back", Duration::from_secs(10), || {
        let n = lab.node("n-frozen")?;
        (n["online"] == true && n["connection"]["id"] != old_connection).then_some(())
    });
}

/// An agent stopped by SIGTERM closes its connection: offline at once, with the reason.
#[test]
fn a_terminated_agent_says_goodbye() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let cert = lab.issue("n-polite");
    let mut agent = lab.start_agent("n-polite", &cert, "controller.test");
    lab.wait_online("n-polite", Duration::from_secs(15));
    signal(&agent.child, libc::SIGTERM);
    let sent = Instant::now();
    wait_for("n-polite offline", Duration::from_secs(5), || {
        (!lab.online("n-polite")).then_some(())
    });
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    controller.log.wait(
        &[
            "node offline",
            "n-polite",
            "closed by agent: agent shutting down",
        ],
        Duration::from_secs(1),
    );
    let status = agent.child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The CSR path end to end: `enroll --csr` on the node, `ca sign` on the controller host; a
/// certificate close to expiry is accepted but reported.
#[test]
fn an_enrolled_node_is_accepted_and_its_coming_expiry_reported() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let node_dir = lab.dir.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let cert = NodeCert {
        cert: node_dir.join("node.pem"),
        key: node_dir.join("node.key"),
    };
    let csr = node_dir.join("node.csr");
    run_ok(
        Command::new(bin_path("nodewarden-agent"))
            .args(["enroll", "--csr", "--name", "n-enrolled", "--key-out"])
            .arg(&cert.key)
            .arg("--csr-out")
            .arg(&csr),
    );
    // The key stays private to the node.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&cert.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A CSR is signed only for the node it names.
    let wrong = Command::new(bin_path("nodewarden-controller"))
        .args(["ca", "sign", "--dir"])
        .arg(lab.ca_dir())
        .arg("--csr")
        .arg(&csr)
        .args(["--node", "n-other", "--out"])
        .arg(node_dir.join("other.pem"))
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("n-enrolled"));
    run_ok(
        Command::new(bin_path("nodewarden-controller"))
            .args(["ca", "sign", "--dir"])
            .arg(lab.ca_dir())
            .arg("--csr")
            .arg(&csr)
            .args(["--node", "n-enrolled", "--days", "5", "--out"])
            .arg(&cert.cert),
    );
    let _agent = lab.start_agent("n-enrolled", &cert, "controller.test");
    lab.wait_online("n-enrolled", Duration::from_secs(15));
    controller.log.wait(
        &["node n-enrolled's certificate expires soon", "days_left="],
        Duration::from_secs(2),
    );
    let listing = run_ok(
        Command::new(bin_path("nodewarden-controller"))
            .args(["ca", "list", "--dir"])
            .arg(lab.ca_dir()),
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("n-enrolled\t") && l.contains("EXPIRES SOON")),
        "{listing}"
    );
    let report = wait_for("a state report", Duration::from_secs(5), || {
        let n = lab.node("n-enrolled")?;
        (!n["last_report"].is_null()).then_some(n["last_report"].clone())
    });
    assert!(report["health"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(report["storage"][0]["total_bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["roles"][0], "storage");

    // A command round trip through the link (request id out, response with the same id back).
    let url = format!(
        "http://127.0.0.1:{}/api/v1/nodes/n-enrolled/ping",
        lab.admin_port
    );
    assert!(
        ureq::post(&url).send_empty().is_err(),
        "the API needs its token"
    );
    let bearer = format!("Bearer {}", lab.api_token());
    let answer: Value = serde_json::from_str(
        &ureq::post(&url)
            .header("Authorization", &bearer)
            .send_empty()
            .expect("ping answered")
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(answer["node"], "n-enrolled");
    assert!(
        answer["round_trip_ms"].as_f64().unwrap() < 1000.0,
        "{answer}"
    );
    let unknown = format!(
        "http://127.0.0.1:{}/api/v1/nodes/nobody/ping",
        lab.admin_port
    );
    assert!(
        ureq::post(&unknown)
            .header("Authorization", &bearer)
            .send_empty()
            .is_err()
    );
}

/// A client that completes the handshake but never says hello is dropped.
#[test]
fn a_connection_without_hello_is_closed() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let cert = lab.issue("n-mute");
    let rt = runtime();
    let closed = rt.block_on(async {
        let conn = connect(
            lab.link_addr(),
            &lab.ca_pem(),
            Some(&cert),
            "controller.test",
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("closed by the controller")
    });
    assert!(closed.to_string().contains("no hello"), "{closed}");
    controller.log.wait(
        &["closing agent connection", "n-mute", "no hello"],
        Duration::from_secs(2),
    );
    assert!(lab.node("n-mute").is_none());
}

/// Busy CPUs (more spinning threads than cores) do not make a healthy node look offline.
#[test]
fn no_false_offline_while_the_machine_is_busy() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let names = ["n-busy-1", "n-busy-2", "n-busy-3"];
    let _agents: Vec<Agent> = names
        .iter()
        .map(|n| lab.start_agent(n, &lab.issue(n), "controller.test"))
        .collect();
    for n in names {
        lab.wait_online(n, Duration::from_secs(15));
    }
    let until = Instant::now() + Duration::from_secs(8);
    let burners: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x = 0u64;
                while Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for b in burners {
        b.join().unwrap();
    }
    for n in names {
        let node = lab.node(n).unwrap();
        assert_eq!(node["online"], true, "{n}");
        assert_eq!(
            node["transitions"].as_array().unwrap().len(),
            1,
            "{n}: {node}"
        );
        seqs.push(node["last_report"]["seq"].as_u64().unwrap());
    }
    // Reports kept flowing (every 300 ms; 8 s of load).
    assert!(seqs.iter().all(|s| *s >= 10), "{seqs:?}");
    assert_eq!(controller.log.count(&["node offline"]), 0);
}

#[test]
fn the_controller_persists_nodes_devices_and_transitions_across_a_restart() {
    use nodewarden_controller::store::{EventKind, EventQuery, Store, StoreConfig};
    let lab = Lab::new();
    let controller = lab.start_controller();
    let cert = lab.issue("n-kept");
    let mut agent = lab.start_agent("n-kept", &cert, "controller.test");
    lab.wait_online("n-kept", Duration::from_secs(15));
    wait_for("a report", Duration::from_secs(10), || {
        lab.node("n-kept")?["last_report"]["seq"].as_u64()
    });
    agent.child.0.kill().expect("SIGKILL");
    wait_for("n-kept offline", Duration::from_secs(10), || {
        (!lab.online("n-kept")).then_some(())
    });
    // A clean stop writes what is still buffered.
    signal(&controller._child, libc::SIGTERM);
    let mut child = controller._child;
    wait_for("the controller to exit", Duration::from_secs(20), || {
        child.0.try_wait().ok().flatten()
    });

    runtime().block_on(async {
        let store = Store::open(StoreConfig::new(lab.dir.path().join("data")))
            .await
            .expect("the controller's SQLite database opens");
        let nodes = store.persisted_nodes().await.unwrap();
        let node = nodes
            .iter()
            .find(|n| n.info.node_id == "n-kept")
            .expect("node persisted");
        assert!(!node.online);
        assert_eq!(node.info.roles, vec!["storage".to_string()]);
        assert_eq!(node.info.cert_fingerprint.len(), 64, "sha-256 hex");
        let devices = store.persisted_devices().await.unwrap();
        let device = devices
            .iter()
            .find(|d| d.device_id == 7)
            .expect("device persisted");
        assert_eq!(device.node_id, "n-kept");
        assert!(device.total_bytes > 0 && device.free_bytes <= device.total_bytes);
        let events = store
            .events(&EventQuery {
                node_id: Some("n-kept".into()),
                after_id: 0,
                limit: 100,
            })
            .await
            .unwrap();
        let kinds: Vec<&EventKind> = events.iter().map(|e| &e.event.kind).collect();
        assert!(
            matches!(kinds.first(), Some(EventKind::Online)),
            "{kinds:?}"
        );
        assert!(
            matches!(kinds.get(1), Some(EventKind::Offline { .. })),
            "{kinds:?}"
        );
        store.close().await.unwrap();
    });
}

/// `ca server` re-issues the controller's certificate from the same CA with other names: after
/// a restart an agent naming the new name links with the certificate it already had, one naming
/// a dropped name is refused by its own TLS check, and the previous pair is kept.
#[test]
fn a_reissued_server_certificate_serves_new_names_with_the_same_ca() {
    let lab = Lab::new();
    let cert = lab.issue("n1");
    let old_cert = std::fs::read_to_string(lab.ca_dir().join("server.pem")).unwrap();
    run_ok(
        Command::new(bin_path("nodewarden-controller"))
            .args(["ca", "server", "--dir"])
            .arg(lab.ca_dir())
            .args([
                "--san",
                "renamed.test",
                "--san",
                "127.0.0.1",
                "--days",
                "30",
            ]),
    );
    assert_eq!(
        std::fs::read_to_string(lab.ca_dir().join("server.pem.previous")).unwrap(),
        old_cert
    );
    let new_cert = std::fs::read_to_string(lab.ca_dir().join("server.pem")).unwrap();
    assert_ne!(new_cert, old_cert);
    let info = ca::inspect_pem(&new_cert).unwrap();
    let days_left = info.expires_in(time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
    assert!((29..=30).contains(&days_left), "{days_left} days");
    assert!(info.server_auth && !info.is_ca);
    for key in ["server.key", "server.key.previous"] {
        let mode = std::fs::metadata(lab.ca_dir().join(key))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{key}"
        );
    }

    let _controller = lab.start_controller();
    let renamed = lab.start_agent("n1", &cert, "renamed.test");
    lab.wait_online("n1", Duration::from_secs(20));
    drop(renamed);
    let dropped = lab.start_agent("n1", &cert, "controller.test");
    dropped.log.wait(
        &[
            "link to the controller failed",
            "not valid for name \"controller.test\"",
        ],
        Duration::from_secs(20),
    );
}

/// A running controller serves a certificate `ca server` renewed without a restart: connected
/// agents stay, a new agent naming the new name links, one naming a dropped name is refused.
#[test]
fn a_reissued_server_certificate_is_served_without_a_restart() {
    let lab = Lab::new();
    let controller = lab.start_controller();
    let first = lab.start_agent("n1", &lab.issue("n1"), "controller.test");
    lab.wait_online("n1", Duration::from_secs(20));
    run_ok(
        Command::new(bin_path("nodewarden-controller"))
            .args(["ca", "server", "--dir"])
            .arg(lab.ca_dir())
            .args(["--san", "renamed.test", "--san", "127.0.0.1"]),
    );
    let renamed = lab.start_agent("n2", &lab.issue("n2"), "renamed.test");
    lab.wait_online("n2", Duration::from_secs(20));
    controller
        .log
        .wait(&["link certificate reloaded"], Duration::from_secs(5));
    assert!(lab.online("n1"), "the connected agent was dropped");
    assert_eq!(
        first.log.count(&["connected to the controller"]),
        1,
        "the connected agent had to reconnect"
    );
    let dropped = lab.start_agent("n3", &lab.issue("n3"), "controller.test");
    dropped.log.wait(
        &[
            "link to the controller failed",
            "not valid for name \"controller.test\"",
        ],
        Duration::from_secs(20),
    );
    drop(renamed);
}
