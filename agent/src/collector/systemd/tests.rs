//! The systemd collector against a fake `org.freedesktop.systemd1` on a private bus of the
//! test's own (`dbus-daemon`): systemd is not PID 1 on the machines these tests run on. The fake
//! answers `ListUnits` and `Properties.Get` from `tests/fixtures/hw-services/systemd/bus.json`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use zbus::{Message, OwnedObjectPath};

use super::*;
use crate::collector::dbus::testbus::{self, Answer, PrivateBus};
use crate::collector::testing::{assert_golden, fixture, render};
use crate::collector::{Paths, dbus::Target};

fn recording() -> Json {
    let path = fixture("hw-services/systemd/bus.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn units(recording: &Json) -> Vec<UnitStatus> {
    let s = |u: &Json, i: usize| u[i].as_str().unwrap().to_string();
    let p = |u: &Json, i: usize| OwnedObjectPath::try_from(s(u, i)).unwrap();
    recording["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                s(u, 0),
                s(u, 1),
                s(u, 2),
                s(u, 3),
                s(u, 4),
                s(u, 5),
                p(u, 6),
                u[7].as_u64().unwrap() as u32,
                s(u, 8),
                p(u, 9),
            )
        })
        .collect()
}

/// What the fake was asked, to check that no unit outside the filter is queried.
type Calls = Arc<Mutex<Vec<String>>>;

/// A private bus with a fake systemd serving `recording`; `None` when the test is skipped.
fn fake_systemd(recording: Json) -> Option<(PrivateBus, Calls)> {
    let bus = testbus::start()?;
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    testbus::serve(
        &bus.address,
        "org.freedesktop.systemd1",
        move |path, interface, member, msg: &Message| match (interface, member) {
            ("org.freedesktop.systemd1.Manager", "ListUnits") if path == MANAGER_PATH => {
                seen.lock().unwrap().push("ListUnits".into());
                if recording.get("fail_list_units").is_some() {
                    return Answer::Error(
                        "org.freedesktop.DBus.Error.AccessDenied",
                        "denied".into(),
                    );
                }
                Answer::reply(units(&recording))
            }
            ("org.freedesktop.DBus.Properties", "Get") => {
                let (iface, prop): (String, String) = msg.body().deserialize().unwrap();
                seen.lock().unwrap().push(format!("{path} {iface}.{prop}"));
                let typed = if path == MANAGER_PATH && iface == MANAGER {
                    recording["manager"].get(&prop)
                } else {
                    recording["objects"]
                        .get(path)
                        .and_then(|o| o.get(&iface))
                        .and_then(|i| i.get(&prop))
                };
                match typed.and_then(testbus::json_variant) {
                    Some(v) => Answer::reply(v),
                    None => Answer::Error(
                        "org.freedesktop.DBus.Error.UnknownProperty",
                        format!("Unknown interface {iface} or property {prop}."),
                    ),
                }
            }
            _ => Answer::Error("org.freedesktop.DBus.Error.UnknownMethod", "unknown".into()),
        },
    );
    Some((bus, calls))
}

fn collector_at(args: &[&str], address: &str) -> Box<dyn Collector> {
    let matches = crate::cli::command()
        .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
        .unwrap();
    let paths = Paths::default();
    let ctx = BuildContext {
        matches: &matches,
        paths: &paths,
    };
    let mut c = collector(&ctx).unwrap();
    c.bus = Bus::new(Target::Address(address.to_string()));
    Box::new(c)
}

fn build_with_system_bus() -> SystemdCollector {
    let matches = crate::cli::command()
        .try_get_matches_from(["nodewarden-agent"])
        .unwrap();
    let paths = Paths::default();
    collector(&BuildContext {
        matches: &matches,
        paths: &paths,
    })
    .unwrap()
}

fn golden(name: &str) -> std::path::PathBuf {
    fixture("hw-services/golden").join(name)
}

