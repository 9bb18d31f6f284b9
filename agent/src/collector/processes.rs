//! `processes`: process and thread counts from /proc, as node_exporter 1.12.1 reads them through
//! prometheus/procfs: every numeric entry of /proc is a process whose `stat` gives its state and
//! `num_threads`; each thread in `<pid>/task` other than the leader gives its own state from
//! `task/<tid>/stat` (the leader counts with the process's state). Plus
//! /proc/sys/kernel/threads-max and pid_max.
//!
//! A process or thread that vanishes while being read (not found, or ESRCH) is skipped, as in
//! 1.12.1. Decisions: a `stat` that does not parse as procfs parses it (the comm between the
//! first '(' and the last ')', then the state and 41 integers) is skipped and counted as
//! malformed, where 1.12.1 fails the whole collection; a process with `num_threads` 1 is
//! counted without listing its `task` directory (it holds the leader alone: the same counts,
//! one directory listing less per process). As in 1.12.1, an unreadable threads-max or pid_max
//! fails the collection after the metrics 1.12.1 sends before reading it. Families are written
//! in name order, states in label order.
//!
//! Cost: inherent to what it reports: a listing of /proc and one `stat` read per process, plus
//! for each multi-threaded process a listing of its `task` and one `stat` read per thread;
//! threads-max and pid_max kept open.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "processes",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(ProcessesCollector::default()))
}

struct ProcessesCollector {
    threads_max: SourceFile,
    pid_max: SourceFile,
    buf: String,
    path: PathBuf,
    proc_states: BTreeMap<String, f64>,
    thread_states: BTreeMap<String, f64>,
}

impl Default for ProcessesCollector {
    fn default() -> Self {
        ProcessesCollector {
            threads_max: SourceFile::proc("sys/kernel/threads-max"),
            pid_max: SourceFile::proc("sys/kernel/pid_max"),
            buf: String::new(),
            path: PathBuf::new(),
            proc_states: BTreeMap::new(),
            thread_states: BTreeMap::new(),
        }
    }
}

/// The types procfs scans the 41 integers after the state into: `i` signed, `u` unsigned.
const FIELD_TYPES: &[u8; 41] = b"iiiiiuuuuuuuiiiiiiuuiuuuuuuuuuuuuuiuuuuii";
/// The position of `num_threads` among them.
const NUM_THREADS: usize = 16;

/// procfs's `Proc.Stat`, as far as this collector needs it: the state and `num_threads`.
fn parse_stat(data: &str) -> Option<(&str, i64)> {
    let open = data.find('(')?;
    let close = data.rfind(')')?;
    // procfs scans from two bytes after the ')' (and panics when there are none).
    let rest = data.get(close + 2..)?;
    let _ = open;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let mut threads = 0;
    for (i, kind) in FIELD_TYPES.iter().enumerate() {
        let field = fields.next()?;
        let digits = match kind {
            b'i' => field.strip_prefix(['+', '-']).unwrap_or(field),
            _ => field,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if *kind == b'i' {
            let value: i64 = field.parse().ok()?;
            if i == NUM_THREADS {
                threads = value;
            }
        } else {
            field.parse::<u64>().ok()?;
        }
    }
    Some((state, threads))
}

/// Errors node_exporter takes for a process gone while it was read.
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The numeric entries of a directory, as procfs's `AllProcs` (`ParseInt(name, 10, 64)`).
fn numeric_entries(dir: &std::path::Path) -> std::io::Result<Vec<i64>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let digits = name.strip_prefix(['+', '-']).unwrap_or(name);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(pid) = name.parse::<i64>() {
            pids.push(pid);
        }
    }
    Ok(pids)
}

