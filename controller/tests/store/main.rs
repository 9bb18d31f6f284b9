//! The store suite: every case runs against SQLite (a temporary data directory) and against
//! MariaDB (a fresh database on the server scripts/test.sh started). The outage test runs a
//! private MariaDB server that it kills and starts again.

mod support;

use std::time::Duration;

use nodewarden_controller::store::{
    AddressRecord, Event, EventKind, EventQuery, InterfaceRecord, NodeRecord, Operation,
    OperationPath, OperationResult, Queued, Requested, Store, StoreConfig, StoreError,
};
use support::{TestDb, at, device, node, operation};

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = super::TestDb::sqlite();
                    super::cases::$case(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = super::TestDb::mariadb().await else { return };
                    super::cases::$case(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

suite!(
    state_and_events_round_trip,
    reports_are_coalesced_and_batched,
    restart_finds_nodes_and_history_all_offline,
    a_full_buffer_keeps_operations_and_sheds_transitions,
    an_unfinished_operation_is_unknown_after_a_restart,
    a_first_release_store_migrates_with_its_data,
    a_refused_schema_is_a_clear_error,
    a_backlog_is_written_in_bounded_flushes,
    recent_events_come_newest_first,
);

async fn all_events(store: &Store) -> Vec<Event> {
    let records = store
        .events(&EventQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .expect("read events");
    assert!(
        records.windows(2).all(|w| w[0].id < w[1].id),
        "events come in id order"
    );
    records.into_iter().map(|r| r.event).collect()
}

async fn persisted_nodes(store: &Store) -> Vec<NodeRecord> {
    let mut nodes = store.persisted_nodes().await.expect("read nodes");
    nodes.sort_by(|a, b| a.info.node_id.cmp(&b.info.node_id));
    nodes
}

fn summary(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Online => format!("{} online", e.node_id),
            EventKind::Offline { .. } => format!("{} offline", e.node_id),
            EventKind::Operation(op) => format!("{} {}", e.node_id, op.action),
            EventKind::Requested(r) => format!("{} requested {}", e.node_id, r.action),
            EventKind::DeviceConflict { device_id, owner } => {
                format!("{} conflict {device_id} of {owner}", e.node_id)
            }
            EventKind::Alert(a) => format!("{} alert {}", e.node_id, a.alertname),
        })
        .collect()
}

mod cases {
    use super::*;

    /// What the HTTP API's `GET /api/v1/events` reads: the last events, newest first, through
    /// a reader that shares the store's pool.
    pub async fn recent_events_come_newest_first(db: &TestDb) {
        let store = Store::open(db.config()).await.expect("open");
        let reader = store.reader();
        store.node_connected(node("n1"), at(0)).unwrap();
        store.node_connected(node("n2"), at(1)).unwrap();
        for (i, who) in ["alice", "bob", "carol"].into_iter().enumerate() {
            store
                .operation(
                    "n1",
                    at(2 + i as u64),
                    operation(who, "wake", OperationPath::Agent, true),
                )
                .unwrap();
        }
        store.node_offline("n2", at(9), "link closed").unwrap();
        store.flush().await.expect("flush");

        let recent = |node_id: Option<&str>, limit: u32| {
            let reader = reader.clone();
            let query = EventQuery {
                node_id: node_id.map(str::to_string),
                limit,
                ..Default::default()
            };
            async move {
                let records = reader.recent_events(&query).await.expect("read");
                assert!(
                    records.windows(2).all(|w| w[0].id > w[1].id),
                    "newest first"
                );
                summary(&records.into_iter().map(|r| r.event).collect::<Vec<_>>())
            }
        };
        assert_eq!(recent(None, 3).await, ["n2 offline", "n1 wake", "n1 wake"]);
        assert_eq!(recent(Some("n2"), 10).await, ["n2 offline", "n2 online"]);
        assert_eq!(recent(Some("n1"), 1).await, ["n1 wake"]);
        assert!(recent(Some("n3"), 10).await.is_empty());
        // The oldest-first read is unchanged.
        let first = reader
            .events(&EventQuery {
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(summary(&[first[0].event.clone()]), ["n1 online"]);
        store.close().await.expect("close");
    }

    pub async fn state_and_events_round_trip(db: &TestDb) {
        let store = Store::open(db.config()).await.expect("open");
        store.node_connected(node("n1"), at(0)).unwrap();
        store.node_connected(node("n2"), at(1)).unwrap();
        store.node_seen("n1", at(5)).unwrap();
        store.device_report(device(7, "n1", 100, 5)).unwrap();
        store.device_report(device(8, "n2", 200, 6)).unwrap();
        store
            .operation(
                "n1",
                at(6),
                operation("alice", "restart storage client", OperationPath::Ssh, true),
            )
            .unwrap();
        store
            .operation(
                "n2",
                at(7),
                operation("bob", "wake", OperationPath::WakeOnLan, false),
            )
            .unwrap();
        store.node_offline("n2", at(8), "link closed").unwrap();
        store.flush().await.expect("flush");

        let nodes = persisted_nodes(&store).await;
        assert_eq!(nodes, store.nodes(), "the database has what memory has");
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].info, node("n1"));
        assert!(nodes[0].online);
        assert_eq!(nodes[0].first_seen, at(0));
        assert_eq!(nodes[0].last_seen, at(5));
        assert!(!nodes[1].online);
        let mut devices = store.persisted_devices().await.unwrap();
        devices.sort_by_key(|d| d.device_id);
        assert_eq!(
            devices,
            vec![device(7, "n1", 100, 5), device(8, "n2", 200, 6)]
        );

        let events = all_events(&store).await;
        assert_eq!(
            summary(&events),
            vec![
                "n1 online",
                "n2 online",
                "n1 restart storage client",
                "n2 wake",
                "n2 offline"
            ]
        );
        assert_eq!(
            events[3],
            Event {
                at: at(7),
                node_id: "n2".into(),
                kind: EventKind::Operation(operation(
                    "bob",
                    "wake",
                    OperationPath::WakeOnLan,
                    false
                )),
            }
        );
        assert_eq!(
            events[4].kind,
            EventKind::Offline {
                reason: "link closed".into()
            }
        );

        let of_n2 = store
            .events(&EventQuery {
                node_id: Some("n2".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(of_n2.len(), 3);
        let after_second = store
            .events(&EventQuery {
                after_id: of_n2[0].id,
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            summary(
                &after_second
                    .into_iter()
                    .map(|r| r.event)
                    .collect::<Vec<_>>()
            ),
            vec!["n1 restart storage client", "n2 wake"]
        );
        store.close().await.expect("close");
    }

    pub async fn reports_are_coalesced_and_batched(db: &TestDb) {
        let mut config = db.config();
        config.rows_per_statement = 1000;
        let store = Store::open(config).await.expect("open");
        let mut flushes = store.flush_reports();
        for i in 0..2500 {
            let id = format!("n{i:05}");
            store.node_connected(node(&id), at(0)).unwrap();
            for t in 1..=3 {
                store.node_seen(&id, at(t)).unwrap();
                store.device_report(device(i, &id, 1000 - t, t)).unwrap();
            }
        }
        store.flush().await.expect("flush");
        let report = flushes.recv().await.expect("flush report");
        // 2500 node rows, 2500 device rows, 2500 online events, 1000 rows per statement.
        assert_eq!(report.rows, 7500);
        assert_eq!(report.statements, 9);
        assert_eq!(store.metrics().statements_last_flush.get(), 9);
        assert_eq!(store.metrics().flushes.get(), 1);

        let nodes = persisted_nodes(&store).await;
        assert_eq!(nodes.len(), 2500);
        assert!(nodes.iter().all(|n| n.last_seen == at(3) && n.online));
        let devices = store.persisted_devices().await.unwrap();
        assert_eq!(devices.len(), 2500);
        assert!(devices.iter().all(|d| d.free_bytes == 997));

        // Nothing changed: a flush writes nothing.
        store.flush().await.expect("empty flush");
        assert_eq!(store.metrics().flushes.get(), 1);
        store.close().await.expect("close");
    }

    pub async fn restart_finds_nodes_and_history_all_offline(db: &TestDb) {
        let first = Store::open(db.config()).await.expect("open");
        first.node_connected(node("n1"), at(0)).unwrap();
        first.node_connected(node("n2"), at(1)).unwrap();
        first.device_report(device(3, "n1", 42, 2)).unwrap();
        first
            .operation(
                "n1",
                at(3),
                operation("carol", "delete fragment 1201", OperationPath::Agent, true),
            )
            .unwrap();
        first.node_offline("n2", at(4), "agent exited").unwrap();
        first.close().await.expect("close");

        let second = Store::open(db.config()).await.expect("reopen");
        let nodes = second.nodes();
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| !n.online), "offline until reconnect");
        assert_eq!(nodes[0].info, node("n1"));
        assert_eq!(nodes[0].first_seen, at(0));
        assert_eq!(persisted_nodes(&second).await, nodes);
        assert_eq!(second.devices(), vec![device(3, "n1", 42, 2)]);
        let events = all_events(&second).await;
        assert_eq!(
            summary(&events),
            vec![
                "n1 online",
                "n2 online",
                "n1 delete fragment 1201",
                "n2 offline",
                "n1 offline"
            ]
        );
        match &events[4].kind {
            EventKind::Offline { reason } => assert!(reason.contains("controller started")),
            other => panic!("unexpected {other:?}"),
        }

        second.node_connected(node("n2"), at(10)).unwrap();
        second.close().await.expect("close");
        let third = Store::open(db.config()).await.expect("reopen again");
        assert!(third.nodes().iter().all(|n| !n.online));
        assert_eq!(
            summary(&all_events(&third).await)[5..],
            ["n2 online", "n2 offline"]
        );
        third.close().await.expect("close");
    }

    /// Operations are the audit log proper: transitions fill the buffer only up to a reserve,
    /// an operation sheds the oldest queued transition for room, a request that finds only
    /// operations is refused (so it is not run), and an operation's end is always taken.
    pub async fn a_full_buffer_keeps_operations_and_sheds_transitions(db: &TestDb) {
        let mut config = db.config();
        config.event_buffer = 10; // transitions may take 9
        let store = Store::open(config).await.expect("open");
        store.node_connected(node("n1"), at(0)).unwrap();
        for i in 0..4 {
            store.node_offline("n1", at(2 * i + 1), "cut").unwrap();
            store.node_connected(node("n1"), at(2 * i + 2)).unwrap();
        }
        // 9 transitions queued: the 10th is dropped.
        assert_eq!(store.events_pending(), 9);
        store.node_offline("n1", at(20), "cut").unwrap();
        assert_eq!(store.events_dropped(), 1);
        let request = |id: &str| Requested {
            operation_id: id.into(),
            actor: "dave".into(),
            action: format!("stop ({id})"),
            path: OperationPath::Agent,
            via: None,
        };
        // The reserve takes one request; the next sheds the oldest transition.
        assert_eq!(
            store.requested("n1", at(21), request("r1")).unwrap(),
            Queued::Yes
        );
        assert_eq!(
            store.requested("n1", at(22), request("r2")).unwrap(),
            Queued::Yes
        );
        assert_eq!(store.events_shed(), 1);
        assert_eq!(store.metrics().events_shed.get(), 1);
        assert_eq!(store.events_pending(), 10);
        // Requests keep shedding transitions until only operations are left...
        for i in 3..=10 {
            let id = format!("r{i}");
            assert_eq!(
                store.requested("n1", at(20 + i), request(&id)).unwrap(),
                Queued::Yes,
                "{id}"
            );
        }
        assert_eq!(store.events_shed(), 9);
        // ...then a request is refused: the caller must not run it.
        assert!(matches!(
            store.requested("n1", at(40), request("r11")).unwrap(),
            Queued::Dropped { .. }
        ));
        // Ends are always taken, past the bound.
        for i in 1..=10 {
            let mut end = operation("dave", &format!("stop (r{i})"), OperationPath::Agent, true);
            end.operation_id = Some(format!("r{i}"));
            assert_eq!(store.operation("n1", at(50 + i), end).unwrap(), Queued::Yes);
        }
        store.flush().await.expect("flush");
        assert_eq!(store.events_pending(), 0);
        let events = all_events(&store).await;
        let requested = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Requested(_)))
            .count();
        let ended = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Operation(_)))
            .count();
        assert_eq!((requested, ended), (10, 10));
        assert_eq!(events.len(), 20, "{:?}", summary(&events));
        store.close().await.expect("close");
    }

    /// An operation requested before a crash and never ended is logged as unknown at the next
    /// start, once; one that ended is left alone.
    pub async fn an_unfinished_operation_is_unknown_after_a_restart(db: &TestDb) {
        let store = Store::open(db.config()).await.expect("open");
        store.node_connected(node("n1"), at(0)).unwrap();
        for id in ["done", "cut-short"] {
            store
                .requested(
                    "n1",
                    at(1),
                    Requested {
                        operation_id: id.into(),
                        actor: "erin".into(),
                        action: format!("restart dfs ({id})"),
                        path: OperationPath::Agent,
                        via: None,
                    },
                )
                .unwrap();
        }
        let mut end = operation("erin", "restart dfs (done)", OperationPath::Agent, true);
        end.operation_id = Some("done".into());
        store.operation("n1", at(2), end).unwrap();
        store.flush().await.expect("flush");
        // Killed: no close, no end for "cut-short".
        drop(store);
        for _ in 0..2 {
            let reopened = Store::open(db.config()).await.expect("reopen");
            reopened.close().await.expect("close");
        }
        let reopened = Store::open(db.config()).await.expect("reopen");
        let events = all_events(&reopened).await;
        let unknown: Vec<&Operation> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Operation(op)
                    if matches!(op.result, OperationResult::Unknown { .. }) =>
                {
                    Some(op)
                }
                _ => None,
            })
            .collect();
        assert_eq!(unknown.len(), 1, "{:?}", summary(&events));
        assert_eq!(unknown[0].operation_id.as_deref(), Some("cut-short"));
        assert_eq!(unknown[0].actor, "erin");
        assert_eq!(unknown[0].action, "restart dfs (cut-short)");
        reopened.close().await.expect("close");
    }

    /// A store written by the first release (no services, interfaces or operation ids) opens
    /// with its rows, events and devices intact and takes the new columns from then on.
    pub async fn a_first_release_store_migrates_with_its_data(db: &TestDb) {
        db.migrate_to_first_release().await;
        for sql in [
            "INSERT INTO nodes (node_id, hostname, addresses, mac_addresses, roles, agent_version, \
             cert_fingerprint, first_seen_ms, last_seen_ms, online) VALUES ('old-1', '', \
             '[\"10.0.0.9\"]', '[]', '[\"storage\"]', '0.1.0', 'ab', 1764000000000, \
             1764000001000, TRUE)",
            "INSERT INTO storage_devices (device_id, node_id, fragment_folder, total_bytes, \
             free_bytes, fragment_count, reported_at_ms) VALUES (5, 'old-1', '/srv/5', 100, 50, 0, \
             1764000001000)",
            "INSERT INTO events (uid, at_ms, node_id, kind, actor, action, path, result, detail, \
             duration_ms) VALUES ('old-uid-1', 1764000000500, 'old-1', 'operation', 'alice', \
             'stop', 'ssh', 'ok', '', 12)",
        ] {
            db.execute(sql).await;
        }
        let store = Store::open(db.config()).await.expect("migrates");
        let old = store.node("old-1").expect("kept");
        assert_eq!(old.info.roles, ["storage"]);
        assert!(old.info.services.is_empty() && old.info.interfaces.is_empty());
        assert_eq!(store.devices()[0].node_id, "old-1");
        let events = all_events(&store).await;
        assert_eq!(summary(&events)[..2], ["old-1 stop", "old-1 offline"]);
        match &events[0].kind {
            EventKind::Operation(op) => assert_eq!(op.operation_id, None),
            other => panic!("unexpected {other:?}"),
        }
        // The new columns are written and read back.
        let mut info = node("old-1");
        info.interfaces = vec![InterfaceRecord {
            name: "eth0".into(),
            mac: Some("52:54:00:00:00:05".into()),
            addresses: vec![AddressRecord {
                address: "10.0.0.9".into(),
                prefix_len: 24,
                broadcast: Some("10.0.0.255".into()),
            }],
        }];
        store.node_connected(info.clone(), at(100)).unwrap();
        store.close().await.expect("close");
        let reopened = Store::open(db.config()).await.expect("reopen");
        let back = reopened.node("old-1").unwrap().info;
        assert_eq!(back.services, ["dfs-client"]);
        assert_eq!(back.interfaces, info.interfaces);
        reopened.close().await.expect("close");
    }

    pub async fn a_backlog_is_written_in_bounded_flushes(db: &TestDb) {
        let mut config = db.config();
        config.rows_per_statement = 2; // at most 10 statements, 20 events, per flush
        let store = Store::open(config).await.expect("open");
        let mut flushes = store.flush_reports();
        store.node_connected(node("n1"), at(0)).unwrap();
        for i in 0..54 {
            store
                .operation(
                    "n1",
                    at(i + 1),
                    operation("erin", &format!("op{i}"), OperationPath::Agent, true),
                )
                .unwrap();
        }
        store.flush().await.expect("flush");
        tokio::time::timeout(Duration::from_secs(30), store.wait_persisted())
            .await
            .expect("the backlog drains on its own")
            .unwrap();
        let mut events_per_flush = Vec::new();
        while let Ok(report) = flushes.try_recv() {
            assert!(report.statements <= 11, "{report:?}");
            events_per_flush.push(report.rows);
        }
        // 55 events (online + 54 operations), 20 a flush; the node row rides in the first.
        assert_eq!(events_per_flush, vec![21, 20, 15]);
        let events = all_events(&store).await;
        assert_eq!(events.len(), 55);
        assert_eq!(summary(&events)[54], "n1 op53");

        // Closing writes a whole backlog too.
        for i in 0..45 {
            store
                .operation(
                    "n1",
                    at(100 + i),
                    operation("erin", "late", OperationPath::Ssh, true),
                )
                .unwrap();
        }
        store.close().await.expect("close");
        let reopened = Store::open(db.config()).await.expect("reopen");
        assert_eq!(all_events(&reopened).await.len(), 55 + 45 + 1); // + restart offline
        reopened.close().await.expect("close");
    }

    pub async fn a_refused_schema_is_a_clear_error(db: &TestDb) {
        db.execute("CREATE TABLE nodes (something_else INTEGER)")
            .await;
        let error = Store::open(db.config())
            .await
            .err()
            .expect("a conflicting table must stop start-up");
        let text = error.to_string();
        assert!(matches!(error, StoreError::Open { .. }), "{text}");
        assert!(text.contains("refused the schema"), "{text}");
    }
}

