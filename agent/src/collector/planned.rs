//! node_exporter 1.12.1's Linux collectors that this agent does not implement yet: their names,
//! their defaults and their own flags, so that a node_exporter command line (a unit file with
//! `--collector.systemd`, say) starts the agent and the node keeps its other metrics. An enabled
//! one is named in one warning at start-up ([`crate::cli::build_collectors`]); it is never built
//! and serves nothing (no `node_scrape_collector_*` either: there is no collection to report).
//!
//! Names, defaults, flag names, defaults and help are read from node_exporter v1.12.1's
//! `collector/*.go`. When a collector is implemented, its entry moves into its own file as a
//! [`super::Registration`] with these flags beside it.

use clap::{Arg, ArgAction, Command};

use super::flags::add_bool_flag;
use super::no_flags;

/// A collector node_exporter has and the agent accepts on its command line but does not run.
pub struct Unimplemented {
    /// node_exporter's name: `--collector.<name>` / `--no-collector.<name>`.
    pub name: &'static str,
    /// Whether node_exporter 1.12.1 enables it by default on Linux.
    pub default_enabled: bool,
    /// Its own flags, as node_exporter declares them.
    pub flags: fn(Command) -> Command,
}

const fn on(name: &'static str, flags: fn(Command) -> Command) -> Unimplemented {
    Unimplemented {
        name,
        default_enabled: true,
        flags,
    }
}

const fn off(name: &'static str, flags: fn(Command) -> Command) -> Unimplemented {
    Unimplemented {
        name,
        default_enabled: false,
        flags,
    }
}

/// Every 1.12.1 Linux collector the agent lacks, by name.
pub static UNIMPLEMENTED: &[Unimplemented] = &[
    off("bcachefs", no_flags),
    off("buddyinfo", no_flags),
    off("cgroups", no_flags),
    off("cpu_vulnerabilities", no_flags),
    on("dmi", no_flags),
    on("dmmultipath", no_flags),
    off("drbd", no_flags),
    off("drm", no_flags),
    off("ethtool", ethtool_flags),
    on("fibrechannel", no_flags),
    on("kernel_hung", no_flags),
    off("ksmd", no_flags),
    off("logind", no_flags),
    off("meminfo_numa", no_flags),
    off("network_route", no_flags),
    off("ntp", ntp_flags),
    on("nvme", no_flags),
    off("nvmesubsystem", no_flags),
    off("pcidevice", pcidevice_flags),
    off("perf", perf_flags),
    off("processes", no_flags),
    off("qdisc", qdisc_flags),
    on("rapl", rapl_flags),
    off("runit", runit_flags),
    off("slabinfo", slabinfo_flags),
    off("supervisord", supervisord_flags),
    off("swap", no_flags),
    off("sysctl", sysctl_flags),
    off("systemd", systemd_flags),
    on("tapestats", tapestats_flags),
    on("watchdog", no_flags),
    off("wifi", wifi_flags),
    on("zfs", no_flags),
    off("zoneinfo", no_flags),
];

