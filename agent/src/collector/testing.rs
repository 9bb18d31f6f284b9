//! Test support: render one collector against a fixture tree and compare with a golden file.

use std::path::{Path, PathBuf};

use super::{Collector, Paths};
use crate::scrape::Scraper;

/// The fixture tree `agent/tests/fixtures/<name>` (with `proc/`, `sys/` … inside).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The text one scrape of `collector` renders, without the per-scrape timing lines.
pub fn render(name: &'static str, collector: Box<dyn Collector>, paths: Paths) -> String {
    let scraper = Scraper::new(paths, vec![(name, collector)]);
    let rendered = scraper.scrape(false).expect("scrape renders");
    let text = String::from_utf8(rendered.body.to_vec()).expect("utf-8");
    text.lines()
        .filter(|l| !l.starts_with("node_scrape_collector_duration_seconds{"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The whole of most collectors' golden tests: builds a collector for fixture tree `tree` with
/// `make`, renders one scrape and compares it with `<tree>/golden/<name>.prom`.
pub fn assert_renders_golden(
    tree: &str,
    name: &'static str,
    make: impl FnOnce(&Paths) -> Box<dyn Collector>,
) {
    let root = fixture(tree);
    let paths = Paths::fixture(&root);
    let collector = make(&paths);
    let text = render(name, collector, paths);
    assert_golden(&root.join("golden").join(format!("{name}.prom")), &text);
}

/// Compares `actual` with the golden file; `UPDATE_GOLDEN=1` rewrites it instead.
pub fn assert_golden(golden: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(golden, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            golden.display()
        )
    });
    if expected != actual {
        panic!(
            "output differs from {}\n--- expected\n{expected}\n--- actual\n{actual}",
            golden.display()
        );
    }
}

/// Builds a collector from its registration and command-line arguments, as the agent would.
pub fn build_with(
    registration: &super::Registration,
    args: &[&str],
    paths: &Paths,
) -> Box<dyn Collector> {
    let matches = crate::cli::command()
        .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
        .expect("arguments parse");
    let ctx = super::BuildContext {
        matches: &matches,
        paths,
    };
    match (registration.build)(&ctx) {
        Ok(collector) => collector,
        Err(e) => panic!("building {}: {e}", registration.name),
    }
}
