//! `drbd`: DRBD 8 device statistics from /proc/drbd, as node_exporter 1.12.1 reads them: the
//! file is split into whitespace-separated words, `<N>:` starts device `drbd<N>`, and the
//! `key:value` words it knows become metrics (`ns`, `dw`, `dr` and `oos` are KiB, scaled to
//! bytes; `nr` is not scaled, as in 1.12.1). Other words are ignored. DRBD 9's /proc/drbd
//! (version lines only) gives no metrics.
//!
//! No /proc/drbd: NoData. An unparsable number stops the parse and fails the collection (what
//! came before it is still written, as node_exporter sends each sample as it goes).
//!
//! Deviation: a `ro:`/`ds:` word without a `/` makes node_exporter panic (index out of range);
//! here it is skipped and counted as malformed.
//!
//! Cost: /proc/drbd is kept open and re-read each scrape; when absent it is not probed again in
//! the same hotplug epoch (loading the drbd module raises a uevent).

use std::fmt::Write as _;

use super::source::{Absence, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "drbd",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(DrbdCollector::default()))
}

/// (key, metric, help, kind, multiplier).
const NUMERICAL: [(&str, &str, &str, Kind, f64); 12] = [
    (
        "ns",
        "node_drbd_network_sent_bytes_total",
        "Total number of bytes sent via the network.",
        Kind::Counter,
        1024.0,
    ),
    (
        "nr",
        "node_drbd_network_received_bytes_total",
        "Total number of bytes received via the network.",
        Kind::Counter,
        1.0,
    ),
    (
        "dw",
        "node_drbd_disk_written_bytes_total",
        "Net data written on local hard disk; in bytes.",
        Kind::Counter,
        1024.0,
    ),
    (
        "dr",
        "node_drbd_disk_read_bytes_total",
        "Net data read from local hard disk; in bytes.",
        Kind::Counter,
        1024.0,
    ),
    (
        "al",
        "node_drbd_activitylog_writes_total",
        "Number of updates of the activity log area of the meta data.",
        Kind::Counter,
        1.0,
    ),
    (
        "bm",
        "node_drbd_bitmap_writes_total",
        "Number of updates of the bitmap area of the meta data.",
        Kind::Counter,
        1.0,
    ),
    (
        "lo",
        "node_drbd_local_pending",
        "Number of open requests to the local I/O sub-system.",
        Kind::Gauge,
        1.0,
    ),
    (
        "pe",
        "node_drbd_remote_pending",
        "Number of requests sent to the peer, but that have not yet been answered by the latter.",
        Kind::Gauge,
        1.0,
    ),
    (
        "ua",
        "node_drbd_remote_unacknowledged",
        "Number of requests received by the peer via the network connection, but that have not yet been answered.",
        Kind::Gauge,
        1.0,
    ),
    (
        "ap",
        "node_drbd_application_pending",
        "Number of block I/O requests forwarded to DRBD, but not yet answered by DRBD.",
        Kind::Gauge,
        1.0,
    ),
    (
        "ep",
        "node_drbd_epochs",
        "Number of Epochs currently on the fly.",
        Kind::Gauge,
        1.0,
    ),
    (
        "oos",
        "node_drbd_out_of_sync_bytes",
        "Amount of data known to be out of sync; in bytes.",
        Kind::Gauge,
        1024.0,
    ),
];

/// (key, metric, help, value that reads 1).
const PAIRS: [(&str, &str, &str, &str); 2] = [
    (
        "ro",
        "node_drbd_node_role_is_primary",
        "Whether the role of the node is in the primary state.",
        "Primary",
    ),
    (
        "ds",
        "node_drbd_disk_state_is_up_to_date",
        "Whether the disk of the node is up to date.",
        "UpToDate",
    ),
];

/// Which family a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Metric {
    Numerical(usize),
    /// (pair index, remote?)
    Pair(usize, bool),
    Connected,
}

struct DrbdCollector {
    source: SourceFile,
    absence: Absence,
    buf: String,
    /// This scrape's samples: (family, device index into `devices`, value).
    samples: Vec<(Metric, usize, f64)>,
    devices: Vec<String>,
}

impl Default for DrbdCollector {
    fn default() -> Self {
        DrbdCollector {
            source: SourceFile::proc("drbd"),
            absence: Absence::default(),
            buf: String::new(),
            samples: Vec::new(),
            devices: Vec::new(),
        }
    }
}

