//! Turns prometheus-client's OpenMetrics output into the Prometheus text format 0.0.4 that
//! node_exporter serves and the Pushgateway accepts. Pure text in, text out (no I/O).
//!
//! prometheus-client encodes samples, labels and escaping; only the metadata lines differ between
//! the two formats: a 0.0.4 counter family is named as its samples are (with the `_total` suffix
//! OpenMetrics keeps out of the family name, or without it for the few counters node_exporter
//! names without one), `unknown` is spelled `untyped`, and there are no `# UNIT` or `# EOF` lines.

pub const TEXT_004_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `openmetrics` rewritten as text format 0.0.4 to `out`.
pub fn openmetrics_to_text004(openmetrics: &str, out: &mut String) {
    let mut text = Text004::default();
    // Writing into a String cannot fail.
    let _ = std::fmt::Write::write_str(&mut text, openmetrics);
    text.finish();
    out.push_str(text.as_str());
}

/// The text format 0.0.4 rewrite as a `fmt::Write` sink, so that prometheus-client can encode
/// straight into it: no OpenMetrics copy of the whole body is kept, and sample lines (nearly all
/// of it) are appended as they arrive. Metadata lines are held until complete, and a HELP line
/// until the line after it (its TYPE). Reusable: [`Text004::clear`] keeps the allocations.
#[derive(Default)]
pub struct Text004 {
    out: String,
    /// The metadata line being received.
    line: String,
    /// A complete HELP line waiting for the line after it.
    help: String,
    /// Whether the line being received is a sample line (passed straight through).
    in_sample: bool,
    /// Whether the next byte starts a line.
    mid_line: bool,
    /// The held HELP line is a counter's, whose name waits for its first sample (in `line`).
    counter: bool,
}

impl Text004 {
    /// Empties the output and state for the next scrape.
    pub fn clear(&mut self) {
        self.out.clear();
        self.line.clear();
        self.help.clear();
        self.in_sample = false;
        self.mid_line = false;
        self.counter = false;
    }

    /// Completes the rewrite: a last line without its newline, a HELP line with no TYPE after it.
    pub fn finish(&mut self) {
        if self.mid_line && !self.in_sample {
            self.metadata_line_done();
        } else if self.mid_line && self.counter {
            self.first_counter_sample_done();
        }
        self.mid_line = false;
        self.flush_help(None);
    }

    pub fn as_str(&self) -> &str {
        &self.out
    }

    fn metadata_line_done(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.starts_with("# HELP ") {
            self.flush_help(None);
            self.help.push_str(&line);
        } else if let Some(type_line) = line.strip_prefix("# TYPE ")
            && !self.help.is_empty()
            && !self.counter
        {
            match type_line.trim_end().rsplit_once(' ').map(|(_, t)| t) {
                // Named once its first sample shows whether it carries `_total`.
                Some("counter") => self.counter = true,
                metric_type => self.flush_help(metric_type),
            }
        } else {
            self.flush_help(None);
            if !(line.starts_with("# UNIT ") || line.starts_with("# EOF")) {
                self.out.push_str(&line);
            }
        }
        self.line = line;
        self.line.clear();
    }

    /// The first sample line of a held counter is complete (in `line`): the family is named as
    /// that sample is, and the sample follows.
    fn first_counter_sample_done(&mut self) {
        let sample = std::mem::take(&mut self.line);
        let sample_name = sample.split(['{', ' ', '\n']).next().unwrap_or_default();
        self.write_counter_help(Some(sample_name));
        self.out.push_str(&sample);
        self.line = sample;
        self.line.clear();
    }

    /// Writes a held counter's HELP and TYPE lines: named without `_total` only when its first
    /// sample (if it has one) is.
    fn write_counter_help(&mut self, first_sample: Option<&str>) {
        self.counter = false;
        let described = self.help.strip_prefix("# HELP ").unwrap_or(&self.help);
        let name = described
            .split_once(' ')
            .map_or(described.trim_end(), |(n, _)| n);
        let bare = first_sample == Some(name);
        self.write_help(if bare { "" } else { "_total" }, "counter");
    }

