//! Routing decisions, with an in-memory agent link standing in for the QUIC endpoint (built
//! elsewhere) and real UDP for Wake-on-LAN. The SSH leg against a real sshd is in
//! tests/remote_ops.rs.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nodewarden_shared::ops::ServiceState;

use super::*;

/// The link as seen by the router: online or not, whether a woken node comes up, and a link that
/// can fail after some operations.
#[derive(Default)]
struct Link {
    online: bool,
    comes_up_after_wake: bool,
    fail_after: Option<usize>,
    /// The failure after `fail_after` comes once the operation was sent (outcome unknown),
    /// rather than before.
    lost_after_send: bool,
    calls: Mutex<Vec<(String, Operation)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    woken: AtomicUsize,
}

impl AgentPath for Link {
    fn is_online(&self, _node: &str) -> bool {
        self.online || self.woken.load(Ordering::SeqCst) > 0
    }
    async fn execute(&self, node: &str, op: &Operation) -> Result<OperationResult, LinkFailure> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Some work, so that concurrent nodes overlap.
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut calls = self.calls.lock().unwrap();
        if self.fail_after.is_some_and(|n| calls.len() >= n) {
            return Err(if self.lost_after_send {
                LinkFailure::Unknown("connection lost before the answer".into())
            } else {
                LinkFailure::NotSent("not connected".into())
            });
        }
        calls.push((node.to_string(), op.clone()));
        Ok(OperationResult {
            operation: Some(op.clone()),
            outcome: Outcome::Service {
                ok: true,
                state: ServiceState::Running,
                message: "started".into(),
                commands: vec![],
            },
            duration_ms: 1,
        })
    }
    async fn wait_online(&self, _node: &str, _limit: Duration) -> bool {
        if self.comes_up_after_wake {
            self.woken.fetch_add(1, Ordering::SeqCst);
        }
        self.comes_up_after_wake
    }
}

fn reach(node: &str) -> NodeReach {
    NodeReach {
        node: node.into(),
        services: vec!["storage-client".into(), "ray".into()],
        ssh: None,
        wake: None,
    }
}

const WHO: &str = "alice";

#[tokio::test]
async fn an_online_agent_carries_the_action() {
    let link = Link {
        online: true,
        ..Default::default()
    };
    let r = run_on_node(&link, &reach("n1"), &Action::Wake, WHO, Timing::default()).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.path, Some(ActionPath::Agent));
    assert!(!r.woke);
    assert_eq!(r.requested_by, "alice");
    let calls = link.calls.lock().unwrap();
    assert_eq!(
        calls.iter().map(|(_, op)| op.clone()).collect::<Vec<_>>(),
        vec![
            Operation::service("storage-client", ServiceAction::Start),
            Operation::service("ray", ServiceAction::Start),
        ]
    );
}

