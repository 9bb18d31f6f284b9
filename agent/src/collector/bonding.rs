//! `bonding`: configured and active slaves of each Linux bonding master, as node_exporter 1.12.1
//! reads them: the masters from /sys/class/net/bonding_masters, each master's slaves from
//! `<master>/bonding/slaves`, and a slave counts as active when its
//! `<master>/lower_<slave>/bonding_slave/mii_status` (`slave_<slave>` on old kernels) reads `up`.
//!
//! No bonding_masters (the bonding module not loaded) is `NoData`, remembered for the hotplug
//! epoch, so hosts without bonds pay one failed open per epoch. The files read every scrape are
//! kept open. Any other unreadable file fails the collection, as in 1.12.1. Samples are written
//! sorted by master (node_exporter's registry sorts them; its map order is random).

use std::collections::HashMap;
use std::path::PathBuf;

use super::source::{Absence, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Paths,
    Registration, no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "bonding",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(BondingCollector::default()))
}

/// Files found at run time (one bond's slaves, one slave's MII status), kept open between
/// scrapes; those not read in a scrape are closed at its end.
#[derive(Default)]
pub(crate) struct OpenFiles {
    files: HashMap<PathBuf, (SourceFile, u64)>,
    scrape: u64,
}

impl OpenFiles {
    pub(crate) fn read(
        &mut self,
        paths: &Paths,
        path: PathBuf,
        buf: &mut String,
    ) -> Result<(), CollectorError> {
        let scrape = self.scrape;
        let entry = self
            .files
            .entry(path)
            .or_insert_with_key(|p| (SourceFile::at(p.clone()), scrape));
        entry.1 = scrape;
        entry.0.read_into(paths, buf)
    }

    /// Closes the files not read since the last call.
    pub(crate) fn finish_scrape(&mut self) {
        let scrape = self.scrape;
        self.files.retain(|_, (_, seen)| *seen == scrape);
        self.scrape = scrape.wrapping_add(1);
    }
}

struct BondingCollector {
    masters: SourceFile,
    absent: Absence,
    files: OpenFiles,
    masters_buf: String,
    slaves_buf: String,
    state_buf: String,
    /// (master, configured, active), sorted by master.
    stats: Vec<(String, u64, u64)>,
}

impl Default for BondingCollector {
    fn default() -> Self {
        BondingCollector {
            masters: SourceFile::sys("class/net/bonding_masters"),
            absent: Absence::default(),
            files: OpenFiles::default(),
            masters_buf: String::new(),
            slaves_buf: String::new(),
            state_buf: String::new(),
            stats: Vec::new(),
        }
    }
}

fn not_found(e: &CollectorError) -> bool {
    matches!(e, CollectorError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

impl BondingCollector {
    /// Fills `stats`; `Ok(false)` when there is no bonding_masters.
    fn read_stats(&mut self, ctx: &Context<'_>) -> Result<bool, CollectorError> {
        let BondingCollector {
            masters,
            absent,
            files,
            masters_buf,
            slaves_buf,
            state_buf,
            stats,
        } = self;
        if !absent.read(ctx, || masters.read_into(ctx.paths, masters_buf))? {
            return Ok(false);
        }
        let net = ctx.paths.sys("class/net");
        stats.clear();
        for master in masters_buf.split_ascii_whitespace() {
            let dir = net.join(master);
            files.read(ctx.paths, dir.join("bonding/slaves"), slaves_buf)?;
            let (mut configured, mut active) = (0, 0);
            for slave in slaves_buf.split_ascii_whitespace() {
                let lower = dir.join(format!("lower_{slave}/bonding_slave/mii_status"));
                match files.read(ctx.paths, lower, state_buf) {
                    Err(e) if not_found(&e) => {
                        // Some older kernels name the link slave_<name>.
                        let old = dir.join(format!("slave_{slave}/bonding_slave/mii_status"));
                        files.read(ctx.paths, old, state_buf)?;
                    }
                    other => other?,
                }
                configured += 1;
                if state_buf.trim() == "up" {
                    active += 1;
                }
            }
            stats.push((master.to_string(), configured, active));
        }
        stats.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(true)
    }
}

impl Collector for BondingCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let found = self.read_stats(ctx);
        self.files.finish_scrape();
        if !found? {
            return Err(CollectorError::NoData);
        }
        let mut f = out.family(
            "node_bonding_slaves",
            "Number of configured slaves per bonding interface.",
            Kind::Gauge,
        )?;
        for (master, configured, _) in &self.stats {
            f.sample(&[("master", master)], *configured as f64)?;
        }
        let mut f = out.family(
            "node_bonding_active",
            "Number of active slaves per bonding interface.",
            Kind::Gauge,
        )?;
        for (master, _, active) in &self.stats {
            f.sample(&[("master", master)], *active as f64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-network", "bonding", |_| {
            Box::new(BondingCollector::default())
        });
    }

    fn write(root: &std::path::Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn old_kernels_slave_links_and_no_bonding() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        std::fs::create_dir_all(dir.path().join("sys/class/net")).unwrap();
        let text = render(
            "bonding",
            Box::new(BondingCollector::default()),
            paths.clone(),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"bonding\"} 0"));
        assert!(!text.contains("node_bonding_slaves"));

        write(dir.path(), "sys/class/net/bonding_masters", "bond0\n");
        write(
            dir.path(),
            "sys/class/net/bond0/bonding/slaves",
            "eth0 eth1\n",
        );
        write(
            dir.path(),
            "sys/class/net/bond0/slave_eth0/bonding_slave/mii_status",
            "up\n",
        );
        write(
            dir.path(),
            "sys/class/net/bond0/slave_eth1/bonding_slave/mii_status",
            "down\n",
        );
        let text = render(
            "bonding",
            Box::new(BondingCollector::default()),
            paths.clone(),
        );
        assert!(
            text.contains("node_bonding_slaves{master=\"bond0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("node_bonding_active{master=\"bond0\"} 1\n"),
            "{text}"
        );

        // A slave whose state cannot be read fails the collection, as in node_exporter.
        write(
            dir.path(),
            "sys/class/net/bond0/bonding/slaves",
            "eth0 eth2\n",
        );
        let text = render("bonding", Box::new(BondingCollector::default()), paths);
        assert!(text.contains("node_scrape_collector_success{collector=\"bonding\"} 0"));
    }

    #[test]
    fn files_kept_open_are_closed_when_no_longer_read() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        write(dir.path(), "sys/a", "1");
        write(dir.path(), "sys/b", "2");
        let mut files = OpenFiles::default();
        let mut buf = String::new();
        files
            .read(&paths, dir.path().join("sys/a"), &mut buf)
            .unwrap();
        files
            .read(&paths, dir.path().join("sys/b"), &mut buf)
            .unwrap();
        files.finish_scrape();
        files
            .read(&paths, dir.path().join("sys/b"), &mut buf)
            .unwrap();
        assert_eq!(buf, "2");
        files.finish_scrape();
        assert_eq!(files.files.len(), 1);
    }
}
