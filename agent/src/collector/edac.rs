//! `edac`: memory controller error counters from /sys/devices/system/edac/mc, as node_exporter
//! 1.5 reports them (the controller's "noinfo" counts appear as csrow "unknown").
//! No EDAC controllers is a successful, empty collection (as in 1.5).

use std::path::Path;

use super::source::{DirListing, entry_digits, numbered_entries, numbered_names};
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
            };
            c.csrows.push((
                "unknown".into(),
                read_uint(&dir.join("ce_noinfo_count"))?,
                read_uint(&dir.join("ue_noinfo_count"))?,
            ));
            let rows = numbered_entries(&dir, "csrow").map_err(|e| CollectorError::io(&dir, e))?;
            for row in rows {
                let row_dir = dir.join(&row);
                c.csrows.push((
                    number(&row, "csrow").to_string(),
                    read_uint(&row_dir.join("ce_count"))?,
                    read_uint(&row_dir.join("ue_count"))?,
                ));
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
        Ok(())
    }
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
    fn numbers() {
        assert_eq!(number("mc12", "mc"), "12");
        assert_eq!(number("csrow3x", "csrow"), "3");
    }
}
