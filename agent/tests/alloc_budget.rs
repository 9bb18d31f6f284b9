//! Steady-state scrapes must not allocate per line or per sample: each collector reuses its
//! buffers, so after warm-up a scrape allocates a small, fixed amount whatever the input size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use nodewarden_agent::collector::{self, Paths};
use nodewarden_agent::scrape::Scraper;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations of one steady-state scrape of `name` alone against the basic fixture tree.
fn allocations_per_scrape(name: &'static str) -> u64 {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/basic");
    let paths = Paths::fixture(&root);
    let matches = nodewarden_agent::cli::command()
        .try_get_matches_from([
            "nodewarden-agent",
            "--collector.disable-defaults",
            &format!("--collector.{name}"),
        ])
        .unwrap();
    let collectors = nodewarden_agent::cli::build_collectors(&matches, &paths).unwrap();
    assert_eq!(collectors.len(), 1);
    let scraper = Scraper::new(paths, collectors);
    for _ in 0..3 {
        scraper.scrape(false).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    scraper.scrape(false).unwrap();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn collectors_allocate_little_per_scrape() {
    let names = [
        "arp",
        "conntrack",
        "cpu",
        "cpufreq",
        "entropy",
        "filefd",
        "netstat",
        "os",
        "pressure",
        "schedstat",
        "selinux",
        "sockstat",
        "softnet",
        "stat",
        "time",
        "timex",
        "udp_queues",
        "uname",
        "vmstat",
    ];
    assert!(
        names
            .iter()
            .all(|n| collector::registry::ALL.iter().any(|r| r.name == *n))
    );
    let mut report = Vec::new();
    for name in names {
        report.push((name, allocations_per_scrape(name)));
    }
    eprintln!("allocations per steady-state scrape: {report:?}");
    // A scrape itself costs 3 (bookkeeping, output copy); a missing optional file costs 1 (the
    // error names its path).
    // Anything per line or per sample would blow this budget on the fixture files.
    let worst = report.iter().max_by_key(|(_, n)| *n).unwrap();
    assert!(
        worst.1 <= 6,
        "{} allocates {} times per scrape",
        worst.0,
        worst.1
    );
}
