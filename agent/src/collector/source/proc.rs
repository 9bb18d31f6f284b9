//! Parsers for procfs files read both by collectors and by the agent's node state
//! (`crate::nodestate`): /proc/loadavg and /proc/meminfo.

/// The three load averages from the first fields of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_ascii_whitespace();
    let mut loads = [0.0; 3];
    for load in &mut loads {
        *load = fields.next()?.parse().ok()?;
    }
    Some(loads)
}

/// One parsed /proc/meminfo line: node_exporter's field name (with `_bytes` when it had a unit)
/// written into `name`, and the value in bytes (or as-is without a unit).
pub fn parse_meminfo_line(line: &str, name: &mut String) -> Option<f64> {
    let (key, rest) = line.split_once(':')?;
    let mut parts = rest.split_ascii_whitespace();
    let value: f64 = parts.next()?.parse().ok()?;
    let unit = parts.next();
    if parts.next().is_some() || key.is_empty() {
        return None;
    }
    name.clear();
    // Active(anon) -> Active_anon
    match key.split_once('(') {
        Some((head, tail)) => {
            name.push_str(head);
            name.push('_');
            name.push_str(tail.strip_suffix(')')?);
        }
        None => name.push_str(key),
    }
    match unit {
        None => Some(value),
        Some(_) => {
            name.push_str("_bytes");
            Some(value * 1024.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_forms() {
        let mut name = String::new();
        assert_eq!(
            parse_meminfo_line("Active(anon):     1 kB", &mut name),
            Some(1024.0)
        );
        assert_eq!(name, "Active_anon_bytes");
        assert_eq!(
            parse_meminfo_line("HugePages_Total:       0", &mut name),
            Some(0.0)
        );
        assert_eq!(name, "HugePages_Total");
        assert_eq!(parse_meminfo_line("garbage", &mut name), None);
        assert_eq!(parse_meminfo_line("MemFree: lots kB", &mut name), None);
        assert_eq!(parse_meminfo_line("Weird(x: 1 kB", &mut name), None);
    }

    #[test]
    fn loadavg_forms() {
        assert_eq!(parse_loadavg("0.5 1.5"), None);
        assert_eq!(parse_loadavg("x y z"), None);
        assert_eq!(parse_loadavg("0.5 1.5 2 1/100 42"), Some([0.5, 1.5, 2.0]));
    }
}
