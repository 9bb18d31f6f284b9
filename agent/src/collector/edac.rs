//! `edac`: memory controller error counters from /sys/devices/system/edac/mc, as node_exporter
//! 1.12.1 reports them (the controller's "noinfo" counts appear as csrow "unknown"), down to each
//! csrow's channels with their DIMM labels (`ch<N>_ce_count`, `ch<N>_ue_count`,
//! `ch<N>_dimm_label`; "#" dropped, "csrow"/"channel" set off by "_", "unknown" without a label;
//! a channel without a `ue_count` has no uncorrectable sample, as in 1.12.1).
//! No EDAC controllers is a successful, empty collection (as in node_exporter).

use std::path::Path;

use super::source::{DirListing, entry_digits, numbered_entries, numbered_names, sorted_dir_names};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "edac",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(EdacCollector::default()))
}

#[derive(Default)]
struct EdacCollector {
    controllers: DirListing,
}

fn read_uint(path: &Path) -> Result<f64, CollectorError> {
    let text = std::fs::read_to_string(path).map_err(|e| CollectorError::io(path, e))?;
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| CollectorError::Parse {
            path: path.to_path_buf(),
            reason: format!("not an unsigned integer: {:?}", text.trim()),
        })
}

/// The number in an entry's name (`mc0` → `0`); the entries come from [`numbered_names`].
fn number<'a>(name: &'a str, prefix: &str) -> &'a str {
    entry_digits(name, prefix).unwrap_or("")
}

struct Controller {
    number: String,
    ce: f64,
    ue: f64,
    /// (csrow, correctable, uncorrectable); the first is "unknown" (the noinfo counts).
    csrows: Vec<(String, f64, f64)>,
    channels: Vec<Channel>,
}

/// One channel of a csrow: its counts and the DIMM it names.
struct Channel {
    csrow: String,
    channel: String,
    dimm_label: String,
    ce: f64,
    /// `None` when the channel has no `ue_count` (node_exporter then serves no sample).
    ue: Option<f64>,
}

/// A channel's DIMM label as node_exporter 1.12.1 shows it: "unknown" when unreadable.
fn dimm_label(csrow_dir: &Path, channel: &str) -> String {
    match std::fs::read_to_string(csrow_dir.join(format!("ch{channel}_dimm_label"))) {
        Ok(text) => text
            .trim()
            .replace('#', "")
            .replace("csrow", "_csrow")
            .replace("channel", "_channel"),
        Err(_) => "unknown".to_string(),
    }
}

/// The channel numbers of a csrow directory's `ch<N>_ce_count` files, in name order.
fn channel_numbers(csrow_dir: &Path) -> Result<Vec<String>, CollectorError> {
    let names = sorted_dir_names(csrow_dir)
        .map_err(|e| CollectorError::io(csrow_dir, e))?
        .unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|name| {
            let digits = name.strip_prefix("ch")?.strip_suffix("_ce_count")?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.to_string())
        })
        .collect())
}