    /// Writes the held HELP line (if any) and its TYPE line, 0.0.4 style: `unknown` (or no TYPE
    /// at all) spelled `untyped`; a counter with no sample named with `_total`.
    fn flush_help(&mut self, metric_type: Option<&str>) {
        if self.counter {
            return self.write_counter_help(None);
        }
        match metric_type {
            Some("unknown") | None => self.write_help("", "untyped"),
            Some(t) => self.write_help("", t),
        }
    }

    /// Writes the held HELP line (if any) with `suffix` after its name, and its TYPE line.
    fn write_help(&mut self, suffix: &str, type_004: &str) {
        if self.help.is_empty() {
            return;
        }
        let help_line = std::mem::take(&mut self.help);
        let described = help_line.strip_prefix("# HELP ").unwrap_or(&help_line);
        let (name, help) = described
            .split_once(' ')
            .unwrap_or((described.trim_end(), "\n"));
        for part in ["# HELP ", name, suffix, " ", help] {
            self.out.push_str(part);
        }
        for part in ["# TYPE ", name, suffix, " ", type_004, "\n"] {
            self.out.push_str(part);
        }
        self.help = help_line;
        self.help.clear();
    }
}

impl std::fmt::Write for Text004 {
    fn write_str(&mut self, mut s: &str) -> std::fmt::Result {
        while !s.is_empty() {
            if !self.mid_line {
                self.in_sample = !s.starts_with('#');
                if self.in_sample && !self.counter {
                    self.flush_help(None);
                }
                self.mid_line = true;
            }
            let newline = memchr::memchr(b'\n', s.as_bytes());
            let (chunk, rest) = s.split_at(newline.map_or(s.len(), |i| i + 1));
            if self.in_sample && !self.counter {
                self.out.push_str(chunk);
            } else {
                self.line.push_str(chunk);
            }
            if newline.is_some() {
                if !self.in_sample {
                    self.metadata_line_done();
                } else if self.counter {
                    self.first_counter_sample_done();
                }
                self.mid_line = false;
            }
            s = rest;
        }
        Ok(())
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
        // A counter named without `_total`, as its samples are; one with no sample.
        assert_eq!(
            rewrite("# HELP s S.\n# TYPE s counter\ns{a=\"1\"} 3\ns{a=\"2\"} 4\n"),
            "kept\n# HELP s S.\n# TYPE s counter\ns{a=\"1\"} 3\ns{a=\"2\"} 4\n"
        );
        assert_eq!(
            rewrite("# HELP e E.\n# TYPE e counter\n# HELP g G.\n# TYPE g gauge\ng 1\n"),
            "kept\n# HELP e_total E.\n# TYPE e_total counter\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
        assert_eq!(
            rewrite("# HELP t T.\n# TYPE t counter\nt 5"),
            "kept\n# HELP t T.\n# TYPE t counter\nt 5"
        );
        // A '#' inside a sample line (a label value) is not a comment.
        assert_eq!(rewrite("m{l=\"#x\"} 1\n"), "kept\nm{l=\"#x\"} 1\n");
    }

    #[test]
    fn fragments_rewrite_as_the_whole() {
        use std::fmt::Write as _;
        let om = "# HELP a A.\n# TYPE a counter\na_total{x=\"#\"} 1\n# HELP b B.\n# TYPE b unknown\nb 2\n\
                  # HELP c C.\n# TYPE c gauge\n# UNIT c seconds\nc 3\n\
                  # HELP d D.\n# TYPE d counter\nd{x=\"y\"} 4\nd 5\n# HELP f F.\n# TYPE f counter\n# EOF\n";
        let mut whole = String::new();
        openmetrics_to_text004(om, &mut whole);
        for size in 1..8 {
            let mut text = Text004::default();
            text.write_str("stale").unwrap();
            text.clear();
            let bytes = om.as_bytes();
            for chunk in bytes.chunks(size) {
                text.write_str(std::str::from_utf8(chunk).unwrap()).unwrap();
            }
            text.finish();
            assert_eq!(text.as_str(), whole, "fragments of {size}");
        }
        assert!(
            whole.starts_with("# HELP a_total A.\n# TYPE a_total counter\n"),
            "{whole}"
        );
    }
}