#[tokio::test]
async fn invalid_operations_reach_no_path() {
    let link = Link {
        online: true,
        ..Default::default()
    };
    let action = Action::Service {
        service: "../x".into(),
        action: ServiceAction::Start,
    };
    let r = run_on_node(&link, &reach("n1"), &action, WHO, Timing::default()).await;
    assert!(!r.succeeded());
    assert_eq!(r.path, None);
    assert!(r.error.unwrap().contains("refused before contacting n1"));
    assert!(link.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_offline_node_without_ssh_is_unreachable_unless_woken() {
    let link = Link::default();
    let r = run_on_node(&link, &reach("n2"), &Action::Stop, WHO, Timing::default()).await;
    assert_eq!(r.path, None);
    assert!(
        r.error.as_deref().unwrap().contains("n2 is unreachable"),
        "{r:?}"
    );

    // Wake without a known MAC: says so.
    let r = run_on_node(&link, &reach("n2"), &Action::Wake, WHO, Timing::default()).await;
    assert!(
        r.error.as_deref().unwrap().contains("no MAC address"),
        "{r:?}"
    );
    assert!(!r.woke);
}

async fn listener() -> (tokio::net::UdpSocket, SocketAddr) {
    let l = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

async fn received(l: &tokio::net::UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), l.recv_from(&mut buf))
        .await
        .expect("a magic packet")
        .unwrap();
    buf[..n].to_vec()
}

#[tokio::test]
async fn wake_of_a_silent_node_sends_wol_then_uses_the_agent() {
    let (l, addr) = listener().await;
    let mac: MacAddress = "52:54:00:00:00:07".parse().unwrap();
    let node = NodeReach {
        wake: Some(WakeTarget {
            macs: vec![mac],
            send_to: addr,
        }),
        ..reach("n3")
    };
    let link = Link {
        comes_up_after_wake: true,
        ..Default::default()
    };
    let r = run_on_node(&link, &node, &Action::Wake, WHO, Timing::default()).await;
    assert!(r.succeeded(), "{r:?}");
    assert!(r.woke);
    assert_eq!(r.path, Some(ActionPath::WakeOnLan));
    assert_eq!(r.results.len(), 2);
    assert_eq!(received(&l).await, wol::magic_packet(mac));

    // A node that does not come up is reported, with the packet still sent.
    let link = Link::default();
    let r = run_on_node(
        &link,
        &node,
        &Action::Wake,
        WHO,
        Timing {
            wake_wait: Duration::from_millis(10),
        },
    )
    .await;
    assert!(r.woke && !r.succeeded());
    assert!(r.error.unwrap().contains("did not connect"));
    assert_eq!(received(&l).await.len(), 102);
}

fn ssh_to_nowhere(dir: &Path) -> SshTarget {
    std::fs::write(dir.join("known_hosts"), "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SshTarget {
        host: "127.0.0.1".into(),
        port,
        user: "nodewarden".into(),
        key_file: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ssh/test_key_ed25519"),
        known_hosts: dir.join("known_hosts"),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn ssh_that_does_not_answer_leads_to_wol_only_for_wake() {
    let dir = tempfile::tempdir().unwrap();
    let (l, addr) = listener().await;
    let node = NodeReach {
        ssh: Some(ssh_to_nowhere(dir.path())),
        wake: Some(WakeTarget {
            macs: vec!["02:00:00:00:00:01".parse().unwrap()],
            send_to: addr,
        }),
        ..reach("n4")
    };
    let link = Link::default();
    let r = run_on_node(&link, &node, &Action::Stop, WHO, Timing::default()).await;
    assert_eq!(r.path, Some(ActionPath::Ssh));
    assert!(!r.woke);
    assert!(
        r.error.as_deref().unwrap().contains("connecting to"),
        "{r:?}"
    );

    let link = Link {
        comes_up_after_wake: true,
        ..Default::default()
    };
    let r = run_on_node(&link, &node, &Action::Wake, WHO, Timing::default()).await;
    assert!(r.woke && r.succeeded(), "{r:?}");
    assert_eq!(received(&l).await.len(), 102);
}

#[tokio::test]
async fn a_link_lost_mid_action_continues_over_ssh_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link {
        online: true,
        fail_after: Some(1),
        ..Default::default()
    };
    let node = NodeReach {
        ssh: Some(ssh_to_nowhere(dir.path())),
        ..reach("n5")
    };
    let r = run_on_node(&link, &node, &Action::Status, WHO, Timing::default()).await;
    // One result over the link; the rest tried over SSH, which does not answer here.
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.path, Some(ActionPath::Ssh));
    assert!(
        r.error.as_deref().unwrap().contains("connecting to"),
        "{r:?}"
    );
}

#[tokio::test]
async fn an_operation_lost_in_flight_is_unknown_and_not_rerun_unless_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link {
        online: true,
        fail_after: Some(0),
        lost_after_send: true,
        ..Default::default()
    };
    let node = NodeReach {
        services: vec!["dfs".into()],
        ssh: Some(ssh_to_nowhere(dir.path())),
        ..reach("n6")
    };
    // A restart may have happened: not re-run over SSH (which would be tried, and fail here).
    let restart = Action::Service {
        service: "dfs".into(),
        action: ServiceAction::Restart,
    };
    let r = run_on_node(&link, &node, &restart, WHO, Timing::default()).await;
    assert!(!r.succeeded() && r.unknown(), "{r:?}");
    assert_eq!(r.path, Some(ActionPath::Agent));
    assert!(r.outcome_unknown[0].contains("restart dfs"), "{r:?}");
    assert!(r.error.is_none(), "{r:?}");
    // A stop is harmless twice: re-run over SSH (which does not answer here).
    let r = run_on_node(&link, &node, &Action::Stop, WHO, Timing::default()).await;
    assert_eq!(r.path, Some(ActionPath::Ssh), "{r:?}");
    assert!(r.outcome_unknown.is_empty() && !r.succeeded(), "{r:?}");
    assert!(
        r.error.as_deref().unwrap().contains("connecting to"),
        "{r:?}"
    );
}

