//! Benchmark: node_exporter and nodewarden-agent side by side on this machine.
//!
//! Starts both, scrapes each `--scrapes` times in turn (or alternately with `--interleaved`, so
//! that both see the same moments of a shared machine; gzip accepted, as Prometheus does) and
//! prints CPU time per scrape (from each process's own /proc/<pid>/stat accounting, and finer from
//! its threads' /proc/<pid>/task/*/schedstat), median and
//! p99 wall time per scrape, and resident memory after the scrapes.
//!
//!     cargo build --release -p nodewarden-agent
//!     cargo run --release -p nodewarden-tests --bin bench_agent -- --agent target/release/nodewarden-agent
//!
//! `--both ARG` (repeatable) passes ARG to both programs: one collector against a fixture tree,
//! say (`--both --collector.disable-defaults --both --collector.zfs --both --path.procfs=…`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodewarden_tests::{ChildGuard, free_port, wait_for};

struct Figures {
    cpu_per_scrape: Duration,
    /// From the threads' scheduler accounting (nanoseconds), finer than the 10 ms ticks.
    cpu_per_scrape_ns: Duration,
    median: Duration,
    p99: Duration,
    rss_kib: u64,
    rss_anon_kib: u64,
    body_bytes: usize,
    families: usize,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a process, in seconds.
/// Time on CPU of the process's live threads, in seconds, from /proc/<pid>/task/*/schedstat
/// (its first field, nanoseconds). Threads that exit between two readings are not counted:
/// neither program starts or ends threads while it is being scraped.
fn sched_cpu_seconds(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task directory");
    let mut ns = 0u64;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of /proc/<pid>/status.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn scrape(agent: &ureq::Agent, url: &str) -> (Duration, usize, String) {
    let started = Instant::now();
    let mut resp = agent
        .get(url)
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("scrape");
    let body = resp.body_mut().read_to_string().expect("body");
    (started.elapsed(), body.len(), body)
}

/// One program being measured: its accounting at the start and the scrapes so far.
struct Run<'a> {
    name: &'a str,
    pid: u32,
    url: &'a str,
    client: ureq::Agent,
    cpu_before: f64,
    sched_before: f64,
    walls: Vec<Duration>,
    bytes: usize,
    last: String,
}

impl<'a> Run<'a> {
    fn start(name: &'a str, pid: u32, url: &'a str, scrapes: usize) -> Self {
        let client: ureq::Agent = ureq::Agent::config_builder().build().into();
        for _ in 0..10 {
            scrape(&client, url);
        }
        Run {
            name,
            pid,
            url,
            client,
            cpu_before: cpu_seconds(pid),
            sched_before: sched_cpu_seconds(pid),
            walls: Vec::with_capacity(scrapes),
            bytes: 0,
            last: String::new(),
        }
    }

    fn scrape(&mut self) {
        let (wall, len, body) = scrape(&self.client, self.url);
        self.walls.push(wall);
        self.bytes = len;
        self.last = body;
    }

