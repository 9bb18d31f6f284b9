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
    off("cgroups", no_flags),
    off("drm", no_flags),
    off("meminfo_numa", no_flags),
    off("pcidevice", pcidevice_flags),
    off("processes", no_flags),
    off("slabinfo", slabinfo_flags),
    off("sysctl", sysctl_flags),
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
