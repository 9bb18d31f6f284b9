//! The agent's own `process_*` families, named, typed and described as the Prometheus Go client
//! (client_golang 1.23, node_exporter 1.12.1's) serves them for node_exporter: CPU seconds,
//! resident and virtual memory, open and maximum file descriptors, the address-space limit, start
//! time, and the network namespace's IP bytes. Read from this process's /proc/self (never
//! `--path.procfs`, which may be another host's), with the files kept open between scrapes.
//! `--web.disable-exporter-metrics` leaves them out, as in node_exporter.

use std::fs::File;
use std::sync::Mutex;

use prometheus_client::encoding::DescriptorEncoder;

use crate::collector::MetricWriter;
use crate::collector::source::read_file_at_into;

/// What the Go client assumes for `/proc/<pid>/stat` times (procfs's `userHZ`).
const USER_HZ: f64 = 100.0;

/// The `process_*` families of the agent itself.
#[derive(Debug)]
pub struct ProcessMetrics {
    state: Mutex<State>,
    /// Boot time (seconds since the epoch) from /proc/stat `btime`, read once.
    boot_time: Option<f64>,
    page_size: f64,
}

#[derive(Debug, Default)]
struct State {
    stat: Option<File>,
    netstat: Option<File>,
    buf: String,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessMetrics {
    pub fn new() -> Self {
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_btime(&text));
        // SAFETY: sysconf only reads a system constant.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        ProcessMetrics {
            state: Mutex::new(State::default()),
            boot_time,
            page_size: if page_size > 0 {
                page_size as f64
            } else {
                4096.0
            },
        }
    }
}

/// `btime` of /proc/stat: boot time in seconds since the epoch.
fn parse_btime(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The figures of /proc/self/stat the Go client reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfStat {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses /proc/<pid>/stat; the command name (field 2) may contain spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_self_stat(text: &str) -> Option<SelfStat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest starts at field 3 (state): field n is index n - 3.
    let fields: [&str; 22] = {
        let mut fields = [""; 22];
        let mut iter = rest.split_ascii_whitespace();
        for slot in &mut fields {
            *slot = iter.next()?;
        }
        fields
    };
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(SelfStat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// `IpExt` `InOctets` and `OutOctets` of /proc/<pid>/net/netstat (header line, then values).
pub fn parse_ip_octets(text: &str) -> Option<(f64, f64)> {
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let values = lines.next()?;
        let Some(names) = header.strip_prefix("IpExt:") else {
            continue;
        };
        let values = values.strip_prefix("IpExt:")?;
        let (mut rx, mut tx) = (None, None);
        for (name, value) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            match name {
                "InOctets" => rx = value.parse().ok(),
                "OutOctets" => tx = value.parse().ok(),
                _ => {}
            }
        }
        return Some((rx.unwrap_or(0.0), tx.unwrap_or(0.0)));
    }
    None
}

/// Reads a /proc/self file kept open, opening it on first use or after a failure.
fn read_kept(file: &mut Option<File>, path: &str, buf: &mut String) -> bool {
    if let Some(open) = file
        && read_file_at_into(open, buf).is_ok()
    {
        return true;
    }
    *file = File::open(path).ok();
    match file {
        Some(open) => read_file_at_into(open, buf).is_ok(),
        None => false,
    }
}

/// The number of entries in /proc/self/fd (its own descriptor included, as the Go client's
/// count includes the one it reads the directory through). No allocation per entry.
fn open_fds() -> Option<f64> {
    // SAFETY: a NUL-terminated path; the DIR is closed below and not used after.
    let dir = unsafe { libc::opendir(c"/proc/self/fd".as_ptr()) };
    if dir.is_null() {
        return None;
    }
    let mut count = 0u64;
    loop {
        // SAFETY: `dir` is an open DIR; the entry is read before the next readdir call.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            count += 1;
        }
    }
    // SAFETY: `dir` came from opendir and is closed once.
    unsafe { libc::closedir(dir) };
    Some(count as f64)
}

/// The soft limit of a resource; "unlimited" is 2^64 - 1, as the Go client reports it.
fn soft_limit(resource: libc::__rlimit_resource_t) -> Option<f64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit it is given.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur as f64)
}

impl prometheus_client::collector::Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { stat, netstat, buf } = &mut *state;
        let mut out = MetricWriter::new(&mut encoder);
        let self_stat = read_kept(stat, "/proc/self/stat", buf)
            .then(|| parse_self_stat(buf))
            .flatten();
        if let Some(s) = self_stat {
            out.counter(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                s.cpu_ticks as f64 / USER_HZ,
            )?;
        }
        if let Some(fds) = open_fds() {
            out.gauge("process_open_fds", "Number of open file descriptors.", fds)?;
        }
        if let Some(max) = soft_limit(libc::RLIMIT_NOFILE) {
            out.gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        if let Some(s) = self_stat {
            out.gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.vsize_bytes as f64,
            )?;
        }
        if let Some(max) = soft_limit(libc::RLIMIT_AS) {
            out.gauge(
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                max,
            )?;
        }
        if let Some(s) = self_stat {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.rss_pages as f64 * self.page_size,
            )?;
            if let Some(boot) = self.boot_time {
                out.gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot + s.start_ticks as f64 / USER_HZ,
                )?;
            }
        }
        if read_kept(netstat, "/proc/self/net/netstat", buf)
            && let Some((rx, tx)) = parse_ip_octets(buf)
        {
            out.counter(
                "process_network_receive_bytes_total",
                "Number of bytes received by the process over the network.",
                rx,
            )?;
            out.counter(
                "process_network_transmit_bytes_total",
                "Number of bytes sent by the process over the network.",
                tx,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_command_names() {
        let line = "4242 (node (exp) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 3 0 \
                    98765 23456768 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(
            parse_self_stat(line),
            Some(SelfStat {
                cpu_ticks: 325,
                start_ticks: 98765,
                vsize_bytes: 23456768,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_self_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_self_stat("garbage"), None);
    }

    #[test]
    fn ip_octets() {
        let text = "TcpExt: SyncookiesSent SyncookiesRecv\nTcpExt: 0 0\n\
                    IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts InOctets OutOctets\n\
                    IpExt: 0 0 10 0 0 0 123456 654321\n";
        assert_eq!(parse_ip_octets(text), Some((123456.0, 654321.0)));
        assert_eq!(parse_ip_octets("TcpExt: A\nTcpExt: 1\n"), None);
        assert_eq!(parse_btime("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[test]
    fn this_process_as_the_go_client_reports_it() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessMetrics::new()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert!(value("process_virtual_memory_max_bytes") > 0.0);
    }
}
