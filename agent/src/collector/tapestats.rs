//! `tapestats`: SCSI tape drive statistics from /sys/class/scsi_tape/st*/stats, as node_exporter
//! 1.12.1 reports them (prometheus/procfs 0.21.1's `SCSITapeClass`; the kernel's
//! Documentation/scsi/st.rst describes the files).
//!
//! Only the `st<N>` entries are read (not the `nst<N>`, `st<N>a`/`l`/`m` mode devices, which
//! share the drive's statistics). `--collector.tapestats.ignored-devices` (default `^$`) is
//! matched unanchored, as Go's `MatchString`. Times are nanoseconds scaled to seconds.
//!
//! As in 1.12.1: no /sys/class/scsi_tape, or a tape without `stats/`, is NoData; an unreadable
//! statistics file fails the collection; nothing is written either way. A counter file missing
//! from `stats/` reads as 0.
//!
//! Deviation: an unparsable counter makes procfs dereference a nil pointer and node_exporter
//! panic; here the value is skipped (left 0) and counted as malformed.
//!
//! Cost: the class and each tape's `stats/` are listed once per hotplug epoch; the 10 counters
//! of each tape are kept open ([`OpenAttr`]) and re-read each scrape.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Arg;

use super::flags::unanchored_regex_flag;
use super::source::{DirListing, OpenAttr, entry_digits, same_listing};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "tapestats",
    default_enabled: true,
    flags,
    build,
};

const IGNORED: &str = "collector.tapestats.ignored-devices";

fn flags(command: clap::Command) -> clap::Command {
    command.arg(
        Arg::new(IGNORED)
            .long(IGNORED)
            .default_value("^$")
            .help("Regexp of devices to ignore for tapestats."),
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(TapestatsCollector {
        ignored: unanchored_regex_flag(ctx, IGNORED)?,
        ..TapestatsCollector::default()
    }))
}

/// The statistics files, in the order of [`Tape::counts`].
const FILES: [&str; 10] = [
    "in_flight",
    "io_ns",
    "other_cnt",
    "read_byte_cnt",
    "read_cnt",
    "read_ns",
    "resid_cnt",
    "write_byte_cnt",
    "write_cnt",
    "write_ns",
];

/// (metric, help, kind, index into [`FILES`], scale), in 1.12.1's order.
const METRICS: [(&str, &str, Kind, usize, f64); 10] = [
    (
        "node_tape_io_now",
        "The number of I/Os currently outstanding to this device.",
        Kind::Gauge,
        0,
        1.0,
    ),
    (
        "node_tape_io_time_seconds_total",
        "The amount of time spent waiting for all I/O to complete (including read and write). This includes tape movement commands such as seeking between file or set marks and implicit tape movement such as when rewind on close tape devices are used.",
        Kind::Counter,
        1,
        0.000000001,
    ),
    (
        "node_tape_io_others_total",
        "The number of I/Os issued to the tape drive other than read or write commands. The time taken to complete these commands uses the following calculation io_time_seconds_total-read_time_seconds_total-write_time_seconds_total",
        Kind::Counter,
        2,
        1.0,
    ),
    (
        "node_tape_read_bytes_total",
        "The number of bytes read from the tape drive.",
        Kind::Counter,
        3,
        1.0,
    ),
    (
        "node_tape_reads_completed_total",
        "The number of read requests issued to the tape drive.",
        Kind::Counter,
        4,
        1.0,
    ),
    (
        "node_tape_read_time_seconds_total",
        "The amount of time spent waiting for read requests to complete.",
        Kind::Counter,
        5,
        0.000000001,
    ),
    (
        "node_tape_residual_total",
        "The number of times during a read or write we found the residual amount to be non-zero. This should mean that a program is issuing a read larger thean the block size on tape. For write not all data made it to tape.",
        Kind::Counter,
        6,
        1.0,
    ),
    (
        "node_tape_written_bytes_total",
        "The number of bytes written to the tape drive.",
        Kind::Counter,
        7,
        1.0,
    ),
    (
        "node_tape_writes_completed_total",
        "The number of write requests issued to the tape drive.",
        Kind::Counter,
        8,
        1.0,
    ),
    (
        "node_tape_write_time_seconds_total",
        "The amount of time spent waiting for write requests to complete.",
        Kind::Counter,
        9,
        0.000000001,
    ),
];

#[derive(Default)]
struct TapestatsCollector {
    ignored: Option<regex::Regex>,
    class: DirListing,
    listed: Option<Arc<[String]>>,
    tapes: Vec<Tape>,
    buf: String,
}

