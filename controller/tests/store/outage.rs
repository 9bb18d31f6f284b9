//! MariaDB goes away while agents report and operations run, and comes back: the final node
//! and device states and every event, in order, end up in the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewarden_controller::store::{
    Event, EventKind, OperationPath, Queued, Store, StoreConfig, StoreHandle,
};
use tokio::sync::watch;

use super::support::{PRIVATE_PASSWORD, PrivateMariaDb, device, node, operation};
use super::{all_events, persisted_nodes};

const NODES: usize = 20;

fn t(step: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_764_000_000_000 + step)
}

/// Simulated agents and operators: every step a node reports (seen + device), every 7th an
/// operation runs, every 11th a node drops off or comes back. Returns the events it caused.
async fn feed(
    store: StoreHandle,
    stop: Arc<AtomicBool>,
    progress: watch::Sender<u64>,
    mut online: HashMap<String, bool>,
) -> Vec<Event> {
    let mut expected = Vec::new();
    let mut step: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let index = (step as usize) % NODES;
        let id = format!("node-{index:02}");
        let now = t(step);
        if online[&id] {
            store.node_seen(&id, now).unwrap();
        }
        store
            .device_report(device(index as i64, &id, 1_000_000 - step, step))
            .unwrap();
        if step.is_multiple_of(7) {
            let op = operation(
                "ops-team",
                &format!("op-{step}"),
                OperationPath::Agent,
                step.is_multiple_of(2),
            );
            assert_eq!(store.operation(&id, now, op.clone()).unwrap(), Queued::Yes);
            expected.push(Event {
                at: now,
                node_id: id.clone(),
                kind: EventKind::Operation(op),
            });
        }
        if step.is_multiple_of(11) {
            let is_online = online[&id];
            let kind = if is_online {
                store.node_offline(&id, now, "heartbeat timeout").unwrap();
                EventKind::Offline {
                    reason: "heartbeat timeout".into(),
                }
            } else {
                store.node_connected(node(&id), now).unwrap();
                EventKind::Online
            };
            online.insert(id.clone(), !is_online);
            expected.push(Event {
                at: now,
                node_id: id,
                kind,
            });
        }
        progress.send_replace(step);
        // Pacing for the simulated fleet, not synchronisation.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_no_state_and_no_event() {
    let Some(mut server) = PrivateMariaDb::start().await else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(data_dir.path());
    config.url = Some(server.url());
    config.flush_interval = Duration::from_millis(100);
    config.retry_initial = Duration::from_millis(100);
    config.retry_max = Duration::from_millis(800);
    config.connect_timeout = Duration::from_secs(1);
    let store = Store::open(config).await.expect("open");

    let mut expected = Vec::new();
    let mut online = HashMap::new();
    for i in 0..NODES {
        let id = format!("node-{i:02}");
        store.node_connected(node(&id), t(0)).unwrap();
        expected.push(Event {
            at: t(0),
            node_id: id.clone(),
            kind: EventKind::Online,
        });
        online.insert(id, true);
    }
    store.flush().await.expect("first flush");

    let stop = Arc::new(AtomicBool::new(false));
    let (progress_tx, mut progress) = watch::channel(0u64);
    let feeder = tokio::spawn(feed(store.handle(), stop.clone(), progress_tx, online));
    let mut advance = async |steps: u64| {
        let from = *progress.borrow();
        tokio::time::timeout(
            Duration::from_secs(30),
            progress.wait_for(|s| *s >= from + steps),
        )
        .await
        .expect("feeder stalled")
        .expect("feeder ended");
    };

    advance(50).await;
    tokio::time::timeout(Duration::from_secs(10), store.wait_persisted())
        .await
        .expect("flushes while the database is up")
        .unwrap();

    server.stop();
    let failed = store.flush().await.expect_err("the database is down");
    assert!(!failed.to_string().contains(PRIVATE_PASSWORD), "{failed}");
    advance(300).await; // the outage lasts while agents report and operations run
    assert_eq!(store.metrics().database_up.get(), 0);
    assert!(store.metrics().flush_errors.get() >= 1);
    assert!(store.events_pending() > 0, "events wait for the database");

    server.resume().await;
    advance(50).await;
    stop.store(true, Ordering::Relaxed);
    expected.extend(feeder.await.unwrap());
    tokio::time::timeout(Duration::from_secs(60), store.wait_persisted())
        .await
        .expect("everything written after the database returned")
        .unwrap();

    assert_eq!(store.metrics().database_up.get(), 1);
    assert_eq!(store.events_dropped(), 0);
    assert_eq!(store.events_pending(), 0);
    assert_eq!(
        persisted_nodes(&store).await,
        store.nodes(),
        "final node states"
    );
    let mut devices = store.persisted_devices().await.unwrap();
    devices.sort_by_key(|d| d.device_id);
    assert_eq!(devices, store.devices(), "final device states");
    let events = all_events(&store).await;
    assert!(expected.len() > 40, "the feeder produced events");
    assert_eq!(events.len(), expected.len(), "no event lost or doubled");
    assert_eq!(events, expected, "every event, in order");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_times_out_and_loses_nothing() {
    let Some(mut server) = PrivateMariaDb::start().await else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(data_dir.path());
    config.url = Some(server.url());
    config.flush_interval = Duration::from_secs(3600);
    config.retry_initial = Duration::from_millis(100);
    config.retry_max = Duration::from_millis(500);
    // The write timeout, not the pool's, must be what gives up.
    config.connect_timeout = Duration::from_secs(5);
    config.write_timeout = Duration::from_secs(1);
    let store = Store::open(config).await.expect("open");
    let mut expected = Vec::new();
    for i in 0..5 {
        let id = format!("node-{i:02}");
        store.node_connected(node(&id), t(0)).unwrap();
        expected.push(Event {
            at: t(0),
            node_id: id,
            kind: EventKind::Online,
        });
    }
    store.flush().await.expect("first flush");

    server.freeze();
    for step in 1..=10 {
        let op = operation("ops-team", &format!("op-{step}"), OperationPath::Ssh, true);
        store.operation("node-01", t(step), op.clone()).unwrap();
        store.node_seen("node-02", t(step)).unwrap();
        expected.push(Event {
            at: t(step),
            node_id: "node-01".into(),
            kind: EventKind::Operation(op),
        });
    }
    let started = std::time::Instant::now();
    let failed = store.flush().await.expect_err("nothing answers");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the flush gave up after {:?}: {failed}",
        started.elapsed()
    );
    assert!(!failed.to_string().contains(PRIVATE_PASSWORD), "{failed}");
    assert!(failed.to_string().contains("write_timeout"), "{failed}");

    server.thaw();
    tokio::time::timeout(Duration::from_secs(30), store.wait_persisted())
        .await
        .expect("retried on its own once the server answered")
        .unwrap();
    assert_eq!(
        all_events(&store).await,
        expected,
        "every event, once, in order"
    );
    assert_eq!(persisted_nodes(&store).await, store.nodes());

    // Closing while the database is away says what was not written.
    server.stop();
    let op = operation("ops-team", "last words", OperationPath::Ssh, true);
    store.operation("node-01", t(99), op).unwrap();
    let error = store.close().await.expect_err("nothing to write to");
    assert!(
        error.to_string().contains("1 events not written"),
        "{error}"
    );
}