/// Parses /proc/drbd's words into samples; stops at an unparsable number, with its word.
fn parse<'t>(
    text: &'t str,
    devices: &mut Vec<String>,
    samples: &mut Vec<(Metric, usize, f64)>,
    mut malformed: impl FnMut(&str),
) -> Result<(), &'t str> {
    // Label slots reused between scrapes: slot 0 is "unknown", the others are overwritten.
    if devices.is_empty() {
        devices.push("unknown".into());
    }
    let mut used = 1;
    let mut device = 0;
    for word in text.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once(':') else {
            continue;
        };
        if value.contains(':') {
            continue;
        }
        if value.is_empty()
            && !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_digit())
            && let Ok(id) = key.parse::<u64>()
        {
            if used == devices.len() {
                devices.push(String::new());
            }
            let slot = &mut devices[used];
            slot.clear();
            let _ = write!(slot, "drbd{id}");
            device = used;
            used += 1;
            continue;
        }
        if let Some(i) = NUMERICAL.iter().position(|m| m.0 == key) {
            let v: f64 = value.parse().map_err(|_| word)?;
            samples.push((Metric::Numerical(i), device, v * NUMERICAL[i].4));
            continue;
        }
        if let Some(i) = PAIRS.iter().position(|m| m.0 == key) {
            let mut parts = value.split('/');
            let (Some(local), Some(remote)) = (parts.next(), parts.next()) else {
                malformed(word);
                continue;
            };
            let ok = |v: &str| if v == PAIRS[i].3 { 1.0 } else { 0.0 };
            samples.push((Metric::Pair(i, false), device, ok(local)));
            samples.push((Metric::Pair(i, true), device, ok(remote)));
            continue;
        }
        if key == "cs" {
            let connected = if value == "Connected" { 1.0 } else { 0.0 };
            samples.push((Metric::Connected, device, connected));
        }
    }
    Ok(())
}

impl DrbdCollector {
    fn write(&self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        let device = |d: usize| self.devices.get(d).map_or("", String::as_str);
        let has = |m: Metric| self.samples.iter().any(|s| s.0 == m);
        for (i, (_, name, help, kind, _)) in NUMERICAL.iter().enumerate() {
            let m = Metric::Numerical(i);
            if !has(m) {
                continue;
            }
            let mut f = out.family(name, help, *kind)?;
            for &(_, d, v) in self.samples.iter().filter(|s| s.0 == m) {
                f.sample(&[("device", device(d))], v)?;
            }
        }
        for (i, (_, name, help, _)) in PAIRS.iter().enumerate() {
            if !has(Metric::Pair(i, false)) {
                continue;
            }
            let mut f = out.family(name, help, Kind::Gauge)?;
            for &(m, d, v) in self.samples.iter() {
                if let Metric::Pair(j, remote) = m
                    && j == i
                {
                    let node = if remote { "remote" } else { "local" };
                    f.sample(&[("device", device(d)), ("node", node)], v)?;
                }
            }
        }
        if has(Metric::Connected) {
            let mut f = out.family(
                "node_drbd_connected",
                "Whether DRBD is connected to the peer.",
                Kind::Gauge,
            )?;
            for &(_, d, v) in self.samples.iter().filter(|s| s.0 == Metric::Connected) {
                f.sample(&[("device", device(d))], v)?;
            }
        }
        Ok(())
    }
}

impl Collector for DrbdCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let read = self
            .absence
            .read(ctx, || self.source.read_into(ctx.paths, &mut self.buf))?;
        if !read {
            return Err(CollectorError::NoData);
        }
        self.samples.clear();
        let path = self.source.display_path();
        let parsed = parse(&self.buf, &mut self.devices, &mut self.samples, |w| {
            ctx.malformed(path, w)
        });
        let failed = parsed.err().map(|word| CollectorError::Parse {
            path: path.to_path_buf(),
            reason: format!("not a number: {word:?}"),
        });
        self.write(out)?;
        failed.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("hw-storage", "drbd", |_| Box::new(DrbdCollector::default()));
    }

    #[test]
    fn words() {
        let (mut devices, mut samples) = (Vec::new(), Vec::new());
        let mut bad = Vec::new();
        let text =
            "ns:1 0: cs:WFConnection 07: ro:Primary ds:Diskless/DUnknown x:y:z nr:2 al:x bm:1";
        let result = parse(text, &mut devices, &mut samples, |w| {
            bad.push(w.to_string())
        });
        assert_eq!(result, Err("al:x"));
        assert_eq!(devices, ["unknown", "drbd0", "drbd7"]);
        assert_eq!(bad, ["ro:Primary"]);
        assert!(samples.contains(&(Metric::Numerical(0), 0, 1024.0)));
        assert!(samples.contains(&(Metric::Connected, 1, 0.0)));
        assert!(samples.contains(&(Metric::Pair(1, true), 2, 0.0)));
        assert!(samples.contains(&(Metric::Numerical(1), 2, 2.0)));
        assert!(!samples.iter().any(|s| s.0 == Metric::Numerical(5)));
        // Slots are reused by the next parse.
        let mut samples = Vec::new();
        parse("3: cs:Connected", &mut devices, &mut samples, |_| {}).unwrap();
        assert_eq!(devices[1], "drbd3");
        assert_eq!(samples, [(Metric::Connected, 1, 1.0)]);
    }

    #[test]
    fn absent_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let text = crate::collector::testing::render(
            "drbd",
            Box::new(DrbdCollector::default()),
            crate::collector::Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"drbd\"} 0"));
    }
}
