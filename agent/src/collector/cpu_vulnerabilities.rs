//! `cpu_vulnerabilities`: `node_cpu_vulnerabilities_info` from the files of
//! /sys/devices/system/cpu/vulnerabilities (Documentation/ABI/testing/sysfs-devices-system-cpu),
//! as node_exporter 1.12.1 reads them through prometheus/procfs: the state is the content's
//! case-insensitive prefix ("Not affected", "Vulnerable", "Mitigation", "Unknown"), the mitigation
//! the words after the first; any other content ("KVM: Mitigation: VMX disabled") is state
//! "unknown" with the whole content as mitigation. The value is always 1, whatever the help says.
//!
//! No directory is an empty success (the glob matches nothing); a file that cannot be read fails
//! the collection. Cost: the directory is listed once per hotplug epoch and its files are kept
//! open: one pread per vulnerability (about 20 on a 6.x kernel) per scrape.

use super::source::{DirListing, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "cpu_vulnerabilities",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(CpuVulnerabilitiesCollector::default()))
}

#[derive(Default)]
struct CpuVulnerabilitiesCollector {
    listing: DirListing,
    /// One per file of the listing, in name order: name, file, this scrape's content.
    files: Vec<(String, SourceFile, String)>,
    mitigation: String,
}

/// procfs's `parseVulnerability`: the state's name, and the mitigation written into `mitigation`.
fn parse(content: &str, mitigation: &mut String) -> &'static str {
    let content = content.trim();
    let lower = content.to_lowercase();
    mitigation.clear();
    let state = if lower.starts_with("not affected") {
        return "not affected";
    } else if lower.starts_with("vulnerable") {
        "vulnerable"
    } else if lower.starts_with("mitigation") {
        "mitigation"
    } else if lower.starts_with("unknown") {
        "unknown"
    } else {
        mitigation.push_str(content);
        return "unknown";
    };
    for (i, word) in content.split_whitespace().skip(1).enumerate() {
        if i > 0 {
            mitigation.push(' ');
        }
        mitigation.push_str(word);
    }
    state
}

impl Collector for CpuVulnerabilitiesCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let dir = ctx.paths.sys("devices/system/cpu/vulnerabilities");
        let names = self
            .listing
            .names(ctx, &dir, |_| true)
            .map_err(|e| CollectorError::io(&dir, e))?
            .unwrap_or_default();
        if !self.files.iter().map(|(n, _, _)| n).eq(names.iter()) {
            self.files = names
                .iter()
                .map(|name| (name.clone(), SourceFile::at(dir.join(name)), String::new()))
                .collect();
        }
        if self.files.is_empty() {
            return Ok(());
        }
        // Every file is read before anything is written: a failure reports nothing.
        for (_, file, content) in &mut self.files {
            file.read_into(ctx.paths, content)?;
        }
        let mut f = out.family(
            "node_cpu_vulnerabilities_info",
            "Details of each CPU vulnerability reported by sysfs. The value of the series is an int encoded state of the vulnerability. The same state is stored as a string in the label",
            Kind::Gauge,
        )?;
        for (name, _, content) in &self.files {
            let state = parse(content, &mut self.mitigation);
            f.sample(
                &[
                    ("codename", name),
                    ("mitigation", &self.mitigation),
                    ("state", state),
                ],
                1.0,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-system", "cpu_vulnerabilities", |_| {
            Box::new(CpuVulnerabilitiesCollector::default())
        });
    }

    #[test]
    fn states_and_mitigations() {
        let mut m = String::new();
        assert_eq!(parse("Not affected\n", &mut m), "not affected");
        assert_eq!(m, "");
        assert_eq!(parse("Vulnerable\n", &mut m), "vulnerable");
        assert_eq!(m, "");
        assert_eq!(parse("Mitigation: PTI  \t now\n", &mut m), "mitigation");
        assert_eq!(m, "PTI now");
        assert_eq!(parse("UNKNOWN: No mitigations", &mut m), "unknown");
        assert_eq!(m, "No mitigations");
        assert_eq!(parse("KVM: Mitigation: VMX disabled\n", &mut m), "unknown");
        assert_eq!(m, "KVM: Mitigation: VMX disabled");
        assert_eq!(parse("", &mut m), "unknown");
        assert_eq!(m, "");
    }

    #[test]
    fn no_directory_is_empty_and_unreadable_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render(
            "cpu_vulnerabilities",
            Box::new(CpuVulnerabilitiesCollector::default()),
            paths.clone(),
        );
        assert!(
            text.contains("node_scrape_collector_success{collector=\"cpu_vulnerabilities\"} 1")
        );
        assert!(!text.contains("node_cpu_vulnerabilities_info"));
        let vulns = dir.path().join("sys/devices/system/cpu/vulnerabilities");
        std::fs::create_dir_all(vulns.join("subdir")).unwrap();
        std::fs::write(vulns.join("meltdown"), "Not affected\n").unwrap();
        let text = render(
            "cpu_vulnerabilities",
            Box::new(CpuVulnerabilitiesCollector::default()),
            paths,
        );
        assert!(
            text.contains("node_scrape_collector_success{collector=\"cpu_vulnerabilities\"} 0")
        );
        assert!(!text.contains("node_cpu_vulnerabilities_info"));
    }
}
