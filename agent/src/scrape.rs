//! Runs the enabled collectors for one scrape and renders the result.
//!
//! Scrapes are serialised by a mutex: collectors keep reusable buffers in themselves and the
//! rendered output goes into buffers reused across scrapes, so a scrape allocates little.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::collector::{
    Collector, CollectorError, Context, EnabledCollectors, Kind, MetricWriter, Paths,
};
use crate::exposition;

struct Entry {
    name: &'static str,
    collector: Box<dyn Collector>,
    /// The last error logged, so a collector that keeps failing logs once, not every scrape.
    last_error: Option<String>,
}

struct Collectors {
    paths: Paths,
    entries: Mutex<Vec<Entry>>,
    malformed_lines: AtomicU64,
    route_socket: Mutex<Option<crate::collector::netlink::RouteSocket>>,
    hotplug: Mutex<crate::collector::hotplug::HotplugWatch>,
}

impl fmt::Debug for Collectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collectors").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A collector that panicked must not take the agent's metrics down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl prometheus_client::collector::Collector for Collectors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut entries = lock(&self.entries);
        let epoch = lock(&self.hotplug).epoch(&self.paths);
        let ctx =
            Context::with_route_socket(&self.paths, &self.malformed_lines, &self.route_socket)
                .with_hotplug_epoch(epoch);
        let mut outcomes: Vec<(&'static str, f64, bool)> = Vec::with_capacity(entries.len());
        for entry in entries.iter_mut() {
            let started = Instant::now();
            let result = {
                let mut writer = MetricWriter::new(&mut encoder);
                entry.collector.update(&ctx, &mut writer)
            };
            let seconds = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    if entry.last_error.take().is_some() {
                        tracing::info!(collector = entry.name, "collector recovered");
                    }
                }
                Err(CollectorError::Encode(e)) => return Err(e),
                Err(e) => {
                    let message = e.to_string();
                    if entry.last_error.as_deref() != Some(message.as_str()) {
                        match e {
                            CollectorError::NoData => {
                                tracing::debug!(collector = entry.name, "collector has no data")
                            }
                            _ => {
                                tracing::warn!(collector = entry.name, error = %message, "collector failed")
                            }
                        }
                        entry.last_error = Some(message);
                    }
                }
            }
            outcomes.push((entry.name, seconds, entry.last_error.is_none()));
        }
        let mut writer = MetricWriter::new(&mut encoder);
        let mut family = writer.family(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
            Kind::Gauge,
        )?;
        for (name, seconds, _) in &outcomes {
            family.sample(&[("collector", name)], *seconds)?;
        }
        let mut family = writer.family(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
            Kind::Gauge,
        )?;
        for (name, _, ok) in &outcomes {
            family.sample(&[("collector", name)], if *ok { 1.0 } else { 0.0 })?;
        }
        writer.counter(
            "nodewarden_agent_malformed_lines_total",
            "Source lines that could not be parsed and were skipped.",
            self.malformed_lines
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        )
    }
}

#[derive(Default)]
struct Buffers {
    /// prometheus-client encodes straight into the 0.0.4 rewrite (no OpenMetrics copy).
    text: nodewarden_shared::exposition::Text004,
    gzip: exposition::Gzip,
}

/// Renders scrapes of a fixed set of collectors.
pub struct Scraper {
    registry: Registry,
    buffers: Mutex<Buffers>,
    /// Set once the heap has been trimmed after the first scrape.
    trimmed: std::sync::atomic::AtomicBool,
}

/// One rendered scrape.
pub struct Rendered {
    pub body: Bytes,
    pub gzipped: bool,
}

impl Scraper {
    pub fn new(paths: Paths, collectors: EnabledCollectors) -> Self {
        let entries = collectors
            .into_iter()
            .map(|(name, collector)| Entry {
                name,
                collector,
                last_error: None,
            })
            .collect();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::new(Collectors {
            paths,
            entries: Mutex::new(entries),
            malformed_lines: AtomicU64::new(0),
            route_socket: Mutex::new(None),
            hotplug: Mutex::new(Default::default()),
        })));
        Scraper {
            registry,
            buffers: Mutex::new(Buffers::default()),
            trimmed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs every collector once and returns the text format 0.0.4 body, gzipped if asked.
    /// Adds a collector beside the node_exporter ones (e.g. the link's [`crate::nodestate::LinkStatus`]).
    pub fn register_collector(
        &mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) {
        self.registry.register_collector(collector);
    }

    pub fn scrape(&self, gzip: bool) -> Result<Rendered, ScrapeError> {
        let mut buffers = lock(&self.buffers);
        let Buffers {
            text,
            gzip: compressor,
        } = &mut *buffers;
        text.clear();
        prometheus_client::encoding::text::encode_registry(text, &self.registry)
            .map_err(|_| ScrapeError::Encode)?;
        text.finish();
        let text = text.as_str();
        if !self
            .trimmed
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            release_startup_heap();
        }
        if gzip {
            let compressed = compressor
                .compress(text.as_bytes())
                .map_err(ScrapeError::Gzip)?;
            Ok(Rendered {
                body: Bytes::copy_from_slice(compressed),
                gzipped: true,
            })
        } else {
            Ok(Rendered {
                body: Bytes::copy_from_slice(text.as_bytes()),
                gzipped: false,
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("encoding metrics failed")]
    Encode,
    #[error("gzip: {0}")]
    Gzip(exposition::GzipError),
}

/// Hands the heap pages freed since start-up (the command-line model, configuration parsing,
/// the first scrape's one-off work) back to the system, once: glibc keeps free pages inside the
/// heap resident otherwise. Later scrapes reuse their buffers and leave little to return.
fn release_startup_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