    fn finish(mut self) -> Figures {
        let scrapes = self.walls.len();
        let cpu = cpu_seconds(self.pid) - self.cpu_before;
        let sched = sched_cpu_seconds(self.pid) - self.sched_before;
        self.walls.sort();
        let families = self
            .last
            .lines()
            .filter(|l| l.starts_with("# TYPE node_"))
            .count();
        eprintln!("{}: {scrapes} scrapes done", self.name);
        Figures {
            cpu_per_scrape: Duration::from_secs_f64(cpu / scrapes as f64),
            cpu_per_scrape_ns: Duration::from_secs_f64(sched / scrapes as f64),
            median: self.walls[scrapes / 2],
            p99: self.walls[(scrapes * 99 / 100).min(scrapes - 1)],
            rss_kib: rss_kib(self.pid),
            rss_anon_kib: status_kib(self.pid, "RssAnon:"),
            body_bytes: self.bytes,
            families,
        }
    }
}

/// Scrapes one program `scrapes` times, then the other.
fn measure_in_turn(
    a: (&str, u32, &str),
    b: (&str, u32, &str),
    scrapes: usize,
) -> (Figures, Figures) {
    let mut first = Run::start(a.0, a.1, a.2, scrapes);
    for _ in 0..scrapes {
        first.scrape();
    }
    let first = first.finish();
    let mut second = Run::start(b.0, b.1, b.2, scrapes);
    for _ in 0..scrapes {
        second.scrape();
    }
    (first, second.finish())
}

/// Alternates scrapes between the two programs, so that both see the same moments of a shared
/// machine (and each finds the CPU caches as the other left them, as a scrape every 15 s would).
fn measure_interleaved(
    a: (&str, u32, &str),
    b: (&str, u32, &str),
    scrapes: usize,
) -> (Figures, Figures) {
    let mut first = Run::start(a.0, a.1, a.2, scrapes);
    let mut second = Run::start(b.0, b.1, b.2, scrapes);
    for _ in 0..scrapes {
        first.scrape();
        second.scrape();
    }
    (first.finish(), second.finish())
}

fn start(cmd: &mut Command, url: &str) -> ChildGuard {
    let child = ChildGuard::spawn(cmd.stdout(Stdio::null()).stderr(Stdio::null()));
    wait_for(url, Duration::from_secs(20), || {
        ureq::get(url).call().ok().map(|_| ())
    });
    child
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut agent_bin = PathBuf::from("target/release/nodewarden-agent");
    let mut node_exporter = PathBuf::from("prometheus-node-exporter");
    let mut scrapes = 300usize;
    let mut interleaved = false;
    let mut both: Vec<String> = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--interleaved" => interleaved = true,
            "--both" => both.push(args.next().expect("--both ARG")),
            "--agent" => agent_bin = args.next().expect("--agent PATH").into(),
            "--node-exporter" => node_exporter = args.next().expect("--node-exporter PATH").into(),
            "--scrapes" => {
                scrapes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--scrapes N")
            }
            other => panic!("unknown argument {other}"),
        }
    }

    let ne_port = free_port();
    let ne_url = format!("http://127.0.0.1:{ne_port}/metrics");
    let ne = start(
        Command::new(&node_exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
            .args(&both),
        &ne_url,
    );
    let ag_port = free_port();
    let ag_url = format!("http://127.0.0.1:{ag_port}/metrics");
    let ag = start(
        Command::new(&agent_bin)
            .arg(format!("--web.listen-address=127.0.0.1:{ag_port}"))
            .args(&both),
        &ag_url,
    );

    let (ne_fig, ag_fig) = if interleaved {
        measure_interleaved(
            ("node_exporter", ne.pid(), &ne_url),
            ("nodewarden-agent", ag.pid(), &ag_url),
            scrapes,
        )
    } else {
        measure_in_turn(
            ("node_exporter", ne.pid(), &ne_url),
            ("nodewarden-agent", ag.pid(), &ag_url),
            scrapes,
        )
    };

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{:<28} {:>16} {:>18} {:>10}",
        "", "node_exporter", "nodewarden-agent", "ratio"
    );
    let row = |label: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{label:<28} {:>13.3} {unit:<2} {:>15.3} {unit:<2} {:>10.3}",
            a,
            b,
            b / a
        );
    };
    row(
        "CPU per scrape",
        ms(ne_fig.cpu_per_scrape),
        ms(ag_fig.cpu_per_scrape),
        "ms",
    );
    row(
        "CPU per scrape (schedstat)",
        ms(ne_fig.cpu_per_scrape_ns),
        ms(ag_fig.cpu_per_scrape_ns),
        "ms",
    );
    row(
        "wall per scrape, median",
        ms(ne_fig.median),
        ms(ag_fig.median),
        "ms",
    );
    row("wall per scrape, p99", ms(ne_fig.p99), ms(ag_fig.p99), "ms");
    row(
        &format!("RSS after {scrapes} scrapes"),
        ne_fig.rss_kib as f64 / 1024.0,
        ag_fig.rss_kib as f64 / 1024.0,
        "MiB",
    );
    row(
        "  of which anonymous",
        ne_fig.rss_anon_kib as f64 / 1024.0,
        ag_fig.rss_anon_kib as f64 / 1024.0,
        "MiB",
    );
    row(
        "  of which mapped files",
        (ne_fig.rss_kib - ne_fig.rss_anon_kib) as f64 / 1024.0,
        (ag_fig.rss_kib - ag_fig.rss_anon_kib) as f64 / 1024.0,
        "MiB",
    );
    row(
        "text body (decompressed)",
        ne_fig.body_bytes as f64 / 1024.0,
        ag_fig.body_bytes as f64 / 1024.0,
        "KiB",
    );
    println!(
        "{:<28} {:>16} {:>18}",
        "node_* families", ne_fig.families, ag_fig.families
    );
    println!("targets: CPU ratio <= 0.100, RSS ratio <= 0.250, median ratio <= 0.250");
}