#[tokio::test]
async fn an_action_that_means_no_operation_fails_with_a_clear_error() {
    let link = Link {
        online: true,
        ..Default::default()
    };
    let bare = NodeReach {
        services: vec![],
        ..reach("n7")
    };
    for action in [Action::Stop, Action::Restart, Action::Status, Action::Wake] {
        let r = run_on_node(&link, &bare, &action, WHO, Timing::default()).await;
        assert!(!r.succeeded(), "{action:?}: {r:?}");
        assert!(
            r.error.as_deref().unwrap().contains("nothing to do on n7"),
            "{r:?}"
        );
        assert_eq!(r.path, None);
    }
    assert!(link.calls.lock().unwrap().is_empty());
    // An empty result set is never a success, whatever produced it.
    let empty = NodeActionResult {
        node: "n".into(),
        action: "stop".into(),
        requested_by: WHO.into(),
        path: Some(ActionPath::Agent),
        woke: false,
        results: vec![],
        outcome_unknown: vec![],
        error: None,
        duration_ms: 0,
    };
    assert!(!empty.succeeded());
}

#[tokio::test]
async fn fan_out_is_bounded_ordered_and_reports_progress() {
    let link = Arc::new(Link {
        online: true,
        ..Default::default()
    });
    let nodes: Vec<NodeReach> = (0..12).map(|i| reach(&format!("node{i:02}"))).collect();
    let mut seen = Vec::new();
    let results = run_on_nodes(
        link.clone(),
        nodes,
        Action::Status,
        WHO,
        Limits {
            link: 3,
            fallback: 3,
        },
        Timing::default(),
        |i, r, done, total| {
            assert_eq!(r.node, format!("node{i:02}"));
            seen.push((r.node.clone(), done, total))
        },
    )
    .await;
    assert_eq!(results.len(), 12);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.node, format!("node{i:02}"));
        assert!(r.succeeded());
    }
    assert_eq!(seen.len(), 12);
    assert_eq!(seen.last().map(|s| (s.1, s.2)), Some((12, 12)));
    assert!(link.max_in_flight.load(Ordering::SeqCst) <= 3);
    assert_eq!(link.calls.lock().unwrap().len(), 24);
}

#[test]
fn the_table_has_one_aligned_line_per_node() {
    let ok = NodeActionResult {
        node: "storage-01".into(),
        action: "stop".into(),
        requested_by: WHO.into(),
        path: Some(ActionPath::Ssh),
        woke: false,
        results: vec![OperationResult {
            operation: Some(Operation::service("storage-client", ServiceAction::Stop)),
            outcome: Outcome::Service {
                ok: true,
                state: ServiceState::Stopped,
                message: "pid 7 stopped\nby SIGTERM".into(),
                commands: vec![],
            },
            duration_ms: 3,
        }],
        outcome_unknown: vec![],
        error: None,
        duration_ms: 5,
    };
    let failed = NodeActionResult {
        node: "n9".into(),
        path: None,
        results: vec![],
        error: Some("n9 is unreachable".into()),
        ..ok.clone()
    };
    let table = render_table(&[ok, failed]);
    assert_eq!(
        table,
        "NODE        PATH  RESULT  DETAIL\n\
         storage-01  ssh   ok      stop storage-client: pid 7 stopped by SIGTERM\n\
         n9          -     FAILED  n9 is unreachable\n"
    );
}