/// A kingpin `String()` flag (`Default` empty when `default` is `None`).
fn string(
    command: Command,
    name: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> Command {
    let arg = Arg::new(name).long(name).help(help);
    command.arg(match default {
        Some(value) => arg.default_value(value),
        None => arg,
    })
}

/// A hidden kingpin `String()` flag (the deprecated aliases).
fn hidden(command: Command, name: &'static str, help: &'static str) -> Command {
    command.arg(Arg::new(name).long(name).help(help).hide(true))
}

/// A kingpin `Strings()` flag: repeatable, every value kept.
fn strings(command: Command, name: &'static str, help: &'static str) -> Command {
    command.arg(
        Arg::new(name)
            .long(name)
            .action(ArgAction::Append)
            .help(help),
    )
}

fn ethtool_flags(command: Command) -> Command {
    let command = string(
        command,
        "collector.ethtool.device-include",
        None,
        "Regexp of ethtool devices to include (mutually exclusive to device-exclude).",
    );
    let command = string(
        command,
        "collector.ethtool.device-exclude",
        None,
        "Regexp of ethtool devices to exclude (mutually exclusive to device-include).",
    );
    string(
        command,
        "collector.ethtool.metrics-include",
        Some(".*"),
        "Regexp of ethtool stats to include.",
    )
}

fn ntp_flags(command: Command) -> Command {
    let command = string(
        command,
        "collector.ntp.server",
        Some("127.0.0.1"),
        "NTP server to use for ntp collector",
    );
    let command = string(
        command,
        "collector.ntp.server-port",
        Some("123"),
        "UDP port number to connect to on NTP server",
    );
    let command = string(
        command,
        "collector.ntp.protocol-version",
        Some("4"),
        "NTP protocol version",
    );
    let command = add_bool_flag(
        command,
        "collector.ntp.server-is-local",
        false,
        "Certify that collector.ntp.server address is not a public ntp server",
    );
    let command = string(
        command,
        "collector.ntp.ip-ttl",
        Some("1"),
        "IP TTL to use while sending NTP query",
    );
    let command = string(
        command,
        "collector.ntp.max-distance",
        Some("3.46608s"),
        "Max accumulated distance to the root",
    );
    string(
        command,
        "collector.ntp.local-offset-tolerance",
        Some("1ms"),
        "Offset between local clock and local ntpd time to tolerate",
    )
}

fn pcidevice_flags(command: Command) -> Command {
    let command = string(
        command,
        "collector.pcidevice.idsfile",
        None,
        "Path to pci.ids file to use for PCI device identification.",
    );
    add_bool_flag(
        command,
        "collector.pcidevice.names",
        false,
        "Enable PCI device name resolution (requires pci.ids file).",
    )
}

fn perf_flags(command: Command) -> Command {
    let command = string(
        command,
        "collector.perf.cpus",
        Some(""),
        "List of CPUs from which perf metrics should be collected",
    );
    let mut command = strings(
        command,
        "collector.perf.tracepoint",
        "perf tracepoint that should be collected",
    );
    for kind in ["hardware", "software", "cache"] {
        let (disable, disable_help, list, list_help) = match kind {
            "hardware" => (
                "collector.perf.disable-hardware-profilers",
                "disable perf hardware profilers",
                "collector.perf.hardware-profilers",
                "perf hardware profilers that should be collected",
            ),
            "software" => (
                "collector.perf.disable-software-profilers",
                "disable perf software profilers",
                "collector.perf.software-profilers",
                "perf software profilers that should be collected",
            ),
            _ => (
                "collector.perf.disable-cache-profilers",
                "disable perf cache profilers",
                "collector.perf.cache-profilers",
                "perf cache profilers that should be collected",
            ),
        };
        command = add_bool_flag(command, disable, false, disable_help);
        command = strings(command, list, list_help);
    }
    command
}

fn qdisc_flags(command: Command) -> Command {
    let command = string(
        command,
        "collector.qdisc.fixtures",
        Some(""),
        "test fixtures to use for qdisc collector end-to-end testing",
    );
    let command = string(
        command,
        "collector.qdisc.device-include",
        None,
        "Regexp of qdisc devices to include (mutually exclusive to device-exclude).",
    );
    let command = hidden(
        command,
        "collector.qdisk.device-include",
        "DEPRECATED: Use collector.qdisc.device-include",
    );
    let command = string(
        command,
        "collector.qdisc.device-exclude",
        None,
        "Regexp of qdisc devices to exclude (mutually exclusive to device-include).",
    );
    hidden(
        command,
        "collector.qdisk.device-exclude",
        "DEPRECATED: Use collector.qdisc.device-exclude",
    )
}

fn rapl_flags(command: Command) -> Command {
    // node_exporter's help text, a copy-paste slip there, kept so `--help` reads the same.
    add_bool_flag(
        command,
        "collector.rapl.enable-zone-label",
        false,
        "Enables service unit metric unit_start_time_seconds",
    )
}

fn runit_flags(command: Command) -> Command {
    string(
        command,
        "collector.runit.servicedir",
        Some("/etc/service"),
        "Path to runit service directory.",
    )
}

fn slabinfo_flags(command: Command) -> Command {
    let command = string(
        command,
        "collector.slabinfo.slabs-include",
        Some(".*"),
        "Regexp of slabs to include in slabinfo collector.",
    );
    string(
        command,
        "collector.slabinfo.slabs-exclude",
        Some(""),
        "Regexp of slabs to exclude in slabinfo collector.",
    )
}

fn supervisord_flags(command: Command) -> Command {
    // node_exporter also reads it from $SUPERVISORD_URL; the collector that would use it does
    // not exist here, so only the flag is taken.
    string(
        command,
        "collector.supervisord.url",
        Some("http://localhost:9001/RPC2"),
        "XML RPC endpoint.",
    )
}

fn sysctl_flags(command: Command) -> Command {
    let command = strings(
        command,
        "collector.sysctl.include",
        "Select sysctl metrics to include",
    );
    strings(
        command,
        "collector.sysctl.include-info",
        "Select sysctl metrics to include as info metrics",
    )
}

fn systemd_flags(command: Command) -> Command {
    let command = string(
        command,
        "collector.systemd.unit-include",
        Some(".+"),
        "Regexp of systemd units to include. Units must both match include and not match exclude to be included.",
    );
    let command = hidden(
        command,
        "collector.systemd.unit-whitelist",
        "DEPRECATED: Use --collector.systemd.unit-include",
    );
    let command = string(
        command,
        "collector.systemd.unit-exclude",
        Some(r".+\.(automount|device|mount|scope|slice)"),
        "Regexp of systemd units to exclude. Units must both match include and not match exclude to be included.",
    );
    let command = hidden(
        command,
        "collector.systemd.unit-blacklist",
        "DEPRECATED: Use collector.systemd.unit-exclude",
    );
    let command = add_bool_flag(
        command,
        "collector.systemd.private",
        false,
        "Establish a private, direct connection to systemd without dbus (Strongly discouraged since it requires root. For testing purposes only).",
    );
    let command = add_bool_flag(
        command,
        "collector.systemd.enable-task-metrics",
        false,
        "Enables service unit tasks metrics unit_tasks_current and unit_tasks_max",
    );
    let command = add_bool_flag(
        command,
        "collector.systemd.enable-restarts-metrics",
        false,
        "Enables service unit metric service_restart_total",
    );
    add_bool_flag(
        command,
        "collector.systemd.enable-start-time-metrics",
        false,
        "Enables service unit metric unit_start_time_seconds",
    )
}

fn tapestats_flags(command: Command) -> Command {
    string(
        command,
        "collector.tapestats.ignored-devices",
        Some("^$"),
        "Regexp of devices to ignore for tapestats.",
    )
}

fn wifi_flags(command: Command) -> Command {
    string(
        command,
        "collector.wifi.fixtures",
        Some(""),
        "test fixtures to use for wifi collector metrics",
    )
}