#[test]
fn default_flags() {
    let Some((bus, calls)) = fake_systemd(recording()) else {
        return;
    };
    let text = render(
        "systemd",
        collector_at(&["--collector.systemd"], &bus.address),
        Paths::default(),
    );
    assert_golden(&golden("systemd.prom"), &text);
    // Excluded units (mounts, devices, scopes, slices) and not-found ones are never queried.
    let calls = calls.lock().unwrap();
    for unit in ["_2d_2emount", "init_2escope", "plymouth"] {
        assert!(
            !calls.iter().any(|c| c.contains(unit)),
            "{unit} queried: {calls:?}"
        );
    }
}

#[test]
fn every_metric_and_no_exclude() {
    let Some((bus, _)) = fake_systemd(recording()) else {
        return;
    };
    let args = [
        "--collector.systemd",
        "--collector.systemd.enable-task-metrics",
        "--collector.systemd.enable-restarts-metrics",
        "--collector.systemd.enable-start-time-metrics",
        "--collector.systemd.unit-exclude=",
    ];
    let text = render(
        "systemd",
        collector_at(&args, &bus.address),
        Paths::default(),
    );
    assert_golden(&golden("systemd-all.prom"), &text);
}

#[test]
fn include_pattern_is_anchored_and_old_flag_applies() {
    let Some((bus, _)) = fake_systemd(recording()) else {
        return;
    };
    // `ssh` alone matches no unit: the pattern is anchored.
    let text = render(
        "systemd",
        collector_at(
            &["--collector.systemd.unit-include=ssh|cron.service"],
            &bus.address,
        ),
        Paths::default(),
    );
    let states: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("node_systemd_unit_state{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(
        states,
        ["node_systemd_unit_state{name=\"cron.service\",state=\"active\",type=\"simple\"} 1"]
    );
    // The deprecated alias replaces the exclude default.
    let text = render(
        "systemd",
        collector_at(
            &["--collector.systemd.unit-blacklist=.*\\.(service|socket|timer)"],
            &bus.address,
        ),
        Paths::default(),
    );
    assert!(text.contains("node_systemd_unit_state{name=\"multi-user.target\""));
    assert!(!text.contains("name=\"ssh.service\""));
    assert!(!text.contains("node_systemd_socket_"));
}

#[test]
fn conflicting_alias_is_a_build_error() {
    let matches = crate::cli::command()
        .try_get_matches_from([
            "nodewarden-agent",
            "--collector.systemd.unit-whitelist=a",
            "--collector.systemd.unit-include=b",
        ])
        .unwrap();
    let paths = Paths::default();
    let ctx = BuildContext {
        matches: &matches,
        paths: &paths,
    };
    assert!(collector(&ctx).is_err());
}

#[test]
fn list_units_failure_keeps_version_and_virtualization() {
    let mut recording = recording();
    recording["fail_list_units"] = Json::Bool(true);
    let Some((bus, _)) = fake_systemd(recording) else {
        return;
    };
    let text = render(
        "systemd",
        collector_at(&["--collector.systemd"], &bus.address),
        Paths::default(),
    );
    assert_golden(&golden("systemd-list-units-denied.prom"), &text);
}

#[test]
fn old_systemd_without_timers_or_system_state() {
    let mut recording = recording();
    recording["manager"]["Version"] = serde_json::json!(["s", "systemd 208"]);
    recording["manager"]
        .as_object_mut()
        .unwrap()
        .remove("Virtualization");
    let Some((bus, _)) = fake_systemd(recording) else {
        return;
    };
    let text = render(
        "systemd",
        collector_at(&["--collector.systemd"], &bus.address),
        Paths::default(),
    );
    assert!(text.contains("node_systemd_version{version=\"systemd 208\"} 208\n"));
    assert!(text.contains("node_systemd_virtualization_info{virtualization_type=\"unknown\"} 1\n"));
    assert!(!text.contains("node_systemd_timer_last_trigger_seconds"));
    assert!(!text.contains("node_systemd_system_running"));
    assert!(text.contains("node_scrape_collector_success{collector=\"systemd\"} 1\n"));
}

