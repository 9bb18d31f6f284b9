//! Fuzz harnesses for the agent's parsers of untrusted text: one function per
//! `fuzz/fuzz_targets/agent_*.rs` target, taking the fuzzer's bytes. The same functions replay
//! the committed corpora on stable (`tests/fuzz_corpus.rs`). An error is fine; a panic
//! (including a broken property asserted here), an overflow or a hang is a bug.
//!
//! The /proc harnesses run the whole collector, not only its line parser: the fuzzer's bytes
//! become the source file in a scratch tree (one per thread and target under the system's
//! temporary directory, re-written on each run), the collector is built as the agent builds it
//! and scraped once, and the rendered body must parse with the strict text-format parser
//! ([`crate::collector::expfmt`]): whatever a host's files hold, the agent serves valid text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::collector::{BuildContext, Paths, Registration, expfmt};
use crate::scrape::Scraper;

/// One thread's scratch tree for one target.
struct Scratch {
    root: PathBuf,
    matches: clap::ArgMatches,
}

thread_local! {
    static SCRATCH: RefCell<HashMap<&'static str, Scratch>> = RefCell::new(HashMap::new());
}

/// Builds `registration`'s collector over a scratch tree whose `file` (relative to the tree,
/// e.g. `proc/stat`) holds `data`, with `args` (`{root}` stands for the tree), scrapes it once
/// and checks that the body parses.
fn collector_over(registration: &'static Registration, file: &str, args: &[&str], data: &[u8]) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let key = registration.name;
        let s = scratch.entry(key).or_insert_with(|| {
            let root = std::env::temp_dir().join(format!(
                "nodewarden-fuzz-{}-{:?}-{key}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).expect("scratch tree");
            let root_text = root.to_str().expect("utf-8 temporary directory");
            let args = args.iter().map(|a| a.replace("{root}", root_text));
            let matches = crate::cli::command()
                .try_get_matches_from(std::iter::once("nodewarden-agent".to_string()).chain(args))
                .expect("harness arguments parse");
            Scratch { root, matches }
        });
        let path = s.root.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in the tree")).expect("scratch");
        std::fs::write(&path, data).expect("scratch file written");
        scrape_once(registration, &s.root, &s.matches);
    });
}

fn scrape_once(registration: &'static Registration, root: &Path, matches: &clap::ArgMatches) {
    let paths = Paths::fixture(root);
    let ctx = BuildContext {
        matches,
        paths: &paths,
    };
    let Ok(collector) = (registration.build)(&ctx) else {
        return;
    };
    let scraper = Scraper::new(paths.clone(), vec![(registration.name, collector)]);
    let rendered = scraper.scrape(false).expect("a scrape renders");
    let body = std::str::from_utf8(&rendered.body).expect("the body is UTF-8");
    if let Err(e) = expfmt::parse_text(body) {
        panic!("the agent served text its own parser refuses ({e}):\n{body}");
    }
}

/// /proc/stat through the `stat` collector (and the `cpu` collector, which reads it too).
pub fn proc_stat(data: &[u8]) {
    collector_over(
        &crate::collector::stat::REGISTRATION,
        "proc/stat",
        &[],
        data,
    );
}

/// /proc/meminfo through the `meminfo` collector.
pub fn proc_meminfo(data: &[u8]) {
    collector_over(
        &crate::collector::meminfo::REGISTRATION,
        "proc/meminfo",
        &[],
        data,
    );
}

/// /proc/1/mountinfo through the `filesystem` collector (mount points resolve inside the
/// scratch tree, so the filesystems it states are the temporary directory's).
pub fn proc_mounts(data: &[u8]) {
    collector_over(
        &crate::collector::filesystem::REGISTRATION,
        "proc/1/mountinfo",
        &[],
        data,
    );
}

/// /proc/diskstats through the `diskstats` collector.
pub fn proc_diskstats(data: &[u8]) {
    collector_over(
        &crate::collector::diskstats::REGISTRATION,
        "proc/diskstats",
        &[],
        data,
    );
}

/// /proc/net/dev through the `netdev` collector (netlink off, so it reads the file).
pub fn proc_net_dev(data: &[u8]) {
    collector_over(
        &crate::collector::netdev::REGISTRATION,
        "proc/net/dev",
        &["--no-collector.netdev.netlink"],
        data,
    );
}

/// /proc/net/snmp through the `netstat` collector (every field enabled).
pub fn proc_net_snmp(data: &[u8]) {
    collector_over(
        &crate::collector::netstat::REGISTRATION,
        "proc/net/snmp",
        &["--collector.netstat.fields=.*"],
        data,
    );
}

/// /proc/net/netstat through the `netstat` collector (every field enabled). Shares the scratch
/// tree of [`proc_net_snmp`] on a thread that runs both, which only widens the input.
pub fn proc_net_netstat(data: &[u8]) {
    collector_over(
        &crate::collector::netstat::REGISTRATION,
        "proc/net/netstat",
        &["--collector.netstat.fields=.*"],
        data,
    );
}

/// /proc/mdstat through the `mdadm` collector.
pub fn proc_mdstat(data: &[u8]) {
    collector_over(
        &crate::collector::mdadm::REGISTRATION,
        "proc/mdstat",
        &[],
        data,
    );
}

/// A `*.prom` file through the `textfile` collector (its parser, the merge of its families and
/// their rendering): what the agent serves from it parses again.
pub fn textfile(data: &[u8]) {
    collector_over(
        &crate::collector::textfile::REGISTRATION,
        "textfile/fuzz.prom",
        &["--collector.textfile.directory={root}/textfile"],
        data,
    );
}

/// The exporter-toolkit `--web.config.file` YAML, parsed and checked (its relative file names
/// resolve in a directory that does not exist, so no certificate is ever read).
pub fn webconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::webconfig::WebConfig::parse(
        text,
        Path::new("/nonexistent/nodewarden-fuzz/web-config.yml"),
    );
}

/// The agent's own TOML (`--config`): parsed and validated; a valid config's declarations are
/// consistent (every declared service name is a valid one).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = crate::config::AgentConfig::parse(
        text,
        Path::new("/nonexistent/nodewarden-fuzz/agent.toml"),
    ) {
        for service in &config.ops.services {
            nodewarden_shared::ops::validate_service_name(&service.name)
                .expect("an accepted config declares only valid service names");
        }
    }
}
