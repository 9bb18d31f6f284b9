//! Turns prometheus-client's OpenMetrics output into the Prometheus text format 0.0.4 that
//! node_exporter serves and the Pushgateway accepts. Pure text in, text out (no I/O).
//!
//! prometheus-client encodes samples, labels and escaping; only the metadata lines differ between
//! the two formats: a 0.0.4 counter family is named with its `_total` suffix, `unknown` is spelled
//! `untyped`, and there are no `# UNIT` or `# EOF` lines.

pub const TEXT_004_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `openmetrics` rewritten as text format 0.0.4 to `out`.
pub fn openmetrics_to_text004(openmetrics: &str, out: &mut String) {
    let mut rest = openmetrics;
    while !rest.is_empty() {
        // The sample lines up to the next comment line are copied as they are, in one go
        // (line by line was a tenth of the agent's scrape CPU).
        let samples_end = if rest.starts_with('#') {
            0
        } else {
            memchr::memmem::find(rest.as_bytes(), b"\n#").map_or(rest.len(), |i| i + 1)
        };
        let (samples, tail) = rest.split_at(samples_end);
        out.push_str(samples);
        let (line, tail) = split_line(tail);
        rest = tail;
        if line.is_empty() {
            break;
        }
        if let Some(described) = line.strip_prefix("# HELP ") {
            // prometheus-client always writes TYPE right after HELP.
            let (name, help) = described
                .split_once(' ')
                .unwrap_or((described.trim_end(), "\n"));
            let (next, after_next) = split_line(rest);
            let metric_type = next
                .strip_prefix("# TYPE ")
                .and_then(|t| t.trim_end().rsplit_once(' '))
                .map(|(_, t)| t);
            if metric_type.is_some() {
                rest = after_next;
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
        } else if !(line.starts_with("# UNIT ") || line.starts_with("# EOF")) {
            out.push_str(line);
        }
    }
}

/// The first line of `text` with its newline, and the rest.
fn split_line(text: &str) -> (&str, &str) {
    text.split_at(memchr::memchr(b'\n', text.as_bytes()).map_or(text.len(), |i| i + 1))
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

    #[test]
    fn odd_shapes_pass_through() {
        let rewrite = |om: &str| {
            let mut out = String::from("kept\n");
            openmetrics_to_text004(om, &mut out);
            out
        };
        assert_eq!(rewrite(""), "kept\n");
        assert_eq!(rewrite("a 1\nb 2"), "kept\na 1\nb 2");
        // HELP last, with no TYPE after it; a lone TYPE; a UNIT; a sample without a newline.
        assert_eq!(
            rewrite("a 1\n# HELP x Help x.\n"),
            "kept\na 1\n# HELP x Help x.\n# TYPE x untyped\n"
        );
        assert_eq!(
            rewrite("# TYPE y gauge\n# UNIT y seconds\ny 2\n# EOF"),
            "kept\n# TYPE y gauge\ny 2\n"
        );
        assert_eq!(
            rewrite("# HELP z Z.\n# TYPE z counter\nz_total 3"),
            "kept\n# HELP z_total Z.\n# TYPE z_total counter\nz_total 3"
        );
        // A '#' inside a sample line (a label value) is not a comment.
        assert_eq!(rewrite("m{l=\"#x\"} 1\n"), "kept\nm{l=\"#x\"} 1\n");
    }
}