#[test]
fn no_bus_is_a_failed_scrape_with_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}/none", dir.path().display());
    let text = render(
        "systemd",
        collector_at(&["--collector.systemd"], &address),
        Paths::default(),
    );
    assert!(!text.contains("node_systemd_"), "{text}");
    assert!(text.contains("node_scrape_collector_success{collector=\"systemd\"} 0\n"));
}

#[test]
fn connection_is_kept_and_reopened_after_the_bus_restarts() {
    let Some((bus, _)) = fake_systemd(recording()) else {
        return;
    };
    let _env = testbus::ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the tests that set the variable hold ENV_LOCK; the other readers are std's.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address) };
    let mut c = build_with_system_bus();
    let scrape = |c: &mut SystemdCollector| {
        let mut readings = Readings::default();
        zbus::block_on(async {
            let conn = c.bus.connection().await?;
            c.read(&conn, &mut readings).await
        })
        .map(|()| readings.states.len())
    };
    assert_eq!(scrape(&mut c).unwrap(), 15);
    let first = c.bus.kept_unique_name();
    assert_eq!(scrape(&mut c).unwrap(), 15);
    assert_eq!(c.bus.kept_unique_name(), first, "connection reused");
    drop(bus);
    let Some((bus, _)) = fake_systemd(recording()) else {
        return;
    };
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address) };
    // The old bus is gone: the kept connection is seen closed (or fails once and is dropped).
    let mut result = scrape(&mut c);
    if let Err(e) = &result {
        c.bus.failed(e);
        result = scrape(&mut c);
    }
    unsafe { std::env::remove_var("DBUS_SYSTEM_BUS_ADDRESS") };
    assert_eq!(result.unwrap(), 15);
}

#[test]
fn unit_paths_as_go_systemd_escapes_them() {
    let base = "/org/freedesktop/systemd1/unit/";
    for (name, escaped) in [
        ("ssh.service", "ssh_2eservice"),
        ("getty@tty1.service", "getty_40tty1_2eservice"),
        ("-.mount", "_2d_2emount"),
        ("e2scrub_all.timer", "e2scrub_5fall_2etimer"),
        ("1password.service", "_31password_2eservice"),
        ("", "_"),
    ] {
        assert_eq!(unit_path(name), format!("{base}{escaped}"));
    }
}

#[test]
fn versions_as_node_exporter_parses_them() {
    assert_eq!(
        parse_version("252.33-1~deb12u1"),
        (252.33, "252.33-1~deb12u1".into())
    );
    assert_eq!(parse_version("systemd 208"), (208.0, "systemd 208".into()));
    assert_eq!(parse_version("v12 255~rc1"), (255.0, "v12 255~rc1".into()));
    assert_eq!(parse_version("257."), (257.0, "257.".into()));
    assert_eq!(parse_version("v12"), (0.0, String::new()));
    assert_eq!(parse_version(""), (0.0, String::new()));
}

/// As the agent runs them: each scrape on whichever thread of the blocking pool is free, the
/// connection kept between them.
#[test]
fn scrapes_from_changing_threads() {
    let Some((bus, calls)) = fake_systemd(recording()) else {
        return;
    };
    let scraper = std::sync::Arc::new(crate::scrape::Scraper::new(
        Paths::default(),
        vec![(
            "systemd",
            collector_at(&["--collector.systemd"], &bus.address),
        )],
    ));
    for _ in 0..30 {
        let s = scraper.clone();
        let started = Instant::now();
        let body = std::thread::spawn(move || s.scrape(false).unwrap().body)
            .join()
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("node_scrape_collector_success{collector=\"systemd\"} 1\n"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == "ListUnits")
            .count(),
        30
    );
}
