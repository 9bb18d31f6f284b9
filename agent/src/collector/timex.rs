//! `timex`: the kernel clock discipline state from adjtimex(2), as node_timex_*.

use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "timex",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(TimexCollector))
}

struct TimexCollector;

/// adjtimex's return value when the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// Status bit: offsets and jitter are in nanoseconds rather than microseconds.
const STA_NANO: i32 = 0x2000;
/// Frequencies are ppm with a 16-bit fraction (adjtimex(2), NOTES).
const PPM16FRAC: f64 = 1_000_000.0 * 65536.0;
const MICROS: f64 = 1_000_000.0;
const NANOS: f64 = 1_000_000_000.0;

/// The values node_exporter exports from one adjtimex reading, in its order.
pub fn timex_values(state: i32, t: &libc::timex) -> [(&'static str, &'static str, Kind, f64); 17] {
    let divisor = if t.status & STA_NANO != 0 {
        NANOS
    } else {
        MICROS
    };
    let sync = if state == TIME_ERROR { 0.0 } else { 1.0 };
    [
        (
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            Kind::Gauge,
            sync,
        ),
        (
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            Kind::Gauge,
            t.offset as f64 / divisor,
        ),
        (
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            Kind::Gauge,
            1.0 + t.freq as f64 / PPM16FRAC,
        ),
        (
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            Kind::Gauge,
            t.maxerror as f64 / MICROS,
        ),
        (
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            Kind::Gauge,
            t.esterror as f64 / MICROS,
        ),
        (
            "node_timex_status",
            "Value of the status array bits.",
            Kind::Gauge,
            t.status as f64,
        ),
        (
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            Kind::Gauge,
            t.constant as f64,
        ),
        (
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            Kind::Gauge,
            t.tick as f64 / MICROS,
        ),
        (
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            Kind::Gauge,
            t.ppsfreq as f64 / PPM16FRAC,
        ),
        (
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            Kind::Gauge,
            t.jitter as f64 / divisor,
        ),
        (
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            Kind::Gauge,
            t.shift as f64,
        ),
        (
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            Kind::Gauge,
            t.stabil as f64 / PPM16FRAC,
        ),
        (
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            Kind::Counter,
            t.jitcnt as f64,
        ),
        (
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            Kind::Counter,
            t.calcnt as f64,
        ),
        (
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            Kind::Counter,
            t.errcnt as f64,
        ),
        (
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            Kind::Counter,
            t.stbcnt as f64,
        ),
        (
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            Kind::Gauge,
            t.tai as f64,
        ),
    ]
}

impl Collector for TimexCollector {
    fn update(
        &mut self,
        _: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        // SAFETY: a zeroed timex with modes = 0 only reads the kernel's state into it.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        let state = unsafe { libc::adjtimex(&mut t) };
        if state < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(CollectorError::NoData);
            }
            return Err(CollectorError::io("adjtimex(2)", err));
        }
        for (name, help, kind, value) in timex_values(state, &t) {
            out.single(name, help, kind, &[], value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::render;

    #[test]
    fn scaling() {
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        t.offset = 1500;
        t.freq = 65536 * 10; // 10 ppm
        t.maxerror = 16_000;
        t.tick = 10_000;
        t.jitter = 2000;
        let by_name = |state, t: &libc::timex, name: &str| {
            timex_values(state, t)
                .iter()
                .find(|v| v.0 == name)
                .unwrap()
                .3
        };
        assert_eq!(by_name(0, &t, "node_timex_offset_seconds"), 0.0015);
        assert_eq!(
            by_name(0, &t, "node_timex_frequency_adjustment_ratio"),
            1.00001
        );
        assert_eq!(by_name(0, &t, "node_timex_maxerror_seconds"), 0.016);
        assert_eq!(by_name(0, &t, "node_timex_tick_seconds"), 0.01);
        assert_eq!(by_name(0, &t, "node_timex_sync_status"), 1.0);
        assert_eq!(by_name(TIME_ERROR, &t, "node_timex_sync_status"), 0.0);
        t.status = STA_NANO;
        assert_eq!(by_name(0, &t, "node_timex_offset_seconds"), 0.0000015);
        assert_eq!(by_name(0, &t, "node_timex_pps_jitter_seconds"), 0.000002);
    }

    #[test]
    fn reads_this_kernel() {
        let text = render("timex", Box::new(TimexCollector), Paths::default());
        assert!(text.contains("node_scrape_collector_success{collector=\"timex\"} 1"));
        assert!(text.contains("# TYPE node_timex_pps_calibration_total counter"));
        assert!(text.contains("\nnode_timex_tick_seconds "));
    }
}
