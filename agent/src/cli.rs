//! The agent's command line: node_exporter's flags, generated from the collector registrations,
//! plus nodewarden's own.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::collector::{self, BuildContext, BuildError, EnabledCollectors, Paths};

pub fn command() -> Command {
    let mut cmd = Command::new("nodewarden-agent")
        .about("nodewarden node agent: node_exporter-compatible metrics and the controller link")
        .version(env!("CARGO_PKG_VERSION"))
        // node_exporter's flags work as before without a subcommand; the subcommands run one
        // declared operation and take only their own arguments.
        .args_conflicts_with_subcommands(true)
        .subcommand(op_command())
        .subcommand(ssh_dispatch_command())
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .default_value(":9100")
                .help("Address on which to expose metrics and web interface."),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .default_value("/metrics")
                .help("Path under which to expose metrics."),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Path to configuration file that can enable TLS or authentication (exporter-toolkit format)."),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .default_value("40")
                .value_parser(clap::value_parser!(u32))
                // Accepted so node_exporter command lines start the agent; scrapes run one at a
                // time here (docs/agent.md), so there is nothing to bound.
                .help("Maximum number of parallel scrape requests (accepted for compatibility: scrapes run one at a time)."),
        )
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Set all collectors to disabled by default."),
        )
        .arg(path_arg("path.procfs", "/proc", "procfs mountpoint."))
        .arg(path_arg("path.sysfs", "/sys", "sysfs mountpoint."))
        .arg(path_arg("path.rootfs", "/", "rootfs mountpoint."))
        .arg(path_arg("path.udev.data", "/run/udev/data", "udev data path."))
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .default_value("info")
                .value_parser(["debug", "info", "warn", "error"])
                .help("Only log messages with the given severity or above."),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_parser(clap::value_parser!(PathBuf))
                .help("nodewarden agent settings (TOML): controller link, roles, devices, services."),
        )
        .args_conflicts_with_subcommands(true)
        .subcommand(crate::enroll::command());
    for reg in collector::registry::ALL {
        let on = format!("collector.{}", reg.name);
        let off = format!("no-collector.{}", reg.name);
        let default = if reg.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {} collector (default: {default}).",
                        reg.name
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .hide(true),
            );
        cmd = (reg.flags)(cmd);
    }
    cmd
}

fn ops_config_arg() -> Arg {
    Arg::new("config")
        .long("config")
        .required(true)
        .value_parser(clap::value_parser!(PathBuf))
        .help("The agent's config file; only the services and storage devices it declares can be acted on.")
}

/// `op <words>`: runs one declared operation locally and prints its result as a JSON line.
fn op_command() -> Command {
    Command::new("op")
        .about("Run one declared operation (e.g. `op service storage-client start`, `op delete-fragments 3 101 102`) and print the result as JSON")
        .arg(ops_config_arg())
        .arg(
            Arg::new("words")
                .required(true)
                .num_args(1..)
                .trailing_var_arg(true)
                // So that `-rf` reaches the operation parser and is refused there, by name.
                .allow_hyphen_values(true)
                .help("The operation: service <name> start|stop|restart|status, or delete-fragments <device id> <fragment id>..."),
        )
}

/// `ssh-dispatch`: the forced command for the controller's key in authorized_keys.
fn ssh_dispatch_command() -> Command {
    Command::new("ssh-dispatch")
        .about("Forced command for the controller's SSH key: runs the declared operation named in SSH_ORIGINAL_COMMAND, nothing else")
        .arg(ops_config_arg())
}

/// What an operations subcommand asks for.
pub enum OpsRequest {
    Words(Vec<String>),
    SshDispatch,
}

/// The operations subcommand in `m`, if any, with its config file.
pub fn ops_request(m: &ArgMatches) -> Option<(PathBuf, OpsRequest)> {
    let (name, sub) = m.subcommand()?;
    let config = sub.get_one::<PathBuf>("config")?.clone();
    match name {
        "op" => Some((
            config,
            OpsRequest::Words(
                sub.get_many::<String>("words")
                    .map(|w| w.cloned().collect())
                    .unwrap_or_default(),
            ),
        )),
        "ssh-dispatch" => Some((config, OpsRequest::SshDispatch)),
        _ => None,
    }
}

fn path_arg(name: &'static str, default: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .default_value(default)
        .value_parser(clap::value_parser!(PathBuf))
        .help(help)
}

