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

const fn off(name: &'static str, flags: fn(Command) -> Command) -> Unimplemented {
    Unimplemented {
        name,
        default_enabled: false,
        flags,
    }
}

/// Every 1.12.1 Linux collector the agent lacks, by name.
pub static UNIMPLEMENTED: &[Unimplemented] = &[
    off("perf", perf_flags),
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

/// A kingpin `Strings()` flag: repeatable, every value kept.
fn strings(command: Command, name: &'static str, help: &'static str) -> Command {
    command.arg(
        Arg::new(name)
            .long(name)
            .action(ArgAction::Append)
            .help(help),
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

