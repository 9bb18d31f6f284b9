//! `dmi`: `node_dmi_info` from the regular files of /sys/class/dmi/id, read once when the
//! collector is built (as node_exporter 1.12.1 does: DMI does not change until a reboot), so a
//! scrape reads nothing.
//!
//! As prometheus/procfs: `modalias`, `uevent` and non-regular entries are skipped, each file is
//! one ≤128-byte read, trimmed; a file only root may read (`board_serial`, `product_uuid`…) is
//! left out; invalid UTF-8 becomes U+FFFD per run of bad bytes (Go's `strings.ToValidUTF8`).
//! Labels come out sorted by name, as client_golang sorts them. No /sys/class/dmi/id, or no
//! attribute in it, is `NoData` every scrape. Decision: another read error (node_exporter fails
//! to create the collector, hence to start) is kept and reported by every scrape instead.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "dmi",
    default_enabled: true,
    flags: no_flags,
    build,
};

const HELP: &str = "A metric with a constant '1' value labeled by bios_date, bios_release, bios_vendor, bios_version, \
board_asset_tag, board_name, board_serial, board_vendor, board_version, chassis_asset_tag, \
chassis_serial, chassis_vendor, chassis_version, product_family, product_name, product_serial, \
product_sku, product_uuid, product_version, system_vendor if provided by DMI.";

/// (file name, label), sorted by label: the attributes node_exporter reports.
const ATTRIBUTES: &[(&str, &str)] = &[
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("sys_vendor", "system_vendor"),
];

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(DmiCollector::read(&ctx.paths.sys("class/dmi/id"))))
}

/// A read error kept to be reported by every scrape: the path, the error's kind and message.
type KeptError = (PathBuf, std::io::ErrorKind, String);

struct DmiCollector {
    /// `(label, value)` in label order, or the error reading them.
    info: Result<Vec<(&'static str, String)>, KeptError>,
}

impl DmiCollector {
    fn read(dir: &Path) -> Self {
        let info = read_dmi(dir).map_err(|(path, e)| {
            tracing::warn!(path = %path.display(), error = %e, "reading DMI information");
            (path, e.kind(), e.to_string())
        });
        DmiCollector { info }
    }
}

fn read_dmi(dir: &Path) -> Result<Vec<(&'static str, String)>, (PathBuf, std::io::Error)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(
                "platform does not support Desktop Management Interface (DMI) information"
            );
            return Ok(Vec::new());
        }
        Err(e) => return Err((dir.to_path_buf(), e)),
    };
    let mut values: Vec<(&'static str, String)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name();
        let Some(&(_, label)) = ATTRIBUTES.iter().find(|(file, _)| name == *file) else {
            // procfs reads every other file too (and fails on an unreadable one).
            if name != "modalias" && name != "uevent" {
                let path = entry.path();
                match read_value(&path) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                    Err(e) => return Err((path, e)),
                }
            }
            continue;
        };
        let path = entry.path();
        match read_value(&path) {
            Ok(value) => values.push((label, value)),
            // Only root may read the serial numbers and product_uuid.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err((path, e)),
        }
    }
    values.sort_by_key(|(label, _)| *label);
    Ok(values)
}

/// procfs's `SysReadFile` and node_exporter's `strings.ToValidUTF8(value, "�")`.
fn read_value(path: &Path) -> std::io::Result<String> {
    let mut bytes = [0u8; 128];
    let n = std::fs::File::open(path)?.read(&mut bytes)?;
    Ok(to_valid_utf8(trim_go_space(&bytes[..n])))
}

/// Go's `bytes.TrimSpace` for the ASCII white space sysfs attributes end with.
fn trim_go_space(bytes: &[u8]) -> &[u8] {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Go's `strings.ToValidUTF8(s, "\uFFFD")`: each run of invalid bytes becomes one U+FFFD.
fn to_valid_utf8(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut in_bad_run = false;
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                out.push_str(valid);
                break;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                if !valid.is_empty() {
                    // Valid prefix: checked by from_utf8 above.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    in_bad_run = false;
                }
                let bad = e.error_len().unwrap_or(rest.len());
                if !in_bad_run {
                    out.push('\u{FFFD}');
                    in_bad_run = true;
                }
                bytes = &rest[bad..];
            }
        }
    }
    out
}

impl Collector for DmiCollector {
    fn update(
        &mut self,
        _: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let values = match &self.info {
            Ok(values) => values,
            Err((path, kind, message)) => {
                return Err(CollectorError::io(
                    path,
                    std::io::Error::new(*kind, message.clone()),
                ));
            }
        };
        if values.is_empty() {
            return Err(CollectorError::NoData);
        }
        let labels: Vec<(&str, &str)> = values.iter().map(|(l, v)| (*l, v.as_str())).collect();
        out.single("node_dmi_info", HELP, Kind::Gauge, &labels, 1.0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-system", "dmi", |paths| {
            Box::new(DmiCollector::read(&paths.sys("class/dmi/id")))
        });
    }

    #[test]
    fn no_dmi_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::collector::Paths::fixture(dir.path());
        let collector = DmiCollector::read(&paths.sys("class/dmi/id"));
        let text = render("dmi", Box::new(collector), paths);
        assert!(!text.contains("node_dmi_info"));
        assert!(text.contains("node_scrape_collector_success{collector=\"dmi\"} 0"));
        // An existing but empty directory is no data as well.
        std::fs::create_dir_all(dir.path().join("sys/class/dmi/id")).unwrap();
        std::fs::write(
            dir.path().join("sys/class/dmi/id/uevent"),
            "MODALIAS=dmi:\n",
        )
        .unwrap();
        let paths = crate::collector::Paths::fixture(dir.path());
        let collector = DmiCollector::read(&paths.sys("class/dmi/id"));
        let text = render("dmi", Box::new(collector), paths);
        assert!(text.contains("node_scrape_collector_success{collector=\"dmi\"} 0"));
    }

    #[test]
    fn a_read_error_fails_every_scrape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class/dmi")).unwrap();
        // A file where the directory should be: not NotFound, an error.
        std::fs::write(dir.path().join("sys/class/dmi/id"), "").unwrap();
        let paths = crate::collector::Paths::fixture(dir.path());
        let collector = DmiCollector::read(&paths.sys("class/dmi/id"));
        assert!(collector.info.is_err());
    }

    #[test]
    fn go_utf8_and_space_handling() {
        assert_eq!(to_valid_utf8(b"ok"), "ok");
        assert_eq!(to_valid_utf8(b"a\xff\xfeb\xc3"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(to_valid_utf8("é\u{FFFD}".as_bytes()), "é\u{FFFD}");
        assert_eq!(trim_go_space(b"  Dell Inc. \n"), b"Dell Inc.");
        assert_eq!(trim_go_space(b" \n"), b"");
    }
}
