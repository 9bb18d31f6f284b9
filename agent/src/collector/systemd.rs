//! `systemd`: unit states, sockets, timers, the system state, version and virtualization, read
//! from systemd over D-Bus (`org.freedesktop.systemd1` on the system bus) as node_exporter
//! 1.12.1 (go-systemd) does: `Manager.ListUnits`, then `Properties.Get` per kept unit on the
//! path go-systemd derives from the unit's name.
//!
//! Decisions:
//! - The connection is kept between scrapes ([`super::dbus`]); node_exporter opens one per
//!   scrape. Calls are made one after the other (node_exporter runs five groups in parallel
//!   goroutines); the output is the same.
//! - A property of an unexpected D-Bus type is treated as a failed `Get` (node_exporter's type
//!   assertions would panic): the unit's type label is then empty, its other metric skipped.
//! - The manager's string properties are taken as they are; node_exporter reads them through
//!   godbus's `Variant.String()` (Go-quoted, then the quotes trimmed), which differs only for
//!   strings with quotes, backslashes or non-printable characters.
//! - Families come out sorted by name and samples by label values, as node_exporter's registry
//!   sorts them.

use std::collections::BTreeMap;

use clap::Command;
use regex::Regex;

use super::dbus::{self, Bus, DbusError, Target};
use super::flags::{add_bool_flag, bool_flag};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "systemd",
    default_enabled: false,
    flags,
    build,
};

const INCLUDE: &str = "collector.systemd.unit-include";
const OLD_INCLUDE: &str = "collector.systemd.unit-whitelist";
const EXCLUDE: &str = "collector.systemd.unit-exclude";
const OLD_EXCLUDE: &str = "collector.systemd.unit-blacklist";
const PRIVATE: &str = "collector.systemd.private";
const TASKS: &str = "collector.systemd.enable-task-metrics";
const RESTARTS: &str = "collector.systemd.enable-restarts-metrics";
const START_TIME: &str = "collector.systemd.enable-start-time-metrics";

fn flags(command: Command) -> Command {
    let string = |command: Command, name: &'static str, default: &'static str, help| {
        command.arg(
            clap::Arg::new(name)
                .long(name)
                .default_value(default)
                .help(help),
        )
    };
    let hidden = |command: Command, name: &'static str, help| {
        command.arg(clap::Arg::new(name).long(name).help(help).hide(true))
    };
    let command = string(
        command,
        INCLUDE,
        ".+",
        "Regexp of systemd units to include. Units must both match include and not match exclude to be included.",
    );
    let command = hidden(
        command,
        OLD_INCLUDE,
        "DEPRECATED: Use --collector.systemd.unit-include",
    );
    let command = string(
        command,
        EXCLUDE,
        r".+\.(automount|device|mount|scope|slice)",
        "Regexp of systemd units to exclude. Units must both match include and not match exclude to be included.",
    );
    let command = hidden(
        command,
        OLD_EXCLUDE,
        "DEPRECATED: Use collector.systemd.unit-exclude",
    );
    let command = add_bool_flag(
        command,
        PRIVATE,
        false,
        "Establish a private, direct connection to systemd without dbus (Strongly discouraged since it requires root. For testing purposes only).",
    );
    let command = add_bool_flag(
        command,
        TASKS,
        false,
        "Enables service unit tasks metrics unit_tasks_current and unit_tasks_max",
    );
    let command = add_bool_flag(
        command,
        RESTARTS,
        false,
        "Enables service unit metric service_restart_total",
    );
    add_bool_flag(
        command,
        START_TIME,
        false,
        "Enables service unit metric unit_start_time_seconds",
    )
}

/// The `SystemState` manager property and timers' `LastTriggerUSec` appeared in systemd 212.
const MIN_VERSION_SYSTEM_STATE: f64 = 212.0;

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

const UNIT_STATES: [&str; 5] = ["active", "activating", "deactivating", "inactive", "failed"];

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(collector(ctx)?))
}

