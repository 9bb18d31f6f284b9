//! `logind`: sessions registered in systemd-logind, by seat, remoteness, type and class, read
//! over D-Bus (`org.freedesktop.login1` on the system bus) as node_exporter 1.12.1 does:
//! `Manager.ListSeats`, `Manager.ListSessions`, then each session's `Remote`, `Type` and `Class`
//! properties. Every combination of the known values (and each seat plus the empty seat of
//! remote sessions) is reported, zero or not; unknown types and classes count as "other".
//!
//! Decisions: the connection is kept between scrapes ([`super::dbus`]; node_exporter opens one
//! per scrape). A session whose properties cannot be read (it ended meanwhile) is left out, as
//! in node_exporter. Samples come out sorted by label values, labels in name order, as
//! node_exporter's registry writes them.

use std::collections::HashMap;

use super::dbus::{self, Bus, DbusError, Target};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "logind",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(LogindCollector {
        bus: Bus::new(Target::System {
            fallback_private: false,
        }),
    }))
}

const DEST: &str = "org.freedesktop.login1";
const PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";

// As of systemd v229; anything else is "other".
const REMOTE_VALUES: [&str; 2] = ["true", "false"];
const TYPE_VALUES: [&str; 7] = [
    "other",
    "unspecified",
    "tty",
    "x11",
    "wayland",
    "mir",
    "web",
];
const CLASS_VALUES: [&str; 5] = ["other", "user", "greeter", "lock-screen", "background"];

struct LogindCollector {
    bus: Bus,
}

/// (seat, remote, type, class) of a session.
type SessionKey = (String, String, String, String);

fn known_or_other(value: String, known: &[&str]) -> String {
    if known.contains(&value.as_str()) {
        value
    } else {
        "other".to_string()
    }
}

/// What one scrape read: the seats (with "" last) and the session counts.
async fn read(
    conn: &zbus::Connection,
) -> Result<(Vec<String>, HashMap<SessionKey, f64>), DbusError> {
    let seats: Vec<(String, zbus::OwnedObjectPath)> =
        dbus::call(conn, DEST, PATH, MANAGER, "ListSeats").await?;
    let mut seats: Vec<String> = seats.into_iter().map(|(id, _)| id).collect();
    // Always the empty seat, that of remote sessions such as SSH.
    seats.push(String::new());
    let sessions: Vec<(String, u32, String, String, zbus::OwnedObjectPath)> =
        dbus::call(conn, DEST, PATH, MANAGER, "ListSessions").await?;
    let mut counts: HashMap<SessionKey, f64> = HashMap::new();
    for (id, _, _, seat, path) in sessions {
        match session(conn, path.as_str()).await {
            Ok((remote, kind, class)) => {
                *counts.entry((seat, remote, kind, class)).or_insert(0.0) += 1.0;
            }
            Err(e) if e.breaks_connection() => return Err(e),
            Err(e) => tracing::debug!(session = id, error = %e, "skipped a logind session"),
        }
    }
    Ok((seats, counts))
}

async fn session(
    conn: &zbus::Connection,
    path: &str,
) -> Result<(String, String, String), DbusError> {
    let remote = dbus::get_property(conn, DEST, path, SESSION, "Remote").await?;
    // godbus's Variant.String(): "true"/"false" for a boolean; anything else matches no value.
    let remote = match &*remote {
        zbus::Variant::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    };
    let kind = dbus::get_property(conn, DEST, path, SESSION, "Type").await?;
    let kind = dbus::as_string(&kind, "Type")?;
    let class = dbus::get_property(conn, DEST, path, SESSION, "Class").await?;
    let class = dbus::as_string(&class, "Class")?;
    Ok((
        remote,
        known_or_other(kind, &TYPE_VALUES),
        known_or_other(class, &CLASS_VALUES),
    ))
}

