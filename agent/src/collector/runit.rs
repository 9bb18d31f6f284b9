//! `runit` (deprecated in node_exporter, still served by 1.12.1): the state of each runit service
//! under `--collector.runit.servicedir`, read from `supervise/status` as node_exporter does it
//! with go-runit 0.1: every directory or symlink there is a service; its status file is runsv's
//! 20 bytes (a TAI64N label, the pid little-endian at 12..16, the wanted state `u`/`d` at 17, the
//! state 0 down / 1 run / 2 finish at 19). "Normally up" is the absence of `supervise/down`
//! (go-runit looks there, not at the service directory's own `down` file; kept as it is).
//!
//! Decisions (as go-runit): one `read` of up to 20 bytes, a short file read as zeros past its
//! end; an empty or unreadable one skips the service. An unreadable service directory fails the
//! scrape (node_exporter returns the error; no `NoData`). Samples come sorted by service.

use std::io::Read;
use std::path::PathBuf;

use clap::{Arg, Command};

use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "runit",
    default_enabled: false,
    flags,
    build,
};

const SERVICE_DIR: &str = "collector.runit.servicedir";

fn flags(command: Command) -> Command {
    command.arg(
        Arg::new(SERVICE_DIR)
            .long(SERVICE_DIR)
            .default_value("/etc/service")
            .help("Path to runit service directory."),
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    tracing::warn!(
        "the runit collector is deprecated and will be removed in the next major version release"
    );
    let dir = match ctx.flag(SERVICE_DIR) {
        Some("") | None => "/etc/service",
        Some(dir) => dir,
    };
    Ok(Box::new(RunitCollector { dir: dir.into() }))
}

struct RunitCollector {
    dir: PathBuf,
}

/// TAI64's label of Unix time 0 (2^62 + 10 s).
const TAI_OFFSET: i64 = 4_611_686_018_427_387_914;

#[derive(Debug, PartialEq)]
struct Status {
    state: u8,
    want: u8,
    timestamp: i64,
    normally_up: bool,
}

/// go-runit's parse of the (zero-padded) 20 status bytes.
fn parse(status: &[u8; 20], normally_up: bool) -> Status {
    let tai = status[..8].iter().fold(0i64, |acc, &b| {
        acc.wrapping_shl(8).wrapping_add(i64::from(b))
    });
    Status {
        state: status[19],
        want: match status[17] {
            b'u' => 1,
            _ => 0,
        },
        timestamp: tai.wrapping_sub(TAI_OFFSET),
        normally_up,
    }
}

impl RunitCollector {
    fn status(&self, name: &str) -> std::io::Result<Status> {
        let supervise = self.dir.join(name).join("supervise");
        let mut file = std::fs::File::open(supervise.join("status"))?;
        let mut bytes = [0u8; 20];
        // One read, as go-runit's `file.Read`: a short file leaves zeros; an empty one is EOF.
        let n = file.read(&mut bytes)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let normally_up = std::fs::metadata(supervise.join("down")).is_err();
        Ok(parse(&bytes, normally_up))
    }
}

impl Collector for RunitCollector {
    fn update(
        &mut self,
        _ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| CollectorError::io(&self.dir, e))?;
        let mut services: Vec<(String, Status)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CollectorError::io(&self.dir, e))?;
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !(kind.is_dir() || kind.is_symlink()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match self.status(&name) {
                Ok(status) => services.push((name, status)),
                Err(e) => tracing::debug!(service = name, error = %e, "couldn't get status"),
            }
        }
        if services.is_empty() {
            return Ok(());
        }
        services.sort_by(|a, b| a.0.cmp(&b.0));
        type Field = fn(&Status) -> f64;
        let families: [(&str, &str, Field); 4] = [
            (
                "node_service_desired_state",
                "Desired state of runit service.",
                |s| f64::from(s.want),
            ),
            (
                "node_service_normal_state",
                "Normal state of runit service.",
                |s| if s.normally_up { 1.0 } else { 0.0 },
            ),
            ("node_service_state", "State of runit service.", |s| {
                f64::from(s.state)
            }),
            (
                "node_service_state_last_change_timestamp_seconds",
                "Unix timestamp of the last runit service state change.",
                |s| s.timestamp as f64,
            ),
        ];
        for (name, help, value) in families {
            let mut family = out.family(name, help, Kind::Gauge)?;
            for (service, status) in &services {
                family.sample(
                    &[("service", service), ("supervisor", "runit")],
                    value(status),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, build_with, fixture, render};

    #[test]
    fn services_from_status_files() {
        let dir = fixture("hw-services/runit/service");
        let flag = format!("--collector.runit.servicedir={}", dir.display());
        let c = build_with(&REGISTRATION, &[&flag], &Paths::default());
        let text = render("runit", c, Paths::default());
        assert_golden(&fixture("hw-services/golden").join("runit.prom"), &text);
    }

    #[test]
    fn missing_service_dir_fails_the_scrape() {
        let c = build_with(
            &REGISTRATION,
            &["--collector.runit.servicedir=/nonexistent/service"],
            &Paths::default(),
        );
        let text = render("runit", c, Paths::default());
        assert!(!text.contains("node_service_"), "{text}");
        assert!(text.contains("node_scrape_collector_success{collector=\"runit\"} 0\n"));
    }

    #[test]
    fn status_bytes() {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&((TAI_OFFSET as u64) + 1_700_000_000).to_be_bytes());
        b[12..16].copy_from_slice(&4242u32.to_le_bytes());
        b[17] = b'd';
        b[19] = 2;
        assert_eq!(
            parse(&b, false),
            Status {
                state: 2,
                want: 0,
                timestamp: 1_700_000_000,
                normally_up: false
            }
        );
        // All zeros (a short file): TAI 0, before 1970 by TAI64's offset.
        assert_eq!(parse(&[0; 20], true).timestamp, -TAI_OFFSET);
    }
}
