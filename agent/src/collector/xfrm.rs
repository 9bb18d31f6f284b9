//! `xfrm`: IPsec (XFRM) error counters from /proc/net/xfrm_stat, as node_exporter 1.12.1 reads
//! them through procfs 0.21.1: the 28 counters procfs knows (newer kernels' extra lines are
//! ignored; a counter missing from the file is reported as 0, as there).
//!
//! No xfrm_stat (a kernel without CONFIG_XFRM_STATISTICS) fails the collection, as there (not
//! `NoData`); the absence is remembered for the hotplug epoch. The file is kept open (one read
//! per scrape). Decision: a line procfs would reject (not two fields, a non-integer) fails the
//! whole collection there; here it is counted as a malformed line and skipped.

use super::source::{Absence, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "xfrm",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(XfrmCollector::default()))
}

/// (kernel field, metric, help), in node_exporter's order.
const FIELDS: [(&str, &str, &str); 28] = [
    (
        "XfrmInError",
        "node_xfrm_in_error_packets_total",
        "All errors not matched by other",
    ),
    (
        "XfrmInBufferError",
        "node_xfrm_in_buffer_error_packets_total",
        "No buffer is left",
    ),
    (
        "XfrmInHdrError",
        "node_xfrm_in_hdr_error_packets_total",
        "Header error",
    ),
    (
        "XfrmInNoStates",
        "node_xfrm_in_no_states_packets_total",
        "No state is found i.e. Either inbound SPI, address, or IPsec protocol at SA is wrong",
    ),
    (
        "XfrmInStateProtoError",
        "node_xfrm_in_state_proto_error_packets_total",
        "Transformation protocol specific error e.g. SA key is wrong",
    ),
    (
        "XfrmInStateModeError",
        "node_xfrm_in_state_mode_error_packets_total",
        "Transformation mode specific error",
    ),
    (
        "XfrmInStateSeqError",
        "node_xfrm_in_state_seq_error_packets_total",
        "Sequence error i.e. Sequence number is out of window",
    ),
    (
        "XfrmInStateExpired",
        "node_xfrm_in_state_expired_packets_total",
        "State is expired",
    ),
    (
        "XfrmInStateMismatch",
        "node_xfrm_in_state_mismatch_packets_total",
        "State has mismatch option e.g. UDP encapsulation type is mismatch",
    ),
    (
        "XfrmInStateInvalid",
        "node_xfrm_in_state_invalid_packets_total",
        "State is invalid",
    ),
    (
        "XfrmInTmplMismatch",
        "node_xfrm_in_tmpl_mismatch_packets_total",
        "No matching template for states e.g. Inbound SAs are correct but SP rule is wrong",
    ),
    (
        "XfrmInNoPols",
        "node_xfrm_in_no_pols_packets_total",
        "No policy is found for states e.g. Inbound SAs are correct but no SP is found",
    ),
    (
        "XfrmInPolBlock",
        "node_xfrm_in_pol_block_packets_total",
        "Policy discards",
    ),
    (
        "XfrmInPolError",
        "node_xfrm_in_pol_error_packets_total",
        "Policy error",
    ),
    (
        "XfrmOutError",
        "node_xfrm_out_error_packets_total",
        "All errors which is not matched others",
    ),
    (
        "XfrmOutBundleGenError",
        "node_xfrm_out_bundle_gen_error_packets_total",
        "Bundle generation error",
    ),
    (
        "XfrmOutBundleCheckError",
        "node_xfrm_out_bundle_check_error_packets_total",
        "Bundle check error",
    ),
    (
        "XfrmOutNoStates",
        "node_xfrm_out_no_states_packets_total",
        "No state is found",
    ),
    (
        "XfrmOutStateProtoError",
        "node_xfrm_out_state_proto_error_packets_total",
        "Transformation protocol specific error",
    ),
    (
        "XfrmOutStateModeError",
        "node_xfrm_out_state_mode_error_packets_total",
        "Transformation mode specific error",
    ),
    (
        "XfrmOutStateSeqError",
        "node_xfrm_out_state_seq_error_packets_total",
        "Sequence error i.e. Sequence number overflow",
    ),
    (
        "XfrmOutStateExpired",
        "node_xfrm_out_state_expired_packets_total",
        "State is expired",
    ),
    (
        "XfrmOutPolBlock",
        "node_xfrm_out_pol_block_packets_total",
        "Policy discards",
    ),
    (
        "XfrmOutPolDead",
        "node_xfrm_out_pol_dead_packets_total",
        "Policy is dead",
    ),
    (
        "XfrmOutPolError",
        "node_xfrm_out_pol_error_packets_total",
        "Policy error",
    ),
    (
        "XfrmFwdHdrError",
        "node_xfrm_fwd_hdr_error_packets_total",
        "Forward routing of a packet is not allowed",
    ),
    (
        "XfrmOutStateInvalid",
        "node_xfrm_out_state_invalid_packets_total",
        "State is invalid, perhaps expired",
    ),
    (
        "XfrmAcquireError",
        "node_xfrm_acquire_error_packets_total",
        "State hasn’t been fully acquired before use",
    ),
];

/// The values of [`FIELDS`] in /proc/net/xfrm_stat (0 when absent); a line procfs would reject
/// is passed to `malformed`.
pub fn parse_xfrm_stat(text: &str, mut malformed: impl FnMut(&str)) -> [i64; FIELDS.len()] {
    let mut values = [0i64; FIELDS.len()];
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(name), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            malformed(line);
            continue;
        };
        let Ok(value) = value.parse::<i64>() else {
            malformed(line);
            continue;
        };
        if let Some(i) = FIELDS.iter().position(|(field, _, _)| *field == name) {
            values[i] = value;
        }
    }
    values
}

struct XfrmCollector {
    file: SourceFile,
    absent: Absence,
    buf: String,
}

impl Default for XfrmCollector {
    fn default() -> Self {
        XfrmCollector {
            file: SourceFile::proc("net/xfrm_stat"),
            absent: Absence::default(),
            buf: String::new(),
        }
    }
}

impl Collector for XfrmCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let (file, buf) = (&mut self.file, &mut self.buf);
        if !self.absent.read(ctx, || file.read_into(ctx.paths, buf))? {
            return Err(CollectorError::io(
                ctx.paths.proc("net/xfrm_stat"),
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        let path = self.file.display_path().to_path_buf();
        let values = parse_xfrm_stat(&self.buf, |line| ctx.malformed(&path, line));
        for ((_, name, help), value) in FIELDS.iter().zip(values) {
            out.counter(name, help, value as f64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-network", "xfrm", |_| Box::new(XfrmCollector::default()));
    }

    #[test]
    fn malformed_lines_and_absence() {
        let mut bad = Vec::new();
        let values = parse_xfrm_stat(
            "XfrmInError             \t3\nXfrmInHdrError 1 2\nXfrmOutError x\nXfrmAcquireError 9\n",
            |l| bad.push(l.to_string()),
        );
        assert_eq!(bad.len(), 2);
        assert_eq!(values[0], 3);
        assert_eq!(values[27], 9);
        assert_eq!(values[14], 0);
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "xfrm",
            Box::new(XfrmCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"xfrm\"} 0"));
        assert!(!text.contains("node_xfrm_"));
    }
}