impl Collector for LogindCollector {
    fn update(
        &mut self,
        _ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let result = zbus::block_on(async {
            let conn = self.bus.connection().await?;
            read(&conn).await
        });
        let (mut seats, counts) = match result {
            Ok(read) => read,
            Err(e) => {
                self.bus.failed(&e);
                return Err(e.into_collector(PATH));
            }
        };
        // Sorted as node_exporter's registry sorts them: by class, remote, seat, type.
        seats.sort();
        let sorted = |values: &[&'static str]| {
            let mut v = values.to_vec();
            v.sort_unstable();
            v
        };
        let mut family = out.family(
            "node_logind_sessions",
            "Number of sessions registered in logind.",
            Kind::Gauge,
        )?;
        let mut key: SessionKey = Default::default();
        for class in sorted(&CLASS_VALUES) {
            for remote in sorted(&REMOTE_VALUES) {
                for seat in &seats {
                    for kind in sorted(&TYPE_VALUES) {
                        key.0.clone_from(seat);
                        key.1.replace_range(.., remote);
                        key.2.replace_range(.., kind);
                        key.3.replace_range(.., class);
                        let count = counts.get(&key).copied().unwrap_or(0.0);
                        family.sample(
                            &[
                                ("class", class),
                                ("remote", remote),
                                ("seat", seat),
                                ("type", kind),
                            ],
                            count,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value as Json;
    use zbus::{Message, OwnedObjectPath};

    use super::*;
    use crate::collector::Paths;
    use crate::collector::dbus::testbus::{self, Answer};
    use crate::collector::testing::{assert_golden, fixture, render};

    fn recording() -> Json {
        let path = fixture("hw-services/logind/bus.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn path(v: &Json) -> OwnedObjectPath {
        OwnedObjectPath::try_from(v.as_str().unwrap().to_string()).unwrap()
    }

    /// A private bus with a fake logind serving `recording`; `None` when skipped.
    fn fake_logind(recording: Json) -> Option<testbus::PrivateBus> {
        let bus = testbus::start()?;
        testbus::serve(
            &bus.address,
            "org.freedesktop.login1",
            move |at, interface, member, msg: &Message| match (interface, member) {
                (MANAGER, "ListSeats") if at == PATH => {
                    let seats: Vec<(String, OwnedObjectPath)> = recording["seats"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| (s[0].as_str().unwrap().to_string(), path(&s[1])))
                        .collect();
                    Answer::reply(seats)
                }
                (MANAGER, "ListSessions") if at == PATH => {
                    let sessions: Vec<(String, u32, String, String, OwnedObjectPath)> =
                        recording["sessions"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|s| {
                                (
                                    s[0].as_str().unwrap().to_string(),
                                    s[1].as_u64().unwrap() as u32,
                                    s[2].as_str().unwrap().to_string(),
                                    s[3].as_str().unwrap().to_string(),
                                    path(&s[4]),
                                )
                            })
                            .collect();
                    Answer::reply(sessions)
                }
                ("org.freedesktop.DBus.Properties", "Get") => {
                    let (iface, prop): (String, String) = msg.body().deserialize().unwrap();
                    let value = recording["objects"]
                        .get(at)
                        .and_then(|o| o.get(&iface))
                        .and_then(|i| i.get(&prop))
                        .and_then(testbus::json_variant);
                    match value {
                        Some(v) => Answer::reply(v),
                        None => Answer::Error(
                            "org.freedesktop.DBus.Error.UnknownObject",
                            format!("Unknown object '{at}'."),
                        ),
                    }
                }
                _ => Answer::Error("org.freedesktop.DBus.Error.UnknownMethod", "unknown".into()),
            },
        );
        Some(bus)
    }

    fn collector_at(address: &str) -> Box<dyn Collector> {
        Box::new(LogindCollector {
            bus: Bus::new(Target::Address(address.to_string())),
        })
    }

    #[test]
    fn sessions_by_seat_remote_type_and_class() {
        let Some(bus) = fake_logind(recording()) else {
            return;
        };
        let text = render("logind", collector_at(&bus.address), Paths::default());
        assert_golden(&fixture("hw-services/golden").join("logind.prom"), &text);
    }

    #[test]
    fn unknown_types_and_classes_count_as_other() {
        let mut recording = recording();
        recording["objects"]["/org/freedesktop/login1/session/_32"]["org.freedesktop.login1.Session"]
            ["Class"] = serde_json::json!(["s", "manager"]);
        recording["objects"]["/org/freedesktop/login1/session/_32"]["org.freedesktop.login1.Session"]
            ["Type"] = serde_json::json!(["s", "remote-desktop"]);
        let Some(bus) = fake_logind(recording) else {
            return;
        };
        let text = render("logind", collector_at(&bus.address), Paths::default());
        assert!(text.contains(
            "node_logind_sessions{class=\"other\",remote=\"false\",seat=\"seat0\",type=\"other\"} 1\n"
        ));
        assert!(text.contains(
            "node_logind_sessions{class=\"user\",remote=\"false\",seat=\"seat0\",type=\"tty\"} 0\n"
        ));
    }

    #[test]
    fn no_bus_is_a_failed_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/none", dir.path().display());
        let text = render("logind", collector_at(&address), Paths::default());
        assert!(!text.contains("node_logind_"), "{text}");
        assert!(text.contains("node_scrape_collector_success{collector=\"logind\"} 0\n"));
    }

    #[test]
    fn no_logind_on_the_bus_is_a_failed_scrape() {
        let Some(bus) = testbus::start() else {
            return;
        };
        let text = render("logind", collector_at(&bus.address), Paths::default());
        assert!(!text.contains("node_logind_"), "{text}");
        assert!(text.contains("node_scrape_collector_success{collector=\"logind\"} 0\n"));
    }
}
