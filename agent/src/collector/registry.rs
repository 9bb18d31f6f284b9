//! The registry: every collector the agent knows, in the order they run. It sits above the
//! collectors (it names them all) while the framework in `collector/mod.rs` sits below them;
//! the CLI and the scraper are driven from [`ALL`] alone.

use super::*;

/// Every collector the agent knows, in the order they run.
pub static ALL: &[&Registration] = &[
    &arp::REGISTRATION,
    &bcache::REGISTRATION,
    &bcachefs::REGISTRATION,
    &bonding::REGISTRATION,
    &btrfs::REGISTRATION,
    &buddyinfo::REGISTRATION,
    &cgroups::REGISTRATION,
    &conntrack::REGISTRATION,
    &cpu::REGISTRATION,
    &cpu_vulnerabilities::REGISTRATION,
    &cpufreq::REGISTRATION,
    &diskstats::REGISTRATION,
    &dmi::REGISTRATION,
    &dmmultipath::REGISTRATION,
    &drbd::REGISTRATION,
    &drm::REGISTRATION,
    &edac::REGISTRATION,
    &entropy::REGISTRATION,
    &ethtool::REGISTRATION,
    &fibrechannel::REGISTRATION,
    &filefd::REGISTRATION,
    &filesystem::REGISTRATION,
    &hwmon::REGISTRATION,
    &infiniband::REGISTRATION,
    &interrupts::REGISTRATION,
    &ipvs::REGISTRATION,
    &kernel_hung::REGISTRATION,
    &ksmd::REGISTRATION,
    &lnstat::REGISTRATION,
    &loadavg::REGISTRATION,
    &logind::REGISTRATION,
    &mdadm::REGISTRATION,
    &meminfo::REGISTRATION,
    &meminfo_numa::REGISTRATION,
    &mountstats::REGISTRATION,
    &netclass::REGISTRATION,
    &netdev::REGISTRATION,
    &netstat::REGISTRATION,
    &network_route::REGISTRATION,
    &nfs::REGISTRATION,
    &nfsd::REGISTRATION,
    &ntp::REGISTRATION,
    &nvme::REGISTRATION,
    &nvmesubsystem::REGISTRATION,
    &os::REGISTRATION,
    &pcidevice::REGISTRATION,
    &perf::REGISTRATION,
    &powersupplyclass::REGISTRATION,
    &pressure::REGISTRATION,
    &processes::REGISTRATION,
    &qdisc::REGISTRATION,
    &rapl::REGISTRATION,
    &runit::REGISTRATION,
    &schedstat::REGISTRATION,
    &selinux::REGISTRATION,
    &slabinfo::REGISTRATION,
    &sockstat::REGISTRATION,
    &softirqs::REGISTRATION,
    &softnet::REGISTRATION,
    &stat::REGISTRATION,
    &supervisord::REGISTRATION,
    &swap::REGISTRATION,
    &sysctl::REGISTRATION,
    &systemd::REGISTRATION,
    &tapestats::REGISTRATION,
    &tcpstat::REGISTRATION,
    &textfile::REGISTRATION,
    &thermal_zone::REGISTRATION,
    &time::REGISTRATION,
    &timex::REGISTRATION,
    &udp_queues::REGISTRATION,
    &uname::REGISTRATION,
    &vmstat::REGISTRATION,
    &watchdog::REGISTRATION,
    &wifi::REGISTRATION,
    &xfrm::REGISTRATION,
    &xfs::REGISTRATION,
    &zfs::REGISTRATION,
    &zoneinfo::REGISTRATION,
];

#[cfg(test)]
mod tests {
    fn matches(args: &[&str]) -> clap::ArgMatches {
        crate::cli::command()
            .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn every_collector_builds_from_default_and_node_exporter_style_flags() {
        let paths = crate::collector::Paths::default();
        let all: Vec<String> = super::ALL
            .iter()
            .map(|r| format!("--collector.{}", r.name))
            .collect();
        let mut args: Vec<&str> = all.iter().map(String::as_str).collect();
        let built = crate::cli::build_collectors(&matches(&args), &paths).unwrap();
        assert_eq!(built.len(), super::ALL.len());
        args.extend([
            "--collector.netdev.netlink=false",
            "--collector.netdev.address-info",
            "--collector.netdev.device-exclude=^lo$",
            "--collector.filesystem.mount-timeout=500ms",
            "--collector.diskstats.device-include=^sd",
            "--collector.textfile.directory=/nonexistent",
            "--collector.netclass.ignore-invalid-speed",
            "--collector.bcache.priorityStats",
            "--collector.netclass.netlink",
            "--collector.netdev.enable-detailed-metrics",
        ]);
        crate::cli::build_collectors(&matches(&args), &paths).unwrap();
    }

    #[test]
    fn bad_flag_values_are_build_errors() {
        let paths = crate::collector::Paths::default();
        for bad in [
            "--collector.filesystem.mount-timeout=soon",
            "--collector.filesystem.mount-points-exclude=(",
            "--collector.netdev.device-exclude=[",
        ] {
            assert!(
                crate::cli::build_collectors(&matches(&[bad]), &paths).is_err(),
                "{bad} accepted"
            );
        }
        let both = matches(&[
            "--collector.netdev.device-exclude=^lo$",
            "--collector.netdev.device-include=^eth",
        ]);
        assert!(crate::cli::build_collectors(&both, &paths).is_err());
    }
}