/// Everything the metrics server needs, checked.
pub struct MetricsOptions {
    pub listen_address: String,
    pub telemetry_path: String,
    pub web_config: Option<PathBuf>,
    pub paths: Paths,
    pub log_level: String,
    pub config: Option<PathBuf>,
}

pub fn metrics_options(m: &ArgMatches) -> MetricsOptions {
    let path = |id: &str| m.get_one::<PathBuf>(id).cloned().unwrap_or_default();
    MetricsOptions {
        listen_address: m
            .get_one::<String>("web.listen-address")
            .cloned()
            .unwrap_or_default(),
        telemetry_path: m
            .get_one::<String>("web.telemetry-path")
            .cloned()
            .unwrap_or_default(),
        web_config: m.get_one::<PathBuf>("web.config.file").cloned(),
        paths: Paths {
            procfs: path("path.procfs"),
            sysfs: path("path.sysfs"),
            rootfs: path("path.rootfs"),
            udev_data: path("path.udev.data"),
        },
        log_level: m
            .get_one::<String>("log.level")
            .cloned()
            .unwrap_or_else(|| "info".into()),
        config: m.get_one::<PathBuf>("config").cloned(),
    }
}

/// Whether a collector is enabled: the last of `--collector.X` / `--no-collector.X` wins, else
/// its default unless `--collector.disable-defaults`.
pub fn collector_enabled(m: &ArgMatches, name: &str, default_enabled: bool) -> bool {
    if m.get_flag(&format!("no-collector.{name}")) {
        false
    } else if m.get_flag(&format!("collector.{name}")) {
        true
    } else {
        default_enabled && !m.get_flag("collector.disable-defaults")
    }
}

/// Builds every enabled collector, in registration order.
pub fn build_collectors(m: &ArgMatches, paths: &Paths) -> Result<EnabledCollectors, BuildError> {
    let ctx = BuildContext { matches: m, paths };
    collector::registry::ALL
        .iter()
        .filter(|reg| collector_enabled(m, reg.name, reg.default_enabled))
        .map(|reg| Ok((reg.name, (reg.build)(&ctx)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(args: &[&str]) -> Vec<&'static str> {
        let m = command()
            .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
            .unwrap();
        collector::registry::ALL
            .iter()
            .filter(|r| collector_enabled(&m, r.name, r.default_enabled))
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn collector_flags_behave_like_node_exporter() {
        assert!(enabled(&[]).contains(&"loadavg"));
        assert!(!enabled(&["--no-collector.loadavg"]).contains(&"loadavg"));
        assert!(enabled(&["--no-collector.loadavg", "--collector.loadavg"]).contains(&"loadavg"));
        assert_eq!(
            enabled(&["--collector.disable-defaults", "--collector.meminfo"]),
            vec!["meminfo"]
        );
    }

    #[test]
    fn ops_subcommands_parse_and_keep_hyphen_words_for_the_operation_parser() {
        let m = command()
            .try_get_matches_from([
                "nodewarden-agent",
                "op",
                "--config",
                "/etc/a.toml",
                "delete-fragments",
                "3",
                "-rf",
            ])
            .unwrap();
        let Some((config, OpsRequest::Words(words))) = ops_request(&m) else {
            panic!("no op request");
        };
        assert_eq!(config, PathBuf::from("/etc/a.toml"));
        assert_eq!(words, ["delete-fragments", "3", "-rf"]);
        let m = command()
            .try_get_matches_from(["nodewarden-agent", "ssh-dispatch", "--config", "/a"])
            .unwrap();
        assert!(matches!(
            ops_request(&m),
            Some((_, OpsRequest::SshDispatch))
        ));
        // Metrics flags and subcommands do not mix; metrics flags alone still work.
        assert!(
            command()
                .try_get_matches_from([
                    "nodewarden-agent",
                    "--collector.loadavg",
                    "ssh-dispatch",
                    "--config",
                    "/a"
                ])
                .is_err()
        );
        let m = command()
            .try_get_matches_from(["nodewarden-agent", "--web.listen-address=:9200"])
            .unwrap();
        assert!(ops_request(&m).is_none());
    }

    #[test]
    fn unknown_flag_is_an_error() {
        assert!(
            command()
                .try_get_matches_from(["nodewarden-agent", "--collector.nonsense"])
                .is_err()
        );
    }
}