fn collector(ctx: &BuildContext<'_>) -> Result<SystemdCollector, BuildError> {
    // node_exporter: a deprecated alias replaces its flag unless that flag was given too.
    let explicit =
        |id: &str| ctx.matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let pick = |new: &'static str, old: &'static str| -> Result<&'static str, BuildError> {
        if ctx.flag(old).is_some_and(|v| !v.is_empty()) {
            if explicit(new) {
                return Err(BuildError::Flag {
                    flag: old.to_string(),
                    reason: format!("--{old} and --{new} are mutually exclusive"),
                });
            }
            tracing::warn!("--{old} is DEPRECATED and will be removed in 2.0.0, use --{new}");
            return Ok(old);
        }
        Ok(new)
    };
    let exclude_id = pick(EXCLUDE, OLD_EXCLUDE)?;
    let include_id = pick(INCLUDE, OLD_INCLUDE)?;
    // Anchored as node_exporter's `^(?:%s)$`; an empty pattern matches only the empty name.
    let anchored = |id: &str| {
        let pattern = ctx.flag(id).unwrap_or("");
        Regex::new(&format!("^(?:{pattern})$")).map_err(|e| BuildError::Flag {
            flag: id.to_string(),
            reason: e.to_string(),
        })
    };
    let target = if bool_flag(ctx, PRIVATE) {
        Target::SystemdPrivate
    } else {
        Target::System {
            fallback_private: true,
        }
    };
    Ok(SystemdCollector {
        include: anchored(include_id)?,
        exclude: anchored(exclude_id)?,
        tasks: bool_flag(ctx, TASKS),
        restarts: bool_flag(ctx, RESTARTS),
        start_time: bool_flag(ctx, START_TIME),
        bus: Bus::new(target),
    })
}

struct SystemdCollector {
    include: Regex,
    exclude: Regex,
    tasks: bool,
    restarts: bool,
    start_time: bool,
    bus: Bus,
}

/// One entry of `ListUnits`: name, description, load state, active state, sub state, followed,
/// unit path, job id, job type, job path.
type UnitStatus = (
    String,
    String,
    String,
    String,
    String,
    String,
    zbus::OwnedObjectPath,
    u32,
    String,
    zbus::OwnedObjectPath,
);

/// What one scrape read, before it is written out sorted.
#[derive(Default)]
struct Readings {
    version: f64,
    version_label: String,
    virtualization: String,
    /// Unit state counts of all units, by active state.
    summary: BTreeMap<String, f64>,
    /// (name, active state, type) of the kept units.
    states: Vec<(String, String, String)>,
    restarts: Vec<(String, f64)>,
    start_times: Vec<(String, f64)>,
    tasks_current: Vec<(String, f64)>,
    tasks_max: Vec<(String, f64)>,
    timers: Vec<(String, f64)>,
    accepted: Vec<(String, f64)>,
    current: Vec<(String, f64)>,
    refused: Vec<(String, f64)>,
    system_running: Option<f64>,
}

/// The object path go-systemd derives from a unit name (`unitPath`, `PathBusEscape`): every
/// byte but `[A-Za-z0-9]` (and a leading digit) as `_` and two lower-case hex digits.
pub fn unit_path(name: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    if name.is_empty() {
        path.push('_');
        return path;
    }
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:x}"));
        }
    }
    path
}

/// node_exporter's systemd version: the first match of `[0-9]{3,}(\.[0-9]+)?` as a number;
/// `(0, "")` when there is none.
fn parse_version(version: &str) -> (f64, String) {
    let bytes = version.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if run >= 3 {
            let mut end = i + run;
            if bytes.get(end) == Some(&b'.') {
                let frac = bytes[end + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if frac > 0 {
                    end += 1 + frac;
                }
            }
            return match version[i..end].parse::<f64>() {
                Ok(v) => (v, version.to_string()),
                Err(_) => (0.0, String::new()),
            };
        }
        i += run.max(1);
    }
    (0.0, String::new())
}

impl SystemdCollector {
    fn kept(&self, unit: &UnitStatus) -> bool {
        self.include.is_match(&unit.0) && !self.exclude.is_match(&unit.0) && unit.2 == "loaded"
    }

