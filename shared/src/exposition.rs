//! Turns prometheus-client's OpenMetrics output into the Prometheus text format 0.0.4 that
//! node_exporter serves and the Pushgateway accepts. Pure text in, text out (no I/O).
//!
//! prometheus-client encodes samples, labels and escaping; only the metadata lines differ between
//! the two formats: a 0.0.4 counter family is named with its `_total` suffix, `unknown` is spelled
//! `untyped`, and there are no `# UNIT` or `# EOF` lines.

pub const TEXT_004_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `openmetrics` rewritten as text format 0.0.4 to `out`.
pub fn openmetrics_to_text004(openmetrics: &str, out: &mut String) {
    let mut lines = openmetrics.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with('#') {
            out.push_str(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // prometheus-client always writes TYPE right after HELP.
            let (name, help) = rest.split_once(' ').unwrap_or((rest.trim_end(), "\n"));
            let metric_type = lines
                .peek()
                .and_then(|next| next.strip_prefix("# TYPE "))
                .and_then(|t| t.trim_end().rsplit_once(' '))
                .map(|(_, t)| t);
            if metric_type.is_some() {
                lines.next();
            }
            let suffix = if metric_type == Some("counter") {
                "_total"
            } else {
                ""
            };
            let type_004 = match metric_type {
                Some("unknown") | None => "untyped",
                Some(t) => t,
            };
            for part in ["# HELP ", name, suffix, " ", help] {
                out.push_str(part);
            }
            for part in ["# TYPE ", name, suffix, " ", type_004, "\n"] {
                out.push_str(part);
            }
        } else if line.starts_with("# UNIT ") || line.starts_with("# EOF") {
            continue;
        } else {
            out.push_str(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_in_metadata_and_unknown_becomes_untyped() {
        let om = "# HELP node_cpu_seconds Seconds.\n# TYPE node_cpu_seconds counter\n\
                  node_cpu_seconds_total{cpu=\"0\"} 1.5\n\
                  # HELP node_vmstat_pgfault /proc/vmstat information field pgfault.\n\
                  # TYPE node_vmstat_pgfault unknown\nnode_vmstat_pgfault 7\n\
                  # HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.5\n# EOF\n";
        let mut out = String::new();
        openmetrics_to_text004(om, &mut out);
        assert_eq!(
            out,
            "# HELP node_cpu_seconds_total Seconds.\n# TYPE node_cpu_seconds_total counter\n\
             node_cpu_seconds_total{cpu=\"0\"} 1.5\n\
             # HELP node_vmstat_pgfault /proc/vmstat information field pgfault.\n\
             # TYPE node_vmstat_pgfault untyped\nnode_vmstat_pgfault 7\n\
             # HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.5\n"
        );
    }
}
