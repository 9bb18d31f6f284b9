//! Link leases between controllers sharing one MariaDB database (issue 16), at the store's
//! level: claims and take-overs with epochs, a stale holder told what it lost, an offline
//! record that does not overwrite the new holder's, a controller restarting beside a live one,
//! the pusher lease held by exactly one, a lapsed lease swept once with `controller lost`, and
//! authority lost while the database does not answer and regained when it does.

use std::time::Duration;

use nodewarden_controller::store::{
    CLUSTER_OPEN_REQUEST_AGE, ClusterConfig, EventKind, EventQuery, LeaseStatus, OperationPath,
    OperationResult, Requested, Store, StoreConfig,
};

use super::support::{PrivateMariaDb, TestDb, at, node};

fn cluster(mut config: StoreConfig, id: &str, ttl: Duration) -> StoreConfig {
    config.cluster = Some(ClusterConfig {
        id: id.to_string(),
        lease_ttl: ttl,
        pusher: true,
        peer_url: None,
    });
    config
}

fn status(store: &Store) -> LeaseStatus {
    store.lease_status().expect("cluster mode").borrow().clone()
}

async fn online_in_db(store: &Store, id: &str) -> Option<bool> {
    store
        .persisted_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.info.node_id == id)
        .map(|n| n.online)
}

