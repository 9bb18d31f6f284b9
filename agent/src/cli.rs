//! The agent's command line: node_exporter's flags, generated from the collector registrations,
//! plus nodewarden's own.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::collector::flags::{add_bool_flag, bool_flag_in};
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
                .action(ArgAction::Append)
                .default_value(":9100")
                .help("Addresses on which to expose metrics and web interface. Repeatable for multiple addresses."),
        )
        .arg(
            Arg::new("runtime.gomaxprocs")
                .long("runtime.gomaxprocs")
                .default_value("1")
                .value_parser(clap::value_parser!(i64))
                // Go's scheduler setting: accepted so node_exporter command lines start the
                // agent, whose metrics runtime is one thread whatever it says.
                .help("The target number of CPUs Go will run on (GOMAXPROCS); accepted for compatibility, the agent serves metrics from one thread."),
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
                .help("Maximum number of parallel scrape requests. Use 0 to disable."),
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
                .help("Only log messages with the given severity or above. One of: [debug, info, warn, error]"),
        )
        .arg(
            Arg::new("log.format")
                .long("log.format")
                .default_value("logfmt")
                .value_parser(["logfmt", "json"])
                .help("Output format of log messages. One of: [logfmt, json]"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_parser(clap::value_parser!(PathBuf))
                .help("nodewarden agent settings (TOML): controller link, roles, devices, services."),
        )
        .args_conflicts_with_subcommands(true)
        .subcommand(crate::enroll::command());
    cmd = add_bool_flag(
        cmd,
        "collector.disable-defaults",
        false,
        "Set all collectors to disabled by default.",
    );
    cmd = add_bool_flag(
        cmd,
        "web.systemd-socket",
        false,
        "Use systemd socket activation listeners instead of port listeners (Linux only).",
    );
    cmd = add_bool_flag(
        cmd,
        "web.disable-exporter-metrics",
        false,
        "Exclude metrics about the exporter itself (promhttp_*, process_*, go_*).",
    );
    for reg in collector::registry::ALL {
        cmd = (reg.flags)(collector_switch(cmd, reg.name, reg.default_enabled));
    }
    cmd
}

/// `--collector.<name>` (also `--collector.<name>=true|false`, as kingpin's bool flags take) and
/// its hidden `--no-collector.<name>`, as node_exporter declares them. No default value, so that
/// "not given" leaves the collector's default (and `--collector.disable-defaults`) in force.
fn collector_switch(cmd: Command, name: &str, default_enabled: bool) -> Command {
    let on = format!("collector.{name}");
    let off = format!("no-collector.{name}");
    let default = if default_enabled {
        "enabled"
    } else {
        "disabled"
    };
    cmd.arg(
        Arg::new(on.clone())
            .long(on.clone())
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_parser(clap::value_parser!(bool))
            // Repeated, the last one wins (as `--collector.X` twice always did here).
            .overrides_with_all([on.clone(), off.clone()])
            .help(format!("Enable the {name} collector (default: {default}).")),
    )
    .arg(
        Arg::new(off.clone())
            .long(off)
            .action(ArgAction::SetTrue)
            .overrides_with(on)
            .hide(true),
    )
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
    /// `--web.listen-address`, each given (repeatable, as node_exporter's).
    pub listen_addresses: Vec<String>,
    /// `--web.systemd-socket`: serve on the sockets systemd passed (`LISTEN_FDS`) instead.
    pub systemd_socket: bool,
    /// `--web.disable-exporter-metrics`: no `process_*` families for the agent itself.
    pub disable_exporter_metrics: bool,
    /// `--log.format`: `logfmt` or `json`.
    pub log_format: String,
    pub telemetry_path: String,
    pub web_config: Option<PathBuf>,
    /// `--web.max-requests`: scrapes in flight at once (0: no limit).
    pub max_requests: usize,
    pub paths: Paths,
    pub log_level: String,
    pub config: Option<PathBuf>,
}

