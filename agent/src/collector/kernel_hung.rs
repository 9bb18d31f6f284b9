//! `kernel_hung`: `node_kernel_hung_tasks_total` from /proc/sys/kernel/hung_task_detect_count
//! (present with CONFIG_DETECT_HUNG_TASK, Linux ≥ 6.7), kept open between scrapes. As
//! node_exporter 1.12.1: the file absent is `NoData` (here remembered for the hotplug epoch, so
//! an absent file costs nothing after the first scrape); an unparsable value is an error.

use super::source::{Absence, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "kernel_hung",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(KernelHungCollector::default()))
}

struct KernelHungCollector {
    source: SourceFile,
    absence: Absence,
    buf: String,
}

impl Default for KernelHungCollector {
    fn default() -> Self {
        KernelHungCollector {
            source: SourceFile::proc("sys/kernel/hung_task_detect_count"),
            absence: Absence::default(),
            buf: String::new(),
        }
    }
}

impl Collector for KernelHungCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let (source, buf) = (&mut self.source, &mut self.buf);
        if !self
            .absence
            .read(ctx, || source.read_into(ctx.paths, buf))?
        {
            tracing::debug!("hung_task_detect_count does not exist");
            return Err(CollectorError::NoData);
        }
        let count: u64 = self
            .buf
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| CollectorError::Parse {
                path: self.source.display_path().to_path_buf(),
                reason: e.to_string(),
            })?;
        out.counter(
            "node_kernel_hung_tasks_total",
            "Total number of tasks that have been detected as hung since the system booted.",
            count as f64,
        )?;
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
        assert_renders_golden("hw-system", "kernel_hung", |_| {
            Box::new(KernelHungCollector::default())
        });
    }

    #[test]
    fn absent_is_no_data_and_garbage_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render(
            "kernel_hung",
            Box::new(KernelHungCollector::default()),
            paths.clone(),
        );
        assert!(!text.contains("node_kernel_hung_tasks_total"));
        assert!(text.contains("node_scrape_collector_success{collector=\"kernel_hung\"} 0"));
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(
            dir.path().join("proc/sys/kernel/hung_task_detect_count"),
            "-1\n",
        )
        .unwrap();
        let text = render(
            "kernel_hung",
            Box::new(KernelHungCollector::default()),
            paths,
        );
        assert!(!text.contains("node_kernel_hung_tasks_total"));
        assert!(text.contains("node_scrape_collector_success{collector=\"kernel_hung\"} 0"));
    }
}