impl ProcessesCollector {
    /// Reads `path` into the buffer: `Ok(false)` when it vanished.
    fn read(&mut self) -> Result<bool, CollectorError> {
        match super::source::read_into(&self.path, &mut self.buf) {
            Ok(()) => Ok(true),
            Err(CollectorError::Io { source, .. }) if vanished(&source) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn count(&mut self, ctx: &Context<'_>) -> Result<(f64, f64), CollectorError> {
        self.proc_states.values_mut().for_each(|v| *v = 0.0);
        self.thread_states.values_mut().for_each(|v| *v = 0.0);
        let root = ctx.paths.procfs.clone();
        let pids = numeric_entries(&root).map_err(|e| CollectorError::io(&root, e))?;
        let (mut processes, mut threads) = (0.0, 0.0);
        for pid in pids {
            self.path.clear();
            self.path.push(&root);
            self.path.push(pid.to_string());
            self.path.push("stat");
            if !self.read()? {
                continue;
            }
            let Some((state, num_threads)) = parse_stat(&self.buf) else {
                ctx.malformed(&self.path, self.buf.trim_end());
                continue;
            };
            let state = state.to_string();
            processes += 1.0;
            threads += num_threads as f64;
            *self.proc_states.entry(state.clone()).or_default() += 1.0;
            if num_threads == 1 {
                *self.thread_states.entry(state).or_default() += 1.0;
                continue;
            }
            let task = root.join(pid.to_string()).join("task");
            let tids = match numeric_entries(&task) {
                Ok(tids) => tids,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(CollectorError::io(&task, e)),
            };
            for tid in tids {
                if tid == pid {
                    *self.thread_states.entry(state.clone()).or_default() += 1.0;
                    continue;
                }
                self.path.clear();
                self.path.push(&task);
                self.path.push(tid.to_string());
                self.path.push("stat");
                if !self.read()? {
                    continue;
                }
                match parse_stat(&self.buf) {
                    Some((thread_state, _)) => {
                        let thread_state = thread_state.to_string();
                        *self.thread_states.entry(thread_state).or_default() += 1.0;
                    }
                    None => ctx.malformed(&self.path, self.buf.trim_end()),
                }
            }
        }
        // States not seen this scrape are not reported.
        self.proc_states.retain(|_, v| *v > 0.0);
        self.thread_states.retain(|_, v| *v > 0.0);
        Ok((processes, threads))
    }
}

fn read_uint(
    file: &mut SourceFile,
    ctx: &Context<'_>,
    buf: &mut String,
) -> Result<f64, CollectorError> {
    file.read_into(ctx.paths, buf)?;
    buf.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| CollectorError::Parse {
            path: file.display_path().to_path_buf(),
            reason: format!("not an unsigned integer: {:?}", buf.trim()),
        })
}

impl Collector for ProcessesCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let (processes, threads) = self.count(ctx)?;
        let threads_max = read_uint(&mut self.threads_max, ctx, &mut self.buf);
        let pid_max = match threads_max {
            Ok(_) => Some(read_uint(&mut self.pid_max, ctx, &mut self.buf)),
            Err(_) => None,
        };
        // What node_exporter sends before a failure, in name order.
        let complete = matches!(pid_max, Some(Ok(_)));
        if let Some(Ok(pid_max)) = &pid_max {
            out.gauge(
                "node_processes_max_processes",
                "Number of max PIDs limit",
                *pid_max,
            )?;
        }
        if let Ok(threads_max) = &threads_max {
            out.gauge(
                "node_processes_max_threads",
                "Limit of threads in the system",
                *threads_max,
            )?;
        }
        if complete {
            out.gauge("node_processes_pids", "Number of PIDs", processes)?;
        }
        if threads_max.is_ok() && !self.proc_states.is_empty() {
            let mut f = out.family(
                "node_processes_state",
                "Number of processes in each state.",
                Kind::Gauge,
            )?;
            for (state, count) in &self.proc_states {
                f.sample(&[("state", state)], *count)?;
            }
        }
        out.gauge(
            "node_processes_threads",
            "Allocated threads in system",
            threads,
        )?;
        if threads_max.is_ok() && !self.thread_states.is_empty() {
            let mut f = out.family(
                "node_processes_threads_state",
                "Number of threads in each state.",
                Kind::Gauge,
            )?;
            for (state, count) in &self.thread_states {
                f.sample(&[("thread_state", state)], *count)?;
            }
        }
        threads_max?;
        pid_max.transpose()?;
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
        assert_renders_golden("hw-system", "processes", |_| {
            Box::new(ProcessesCollector::default())
        });
    }

    const STAT: &str = "873 (my sqld) (x)) S 1 873 873 0 -1 4194560 123456 0 12 0 4567 1234 0 0 20 0 5 0 1234 2147483648 98765 18446744073709551615 1 1 0 0 0 0 0 4096 26345 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat(STAT), Some(("S", 5)));
        assert_eq!(parse_stat("12 (x)"), None);
        assert_eq!(parse_stat("12 (x) R 1 2"), None);
        assert_eq!(
            parse_stat(&STAT.replace(" 4567 ", " -4567 ")),
            None,
            "utime is unsigned"
        );
        assert_eq!(
            parse_stat(&STAT.replace(" 20 0 5 ", " -20 0 5 ")),
            Some(("S", 5))
        );
        assert_eq!(parse_stat("12 x) R"), None);
    }

    #[test]
    fn missing_limits_fail_after_what_node_exporter_sends() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(proc.join("1")).unwrap();
        std::fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        std::fs::write(
            proc.join("1/stat"),
            STAT.replace("S 1 873", "S 0 1")
                .replace(" 5 0 1234", " 1 0 1234"),
        )
        .unwrap();
        // A vanished process: its directory without a stat.
        std::fs::create_dir_all(proc.join("77")).unwrap();
        let paths = Paths::fixture(dir.path());
        let text = render(
            "processes",
            Box::new(ProcessesCollector::default()),
            paths.clone(),
        );
        assert!(text.contains("node_processes_threads 1\n"));
        assert!(!text.contains("node_processes_state"));
        assert!(text.contains("node_scrape_collector_success{collector=\"processes\"} 0"));
        std::fs::write(proc.join("sys/kernel/threads-max"), "1029374\n").unwrap();
        let text = render(
            "processes",
            Box::new(ProcessesCollector::default()),
            paths.clone(),
        );
        assert!(text.contains("node_processes_state{state=\"S\"} 1\n"));
        assert!(text.contains("node_processes_max_threads 1029374\n"));
        assert!(!text.contains("node_processes_pids"));
        std::fs::write(proc.join("sys/kernel/pid_max"), "4194304\n").unwrap();
        let text = render("processes", Box::new(ProcessesCollector::default()), paths);
        assert!(text.contains("node_processes_pids 1\n"));
        assert!(text.contains("node_scrape_collector_success{collector=\"processes\"} 1"));
    }
}