pub fn metrics_options(m: &ArgMatches) -> MetricsOptions {
    let path = |id: &str| m.get_one::<PathBuf>(id).cloned().unwrap_or_default();
    MetricsOptions {
        listen_addresses: m
            .get_many::<String>("web.listen-address")
            .map(|a| a.cloned().collect())
            .unwrap_or_default(),
        systemd_socket: bool_flag_in(m, "web.systemd-socket"),
        disable_exporter_metrics: bool_flag_in(m, "web.disable-exporter-metrics"),
        log_format: m
            .get_one::<String>("log.format")
            .cloned()
            .unwrap_or_else(|| "logfmt".into()),
        telemetry_path: m
            .get_one::<String>("web.telemetry-path")
            .cloned()
            .unwrap_or_default(),
        web_config: m.get_one::<PathBuf>("web.config.file").cloned(),
        max_requests: m
            .get_one::<u32>("web.max-requests")
            .map_or(40, |&n| n as usize),
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
        return false;
    }
    match m.get_one::<bool>(&format!("collector.{name}")) {
        Some(&given) => given,
        None => default_enabled && !bool_flag_in(m, "collector.disable-defaults"),
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
        // kingpin's bool flags also take a value.
        assert!(!enabled(&["--collector.loadavg=false"]).contains(&"loadavg"));
        assert!(enabled(&["--collector.loadavg=true"]).contains(&"loadavg"));
        assert!(
            enabled(&["--collector.loadavg=false", "--collector.loadavg"]).contains(&"loadavg")
        );
        assert!(!enabled(&["--collector.loadavg", "--no-collector.loadavg"]).contains(&"loadavg"));
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

/// node_exporter 1.12.1's command line on Linux, recorded from its source (`node_exporter.go`,
/// `collector/*.go`, exporter-toolkit's `kingpinflag`, prometheus/common's `promslog/flag`):
/// every flag must start the agent.
#[cfg(test)]
mod node_exporter_1_12_1 {
    use super::*;

    /// How a flag takes its value: kingpin `Bool()` flags also have `--no-<flag>`.
    enum Takes {
        Bool,
        Value(&'static str),
    }
    use Takes::{Bool, Value};

    /// Every flag of node_exporter 1.12.1 on Linux but `--collector.<name>` (below), with a
    /// value it accepts.
    const FLAGS: &[(&str, Takes)] = &[
        // node_exporter.go, exporter-toolkit, promslog.
        ("web.telemetry-path", Value("/metrics")),
        ("web.disable-exporter-metrics", Bool),
        ("web.max-requests", Value("40")),
        ("collector.disable-defaults", Bool),
        ("runtime.gomaxprocs", Value("2")),
        ("web.listen-address", Value(":9100")),
        ("web.systemd-socket", Bool),
        ("web.config.file", Value("/etc/node_exporter/web.yml")),
        ("log.level", Value("debug")),
        ("log.format", Value("logfmt")),
        ("path.procfs", Value("/proc")),
        ("path.sysfs", Value("/sys")),
        ("path.rootfs", Value("/")),
        ("path.udev.data", Value("/run/udev/data")),
        // The collectors' own flags.
        ("collector.arp.device-include", Value("^eth")),
        ("collector.arp.device-exclude", Value("^lo$")),
        ("collector.arp.netlink", Bool),
        ("collector.bcache.priorityStats", Bool),
        ("collector.cpu.guest", Bool),
        ("collector.cpu.info", Bool),
        ("collector.cpu.info.flags-include", Value("^(aes|avx.?)$")),
        ("collector.cpu.info.bugs-include", Value("^spectre")),
        (
            "collector.diskstats.device-exclude",
            Value("^(ram|loop)\\d+$"),
        ),
        ("collector.diskstats.ignored-devices", Value("^loop\\d+$")),
        ("collector.diskstats.device-include", Value("^sd")),
        ("collector.ethtool.device-include", Value("^eth")),
        ("collector.ethtool.device-exclude", Value("^lo$")),
        ("collector.ethtool.metrics-include", Value(".*")),
        (
            "collector.filesystem.mount-points-exclude",
            Value("^/(dev|proc|sys)($|/)"),
        ),
        ("collector.filesystem.ignored-mount-points", Value("^/proc")),
        ("collector.filesystem.mount-points-include", Value("^/data")),
        ("collector.filesystem.fs-types-exclude", Value("^tmpfs$")),
        ("collector.filesystem.ignored-fs-types", Value("^tmpfs$")),
        (
            "collector.filesystem.fs-types-include",
            Value("^(ext4|xfs)$"),
        ),
        ("collector.filesystem.mount-timeout", Value("2s")),
        ("collector.filesystem.stat-workers", Value("8")),
        ("collector.hwmon.chip-include", Value("^nvme")),
        ("collector.hwmon.chip-exclude", Value("^acpi")),
        ("collector.hwmon.sensor-include", Value("temp")),
        ("collector.hwmon.sensor-exclude", Value("in0")),
        ("collector.infiniband.device-include", Value("^mlx5")),
        ("collector.infiniband.device-exclude", Value("^hfi")),
        ("collector.interrupts.name-include", Value("nvme")),
        ("collector.interrupts.name-exclude", Value("^$")),
        ("collector.interrupts.include-zeros", Bool),
        (
            "collector.ipvs.backend-labels",
            Value("local_address,local_port"),
        ),
        ("collector.netclass.ignored-devices", Value("^veth")),
        ("collector.netclass.ignore-invalid-speed", Bool),
        ("collector.netclass.netlink", Bool),
        ("collector.netclass_rtnl.with-stats", Bool),
        ("collector.netdev.device-include", Value("^eth")),
        ("collector.netdev.device-whitelist", Value("^eth")),
        ("collector.netdev.device-exclude", Value("^lo$")),
        ("collector.netdev.device-blacklist", Value("^lo$")),
        ("collector.netdev.address-info", Bool),
        ("collector.netdev.enable-detailed-metrics", Bool),
        ("collector.netdev.netlink", Bool),
        ("collector.netdev.label-ifalias", Bool),
        ("collector.netstat.fields", Value("^Tcp_.*")),
        ("collector.ntp.server", Value("127.0.0.1")),
        ("collector.ntp.server-port", Value("123")),
        ("collector.ntp.protocol-version", Value("4")),
        ("collector.ntp.server-is-local", Bool),
        ("collector.ntp.ip-ttl", Value("1")),
        ("collector.ntp.max-distance", Value("3.46608s")),
        ("collector.ntp.local-offset-tolerance", Value("1ms")),
        (
            "collector.pcidevice.idsfile",
            Value("/usr/share/misc/pci.ids"),
        ),
        ("collector.pcidevice.names", Bool),
        ("collector.perf.cpus", Value("0-3")),
        (
            "collector.perf.tracepoint",
            Value("sched:sched_kthread_stop"),
        ),
        ("collector.perf.disable-hardware-profilers", Bool),
        ("collector.perf.hardware-profilers", Value("CpuCycles")),
        ("collector.perf.disable-software-profilers", Bool),
        ("collector.perf.software-profilers", Value("ContextSwitch")),
        ("collector.perf.disable-cache-profilers", Bool),
        ("collector.perf.cache-profilers", Value("L1-dcache-loads")),
        ("collector.powersupply.ignored-supplies", Value("^AC$")),
        ("collector.qdisc.fixtures", Value("")),
        ("collector.qdisc.device-include", Value("^eth")),
        ("collector.qdisk.device-include", Value("^eth")),
        ("collector.qdisc.device-exclude", Value("^lo$")),
        ("collector.qdisk.device-exclude", Value("^lo$")),
        ("collector.rapl.enable-zone-label", Bool),
        ("collector.runit.servicedir", Value("/etc/service")),
        ("collector.slabinfo.slabs-include", Value(".*")),
        ("collector.slabinfo.slabs-exclude", Value("^kmalloc")),
        ("collector.stat.softirq", Bool),
        (
            "collector.supervisord.url",
            Value("http://localhost:9001/RPC2"),
        ),
        ("collector.sysctl.include", Value("vm.swappiness")),
        ("collector.sysctl.include-info", Value("kernel.hostname")),
        ("collector.systemd.unit-include", Value(".+\\.service")),
        ("collector.systemd.unit-whitelist", Value(".+\\.service")),
        (
            "collector.systemd.unit-exclude",
            Value(".+\\.(mount|scope)"),
        ),
        ("collector.systemd.unit-blacklist", Value(".+\\.scope")),
        ("collector.systemd.private", Bool),
        ("collector.systemd.enable-task-metrics", Bool),
        ("collector.systemd.enable-restarts-metrics", Bool),
        ("collector.systemd.enable-start-time-metrics", Bool),
        ("collector.tapestats.ignored-devices", Value("^$")),
        (
            "collector.textfile.directory",
            Value("/var/lib/node_exporter/textfile_collector"),
        ),
        ("collector.vmstat.fields", Value("^(oom_kill|pgpg|pswp).*")),
        ("collector.wifi.fixtures", Value("")),
    ];

    /// Every Linux collector of node_exporter 1.12.1 and whether it is on by default.
    const COLLECTORS: &[(&str, bool)] = &[
        ("arp", true),
        ("bcache", true),
        ("bcachefs", true),
        ("bonding", true),
        ("btrfs", true),
        ("buddyinfo", false),
        ("cgroups", false),
        ("conntrack", true),
        ("cpu", true),
        ("cpu_vulnerabilities", false),
        ("cpufreq", true),
        ("diskstats", true),
        ("dmi", true),
        ("dmmultipath", true),
        ("drbd", false),
        ("drm", false),
        ("edac", true),
        ("entropy", true),
        ("ethtool", false),
        ("fibrechannel", true),
        ("filefd", true),
        ("filesystem", true),
        ("hwmon", true),
        ("infiniband", true),
        ("interrupts", false),
        ("ipvs", true),
        ("kernel_hung", true),
        ("ksmd", false),
        ("lnstat", false),
        ("loadavg", true),
        ("logind", false),
        ("mdadm", true),
        ("meminfo", true),
        ("meminfo_numa", false),
        ("mountstats", false),
        ("netclass", true),
        ("netdev", true),
        ("netstat", true),
        ("network_route", false),
        ("nfs", true),
        ("nfsd", true),
        ("ntp", false),
        ("nvme", true),
        ("nvmesubsystem", false),
        ("os", true),
        ("pcidevice", false),
        ("perf", false),
        ("powersupplyclass", true),
        ("pressure", true),
        ("processes", false),
        ("qdisc", false),
        ("rapl", true),
        ("runit", false),
        ("schedstat", true),
        ("selinux", true),
        ("slabinfo", false),
        ("sockstat", true),
        ("softirqs", false),
        ("softnet", true),
        ("stat", true),
        ("supervisord", false),
        ("swap", false),
        ("sysctl", false),
        ("systemd", false),
        ("tapestats", true),
        ("tcpstat", false),
        ("textfile", true),
        ("thermal_zone", true),
        ("time", true),
        ("timex", true),
        ("udp_queues", true),
        ("uname", true),
        ("vmstat", true),
        ("watchdog", true),
        ("wifi", false),
        ("xfrm", false),
        ("xfs", true),
        ("zfs", true),
        ("zoneinfo", false),
    ];

    fn parse(args: &[String]) -> Result<ArgMatches, clap::Error> {
        command().try_get_matches_from(
            std::iter::once("nodewarden-agent").chain(args.iter().map(String::as_str)),
        )
    }

    #[test]
    fn every_flag_is_accepted_and_builds() {
        let paths = Paths::default();
        for (flag, takes) in FLAGS {
            let forms: Vec<Vec<String>> = match takes {
                Bool => vec![
                    vec![format!("--{flag}")],
                    vec![format!("--no-{flag}")],
                    vec![format!("--{flag}=false")],
                ],
                Value(value) => vec![
                    vec![format!("--{flag}={value}")],
                    vec![format!("--{flag}"), value.to_string()],
                ],
            };
            for args in forms {
                let m = parse(&args).unwrap_or_else(|e| panic!("{args:?} refused: {e}"));
                if let Err(e) = build_collectors(&m, &paths) {
                    panic!("{args:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn every_collector_switch_is_accepted_with_1_12_1_defaults() {
        let known: Vec<(&str, bool)> = collector::registry::ALL
            .iter()
            .map(|r| (r.name, r.default_enabled))
            .collect();
        let mut names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let recorded: Vec<&str> = COLLECTORS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, recorded, "the agent's collectors are 1.12.1's");
        let defaults = parse(&[]).unwrap();
        for (name, default) in COLLECTORS {
            let (_, ours) = known.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(ours, default, "{name}'s default");
            assert_eq!(
                collector_enabled(&defaults, name, *ours),
                *default,
                "{name}"
            );
            let on = parse(&[format!("--collector.{name}")]).unwrap();
            assert!(collector_enabled(&on, name, *ours), "--collector.{name}");
            let off = parse(&[format!("--no-collector.{name}")]).unwrap();
            assert!(
                !collector_enabled(&off, name, *ours),
                "--no-collector.{name}"
            );
        }
        // Asked for on the command line, a collector is built; refused, it is not.
        let m = parse(&["--collector.systemd".into(), "--no-collector.zfs".into()]).unwrap();
        let built = build_collectors(&m, &Paths::default()).unwrap();
        assert!(built.iter().any(|(n, _)| *n == "systemd"));
        assert!(!built.iter().any(|(n, _)| *n == "zfs"));
    }

    #[test]
    fn the_agent_has_no_flag_node_exporter_lacks() {
        let command = command();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let base = long.strip_prefix("no-").unwrap_or(long);
            let known = FLAGS.iter().any(|(f, _)| *f == base)
                || base
                    .strip_prefix("collector.")
                    .is_some_and(|c| COLLECTORS.iter().any(|(n, _)| *n == c))
                // nodewarden's own: the agent config (controller link, operations).
                || base == "config";
            assert!(known, "--{long} is not a node_exporter 1.12.1 flag");
        }
    }

    #[test]
    fn repeatable_flags_keep_every_value() {
        let m = parse(&[
            "--web.listen-address=:9100".into(),
            "--web.listen-address=127.0.0.1:9200".into(),
        ])
        .unwrap();
        assert_eq!(
            metrics_options(&m).listen_addresses,
            [":9100", "127.0.0.1:9200"]
        );
        let m = parse(&["--web.systemd-socket".into(), "--log.format=json".into()]).unwrap();
        let options = metrics_options(&m);
        assert!(options.systemd_socket && options.log_format == "json");
        assert!(parse(&["--log.format=xml".into()]).is_err());
    }
}