struct Tape {
    name: String,
    stats_dir: PathBuf,
    stats: DirListing,
    stats_listed: Option<Arc<[String]>>,
    /// The statistics files present: (index into [`FILES`], attribute).
    files: Vec<(usize, PathBuf, OpenAttr)>,
    counts: [u64; 10],
}

/// procfs's `^st\d+$`.
fn is_tape(name: &str) -> bool {
    entry_digits(name, "st").is_some_and(|d| d.len() + 2 == name.len())
}

impl TapestatsCollector {
    fn read(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        let class = ctx.paths.sys("class/scsi_tape");
        let names = self
            .class
            .names(ctx, &class, |e| is_tape(&e.file_name().to_string_lossy()))
            .map_err(|e| CollectorError::io(&class, e))?;
        if names.is_none() {
            return Err(CollectorError::NoData);
        }
        if !same_listing(&names, &self.listed) {
            self.tapes = names
                .iter()
                .flat_map(|n| n.iter())
                .map(|name| Tape {
                    name: name.clone(),
                    stats_dir: class.join(name).join("stats"),
                    stats: DirListing::default(),
                    stats_listed: None,
                    files: Vec::new(),
                    counts: [0; 10],
                })
                .collect();
            self.listed = names;
        }
        let buf = &mut self.buf;
        for tape in &mut self.tapes {
            let stats = tape
                .stats
                .names(ctx, &tape.stats_dir, |_| true)
                .map_err(|e| CollectorError::io(&tape.stats_dir, e))?;
            // procfs returns ReadDir's error unwrapped: a tape without stats is "not exist".
            let Some(list) = &stats else {
                return Err(CollectorError::NoData);
            };
            if !same_listing(&stats, &tape.stats_listed) {
                tape.files = FILES
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| list.iter().any(|n| n == *f))
                    .map(|(i, f)| (i, tape.stats_dir.join(f), OpenAttr::default()))
                    .collect();
                tape.stats_listed = stats;
            }
            tape.counts = [0; 10];
            for (i, path, attr) in &mut tape.files {
                attr.read(path, buf)
                    .map_err(|e| CollectorError::io(&*path, e))?;
                match super::gosyntax::parse_go_uint(buf) {
                    Some(v) => tape.counts[*i] = v,
                    None => ctx.malformed(path, buf),
                }
            }
        }
        Ok(())
    }
}

impl Collector for TapestatsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.read(ctx)?;
        let ignored = self.ignored.as_ref();
        let shown = || {
            self.tapes
                .iter()
                .filter(|t| !ignored.is_some_and(|re| re.is_match(&t.name)))
        };
        if shown().next().is_none() {
            return Ok(());
        }
        for (name, help, kind, index, scale) in METRICS {
            let mut f = out.family(name, help, kind)?;
            for tape in shown() {
                let value = tape.counts[index] as f64;
                let value = if scale == 1.0 { value } else { value * scale };
                f.sample(&[("device", &tape.name)], value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, build_with, fixture, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-storage", "tapestats", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn tape_names() {
        assert!(is_tape("st0") && is_tape("st12"));
        assert!(!is_tape("nst0") && !is_tape("st0a") && !is_tape("st") && !is_tape("stx"));
    }

    #[test]
    fn ignored_devices_unanchored() {
        let paths = Paths::fixture(&fixture("hw-storage"));
        let collector = build_with(
            &REGISTRATION,
            &["--collector.tapestats.ignored-devices=1"],
            &paths,
        );
        let text = render("tapestats", collector, paths);
        assert!(text.contains("device=\"st0\""));
        assert!(!text.contains("device=\"st1\""));
    }

    #[test]
    fn missing_stats_is_no_data_and_bad_values_are_malformed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class")).unwrap();
        let scrape = || {
            render(
                "tapestats",
                Box::new(TapestatsCollector::default()),
                Paths::fixture(dir.path()),
            )
        };
        let failed = "node_scrape_collector_success{collector=\"tapestats\"} 0";
        assert!(scrape().contains(failed));
        let st = dir.path().join("sys/class/scsi_tape/st0");
        std::fs::create_dir_all(&st).unwrap();
        assert!(scrape().contains(failed));
        std::fs::create_dir_all(st.join("stats")).unwrap();
        std::fs::write(st.join("stats/read_cnt"), "x\n").unwrap();
        std::fs::write(st.join("stats/io_ns"), "1500000000\n").unwrap();
        let text = scrape();
        assert!(text.contains("node_tape_reads_completed_total{device=\"st0\"} 0"));
        assert!(text.contains("node_tape_io_time_seconds_total{device=\"st0\"} 1.5"));
        assert!(text.contains("nodewarden_agent_malformed_lines_total 1"));
    }
}