impl Collector for EdacCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let root = ctx.paths.sys("devices/system/edac/mc");
        let mut controllers = Vec::new();
        let names = self
            .controllers
            .names(ctx, &root, |_| true)
            .map_err(|e| CollectorError::io(&root, e))?
            .unwrap_or_default();
        for name in numbered_names(&names, "mc") {
            let dir = root.join(name);
            let mut c = Controller {
                number: number(name, "mc").to_string(),
                ce: read_uint(&dir.join("ce_count"))?,
                ue: read_uint(&dir.join("ue_count"))?,
                csrows: Vec::new(),
                channels: Vec::new(),
            };
            c.csrows.push((
                "unknown".into(),
                read_uint(&dir.join("ce_noinfo_count"))?,
                read_uint(&dir.join("ue_noinfo_count"))?,
            ));
            let rows = numbered_entries(&dir, "csrow").map_err(|e| CollectorError::io(&dir, e))?;
            for row in rows {
                let row_dir = dir.join(&row);
                let csrow = number(&row, "csrow").to_string();
                c.csrows.push((
                    csrow.clone(),
                    read_uint(&row_dir.join("ce_count"))?,
                    read_uint(&row_dir.join("ue_count"))?,
                ));
                for channel in channel_numbers(&row_dir)? {
                    let ce = read_uint(&row_dir.join(format!("ch{channel}_ce_count")))?;
                    let ue = read_uint(&row_dir.join(format!("ch{channel}_ue_count"))).ok();
                    c.channels.push(Channel {
                        csrow: csrow.clone(),
                        dimm_label: dimm_label(&row_dir, &channel),
                        channel,
                        ce,
                        ue,
                    });
                }
            }
            controllers.push(c);
        }
        if controllers.is_empty() {
            return Ok(());
        }
        let mut f = out.family(
            "node_edac_correctable_errors_total",
            "Total correctable memory errors.",
            Kind::Counter,
        )?;
        for c in &controllers {
            f.sample(&[("controller", &c.number)], c.ce)?;
        }
        let mut f = out.family(
            "node_edac_uncorrectable_errors_total",
            "Total uncorrectable memory errors.",
            Kind::Counter,
        )?;
        for c in &controllers {
            f.sample(&[("controller", &c.number)], c.ue)?;
        }
        let mut f = out.family(
            "node_edac_csrow_correctable_errors_total",
            "Total correctable memory errors for this csrow.",
            Kind::Counter,
        )?;
        for c in &controllers {
            for (row, ce, _) in &c.csrows {
                f.sample(&[("controller", &c.number), ("csrow", row)], *ce)?;
            }
        }
        let mut f = out.family(
            "node_edac_csrow_uncorrectable_errors_total",
            "Total uncorrectable memory errors for this csrow.",
            Kind::Counter,
        )?;
        for c in &controllers {
            for (row, _, ue) in &c.csrows {
                f.sample(&[("controller", &c.number), ("csrow", row)], *ue)?;
            }
        }
        if controllers.iter().any(|c| !c.channels.is_empty()) {
            let mut f = out.family(
                "node_edac_channel_correctable_errors_total",
                "Total correctable memory errors for this channel.",
                Kind::Counter,
            )?;
            for c in &controllers {
                for ch in &c.channels {
                    f.sample(&channel_labels(c, ch), ch.ce)?;
                }
            }
        }
        if controllers
            .iter()
            .any(|c| c.channels.iter().any(|ch| ch.ue.is_some()))
        {
            let mut f = out.family(
                "node_edac_channel_uncorrectable_errors_total",
                "Total uncorrectable memory errors for this channel.",
                Kind::Counter,
            )?;
            for c in &controllers {
                for ch in &c.channels {
                    if let Some(ue) = ch.ue {
                        f.sample(&channel_labels(c, ch), ue)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn channel_labels<'a>(c: &'a Controller, ch: &'a Channel) -> [(&'static str, &'a str); 4] {
    [
        ("controller", &c.number),
        ("csrow", &ch.csrow),
        ("channel", &ch.channel),
        ("dimm_label", &ch.dimm_label),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "edac", |_| Box::new(EdacCollector::default()));
    }

    #[test]
    fn dimm_labels_as_node_exporter_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ch0_dimm_label"), "mc#0csrow#1channel#0\n").unwrap();
        assert_eq!(dimm_label(dir.path(), "0"), "mc0_csrow1_channel0");
        assert_eq!(dimm_label(dir.path(), "1"), "unknown");
        for name in [
            "ch1_ce_count",
            "ch10_ce_count",
            "chX_ce_count",
            "ch_ce_count",
            "ch2_ue_count",
        ] {
            std::fs::write(dir.path().join(name), "0\n").unwrap();
        }
        // Name order, as Go's glob gives: "ch10_…" sorts before "ch1_…".
        assert_eq!(channel_numbers(dir.path()).unwrap(), ["10", "1"]);
    }

    #[test]
    fn numbers() {
        assert_eq!(number("mc12", "mc"), "12");
        assert_eq!(number("csrow3x", "csrow"), "3");
    }
}