#[tokio::test]
async fn unreachable_mysql_is_a_clear_error_naming_the_url_without_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut config = StoreConfig::new("/nonexistent");
    config.url = Some(format!("mysql://ops:hunter2@127.0.0.1:{port}/fleet"));
    config.connect_timeout = Duration::from_secs(2);
    let text = Store::open(config)
        .await
        .err()
        .expect("no server")
        .to_string();
    assert!(
        text.contains(&format!("mysql://ops:***@127.0.0.1:{port}/fleet")),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn a_url_that_is_not_mysql_is_refused() {
    let mut config = StoreConfig::new("/nonexistent");
    config.url = Some("postgres://ops:hunter2@db/fleet".into());
    let error = Store::open(config).await.err().expect("refused");
    assert!(matches!(error, StoreError::Config(_)));
    assert!(!error.to_string().contains("hunter2"));
}

#[tokio::test]
async fn sqlite_in_an_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let text = Store::open(StoreConfig::new(&file))
        .await
        .err()
        .expect("data dir is a file")
        .to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
}

#[tokio::test]
async fn sqlite_is_the_default_in_the_data_dir_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("state");
    let store = Store::open(StoreConfig::new(&data_dir))
        .await
        .expect("open");
    assert_eq!(
        store.database(),
        format!("sqlite://{}", data_dir.join("nodewarden.db").display())
    );
    store.close().await.unwrap();
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.join("nodewarden.db"));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn mariadb_wrong_password_and_unknown_database_are_clear_errors() {
    let Some(server_url) = support::service("NW_TEST_MYSQL_URL") else {
        return;
    };
    let wrong = server_url.replacen(":nodewarden@", ":not-the-password@", 1);
    assert_ne!(
        wrong, server_url,
        "expected the services.sh user in {server_url}"
    );
    let mut config = StoreConfig::new("/nonexistent");
    config.url = Some(format!("{wrong}/fleet"));
    let text = Store::open(config.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains("Access denied"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    config.url = Some(format!(
        "{server_url}/nw_missing_{}",
        support::random_suffix()
    ));
    let text = Store::open(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains("Unknown database"), "{text}");
    assert!(!text.contains(":nodewarden@"), "{text}");
}

mod leases;
mod outage;
mod tls;

/// SQLite serves one controller: a second store on the same file is refused with a message that
/// names the holder and the way out, and taken once the first is gone.
#[tokio::test]
async fn a_second_controller_on_the_same_sqlite_file_is_refused() {
    let db = TestDb::sqlite();
    let first = Store::open(db.config()).await.expect("the first store");
    let Err(StoreError::Open { message, .. }) = Store::open(db.config()).await else {
        panic!("a second store on the same SQLite file was opened");
    };
    assert!(
        message.contains(&format!("pid {}", std::process::id()))
            && message.contains("MySQL/MariaDB"),
        "{message}"
    );
    first.close().await.expect("closed");
    let again = Store::open(db.config())
        .await
        .expect("the file is free once the first store is gone");
    again.close().await.expect("closed");
    db.cleanup().await;
}