    async fn read(&self, conn: &zbus::Connection, r: &mut Readings) -> Result<(), DbusError> {
        let manager = async |property: &str| {
            let value = dbus::get_property(conn, DEST, MANAGER_PATH, MANAGER, property).await?;
            dbus::as_string(&value, property)
        };
        match manager("Version").await {
            Ok(version) => (r.version, r.version_label) = parse_version(&version),
            Err(e) => {
                tracing::debug!(error = %e, "unable to get systemd version property, defaulting to 0");
                if e.breaks_connection() {
                    return Err(e);
                }
            }
        }
        r.virtualization = match manager("Virtualization").await {
            Ok(v) if v.is_empty() => "none".to_string(),
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "could not get the Virtualization property");
                if e.breaks_connection() {
                    return Err(e);
                }
                "unknown".to_string()
            }
        };

        let units: Vec<UnitStatus> =
            dbus::call(conn, DEST, MANAGER_PATH, MANAGER, "ListUnits").await?;
        for state in UNIT_STATES {
            r.summary.insert(state.to_string(), 0.0);
        }
        for unit in &units {
            *r.summary.entry(unit.3.clone()).or_insert(0.0) += 1.0;
        }
        let timers_too = r.version >= MIN_VERSION_SYSTEM_STATE;

        for unit in units.iter().filter(|u| self.kept(u)) {
            let name = unit.0.as_str();
            let path = unit_path(name);
            let typed = async |interface: &str, property: &str| {
                let interface = format!("org.freedesktop.systemd1.{interface}");
                let value = dbus::get_property(conn, DEST, &path, &interface, property).await;
                if let Err(e) = &value {
                    tracing::debug!(unit = name, property, error = %e, "couldn't get unit property");
                }
                value
            };
            // A failed Get is skipped as node_exporter skips it, unless the connection broke.
            macro_rules! get {
                ($interface:expr, $property:expr, $as:path) => {
                    match typed($interface, $property).await {
                        Ok(value) => match $as(&value, $property) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                tracing::debug!(unit = name, error = %e, "unexpected property type");
                                None
                            }
                        },
                        Err(e) if e.breaks_connection() => return Err(e),
                        Err(_) => None,
                    }
                };
            }
            let (service, mount, socket, timer) = (
                name.ends_with(".service"),
                name.ends_with(".mount"),
                name.ends_with(".socket"),
                name.ends_with(".timer"),
            );

            let mut kind = String::new();
            if service || mount {
                let interface = if service { "Service" } else { "Mount" };
                let value = get!(interface, "Type", dbus::as_string);
                kind = value.unwrap_or_default();
            }
            r.states.push((name.to_string(), unit.3.clone(), kind));
            if self.restarts
                && service
                && let Some(n) = get!("Service", "NRestarts", dbus::as_u32)
            {
                r.restarts.push((name.to_string(), n as f64));
            }
            if self.start_time {
                if unit.3 != "active" {
                    r.start_times.push((name.to_string(), 0.0));
                } else if let Some(t) = get!("Unit", "ActiveEnterTimestamp", dbus::as_u64) {
                    r.start_times.push((name.to_string(), t as f64 / 1e6));
                }
            }
            if self.tasks && service {
                if let Some(n) = get!("Service", "TasksCurrent", dbus::as_u64)
                    && n != u64::MAX
                {
                    r.tasks_current.push((name.to_string(), n as f64));
                }
                if let Some(n) = get!("Service", "TasksMax", dbus::as_u64)
                    && n != u64::MAX
                {
                    r.tasks_max.push((name.to_string(), n as f64));
                }
            }
            if timers_too
                && timer
                && let Some(t) = get!("Timer", "LastTriggerUSec", dbus::as_u64)
            {
                r.timers.push((name.to_string(), t as f64 / 1e6));
            }
            if socket {
                let Some(accepted) = get!("Socket", "NAccepted", dbus::as_u32) else {
                    continue;
                };
                r.accepted.push((name.to_string(), accepted as f64));
                let Some(current) = get!("Socket", "NConnections", dbus::as_u32) else {
                    continue;
                };
                r.current.push((name.to_string(), current as f64));
                // NRefused appeared in systemd 239.
                if let Some(refused) = get!("Socket", "NRefused", dbus::as_u32) {
                    r.refused.push((name.to_string(), refused as f64));
                }
            }
        }

        if timers_too {
            let state = manager("SystemState").await?;
            r.system_running = Some(if state == "running" { 1.0 } else { 0.0 });
        }
        Ok(())
    }
}