async fn offline_reasons(store: &Store, id: &str) -> Vec<String> {
    store
        .events(&EventQuery {
            after_id: 0,
            limit: 1000,
            node_id: Some(id.to_string()),
        })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event.kind {
            EventKind::Offline { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn leases_move_with_the_newest_connection_and_lapse_to_controller_lost() {
    let Some(db) = TestDb::mariadb().await else {
        return;
    };
    let ttl = Duration::from_millis(1500);
    let c1 = Store::open(cluster(db.config(), "c1", ttl)).await.unwrap();
    let c2 = Store::open(cluster(db.config(), "c2", ttl)).await.unwrap();
    // Exactly one of the two holds the pusher lease.
    c1.flush().await.unwrap();
    c2.flush().await.unwrap();
    assert!(status(&c1).pusher ^ status(&c2).pusher, "one pusher");

    // n1 links to c1: c1 holds it, epoch 1.
    c1.node_connected(node("n1"), at(10)).unwrap();
    c1.flush().await.unwrap();
    assert_eq!(status(&c1).held.get("n1"), Some(&1));
    // n1's newer connection on c2 takes it over (epoch 2); c1 learns it lost n1.
    c2.node_connected(node("n1"), at(20)).unwrap();
    c2.flush().await.unwrap();
    assert_eq!(status(&c2).held.get("n1"), Some(&2));
    c1.flush().await.unwrap();
    let s1 = status(&c1);
    assert!(!s1.held.contains_key("n1"));
    assert_eq!(s1.lost, vec!["n1".to_string()]);
    // c1's stale link ends: its offline record does not overwrite c2's.
    c1.node_offline("n1", at(21), "link closed").unwrap();
    c1.flush().await.unwrap();
    assert_eq!(online_in_db(&c1, "n1").await, Some(true));
    // A claim of an older connection does not take the lease back.
    c1.node_connected(node("n1"), at(15)).unwrap();
    c1.flush().await.unwrap();
    c2.flush().await.unwrap();
    assert_eq!(status(&c2).held.get("n1"), Some(&2));
    assert_eq!(status(&c2).lost, Vec::<String>::new());
    c1.node_offline("n1", at(22), "link closed").unwrap();
    c1.flush().await.unwrap();

    // A third controller starts while c2 holds n1 and n2 is online with no holder (its
    // controller's lease was released): n1 stays online, n2 is recorded offline.
    c2.node_connected(node("n2"), at(30)).unwrap();
    c2.flush().await.unwrap();
    db.execute("UPDATE node_leases SET holder = NULL WHERE node_id = 'n2'")
        .await;
    let c3 = Store::open(cluster(db.config(), "c3", ttl)).await.unwrap();
    assert_eq!(online_in_db(&c3, "n1").await, Some(true));
    assert_eq!(online_in_db(&c3, "n2").await, Some(false));

    // c2 stops renewing (as if killed): once its leases lapse, c3 sweeps n1 once, recording
    // it offline with the reason; c1 finds nothing left to sweep.
    let deadline = std::time::Instant::now() + ttl * 4;
    loop {
        c3.flush().await.unwrap();
        if online_in_db(&c3, "n1").await == Some(false) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n1's lapsed lease was never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c1.flush().await.unwrap();
    let reasons = offline_reasons(&c3, "n1").await;
    let lost: Vec<_> = reasons
        .iter()
        .filter(|r| r.starts_with("controller lost: c2"))
        .collect();
    assert_eq!(lost.len(), 1, "{reasons:?}");
    assert!(lost[0].contains("swept by c3"), "{reasons:?}");
    // The pusher lease moves on if its holder was c2; someone holds it.
    c1.flush().await.unwrap();
    c3.flush().await.unwrap();
    assert!(
        status(&c1).pusher ^ status(&c3).pusher,
        "one pusher after c2 left"
    );

    for store in [c1, c2, c3] {
        store.close().await.unwrap();
    }
    db.cleanup().await;
}

#[tokio::test]
async fn a_controller_whose_database_stops_answering_loses_its_authority() {
    let Some(mut server) = PrivateMariaDb::start().await else {
        return;
    };
    let ttl = Duration::from_millis(1200);
    let mut config = StoreConfig::new("/nonexistent/nodewarden-test");
    config.url = Some(server.url());
    config.flush_interval = Duration::from_secs(3600);
    config.retry_initial = Duration::from_millis(50);
    config.connect_timeout = Duration::from_millis(500);
    let store = Store::open(cluster(config, "c1", ttl)).await.unwrap();
    store.node_connected(node("n1"), at(1)).unwrap();
    store.flush().await.unwrap();
    let mut watch = store.lease_status().unwrap();
    assert!(watch.borrow().authority);
    assert_eq!(watch.borrow().held.len(), 1);

    server.freeze();
    let lost = tokio::time::timeout(ttl * 4, watch.wait_for(|s| !s.authority));
    // The writer retries on its own; nudge it so the test does not wait for the backoff.
    let nudge = async {
        loop {
            let _ = store.flush().await;
        }
    };
    tokio::select! {
        outcome = lost => {
            let s = outcome.expect("authority lost within four lease terms").unwrap().clone();
            assert!(s.held.is_empty());
            assert!(!s.pusher);
        }
        () = nudge => unreachable!(),
    }

    server.thaw();
    let back = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if store.flush().await.is_ok() {
                return;
            }
        }
    });
    back.await.expect("the store reaches the database again");
    let s = watch.borrow().clone();
    assert!(s.authority);
    assert_eq!(
        s.held.get("n1"),
        Some(&1),
        "the lease survived: nobody took it"
    );
    store.close().await.unwrap();
    server.stop();
}

/// A controller starting beside a live one closes as `unknown` only the requests without an
/// end that are too old to be running anywhere: a young one may be an operation another
/// controller runs now, whose real end is still to come.
#[tokio::test]
async fn a_starting_controller_leaves_another_s_running_request_open() {
    let Some(db) = TestDb::mariadb().await else {
        return;
    };
    let ttl = Duration::from_secs(5);
    let c1 = Store::open(cluster(db.config(), "c1", ttl)).await.unwrap();
    let now = std::time::SystemTime::now();
    c1.node_connected(node("n1"), now).unwrap();
    let old = now - CLUSTER_OPEN_REQUEST_AGE - Duration::from_secs(60);
    for (id, when) in [("long-dead", old), ("running", now)] {
        let request = Requested {
            operation_id: id.into(),
            actor: "erin".into(),
            action: format!("stop ({id})"),
            path: OperationPath::Agent,
            via: None,
        };
        c1.requested("n1", when, request).unwrap();
    }
    c1.flush().await.unwrap();
    let c2 = Store::open(cluster(db.config(), "c2", ttl)).await.unwrap();
    c2.flush().await.unwrap();
    let ended: Vec<(Option<String>, bool)> = c2
        .events(&EventQuery {
            after_id: 0,
            limit: 1000,
            node_id: Some("n1".into()),
        })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event.kind {
            EventKind::Operation(op) => Some((
                op.operation_id,
                matches!(op.result, OperationResult::Unknown { .. }),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![(Some("long-dead".to_string()), true)]);

    // The fleet's sweep (run by the pusher, cluster.rs) finds what has grown old since, and
    // only that: not the young request, not the one already closed.
    let request = Requested {
        operation_id: "since-dead".into(),
        actor: "erin".into(),
        action: "stop (since-dead)".into(),
        path: OperationPath::Agent,
        via: None,
    };
    c1.requested("n1", old, request).unwrap();
    c1.flush().await.unwrap();
    let stale = c2.reader().stale_requests().await.unwrap();
    let ids: Vec<&str> = stale
        .iter()
        .map(|(_, _, r)| r.operation_id.as_str())
        .collect();
    assert_eq!(ids, ["since-dead"]);
    assert_eq!(c2.handle().close_stale_requests(stale), 1);
    c2.flush().await.unwrap();
    assert!(c2.reader().stale_requests().await.unwrap().is_empty());
    c1.close().await.unwrap();
    c2.close().await.unwrap();
}
