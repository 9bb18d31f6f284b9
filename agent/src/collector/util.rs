//! Small helpers several collectors share: node_exporter's (unanchored) regex flags and device
//! filter, Go's integer and duration syntax, and procfs-style sysfs attribute reads.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::{BuildContext, BuildError};

/// A regex flag compiled as node_exporter compiles most of its filters: Go's `regexp.MatchString`
/// without added anchors, so `veth` excludes every name containing it.
pub fn unanchored_regex_flag(
    ctx: &BuildContext<'_>,
    id: &str,
) -> Result<Option<regex::Regex>, BuildError> {
    match ctx.flag(id) {
        None | Some("") => Ok(None),
        Some(pattern) => regex::Regex::new(pattern)
            .map(Some)
            .map_err(|e| BuildError::Flag {
                flag: id.to_string(),
                reason: e.to_string(),
            }),
    }
}

/// node_exporter's `deviceFilter`: a device is ignored when it matches the exclude pattern or
/// fails to match the include pattern.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    pub exclude: Option<regex::Regex>,
    pub include: Option<regex::Regex>,
}

impl DeviceFilter {
    pub fn ignored(&self, name: &str) -> bool {
        self.exclude.as_ref().is_some_and(|r| r.is_match(name))
            || self.include.as_ref().is_some_and(|r| !r.is_match(name))
    }
}

/// Builds a [`DeviceFilter`] from an exclude flag, an include flag and their deprecated aliases,
/// with node_exporter's rules: an alias only applies when its new flag is not given, and exclude
/// and include are mutually exclusive. `exclude_default` is the exclude flag's default value:
/// giving only the include flag replaces that default (as node_exporter's flag checks require).
pub fn device_filter(
    ctx: &BuildContext<'_>,
    exclude: &str,
    old_exclude: Option<&str>,
    include: &str,
    old_include: Option<&str>,
) -> Result<DeviceFilter, BuildError> {
    let explicit =
        |id: &str| ctx.matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let conflict = |a: &str, b: &str| BuildError::Flag {
        flag: a.to_string(),
        reason: format!("--{a} and --{b} are mutually exclusive"),
    };
    let mut exclude_id = exclude;
    if let Some(old) = old_exclude.filter(|old| ctx.flag(old).is_some_and(|v| !v.is_empty())) {
        if explicit(exclude) {
            return Err(conflict(old, exclude));
        }
        exclude_id = old;
    }
    let mut include_id = include;
    if let Some(old) = old_include.filter(|old| ctx.flag(old).is_some_and(|v| !v.is_empty())) {
        if explicit(include) {
            return Err(conflict(old, include));
        }
        include_id = old;
    }
    let include_re = unanchored_regex_flag(ctx, include_id)?;
    let mut exclude_re = unanchored_regex_flag(ctx, exclude_id)?;
    if include_re.is_some() && exclude_re.is_some() {
        if explicit(exclude_id) {
            return Err(conflict(exclude_id, include_id));
        }
        // Only the default exclude pattern is set: the user asked for an include list.
        exclude_re = None;
    }
    Ok(DeviceFilter {
        exclude: exclude_re,
        include: include_re,
    })
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then decimal, `0x` hex, `0o`/`0` octal or
/// `0b` binary (underscores allowed only after a prefix).
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, body, prefixed) = if let Some(rest) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, rest, true)
    } else if let Some(rest) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, rest, true)
    } else if let Some(rest) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, rest, true)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..], true)
    } else {
        (10, digits, false)
    };
    if body.is_empty() || body.starts_with('+') || body.starts_with('-') {
        return None;
    }
    let magnitude = if prefixed && body.contains('_') {
        let cleaned: String = body.chars().filter(|&c| c != '_').collect();
        u64::from_str_radix(&cleaned, radix).ok()?
    } else {
        u64::from_str_radix(body, radix).ok()?
    };
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `time.ParseDuration` for the forms flags use: `5s`, `1m30s`, `1.5s`, `250ms`, `0`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` (and so Prometheus's Go client) writes
/// it: shortest round-trip digits, in exponent form when the decimal exponent is < -4 or >= 6
/// (Go's rule for shortest 'g': 1234567 is `1.234567e+06`); `+Inf`, `-Inf`, `NaN`.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        // Plain notation; Rust's Display is shortest round-trip and never uses an exponent.
        return format!("{f}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// procfs's `SysReadFile`: one read of at most 128 bytes (some hwmon drivers never finish a
/// longer read), whitespace-trimmed, into `buf`.
pub fn read_sys_file(path: &Path, buf: &mut String) -> std::io::Result<()> {
    let mut bytes = [0u8; 128];
    let n = std::fs::File::open(path)?.read(&mut bytes)?;
    buf.clear();
    buf.push_str(String::from_utf8_lossy(&bytes[..n]).trim());
    Ok(())
}

/// Like [`read_sys_file`], but `Ok(false)` for the errors procfs treats as "attribute absent":
/// not found, permission denied, operation not supported, invalid argument (e.g. the speed of a
/// link that is down) and, for sysfs attributes backed by drivers, no such device.
pub fn read_sys_attr(path: &Path, buf: &mut String) -> std::io::Result<bool> {
    match read_sys_file(path, buf) {
        Ok(()) => Ok(true),
        Err(e) if sys_attr_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn sys_attr_absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
        || matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENODEV | libc::ENXIO)
        )
}

/// The sorted names of the entries of a directory; `Ok(None)` when it does not exist.
pub fn sorted_dir_names(dir: &Path) -> std::io::Result<Option<Vec<String>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("0x1003"), Some(4099));
        assert_eq!(parse_go_int("-1"), Some(-1));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("0"), Some(0));
        assert_eq!(parse_go_int("1500"), Some(1500));
        assert_eq!(parse_go_int("0b101"), Some(5));
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("0x"), None);
        assert_eq!(parse_go_int("12a"), None);
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int("9223372036854775808"), None);
    }

    #[test]
    fn go_floats() {
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(10.0), "10");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(1e21), "1e+21");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn device_filter_semantics() {
        let f = DeviceFilter {
            exclude: Some(regex::Regex::new("^lo$").unwrap()),
            include: None,
        };
        assert!(f.ignored("lo"));
        assert!(!f.ignored("eth0"));
        let f = DeviceFilter {
            exclude: None,
            include: Some(regex::Regex::new("eth").unwrap()),
        };
        assert!(!f.ignored("veth-eth1"));
        assert!(f.ignored("lo"));
    }

    fn matches(args: &[&str]) -> clap::ArgMatches {
        crate::cli::command()
            .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn every_collector_builds_from_default_and_node_exporter_style_flags() {
        let paths = super::super::Paths::default();
        let all: Vec<String> = super::super::ALL
            .iter()
            .map(|r| format!("--collector.{}", r.name))
            .collect();
        let mut args: Vec<&str> = all.iter().map(String::as_str).collect();
        let built = crate::cli::build_collectors(&matches(&args), &paths).unwrap();
        assert_eq!(built.len(), super::super::ALL.len());
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
        let paths = super::super::Paths::default();
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