/// Writes a `{name}` family sorted by name; nothing when it has no samples.
fn write_named(
    out: &mut MetricWriter<'_, '_>,
    name: &str,
    help: &str,
    kind: Kind,
    samples: &mut [(String, f64)],
) -> Result<(), CollectorError> {
    if samples.is_empty() {
        return Ok(());
    }
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    let mut family = out.family(name, help, kind)?;
    for (unit, value) in samples.iter() {
        family.sample(&[("name", unit)], *value)?;
    }
    Ok(())
}

fn write(out: &mut MetricWriter<'_, '_>, r: &mut Readings) -> Result<(), CollectorError> {
    write_named(
        out,
        "node_systemd_service_restart_total",
        "Service unit count of Restart triggers",
        Kind::Counter,
        &mut r.restarts,
    )?;
    write_named(
        out,
        "node_systemd_socket_accepted_connections_total",
        "Total number of accepted socket connections",
        Kind::Counter,
        &mut r.accepted,
    )?;
    write_named(
        out,
        "node_systemd_socket_current_connections",
        "Current number of socket connections",
        Kind::Gauge,
        &mut r.current,
    )?;
    // A gauge despite its name, as node_exporter declares it.
    write_named(
        out,
        "node_systemd_socket_refused_connections_total",
        "Total number of refused socket connections",
        Kind::Gauge,
        &mut r.refused,
    )?;
    if let Some(running) = r.system_running {
        out.gauge(
            "node_systemd_system_running",
            "Whether the system is operational (see 'systemctl is-system-running')",
            running,
        )?;
    }
    write_named(
        out,
        "node_systemd_timer_last_trigger_seconds",
        "Seconds since epoch of last trigger.",
        Kind::Gauge,
        &mut r.timers,
    )?;
    write_named(
        out,
        "node_systemd_unit_start_time_seconds",
        "Start time of the unit since unix epoch in seconds.",
        Kind::Gauge,
        &mut r.start_times,
    )?;
    if !r.states.is_empty() {
        r.states.sort();
        let mut states: Vec<&str> = UNIT_STATES.to_vec();
        states.sort_unstable();
        let mut family = out.family("node_systemd_unit_state", "Systemd unit", Kind::Gauge)?;
        for (name, active, kind) in &r.states {
            for state in &states {
                let value = if active == state { 1.0 } else { 0.0 };
                family.sample(&[("name", name), ("state", state), ("type", kind)], value)?;
            }
        }
    }
    write_named(
        out,
        "node_systemd_unit_tasks_current",
        "Current number of tasks per Systemd unit",
        Kind::Gauge,
        &mut r.tasks_current,
    )?;
    write_named(
        out,
        "node_systemd_unit_tasks_max",
        "Maximum number of tasks per Systemd unit",
        Kind::Gauge,
        &mut r.tasks_max,
    )?;
    if !r.summary.is_empty() {
        let mut family = out.family(
            "node_systemd_units",
            "Summary of systemd unit states",
            Kind::Gauge,
        )?;
        for (state, count) in &r.summary {
            family.sample(&[("state", state)], *count)?;
        }
    }
    out.single(
        "node_systemd_version",
        "Detected systemd version",
        Kind::Gauge,
        &[("version", &r.version_label)],
        r.version,
    )?;
    out.single(
        "node_systemd_virtualization_info",
        "Detected virtualization technology",
        Kind::Gauge,
        &[("virtualization_type", &r.virtualization)],
        1.0,
    )?;
    Ok(())
}

impl Collector for SystemdCollector {
    fn update(
        &mut self,
        _ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let mut readings = Readings {
            virtualization: "unknown".to_string(),
            ..Readings::default()
        };
        let result = zbus::block_on(async {
            let conn = self.bus.connection().await?;
            self.read(&conn, &mut readings).await
        });
        if let Err(e) = &result {
            self.bus.failed(e);
            if matches!(e, DbusError::Connect { .. }) {
                // node_exporter: "couldn't get dbus connection"; nothing was read.
                return Err(result.unwrap_err().into_collector(MANAGER_PATH));
            }
        }
        // What was read before a failure is still reported, as node_exporter sends each
        // metric as soon as it has it.
        write(out, &mut readings)?;
        result.map_err(|e| e.into_collector(MANAGER_PATH))
    }
}

#[cfg(test)]
mod tests;
