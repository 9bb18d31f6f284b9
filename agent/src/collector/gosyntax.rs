//! Go-compatible syntax: the parsers and formatting node_exporter gets from Go's standard
//! library (`strconv.ParseInt` base 0, `time.ParseDuration`, `FormatFloat 'g'`), so flags and
//! sources read, and values print, as they do there.

use std::time::Duration;

/// Parses a trimmed unsigned decimal attribute (node_exporter's `readUintFromFile`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then decimal, `0x` hex, `0o`/`0` octal or
/// `0b` binary (underscores allowed only after a prefix).
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_go_uint(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: decimal, `0x` hex, `0o`/`0` octal or `0b` binary, no sign;
/// underscores as in Go integer literals (`1_000`, `0x_1f`; never doubled, leading or trailing).
pub fn parse_go_uint(s: &str) -> Option<u64> {
    let prefixed = |lower: &str, upper: &str| {
        s.strip_prefix(lower)
            .or_else(|| s.strip_prefix(upper))
            .filter(|rest| !rest.is_empty())
    };
    let (radix, body) = if let Some(rest) = prefixed("0x", "0X") {
        (16, rest)
    } else if let Some(rest) = prefixed("0b", "0B") {
        (2, rest)
    } else if let Some(rest) = prefixed("0o", "0O") {
        (8, rest)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    if body.contains('_') {
        if !go_underscores_ok(s) {
            return None;
        }
        let cleaned: String = body.chars().filter(|&c| c != '_').collect();
        return u64::from_str_radix(&cleaned, radix).ok();
    }
    u64::from_str_radix(body, radix).ok()
}

/// Go's `underscoreOK`: each underscore sits between digits, or between a base prefix and a digit.
fn go_underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let (mut i, mut saw, mut hex) = (0, b'^', false);
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'b' | b'o' | b'x') {
        (i, saw, hex) = (2, b'0', b[1] | 0x20 == b'x');
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Go's `strconv.Atoi` and `strconv.ParseInt(s, 10, 64)`: an optional sign and decimal digits only.
pub fn parse_go_decimal(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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
    fn go_uints_and_decimals() {
        assert_eq!(parse_go_uint("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_go_uint("0x_1f"), Some(31));
        assert_eq!(parse_go_uint("0b1_01"), Some(5));
        assert_eq!(parse_go_uint("1_000"), Some(1000));
        assert_eq!(parse_go_uint("0_7"), Some(7));
        for refused in [
            "0x1__f", "0x1f_", "_1", "0_", "0x_", "0x", "+5", "-5", "0x_+1", " 5", "08",
        ] {
            assert_eq!(parse_go_uint(refused), None, "{refused}");
        }
        assert_eq!(parse_go_decimal("+5"), Some(5));
        assert_eq!(parse_go_decimal("-5"), Some(-5));
        assert_eq!(
            parse_go_decimal("010"),
            Some(10),
            "base 10: a leading 0 is not octal"
        );
        for refused in ["0x10", "+", "", "1_0", "5 "] {
            assert_eq!(parse_go_decimal(refused), None, "{refused}");
        }
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
}
